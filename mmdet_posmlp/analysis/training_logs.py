"""Training curves (loss, validation mAP) from the scalars mmengine writes during training.

mmengine's LocalVisBackend appends to ``WORK_DIR/<timestamp>/vis_data/scalars.json`` one JSON object
per line: a training record (``"loss"``, ``"loss_cls"``, ``"lr"``, ..., ``"step"`` the global
iteration) every ``LoggerHook.interval`` iterations, a validation record (``"coco/bbox_mAP"``,
``"coco/segm_mAP"``, ..., ``"step"`` the epoch) per validation. A resumed run writes a new
``<timestamp>`` folder; all are read in time order, later records replacing earlier ones of a step.
"""
import glob
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Tuple

TRAIN_MARKER = 'loss'
MAP_KEYS = ('bbox_mAP', 'segm_mAP')


def find_scalar_files(path: str) -> List[str]:
    """scalars.json files under a work_dir, a <timestamp> folder, or the file itself."""
    if osp.isfile(path):
        return [path]
    candidates = (glob.glob(osp.join(path, 'vis_data', 'scalars.json'))
                  + glob.glob(osp.join(path, '*', 'vis_data', 'scalars.json')))
    if not candidates:
        raise FileNotFoundError(
            f"no scalars.json under '{path}': expected {path}/<timestamp>/vis_data/scalars.json, "
            'written by mmengine during training (LocalVisBackend of the config\'s visualizer)')
    # <timestamp> folders are named YYYYMMDD_HHMMSS: their names sort in time order
    return sorted(set(candidates), key=lambda p: osp.basename(osp.dirname(osp.dirname(p))))


def load_scalars(files: List[str]) -> Tuple[List[dict], List[dict]]:
    """(training records, validation records) from scalars.json files, sorted by step."""
    train: Dict[int, dict] = {}
    val: Dict[int, dict] = {}
    for path in files:
        with open(path, encoding='utf-8') as f:
            for line_no, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f'{path}:{line_no}: not a JSON line ({e})') from e
                if 'step' not in record:
                    continue
                target = train if any(k.startswith(TRAIN_MARKER) for k in record) else val
                target[int(record['step'])] = record
    return ([train[k] for k in sorted(train)], [val[k] for k in sorted(val)])


def _loss_keys(train: List[dict]) -> List[str]:
    keys = sorted({k for r in train for k in r if k.startswith(TRAIN_MARKER)})
    return sorted(keys, key=lambda k: (k != 'loss', k))  # total loss first


def _map_keys(val: List[dict]) -> List[str]:
    return sorted({k for r in val for k in r if k.split('/')[-1] in MAP_KEYS})


def _label(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)


def plot_training_curves(work_dir: str, out: Optional[str] = None, title: Optional[str] = None,
                         dpi: int = 100) -> str:
    """Write a PNG with the loss curve(s) per iteration and the val mAP per epoch; returns its
    path (default: ``<work_dir>/training_curves.png``)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    files = find_scalar_files(work_dir)
    train, val = load_scalars(files)
    if not train and not val:
        raise ValueError(f'no training or validation records in {files}')
    if out is None:
        base = work_dir if osp.isdir(work_dir) else osp.dirname(work_dir)
        out = osp.join(base, 'training_curves.png')

    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(13, 4.8))
    if train:
        for key in _loss_keys(train):
            points = [(r['step'], r[key]) for r in train if key in r]
            ax_loss.plot(*zip(*points), label=key, linewidth=2.0 if key == 'loss' else 1.0)
        ax_loss.legend(fontsize='small')
    else:
        ax_loss.text(0.5, 0.5, 'no training records', ha='center', va='center',
                     transform=ax_loss.transAxes)
    _label(ax_loss, 'iteration', 'loss', 'training loss')

    map_keys = _map_keys(val)
    for key in map_keys:
        points = [(r['step'], r[key]) for r in val if key in r]
        ax_map.plot(*zip(*points), marker='o', label=key)
        for x, y in points[-1:]:
            ax_map.annotate(f'{y:.3f}', (x, y), textcoords='offset points', xytext=(4, 4))
    if map_keys:
        ax_map.legend(fontsize='small')
        epochs = sorted({r['step'] for r in val})
        ax_map.set_xticks(epochs if len(epochs) <= 24 else epochs[::len(epochs) // 12])
    else:
        ax_map.text(0.5, 0.5, 'no validation mAP yet', ha='center', va='center',
                    transform=ax_map.transAxes)
    _label(ax_map, 'epoch', 'mAP', 'validation mAP')

    fig.suptitle(title or osp.basename(osp.normpath(work_dir)))
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def plot_comparison(work_dirs: List[str], out: str, labels: Optional[List[str]] = None,
                    title: Optional[str] = None, dpi: int = 100) -> str:
    """Several runs side by side, one colour each: training loss and val mAP; returns the PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    labels = labels or [osp.basename(osp.normpath(d)) for d in work_dirs]
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(13, 4.8))
    for i, (work_dir, label) in enumerate(zip(work_dirs, labels)):
        colour = f'C{i}'
        train, val = load_scalars(find_scalar_files(work_dir))
        points = [(r['step'], r['loss']) for r in train if 'loss' in r]
        if points:
            ax_loss.plot(*zip(*points), color=colour, label=label)
        for key, style in zip(_map_keys(val), ('o-', 's--', '^:')):
            points = [(r['step'], r[key]) for r in val if key in r]
            ax_map.plot(*zip(*points), style, color=colour, label=f'{label}: {key}')
            x, y = points[-1]
            ax_map.annotate(f'{y:.3f}', (x, y), textcoords='offset points', xytext=(4, 2),
                            color=colour, fontsize='small')
    from matplotlib.ticker import MaxNLocator
    ax_map.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax, xlabel, ylabel, name in ((ax_loss, 'iteration', 'loss', 'training loss'),
                                     (ax_map, 'epoch', 'mAP', 'validation mAP')):
        _label(ax, xlabel, ylabel, name)
        ax.legend(fontsize='small')
    fig.suptitle(title or ' vs '.join(labels))
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def summarize(work_dir: str) -> str:
    """One line per run: iterations logged, last loss, best and last mAP."""
    train, val = load_scalars(find_scalar_files(work_dir))
    lines = []
    if train:
        lines.append(f'training records: {len(train)}, last step {train[-1]["step"]}, '
                     f'last loss {train[-1].get("loss", float("nan")):.4f}')
    for key in _map_keys(val):
        values = [(r['step'], r[key]) for r in val if key in r]
        best = max(values, key=lambda v: v[1])
        lines.append(f'{key}: last {values[-1][1]:.3f} (epoch {values[-1][0]}), '
                     f'best {best[1]:.3f} (epoch {best[0]})')
    return '\n'.join(lines)
