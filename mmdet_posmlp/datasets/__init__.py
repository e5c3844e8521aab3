"""Data: a checker that names what is wrong in a malformed COCO annotation file. (The demo's
synthetic shapes set is made by tools/make_demo_data.py with tools/demo/shapes.py, not here.)"""
from .coco_check import AnnotationFormatError, check_coco_annotations

__all__ = ['AnnotationFormatError', 'check_coco_annotations']
