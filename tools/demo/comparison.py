"""Backbones side by side on the shapes demo (behind tools/demo/compare_backbones.py).

Every run is the demo recipe of ``configs/demo/retinanet_posmlp_t_demo.py`` (same data,
schedule, neck, head) with one backbone swapped in, one learning rate and one seed, trained
with ``tools/train.py`` into ``work_dirs/compare/<backbone>_lr<lr>_seed<S>/`` and tested with
``tools/test.py`` on its final checkpoint against a held-out test set.

The plan (``next_runs``) is decided from what has finished:

1. **sweep**: each of the five Table 3 backbones (``MAIN``) at ``SWEEP_LRS``, seed 0;
2. **extend**: where the largest swept lr wins, ``EXTRA_LR`` too;
3. **seeds**: each at its best lr (highest validation bbox mAP after the last epoch, seed 0)
   with the other ``SEEDS``;
4. **family**: the other families (``OTHERS``) at ``FAMILY_LRS``, seed 0;
5. **variants**: published recipes and the first recipe, where they differ (``VARIANTS``).

The learning rate is chosen on the validation split (logged after every epoch); the tables
report the test split, which no choice has seen (``TEST_DATA``: the same generator, another
seed).

Every run: ``WARMUP_ITERS`` of linear warm-up from 1% of the lr, then cosine to 5% (the demo
recipe's schedule, with the warm-up of the transformers' own recipes scaled to this short
schedule: see ``WARMUP_WHY``).

The runner is rerunnable: a run whose test figures exist is skipped, a run whose training
stopped resumes from its last epoch checkpoint (one is kept per epoch), a failed run is logged
and the next one starts.

What a finished run leaves in its work_dir (besides mmengine's own files):

- ``model_info.json``: parameters of the backbone and of the detector (the model built from the
  config before training; also the check that the config builds at all);
- ``test/<time>/<time>.json``: tools/test.py's metrics (mmengine's LoggerHook);
- ``test_metrics.json``: bbox mAP and mAP@0.5 from the above, the checkpoint, the seed, the lr.

``report`` reads only these files and the training scalars (``<time>/vis_data/scalars.json``),
never a figure typed in here.
"""
import datetime
import glob
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:  # this checkout's mmdet_posmlp where site-packages has none
    sys.path.append(ROOT)

from mmdet_posmlp.analysis import training_logs  # noqa: E402

DEFAULT_WORK_ROOT = osp.join('work_dirs', 'compare')
# the finished runs' figures, kept by git (archive_run)
DEFAULT_ARCHIVE = osp.join('benchmarks', 'results', 'compare_runs')
# A step (model check, training, test) that fails within QUICK_FAIL_S is tried again after
# QUICK_FAIL_WAIT_S, up to QUICK_FAIL_ATTEMPTS times in all.
QUICK_FAIL_S, QUICK_FAIL_WAIT_S, QUICK_FAIL_ATTEMPTS = 180, 60, 5

# The held-out test set: the demo generator with another seed (its images share nothing with
# data/demo_shapes, generated with seed 0), 300 images, in the layout of a val split.
TEST_DATA = dict(root='data/demo_shapes_test', seed=1, images=300)

WARMUP_ITERS = 300
WARMUP_WHY = (
    'one epoch (300 of the 1,200 iterations), for every backbone. The demo recipe warmed up '
    'for 50 iterations, tuned on PosMLP-T; the transformers\' published recipes warm up for '
    'about 500 (PVT) to 1,000 (Swin) iterations at 1e-4 with pretrained weights, and from '
    'scratch the LayerNorm-only backbones sat near loss 1.3 for 300-500 iterations at 1e-3 '
    'after the short warm-up. Adam\'s early steps, taken before its second-moment estimates '
    'settle, are the ones a high rate makes unstable in attention; a full epoch at a rising '
    'rate keeps three quarters of the schedule near the peak')

SWEEP_LRS = (1e-4, 3e-4, 1e-3)
EXTRA_LR = 3e-3
FAMILY_LRS = (3e-4, 1e-3)
SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class Backbone:
    name: str  # configs/demo/retinanet_<name>_demo.py
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
    Backbone('posmlp_t_shift', 'PosMLP-T, shifted windows', 'LN; stem BN in batch statistics'),
)}
MAIN = ('posmlp_t', 'resnet50', 'pvt_small', 'swin_t', 'cycle_mlp_b2')
OTHERS = ('hire_mlp_tiny', 'vip_s7', 's2mlp_deep', 'posmlp_t_shift')


