"""Stop at once, with directions, if a config's dataset is absent or malformed (coco_check.py).

Without this, mmengine builds the whole detector (and loads ImageNet weights) before the first
dataloader opens its annotation file and fails with a bare FileNotFoundError. The paths (and the
evaluators' ``ann_file``) are resolved as ``BaseDataset`` does, so ``--cfg-options`` apply.
"""
import os
import os.path as osp
from typing import List, NamedTuple, Optional, Sequence

from ..datasets.coco_check import check_coco_annotations

COCO_DOWNLOAD_PAGE = 'https://cocodataset.org/#download'
COCO_ZIPS = ('http://images.cocodataset.org/zips/train2017.zip',
             'http://images.cocodataset.org/zips/val2017.zip',
             'http://images.cocodataset.org/annotations/annotations_trainval2017.zip')
DEMO_COMMAND = 'bash tools/run_demo.sh'
DEMO_DATA_COMMAND = 'python tools/make_demo_data.py'
COCO_HOWTO = (
    f'\nTo get COCO 2017: download "2017 Train images", "2017 Val images" and "2017 '
    f'Train/Val annotations" from {COCO_DOWNLOAD_PAGE}\n'
    f'  ({", ".join(COCO_ZIPS)})\n'
    '  and unzip them so that the layout is:\n'
    '    data/coco/annotations/instances_train2017.json\n'
    '    data/coco/annotations/instances_val2017.json\n'
    '    data/coco/train2017/   (118,287 images)\n'
    '    data/coco/val2017/     (5,000 images)\n'
    '  or link a copy that is elsewhere: ln -s /path/to/coco data/coco\n')


class DataPath(NamedTuple):
    """One path a config reads: what it is, where it is set, and where it resolves to."""
    split: str  # 'train' | 'val' | 'test'
    role: str  # 'annotations' | 'images' | ... (data_prefix key) | 'evaluator annotations'
    path: str  # as resolved by mmengine (relative to the working directory unless absolute)
    root_key: str  # dotted cfg key that sets data_root for it, or the evaluator's ann_file key
    is_file: bool
    root: str = ''  # the data_root it was joined to ('' for evaluators)


class DatasetNotFoundError(FileNotFoundError):
    """``str(e)`` is the full message with directions."""

    def __init__(self, message: str, missing: Sequence[DataPath]):
        super().__init__(message)
        self.missing = list(missing)

    def __str__(self) -> str:
        return self.args[0]


def _is_remote(path: str) -> bool:
    return '://' in path


def _join(root: Optional[str], path: str) -> str:
    """mmengine's join rule: keep absolute paths, join relative ones to a non-empty root."""
    if not root or osp.isabs(path) or _is_remote(path):
        return path
    return osp.join(root, path)


def _dataset_paths(dataset, split: str, key: str) -> List[DataPath]:
    """Paths read by one dataset config, unwrapping dataset wrappers."""
    if dataset is None:
        return []
    paths = []
    if 'datasets' in dataset:
        for i, sub in enumerate(dataset['datasets']):
            paths += _dataset_paths(sub, split, f'{key}.datasets.{i}')
        return paths
    if 'dataset' in dataset:
        return _dataset_paths(dataset['dataset'], split, f'{key}.dataset')
    if dataset.get('backend_args') is not None:
        return []  # remote storage (petrel, s3, ...): nothing to check locally
    root = dataset.get('data_root') or ''
    root_key = f'{key}.data_root'
    ann_file = dataset.get('ann_file') or ''
    if ann_file:
        paths.append(DataPath(split, 'annotations', _join(root, ann_file), root_key, True, root))
    for name, prefix in (dataset.get('data_prefix') or {}).items():
        if prefix is None:
            continue
        where = _join(root, prefix) if prefix else root
        if where:
            role = 'images' if name == 'img' else f'{name} folder'
            paths.append(DataPath(split, role, where, root_key, False, root))
    return [p for p in paths if not _is_remote(p.path)]


def _evaluator_paths(evaluator, split: str, key: str) -> List[DataPath]:
    if evaluator is None:
        return []
    if isinstance(evaluator, (list, tuple)):
        paths = []
        for i, metric in enumerate(evaluator):
            paths += _evaluator_paths(metric, split, f'{key}.{i}')
        return paths
    if 'metrics' in evaluator:  # dict(type='Evaluator', metrics=[...])
        return _evaluator_paths(evaluator['metrics'], split, f'{key}.metrics')
    ann_file = evaluator.get('ann_file')
    if not ann_file or _is_remote(ann_file) or evaluator.get('backend_args') is not None:
        return []
    return [DataPath(split, 'evaluator annotations', ann_file, f'{key}.ann_file', True)]


