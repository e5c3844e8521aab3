"""Backbones side by side on the shapes demo (behind tools/demo/compare_backbones.py).

Every run is the demo recipe of ``configs/demo/retinanet_posmlp_t_demo.py`` (same data, schedule,
neck, head) with one backbone swapped in, trained with ``tools/train.py`` under one seed into
``work_dirs/compare/<name>_seed<S>/`` and tested with ``tools/test.py`` on its final checkpoint.
The runner is rerunnable: a run whose test figures exist is skipped, a run whose training stopped
resumes from its last epoch checkpoint (one is kept per epoch), a failed run is logged and the
next one starts.

What a finished run leaves in its work_dir (besides mmengine's own files):

- ``model_info.json``: parameters of the backbone and of the detector (the model built from the
  config before training; also the check that the config builds at all);
- ``test/<time>/<time>.json``: tools/test.py's metrics (mmengine's LoggerHook);
- ``test_metrics.json``: bbox mAP and mAP@0.5 from the above, the checkpoint, the seed.

``report`` reads only these files and the training scalars (``<time>/vis_data/scalars.json``),
never a figure typed in here.
"""
import datetime
import glob
import importlib.util
import json
import math
import os
import os.path as osp
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEFAULT_WORK_ROOT = osp.join('work_dirs', 'compare')
# A step (model check, training, test) that fails within QUICK_FAIL_S is tried again after
# QUICK_FAIL_WAIT_S, up to QUICK_FAIL_ATTEMPTS times in all.
QUICK_FAIL_S, QUICK_FAIL_WAIT_S, QUICK_FAIL_ATTEMPTS = 180, 60, 5


@dataclass(frozen=True)
class Backbone:
    name: str  # work_dirs/compare/<name>_seed<S>, configs/demo/retinanet_<name>_demo.py
    label: str
    norm: str  # the norm setting of the backbone in the demo config (stated next to the table)

    @property
    def config(self) -> str:
        return osp.join('configs', 'demo', f'retinanet_{self.name}_demo.py')


# In table order. The norm column says what the demo config sets (the reasons are in each config).
BACKBONES: Dict[str, Backbone] = {b.name: b for b in (
    Backbone('posmlp_t', 'PosMLP-T', 'LN; stem BN in batch statistics'),
    Backbone('resnet50', 'ResNet-50', 'GN (32 groups) for every BN'),
    Backbone('pvt_small', 'PVT-Small', 'LN'),
    Backbone('swin_t', 'Swin-T', 'LN'),
    Backbone('cycle_mlp_b2', 'CycleMLP-B2', 'LN'),
    Backbone('hire_mlp_tiny', 'Hire-MLP-Tiny', 'BN in batch statistics (as published)'),
    Backbone('vip_s7', 'ViP-S/7', 'LN'),
    Backbone('s2mlp_deep', 'S2-MLP-deep', 'LN'),
)}

# The order of issue 18: seed 0 of the five main backbones, seed 1 of the same, one run of each
# of the three other families, then seed 2.
MAIN = ('posmlp_t', 'resnet50', 'swin_t', 'pvt_small', 'cycle_mlp_b2')
OTHERS = ('hire_mlp_tiny', 'vip_s7', 's2mlp_deep')
DEFAULT_PLAN: List[Tuple[str, int]] = (
    [(n, 0) for n in MAIN] + [(n, 1) for n in MAIN] + [(n, 0) for n in OTHERS]
    + [(n, 2) for n in MAIN])


def log(msg: str) -> None:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')
    print(f'[compare {stamp}] {msg}', flush=True)


def parse_runs(spec: str) -> List[Tuple[str, int]]:
    """'posmlp_t:0,1 resnet50:0' (spaces or ';' between backbones) -> [(name, seed), ...]."""
    runs = []
    for item in re.split(r'[\s;]+', spec.strip()):
        if not item:
            continue
        name, _, seeds = item.partition(':')
        if name not in BACKBONES:
            raise ValueError(f'unknown backbone {name!r}; known: {", ".join(BACKBONES)}')
        for seed in (seeds or '0').split(','):
            runs.append((name, int(seed)))
    return runs


def work_dir_of(name: str, seed: int, work_root: str = DEFAULT_WORK_ROOT) -> str:
    return osp.join(work_root, f'{name}_seed{seed}')


# --------------------------------------------------------------------------------------------
# running


