"""GPU backbone benchmark: PosMLP-T against Swin-T, both timm feature extractors, on one GPU.

    python3 benchmarks/gpu_backbones.py                      # defaults below; < 4 min on an H200
    python3 benchmarks/gpu_backbones.py --batch 2 --dtypes bfloat16 --no-compile
    python3 benchmarks/gpu_backbones.py --device cpu --size 224 224 --batch 1 --steps 1 --warmup 1

Models: ``timm.create_model('posmlp_t', features_only=True, out_indices=(1, 2, 3))`` (this
package; any input size, windows clip at the edges) and timm's own
``swin_tiny_patch4_window7_224`` with ``features_only=True, out_indices=(1, 2, 3),
img_size=(H, W)`` (Swin sizes its attention masks and patch grid by img_size at build time; at
896x1344 every stage is a whole number of 7x7 windows). Both with drop_path_rate 0.1: the
stride 8 / 16 / 32 maps an FPN reads.

Measured, each in its own try/except (an error is recorded in the table, the run goes on):

- ``train``: train mode, loss = sum of the feature maps' means, AdamW (fused where the device
  has it; lr 1e-4, weight decay 0.05), under autocast float16 (with torch.amp.GradScaler) and
  bfloat16, at every --batch;
- ``train compiled``: the same step with the model under ``torch.compile`` (default mode), at
  --compile-batch and --compile-dtype, in a child process with its own --compile-timeout (a slow
  compilation cannot take the whole budget); the first step, compilation included, is reported
  separately as the compile time;
- ``infer`` / ``infer fused``: eval, no_grad, batch 1, under autocast bfloat16 and float16;
  PosMLP-T plain and after ``model.fuse()``, its deployment step (inference only).

Timing: W warm-up steps, then N steps between two CUDA events (synchronised); images/s =
batch * N / seconds. Peak memory: torch.cuda.max_memory_allocated after
reset_peak_memory_stats (after the model and optimizer are built, before the warm-up; so weights,
optimizer state, activations and workspace). Memory is freed between measurements.

Writes <out-dir>/backbones.md and backbones.json after every measurement (a run cut short
keeps what it measured), prints progress lines with timestamps and the tables at the end.
``--device cpu`` only exercises the code paths: its report says so in its title, and goes to
its own file names (``backbones_cpu_codepath.*``) in a temporary folder unless --out-dir is given.
"""
import argparse
import datetime
import gc
import json
import os
import platform
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import timm  # noqa: E402

import mmdet_posmlp  # noqa: E402,F401  (registers posmlp_t with timm)
from benchmarks.gpu_timing import CPU_NOTE, Timer, fmt, report_place, save_report  # noqa: E402

DTYPES = {'float16': torch.float16, 'bfloat16': torch.bfloat16}
LABELS = {'posmlp_t': 'PosMLP-T', 'posmlp_t_pytorch': 'PosMLP-T, PyTorch path (no Triton kernels)',
          'swin_t': 'Swin-T (timm)'}
BASELINE = 'swin_t'
_T0 = time.time()
LOG_STREAM = sys.stdout


def log(msg: str) -> None:
    now = datetime.datetime.now().strftime('%H:%M:%S')
    print(f'[gpu_backbones {now} +{time.time() - _T0:6.1f}s] {msg}', file=LOG_STREAM, flush=True)


# ------------------------------------------------------------------ models and steps
def kernels_for(name: str):
    """PosMLP's Triton kernels on (posmlp_t: where they run, CUDA) or off (posmlp_t_pytorch)
    while `name` is built and measured."""
    from mmdet_posmlp.models import posmlp_kernels

    class Switch:
        def __enter__(self):
            posmlp_kernels.set_kernels(name != 'posmlp_t_pytorch')

        def __exit__(self, *exc):
            posmlp_kernels.set_kernels(True)
    return Switch()