def collect_data_paths(cfg, splits: Sequence[str]) -> List[DataPath]:
    """Every local path that the dataloaders and evaluators of ``splits`` ('train', 'val',
    'test') will open; a split without dataloader (or, for 'val', ``val_cfg``) adds nothing."""
    paths = []
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if not loader or (split == 'val' and not cfg.get('val_cfg')):
            continue
        paths += _dataset_paths(loader.get('dataset'), split, f'{split}_dataloader.dataset')
        if split != 'train':
            paths += _evaluator_paths(cfg.get(f'{split}_evaluator'), split, f'{split}_evaluator')
    unique = {}
    for p in paths:
        unique.setdefault((p.path, p.role, p.split), p)
    return list(unique.values())


def _exists(p: DataPath) -> bool:
    path = osp.expanduser(p.path)
    return osp.isfile(path) if p.is_file else osp.isdir(path)


def _override_lines(paths: Sequence[DataPath], new_root: str = '/path/to/coco/') -> List[str]:
    """--cfg-options entries that move every checked path under ``new_root``."""
    split_roots = {p.split: p.root for p in paths if p.root}
    lines, seen = [], set()
    for p in paths:
        if p.root_key in seen:
            continue
        seen.add(p.root_key)
        if p.root_key.endswith('.data_root'):
            lines.append(f'{p.root_key}={new_root}')
            continue
        # an evaluator's ann_file: the same file under the new root
        root = split_roots.get(p.split, '')
        rel = p.path[len(root):] if root and p.path.startswith(root) else osp.basename(p.path)
        lines.append(f'{p.root_key}={osp.join(new_root, rel)}')
    return lines


def format_missing_message(cfg, paths: Sequence[DataPath], tool: str) -> str:
    """The message printed when some of ``paths`` are missing."""
    missing = [p for p in paths if not _exists(p)]
    config = getattr(cfg, 'filename', None) or '<config>'
    width = max(len(f'{p.split} {p.role}') for p in paths)
    listing = '\n'.join(
        f'  [{"ok" if _exists(p) else "MISSING":>7}] {f"{p.split} {p.role}":<{width}}  {p.path}'
        + ('' if osp.isabs(p.path) else f'  ({osp.abspath(osp.expanduser(p.path))})')
        for p in paths)
    top_root = cfg.get('data_root')
    overrides = ' \\\n      '.join(_override_lines(paths))
    top_root_note = ''
    if top_root:
        top_root_note = (
            f"  ('--cfg-options data_root=...' does NOT move them: the config sets data_root = "
            f"'{top_root}'\n   as a variable that is substituted when the file is read, so the "
            'dataset and evaluator entries\n   already hold resolved paths and a later change of '
            'the top-level key reaches none of them.)\n')
    checked = {p.split for p in paths}
    others = [s for s in ('train', 'val', 'test')
              if s not in checked and cfg.get(f'{s}_dataloader')]
    other_splits_note = ''
    if others:
        other_splits_note = (
            f'  ({" and ".join(others)}: the same keys with '
            f'{" / ".join(s + "_" for s in others)} in place of '
            f'{" / ".join(sorted(s + "_" for s in checked))}, for the tools that read them.)\n')
    is_coco = any('coco' in p.path.lower() for p in paths)
    get_data = COCO_HOWTO if is_coco else (
        '\nThis config does not read COCO: create its dataset first (the synthetic shapes set '
        f'of the demo configs: {DEMO_DATA_COMMAND}).\n')
    return (
        f'{tool}: the dataset that {config} reads is not on disk '
        f'({len(missing)} of {len(paths)} paths missing); stopping before anything is built.\n'
        f'\nExpected (resolved from the config\'s dataloaders and evaluators, relative to the '
        f'working directory {os.getcwd()}):\n{listing}\n'
        f'{get_data}'
        '\nTo read the data from another folder, override the resolved entries:\n'
        f'{top_root_note}'
        f'  --cfg-options {overrides}\n'
        f'{other_splits_note}'
        f'\nTo see the whole pipeline run without COCO (a tiny generated dataset): '
        f'{DEMO_COMMAND}\n')


# Annotation files up to this size are parsed and checked in full before training starts
# (COCO val2017: 25 MB, under a second); COCO train2017 (448 MB) would cost every process
# seconds and gigabytes again, so larger files are left to mmdet.
MAX_CHECKED_ANNOTATION_BYTES = 256 * 2**20


def check_data(cfg, splits: Sequence[str], tool: str = 'mmdet_posmlp') -> List[DataPath]:
    """Raise DatasetNotFoundError (with directions) if a path of ``splits`` is missing, or
    AnnotationFormatError (naming the file and the entries at fault) if an annotation file of at
    most MAX_CHECKED_ANNOTATION_BYTES is malformed; return the checked paths otherwise."""
    paths = collect_data_paths(cfg, splits)
    missing = [p for p in paths if not _exists(p)]
    if missing:
        raise DatasetNotFoundError(format_missing_message(cfg, paths, tool), missing)
    annotation_files = {osp.expanduser(p.path) for p in paths if p.is_file}
    for path in sorted(annotation_files):
        if path.endswith('.json') and osp.getsize(path) <= MAX_CHECKED_ANNOTATION_BYTES:
            check_coco_annotations(path)
    return paths
