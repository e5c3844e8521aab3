"""Parameters and FLOPs of a detector built from a config, and of its backbone alone.

FLOPs are counted by mmengine's FlopAnalyzer (fvcore's rules): one multiply-add counts as one
FLOP, convolutions, linear layers, matrix products and normalisations are counted,
element-wise work (activations, softmax, additions) is not. The handles for what mmengine lacks
and PosMLP uses (its custom autograd Functions, opaque in a jit trace) are in flop_handles.py,
registered in mmengine's default tables on ``import mmdet_posmlp``, so that mmdet's own
get_flops.py counts the same operators. This is the convention of MMDetection's
tools/analysis_tools/get_flops.py and of the "MACs" columns in papers.
"""
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import init_default_scope


def load_model_config(config, cfg_options: Optional[dict] = None) -> Config:
    """A Config from a path (or a Config), with ``--cfg-options`` merged."""
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def build_detector(config, cfg_options: Optional[dict] = None) -> nn.Module:
    """Build ``cfg.model`` with mmdet's MODELS, without initialising or loading any weights.

    Pretrained backbone weights (``init_cfg``) are not read: they are only loaded by
    ``init_weights()``, which is not called here.
    """
    from mmdet.registry import MODELS
    cfg = load_model_config(config, cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    return MODELS.build(cfg.model)


def load_detector(config, checkpoint: Optional[str] = None, cfg_options: Optional[dict] = None,
                  log: Optional[Callable[[str], None]] = None) -> nn.Module:
    """Build ``cfg.model`` (no init_cfg weights are read) and load ``checkpoint`` with the
    package's safe loading (engine/safe_load.py: torch's weights_only unpickler with the
    allowlist of mmengine and reference checkpoints; a file with other globals is refused
    before the model is built). Without a checkpoint the weights are random: enough to check
    an export, useless for deployment. Returns the model in eval mode on the CPU."""
    from ..safe_load import check_checkpoint_loadable, mmengine_checkpoint_loading
    log = log or (lambda s: None)
    cfg = load_model_config(config, cfg_options)
    if checkpoint:
        check_checkpoint_loadable(checkpoint)
    model = build_detector(cfg)
    if checkpoint:
        from mmengine.runner import load_checkpoint
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


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (each shared tensor once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def parameter_breakdown(model: nn.Module) -> Dict[str, int]:
    """Parameters of the detector and of each of its top-level parts (backbone, neck, heads)."""
    out = {'total': count_parameters(model)}
    for name, child in model.named_children():
        n = count_parameters(child)
        if n:
            out[name] = n
    return out


def dummy_batch(model: nn.Module, shape: Sequence[int]) -> Tuple[torch.Tensor, List]:
    """A random uint8 image of ``shape`` = (H, W) passed through the detector's preprocessor.

    Returns the normalised, padded (to the preprocessor's size divisor) batch and its data
    samples, as mmdet's get_flops does with a dataset image.
    """
    from mmdet.structures import DetDataSample
    h, w = int(shape[0]), int(shape[1])
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
    sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.)))
    data = model.data_preprocessor(dict(inputs=[image], data_samples=[sample]), False)
    return data['inputs'], data['data_samples']


class _TensorForward(nn.Module):
    """``detector(inputs)`` -> raw head outputs (mmdet's mode='tensor'), traceable by jit."""

    def __init__(self, detector: nn.Module, data_samples: List):
        super().__init__()
        self.detector = detector
        self.data_samples = data_samples

    def forward(self, inputs: torch.Tensor):
        return self.detector._forward(inputs, self.data_samples)


def _flops(module: nn.Module, inputs: Tuple) -> Tuple[int, Dict[str, int]]:
    """Total FLOPs of ``module(*inputs)`` and the operators that were not counted."""
    from mmengine.analysis import FlopAnalyzer

    analyzer = FlopAnalyzer(module, inputs)
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # jit tracing warnings about data-dependent shapes
        total = int(analyzer.total())
    return total, dict(analyzer.unsupported_ops())


def model_complexity(config,
                     shape: Sequence[int] = (800, 1280),
                     cfg_options: Optional[dict] = None,
                     with_flops: bool = True) -> dict:
    """Parameters of a detector and its parts, and FLOPs of detector and backbone at ``shape``.

    ``shape`` is (H, W) of the image before padding; the input actually traced is padded to the
    detector's size divisor (``input_shape`` in the result).
    """
    model = build_detector(config, cfg_options)
    model.eval()
    result = dict(params=parameter_breakdown(model), shape=tuple(shape))
    if not with_flops:
        return result
    with torch.no_grad():
        inputs, samples = dummy_batch(model, shape)
        result['input_shape'] = tuple(inputs.shape[-2:])
        result['flops'], result['uncounted_ops'] = _flops(_TensorForward(model, samples),
                                                          (inputs,))
        result['backbone_flops'], _ = _flops(model.backbone, (inputs,))
    return result


def format_complexity(result: dict, config: str = '') -> str:
    """A human-readable report of :func:`model_complexity`'s result."""
    params = result['params']
    lines = ['=' * 64, f'Config: {config}' if config else None]
    if 'input_shape' in result:
        lines.append(f'Input shape: {result["shape"][0]}x{result["shape"][1]} '
                     f'(padded to {result["input_shape"][0]}x{result["input_shape"][1]})')
    lines.append(f'Parameters, whole detector: {params["total"]:,} '
                 f'({params["total"] / 1e6:.2f} M)')
    for name, n in params.items():
        if name != 'total':
            lines.append(f'  {name:<14} {n:>12,} ({n / 1e6:.2f} M)')
    if 'flops' in result:
        lines.append(f'FLOPs, whole detector: {result["flops"] / 1e9:.2f} G')
        lines.append(f'FLOPs, backbone:       {result["backbone_flops"] / 1e9:.2f} G')
        lines.append('(one multiply-add = one FLOP; element-wise ops are not counted)')
        if result.get('uncounted_ops'):
            ops = ', '.join(f'{k} x{v}' for k, v in sorted(result['uncounted_ops'].items()))
            lines.append(f'Not counted: {ops}')
    lines.append('=' * 64)
    return '\n'.join(line for line in lines if line is not None)
