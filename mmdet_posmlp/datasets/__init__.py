"""Data: a synthetic COCO-format shapes set for the demo (no download), and a checker that
names what is wrong in a malformed COCO annotation file."""
from .coco_check import AnnotationFormatError, check_coco_annotations
from .shapes import CLASSES, METAINFO, PALETTE, make_shapes_dataset

__all__ = ['AnnotationFormatError', 'CLASSES', 'METAINFO', 'PALETTE', 'check_coco_annotations',
           'make_shapes_dataset']
