"""Detector benchmark: the work users pay for, PosMLP-T against Swin-T in the same detector.

    python benchmarks/benchmark_detectors.py                  # RetinaNet and Mask R-CNN 1x (~30 min)
    python benchmarks/benchmark_detectors.py --detectors retinanet --repeat 3
    python benchmarks/benchmark_detectors.py --family         # + Hire-MLP, ViP, S2-MLP RetinaNets

For each detector, the project's `*_posmlp_t_1x` config against mmdet's own Swin-T config of
the same detector (`mmdet::swin/...`), random weights, synthetic COCO-like batches at 800x1333
(padded to 800x1344 by the data preprocessor, as COCO training sees it):

- train: `model.train_step` with the config's own optimizer wrapper and one optimizer for all
  (AdamW, fused; mmdet's Swin-T RetinaNet config has SGD), batch 2, 8 boxes (and masks) per
  image: data preprocessor, forward with losses, backward, optimizer step;
- predict: `model.test_step` without gradients, batch 1: preprocessing, forward, NMS (and mask
  pasting); `predict (fused)` is PosMLP-T after the deployment step (`backbone.fuse()`).

Each group (detector x mode) is timed in interleaved rounds (benchmarks/harness.py), median
reported, ratios within the group. The training step is set against its matmul floor: three
times the forward FLOPs at this machine's measured float32 GEMM rate. Writes
benchmarks/results/detectors.json, detectors.md and detectors.png, and prints the tables.
"""
import argparse
import os
import sys
from typing import Dict, List

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.dirname(HERE) not in sys.path:
    sys.path.insert(0, os.path.dirname(HERE))

from benchmarks.harness import (Measurement, count_flops, machine, measure_interleaved,  # noqa: E402
                                save_json)

SAME_OPTIMIZER = dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05, fused=True)
CONFIGS = {
    'retinanet_posmlp_t': 'configs/retinanet_posmlp_t_1x.py',
    'retinanet_swin_t': 'mmdet::swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py',
    'mask_rcnn_posmlp_t': 'configs/mask_rcnn_posmlp_t_1x.py',
    'mask_rcnn_swin_t': 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py',
    'retinanet_hire_mlp_tiny': 'configs/retinanet_hire_mlp_tiny_1x.py',
    'retinanet_vip_s7': 'configs/retinanet_vip_s7_1x.py',
    'retinanet_s2mlp_deep': 'configs/retinanet_s2mlp_deep_1x.py',
}
LABELS = {
    'retinanet_posmlp_t': 'RetinaNet PosMLP-T (ours)', 'retinanet_swin_t': 'RetinaNet Swin-T (mmdet)',
    'mask_rcnn_posmlp_t': 'Mask R-CNN PosMLP-T (ours)', 'mask_rcnn_swin_t': 'Mask R-CNN Swin-T (mmdet)',
    'retinanet_hire_mlp_tiny': 'RetinaNet Hire-MLP-Tiny', 'retinanet_vip_s7': 'RetinaNet ViP-S/7',
    'retinanet_s2mlp_deep': 'RetinaNet S2-MLP-deep',
}
FAMILY = ('retinanet_posmlp_t', 'retinanet_swin_t', 'retinanet_hire_mlp_tiny', 'retinanet_vip_s7',
          'retinanet_s2mlp_deep')


# ------------------------------------------------------------------ worker side
# mmdet's Swin-T Mask R-CNN with the RoI extractor and RPN head of ours (configs/_mask_rcnn_1x.py),
# which run RoIAlign and the proposals' NMS in float32 under bfloat16 autocast (mmcv 2.1 has no
# bfloat16 kernels for them): the same as mmdet's otherwise
SAME_FLOAT32_PARTS = {'model.rpn_head.type': 'Float32RPNHead',
                      'model.roi_head.bbox_roi_extractor.type': 'Float32RoIExtractor',
                      'model.roi_head.mask_roi_extractor.type': 'Float32RoIExtractor'}


def build_detector(name: str):
    """The detector of CONFIGS[name], random weights (no download, no checkpoint on disk)."""
    from mmdet_posmlp.detector_io import load_detector
    options = {'model.backbone.init_cfg': None}
    if name.startswith('mask_rcnn'):
        options.update(SAME_FLOAT32_PARTS)
    model = load_detector(CONFIGS[name], cfg_options=options)
    model.init_weights()
    return model, model.cfg


def synthetic_batch(batch: int, height: int, width: int, masks: bool, seed: int = 0) -> dict:
    """detector_io.dummy_batch with 8 random objects an image (boxes 32-400 px, labels, masks
    filling the boxes)."""
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    from mmdet_posmlp.detector_io import dummy_batch
    data = dummy_batch((height, width), batch, seed)
    g = torch.Generator().manual_seed(seed)
    for sample in data['data_samples']:
        size = torch.empty(8, 2).uniform_(32, 400, generator=g)
        x0 = torch.rand(8, generator=g) * (width - size[:, 0])
        y0 = torch.rand(8, generator=g) * (height - size[:, 1])
        boxes = torch.stack([x0, y0, x0 + size[:, 0], y0 + size[:, 1]], dim=1)
        gt = InstanceData(bboxes=boxes, labels=torch.randint(0, 80, (8,), generator=g))
        if masks:
            m = np.zeros((8, height, width), dtype=np.uint8)
            for i, (a, b, c, d) in enumerate(boxes.round().long().tolist()):
                m[i, b:d, a:c] = 1
            gt.masks = BitmapMasks(m, height, width)
        sample.gt_instances = gt
    return data


