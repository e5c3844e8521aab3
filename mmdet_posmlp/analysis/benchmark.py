"""Inference speed of a detector: median time of repeated ``model.test_step(batch)`` calls after
warmup, batch size 1: data preprocessor, backbone, neck, head and post-processing (NMS, mask
pasting); image decoding and the pipeline run once, before timing. Without an image the batch is
``detector_io.dummy_batch``, fed unresized, so ``shape`` is the input size up to the preprocessor's
padding; an image goes through the config's test pipeline (usually resized to 1333x800).
"""
import statistics
import time
from typing import Optional, Sequence

import torch
import torch.nn as nn

from ..detector_io import dummy_batch, load_detector


def make_batch(model: nn.Module, shape: Sequence[int] = (800, 1333),
               image: Optional[str] = None) -> dict:
    """One test batch: a random ``shape`` (H, W) image, or ``image`` through the test pipeline."""
    if image is None:
        return dummy_batch(shape)
    from mmcv.transforms import Compose
    from mmengine.dataset import pseudo_collate
    pipeline = [t for t in model.cfg.test_dataloader.dataset.pipeline
                if t['type'] not in ('LoadAnnotations', 'mmdet.LoadAnnotations')]
    return pseudo_collate([Compose(pipeline)(dict(img_path=image, img_id=0))])


def benchmark(model: nn.Module, batch: dict, repeat: int = 10, warmup: int = 2) -> dict:
    """Time ``model.test_step(batch)``: ``warmup`` untimed runs, then ``repeat`` timed ones."""
    if repeat < 1:
        raise ValueError(f'repeat must be >= 1, got {repeat}')
    times = []
    with torch.no_grad():
        for i in range(warmup + repeat):
            start = time.perf_counter()
            results = model.test_step(batch)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    median = statistics.median(times)
    inputs = model.data_preprocessor(batch, False)['inputs']
    return dict(
        times=times, median_s=median, fps=1.0 / median, min_s=min(times), max_s=max(times),
        input_shape=tuple(inputs.shape[-2:]), threads=torch.get_num_threads(),
        num_detections=len(results[0].pred_instances), repeat=repeat, warmup=warmup)


def benchmark_fps(config, checkpoint: Optional[str] = None,
                  shape: Sequence[int] = (800, 1333), image: Optional[str] = None,
                  repeat: int = 10, warmup: int = 2, cfg_options: Optional[dict] = None,
                  threads: Optional[int] = None, fuse: bool = True) -> dict:
    """:func:`benchmark` of ``config``'s detector; ``fuse``: run it fused, as tools/test.py does."""
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
    weights = result['checkpoint'] or 'random weights (no checkpoint)'
    fused = ', backbone fused (deployment step)' if result.get('fused') else ''
    return '\n'.join([
        f'Config: {result["config"]}',
        f'Weights: {weights}{fused}',
        f'Input: {result["image"] or "random image"}, network input {h}x{w} (padded), batch 1, '
        f'{result["threads"]} threads',
        f'Detections on the last run: {result["num_detections"]}',
        f'Times (s) after {result["warmup"]} warmup runs: {times}',
        f'Median: {result["median_s"]:.3f} s/img  ->  {result["fps"]:.2f} FPS',
    ])