@dataclass(frozen=True)
class Variant:
    why: str
    options: Tuple[str, ...]  # --cfg-options of tools/train.py, after the common ones


VARIANTS: Dict[str, Variant] = {
    'warmup50': Variant(
        'the first recipe of this comparison: 50 warm-up iterations (where PVT-Small did not '
        'learn at 1e-3)', ('param_scheduler.0.end=50',)),
    'sgd': Variant(
        "the optimizer of mmdet's RetinaNet configs for ResNet-50 and for Swin-T "
        '(retinanet_r50_fpn_1x, retinanet_swin-t-p4-w7_fpn_1x): SGD, momentum 0.9, weight decay '
        '1e-4; their lr 0.01 for 16 images a batch, scaled linearly to 2 here',
        ('optim_wrapper.optimizer._delete_=True', 'optim_wrapper.optimizer.type=SGD',
         'optim_wrapper.optimizer.momentum=0.9', 'optim_wrapper.optimizer.weight_decay=0.0001')),
}
# Published recipes and the first recipe, each against its plain run at the same lr and seed,
# or else at the backbone's best lr.
VARIANT_RUNS = (('pvt_small', 1e-3, 'warmup50'), ('resnet50', 1.25e-3, 'sgd'),
                ('swin_t', 1.25e-3, 'sgd'))
# What the published detection recipes (mmdet 3's configs, batch 16, from ImageNet weights) do
# that this comparison does not, and which of it is tried here.
PUBLISHED_RECIPES = (
    "mmdet's RetinaNet configs for ResNet-50 and for Swin-T both train with SGD at lr 0.01 "
    '(momentum 0.9, weight decay 1e-4, 500 warm-up iterations from 0.1% of the lr, no gradient '
    'clipping): tried below as the variant `sgd`, at 1.25e-3 for 2 images a batch. PVT\'s '
    'RetinaNet configs use AdamW at 1e-4, the sweep\'s 1e-4 point, with weight decay 1e-4 '
    'instead of 0.05: not run, because in 1,200 iterations AdamW\'s decoupled decay shrinks the '
    'weights by at most lr x decay per step, 1e-4 x 0.05 x 1,200 = 0.6% in all. Every run here, '
    'variants included, clips gradients at norm 10; the published recipes do not clip.')


def format_lr(lr: float) -> str:
    """1e-3 -> '1e-3', 2.5e-3 -> '2.5e-3'."""
    mantissa, exponent = f'{lr:.6e}'.split('e')
    return f'{float(mantissa):g}e{int(exponent)}'


@dataclass(frozen=True)
class Run:
    name: str
    lr: float
    seed: int = 0
    variant: str = ''  # a key of VARIANTS, or '' for the comparison's recipe

    @property
    def key(self) -> str:
        tag = f'_{self.variant}' if self.variant else ''
        return f'{self.name}_lr{format_lr(self.lr)}{tag}_seed{self.seed}'

    @property
    def backbone(self) -> Backbone:
        return BACKBONES[self.name]

    def describe(self) -> str:
        return (f'{self.name} lr {format_lr(self.lr)} seed {self.seed}'
                + (f' ({self.variant})' if self.variant else ''))

    def train_options(self) -> List[str]:
        options = [f'optim_wrapper.optimizer.lr={self.lr}', f'param_scheduler.0.end={WARMUP_ITERS}',
                   f'randomness.seed={self.seed}', 'default_hooks.checkpoint.interval=1']
        return options + list(VARIANTS[self.variant].options if self.variant else ())


_KEY = re.compile(r'^(?P<name>.+)_lr(?P<lr>[0-9.]+e-?\d+)(?:_(?P<variant>[a-z0-9]+))?'
                  r'_seed(?P<seed>\d+)$')


def parse_key(key: str) -> Optional[Run]:
    """The Run of a work_dir name, or None for a name that is not one."""
    m = _KEY.match(key)
    if not m or m['name'] not in BACKBONES or (m['variant'] and m['variant'] not in VARIANTS):
        return None
    return Run(m['name'], float(m['lr']), int(m['seed']), m['variant'] or '')


