"""Benchmark machinery shared by benchmark_backbones.py and benchmark_detectors.py.

Every model runs in its own worker process (so no allocator state leaks from one model to the
next), built and warmed up once; the models compared in one group are timed in interleaved
rounds, one step of each per round, so that the host's drift over minutes falls on all of them
alike, and only ratios measured within a group are compared. A worker holds one `Measurement`
(what a step is: a backbone's inference, a detector's training step, ...), defined by the suite
that asked for it (`spec['suite']`, a benchmark script in this folder with a
`measurement(spec)` function).

Peak memory is the high-water mark of the bytes held by tensors allocated during a step, from
the profiler's allocation events (activations, gradients, temporaries; not the weights and the
optimizer state that existed before). FLOPs are torch's FlopCounterMode (a multiply-add is 2).
"""
import ctypes
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


# ------------------------------------------------------------------ measuring one step
def peak_tensor_bytes(step: Callable[[], object]) -> int:
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


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of fn() without gradients (a multiply-add counts 2): torch's FlopCounterMode,
    which sees the products inside custom autograd Functions (PosMLP's token mixing) too."""
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


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


class Measurement:
    """A built, warmed-up model and one step of work on it, on the CPU or a CUDA device
    (timed after a synchronisation; peak memory from CUDA's allocator statistics there)."""

    def __init__(self, info: dict, step: Callable[[], object], flops: Callable[[], int],
                 model: Optional[torch.nn.Module] = None, device: str = 'cpu', warmup: int = 1):
        self.info, self._step, self._flops, self.model = info, step, flops, model
        self.cuda = torch.device(device).type == 'cuda'
        for _ in range(warmup):  # first-touch allocations, oneDNN primitive caches, compilation
            step()
        self._sync()

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def time_step(self) -> float:
        self._sync()
        start = time.perf_counter()
        self._step()
        self._sync()
        return time.perf_counter() - start

    def peak_memory_mb(self) -> float:
        if not self.cuda:
            return peak_tensor_bytes(self._step) / 2 ** 20
        self._sync()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        self._step()
        self._sync()
        return (torch.cuda.max_memory_allocated() - before) / 2 ** 20

    def flops(self) -> int:
        return self._flops()


def _return_free_memory() -> None:
    """Hand the C heap's free pages back to the OS. Idle workers wait side by side; glibc
    would otherwise keep each one's last step (GBs at 800x1344) resident."""
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def build_measurement(spec: dict) -> Measurement:
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    torch.set_num_threads(spec['threads'])
    torch.manual_seed(0)
    suite = importlib.import_module(f"benchmarks.{spec['suite']}")
    return suite.measurement(spec)


def serve(spec: dict) -> None:
    """Worker side: build one Measurement, then answer 'time', 'memory' and 'flops' requests
    read from stdin, one RESULT line each, until 'quit' or end of input."""
    m = build_measurement(spec)
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


# ------------------------------------------------------------------ the driver side
class Session:
    """A worker process holding one Measurement, timed on request. Several are kept open side
    by side so that their steps can be interleaved."""

    def __init__(self, spec: dict):
        cmd = [sys.executable, os.path.abspath(__file__), '--worker', json.dumps(spec)]
        env = {**os.environ, 'OMP_NUM_THREADS': str(spec['threads'])}
        self.spec = spec
        self.stderr = tempfile.TemporaryFile(mode='w+')
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, env=env, cwd=REPO)
        self.info = self._read()

    def _read(self) -> Optional[dict]:
        for line in self.proc.stdout:
            if line.startswith('RESULT '):
                return json.loads(line[len('RESULT '):])
        self.stderr.seek(0)
        print(f'  ! worker failed: {self.spec}\n{self.stderr.read()[-3000:]}', flush=True)
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


def measure_interleaved(specs: List[dict], repeat: int, memory: bool = True,
                        flops: bool = False, label: str = '') -> List[dict]:
    """Time the given measurements in rounds, one step of each per round; then, per model,
    the median, the peak memory of one more step and (optionally) its FLOPs. One row per spec
    whose worker came up: the spec, the worker's info, 'times', 'median_s', ..."""
    sessions = [Session(spec) for spec in specs]
    live = [s for s in sessions if s.info]
    rows = {id(s): dict(s.spec, **s.info, times=[]) for s in live}
    try:
        for r in range(repeat):
            for s in live:
                time.sleep(0.5)  # let the last worker's OpenMP threads stop spinning
                out = s.ask('time')
                if out:
                    rows[id(s)]['times'].append(out['seconds'])
            print(f'[bench]   {label} round {r + 1}/{repeat}: ' + ', '.join(
                f"{s.spec['name']} {rows[id(s)]['times'][-1]:.3f} s"
                for s in live if rows[id(s)]['times']), flush=True)
        for s in live:
            row = rows[id(s)]
            row['median_s'] = statistics.median(row['times']) if row['times'] else None
            if memory:
                out = s.ask('memory')
                row['peak_mem_mb'] = out and out['peak_mem_mb']
            if flops:
                out = s.ask('flops')
                row['flops'] = out and out['flops']
    finally:
        for s in sessions:
            s.close()
    return [rows[id(s)] for s in live if rows[id(s)]['median_s']]


def machine(threads: int) -> dict:
    """Where a run was measured: CPU model, threads, torch, date and the matmul rate, the
    latter measured in a worker of its own."""
    cpu = 'unknown'
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    rate = subprocess.run(
        [sys.executable, os.path.abspath(__file__), '--matmul', str(threads)],
        capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': str(threads)})
    return dict(cpu=cpu, threads=threads, torch=torch.__version__,
                date=time.strftime('%Y-%m-%d %H:%M'),
                matmul_gflops=float(rate.stdout.split()[-1]) if rate.returncode == 0 else None)


def save_json(results: Dict, path: str) -> None:
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(results, f, indent=1)
    os.replace(tmp, path)


if __name__ == '__main__':
    if len(sys.argv) > 2 and sys.argv[1] == '--worker':
        serve(json.loads(sys.argv[2]))
    elif len(sys.argv) > 2 and sys.argv[1] == '--matmul':
        print(matmul_rate(int(sys.argv[2])))
    else:
        raise SystemExit('run benchmarks/benchmark_backbones.py or benchmark_detectors.py')
