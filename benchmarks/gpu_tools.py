"""The real tools on a GPU: tools/train.py --amp, then tools/test.py on the GPU and on the CPU
for the same checkpoint, as a user runs them (behind benchmarks/gpu_check.sh).

    python benchmarks/gpu_tools.py                  # ~2.5 min on an H100 (16 CPU cores)
    python benchmarks/gpu_tools.py --dry-run        # the same steps, tiny, on a CPU: code paths

1. COCO-sized data from the shapes generator (tools/make_demo_data.py: 160 training and 24
   validation images of 800-1333 pixels a side, objects of 40-400 pixels);
2. `tools/train.py configs/demo/retinanet_posmlp_t_coco_sized_demo.py --amp`: the COCO
   RetinaNet-PosMLP-T from scratch, 5 epochs of 40 iterations, mixed precision on the GPU;
3. `tools/test.py` of the final checkpoint on the GPU, then with CUDA hidden (on the CPU);
4. a summary: the training loss at the start and the end (it must fall), every logged loss
   finite, the COCO bbox metrics of both tests and their difference (at most 0.002 mAP), the
   loss curve.

Writes <out-dir>/tools.md and tools.json, the training log and scalars, the test metrics and
training_curves.png; each step's output goes to <out-dir>/<step>.log. A failed step stops the
ones that need it and is reported.
"""
import argparse
import glob
import json
import math
import os
import os.path as osp
import shutil
import subprocess
import sys
import time

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

CONFIG = 'configs/demo/retinanet_posmlp_t_coco_sized_demo.py'
DATA = 'data/demo_shapes_coco_sized'
MAX_MAP_DIFFERENCE = 0.002
_T0 = time.time()


def log(msg: str) -> None:
    print(f'[gpu_tools +{time.time() - _T0:6.1f}s] {msg}', flush=True)


def run(step: str, cmd, out_dir: str, env=None, timeout=None) -> dict:
    """cmd from the repository root, its output in <out_dir>/<step>.log; rc and seconds."""
    log(f'{step}: {" ".join(cmd)}')
    start = time.time()
    path = osp.join(out_dir, f'{step}.log')
    with open(path, 'w') as f:
        try:
            rc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                                env=dict(os.environ, **(env or {})), timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    result = dict(step=step, rc=rc, seconds=round(time.time() - start, 1), log=osp.basename(path))
    log(f'{step}: exit {rc} after {result["seconds"]} s' + ('' if rc == 0 else f'; see {path}'))
    if rc != 0:
        with open(path) as f:
            print(''.join(f.readlines()[-15:]), flush=True)
    return result