def build(name: str, size, device: torch.device, drop_path: float = 0.1) -> torch.nn.Module:
    if name in ('posmlp_t', 'posmlp_t_pytorch'):
        model = timm.create_model('posmlp_t', features_only=True, out_indices=(1, 2, 3),
                                  drop_path_rate=drop_path)
    elif name == 'swin_t':
        model = timm.create_model('swin_tiny_patch4_window7_224', features_only=True,
                                  out_indices=(1, 2, 3), img_size=tuple(size),
                                  drop_path_rate=drop_path)
    else:
        raise ValueError(f'unknown model {name!r}')
    return model.to(device)


def fuse(model: torch.nn.Module) -> torch.nn.Module:
    """PosMLP's deployment step on the timm feature extractor (``fuse()`` of the wrapped
    classifier where the wrapper has none)."""
    target = model if hasattr(model, 'fuse') else getattr(model, 'model', None)
    if target is None or not hasattr(target, 'fuse'):
        raise AttributeError(f'{type(model).__name__} has no fuse()')
    target.fuse()
    return model.eval()


def make_optimizer(model: torch.nn.Module, device: torch.device):
    """AdamW, lr 1e-4, weight decay 0.05, fused where this torch has it for the device."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05, fused=True), 'fused'
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05, foreach=True), 'foreach'


def loss_of(feats) -> torch.Tensor:
    return sum(f.float().mean() for f in feats)


def train_step(run, opt, scaler, x: torch.Tensor, dtype: torch.dtype):
    """The measured training step: autocast forward, the features' loss, (scaled) backward,
    optimizer step. Returns a step function without arguments that gives the loss."""
    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=dtype):
            loss = loss_of(run(x))
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss.detach()
    return step


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize()


def reset_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device) -> Optional[float]:
    if device.type != 'cuda':
        return None
    return torch.cuda.max_memory_allocated(device) / 2 ** 20


def measure_train(name: str, dtype_name: str, batch: int, args, compiled: bool = False) -> Dict:
    device = torch.device(args.device)
    dtype = DTYPES[dtype_name]
    torch.manual_seed(0)
    model = build(name, args.size, device).train()
    opt, kind = make_optimizer(model, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    run = torch.compile(model) if compiled else model
    x = torch.randn(batch, 3, *args.size, device=device)
    timer = Timer(device)
    result = dict(optimizer=f'AdamW ({kind})', grad_scaler=scaler.is_enabled())

    step = train_step(run, opt, scaler, x, dtype)
    reset_memory(device)
    warmup = args.warmup
    if compiled:  # the first step compiles forward and backward: wall time, on its own
        sync(device)
        start = time.perf_counter()
        loss = step()
        sync(device)
        result['compile_s'] = time.perf_counter() - start
        warmup = max(warmup - 1, 0)
    for _ in range(warmup):
        loss = step()
    with timer:
        for _ in range(args.steps):
            loss = step()
    loss = float(loss)
    if loss != loss or abs(loss) == float('inf'):
        raise FloatingPointError(f'loss is {loss}')
    result.update(seconds=timer.seconds, img_s=batch * args.steps / timer.seconds,
                  peak_mb=peak_mb(device), loss=loss)
    if scaler.is_enabled():
        result['final_scale'] = float(scaler.get_scale())
    del model, run, opt, scaler, x
    return result


def measure_infer(name: str, dtype_name: str, args, fused: bool = False) -> Dict:
    device = torch.device(args.device)
    dtype = DTYPES[dtype_name]
    torch.manual_seed(0)
    model = build(name, args.size, device).eval()
    if fused:
        model = fuse(model)
    x = torch.randn(1, 3, *args.size, device=device)
    timer = Timer(device)
    reset_memory(device)
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype):
        for _ in range(args.warmup):
            model(x)
        with timer:
            for _ in range(args.steps):
                out = model(x)
    finite = all(bool(torch.isfinite(o).all()) for o in out)
    if not finite:
        raise FloatingPointError('non-finite output')
    result = dict(seconds=timer.seconds, img_s=args.steps / timer.seconds, peak_mb=peak_mb(device))
    del model, x, out
    return result


# ------------------------------------------------------------------ compiled runs in a child
def measure_compiled(name: str, args) -> Dict:
    """The compiled training run in a child process, killed after --compile-timeout (or when
    the --time-budget runs out, whichever is first)."""
    timeout = min(args.compile_timeout, args.time_budget - (time.time() - _T0))
    cmd = [sys.executable, os.path.abspath(__file__), '--worker-compile', name,
           '--device', args.device, '--size', *map(str, args.size),
           '--steps', str(args.steps), '--warmup', str(args.warmup),
           '--compile-batch', str(args.compile_batch), '--compile-dtype', args.compile_dtype]
    # The child's progress (stderr) streams through; its result is its last stdout line. It runs
    # in its own process group, killed whole on a timeout (with inductor's compile workers) or
    # when this process is terminated (gpu_check.sh's timeout).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
    previous = signal.signal(signal.SIGTERM, lambda *_: (_kill_group(proc), sys.exit(143)))
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.communicate()
        raise TimeoutError(f'compilation and {args.warmup + args.steps} steps took more than '
                           f'{timeout:.0f} s (--compile-timeout {args.compile_timeout:g}, '
                           f'--time-budget {args.time_budget:g})') from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    lines = [ln for ln in stdout.splitlines() if ln.startswith('RESULT ')]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f'child exited with {proc.returncode}: {stdout[-300:]}')
    result = json.loads(lines[-1][len('RESULT '):])
    if 'error' in result:
        raise ChildFailure(result['error'])
    return result


class ChildFailure(RuntimeError):
    """A compiled run that failed in the child; the message is the child's description."""


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def worker_compile(args) -> None:
    global LOG_STREAM
    LOG_STREAM = sys.stderr  # stdout carries the result line
    try:
        log(f'child: compiling {args.worker_compile} (batch {args.compile_batch}, '
            f'{args.compile_dtype})')
        result = measure_train(args.worker_compile, args.compile_dtype, args.compile_batch, args,
                               compiled=True)
    except Exception as e:  # reported by the parent, in the table
        result = dict(error=describe(e))
    print('RESULT ' + json.dumps(result), flush=True)