def parse_runs(spec: str) -> List[Run]:
    """'posmlp_t@1e-3:0,1 resnet50@3e-4' (spaces or ';' between items; seeds default to 0;
    '@lr+variant' for a variant) -> runs."""
    runs = []
    for item in re.split(r'[\s;]+', spec.strip()):
        if not item:
            continue
        head, _, seeds = item.partition(':')
        name, _, lr = head.partition('@')
        lr, _, variant = lr.partition('+')
        if name not in BACKBONES:
            raise ValueError(f'unknown backbone {name!r}; known: {", ".join(BACKBONES)}')
        if not lr:
            raise ValueError(f'{item!r}: give the learning rate as {name}@<lr>, e.g. {name}@1e-3')
        if variant and variant not in VARIANTS:
            raise ValueError(f'{item!r}: unknown variant {variant!r}; known: {", ".join(VARIANTS)}')
        for seed in (seeds or '0').split(','):
            runs.append(Run(name, float(lr), int(seed), variant))
    return runs


def work_dir_of(run: Run, work_root: str = DEFAULT_WORK_ROOT) -> str:
    return osp.join(work_root, run.key)


# --------------------------------------------------------------------------------------------
# the plan


def seed0_runs(name: str, results: Dict[Run, dict]) -> Dict[float, dict]:
    """lr -> figures of `name`'s finished plain runs with seed 0."""
    return {r.lr: f for r, f in results.items() if r.name == name and r.seed == 0 and not r.variant}


def choose_lr(swept: Dict[float, dict]) -> float:
    """The lr with the highest validation bbox mAP after the last epoch (mAP@0.5 breaks ties)."""
    return max(swept, key=lambda lr: (swept[lr]['val_bbox_mAP'], swept[lr]['val_bbox_mAP_50']))


def planned_runs(results: Dict[Run, dict]) -> List[Run]:
    """Every run of the plan that what has finished (`results`: run -> its figures) decides,
    in order; a phase that waits on unfinished runs lists none yet."""
    plan = [Run(n, lr) for n in MAIN for lr in SWEEP_LRS]
    for n in MAIN:
        swept = seed0_runs(n, results)
        if not all(lr in swept for lr in SWEEP_LRS):
            continue
        if choose_lr({lr: swept[lr] for lr in SWEEP_LRS}) == max(SWEEP_LRS):
            plan.append(Run(n, EXTRA_LR))
            if EXTRA_LR not in swept:
                continue  # the extended sweep decides
        plan += [Run(n, choose_lr(swept), s) for s in SEEDS[1:]]
    plan += [Run(n, lr) for n in OTHERS for lr in FAMILY_LRS]
    plan += [Run(n, lr, 0, v) for n, lr, v in VARIANT_RUNS]
    return plan


def next_runs(results: Dict[Run, dict], failed: Sequence[Run] = ()) -> List[Run]:
    """The planned runs that have neither finished nor failed in this session."""
    return [r for r in planned_runs(results) if r not in results and r not in failed]


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


def log(msg: str) -> None:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')
    print(f'[compare {stamp}] {msg}', flush=True)


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


def _retry(step: str, run: Run, cmd: List[str], out: str) -> int:
    """cmd, tried again after QUICK_FAIL_WAIT_S while it fails within QUICK_FAIL_S (most often
    the working tree caught in the middle of an edit: an import error)."""
    for attempt in range(1, QUICK_FAIL_ATTEMPTS + 1):
        start = time.time()
        rc = _run(cmd, out)
        seconds = time.time() - start
        if rc == 0 or seconds > QUICK_FAIL_S or attempt == QUICK_FAIL_ATTEMPTS:
            return rc
        log(f'{run.describe()}: {step} stopped after {seconds:.0f} s (exit {rc}); trying again '
            f'in {QUICK_FAIL_WAIT_S} s ({attempt}/{QUICK_FAIL_ATTEMPTS}); last lines:\n'
            + _tail(out, 4))
        time.sleep(QUICK_FAIL_WAIT_S)
    return rc


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
    """Build the detector of config in a fresh process; its parameter counts, or None when it
    does not build."""
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


def test_options() -> List[str]:
    """tools/test.py's --cfg-options that test on TEST_DATA instead of the validation split."""
    root = TEST_DATA['root']
    return [f'test_dataloader.dataset.data_root={root}/',
            f'test_evaluator.ann_file={root}/annotations/instances_val.json']