def test_metrics(test_dir: str) -> dict:
    """The COCO bbox metrics tools/test.py logged (mmengine's <time>/<time>.json)."""
    files = sorted(p for p in glob.glob(osp.join(test_dir, '*', '*.json'))
                   if osp.basename(p)[:-5] == osp.basename(osp.dirname(p)))
    if not files:
        return {}
    with open(files[-1]) as f:
        record = json.loads(f.readline())
    return {k: v for k, v in record.items() if k.startswith('coco/')}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out-dir', default=osp.join(REPO, 'benchmarks', 'results', 'gpu', 'tools'))
    p.add_argument('--work-dir', default=osp.join(REPO, 'work_dirs', 'gpu_tools'))
    p.add_argument('--python', default=sys.executable)
    p.add_argument('--dry-run', action='store_true',
                   help='tiny data, one epoch, no --amp: the code paths on a CPU')
    p.add_argument('--timeout', type=float, default=150.0, help='seconds for all the steps')
    args = p.parse_args(argv)
    out, work = osp.abspath(args.out_dir), osp.abspath(args.work_dir)
    os.makedirs(out, exist_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    py = args.python
    data = [py, 'tools/make_demo_data.py', '--out', DATA, '--quiet']
    train = [py, 'tools/train.py', CONFIG, '--work-dir', work]
    options = []
    if args.dry_run:
        data += ['--num-train', '4', '--num-val', '2', '--image-size', '96', '128',
                 '--object-size', '20', '60']
        options = ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
                   'default_hooks.checkpoint.interval=1', 'train_dataloader.batch_size=2',
                   'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
                   'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
                   'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
                   'default_hooks.logger.interval=1']
    else:
        data += ['--num-train', '160', '--num-val', '24', '--image-size', '800', '1333',
                 '--object-size', '40', '400']
        train.append('--amp')
    if options:
        train += ['--cfg-options', *options]
    deadline = time.time() + args.timeout
    steps = []

    def left():
        return max(5.0, deadline - time.time())

    steps.append(run('data', data, out, timeout=left()))
    if steps[-1]['rc'] == 0:
        steps.append(run('train', train, out, timeout=left()))
    checkpoint = next(iter(sorted(glob.glob(osp.join(work, 'epoch_*.pth')))), None)
    metrics = {}
    if checkpoint:
        test = [py, 'tools/test.py', CONFIG, checkpoint]
        extra = ['--cfg-options', *options] if options else []
        for where, env in (('gpu', {}), ('cpu', {'CUDA_VISIBLE_DEVICES': ''})):
            steps.append(run(f'test_{where}', test + ['--work-dir', osp.join(work, f'test_{where}')]
                             + extra, out, env=env, timeout=left()))
            metrics[where] = test_metrics(osp.join(work, f'test_{where}'))
    # the training records: scalars.json and the log, and the curves
    losses = []
    scalars = sorted(glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json')))
    if scalars:
        shutil.copy(scalars[-1], osp.join(out, 'scalars.json'))
        for line in open(scalars[-1]):
            record = json.loads(line)
            if 'loss' in record:
                losses.append((record['step'], record['loss']))
        for log_file in glob.glob(osp.join(work, '*', '*.log')):
            shutil.copy(log_file, osp.join(out, 'train_' + osp.basename(log_file)))
        try:
            from mmdet_posmlp.analysis.training_logs import plot_training_curves
            plot_training_curves(work, osp.join(out, 'training_curves.png'),
                                 'RetinaNet-PosMLP-T, COCO-sized shapes, tools/train.py --amp')
        except Exception as e:  # noqa: BLE001  (the figures matter more than the picture)
            log(f'plot failed: {type(e).__name__}: {e}')
    for where, m in metrics.items():
        with open(osp.join(out, f'test_{where}_metrics.json'), 'w') as f:
            json.dump(m, f, indent=1)
    summary = dict(dry_run=args.dry_run, config=CONFIG, steps=steps, losses_logged=len(losses),
                   first_loss=losses[0][1] if losses else None,
                   last_loss=losses[-1][1] if losses else None,
                   losses_finite=all(math.isfinite(v) for _, v in losses) if losses else None,
                   metrics=metrics)
    gpu, cpu = metrics.get('gpu', {}), metrics.get('cpu', {})
    keys = sorted(set(gpu) & set(cpu))
    summary['max_metric_difference'] = (max(abs(gpu[k] - cpu[k]) for k in keys) if keys else None)
    checks = dict(
        all_steps_ran=all(s['rc'] == 0 for s in steps) and len(steps) == 4,
        loss_fell=bool(losses) and losses[-1][1] < losses[0][1],
        losses_finite=bool(summary['losses_finite']),
        gpu_equals_cpu=summary['max_metric_difference'] is not None
        and summary['max_metric_difference'] <= MAX_MAP_DIFFERENCE)
    summary['checks'] = checks
    with open(osp.join(out, 'tools.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    lines = ['# tools/train.py --amp and tools/test.py on the GPU' + (' (DRY RUN on a CPU: code '
                                                                      'paths only)' if args.dry_run else ''), '',
             f'`{CONFIG}` on `{DATA}`; checks: '
             + ', '.join(f'{k} {"yes" if v else "NO"}' for k, v in checks.items()), '',
             '| step | exit | seconds |', '| --- | ---: | ---: |']
    lines += [f"| {s['step']} | {s['rc']} | {s['seconds']} |" for s in steps]
    lines += ['', f"training loss: first {summary['first_loss']}, last {summary['last_loss']} "
                  f"({len(losses)} records)", '',
              '| metric | GPU | CPU | difference |', '| --- | ---: | ---: | ---: |']
    lines += [f'| {k} | {gpu[k]:.3f} | {cpu[k]:.3f} | {abs(gpu[k] - cpu[k]):.4f} |' for k in keys]
    text = '\n'.join(lines) + '\n'
    with open(osp.join(out, 'tools.md'), 'w') as f:
        f.write(text)
    print(text, flush=True)
    return 0 if all(checks.values()) else 1


if __name__ == '__main__':
    sys.exit(main())