# ------------------------------------------------------------------ report
def describe(e: BaseException) -> str:
    if isinstance(e, ChildFailure):
        return str(e)
    first = (str(e).strip().splitlines() or [''])[0]
    return f'{type(e).__name__}: {first[:240]}'


def environment(args) -> Dict:
    device = torch.device(args.device)
    env = dict(
        date=datetime.datetime.now().isoformat(timespec='seconds'),
        device=args.device,
        gpu=torch.cuda.get_device_name(device) if device.type == 'cuda' else None,
        cpu=platform.processor() or platform.machine(),
        python=platform.python_version(),
        torch=torch.__version__, cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        timm=timm.__version__,
        cudnn_benchmark=torch.backends.cudnn.benchmark,
        matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
        cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
        float32_matmul_precision=torch.get_float32_matmul_precision(),
        size=list(args.size), warmup=args.warmup, steps=args.steps,
        threads=torch.get_num_threads(),
    )
    return env


def ratios(rows: List[Dict]) -> None:
    """Each row's img/s and peak memory over Swin-T's in the same (mode, dtype, batch); PosMLP-T
    fused inference against Swin-T's (plain) inference."""
    def key(r):
        return r['mode'].replace(' fused', ''), r['dtype'], r['batch']
    base = {key(r): r for r in rows if r['model'] == BASELINE and r.get('img_s')}
    for r in rows:
        b = base.get(key(r))
        r['img_s_ratio'] = r['img_s'] / b['img_s'] if b and r.get('img_s') else None
        r['peak_ratio'] = (r['peak_mb'] / b['peak_mb']
                           if b and r.get('peak_mb') and b.get('peak_mb') else None)


