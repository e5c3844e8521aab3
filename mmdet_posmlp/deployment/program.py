"""What an export runs (the backbone, or the detector's tensor mode), and its ``torch.export``.

The input is the preprocessed (normalised, padded) batch; decoding and NMS stay in Python
(``runtime.predict_with_onnx``). Only the plain model is exported (:func:`export_target` says why).
With a dynamic size rule, :class:`ExportWrapper` writes the input's height and width as
``L * k + r`` before the model runs, so that every map size is linear in k for torch.export's
solver (nested floor divisions of H make its proofs too slow at detector sizes), and a size
outside the rule fails in the exported program (a guard in torch.export; in onnxruntime, the split
of each side into two parts sized from k) rather than computing something else.
"""
import contextlib
import dataclasses
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..detector_io import TensorMode, dummy_images
from .sizes import ExportError, SizeRule, check_size, size_rule

PARTS = ('backbone', 'detector')
GRAD_MODES = {'no_grad': torch.no_grad, 'inference_mode': torch.inference_mode}


def _check_part(part: str) -> None:
    if part not in PARTS:
        raise ExportError(f"part must be one of {PARTS}, got '{part}'")


def flatten_outputs(out) -> Tuple[List[torch.Tensor], List[int]]:
    """Outputs -> (flat tensors, group lengths): 0 for a tensor, n for a list of n tensors."""
    items = [out] if isinstance(out, torch.Tensor) else list(out)
    for item in items:
        if not (isinstance(item, torch.Tensor) or isinstance(item, (list, tuple))
                and all(isinstance(t, torch.Tensor) for t in item)):
            raise ExportError(f'cannot export an output of type {type(item).__name__}: only '
                              'tensors and lists of tensors')
    groups = [0 if isinstance(item, torch.Tensor) else len(item) for item in items]
    return [t for item, n in zip(items, groups) for t in (item if n else [item])], groups


def group_outputs(flat: Sequence, groups: Sequence[int]) -> list:
    """Inverse of :func:`flatten_outputs` (lists for groups)."""
    out, i = [], 0
    for n in groups:
        out.append(flat[i] if n == 0 else list(flat[i:i + n]))
        i += max(n, 1)
    return out


def output_names(groups: Sequence[int], part: str) -> List[str]:
    names = []
    for g, n in enumerate(groups):
        if n == 0:
            names.append(f'feat{g}' if part == 'backbone' else f'output{g}')
        else:
            names.extend(f'output{g}_{i}' for i in range(n))
    return names


class ExportWrapper(nn.Module):
    """The backbone or the detector's tensor mode with flat outputs (dynamic: module docstring)."""

    def __init__(self, model: nn.Module, part: str = 'backbone', rule: Optional[SizeRule] = None):
        super().__init__()
        _check_part(part)
        self.model = model if part == 'backbone' else TensorMode(model)
        self.period = rule.period if rule is not None else 0
        self.remainder = tuple(rule.remainder) if rule is not None else (0, 0)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if self.period:
            B, C, H, W = x.shape
            L, (rh, rw) = self.period, self.remainder
            kh, kw = (H - rh) // L, (W - rw) // L
            x = x.reshape(B, C, L * kh + rh, L * kw + rw)
            # Cut in two along each side and put back: in onnxruntime a size outside the rule fails
            # here, the parts, sized from k, not adding up to the side (the reshape, a no-op for the
            # solver, is dropped; the window layout, built from k, would gather a part of the map).
            # Not L k and r: the exporter writes L k as H - r, which always adds up.
            x = torch.cat(x.split([kh, (L - 1) * kh + rh], dim=2), dim=2)
            x = torch.cat(x.split([kw, (L - 1) * kw + rw], dim=3), dim=3)
        return tuple(flatten_outputs(self.model(x))[0])


