"""A detector from a config, the random inputs it is fed, and its tensor mode as a module.

Analysis, deployment, the benchmarks and the tools all build a detector, feed it a synthetic
image and run backbone, neck and head without post-processing; this one place for that makes them
measure and export the same thing (beside ``analysis/`` and ``deployment/``, which both depend on
it). mmengine and mmdet are imported where used: a bare backbone can be exported without them.
"""
import argparse
import os
import os.path as osp
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn as nn

from .mim import config_path
from .safe_load import check_checkpoint_loadable, mmengine_checkpoint_loading


def resolve_config(name) -> str:
    """The file of ``mmdet::folder/file.py`` (which mmengine's ``Config.fromfile`` does not read by
    name), of ``mmdet_posmlp::file.py``, or ``name`` itself (a path); raises naming it."""
    name = os.fspath(name)
    if name.startswith('mmdet_posmlp::'):
        return config_path(name)
    path = name
    if name.startswith('mmdet::'):
        import mmdet
        path = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', name[len('mmdet::'):])
    if not osp.isfile(path):
        raise FileNotFoundError(f"config '{name}' not found (looked for {path})")
    return path


def load_model_config(config, cfg_options: Optional[dict] = None):
    """A Config from a path or ``package::`` name (or a Config), ``--cfg-options`` merged."""
    from mmengine.config import Config
    cfg = config if isinstance(config, Config) else Config.fromfile(resolve_config(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def build_detector(config, cfg_options: Optional[dict] = None) -> nn.Module:
    """Build ``cfg.model`` with mmdet's MODELS, loading no weights: ``init_cfg`` is only read by
    ``init_weights()``, which is not called here."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    cfg = load_model_config(config, cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    return MODELS.build(cfg.model)


def load_detector(config, checkpoint: Optional[str] = None, cfg_options: Optional[dict] = None,
                  log: Optional[Callable[[str], None]] = None) -> nn.Module:
    """Build ``cfg.model`` (no init_cfg weights are read) and load ``checkpoint`` safely (a file
    with globals outside safe_load.py's allowlist is refused before the model is built). Without
    a checkpoint the weights are random: enough to check an export, useless for deployment.
    Returns the model in eval mode on the CPU, with its Config as ``model.cfg``."""
    from mmengine.runner import load_checkpoint
    log = log or (lambda s: None)
    cfg = load_model_config(config, cfg_options)
    if checkpoint:
        check_checkpoint_loadable(checkpoint)
    model = build_detector(cfg)
    if checkpoint:
        with mmengine_checkpoint_loading():
            ckpt = load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
        meta = ckpt.get('meta', {}) if isinstance(ckpt, dict) else {}
        if 'dataset_meta' in meta:
            model.dataset_meta = meta['dataset_meta']
        log(f'loaded {checkpoint}')
    else:
        log('no checkpoint: random weights (the export is checked all the same)')
    model.cfg = cfg
    return model.cpu().eval()


def dummy_images(shape: Sequence[int], batch: int = 1, seed: int = 0,
                 normalised: bool = False, channels: int = 3) -> torch.Tensor:
    """A seeded random (B, C, H, W) batch: uint8 pixels, what the data preprocessor takes, or
    ``normalised`` standard-normal floats, what the network sees after it (the input of a bare
    backbone, which has no preprocessor)."""
    g = torch.Generator().manual_seed(seed)
    size = (batch, channels, int(shape[0]), int(shape[1]))
    if normalised:
        return torch.randn(size, generator=g)
    return torch.randint(0, 256, size, dtype=torch.uint8, generator=g)


def dummy_batch(shape: Sequence[int], batch: int = 1, seed: int = 0) -> dict:
    """A data batch as a dataloader gives it (``inputs``: uint8 images of ``shape`` = (H, W),
    ``data_samples``: their unscaled metainfo), for ``test_step`` or, through
    ``model.data_preprocessor(batch, False)``, for the network, as mmdet's get_flops does."""
    from mmdet.structures import DetDataSample
    h, w = int(shape[0]), int(shape[1])
    samples = [DetDataSample(metainfo=dict(img_id=i, img_path='random', img_shape=(h, w),
                                           ori_shape=(h, w), scale_factor=(1., 1.)))
               for i in range(batch)]
    return dict(inputs=list(dummy_images(shape, batch, seed)), data_samples=samples)


class TensorMode(nn.Module):
    """mmdet's tensor mode as a module: ``forward(inputs)`` is ``detector._forward(inputs,
    data_samples)``, the raw head outputs (no decoding or NMS), for jit traces and exporters."""

    def __init__(self, detector: nn.Module, data_samples: Optional[List] = None):
        super().__init__()
        self.detector, self.data_samples = detector, data_samples

    def forward(self, inputs: torch.Tensor):
        return self.detector._forward(inputs, self.data_samples)


class ShapeAction(argparse.Action):
    """The tools' ``--shape H W`` (one value: a square), with ``type=int, nargs='+'``: the size of
    the dummy batch, hence here beside it."""

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) > 2:
            parser.error(f'{option_string} takes H W or a single size')
        setattr(namespace, self.dest, list(values) * (3 - len(values)))
