"""Backbone benchmark: PosMLP against mmdet's Swin-T, ResNet-50, PVT-Small and the plain
reference math, measured in one run on one machine.

Every model runs in its own worker process, so no allocator state leaks from one model to
the next; the models compared at one size and mode are timed in interleaved rounds (one step
of each per round), so that the host's drift over minutes falls on all of them alike.
Reported: median latency over the rounds, peak memory of the step (the high-water mark of bytes
held by tensors allocated in it, from the profiler's allocation events: activations,
gradients, temporaries; not the weights), FLOPs counted by torch's FlopCounterMode (matmul, bmm
and conv multiply-adds x 2) and the achieved GFLOP/s against this machine's float32 matmul rate.
"""
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

import torch

MODELS = ('posmlp_t', 'posmlp_s', 'swin_t', 'resnet50', 'pvt_s', 'reference_t')
LABELS = {
    'posmlp_t': 'PosMLP-T (ours)', 'posmlp_s': 'PosMLP-S (ours)',
    'posmlp_t_cp': 'PosMLP-T (ours, with_cp)', 'swin_t': 'Swin-T (mmdet)',
    'resnet50': 'ResNet-50 (mmdet)', 'pvt_s': 'PVT-Small (mmdet)',
    'reference_t': 'PosMLP-T plain reference math',
}


# ------------------------------------------------------------------ model construction
class ReferenceMath(torch.nn.Module):
    """The plain per-window einsum implementation, holding a PosMLP classifier's weights."""

    def __init__(self, arch='tiny'):
        super().__init__()
        from mmdet_posmlp.models.posmlp import PosMLPClassifier
        self.net = PosMLPClassifier(arch, num_classes=0)

    def forward(self, x):
        from benchmarks.reference_math import reference_stages
        weights = {**dict(self.net.named_parameters()), **dict(self.net.named_buffers())}
        return reference_stages(weights, self.net.setting, x)


def build_model(name: str) -> torch.nn.Module:
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS as REGISTRY
    import mmdet_posmlp  # noqa: F401  (registers PosMLP)
    init_default_scope('mmdet')
    cfgs = {
        'posmlp_t': dict(type='PosMLP', arch='tiny', drop_path_rate=0.0),
        'posmlp_t_cp': dict(type='PosMLP', arch='tiny', drop_path_rate=0.0, with_cp=True),
        'posmlp_s': dict(type='PosMLP', arch='small', drop_path_rate=0.0),
        'swin_t': dict(type='SwinTransformer', embed_dims=96, depths=[2, 2, 6, 2],
                       num_heads=[3, 6, 12, 24], window_size=7, out_indices=(0, 1, 2, 3),
                       drop_path_rate=0.0),
        'resnet50': dict(type='ResNet', depth=50, out_indices=(0, 1, 2, 3), norm_eval=False),
        'pvt_s': dict(type='PyramidVisionTransformer', num_layers=[3, 4, 6, 3]),
    }
    if name == 'reference_t':
        return ReferenceMath('tiny')
    return REGISTRY.build(cfgs[name])


# ------------------------------------------------------------------ one measurement (worker)
def peak_tensor_bytes(step) -> int:
    """Peak of the bytes held by tensors allocated during step(), above what was held before.

    Read from the profiler's allocation events, so it is what the model needs, whatever the
    allocator keeps cached (resident memory is not: glibc keeps freed heap pages, so the RSS
    high-water mark of a second step says little about the step)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == '[memory]')
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of model(x) without gradients (a multiply-add counts 2). torch's counter has no
    rule for the in-place addmm_, which PosMLP's inference uses for the output projection and
    residual: it is given addmm's."""
    from torch.utils.flop_counter import FlopCounterMode

    def addmm_(self_shape, mat1_shape, mat2_shape, *args, **kwargs):
        return 2 * mat1_shape[0] * mat1_shape[1] * mat2_shape[1]

    with torch.no_grad(), FlopCounterMode(
            display=False, custom_mapping={torch.ops.aten.addmm_: addmm_}) as counter:
        model(x)
    return counter.get_total_flops()