def make_test_data(python: str) -> None:
    subprocess.run([python, 'tools/make_demo_data.py', '--out', TEST_DATA['root'], '--seed',
                    str(TEST_DATA['seed']), '--num-train', '0', '--num-val',
                    str(TEST_DATA['images']), '--quiet'], cwd=ROOT, check=True)


def run_one(run: Run, work_root: str, python: str, first_pass: bool = True) -> str:
    """Train and test one run; returns 'done', 'skipped', 'unbuildable' or 'failed'."""
    backbone = run.backbone
    work_dir = work_dir_of(run, work_root)
    metrics_path = osp.join(ROOT, work_dir, 'test_metrics.json')
    for done in (metrics_path, osp.join(ROOT, DEFAULT_ARCHIVE, run.key, 'test_metrics.json')):
        if osp.exists(done):
            log(f'{run.describe()}: finished before ({done}), skipped')
            return 'skipped'
    if not osp.exists(osp.join(ROOT, backbone.config)):
        log(f'{run.describe()}: no config {backbone.config}')
        return 'unbuildable'
    out = osp.join(ROOT, work_dir, 'runner_output.log')
    info = model_info(backbone.config, osp.join(ROOT, work_dir), python,
                      attempts=2 if first_pass else QUICK_FAIL_ATTEMPTS)
    if info is None:
        log(f'{run.describe()}: the model of {backbone.config} does not build:\n' + _tail(out))
        return 'unbuildable'
    log(f'{run.describe()}: backbone {info["backbone_params"] / 1e6:.2f} M parameters, '
        f'detector {info["detector_params"] / 1e6:.2f} M')
    max_epochs = int(info['max_epochs'])
    checkpoint = _final_checkpoint(work_dir, max_epochs)
    if checkpoint is None:
        resumed = bool(glob.glob(osp.join(ROOT, work_dir, 'epoch_*.pth')))
        log(f'{run.describe()}: training {backbone.config} -> {work_dir}'
            + (' (resuming from its last epoch checkpoint)' if resumed else ''))
        start = time.time()
        rc = _retry('training', run, [python, 'tools/train.py', backbone.config, '--work-dir',
                                      work_dir, '--resume', '--cfg-options',
                                      *run.train_options()], out)
        minutes = (time.time() - start) / 60
        checkpoint = _final_checkpoint(work_dir, max_epochs)
        if rc != 0 or checkpoint is None:
            log(f'{run.describe()}: training FAILED (exit {rc}, {minutes:.1f} min); last lines '
                f'of {out}:\n{_tail(out)}')
            return 'failed'
        log(f'{run.describe()}: trained in {minutes:.1f} min')
    test_dir = osp.join(work_dir, 'test')
    log(f'{run.describe()}: testing {checkpoint} on {TEST_DATA["root"]}')
    rc = _retry('test', run, [python, 'tools/test.py', backbone.config, checkpoint,
                              '--work-dir', test_dir, '--cfg-options', *test_options()], out)
    files = _test_metric_files(osp.join(ROOT, test_dir))
    metrics = read_test_json(files[-1]) if (rc == 0 and files) else None
    if metrics is None:
        log(f'{run.describe()}: test FAILED (exit {rc}); last lines of {out}:\n{_tail(out)}')
        return 'failed'
    metrics.update(seed=run.seed, lr=run.lr, variant=run.variant, checkpoint=checkpoint,
                   config=backbone.config, test_data=TEST_DATA['root'],
                   code_commit=_CODE['commit'] or 'working tree',
                   metrics_file=osp.relpath(files[-1], ROOT))
    with open(metrics_path, 'w', encoding='utf-8') as f:
        json.dump(metrics, f, indent=1)
    log(f'{run.describe()}: test bbox mAP {metrics["bbox_mAP"]:.3f}, '
        f'mAP@0.5 {metrics["bbox_mAP_50"]:.3f}; figures kept in {archive_run(run, work_root)}')
    return 'done'


