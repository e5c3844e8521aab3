"""Parameters and FLOPs of a detector built from a config, and of its backbone alone.

FLOPs: mmengine's FlopAnalyzer (fvcore's rules), as mmdet's get_flops.py and papers' "MACs": a
multiply-add is one FLOP; convolutions, linear layers, matmuls and norms count, element-wise work
(activations, softmax, additions) does not. flop_handles.py counts PosMLP's autograd Functions.
"""
import warnings
from typing import Dict, Sequence, Tuple

import torch
import torch.nn as nn

from ..detector_io import TensorMode, build_detector, dummy_batch, load_detector  # noqa: F401


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (each shared tensor once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def parameter_breakdown(model: nn.Module) -> Dict[str, int]:
    """Parameters of the detector and of each of its top-level parts (backbone, neck, heads)."""
    parts = {name: count_parameters(child) for name, child in model.named_children()}
    return {'total': count_parameters(model), **{k: n for k, n in parts.items() if n}}


def _flops(module: nn.Module, inputs: Tuple) -> Tuple[int, Dict[str, int]]:
    """Total FLOPs of ``module(*inputs)`` and the operators that were not counted."""
    from mmengine.analysis import FlopAnalyzer
    analyzer = FlopAnalyzer(module, inputs)
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # jit tracing warnings about data-dependent shapes
        total = int(analyzer.total())
    return total, dict(analyzer.unsupported_ops())


def model_complexity(config, shape: Sequence[int] = (800, 1280), cfg_options=None,
                     with_flops: bool = True) -> dict:
    """Parameters of a detector and its parts, and FLOPs of detector and backbone at ``shape``,
    (H, W) before padding; the traced input is padded to the size divisor (``input_shape``)."""
    model = build_detector(config, cfg_options).eval()
    result = dict(params=parameter_breakdown(model), shape=tuple(shape))
    if not with_flops:
        return result
    with torch.no_grad():
        data = model.data_preprocessor(dummy_batch(shape), False)
        inputs = data['inputs']
        result['input_shape'] = tuple(inputs.shape[-2:])
        result['flops'], result['uncounted_ops'] = _flops(
            TensorMode(model, data['data_samples']), (inputs,))
        result['backbone_flops'], _ = _flops(model.backbone, (inputs,))
    return result


def format_complexity(result: dict, config: str = '') -> str:
    """A human-readable report of :func:`model_complexity`'s result."""
    params = result['params']
    lines = ['=' * 64] + ([f'Config: {config}'] if config else [])
    if 'input_shape' in result:
        lines.append(f'Input shape: {result["shape"][0]}x{result["shape"][1]} '
                     f'(padded to {result["input_shape"][0]}x{result["input_shape"][1]})')
    lines.append(f'Parameters, whole detector: {params["total"]:,} ({params["total"] / 1e6:.2f} M)')
    lines += [f'  {name:<14} {n:>12,} ({n / 1e6:.2f} M)' for name, n in params.items()
              if name != 'total']
    if 'flops' in result:
        lines += [f'FLOPs, whole detector: {result["flops"] / 1e9:.2f} G',
                  f'FLOPs, backbone:       {result["backbone_flops"] / 1e9:.2f} G',
                  '(one multiply-add = one FLOP; element-wise ops are not counted)']
        if result.get('uncounted_ops'):
            ops = ', '.join(f'{k} x{v}' for k, v in sorted(result['uncounted_ops'].items()))
            lines.append(f'Not counted: {ops}')
    return '\n'.join(lines + ['=' * 64])