def measurement(spec: dict) -> Measurement:
    """spec: name, mode ('train' | 'predict' | 'predict_fused'), batch, height, width; optional
    device ('cpu' | 'cuda'), amp (None | 'float16' | 'bfloat16': the optimizer wrapper that
    tools/train.py --amp selects, and autocast for predict), compile (torch.compile of
    train_step / test_step, as mmengine's runner does with compile=True)."""
    from mmengine.optim import build_optim_wrapper
    from mmdet_posmlp.engine.amp import amp_optim_wrapper
    device, amp = spec.get('device', 'cpu'), spec.get('amp')
    model, cfg = build_detector(spec['name'])
    model.to(device)
    data = synthetic_batch(spec['batch'], spec['height'], spec['width'],
                           masks='mask_rcnn' in spec['name'])
    info = dict(params=sum(p.numel() for p in model.parameters()),
                backbone_params=sum(p.numel() for p in model.backbone.parameters()))
    if spec['mode'] == 'train':
        model.train()
        # one optimizer for every model (mmdet's Swin-T RetinaNet config trains with SGD):
        # the project's recipe, AdamW (fused), with each config's own wrapper and param rules
        wrapper_cfg = dict(cfg.optim_wrapper, optimizer=dict(SAME_OPTIMIZER))
        if amp:
            wrapper_cfg = dict(amp_optim_wrapper(wrapper_cfg), dtype=amp)
            if wrapper_cfg['type'] != 'AmpOptimWrapper':  # CPU: bfloat16 autocast only
                wrapper_cfg.pop('dtype')
        optim_wrapper = build_optim_wrapper(model, wrapper_cfg)
        info['optimizer'] = type(optim_wrapper.optimizer).__name__
        info['optim_wrapper'] = type(optim_wrapper).__name__
        train_step = torch.compile(model.train_step) if spec.get('compile') else model.train_step

        def step():
            train_step(data, optim_wrapper)

        def flops():
            batch = model.data_preprocessor(data, True)
            return count_flops(lambda: model.loss(batch['inputs'], batch['data_samples']))
    else:
        if spec['mode'] == 'predict_fused':
            model.backbone.fuse()
        model.eval()
        test_step = torch.compile(model.test_step) if spec.get('compile') else model.test_step

        def step():
            with torch.no_grad(), torch.autocast(torch.device(device).type,
                                                 dtype=getattr(torch, amp or 'float32'),
                                                 enabled=bool(amp)):
                test_step(data)

        def flops():
            batch = model.data_preprocessor(data, False)
            return count_flops(lambda: model.predict(batch['inputs'], batch['data_samples']))
    # a compiled step may recompile once at its second call
    return Measurement(info, step, flops, model, device, warmup=2 if spec.get('compile') else 1)