def archive_run(run: Run, work_root: str = DEFAULT_WORK_ROOT,
                archive: str = DEFAULT_ARCHIVE) -> str:
    """A finished run's figures (model_info.json, test_metrics.json, the training scalars;
    kilobytes, no checkpoint) copied to `archive`, which git keeps: the report and the plan read
    them where work_dirs/ is gone (a new machine, a new session)."""
    src, dst = work_dir_of(run, work_root), osp.join(archive, run.key)
    os.makedirs(osp.join(dst, 'vis_data'), exist_ok=True)
    shutil.copy(osp.join(src, 'model_info.json'), osp.join(dst, 'model_info.json'))
    # one scalars file: a resumed run's folders merged, later records winning; how many
    # sessions trained it goes with the test figures
    files = training_logs.find_scalar_files(src)
    with open(osp.join(src, 'test_metrics.json'), encoding='utf-8') as f:
        metrics = dict(json.load(f), training_sessions=len(files))
    with open(osp.join(dst, 'test_metrics.json'), 'w', encoding='utf-8') as f:
        json.dump(metrics, f, indent=1)
    train, val = training_logs.load_scalars(files)
    with open(osp.join(dst, 'vis_data', 'scalars.json'), 'w', encoding='utf-8') as f:
        for record in sorted(train + val, key=lambda r: r['step']):
            f.write(json.dumps(record) + '\n')
    return dst


def finished_runs(work_root: str = DEFAULT_WORK_ROOT,
                  archive: Optional[str] = DEFAULT_ARCHIVE) -> Dict[Run, dict]:
    """Every tested run under work_root, and those only in `archive`: their report figures
    (collect_run)."""
    results = {}
    for root in ([archive] if archive else []) + [work_root]:  # work_root's win
        for d in sorted(glob.glob(osp.join(root, '*_seed*'))):
            run = parse_key(osp.basename(d))
            if run is None:
                continue
            figures = collect_run(d)
            if figures is not None and 'test_metrics' in figures:
                results[run] = figures
    return results


def run_plan(runs: Optional[Sequence[Run]] = None, work_root: str = DEFAULT_WORK_ROOT,
             python: str = sys.executable, code: str = 'worktree',
             archive: str = DEFAULT_ARCHIVE) -> Dict[str, List[Run]]:
    """The given runs in order, or the plan (next_runs, decided anew after every run), one at
    a time. A run whose config does not build is tried once more at the end."""
    data = osp.join(ROOT, 'data', 'demo_shapes')
    if not osp.isdir(data):
        log('no data/demo_shapes: generating it')
        subprocess.run([python, 'tools/make_demo_data.py', '--out', 'data/demo_shapes'],
                       cwd=ROOT, check=True)
    make_test_data(python)
    results: Dict[str, List[Run]] = {'done': [], 'skipped': [], 'failed': [], 'unbuildable': []}
    queue = list(runs) if runs is not None else None
    deferred: List[Run] = []
    while True:
        if queue is not None:
            if not queue:
                break
            run = queue.pop(0)
        else:
            pending = next_runs(finished_runs(work_root, archive),
                                results['failed'] + results['unbuildable'] + deferred)
            if not pending:
                break
            run = pending[0]
            log(f'plan: {len(pending)} runs to go, next {run.describe()}')
        use_code(code, work_root)
        try:
            status = run_one(run, work_root, python)
        except Exception as e:  # noqa: BLE001  (a broken run must not stop the others)
            log(f'{run.describe()}: FAILED in the runner: {type(e).__name__}: {e}')
            status = 'failed'
        if status == 'unbuildable' and run not in deferred:
            log(f'{run.describe()}: deferred to the end')
            deferred.append(run)
            continue
        results[status].append(run)
    for run in deferred:
        use_code(code, work_root)
        try:
            status = run_one(run, work_root, python, first_pass=False)
        except Exception as e:  # noqa: BLE001
            log(f'{run.describe()}: FAILED in the runner: {type(e).__name__}: {e}')
            status = 'failed'
        results[status].append(run)
    log('finished: ' + '; '.join(f'{k}: {", ".join(r.describe() for r in v) or "-"}'
                                for k, v in results.items()))
    return results


# --------------------------------------------------------------------------------------------
# report


