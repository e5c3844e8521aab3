"""GPU detector benchmark: RetinaNet and Mask R-CNN with PosMLP-T against mmdet's own Swin-T
configs, on one GPU, under mixed precision as `tools/train.py --amp` trains them.

    python benchmarks/gpu_detectors.py                         # < 3 min on an H100
    python benchmarks/gpu_detectors.py --detectors retinanet --dtypes bfloat16 --batch 2
    python benchmarks/gpu_detectors.py --device cpu --size 128 160 --batch 1 --steps 1  # code paths

Models: `configs/{retinanet,mask_rcnn}_posmlp_t_1x.py` against
`mmdet::swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py` and `mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py`,
random weights (benchmarks/benchmark_detectors.py builds them and their synthetic COCO-like
batches: 8 boxes an image, masks for Mask R-CNN), 800x1333 images (padded to 800x1344).

- ``train``: `model.train_step` with each config's optimizer wrapper as `--amp` makes it
  (mmengine's AmpOptimWrapper, dynamic loss scaling, float16 or bfloat16) and one optimizer for
  both (AdamW, lr 1e-4, weight decay 0.05, fused), at every --batch. Every step's losses must
  be finite; the loss scale is read before and after (a step skipped for infinite gradients
  halves it: the table gives the skipped steps).
- ``predict``: `model.test_step` under no_grad and autocast, batch 1: PosMLP-T plain and after
  its deployment step (`backbone.fuse()`), Swin-T plain.

Timing: the two (three) models of a group are built together; each runs its warm-up steps with
its peak memory measured (CUDA's allocator: the high-water mark above what was allocated before
the model was built, so what the model needs alone: weights, gradients, optimizer state,
activations, workspace), then the group is timed in interleaved rounds, each a few steps of
each model between CUDA events; img/s from the median round. Ratios are within a group, from
one run. Writes <out-dir>/detectors.md and .json after every group (a run cut short keeps what
it measured) and prints the table.
"""
import argparse
import datetime
import gc
import os
import platform
import statistics
import sys
import time
from typing import Dict, List

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmarks.gpu_timing import CPU_NOTE, Timer, fmt, report_place, save_report  # noqa: E402
from benchmarks.benchmark_detectors import (LABELS, SAME_OPTIMIZER, build_detector,  # noqa: E402
                                            synthetic_batch)

PAIRS = {'retinanet': ('retinanet_posmlp_t', 'retinanet_swin_t'),
         'mask_rcnn': ('mask_rcnn_posmlp_t', 'mask_rcnn_swin_t')}
_T0 = time.time()


def log(msg: str) -> None:
    now = datetime.datetime.now().strftime('%H:%M:%S')
    print(f'[gpu_detectors {now} +{time.time() - _T0:6.1f}s] {msg}', flush=True)


