"""Backbone benchmark: PosMLP against mmdet's Swin-T, ResNet-50, PVT-Small, the vision-MLP
family and the plain reference math, measured in one run on one machine.

    python benchmarks/benchmark_backbones.py                 # full run (about an hour on 2 cores)
    python benchmarks/benchmark_backbones.py --quick         # 800x1344 only, no sweep
    python benchmarks/benchmark_backbones.py --sizes 800x1344 --modes train --no-sweep

Batch 1, float32. `infer`: forward without gradients; `train`: forward and backward of the mean
of the outputs. Variants of PosMLP-T: `fused` (after the deployment step, fuse()),
`compiled` (torch.compile, inductor; compilation is the warm-up, not timed), `with_cp`
(activation checkpointing). Each (size, mode) group is timed in interleaved rounds in worker
processes (benchmarks/harness.py). Writes benchmarks/results/backbones.json, backbones.md,
scaling.png and backbones_800x1344.png, and prints the table.
"""
import argparse
import os
import sys
from typing import Dict, List

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.dirname(HERE) not in sys.path:
    sys.path.insert(0, os.path.dirname(HERE))

from benchmarks.harness import (Measurement, count_flops, machine, measure_interleaved,  # noqa: E402
                                save_json)

LABELS = {
    'posmlp_t': 'PosMLP-T (ours)', 'posmlp_t_fused': 'PosMLP-T (ours, fused)',
    'posmlp_t_compiled': 'PosMLP-T (ours, torch.compile)', 'posmlp_t_cp': 'PosMLP-T (ours, with_cp)',
    'posmlp_s_fused': 'PosMLP-S (ours, fused)',
    'swin_t': 'Swin-T (mmdet)', 'resnet50': 'ResNet-50 (mmdet)', 'pvt_s': 'PVT-Small (mmdet)',
    'reference_t': 'PosMLP-T plain reference math', 'hire_mlp_tiny': 'Hire-MLP-Tiny (ours)',
    'vip_s7': 'ViP-S/7 (ours)', 's2mlp_deep': 'S2-MLP-deep (ours)',
}
GROUPS = {  # models timed together, per mode
    'infer': ['posmlp_t', 'posmlp_t_fused', 'posmlp_t_compiled', 'posmlp_s_fused', 'swin_t',
              'resnet50', 'pvt_s', 'reference_t', 'hire_mlp_tiny', 'vip_s7', 's2mlp_deep'],
    'train': ['posmlp_t', 'posmlp_t_compiled', 'posmlp_t_cp', 'swin_t', 'resnet50',
              'hire_mlp_tiny', 'vip_s7', 's2mlp_deep'],
}
SWEEP_MODELS = ['posmlp_t_fused', 'swin_t', 'reference_t']


# ------------------------------------------------------------------ worker side
class ReferenceMath(torch.nn.Module):
    """The plain per-window einsum implementation, holding a PosMLP classifier's weights."""

    def __init__(self, arch='tiny'):
        super().__init__()
        from mmdet_posmlp.models.posmlp import PosMLPClassifier
        self.net = PosMLPClassifier(arch, num_classes=0)

    def forward(self, x):
        from benchmarks.reference_math import reference_stages, reference_weights
        # the reference layout (the blocks keep their hidden channels in contiguous groups;
        # the state dict converts), differentiable for the training step
        return reference_stages(reference_weights(self.net), self.net.setting, x)