def collect_run(work_dir: str, skip_time_iters: int = 10) -> Optional[dict]:
    """What the report needs of one run's work_dir, or None if it has no training records.

    ``s_per_iter`` is the mean of mmengine's logged ``time`` (seconds per iteration, each
    record the mean over the logging interval) over the records after the first
    ``skip_time_iters`` iterations; validation and testing are not in it. ``val_bbox_mAP``
    (and ``_50``): the validation after the last epoch, what the lr is chosen by."""
    try:
        train, val = training_logs.load_scalars(training_logs.find_scalar_files(work_dir))
    except FileNotFoundError:
        return None
    run = dict(work_dir=work_dir,
               loss=[(r['step'], r['loss']) for r in train if 'loss' in r],
               val_map50=[(r['step'], r['coco/bbox_mAP_50']) for r in val
                          if 'coco/bbox_mAP_50' in r],
               val_map=[(r['step'], r['coco/bbox_mAP']) for r in val if 'coco/bbox_mAP' in r])
    run['val_bbox_mAP'] = run['val_map'][-1][1] if run['val_map'] else float('nan')
    run['val_bbox_mAP_50'] = run['val_map50'][-1][1] if run['val_map50'] else float('nan')
    times = [r['time'] for r in train if 'time' in r and r['step'] > skip_time_iters]
    run['s_per_iter'] = sum(times) / len(times) if times else None
    # the fastest logging interval: closest to the backbone's own speed on a busy machine
    run['s_per_iter_min'] = min(times) if times else None
    # a stopped run that resumed wrote a second <time> folder
    run['sessions'] = len(training_logs.find_scalar_files(work_dir))
    for fname in ('test_metrics.json', 'model_info.json'):
        path = osp.join(work_dir, fname)
        if osp.exists(path):
            with open(path, encoding='utf-8') as f:
                run[fname[:-5]] = json.load(f)
    run['sessions'] = run.get('test_metrics', {}).get('training_sessions', run['sessions'])
    return run


def _mean_range(values: List[float], fmt: str = '{:.3f}') -> str:
    if not values:
        return '-'
    mean = sum(values) / len(values)
    if len(values) == 1:
        return fmt.format(mean)
    return f'{fmt.format(mean)} [{fmt.format(min(values))}-{fmt.format(max(values))}]'


def _test(figures: dict, key: str) -> float:
    return figures['test_metrics'][key]


def _test_cell(figures: dict) -> str:
    return f'{_test(figures, "bbox_mAP"):.3f} / {_test(figures, "bbox_mAP_50"):.3f}'


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    return '\n'.join(lines + ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows])


def format_sweep(results: Dict[Run, dict]) -> str:
    """Per backbone, seed 0 of each lr: validation bbox mAP (what chooses) / test mAP@0.5."""
    lrs = sorted({r.lr for r in results if not r.variant and r.seed == 0})
    rows = []
    for name, backbone in BACKBONES.items():
        swept = seed0_runs(name, results)
        if not swept:
            continue
        best = choose_lr(swept)
        cells = []
        for lr in lrs:
            f = swept.get(lr)
            cell = '' if f is None else f'{f["val_bbox_mAP"]:.3f} / {_test(f, "bbox_mAP_50"):.3f}'
            cells.append(f'**{cell}**' if f is not None and lr == best else cell)
        rows.append([backbone.label, *cells, format_lr(best)])
    return markdown_table(['backbone', *(format_lr(lr) for lr in lrs), 'best'], rows)


def best_runs(results: Dict[Run, dict]) -> Dict[str, Tuple[float, List[Tuple[Run, dict]]]]:
    """Per backbone: its best lr (seed 0 on validation) and its finished runs at that lr."""
    out = {}
    for name in BACKBONES:
        swept = seed0_runs(name, results)
        if not swept:
            continue
        lr = choose_lr(swept)
        runs = sorted(((r, f) for r, f in results.items()
                       if r.name == name and r.lr == lr and not r.variant),
                      key=lambda rf: rf[0].seed)
        out[name] = (lr, runs)
    return out


