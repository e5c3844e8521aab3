"""Inference speed of a detector: median time of repeated ``test_step`` calls, after warmup.

What is timed is ``model.test_step(batch)``: the data preprocessor (normalisation, padding),
backbone, neck, head and post-processing (NMS, mask pasting), batch size 1. Image decoding and
the data pipeline are done once, before timing.

- ``image=None``: a random uint8 image of ``shape`` (H, W) is fed as it is (no resizing), so
  ``shape`` is the network's input size (padded to the preprocessor's size divisor).
- ``image=PATH``: the image goes through the config's test pipeline once (usually a resize to
  1333x800 keeping the aspect ratio), as in mmdet's inference.
"""
import statistics
import time
from typing import Optional, Sequence

import torch
import torch.nn as nn

from .complexity import load_detector


def make_batch(model: nn.Module, shape: Sequence[int] = (800, 1333),
               image: Optional[str] = None) -> dict:
    """One test batch: a random image of ``shape`` (H, W), or ``image`` through the pipeline."""
    from mmdet.structures import DetDataSample
    if image is None:
        h, w = int(shape[0]), int(shape[1])
        tensor = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
        sample = DetDataSample(metainfo=dict(
            img_id=0, img_path='random', img_shape=(h, w), ori_shape=(h, w),
            scale_factor=(1., 1.)))
        return dict(inputs=[tensor], data_samples=[sample])
    from mmcv.transforms import Compose
    from mmengine.dataset import pseudo_collate
    pipeline = [t for t in model.cfg.test_dataloader.dataset.pipeline
                if t['type'] not in ('LoadAnnotations', 'mmdet.LoadAnnotations')]
    data = Compose(pipeline)(dict(img_path=image, img_id=0))
    return pseudo_collate([data])


def benchmark(model: nn.Module, batch: dict, repeat: int = 10, warmup: int = 2) -> dict:
    """Time ``model.test_step(batch)``: ``warmup`` untimed runs, then ``repeat`` timed ones."""
    if repeat < 1:
        raise ValueError(f'repeat must be >= 1, got {repeat}')
    times = []
    with torch.no_grad():
        for i in range(warmup + repeat):
            start = time.perf_counter()
            results = model.test_step(batch)
            elapsed = time.perf_counter() - start
            if i >= warmup:
                times.append(elapsed)
    median = statistics.median(times)
    sample = results[0]
    inputs = model.data_preprocessor(batch, False)['inputs']
    return dict(
        times=times, median_s=median, fps=1.0 / median, min_s=min(times), max_s=max(times),
        input_shape=tuple(inputs.shape[-2:]), threads=torch.get_num_threads(),
        num_detections=len(sample.pred_instances), repeat=repeat, warmup=warmup)


def benchmark_fps(config, checkpoint: Optional[str] = None,
                  shape: Sequence[int] = (800, 1333), image: Optional[str] = None,
                  repeat: int = 10, warmup: int = 2, cfg_options: Optional[dict] = None,
                  threads: Optional[int] = None, fuse: bool = True) -> dict:
    """Build (and load) the detector from ``config`` and benchmark it on one image; ``fuse``:
    after the backbone's deployment step, as tools/test.py runs it."""
    if threads:
        torch.set_num_threads(threads)
    model = load_detector(config, checkpoint, cfg_options)
    fused = fuse and hasattr(model.backbone, 'fuse')
    if fused:
        model.backbone.fuse()
    batch = make_batch(model, shape, image)
    result = benchmark(model, batch, repeat, warmup)
    result.update(config=str(config), checkpoint=checkpoint, image=image, fused=fused)
    return result


def format_benchmark(result: dict) -> str:
    times = ', '.join(f'{t:.3f}' for t in result['times'])
    h, w = result['input_shape']
    source = result['image'] or 'random image'
    weights = result['checkpoint'] or 'random weights (no checkpoint)'
    return '\n'.join([
        f'Config: {result["config"]}',
        f'Weights: {weights}' + (', backbone fused (deployment step)' if result.get('fused')
                                 else ''),
        f'Input: {source}, network input {h}x{w} (padded), batch 1, '
        f'{result["threads"]} threads',
        f'Detections on the last run: {result["num_detections"]}',
        f'Times (s) after {result["warmup"]} warmup runs: {times}',
        f'Median: {result["median_s"]:.3f} s/img  ->  {result["fps"]:.2f} FPS',
    ])