def export_target(model: nn.Module, part: str) -> nn.Module:
    """The module an export of ``part`` runs; refuses fused models and two-stage detectors."""
    _check_part(part)
    fused = [n for n, m in model.named_modules() if getattr(m, 'fixed_mixing', None) is not None]
    if fused:
        raise ExportError(
            f'the model holds fused (deployment) modules ({fused[0]}, ...): export the plain '
            'model. A fused stage keeps its mixing matrices per map size in a Python dict, '
            'which a trace would bake in as the constants of one size; the exporters and '
            'onnxruntime fold the weight-only work that fuse() saves by themselves.')
    if part == 'backbone':
        return getattr(model, 'backbone', model)
    if not hasattr(model, '_forward') or not hasattr(model, 'bbox_head'):
        raise ExportError(
            f"--part detector exports single-stage detectors (backbone, neck and a dense head, "
            f"mmdet's tensor mode); {type(model).__name__} is not one. Two-stage detectors "
            "(Mask R-CNN, ...) pick proposals between their stages (NMS on data), which the "
            "tensor mode does not express: export their backbone (--part backbone).")
    return model


def reference_outputs(target: nn.Module, part: str, x: torch.Tensor) -> List[torch.Tensor]:
    """The PyTorch outputs the exported model must reproduce (eval, no_grad, flat)."""
    if target.training:
        raise ExportError('the reference outputs are those of the model in eval mode')
    with torch.no_grad():
        return list(ExportWrapper(target, part).eval()(x))


def _size_oblivious():
    """Symbolic sizes >= 2 are not guarded against being 1 (torch's backed_size_oblivious),
    sparing the solver a proof per stage: every size a dynamic export accepts has at least two
    whole windows per side and stage, so the assumption holds wherever the program runs."""
    try:
        from torch.fx.experimental import _config as fx_config
        return fx_config.patch(backed_size_oblivious=True)
    except (ImportError, AttributeError):  # a torch without the option
        return contextlib.nullcontext()


def export_program(model: nn.Module, size: Sequence[int] = (800, 1344), part: str = 'backbone',
                   dynamic: bool = True, batch: int = 1,
                   mode: str = 'no_grad') -> Tuple[torch.export.ExportedProgram, SizeRule]:
    """``torch.export`` of the backbone or detector of ``model`` (:func:`export_target`) in eval
    mode under ``mode`` ('no_grad' or 'inference_mode'). Dynamic: H and W are derived dims
    ``period * Dim + remainder`` (``sizes.window_period``), traced at a size with k >= 2 (a size of
    one window count would be specialised); the program accepts the sizes of the returned rule,
    whose lower bound is the one torch.export proved. ExportError if ``size`` is not one of them."""
    if mode not in GRAD_MODES:
        raise ExportError(f"mode must be 'no_grad' or 'inference_mode', got '{mode}'")
    size = check_size(size)
    target = export_target(model, part).eval()
    rule = size_rule(target, size, dynamic)
    wrapper = ExportWrapper(target, part, rule if dynamic else None).eval()
    trace, shapes = size, None
    if dynamic:
        L, (rh, rw) = rule.period, rule.remainder
        kh = torch.export.Dim('h_periods', min=0, max=(rule.maximum[0] - rh) // L)
        kw = torch.export.Dim('w_periods', min=0, max=(rule.maximum[1] - rw) // L)
        shapes = {'x': {2: L * kh + rh, 3: L * kw + rw}}
        trace = tuple(L * max(2, (s - r) // L) + r for s, r in zip(size, rule.remainder))
    with GRAD_MODES[mode](), _size_oblivious():
        ep = torch.export.export(wrapper, (dummy_images(trace, batch, normalised=True),),
                                 dynamic_shapes=shapes)
    if not dynamic:
        return ep, rule
    rule = dataclasses.replace(rule, minimum=_program_minimum(ep, rule))
    if not rule.accepts(*size):
        raise ExportError(
            f'a dynamic export at {size[0]}x{size[1]} would not accept that size itself: '
            f'{rule.describe()}. Export at one of those sizes (at k = 0 or 1 some stage has no '
            'whole window or a single one, another layout), or without --dynamic.')
    return ep, rule


def _program_minimum(ep: torch.export.ExportedProgram, rule: SizeRule) -> Tuple[int, int]:
    """The least height and width the program accepts (range constraints), in the rule's classes."""
    name = ep.graph_signature.user_inputs[0]
    placeholder = next(n for n in ep.graph.nodes if n.op == 'placeholder' and n.name == name)
    out = []
    for side, r in zip(placeholder.meta['val'].shape[2:], rule.remainder):
        if isinstance(side, torch.SymInt):
            expr = side.node.expr
            side = max(int(expr.subs({s: ep.range_constraints[s].lower for s in expr.free_symbols
                                      if s in ep.range_constraints})), r)
        out.append(int(side))
    return tuple(out)
