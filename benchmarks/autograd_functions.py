"""What PosMLP's custom autograd Functions buy over plain autograd, measured (CPU).

    python benchmarks/autograd_functions.py                   # PosMLP-T backbone, 2 x 3 x 512 x 768
    python benchmarks/autograd_functions.py --size 800 1344 --batch 1

A backbone training step (timm's ``posmlp_t`` feature extractor without stochastic depth, the
mean of its stride 8-32 maps, forward and backward) with each Function replaced by the same forward written with plain
autograd, against the step as it is, timed in interleaved rounds in one process (median) with
the peak of the tensor bytes allocated during a step (benchmarks/harness.py):

- ``_GeluGatedTokenMix`` (posmlp.py): GELU, token mixing and gate, with its own backward;
  plain: the same ops per region, autograd keeping what it keeps;
- ``_QuadraticSoftmax`` (posmlp.py): GQPE's probabilities with the subnormal flush in forward
  and backward; plain: the same forward, autograd's softmax backward.

Writes benchmarks/results/autograd_functions.md and .json, and prints the table.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import timm  # noqa: E402

import mmdet_posmlp  # noqa: E402,F401
from benchmarks.harness import machine, peak_tensor_bytes  # noqa: E402
from mmdet_posmlp.models import posmlp  # noqa: E402


def plain_gated_token_mix(h, starts, starts_t, *mixing):
    gated = h.shape[0] // 2
    parts = []
    for i, (s, e) in enumerate(zip(starts[:-1], starts[1:])):
        P, bias = mixing[2 * i], mixing[2 * i + 1]
        groups, n = P.shape[0], P.shape[-1]
        u = F.gelu(h[:gated, s:e]).contiguous()
        mixed = torch.baddbmm(bias.view(1, 1, n), u.view(groups, -1, n), P.transpose(1, 2))
        parts.append(mixed.view(gated, e - s) * F.gelu(h[gated:, s:e]))
    if h.shape[1] > starts[-1]:
        parts.append(h.new_zeros(gated, h.shape[1] - starts[-1]))
    return torch.cat(parts, 1)


def plain_quadratic_softmax(r, Ap, positions, sizes):
    P = []
    for r_i, Ap_i, p in zip(r.split(sizes, -1), Ap.split(sizes, -2), positions.split(sizes)):
        s = torch.addcmul(r_i.unsqueeze(-2), Ap_i[..., 0:1], p[:, 0])
        s = s + Ap_i[..., 1:2] * p[:, 1]
        P.append(F.threshold(torch.softmax(s, dim=-1), posmlp._FLUSH_FLOOR, 0.0))
    return tuple(P)


class Replaced:
    """The Function `name` of `module` replaced by `plain` while inside."""

    def __init__(self, module, name, plain):
        self.module, self.name, self.plain = module, name, plain

    def __enter__(self):
        self.saved = getattr(self.module, self.name)
        setattr(self.module, self.name, type('Plain', (), {'apply': staticmethod(self.plain)}))

    def __exit__(self, *exc):
        setattr(self.module, self.name, self.saved)


VARIANTS = {
    'as is': lambda: None,
    '_GeluGatedTokenMix -> plain autograd':
        lambda: Replaced(posmlp, '_GeluGatedTokenMix', plain_gated_token_mix),
    '_QuadraticSoftmax -> plain autograd':
        lambda: Replaced(posmlp, '_QuadraticSoftmax', plain_quadratic_softmax),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--size', type=int, nargs=2, default=(512, 768), metavar=('H', 'W'))
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--out-dir', default=os.path.join(HERE, 'results'))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = timm.create_model('posmlp_t', features_only=True, out_indices=(1, 2, 3),
                              drop_path_rate=0.0).train()  # the same step for every variant
    x = torch.randn(args.batch, 3, *args.size)

    def step():
        model.zero_grad(set_to_none=True)
        sum(f.mean() for f in model(x)).backward()

    def variant(name):
        ctx = VARIANTS[name]()
        return ctx if ctx is not None else torch.autograd.profiler.record_function(name)

    times = {name: [] for name in VARIANTS}
    peaks, grads = {}, {}
    for name in VARIANTS:  # warm-up, peak memory and the gradients, once each
        with variant(name):
            step()
            peaks[name] = peak_tensor_bytes(step) / 2 ** 20
            grads[name] = [q.grad.clone() for q in model.parameters() if q.grad is not None]
    for _ in range(args.rounds):
        for name in VARIANTS:
            with variant(name):
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    base = 'as is'
    rows = []
    for name in VARIANTS:
        # over all gradients as one vector (a few are zero up to rounding: the stem's conv
        # biases before a BatchNorm in batch statistics)
        diff = sum(float((a - b).double().square().sum()) for a, b in zip(grads[name], grads[base]))
        norm = sum(float(b.double().square().sum()) for b in grads[base])
        same = (diff / norm) ** 0.5
        rows.append(dict(variant=name, seconds=statistics.median(times[name]),
                         rounds=times[name], peak_mb=peaks[name], grad_difference=same))
    env = machine(args.threads)
    lines = [f"# Custom autograd Functions against plain autograd ({env['cpu']}, "
             f"{args.threads} threads, torch {env['torch']}, {env['date']})", '',
             f'PosMLP-T backbone training step, batch {args.batch}, {args.size[0]}x{args.size[1]}, '
             f'float32; median of {args.rounds} interleaved rounds; peak: tensor bytes allocated '
             'during one step. `python benchmarks/autograd_functions.py`', '',
             '| variant | step (s) | / as is | rounds (s) | peak (MB) | / as is | relative gradient difference |',
             '| --- | ---: | ---: | --- | ---: | ---: | ---: |']
    b = rows[0]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['seconds']:.2f} | {r['seconds'] / b['seconds']:.2f} "
                     f"| {', '.join(f'{t:.2f}' for t in r['rounds'])} "
                     f"| {r['peak_mb']:.0f} | {r['peak_mb'] / b['peak_mb']:.2f} "
                     f"| {r['grad_difference']:.1e} |")
    text = '\n'.join(lines) + '\n'
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, 'autograd_functions.md'), 'w') as f:
        f.write(text)
    with open(os.path.join(args.out_dir, 'autograd_functions.json'), 'w') as f:
        json.dump(dict(machine=env, args=vars(args), rows=rows), f, indent=1)
    print(text)


if __name__ == '__main__':
    main()