def build_model(name: str) -> torch.nn.Module:
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS
    import mmdet_posmlp  # noqa: F401  (registers the backbones)
    init_default_scope('mmdet')
    base = name.replace('_fused', '').replace('_compiled', '').replace('_cp', '')
    cfgs = {
        'posmlp_t': dict(type='PosMLP', arch='tiny', drop_path_rate=0.0),
        'posmlp_s': dict(type='PosMLP', arch='small', drop_path_rate=0.0),
        'swin_t': dict(type='SwinTransformer', embed_dims=96, depths=[2, 2, 6, 2],
                       num_heads=[3, 6, 12, 24], window_size=7, out_indices=(0, 1, 2, 3),
                       drop_path_rate=0.0),
        'resnet50': dict(type='ResNet', depth=50, out_indices=(0, 1, 2, 3), norm_eval=False),
        'pvt_s': dict(type='PyramidVisionTransformer', num_layers=[3, 4, 6, 3]),
        'hire_mlp_tiny': dict(type='HireMLP', arch='tiny', drop_path_rate=0.0),
        'vip_s7': dict(type='ViP', arch='s7', drop_path_rate=0.0),
        's2mlp_deep': dict(type='S2MLP', arch='deep', drop_path_rate=0.0),
    }
    if base == 'reference_t':
        return ReferenceMath('tiny')
    cfg = dict(cfgs[base], with_cp=True) if name.endswith('_cp') else cfgs[base]
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def measurement(spec: dict) -> Measurement:
    """spec: name, mode ('infer' | 'train'), height, width."""
    name, mode = spec['name'], spec['mode']
    model = build_model(name)
    x = torch.randn(1, 3, spec['height'], spec['width'])
    info = dict(params=sum(p.numel() for p in model.parameters()))
    if name.endswith('_fused'):
        model.fuse()
    forward = torch.compile(model) if name.endswith('_compiled') else model
    if mode == 'infer':
        model.eval()  # mmdet's SwinTransformer.train() returns None: no chaining

        def step():
            with torch.no_grad():
                forward(x)
    else:
        model.train()

        def step():
            outs = forward(x)
            loss = sum(o.float().mean() for o in outs)
            loss.backward()
            model.zero_grad(set_to_none=True)
    return Measurement(info, step, lambda: count_flops(lambda: model(x)), model,
                       warmup=2 if name.endswith('_compiled') else 1)


def agreement(height: int, width: int) -> float:
    """Max relative difference between PosMLP-T and the plain reference math (float32, random
    weights with moved positional parameters)."""
    torch.manual_seed(0)
    ref = ReferenceMath('tiny').eval()
    with torch.no_grad():
        for n, p in ref.net.named_parameters():
            if '.pos.' in n or 'norm' in n:
                p.add_(torch.randn_like(p) * 0.3)
        x = torch.randn(1, 3, height, width)
        ours, plain = ref.net.forward_stages(x), ref(x)
    return max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(ours, plain))


# ------------------------------------------------------------------ driver side
def run(sizes, modes, sweep, repeat, threads, out_dir) -> Dict:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, 'backbones.json')
    results = dict(machine=machine(threads), rows=[], sweep=[],
                   agreement={f'{h}x{w}': agreement(h, w) for h, w in sizes})
    print(f"[bench] {results['machine']}\n[bench] ours vs plain reference math, max relative "
          f"difference: {results['agreement']}", flush=True)
    for h, w in sizes:
        for mode in modes:
            specs = [dict(suite='benchmark_backbones', name=n, mode=mode, height=h, width=w,
                          threads=threads) for n in GROUPS[mode]]
            for row in measure_interleaved(specs, repeat, memory=mode == 'train',
                                           flops=mode == 'infer', label=f'{h}x{w} {mode}'):
                results['rows'].append(row)
            save_json(results, path)
    for s in sweep:
        specs = [dict(suite='benchmark_backbones', name=n, mode='infer', height=s, width=s,
                      threads=threads) for n in SWEEP_MODELS]
        results['sweep'] += measure_interleaved(specs, 3, memory=False, label=f'sweep {s}x{s}')
        save_json(results, path)
    return results


def _row(rows, name, h, w, mode):
    return next((r for r in rows if (r['name'], r['height'], r['width'], r['mode']) ==
                 (name, h, w, mode)), None)