def format_table(results: Dict[Run, dict]) -> str:
    rows = []
    for name, (lr, runs) in best_runs(results).items():
        b = BACKBONES[name]
        figures = [f for _, f in runs]
        info = next((f['model_info'] for f in figures if 'model_info' in f), None)
        times = [f['s_per_iter'] for f in figures if f['s_per_iter'] is not None]
        fastest = [f['s_per_iter_min'] for f in figures if f['s_per_iter_min'] is not None]
        rows.append([
            b.label, b.norm, format_lr(lr), ', '.join(str(r.seed) for r, _ in runs),
            _mean_range([_test(f, 'bbox_mAP') for f in figures]),
            _mean_range([_test(f, 'bbox_mAP_50') for f in figures]),
            f'{sum(times) / len(times):.2f} ({min(fastest):.2f})' if times else '-',
            f'{info["backbone_params"] / 1e6:.1f}M / {info["detector_params"] / 1e6:.1f}M'
            if info else '-'])
    return markdown_table(
        ['backbone', 'norm (from scratch, 2 images a batch)', 'lr', 'seeds',
         'test bbox mAP mean [min-max]', 'test mAP@0.5 mean [min-max]',
         's/iteration mean (fastest 10)', 'params backbone / detector'], rows)


def format_variants(results: Dict[Run, dict]) -> str:
    rows = []
    best = best_runs(results)
    for run, f in results.items():
        if run.variant:
            plain_lr = run.lr
            plain = results.get(Run(run.name, run.lr, run.seed))
            if plain is None and run.name in best:
                plain_lr = best[run.name][0]
                plain = results.get(Run(run.name, plain_lr, run.seed))
            rows.append([run.backbone.label, format_lr(run.lr), run.variant,
                         VARIANTS[run.variant].why, _test_cell(f),
                         'not run' if plain is None
                         else f'{_test_cell(plain)} (at {format_lr(plain_lr)})'])
    return markdown_table(['backbone', 'lr', 'variant', 'what differs', 'test bbox mAP / mAP@0.5',
                           "the comparison's recipe at this lr, or else at its best"], rows)


def format_runs(results: Dict[Run, dict]) -> str:
    order = list(BACKBONES)
    rows = []
    for run, f in sorted(results.items(), key=lambda rf: (order.index(rf[0].name), rf[0].variant,
                                                           rf[0].lr, rf[0].seed)):
        sessions = f.get('sessions', 1)
        code = f['test_metrics'].get('code_commit', '-')
        rows.append([
            run.backbone.label, format_lr(run.lr) + (f' ({run.variant})' if run.variant else ''),
            run.seed, ', '.join(f'{v:.3f}' for _, v in f['val_map50']), _test_cell(f),
            f'{f["loss"][0][1]:.3f} / {f["loss"][-1][1]:.3f}' if f['loss'] else '-',
            'in one go' if sessions <= 1 else f'stopped and resumed ({sessions} sessions)',
            code[:12] if code != 'working tree' else code])
    return markdown_table(['backbone', 'lr', 'seed', 'val mAP@0.5 after each epoch',
                           'test mAP / mAP@0.5', 'first / last logged loss', 'training', 'code'],
                          rows)


