"""Backbone benchmark: latency, training step, peak memory and GFLOP/s of PosMLP-T/S against
mmdet's Swin-T, ResNet-50, PVT-Small and the plain reference math, in one run.

    python benchmarks/benchmark_backbones.py                 # full run (about 30-40 min on 2 cores)
    python benchmarks/benchmark_backbones.py --quick         # 224x224 and 800x1344 inference only
    python benchmarks/benchmark_backbones.py --update --sizes 800x1344 --modes train --sweep
                                                             # re-measure one group, keep the rest

Writes benchmarks/results/results.json, results.md, scaling.png, latency_800x1344.png and
prints the table last.
"""
import argparse
import os

from mmdet_posmlp.analysis.backbone_benchmark import MODELS, plot, run_benchmark, summary_table


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--models', nargs='+', default=list(MODELS), choices=list(MODELS))
    p.add_argument('--sizes', nargs='+', default=['224x224', '800x1344'], help='HxW')
    p.add_argument('--sweep', nargs='*', type=int, default=[448, 640, 800, 960, 1120, 1280, 1440, 1600])
    p.add_argument('--sweep-models', nargs='*', default=['posmlp_t', 'swin_t', 'reference_t'])
    p.add_argument('--modes', nargs='+', default=['infer', 'train'], choices=['infer', 'train'])
    p.add_argument('--repeat', type=int, default=5)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--out-dir', default='benchmarks/results')
    p.add_argument('--quick', action='store_true', help='inference only, no sweep')
    p.add_argument('--update', action='store_true',
                   help='keep OUT_DIR/results.json and re-measure only the given size/mode '
                        'groups and sweep sizes (e.g. after a group failed)')
    return p.parse_args()


def main():
    args = parse_args()
    if args.quick:
        args.modes, args.sweep = ['infer'], []
    sizes = [tuple(int(v) for v in s.lower().split('x')) for s in args.sizes]
    results = run_benchmark(args.models, sizes, args.sweep, args.sweep_models, args.modes,
                            args.repeat, args.threads, args.out_dir, args.update)
    table = summary_table(results)
    with open(os.path.join(args.out_dir, 'results.md'), 'w') as f:
        f.write(table + '\n')
    for path in plot(results, args.out_dir):
        print(f'[bench] wrote {path}')
    print()
    print(table)


if __name__ == '__main__':
    main()