def render(env: Dict, rows: List[Dict], complete: bool) -> str:
    ratios(rows)
    cpu = env['device'] != 'cuda'
    title = ('# CPU code-path test of benchmarks/gpu_backbones.py: NOT a GPU measurement '
             '(figures meaningless)' if cpu else
             f"# GPU backbones: PosMLP-T vs Swin-T (timm), {env['gpu']}")
    h, w = env['size']
    lines = [title, '',
             f"{'complete' if complete else 'INCOMPLETE (still running or cut short)'}; "
             f"{env['date']}; input {h}x{w}; {env['warmup']} warm-up + {env['steps']} timed steps "
             f'per measurement; train = AdamW (lr 1e-4, wd 0.05), loss = sum of the feature '
             f"maps' means, drop_path 0.1, float16 with GradScaler; infer = eval, no_grad, batch 1.",
             '',
             f"- device: {env['gpu'] or env['cpu']} ({env['device']}); torch {env['torch']}, "
             f"CUDA {env['cuda']}, cuDNN {env['cudnn']}, timm {env['timm']}, "
             f"Python {env['python']}",
             f"- torch.backends.cudnn.benchmark={env['cudnn_benchmark']}, "
             f"torch.backends.cuda.matmul.allow_tf32={env['matmul_allow_tf32']}, "
             f"torch.backends.cudnn.allow_tf32={env['cudnn_allow_tf32']}, "
             f"torch.get_float32_matmul_precision()={env['float32_matmul_precision']!r}",
             '',
             '| model | mode | dtype | batch | img/s | img/s vs Swin-T | peak MB '
             '| peak vs Swin-T | note |',
             '| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |']
    for r in rows:
        note = r.get('error') or ''
        if r.get('compile_s') is not None:
            note = f"first step (compilation) {r['compile_s']:.1f} s" + (f'; {note}' if note else '')
        if r.get('final_scale') is not None and not r.get('error'):
            note += ('; ' if note else '') + f"GradScaler scale {r['final_scale']:g}"
        lines.append(
            f"| {LABELS.get(r['model'], r['model'])} | {r['mode']} | {r['dtype']} | {r['batch']} "
            f"| {fmt(r.get('img_s'), '.2f')} | {fmt(r.get('img_s_ratio'), '.2f')} "
            f"| {fmt(r.get('peak_mb'), '.0f')} | {fmt(r.get('peak_ratio'), '.2f')} | {note} |")
    compiled = [r for r in rows if 'compiled' in r['mode']]
    if compiled:
        lines += ['', '## Compile time (torch.compile, default mode)', '',
                  '| model | dtype | batch | first step, compilation included (s) | error |',
                  '| --- | --- | ---: | ---: | --- |']
        for r in compiled:
            lines.append(f"| {LABELS.get(r['model'], r['model'])} | {r['dtype']} | {r['batch']} "
                         f"| {fmt(r.get('compile_s'), '.1f')} | {r.get('error') or ''} |")
    if cpu:
        lines += ['', CPU_NOTE]
    return '\n'.join(lines) + '\n'


# ------------------------------------------------------------------ main
def plan(args) -> List[Dict]:
    """Eager training, then inference, then the compiled runs (the longest, least certain)."""
    jobs = []
    for dtype in args.dtypes:
        for batch in args.batch:
            for model in args.models:
                jobs.append(dict(model=model, mode='train', dtype=dtype, batch=batch))
    for dtype in args.infer_dtypes:
        for model in args.models:
            jobs.append(dict(model=model, mode='infer', dtype=dtype, batch=1))
            if model.startswith('posmlp_t'):
                jobs.append(dict(model=model, mode='infer fused', dtype=dtype, batch=1))
    if not args.no_compile:
        for model in args.models:
            if model == 'posmlp_t_pytorch':  # compiled, PosMLP runs its PyTorch path anyway
                continue
            jobs.append(dict(model=model, mode='train compiled', dtype=args.compile_dtype,
                             batch=args.compile_batch))
    return jobs


def run_job(job: Dict, args) -> Dict:
    with kernels_for(job['model']):
        return _run_job(job, args)