# ------------------------------------------------------------------ driver side
def run(detectors: List[str], family: bool, repeat: int, threads: int, height: int,
        width: int, out_dir: str, name: str = 'detectors', train_batch: int = 2,
        **variant) -> Dict:
    """variant: device, amp, compile (see measurement)."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f'{name}.json')
    results = dict(machine=machine(threads), height=height, width=width, rows=[],
                   variant=variant)
    if variant.get('device', 'cpu') != 'cpu':
        results['machine']['device'] = torch.cuda.get_device_name(0)
    print(f"[bench] {results['machine']}", flush=True)
    groups = []  # ([(name, mode), ...], batch): the measurements timed together
    for det in detectors:
        ours, swin = f'{det}_posmlp_t', f'{det}_swin_t'
        groups.append(([(ours, 'train'), (swin, 'train')], train_batch))
        groups.append(([(ours, 'predict'), (ours, 'predict_fused'), (swin, 'predict')], 1))
    if family:
        groups.append(([(n, 'train') for n in FAMILY], train_batch))
        groups.append(([(n, 'predict') for n in FAMILY], 1))
    for g, (members, batch) in enumerate(groups):
        mode = members[0][1]
        specs = [dict(suite='benchmark_detectors', name=n, mode=m, batch=batch, height=height,
                      width=width, threads=threads, **variant) for n, m in members]
        label = f'group {g + 1}/{len(groups)} {mode} b{batch}'
        print(f'[bench] {label}: ' + ', '.join(f"{s['name']} ({s['mode']})" for s in specs),
              flush=True)
        for row in measure_interleaved(specs, repeat, memory=mode == 'train', flops=True,
                                       label=label):
            row['group'] = g
            results['rows'].append(row)
        save_json(results, path)
    return results


def _padded(size: int, divisor: int = 32) -> int:
    return -(-size // divisor) * divisor


def _rows(results, group):
    return [r for r in results['rows'] if r['group'] == group]


def _variant(results: Dict) -> str:
    return ', '.join(f'{k} {v}' for k, v in results.get('variant', {}).items()
                     if v and k != 'device') or 'float32'


def _setting(results: Dict) -> str:
    """'2 CPU threads, float32', 'NVIDIA H200, amp bfloat16, compile True', ..."""
    m = results['machine']
    where = m['device'] if 'device' in m else f"{m['threads']} CPU threads"
    return f'{where}, {_variant(results)}'


def report(results: Dict) -> str:
    m = results['machine']
    rate = m.get('matmul_gflops')
    lines = [f"{m.get('device', 'CPU')} ({_variant(results)}); "
             f"Machine: {m['cpu']}, {m['threads']} threads, torch {m['torch']}, float32 matmul "
             f"{rate:.0f} GFLOP/s, {m['date']}; images {results['height']}x{results['width']}, "
             f"{_padded(results['height'])}x{_padded(results['width'])} after padding"
             if rate else 'Machine: unknown', '']
    lines.append('| detector | params | mode | batch | median (s) | img/s | ratio to Swin-T | '
                 'peak mem (MB) | ratio to Swin-T | GFLOP (forward) | matmul floor (s) | '
                 'time / floor |')
    lines.append('|---|---|---|---|---|---|---|---|---|---|---|---|')
    for group in sorted({r['group'] for r in results['rows']}):
        rows = _rows(results, group)
        swin = next((r for r in rows if r['name'].endswith('swin_t')), None)
        for r in rows:
            mode = 'predict (fused)' if r['mode'] == 'predict_fused' else r['mode']
            ratio = f"{r['median_s'] / swin['median_s']:.2f}" if swin else '-'
            mem = r.get('peak_mem_mb')
            mem_ratio = (f"{mem / swin['peak_mem_mb']:.2f}" if mem and swin and
                         swin.get('peak_mem_mb') else '-')
            gflop = r['flops'] / 1e9 if r.get('flops') else None
            floor = (3 if r['mode'] == 'train' else 1) * gflop / rate if gflop and rate else None
            lines.append('| ' + ' | '.join([
                LABELS[r['name']], f"{r['params'] / 1e6:.1f}M", mode, str(r['batch']),
                f"{r['median_s']:.2f}", f"{r['batch'] / r['median_s']:.2f}", ratio, f'{mem:.0f}' if mem else '-', mem_ratio,
                f'{gflop:.0f}' if gflop else '-', f'{floor:.2f}' if floor else '-',
                f"{r['median_s'] / floor:.1f}x" if floor else '-']) + ' |')
    return '\n'.join(lines)


def plot(results: Dict, path: str) -> str:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    groups = sorted({r['group'] for r in results['rows']})
    fig, axes = plt.subplots(1, len(groups), figsize=(3.6 * len(groups), 3.8), squeeze=False)
    for ax, group in zip(axes[0], groups):
        rows = _rows(results, group)
        names = [LABELS[r['name']].replace(' (', '\n(') + (' fused' if r['mode'] == 'predict_fused'
                                                              else '') for r in rows]
        colours = ['tab:blue' if 'posmlp' in r['name'] else 'tab:gray' if 'swin' in r['name']
                   else 'tab:green' for r in rows]
        ax.barh(names, [r['median_s'] for r in rows], color=colours)
        ax.invert_yaxis()
        ax.set_xlabel('seconds (median)')
        ax.set_title(f"{rows[0]['mode'].split('_')[0]}, batch {rows[0]['batch']}", fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"{results['height']}x{results['width']}, {_setting(results)}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def measure_main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--detectors', nargs='+', default=['retinanet', 'mask_rcnn'],
                   choices=['retinanet', 'mask_rcnn'])
    p.add_argument('--family', action='store_true',
                   help='also Hire-MLP-Tiny, ViP-S/7 and S2-MLP-deep RetinaNets')
    p.add_argument('--repeat', type=int, default=5)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--size', nargs=2, type=int, default=[800, 1333], metavar=('H', 'W'))
    p.add_argument('--train-batch', type=int, default=2)
    p.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    p.add_argument('--amp', choices=['float16', 'bfloat16'],
                   help='mixed precision, as tools/train.py --amp (and autocast for predict)')
    p.add_argument('--compile', action='store_true', help='torch.compile train_step / test_step')
    p.add_argument('--name', default='detectors', help='results file name (without extension)')
    p.add_argument('--out-dir', default=os.path.join(HERE, 'results'))
    args = p.parse_args()
    results = run(args.detectors, args.family, args.repeat, args.threads, *args.size,
                  out_dir=args.out_dir, name=args.name, train_batch=args.train_batch,
                  device=args.device, amp=args.amp, compile=args.compile)
    table = report(results)
    with open(os.path.join(args.out_dir, f'{args.name}.md'), 'w') as f:
        f.write(table + '\n')
    print(f"[bench] wrote {plot(results, os.path.join(args.out_dir, f'{args.name}.png'))}")
    print(table)


if __name__ == '__main__':
    measure_main()