class Measurement:
    """One model at one input size in one mode ('infer' | 'train'), built and warmed up."""

    def __init__(self, name: str, height: int, width: int, mode: str, threads: int):
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        self.model = model = build_model(name)
        self.x = x = torch.randn(1, 3, height, width)
        self.mode = mode
        self.info = dict(model=name, height=height, width=width, mode=mode, threads=threads,
                         params=sum(p.numel() for p in model.parameters()))
        if mode == 'infer':
            model.eval()  # mmdet's SwinTransformer.train() returns None: no chaining

            def step():
                with torch.no_grad():
                    model(x)
        else:
            model.train()

            def step():
                outs = model(x)
                loss = sum(o.float().mean() for o in outs)
                loss.backward()
                model.zero_grad(set_to_none=True)
        self.step = step
        step()  # warm-up: first-touch allocations, oneDNN primitive caches

    def time_step(self) -> float:
        start = time.perf_counter()
        self.step()
        return time.perf_counter() - start

    def peak_memory_mb(self) -> float:
        return peak_tensor_bytes(self.step) / 2 ** 20

    def flops(self) -> int:
        return count_flops(self.model, self.x)


def _return_free_memory() -> None:
    """Hand the C heap's free pages back to the OS. Idle sessions wait side by side; glibc
    would otherwise keep each one's last step (GBs at 800x1344) resident, and seven of them
    outgrew a 24 GB machine."""
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def serve(spec: dict) -> None:
    """Worker side of a session: build one Measurement, then answer 'time', 'memory' and
    'flops' requests read from stdin, one RESULT line each, until 'quit' or end of input."""
    m = Measurement(**spec)
    _return_free_memory()
    print('RESULT ' + json.dumps(m.info), flush=True)
    for line in sys.stdin:
        request = line.strip()
        if request == 'time':
            out = dict(seconds=m.time_step())
        elif request == 'memory':
            out = dict(peak_mem_mb=m.peak_memory_mb())
        elif request == 'flops':
            out = dict(flops=m.flops())
        else:
            break
        _return_free_memory()
        print('RESULT ' + json.dumps(out), flush=True)