def plot(results: Dict[Run, dict], out: str, smooth: int = 5) -> str:
    """Three panels: validation bbox mAP against the lr (seed 0, one line per backbone); then,
    at each backbone's best lr, the training loss per iteration and validation mAP@0.5 per
    epoch: each seed a thin line, the mean over seeds a thick one."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    def smoothed(points):
        xs, ys = zip(*points)
        ys = [sum(ys[max(0, i - smooth + 1):i + 1]) / len(ys[max(0, i - smooth + 1):i + 1])
              for i in range(len(ys))]
        return list(xs), ys

    def mean_curve(curves):
        xs = sorted(set.intersection(*(set(x for x, _ in c) for c in curves)))
        return xs, [sum(dict(c)[x] for c in curves) / len(curves) for x in xs]

    fig, (ax_lr, ax_loss, ax_map) = plt.subplots(1, 3, figsize=(19, 5.4))
    best = best_runs(results)
    for i, name in enumerate(BACKBONES):
        colour = f'C{i}'
        swept = seed0_runs(name, results)
        if len(swept) > 1:
            lrs = sorted(swept)
            ax_lr.plot(lrs, [swept[lr]['val_bbox_mAP'] for lr in lrs], color=colour,
                       marker='o', label=BACKBONES[name].label)
        if name not in best:
            continue
        lr, runs = best[name]
        label = f'{BACKBONES[name].label} at {format_lr(lr)} ({len(runs)} seed' \
                f'{"s" if len(runs) > 1 else ""})'
        losses = [f['loss'] for _, f in runs if f['loss']]
        maps = [f['val_map50'] for _, f in runs if f['val_map50']]
        for c in losses:
            ax_loss.plot(*smoothed(c), color=colour, linewidth=0.6, alpha=0.5)
        for c in maps:
            ax_map.plot(*zip(*c), color=colour, linewidth=0.8, alpha=0.5, marker='.')
        if losses:
            ax_loss.plot(*smoothed(list(zip(*mean_curve(losses)))), color=colour, linewidth=2,
                         label=label)
        if maps:
            ax_map.plot(*mean_curve(maps), color=colour, linewidth=2, marker='o', label=label)
    ax_lr.set(xscale='log', xlabel='peak learning rate (AdamW)', ylabel='val bbox mAP',
              title='learning-rate sweep (seed 0, validation)')
    ax_loss.set(xlabel='iteration', ylabel=f'training loss (mean of {smooth} records)',
                title='training loss at the best lr (thin: each seed, thick: mean)')
    ax_map.set(xlabel='epoch', ylabel='val bbox mAP@0.5',
               title='val mAP@0.5 at the best lr (thin: each seed, thick: mean)')
    ax_map.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (ax_lr, ax_loss, ax_map):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize='small')
        ax.set_ylim(bottom=0)
    fig.suptitle(f'RetinaNet demo recipe (shapes, 4 epochs x 300 iterations, batch 2, '
                 f'{WARMUP_ITERS} warm-up iterations), backbones from scratch')
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def write_report(work_root: str = DEFAULT_WORK_ROOT, md: str = 'docs/demo_comparison.md',
                 png: str = 'docs/demo_comparison.png',
                 archive: Optional[str] = DEFAULT_ARCHIVE) -> str:
    results = finished_runs(work_root, archive)
    pending = next_runs(results)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    parts = [
        '# Backbones side by side on the shapes demo',
        '',
        f'Written by `python tools/demo/compare_backbones.py --report` ({stamp}) from '
        f'`{work_root}/<backbone>_lr<lr>_seed<S>/`. Every run: '
        '`configs/demo/retinanet_<backbone>_demo.py` = the recipe of '
        '`retinanet_posmlp_t_demo.py` (shapes data, 600 training images, 4 epochs x 300 '
        'iterations, batch 2, 128 px, 128-channel FPN P3-P5, GN head, AdamW with weight decay '
        '0.05 and none on norms, biases and positional parameters, gradients clipped at norm 10, '
        'cosine decay to 5%) with the backbone swapped, from scratch, at one peak lr and one '
        f'seed. Warm-up: {WARMUP_ITERS} iterations, linear from 1% of the lr: {WARMUP_WHY}.',
        '',
        'The lr is chosen per backbone on the validation split (100 images, after the last '
        'epoch, seed 0); the figures below are from `tools/test.py` on a held-out test split '
        f'that no choice has seen ({TEST_DATA["images"]} images of the same generator with seed '
        f'{TEST_DATA["seed"]}: `{TEST_DATA["root"]}`). s/iteration: the mean logged training '
        '`time` after iteration 10 (mmengine logs the mean of every 10 iterations) and, in '
        'brackets, the fastest such window of any seed; on a 2-core CPU shared with other '
        'work, so compare the fastest windows. Parameters: the detector as built from the '
        'config (4 classes).',
        '',
        '## At each backbone\'s best learning rate',
        '',
        format_table(results),
        '',
        '## Learning-rate sweep (seed 0): validation bbox mAP / test mAP@0.5, the chosen lr bold',
        '',
        format_sweep(results),
        '',
    ]
    if any(r.variant for r in results):
        parts += ['## Published recipes and the first recipe', '', PUBLISHED_RECIPES, '',
                  format_variants(results), '']
    parts += ['## Every run', '', format_runs(results), '']
    if pending:
        parts += ['## Not finished', '',
                  'Runs the plan holds that had no test figures when this was written: '
                  + ', '.join(r.describe() for r in pending) + ' (and those that their results '
                  'will decide: seeds 1 and 2 at the best lr of a backbone whose sweep is '
                  'open).', '']
    if results:
        plot(results, png)
        parts += [f'![lr sweep, loss and val mAP@0.5 per backbone]({osp.basename(png)})', '']
    os.makedirs(osp.dirname(osp.abspath(md)), exist_ok=True)
    with open(md, 'w', encoding='utf-8') as f:
        f.write('\n'.join(parts))
    return md