def allocated(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == 'cuda' else 0


def reset_peak(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)


def peak(device: torch.device) -> int:
    return torch.cuda.max_memory_allocated(device) if device.type == 'cuda' else 0


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()


def _amp_wrapper(model, cfg, dtype: str, device: torch.device):
    """The optimizer wrapper `tools/train.py --amp` makes of the config's (engine/amp.py), with
    SAME_OPTIMIZER and the dtype asked for; on a CPU (code paths only) float32: mmcv's CPU
    NMS and RoIAlign take no bfloat16."""
    from mmengine.optim import build_optim_wrapper
    from mmdet_posmlp.engine.amp import amp_optim_wrapper
    wrapper = dict(cfg.optim_wrapper, optimizer=dict(SAME_OPTIMIZER))
    if device.type == 'cuda':
        wrapper = dict(amp_optim_wrapper(wrapper), dtype=dtype)
    return build_optim_wrapper(model, wrapper)


def _loss_scale(wrapper):
    scaler = getattr(wrapper, 'loss_scaler', None)
    return float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else None


class TrainMember:
    """One detector's training step on one batch size, and what its steps showed."""

    def __init__(self, name: str, dtype: str, batch: int, args, device: torch.device):
        self.name, self.batch = name, batch
        base = allocated(device)
        reset_peak(device)
        torch.manual_seed(0)
        self.model, cfg = build_detector(name)
        self.model.to(device).train()
        self.wrapper = _amp_wrapper(self.model, cfg, dtype, device)
        self.data = synthetic_batch(batch, *args.size, masks='mask_rcnn' in name)
        self.scale_before = _loss_scale(self.wrapper)
        self.scale_drops = 0
        self.losses = []
        for _ in range(args.warmup):
            self.losses.append(float(self.step()['loss']))
        if device.type == 'cuda':
            torch.cuda.synchronize()
        self.peak_mb = (peak(device) - base) / 2 ** 20 if device.type == 'cuda' else None
        self.params = sum(p.numel() for p in self.model.parameters())

    def step(self) -> Dict:
        """One training step; a loss scale that went down counts a skipped step (the scaler
        skips the update when the gradients hold inf or NaN, and halves the scale)."""
        scale = _loss_scale(self.wrapper)
        log_vars = self.model.train_step(self.data, self.wrapper)
        after = _loss_scale(self.wrapper)
        if scale is not None and after < scale:
            self.scale_drops += 1
        return log_vars

    def close(self) -> None:
        del self.model, self.wrapper, self.data


def measure_train(det: str, dtype: str, batch: int, args, device) -> List[Dict]:
    members = []
    rows = []
    try:
        for name in PAIRS[det]:
            log(f'  building {name} ({dtype}, batch {batch}), {args.warmup} warm-up steps')
            members.append(TrainMember(name, dtype, batch, args, device))
        times = {m.name: [] for m in members}
        for _ in range(args.rounds):
            for m in members:
                with Timer(device) as t:
                    for _ in range(args.steps):
                        log_vars = m.step()
                times[m.name].append(t.seconds / args.steps)
                m.losses.append(float(log_vars['loss']))  # each round's last step
        for m in members:
            seconds = statistics.median(times[m.name])
            finite = all(l == l and abs(l) != float('inf') for l in m.losses)
            rows.append(dict(detector=det, name=m.name, mode='train', dtype=dtype, batch=batch,
                             params=m.params, s_per_step=seconds, img_s=batch / seconds,
                             peak_mb=m.peak_mb, losses_finite=finite, last_loss=m.losses[-1],
                             loss_scale_before=m.scale_before,
                             loss_scale_after=_loss_scale(m.wrapper),
                             skipped_steps=m.scale_drops,
                             steps=args.warmup + args.rounds * args.steps))
    finally:
        for m in members:
            m.close()
        members.clear()
        free(device)
    return rows


def measure_predict(det: str, dtype: str, args, device) -> List[Dict]:
    models = []
    rows = []
    data = synthetic_batch(1, *args.size, masks=False)
    try:
        for name, fused in ((PAIRS[det][0], False), (PAIRS[det][0], True), (PAIRS[det][1], False)):
            base = allocated(device)
            reset_peak(device)
            torch.manual_seed(0)
            model, _ = build_detector(name)
            model.to(device).eval()
            if fused:
                model.backbone.fuse()
            step = _predict_step(model, data, dtype, device)
            for _ in range(args.warmup):
                out = step()
            if device.type == 'cuda':
                torch.cuda.synchronize()
            models.append((name, fused, model, step,
                           (peak(device) - base) / 2 ** 20 if device.type == 'cuda' else None,
                           len(out[0].pred_instances)))
        times = {i: [] for i in range(len(models))}
        for _ in range(args.rounds):
            for i, (_, _, _, step, _, _) in enumerate(models):
                with Timer(device) as t:
                    for _ in range(args.steps):
                        step()
                times[i].append(t.seconds / args.steps)
        for i, (name, fused, model, _, peak_mb, detections) in enumerate(models):
            seconds = statistics.median(times[i])
            rows.append(dict(detector=det, name=name, mode='predict (fused)' if fused else 'predict',
                             dtype=dtype, batch=1, params=sum(p.numel() for p in model.parameters()),
                             s_per_step=seconds, img_s=1 / seconds, peak_mb=peak_mb,
                             detections=detections))
    finally:
        models.clear()
        free(device)
    return rows


def _predict_step(model, data, dtype: str, device: torch.device):
    def step():
        with torch.no_grad(), torch.autocast(device.type, dtype=getattr(torch, dtype),
                                             enabled=device.type == 'cuda'):
            return model.test_step(data)
    return step


# ------------------------------------------------------------------ report
def ratios(rows: List[Dict]) -> None:
    """img/s and peak memory against Swin-T in the same (detector, mode, dtype, batch); fused
    prediction against Swin-T's prediction."""
    def key(r):
        return r['detector'], r['mode'].replace(' (fused)', ''), r['dtype'], r['batch']
    base = {key(r): r for r in rows if r['name'].endswith('swin_t') and r.get('img_s')}
    for r in rows:
        b = base.get(key(r))
        r['img_s_ratio'] = r['img_s'] / b['img_s'] if b and r.get('img_s') else None
        r['peak_ratio'] = (r['peak_mb'] / b['peak_mb'] if b and r.get('peak_mb')
                           and b.get('peak_mb') else None)


def render(env: Dict, rows: List[Dict], complete: bool) -> str:
    ratios(rows)
    cpu = env['device'] != 'cuda'
    title = ('# CPU code-path test of benchmarks/gpu_detectors.py: NOT a GPU measurement'
             if cpu else f"# GPU detectors: PosMLP-T vs Swin-T (mmdet's configs), {env['gpu']}")
    h, w = env['size']
    lines = [title, '',
             f"{'complete' if complete else 'INCOMPLETE (still running or cut short)'}; "
             f"{env['date']}; images {h}x{w}; train: each config's AmpOptimWrapper (dynamic loss "
             f"scale) with AdamW (lr 1e-4, wd 0.05, fused) for both, {env['warmup']} warm-up "
             f"steps then {env['rounds']} interleaved rounds of {env['steps']} steps, median "
             "round; predict: test_step under no_grad and autocast, batch 1.", '',
             f"- device: {env['gpu'] or env['cpu']}; torch {env['torch']}, CUDA {env['cuda']}, "
             f"mmcv {env['mmcv']}, mmdet {env['mmdet']}, Python {env['python']}; PosMLP's Triton "
             f"kernels: {env['kernels']}",
             f"- cudnn.benchmark={env['cudnn_benchmark']}, matmul TF32={env['matmul_tf32']}", '',
             '| detector | mode | dtype | batch | img/s | vs Swin-T | peak MB | vs Swin-T '
             '| steps finite / skipped | loss scale | note |',
             '| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |']
    for r in rows:
        finite = ('' if 'losses_finite' not in r else
                  f"{'yes' if r['losses_finite'] else 'NO'} / {r['skipped_steps']} of {r['steps']}")
        scale = ('' if r.get('loss_scale_before') is None else
                 f"{r['loss_scale_before']:g} -> {r['loss_scale_after']:g}")
        note = r.get('error') or (f"{r['detections']} detections" if 'detections' in r else '')
        lines.append(
            f"| {LABELS.get(r['name'], r['name'])} | {r['mode']} | {r['dtype']} | {r['batch']} "
            f"| {fmt(r.get('img_s'), '.2f')} | {fmt(r.get('img_s_ratio'), '.2f')} "
            f"| {fmt(r.get('peak_mb'), '.0f')} | {fmt(r.get('peak_ratio'), '.2f')} | {finite} "
            f"| {scale} | {note} |")
    if cpu:
        lines += ['', CPU_NOTE]
    return '\n'.join(lines) + '\n'


def environment(args) -> Dict:
    import mmcv
    import mmdet
    from mmdet_posmlp.models import posmlp_kernels
    device = torch.device(args.device)
    return dict(
        date=datetime.datetime.now().isoformat(timespec='seconds'), device=args.device,
        gpu=torch.cuda.get_device_name(device) if device.type == 'cuda' else None,
        cpu=platform.processor() or platform.machine(), python=platform.python_version(),
        torch=torch.__version__, cuda=torch.version.cuda, mmcv=mmcv.__version__,
        mmdet=mmdet.__version__,
        kernels='on' if posmlp_kernels.use_kernels(torch.empty(0, device=device)) else 'off',
        cudnn_benchmark=torch.backends.cudnn.benchmark,
        matmul_tf32=torch.backends.cuda.matmul.allow_tf32, size=list(args.size),
        warmup=args.warmup, rounds=args.rounds, steps=args.steps)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--device', default='cuda', choices=['cuda', 'cpu'],
                   help="'cpu' only tests the code paths (the report says so)")
    p.add_argument('--detectors', nargs='+', default=['retinanet', 'mask_rcnn'], choices=list(PAIRS))
    p.add_argument('--size', type=int, nargs=2, default=(800, 1333), metavar=('H', 'W'))
    p.add_argument('--batch', type=int, nargs='+', default=[2, 8], help='training batch sizes')
    p.add_argument('--dtypes', nargs='+', default=['float16', 'bfloat16'],
                   choices=['float16', 'bfloat16'])
    p.add_argument('--predict-dtypes', nargs='*', default=['bfloat16'],
                   choices=['float16', 'bfloat16'])
    p.add_argument('--warmup', type=int, default=2, help='untimed steps (peak memory) per model')
    p.add_argument('--rounds', type=int, default=3, help='interleaved timed rounds')
    p.add_argument('--steps', type=int, default=3, help='steps per model and round')
    p.add_argument('--time-budget', type=float, default=170.0,
                   help='seconds: a group is skipped (and says so) once they are spent')
    p.add_argument('--out-dir', default=None,
                   help='default benchmarks/results/gpu (cuda), a temporary folder (cpu)')
    args = p.parse_args(argv)
    if args.steps < 1 or args.rounds < 1 or args.warmup < 1:
        p.error('--steps, --rounds and --warmup must be >= 1')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        print('gpu_detectors: no CUDA device here; use --device cpu to test the code paths only',
              file=sys.stderr)
        return 2
    device = torch.device(args.device)
    stem, out_dir = report_place('detectors', device.type, args.out_dir)
    env = environment(args)
    log(f"{env['gpu'] or 'CPU (code-path test only)'} | torch {env['torch']} | mmcv {env['mmcv']} "
        f"| kernels {env['kernels']} | writing {out_dir}/{stem}.md/.json")
    groups = [('train', det, dtype, batch) for det in args.detectors for dtype in args.dtypes
              for batch in args.batch]
    groups += [('predict', det, dtype, 1) for det in args.detectors for dtype in args.predict_dtypes]
    rows: List[Dict] = []
    for i, (mode, det, dtype, batch) in enumerate(groups, 1):
        log(f'[{i}/{len(groups)}] {det} {mode} {dtype} batch {batch}')
        if time.time() - _T0 > args.time_budget:
            rows += [dict(detector=det, name=n, mode=mode, dtype=dtype, batch=batch,
                          error=f'skipped: --time-budget {args.time_budget:g} s spent')
                     for n in PAIRS[det]]
            continue
        try:
            group = (measure_train(det, dtype, batch, args, device) if mode == 'train'
                     else measure_predict(det, dtype, args, device))
            for r in group:
                log(f"    {r['name']} {r['mode']}: {r['img_s']:.2f} img/s, peak "
                    f"{fmt(r.get('peak_mb'), '.0f') or 'n/a'} MB")
            rows += group
        except Exception as e:  # recorded in the table; the next group runs
            first = (str(e).strip().splitlines() or [''])[0][:240]
            log(f'    FAILED: {type(e).__name__}: {first}')
            rows += [dict(detector=det, name=n, mode=mode, dtype=dtype, batch=batch,
                          error=f'{type(e).__name__}: {first}') for n in PAIRS[det]]
        save_report(out_dir, stem, env, rows, False, render)
    md = save_report(out_dir, stem, env, rows, True, render)
    print(md, flush=True)
    log(f'done: {out_dir}/{stem}.md and .json')
    bad = [r for r in rows if r.get('error') or r.get('losses_finite') is False]
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