def matmul_rate(threads: int, n: int = 2048, repeat: int = 5) -> float:
    """This machine's float32 matrix-product rate in GFLOP/s (the floor for dense layers)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def agreement(height: int = 224, width: int = 224) -> float:
    """Max relative difference between our PosMLP-T and the plain reference math (float32,
    random weights with moved positional parameters, random input)."""
    torch.manual_seed(0)
    ref = ReferenceMath('tiny').eval()
    with torch.no_grad():
        for n, p in ref.net.named_parameters():
            if '.pos.' in n or 'norm' in n:
                p.add_(torch.randn_like(p) * 0.3)
    x = torch.randn(1, 3, height, width)
    with torch.no_grad():
        fast = ref.net.forward_stages(x)
        plain = ref(x)
    return max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(fast, plain))


def run_worker(args: List[str]) -> None:
    spec = json.loads(args[0])
    kind = spec.pop('kind')
    if kind == 'session':
        return serve(spec)
    if kind == 'matmul':
        out = dict(gflops_per_s=matmul_rate(spec['threads']))
    else:
        out = dict(max_rel_diff=agreement(*spec['size']))
    print('RESULT ' + json.dumps(out), flush=True)


# ------------------------------------------------------------------ the driver
def _spawn(spec: dict, timeout: int = 1800) -> Optional[dict]:
    cmd = [sys.executable, '-m', 'mmdet_posmlp.analysis.backbone_benchmark', '--worker',
           json.dumps(spec)]
    env = {**os.environ, 'OMP_NUM_THREADS': str(spec.get('threads', 2))}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        print(f'  ! timed out after {timeout} s: {spec}', flush=True)
        return None
    for line in proc.stdout.splitlines():
        if line.startswith('RESULT '):
            return json.loads(line[len('RESULT '):])
    print(f'  ! failed: {spec}\n{proc.stderr[-2000:]}', flush=True)
    return None


class Session:
    """A worker process holding one built, warmed-up Measurement, timed on request. Several
    sessions are kept open side by side so that their timed steps can be interleaved: the
    host's speed drifts over minutes, and models timed one after the other would each see a
    different machine."""

    def __init__(self, spec: dict):
        cmd = [sys.executable, '-m', 'mmdet_posmlp.analysis.backbone_benchmark', '--worker',
               json.dumps(dict(kind='session', **spec))]
        env = {**os.environ, 'OMP_NUM_THREADS': str(spec['threads'])}
        self.spec = spec
        self.stderr = tempfile.TemporaryFile(mode='w+')
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, env=env)
        self.info = self._read()

    def _read(self) -> Optional[dict]:
        for line in self.proc.stdout:
            if line.startswith('RESULT '):
                return json.loads(line[len('RESULT '):])
        self.stderr.seek(0)
        print(f'  ! worker failed: {self.spec}\n{self.stderr.read()[-2000:]}', flush=True)
        return None

    def ask(self, request: str) -> Optional[dict]:
        if self.proc.poll() is not None:
            return None
        self.proc.stdin.write(request + '\n')
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait()
        self.stderr.close()


def measure_interleaved(names: List[str], height: int, width: int, mode: str, repeat: int,
                        threads: int, flops: bool = True) -> List[dict]:
    """Time several models at one size in rounds, one step of each per round."""
    sessions = [Session(dict(name=n, height=height, width=width, mode=mode, threads=threads))
                for n in names]
    live = [s for s in sessions if s.info]
    rows = {id(s): dict(s.info, times=[]) for s in live}
    try:
        for r in range(repeat):
            for s in live:
                time.sleep(0.5)  # let the last worker's OpenMP threads stop spinning
                out = s.ask('time')
                if out:
                    rows[id(s)]['times'].append(out['seconds'])
            print(f'[bench]   {height}x{width} {mode} round {r + 1}/{repeat}: ' + ', '.join(
                f"{s.info['model']} {rows[id(s)]['times'][-1]:.3f} s"
                for s in live if rows[id(s)]['times']), flush=True)
        for s in live:
            row = rows[id(s)]
            row['median_s'] = statistics.median(row['times']) if row['times'] else None
            mem = s.ask('memory')
            row['peak_mem_mb'] = mem and mem['peak_mem_mb']
            if flops and mode == 'infer' and row['median_s']:
                out = s.ask('flops')
                if out:
                    row['flops'] = out['flops']
                    row['gflops_per_s'] = out['flops'] / row['median_s'] / 1e9
    finally:
        for s in sessions:
            s.close()
    return [rows[id(s)] for s in live if rows[id(s)]['median_s']]


def run_benchmark(models=MODELS, sizes=((224, 224), (800, 1344)), sweep=(448, 640, 800, 960,
                  1120, 1280, 1440, 1600), sweep_models=('posmlp_t', 'swin_t', 'reference_t'),
                  modes=('infer', 'train'), repeat: int = 5, threads: int = 2,
                  out_dir: str = 'benchmarks/results', update: bool = False) -> Dict:
    """Measure and write out_dir/results.json as it goes. `update`: keep what an earlier run
    wrote there and replace only the groups (size and mode) measured now, each group's rows
    all from this run, labelled with its date."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, 'results.json')
    if update and os.path.exists(path):
        with open(path) as f:
            results = json.load(f)
        groups = {(h, w, mode) for h, w in sizes for mode in modes}
        results['rows'] = [r for r in results['rows']
                           if (r['height'], r['width'], r['mode']) not in groups]
        results['sweep'] = [r for r in results['sweep'] if r['height'] not in sweep]
        _measure_groups(results, models, sizes, modes, repeat, threads, out_dir)
        _measure_sweep(results, sweep, sweep_models, threads, out_dir)
        return results
    results = dict(machine=dict(threads=threads, torch=torch.__version__, cpu=_cpu_name(),
                                date=time.strftime('%Y-%m-%d %H:%M')),
                   rows=[], sweep=[])
    print(f'[bench] float32 matmul rate ({threads} threads) ...', flush=True)
    mm = _spawn(dict(kind='matmul', threads=threads))
    results['machine']['matmul_gflops'] = mm and mm['gflops_per_s']
    for size in ((224, 224), (800, 1344)):
        agree = _spawn(dict(kind='agreement', size=list(size)))
        results.setdefault('agreement', {})[f'{size[0]}x{size[1]}'] = agree and agree['max_rel_diff']
    print(f'[bench] ours vs plain reference math, max relative difference: '
          f'{results["agreement"]}', flush=True)

    _measure_groups(results, models, sizes, modes, repeat, threads, out_dir)
    _measure_sweep(results, sweep, sweep_models, threads, out_dir)
    return results


