"""Data sets that need no download: a synthetic COCO-format shapes set for the demo."""
from .shapes import CLASSES, METAINFO, PALETTE, make_shapes_dataset

__all__ = ['CLASSES', 'METAINFO', 'PALETTE', 'make_shapes_dataset']