# Where the runs' code comes from: the working tree (ROOT), or with code='head' a copy of the
# last commit (git archive HEAD, one folder per commit under work_dirs/compare/_code/), so that
# edits in progress in the working tree cannot break or change a run that starts meanwhile.
_CODE = {'root': ROOT, 'commit': None}


def use_code(mode: str, work_root: str = DEFAULT_WORK_ROOT) -> str:
    """mode 'worktree' or 'head'; returns the folder the runs start from."""
    if mode == 'worktree':
        _CODE.update(root=ROOT, commit=None)
        return ROOT
    commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    target = osp.join(ROOT, work_root, '_code', commit[:12])
    if not osp.isdir(target):
        tmp = target + '.tmp'
        subprocess.run(['rm', '-rf', tmp], check=True)
        os.makedirs(tmp)
        archive = subprocess.run(['git', 'archive', commit], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(['tar', '-x', '-C', tmp], input=archive, check=True)
        for shared in ('data', 'work_dirs'):  # the runs read and write the repository's own
            os.symlink(osp.join(ROOT, shared), osp.join(tmp, shared))
        os.rename(tmp, target)
    _CODE.update(root=target, commit=commit)
    return target


def _run(cmd: List[str], out_path: str, timeout: Optional[float] = None) -> int:
    """Run cmd from the code folder (use_code), stdout and stderr appended to out_path."""
    os.makedirs(osp.dirname(osp.abspath(out_path)), exist_ok=True)
    env = dict(os.environ)
    if _CODE['commit']:
        env['PYTHONPATH'] = _CODE['root'] + os.pathsep + env.get('PYTHONPATH', '')
    with open(out_path, 'a', encoding='utf-8') as out:
        out.write(f'\n$ (in {_CODE["root"]}) {" ".join(cmd)}\n')
        out.flush()
        return subprocess.run(cmd, cwd=_CODE['root'], stdout=out, stderr=subprocess.STDOUT,
                              timeout=timeout, env=env).returncode


def _tail(path: str, n: int = 15) -> str:
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            return ''.join(f.readlines()[-n:])
    except OSError:
        return ''


_MODEL_INFO_SCRIPT = r'''
import json, sys
from mmengine.config import Config
from mmdet.utils import register_all_modules
register_all_modules()
import mmdet_posmlp  # noqa: F401
from mmdet.registry import MODELS
cfg = Config.fromfile(sys.argv[1])
model = MODELS.build(cfg.model)
count = lambda m: sum(p.numel() for p in m.parameters())
json.dump(dict(config=sys.argv[1], backbone_type=cfg.model.backbone.type,
               max_epochs=cfg.train_cfg.max_epochs,
               backbone_params=count(model.backbone), detector_params=count(model)),
          open(sys.argv[2], 'w'), indent=1)
'''


def model_info(config: str, work_dir: str, python: str, attempts: int = 1) -> Optional[dict]:
    """Build the detector of config in a fresh process (the backbone's module may have appeared
    since the runner started); its parameter counts, or None when it does not build."""
    path = osp.join(work_dir, 'model_info.json')
    if osp.exists(path):
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    os.makedirs(work_dir, exist_ok=True)
    for attempt in range(1, attempts + 1):
        rc = _run([python, '-c', _MODEL_INFO_SCRIPT, config, osp.abspath(path)],
                  osp.join(work_dir, 'runner_output.log'), timeout=600)
        if rc == 0 or attempt == attempts:
            break
        time.sleep(QUICK_FAIL_WAIT_S)
    if rc != 0 or not osp.exists(path):
        if osp.exists(path):
            os.remove(path)
        return None
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def _final_checkpoint(work_dir: str, max_epochs: int) -> Optional[str]:
    path = osp.join(work_dir, f'epoch_{max_epochs}.pth')
    return path if osp.exists(osp.join(ROOT, path)) else None


def _test_metric_files(test_dir: str) -> List[str]:
    """mmengine's <time>/<time>.json files of tools/test.py runs, oldest first."""
    files = [p for p in glob.glob(osp.join(test_dir, '*', '*.json'))
             if osp.basename(p)[:-5] == osp.basename(osp.dirname(p))]
    return sorted(files)


def read_test_json(path: str) -> Optional[dict]:
    """bbox mAP and mAP@0.5 of one tools/test.py metrics file (mmengine writes one JSON line)."""
    with open(path, encoding='utf-8') as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            record = json.loads(line)
            if 'coco/bbox_mAP' in record:
                return dict(bbox_mAP=record['coco/bbox_mAP'],
                            bbox_mAP_50=record['coco/bbox_mAP_50'])
    return None


def run_one(name: str, seed: int, work_root: str, python: str, first_pass: bool = True) -> str:
    """Train and test one (backbone, seed); returns 'done', 'skipped', 'unbuildable' or
    'failed'."""
    backbone = BACKBONES[name]
    work_dir = work_dir_of(name, seed, work_root)
    metrics_path = osp.join(ROOT, work_dir, 'test_metrics.json')
    if osp.exists(metrics_path):
        log(f'{name} seed {seed}: finished before ({metrics_path}), skipped')
        return 'skipped'
    if not osp.exists(osp.join(ROOT, backbone.config)):
        log(f'{name} seed {seed}: no config {backbone.config}')
        return 'unbuildable'
    out = osp.join(ROOT, work_dir, 'runner_output.log')
    info = model_info(backbone.config, osp.join(ROOT, work_dir), python,
                      attempts=2 if first_pass else QUICK_FAIL_ATTEMPTS)
    if info is None:
        log(f'{name} seed {seed}: the model of {backbone.config} does not build:\n'
            + _tail(out))
        return 'unbuildable'
    log(f'{name} seed {seed}: backbone {info["backbone_params"] / 1e6:.2f} M parameters, '
        f'detector {info["detector_params"] / 1e6:.2f} M')
    max_epochs = int(info['max_epochs'])
    checkpoint = _final_checkpoint(work_dir, max_epochs)
    if checkpoint is None:
        resumed = bool(glob.glob(osp.join(ROOT, work_dir, 'epoch_*.pth')))
        log(f'{name} seed {seed}: training {backbone.config} -> {work_dir}'
            + (' (resuming from its last epoch checkpoint)' if resumed else ''))
        start = datetime.datetime.now()
        for attempt in range(1, QUICK_FAIL_ATTEMPTS + 1):
            # one checkpoint per epoch (only the latest kept): a stopped run resumes from it
            rc = _run([python, 'tools/train.py', backbone.config, '--work-dir', work_dir,
                       '--resume', '--cfg-options', f'randomness.seed={seed}',
                       'default_hooks.checkpoint.interval=1'], out)
            seconds = (datetime.datetime.now() - start).total_seconds()
            if rc == 0 or seconds > QUICK_FAIL_S or attempt == QUICK_FAIL_ATTEMPTS:
                break
            # failed before training got going: most often the working tree was caught in the
            # middle of an edit (an import error); try again a little later
            log(f'{name} seed {seed}: training stopped after {seconds:.0f} s (exit {rc}); '
                f'trying again in {QUICK_FAIL_WAIT_S} s ({attempt}/{QUICK_FAIL_ATTEMPTS}); last '
                f'lines:\n{_tail(out, 4)}')
            time.sleep(QUICK_FAIL_WAIT_S)
            start = datetime.datetime.now()
        minutes = (datetime.datetime.now() - start).total_seconds() / 60
        checkpoint = _final_checkpoint(work_dir, max_epochs)
        if rc != 0 or checkpoint is None:
            log(f'{name} seed {seed}: training FAILED (exit {rc}, {minutes:.1f} min); '
                f'last lines of {out}:\n{_tail(out)}')
            return 'failed'
        log(f'{name} seed {seed}: trained in {minutes:.1f} min')
    test_dir = osp.join(work_dir, 'test')
    log(f'{name} seed {seed}: testing {checkpoint}')
    for attempt in range(1, QUICK_FAIL_ATTEMPTS + 1):
        start = time.time()
        rc = _run([python, 'tools/test.py', backbone.config, checkpoint, '--work-dir', test_dir],
                  out)
        if rc == 0 or time.time() - start > QUICK_FAIL_S or attempt == QUICK_FAIL_ATTEMPTS:
            break
        log(f'{name} seed {seed}: test stopped (exit {rc}); trying again in {QUICK_FAIL_WAIT_S} s')
        time.sleep(QUICK_FAIL_WAIT_S)
    files = _test_metric_files(osp.join(ROOT, test_dir))
    metrics = read_test_json(files[-1]) if (rc == 0 and files) else None
    if metrics is None:
        log(f'{name} seed {seed}: test FAILED (exit {rc}); last lines of {out}:\n{_tail(out)}')
        return 'failed'
    metrics.update(seed=seed, checkpoint=checkpoint, config=backbone.config,
                   code_commit=_CODE['commit'] or 'working tree',
                   metrics_file=osp.relpath(files[-1], ROOT))
    with open(metrics_path, 'w', encoding='utf-8') as f:
        json.dump(metrics, f, indent=1)
    log(f'{name} seed {seed}: bbox mAP {metrics["bbox_mAP"]:.3f}, '
        f'mAP@0.5 {metrics["bbox_mAP_50"]:.3f}')
    return 'done'


def run_plan(runs: Sequence[Tuple[str, int]], work_root: str = DEFAULT_WORK_ROOT,
             python: str = sys.executable, retry_unbuildable: bool = True,
             code: str = 'worktree') -> Dict[str, List]:
    """Every run in order, one at a time. A run whose config does not (yet) build is put back
    and tried once more after the others (a backbone being written meanwhile)."""
    data = osp.join(ROOT, 'data', 'demo_shapes')
    if not osp.isdir(data):
        log('no data/demo_shapes: generating it')
        subprocess.run([python, 'tools/make_demo_data.py', '--out', 'data/demo_shapes'],
                       cwd=ROOT, check=True)
    results: Dict[str, List] = {'done': [], 'skipped': [], 'failed': [], 'unbuildable': []}
    queue = list(runs)
    log(f'{len(queue)} runs: ' + ', '.join(f'{n}:{s}' for n, s in queue))
    deferred = []
    for i, (name, seed) in enumerate(queue, 1):
        log(f'run {i}/{len(queue)}: {name} seed {seed}, code: '
            + (f'commit {_CODE["commit"][:12]}' if use_code(code, work_root) != ROOT
               else 'working tree'))
        try:
            status = run_one(name, seed, work_root, python)
        except Exception as e:  # noqa: BLE001  (a broken run must not stop the others)
            log(f'{name} seed {seed}: FAILED in the runner: {type(e).__name__}: {e}')
            status = 'failed'
        if status == 'unbuildable' and retry_unbuildable:
            log(f'{name} seed {seed}: deferred to the end of the queue')
            deferred.append((name, seed))
            continue
        results[status].append((name, seed))
    for name, seed in deferred:
        use_code(code, work_root)
        log(f'deferred run: {name} seed {seed}')
        try:
            status = run_one(name, seed, work_root, python, first_pass=False)
        except Exception as e:  # noqa: BLE001
            log(f'{name} seed {seed}: FAILED in the runner: {type(e).__name__}: {e}')
            status = 'failed'
        results[status].append((name, seed))
    log('finished: ' + '; '.join(f'{k}: {", ".join(f"{n}:{s}" for n, s in v) or "-"}'
                                for k, v in results.items()))
    return results


# --------------------------------------------------------------------------------------------
# report


def _load_logs():
    path = osp.join(ROOT, 'tools', 'analysis', 'logs.py')
    spec = importlib.util.spec_from_file_location('_posmlp_training_logs', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def collect_run(work_dir: str, skip_time_iters: int = 10) -> Optional[dict]:
    """What the report needs of one run's work_dir, or None if it has no training records.

    ``s_per_iter`` is the mean of mmengine's logged ``time`` (seconds per iteration, each
    record the mean over the logging interval) over the records after the first
    ``skip_time_iters`` iterations; validation and testing are not in it.
    """
    logs = _load_logs()
    try:
        train, val = logs.load_scalars(logs.find_scalar_files(work_dir))
    except FileNotFoundError:
        return None
    run = dict(work_dir=work_dir,
               loss=[(r['step'], r['loss']) for r in train if 'loss' in r],
               val_map50=[(r['step'], r['coco/bbox_mAP_50']) for r in val
                          if 'coco/bbox_mAP_50' in r],
               val_map=[(r['step'], r['coco/bbox_mAP']) for r in val if 'coco/bbox_mAP' in r])
    times = [r['time'] for r in train if 'time' in r and r['step'] > skip_time_iters]
    run['s_per_iter'] = sum(times) / len(times) if times else None
    # the fastest logging interval: closest to the backbone's own speed on a busy machine
    run['s_per_iter_min'] = min(times) if times else None
    # a stopped run that resumed wrote a second <time> folder
    run['sessions'] = len(logs.find_scalar_files(work_dir))
    for fname in ('test_metrics.json', 'model_info.json'):
        path = osp.join(work_dir, fname)
        if osp.exists(path):
            with open(path, encoding='utf-8') as f:
                run[fname[:-5]] = json.load(f)
    return run


def _mean_range(values: List[float], fmt: str = '{:.3f}') -> str:
    if not values:
        return '-'
    mean = sum(values) / len(values)
    if len(values) == 1:
        return fmt.format(mean)
    return f'{fmt.format(mean)} [{fmt.format(min(values))}-{fmt.format(max(values))}]'


def summarize_backbones(work_root: str = DEFAULT_WORK_ROOT) -> List[dict]:
    """One entry per backbone with at least one run directory: finished runs (tested) and the
    runs that have not finished."""
    rows = []
    for backbone in BACKBONES.values():
        dirs = sorted(glob.glob(osp.join(work_root, f'{backbone.name}_seed*')),
                      key=lambda d: int(re.search(r'seed(\d+)$', d).group(1))
                      if re.search(r'seed(\d+)$', d) else -1)
        runs, unfinished = [], []
        for d in dirs:
            m = re.search(r'_seed(\d+)$', d)
            if not m:
                continue
            run = collect_run(d)
            seed = int(m.group(1))
            if run is not None and 'test_metrics' in run:
                run['seed'] = seed
                runs.append(run)
            else:
                unfinished.append(seed)
        if not runs and not unfinished:
            continue
        info = next((r['model_info'] for r in runs if 'model_info' in r), None)
        if info is None:  # a run not yet finished may have counted the parameters already
            for d in dirs:
                p = osp.join(d, 'model_info.json')
                if osp.exists(p):
                    with open(p, encoding='utf-8') as f:
                        info = json.load(f)
                    break
        rows.append(dict(backbone=backbone, runs=runs, unfinished=unfinished, model_info=info))
    return rows


def format_table(rows: List[dict]) -> str:
    lines = ['| backbone | norm (from scratch, 2 images a batch) | seeds | bbox mAP mean [min-max] '
             '| mAP@0.5 mean [min-max] | s/iteration mean (fastest 10) | params backbone / detector |',
             '|---|---|---|---|---|---|---|']
    for row in rows:
        runs = row['runs']
        if not runs:
            continue
        b, info = row['backbone'], row['model_info']
        times = [r['s_per_iter'] for r in runs if r['s_per_iter'] is not None]
        fastest = [r['s_per_iter_min'] for r in runs if r['s_per_iter_min'] is not None]
        speed = (f'{sum(times) / len(times):.2f} ({min(fastest):.2f})' if times else '-')
        params = (f'{info["backbone_params"] / 1e6:.1f}M / {info["detector_params"] / 1e6:.1f}M'
                  if info else '-')
        lines.append(
            f'| {b.label} | {b.norm} | {", ".join(str(r["seed"]) for r in runs)} '
            f'| {_mean_range([r["test_metrics"]["bbox_mAP"] for r in runs])} '
            f'| {_mean_range([r["test_metrics"]["bbox_mAP_50"] for r in runs])} '
            f'| {speed} | {params} |')
    return '\n'.join(lines)


def format_epochs(rows: List[dict]) -> str:
    lines = ['| backbone | seed | val mAP@0.5 after each epoch | first / last logged loss '
             '| training | code |', '|---|---|---|---|---|---|']
    for row in rows:
        for r in row['runs']:
            curve = ', '.join(f'{v:.3f}' for _, v in r['val_map50'])
            loss = (f'{r["loss"][0][1]:.3f} / {r["loss"][-1][1]:.3f}' if r['loss'] else '-')
            sessions = r.get('sessions', 1)
            how = 'in one go' if sessions <= 1 else f'stopped and resumed ({sessions} sessions)'
            code = r['test_metrics'].get('code_commit', '-')
            code = code[:12] if code != 'working tree' else code
            lines.append(f'| {row["backbone"].label} | {r["seed"]} | {curve} | {loss} | {how} '
                         f'| {code} |')
    return '\n'.join(lines)


def plot(rows: List[dict], out: str, smooth: int = 5) -> str:
    """Training loss per iteration and val mAP@0.5 per epoch: one colour per backbone, each
    seed a thin line, the mean over seeds a thick one."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    def smoothed(points):
        xs, ys = zip(*points)
        k = max(1, smooth)
        ys = [sum(ys[max(0, i - k + 1):i + 1]) / len(ys[max(0, i - k + 1):i + 1])
              for i in range(len(ys))]
        return list(xs), ys

    def mean_curve(curves):
        common = set.intersection(*(set(x for x, _ in c) for c in curves))
        xs = sorted(common)
        return xs, [sum(dict(c)[x] for c in curves) / len(curves) for x in xs]

    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(14, 5.2))
    for i, row in enumerate(r for r in rows if r['runs']):
        colour = f'C{i}'
        label = f'{row["backbone"].label} ({len(row["runs"])} seed' \
                f'{"s" if len(row["runs"]) > 1 else ""})'
        losses = [r['loss'] for r in row['runs'] if r['loss']]
        maps = [r['val_map50'] for r in row['runs'] if r['val_map50']]
        for c in losses:
            ax_loss.plot(*smoothed(c), color=colour, linewidth=0.6, alpha=0.5)
        for c in maps:
            ax_map.plot(*zip(*c), color=colour, linewidth=0.8, alpha=0.5, marker='.')
        if losses:
            xs, ys = mean_curve(losses)
            ax_loss.plot(*smoothed(list(zip(xs, ys))), color=colour, linewidth=2, label=label)
        if maps:
            xs, ys = mean_curve(maps)
            ax_map.plot(xs, ys, color=colour, linewidth=2, marker='o', label=label)
    ax_loss.set(xlabel='iteration', ylabel=f'training loss (mean of {smooth} records)',
                title='training loss (thin: each seed, thick: mean)')
    ax_map.set(xlabel='epoch', ylabel='bbox mAP@0.5', title='val mAP@0.5 (thin: each seed, thick: mean)')
    from matplotlib.ticker import MaxNLocator
    ax_map.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (ax_loss, ax_map):
        ax.grid(alpha=0.3)
        ax.legend(fontsize='small')
    ax_loss.set_ylim(bottom=0)
    ax_map.set_ylim(bottom=0)
    fig.suptitle('RetinaNet demo recipe (shapes, 4 epochs x 300 iterations, batch 2), backbones '
                 'from scratch')
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def write_report(work_root: str = DEFAULT_WORK_ROOT, md: str = 'docs/demo_comparison.md',
                 png: str = 'docs/demo_comparison.png',
                 planned: Sequence[Tuple[str, int]] = DEFAULT_PLAN) -> str:
    rows = summarize_backbones(work_root)
    finished = {(row['backbone'].name, r['seed']) for row in rows for r in row['runs']}
    missing = [(n, s) for n, s in planned if (n, s) not in finished]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    parts = [
        '# Backbones side by side on the shapes demo',
        '',
        f'Written by `python tools/demo/compare_backbones.py --report` ({stamp}) from '
        f'`{work_root}/<backbone>_seed<S>/`. Every run: `configs/demo/retinanet_<backbone>_demo.py`'
        ' = the recipe of `retinanet_posmlp_t_demo.py` (shapes data, 4 epochs x 300 iterations, '
        'batch 2, 128 px, 128-channel FPN P3-P5, GN head, AdamW 1e-3) with the backbone swapped, '
        'from scratch. bbox mAP and mAP@0.5: `tools/test.py` on the final checkpoint (val, 100 '
        'images); mean and [min-max] over the seeds listed. s/iteration: mean over the seeds of '
        'the mean logged training `time` after iteration 10 (mmengine logs the mean of every 10 '
        'iterations), and in brackets the fastest such 10-iteration window of any seed; on a '
        '2-core CPU shared with other jobs, at low priority, so the means say more about the '
        'machine\'s load than about the backbone: compare the fastest windows. '
        'Parameters: the detector as built from the config (4 classes).',
        '',
        format_table(rows),
        '',
        '## Per run',
        '',
        format_epochs(rows),
        '',
    ]
    if missing:
        parts += ['## Not (yet) finished', '',
                  'Planned runs without test figures when this was written: '
                  + ', '.join(f'{BACKBONES[n].label} seed {s}' for n, s in missing) + '.', '']
    if any(row['runs'] for row in rows):
        plot(rows, png)
        parts += [f'![loss and val mAP@0.5 per backbone]({osp.basename(png)})', '']
    os.makedirs(osp.dirname(osp.abspath(md)), exist_ok=True)
    with open(md, 'w', encoding='utf-8') as f:
        f.write('\n'.join(parts))
    return md