def _measure_groups(results, models, sizes, modes, repeat, threads, out_dir) -> None:
    """Each (size, mode) group: every model in its own worker, their steps interleaved."""
    for h, w in sizes:
        for mode in modes:
            names = list(models)
            if mode == 'train' and h * w > 224 * 224:
                names.append('posmlp_t_cp')
            print(f'[bench] {h}x{w} {mode}: {", ".join(names)} ({repeat} rounds)', flush=True)
            for row in measure_interleaved(names, h, w, mode, repeat, threads):
                row['date'] = time.strftime('%Y-%m-%d %H:%M')
                results['rows'].append(row)
                peak = row['peak_mem_mb']
                print(f"[bench]   {LABELS[row['model']]:32s} median {row['median_s']:.3f} s, "
                      f"peak {'-' if peak is None else f'{peak:.0f}'} MB", flush=True)
            _save(results, out_dir)


def _measure_sweep(results, sweep, sweep_models, threads, out_dir) -> None:
    for s in sweep:
        print(f'[bench] sweep {s}x{s}: {", ".join(sweep_models)}', flush=True)
        results['sweep'] += measure_interleaved(list(sweep_models), s, s, 'infer', 3, threads,
                                                flops=False)
        _save(results, out_dir)


def _cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return 'unknown'


def _save(results: dict, out_dir: str) -> None:
    tmp = os.path.join(out_dir, 'results.json.tmp')
    with open(tmp, 'w') as f:
        json.dump(results, f, indent=1)
    os.replace(tmp, os.path.join(out_dir, 'results.json'))


def _row(results, model, h, w, mode):
    for r in results['rows']:
        if (r['model'], r['height'], r['width'], r['mode']) == (model, h, w, mode):
            return r
    return None


def summary_table(results: dict) -> str:
    """Markdown tables: latency / memory / GFLOP/s per model and size, then the targets."""
    lines = []
    mm = results['machine'].get('matmul_gflops')
    lines.append(f"Machine: {results['machine']['cpu']}, {results['machine']['threads']} threads, "
                 f"torch {results['machine']['torch']}, float32 matmul {mm:.0f} GFLOP/s, "
                 f"{results['machine']['date']}" if mm else 'Machine: unknown matmul rate')
    lines.append(f"Ours vs plain reference math, max relative difference: {results.get('agreement')}")
    lines.append('')
    lines.append('| model | size | params | infer (s) | GFLOP | GFLOP/s | % of matmul | '
                 'train step (s) | train peak mem (MB) |')
    lines.append('|---|---|---|---|---|---|---|---|---|')
    keys = sorted({(r['height'], r['width']) for r in results['rows']})
    for h, w in keys:
        for m in list(MODELS) + ['posmlp_t_cp']:
            inf, tr = _row(results, m, h, w, 'infer'), _row(results, m, h, w, 'train')
            if not inf and not tr:
                continue
            params = (inf or tr)['params'] / 1e6
            flops = inf.get('flops') if inf else None
            rate = inf.get('gflops_per_s') if inf else None
            cells = [LABELS[m], f'{h}x{w}', f'{params:.1f}M',
                     f"{inf['median_s']:.3f}" if inf else '-',
                     f'{flops / 1e9:.1f}' if flops else '-', f'{rate:.0f}' if rate else '-',
                     f'{100 * rate / mm:.0f}%' if rate and mm else '-',
                     f"{tr['median_s']:.3f}" if tr else '-',
                     f"{tr['peak_mem_mb']:.0f}" if tr and tr['peak_mem_mb'] else '-']
            lines.append('| ' + ' | '.join(cells) + ' |')
    lines.append('')
    lines.extend(targets(results))
    return '\n'.join(lines)