def _run_job(job: Dict, args) -> Dict:
    if job['mode'] == 'train':
        return measure_train(job['model'], job['dtype'], job['batch'], args)
    if job['mode'] == 'train compiled':
        return measure_compiled(job['model'], args)
    return measure_infer(job['model'], job['dtype'], args, fused=job['mode'] == 'infer fused')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--device', default='cuda', choices=['cuda', 'cpu'],
                   help="'cpu' only tests the code paths (the report says so)")
    p.add_argument('--size', type=int, nargs=2, default=(896, 1344), metavar=('H', 'W'))
    p.add_argument('--batch', type=int, nargs='+', default=[2, 8], help='training batch sizes')
    p.add_argument('--dtypes', nargs='+', default=['float16', 'bfloat16'], choices=list(DTYPES))
    p.add_argument('--infer-dtypes', nargs='*', default=['bfloat16', 'float16'],
                   choices=list(DTYPES))
    p.add_argument('--models', nargs='+', default=['posmlp_t', 'swin_t'], choices=list(LABELS))
    p.add_argument('--steps', type=int, default=10, help='timed steps per measurement')
    p.add_argument('--warmup', type=int, default=3, help='untimed steps before them')
    p.add_argument('--no-compile', action='store_true', help='skip the torch.compile runs')
    p.add_argument('--compile-batch', type=int, default=2)
    p.add_argument('--compile-dtype', default='bfloat16', choices=list(DTYPES))
    p.add_argument('--compile-timeout', type=float, default=90.0,
                   help='seconds for one compiled run (child process), compilation included')
    p.add_argument('--time-budget', type=float, default=210.0,
                   help='seconds for the whole run: a measurement is skipped (and says so) once '
                        'it is spent, and a compiled run gets at most what is left')
    p.add_argument('--out-dir', default=None,
                   help='default benchmarks/results/gpu (cuda), a temporary folder (cpu)')
    p.add_argument('--worker-compile', default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        p.error('--steps must be >= 1 and --warmup >= 0')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker_compile:
        worker_compile(args)
        return 0
    if args.device == 'cuda' and not torch.cuda.is_available():
        print('gpu_backbones: no CUDA device here (torch.cuda.is_available() is False); '
              'use --device cpu to test the code paths only', file=sys.stderr)
        return 2
    stem, out_dir = report_place('backbones', args.device, args.out_dir)
    env = environment(args)
    log(f"{env['gpu'] or 'CPU (code-path test only)'} | torch {env['torch']} | CUDA {env['cuda']} "
        f"| timm {env['timm']} | writing {out_dir}/{stem}.md/.json")
    rows: List[Dict] = []
    jobs = plan(args)
    for i, job in enumerate(jobs, 1):
        log(f"[{i}/{len(jobs)}] {job['model']} {job['mode']} {job['dtype']} batch {job['batch']}")
        row = dict(job)
        left = args.time_budget - (time.time() - _T0)
        if left < (20 if job['mode'] == 'train compiled' else 5):
            row['error'] = f'skipped: --time-budget {args.time_budget:g} s spent'
            log(f"    {row['error']}")
            rows.append(row)
            continue
        try:
            row.update(run_job(job, args))
            log(f"    {row['img_s']:.2f} img/s, peak {fmt(row.get('peak_mb'), '.0f') or 'n/a'} MB"
                + (f", compile {row['compile_s']:.1f} s" if row.get('compile_s') else ''))
        except Exception as e:  # recorded in the table; the next measurement runs
            row['error'] = describe(e)
            log(f"    FAILED: {row['error']}")
        rows.append(row)
        reset_memory(torch.device(args.device))
        save_report(out_dir, stem, env, rows, False, render)
    md = save_report(out_dir, stem, env, rows, True, render)
    print(md, flush=True)
    log(f'done: {out_dir}/{stem}.md and .json')
    return 0


if __name__ == '__main__':
    sys.exit(main())
