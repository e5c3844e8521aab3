"""Check a COCO-format annotation file before mmdet reads it, and say exactly what is wrong.

pycocotools and mmdet's CocoDataset fail on a malformed file with a bare ``KeyError: 'images'``, a
JSONDecodeError not naming the file, or, worse, train on nonsense boxes.
:func:`check_coco_annotations` names the file, the entry (``annotations[17]``, with its id) and the
faulty field, listing up to ``max_problems`` at once. Checked: JSON, top-level lists, every image,
category and annotation (fields, unique ids, references, image sizes, boxes, polygon/RLE masks).
"""
import json
import math
import os
from numbers import Real
from typing import List

__all__ = ['AnnotationFormatError', 'check_coco_annotations']


class AnnotationFormatError(ValueError):
    """A COCO annotation file that mmdet cannot (or should not) read; names file and entries."""


def _is_number(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)


def _entry(kind: str, i: int, item) -> str:
    ident = item.get('id') if isinstance(item, dict) else None
    return f'{kind}[{i}]' + (f' (id {ident})' if ident is not None else '')


def _objects(coco: dict, kind: str, fields, problems: list):
    """(where, entry) per object in coco[kind]; non-objects and missing fields go to problems."""
    for i, item in enumerate(coco[kind]):
        where = _entry(kind, i, item)
        if not isinstance(item, dict):
            problems.append(f'{where}: must be an object')
            continue
        problems += [f"{where}: missing '{field}'" for field in fields if field not in item]
        yield where, item


def _check_segmentation(seg) -> str:
    if isinstance(seg, dict):  # RLE
        return '' if 'counts' in seg and 'size' in seg else 'RLE segmentation needs counts and size'
    if not isinstance(seg, list):
        return f'segmentation must be a list of polygons or an RLE dict, got {type(seg).__name__}'
    for k, poly in enumerate(seg):
        if not isinstance(poly, list) or not all(_is_number(v) for v in poly):
            return f'segmentation polygon {k} must be a list of numbers'
        if len(poly) < 6 or len(poly) % 2:
            return (f'segmentation polygon {k} has {len(poly)} coordinates '
                    '(needs an even number, at least 6)')
    return ''


def check_coco_annotations(path: str, max_problems: int = 10) -> dict:
    """The parsed COCO instances file ``path``; AnnotationFormatError if it is not usable."""
    def fail(problems: List[str]):
        shown = problems[:max_problems]
        more = len(problems) - len(shown)
        raise AnnotationFormatError(
            f'malformed COCO annotation file {path}:\n  - ' + '\n  - '.join(shown)
            + (f'\n  ... and {more} more' if more > 0 else ''))

    try:
        with open(path, encoding='utf-8') as f:
            coco = json.load(f)
    except json.JSONDecodeError as e:
        fail([f'not valid JSON: {e.msg} at line {e.lineno}, column {e.colno} (byte {e.pos} of '
              f'{os.path.getsize(path)})'])
    except UnicodeDecodeError as e:
        fail([f'not UTF-8 text: {e}'])
    if not isinstance(coco, dict):
        fail([f'the top level must be an object with images, annotations and categories, '
              f'got a {type(coco).__name__}'])
    problems = []
    for key in ('images', 'annotations', 'categories'):
        if key not in coco:
            problems.append(f"missing top-level key '{key}' (has: {sorted(coco)})")
        elif not isinstance(coco[key], list):
            problems.append(f"'{key}' must be a list, got {type(coco[key]).__name__}")
    if problems:
        fail(problems)

    image_ids, category_ids = set(), set()
    for where, img in _objects(coco, 'images', ('id', 'file_name', 'width', 'height'), problems):
        if img.get('id') in image_ids:
            problems.append(f"{where}: duplicate image id {img['id']}")
        image_ids.add(img.get('id'))
        for field in ('width', 'height'):
            if field in img and not (_is_number(img[field]) and img[field] > 0):
                problems.append(f'{where}: {field} must be a positive number, got {img[field]!r}')
    for i, cat in enumerate(coco['categories']):
        where = _entry('categories', i, cat)
        if not isinstance(cat, dict) or 'id' not in cat or 'name' not in cat:
            problems.append(f"{where}: needs 'id' and 'name'")
            continue
        if cat['id'] in category_ids:
            problems.append(f"{where}: duplicate category id {cat['id']}")
        category_ids.add(cat['id'])
    for where, ann in _objects(coco, 'annotations', ('id', 'image_id', 'category_id', 'bbox'),
                               problems):
        if 'image_id' in ann and ann['image_id'] not in image_ids:
            problems.append(f"{where}: image_id {ann['image_id']!r} is not in 'images'")
        if 'category_id' in ann and ann['category_id'] not in category_ids:
            problems.append(f"{where}: category_id {ann['category_id']!r} is not in 'categories'")
        bbox = ann.get('bbox')
        if 'bbox' in ann and not (isinstance(bbox, list) and len(bbox) == 4
                                  and all(_is_number(v) for v in bbox)):
            problems.append(f'{where}: bbox must be [x, y, width, height] (4 finite numbers), '
                            f'got {bbox!r}')
        elif 'bbox' in ann and (bbox[2] < 0 or bbox[3] < 0):
            problems.append(f'{where}: bbox width and height must be >= 0, got {bbox!r}')
        if 'segmentation' in ann and (message := _check_segmentation(ann['segmentation'])):
            problems.append(f'{where}: {message}')
        if len(problems) > 10 * max_problems:
            break  # enough to act on; do not walk a large broken file to the end
    if problems:
        fail(problems)
    return coco