def _median_of(results, model, h, w, mode='infer', rows='rows'):
    for r in results[rows]:
        if (r['model'], r['height'], r['width'], r['mode']) == (model, h, w, mode):
            return r['median_s']
    return None


def targets(results: dict) -> List[str]:
    out = ['Targets (ratios within this run):']
    ours = _median_of(results, 'posmlp_t', 800, 1344)
    swin = _median_of(results, 'swin_t', 800, 1344)
    ref = _median_of(results, 'reference_t', 800, 1344)
    if ours and swin:
        out.append(f'- PosMLP-T / Swin-T inference at 800x1344: {ours / swin:.2f} (target <= 0.80)')
    if ours and ref:
        out.append(f'- plain reference math / PosMLP-T at 800x1344: {ref / ours:.2f}x (target >= 1.5x)')
    small = _median_of(results, 'posmlp_t', 800, 800, rows='sweep')
    big = _median_of(results, 'posmlp_t', 1600, 1600, rows='sweep')
    if small and big:
        out.append(f'- time(1600x1600) / time(800x800): {big / small:.2f} (target <= 4.4; area x4)')
    plain = _row(results, 'posmlp_t', 800, 1344, 'train')
    cp = _row(results, 'posmlp_t_cp', 800, 1344, 'train')
    if plain and cp and plain['peak_mem_mb'] and cp['peak_mem_mb']:
        cut = 1 - cp['peak_mem_mb'] / plain['peak_mem_mb']
        out.append(f'- with_cp training peak memory at 800x1344: {plain["peak_mem_mb"]:.0f} -> '
                   f'{cp["peak_mem_mb"]:.0f} MB, {100 * cut:.0f}% less (target >= 35%)')
    return out


def plot(results: dict, out_dir: str) -> List[str]:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    paths = []
    if results['sweep']:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for m in sorted({r['model'] for r in results['sweep']}):
            rows = sorted((r for r in results['sweep'] if r['model'] == m), key=lambda r: r['height'])
            area = [r['height'] * r['width'] / 1e6 for r in rows]
            ax.loglog(area, [r['median_s'] for r in rows], 'o-', label=LABELS[m])
        if area:
            ref = [a / area[0] * min(r['median_s'] for r in results['sweep']) for a in area]
            ax.loglog(area, ref, 'k:', label='linear in area')
        ax.set_xlabel('image area (megapixels, square inputs 448 to 1600)')
        ax.set_ylabel('backbone inference, batch 1 (s)')
        ax.set_title(f"Scaling ({results['machine']['threads']} CPU threads)")
        ax.grid(True, which='both', alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(os.path.join(out_dir, 'scaling.png'))
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    rows = [r for r in results['rows'] if (r['height'], r['width']) == (800, 1344)]
    if rows:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, mode in zip(axes, ('infer', 'train')):
            sel = [r for r in rows if r['mode'] == mode]
            ax.barh([LABELS[r['model']] for r in sel], [r['median_s'] for r in sel], color='tab:blue')
            ax.set_xlabel('seconds (median)')
            ax.set_title(f'800x1344, batch 1, {mode}')
            ax.invert_yaxis()
        fig.tight_layout()
        paths.append(os.path.join(out_dir, 'latency_800x1344.png'))
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


if __name__ == '__main__':
    if len(sys.argv) > 2 and sys.argv[1] == '--worker':
        run_worker(sys.argv[2:])
    else:
        raise SystemExit('use benchmarks/benchmark_backbones.py')