def report(results: Dict) -> str:
    m = results['machine']
    rate = m.get('matmul_gflops')
    lines = [f"Machine: {m['cpu']}, {m['threads']} threads, torch {m['torch']}, float32 matmul "
             f"{rate:.0f} GFLOP/s, {m['date']}", '',
             f"Ours vs plain reference math, max relative difference: {results['agreement']}", '',
             '| model | size | params | infer (s) | / Swin-T | GFLOP | GFLOP/s | train step (s) | '
             '/ Swin-T | train peak mem (MB) | / Swin-T |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    rows = results['rows']
    for h, w in sorted({(r['height'], r['width']) for r in rows}):
        swin_i, swin_t = _row(rows, 'swin_t', h, w, 'infer'), _row(rows, 'swin_t', h, w, 'train')
        for name in LABELS:
            inf, tr = _row(rows, name, h, w, 'infer'), _row(rows, name, h, w, 'train')
            if not inf and not tr:
                continue
            flops = inf.get('flops') if inf else None
            mem = tr.get('peak_mem_mb') if tr else None

            def ratio(a, b, key='median_s'):
                return f'{a[key] / b[key]:.2f}' if a and b and a.get(key) and b.get(key) else '-'
            lines.append('| ' + ' | '.join([
                LABELS[name], f'{h}x{w}', f"{(inf or tr)['params'] / 1e6:.1f}M",
                f"{inf['median_s']:.3f}" if inf else '-', ratio(inf, swin_i),
                f'{flops / 1e9:.1f}' if flops else '-',
                f"{flops / 1e9 / inf['median_s']:.0f}" if flops else '-',
                f"{tr['median_s']:.3f}" if tr else '-', ratio(tr, swin_t),
                f'{mem:.0f}' if mem else '-', ratio(tr, swin_t, 'peak_mem_mb')]) + ' |')
    if results['sweep']:
        small = _row(results['sweep'], 'posmlp_t_fused', 800, 800, 'infer')
        big = _row(results['sweep'], 'posmlp_t_fused', 1600, 1600, 'infer')
        if small and big:
            lines += ['', f"PosMLP-T (fused) time(1600x1600) / time(800x800): "
                          f"{big['median_s'] / small['median_s']:.2f} (area x4)"]
    return '\n'.join(lines)


def plot(results: Dict, out_dir: str) -> List[str]:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    paths = []
    if results['sweep']:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for name in SWEEP_MODELS:
            rows = sorted((r for r in results['sweep'] if r['name'] == name),
                          key=lambda r: r['height'])
            if rows:
                ax.loglog([r['height'] * r['width'] / 1e6 for r in rows],
                          [r['median_s'] for r in rows], 'o-', label=LABELS[name])
        ax.set_xlabel('image area (megapixels, square inputs)')
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
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for ax, mode in zip(axes, ('infer', 'train')):
            sel = [r for r in rows if r['mode'] == mode]
            ax.barh([LABELS[r['name']] for r in sel], [r['median_s'] for r in sel],
                    color=['tab:blue' if r['name'].startswith('posmlp') else 'tab:gray'
                           for r in sel])
            ax.set_xlabel('seconds (median)')
            ax.set_title(f'800x1344, batch 1, {mode}')
            ax.invert_yaxis()
            ax.tick_params(labelsize=8)
        fig.tight_layout()
        paths.append(os.path.join(out_dir, 'backbones_800x1344.png'))
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--sizes', nargs='+', default=['224x224', '800x1344'], help='HxW')
    p.add_argument('--modes', nargs='+', default=['infer', 'train'], choices=['infer', 'train'])
    p.add_argument('--sweep', nargs='*', type=int, default=[448, 800, 1120, 1600])
    p.add_argument('--no-sweep', action='store_true')
    p.add_argument('--quick', action='store_true', help='800x1344 only, no sweep')
    p.add_argument('--repeat', type=int, default=5)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--out-dir', default=os.path.join(HERE, 'results'))
    args = p.parse_args()
    if args.quick:
        args.sizes, args.no_sweep = ['800x1344'], True
    sizes = [tuple(int(v) for v in s.lower().split('x')) for s in args.sizes]
    results = run(sizes, args.modes, [] if args.no_sweep else args.sweep, args.repeat,
                  args.threads, args.out_dir)
    table = report(results)
    with open(os.path.join(args.out_dir, 'backbones.md'), 'w') as f:
        f.write(table + '\n')
    for path in plot(results, args.out_dir):
        print(f'[bench] wrote {path}')
    print(table)


if __name__ == '__main__':
    main()
