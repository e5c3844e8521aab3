"""What the GPU benchmarks share (gpu_backbones.py, gpu_detectors.py; torch only): timing by
CUDA events, and reports written so that a run cut short keeps what it measured."""
import json
import os
import tempfile
import time
from typing import Callable, Dict, List, Optional, Tuple


class Timer:
    """CUDA events on a GPU (synchronised before and at the end), perf_counter on the CPU;
    ``seconds`` after the block."""

    def __init__(self, device):
        self.cuda = device.type == 'cuda'

    def __enter__(self):
        if self.cuda:
            import torch
            torch.cuda.synchronize()
            self.start, self.end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            self.start.record()
        else:
            self.t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.end.record()
            self.end.synchronize()
            self.seconds = self.start.elapsed_time(self.end) / 1000.0
        else:
            self.seconds = time.perf_counter() - self.t


def fmt(value, spec: str) -> str:
    """A table cell: '' for a figure that was not measured."""
    return '' if value is None else format(value, spec)


def write_report(out_dir: str, stem: str, markdown: str, env: Dict, rows: List[Dict],
                 complete: bool) -> None:
    """<out_dir>/<stem>.md and .json, each replaced whole (written aside, then renamed)."""
    os.makedirs(out_dir, exist_ok=True)
    data = json.dumps(dict(environment=env, complete=complete, rows=rows), indent=1)
    for ext, text in (('md', markdown), ('json', data)):
        path = os.path.join(out_dir, f'{stem}.{ext}')
        with open(path + '.tmp', 'w') as f:
            f.write(text)
        os.replace(path + '.tmp', path)


CPU_NOTE = ('CPU run: only checks that every code path runs; no figure above is a GPU '
            'measurement.')


def save_report(out_dir: str, stem: str, env: Dict, rows: List[Dict], complete: bool,
                render: Callable[[Dict, List[Dict], bool], str]) -> str:
    """The report `render` makes of the rows, written (write_report) and returned."""
    markdown = render(env, rows, complete)
    write_report(out_dir, stem, markdown, env, rows, complete)
    return markdown


def report_place(kind: str, device_type: str, out_dir: Optional[str]) -> Tuple[str, str]:
    """(file stem, folder) of a benchmark's report: benchmarks/results/gpu/<kind>.md on a GPU;
    on a CPU (code paths only) <kind>_cpu_codepath.md in a temporary folder, unless given."""
    if device_type == 'cpu':
        return f'{kind}_cpu_codepath', out_dir or tempfile.mkdtemp(prefix=f'gpu_{kind}_cpu_')
    return kind, out_dir or os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results',
                                         'gpu')
