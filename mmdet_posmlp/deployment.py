"""Export of PosMLP backbones and detectors, checked: ONNX (run by onnxruntime) and torch.export.

What is exported is the plain model of ``models/posmlp.py`` in eval mode, not the deployed form
of ``models/fused.py``: a fused stage keeps the mixing matrices of its blocks per map size in a
Python dict (``PosMLPStage.fixed_mixing``), which a trace would bake into the graph as the
constants of the size it saw, and refuses to run with gradients. Nothing is lost: what
``fuse()`` precomputes (the stem's BatchNorm folded into its convolutions, the mixing matrices)
depends on the weights and the window shapes only, which are fixed in an exported graph, so
the exporters' constant folding and onnxruntime can compute it once as well. Models that hold
a fused stem (``FusedConvStem``) or a fused stage are refused.

Parts: ``'backbone'`` (the backbone's multi-scale features) or ``'detector'`` (mmdet's tensor
mode, ``model._forward(inputs)``: backbone, neck and head, raw head outputs). The input is the
preprocessed batch (normalised, padded by the data preprocessor); post-processing (decoding,
NMS) stays in Python: :func:`predict_with_onnx` feeds the onnxruntime outputs to the head's
``predict_by_feat``.

Exporters:

- ``'dynamo'``: ``torch.export`` (under ``no_grad``) then ``torch.onnx.export(program,
  dynamo=True)``; needs the ``onnxscript`` package. Static or dynamic height and width.
- ``'torchscript'``: ``torch.onnx.export(..., dynamo=False)``, the TorchScript tracer; static
  only. The tracer records the window layout of the traced size (which windows are clipped, how
  many) as constants while it keeps some size arithmetic dynamic, so a graph it writes with
  dynamic axes can run at another size and be wrong there: ``dynamic=True`` is refused. It
  also drops copies into views, so the model must not write its input into a view (a graph
  that ignores its input; the export tests compare two inputs). ``aten::threshold`` with a non-zero
  threshold (the flushed softmax) has no ONNX symbolic in torch; one (``Where``) is registered
  for the duration of the export.
- ``'auto'``: dynamo for dynamic sizes, torchscript (faster, no onnxscript) for a fixed size.

Dynamic sizes. A stage cuts its map into up to four regions of same-shaped windows (whole,
right edge, bottom edge, corner): which regions exist and the size of the clipped windows are
Python integers, fixed per size, so an exported program is specialised on that layout. It holds
for all sizes congruent to the export size modulo the *period* L, the least common multiple of
stride x window over the stages (224 for PosMLP-T/S/B: 16 x 14 and 32 x 7), from two periods
up: H = L * k + (H0 mod L), k >= 2 (the range torch.export proves is read from the program;
at k = 0 or 1 some stage has no whole window or a single one, another layout). The export
wraps the model in :class:`ExportWrapper`, which re-expresses the input's height and width
as L * k + r before the model runs: every map size is then linear in k for the symbolic
solver instead of nested floor divisions of H (torch.export of PosMLP-T at 800x1344 with
dynamic H, W: 58 s instead of 91 s; without torch's size-oblivious mode, which
:func:`export_program` also turns on, it failed in sympy after 8 minutes), and a size outside
the rule fails in the exported program (a guard in torch.export; in onnxruntime, the wrapper's
split of each side into two parts sized from k) instead of computing something else.
mmdet pads inputs to multiples of 32 only, so a deployment that feeds arbitrary images must
pad to the rule's sizes (or export at a fixed size). The rule is stored in the ONNX model's
metadata (key ``mmdet_posmlp``) and checked by :func:`run_onnx` / :func:`predict_with_onnx`.

Every export is checked (:func:`verify_onnx`): onnxruntime against PyTorch (eval, float32,
``no_grad``) at the export size and, when dynamic, at the next size the rule accepts; the
largest relative difference ``max|onnx - torch| / max|torch|`` over the outputs must be below
:data:`TOLERANCE`, and a second random input at the export size must change every output by
more than that tolerance (:data:`MIN_INPUT_EFFECT`) and match PyTorch there too: a graph whose
outputs do not depend on its input is refused however closely it matches at one input.
"""
import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import time
import warnings
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

TOLERANCE = 1e-4          # max |onnx - torch| / max |torch|, per output
MIN_INPUT_EFFECT = TOLERANCE  # a second input must change every output more than this (relative)
DEFAULT_OPSET = 18
MAX_SIDE = 4096           # largest height / width a dynamic export is made for
METADATA_KEY = 'mmdet_posmlp'
EXPORTERS = ('auto', 'dynamo', 'torchscript')
PARTS = ('backbone', 'detector')
INPUT_NAME = 'input'


class ExportError(RuntimeError):
    """The export cannot be done as asked; the message says why and what to do instead."""


class VerificationError(ExportError):
    """The exported model does not compute what the PyTorch model computes."""


# --------------------------------------------------------------------------- sizes

@dataclasses.dataclass(frozen=True)
class SizeRule:
    """Input heights and widths an exported model accepts.

    Static: exactly ``size``. Dynamic: ``H = period * k + remainder[0]`` between ``minimum[0]``
    and ``maximum[0]``, and the same for W."""
    size: Tuple[int, int]                        # the export size
    period: int = 0                              # 0: static
    remainder: Tuple[int, int] = (0, 0)
    minimum: Tuple[int, int] = (0, 0)
    maximum: Tuple[int, int] = (0, 0)

    @property
    def dynamic(self) -> bool:
        return self.period > 0

    def accepts(self, height: int, width: int) -> bool:
        if not self.dynamic:
            return (height, width) == tuple(self.size)
        return all(lo <= s <= hi and s % self.period == r for s, r, lo, hi in zip(
            (height, width), self.remainder, self.minimum, self.maximum))

    def check(self, height: int, width: int) -> None:
        if not self.accepts(height, width):
            raise ExportError(f'input size {height}x{width} is not one this model was exported '
                              f'for: {self.describe()}')

    def describe(self) -> str:
        if not self.dynamic:
            return f'static, H x W = {self.size[0]} x {self.size[1]}'
        sides = [f'{n} = {self.period}k + {r} in [{lo}, {hi}]' for n, r, lo, hi in zip(
            'HW', self.remainder, self.minimum, self.maximum)]
        return f'dynamic, {sides[0]}, {sides[1]}'

    def next_size(self, height: int, width: int) -> Tuple[int, int]:
        """Another accepted size: one period up on both sides (down at the top of the range)."""
        up = (height + self.period, width + self.period)
        return up if self.accepts(*up) else (height - self.period, width - self.period)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> 'SizeRule':
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def window_period(model: nn.Module) -> int:
    """The least common multiple of stride x window over the PosMLP stages of ``model``:
    adding it to the input height (width) adds whole windows to every stage, so the cut into
    regions (which exist, the clipped windows' size) stays the same. 1 without PosMLP stages.

    The stem has stride 4 and each stage that downsamples halves the map again (a 3x3 stride-2
    convolution with padding 1: ceil(H / 2)), so stage i sees ceil(H / stride_i)."""
    from .models.posmlp import ConvStem, Downsample, PosMLPStage
    period, stride = 1, None
    for m in model.modules():
        if isinstance(m, ConvStem) or _is_fused_stem(m):
            stride = 4
        elif isinstance(m, PosMLPStage):
            if stride is None:
                raise ExportError('a PosMLP stage without a stem before it: cannot work out its '
                                  'stride')
            if isinstance(m.pool, Downsample):
                stride *= 2
            period = period * stride * m.window // math.gcd(period, stride * m.window)
    return period


def _is_fused_stem(m: nn.Module) -> bool:
    return type(m).__name__ == 'FusedConvStem'


def size_rule(model: nn.Module, size: Sequence[int], dynamic: bool) -> SizeRule:
    """The sizes an export of ``model`` at ``size`` would accept (before torch.export refines
    the lower bound, see :func:`export_program`)."""
    h, w = (int(s) for s in size)
    if not dynamic:
        return SizeRule((h, w))
    period = window_period(model)
    rem = (h % period, w % period)
    top = tuple(period * ((MAX_SIDE - r) // period) + r for r in rem)
    return SizeRule((h, w), period, rem, rem, top)


def _check_size(size: Sequence[int]) -> Tuple[int, int]:
    if len(size) != 2 or not all(int(s) == s and s > 0 for s in size):
        raise ExportError(f'the export size must be two positive integers H W, got {size}')
    return int(size[0]), int(size[1])


# --------------------------------------------------------------------------- the exported module

def flatten_outputs(out) -> Tuple[List[torch.Tensor], List[int]]:
    """A model's outputs -> (flat list of tensors, group lengths). A tuple of tensors (a
    backbone) has one group per tensor of length 0; a tuple of lists (a dense head: cls_scores,
    bbox_preds, ...) one group per list."""
    if isinstance(out, torch.Tensor):
        return [out], [0]
    flat, groups = [], []
    for item in out:
        if isinstance(item, torch.Tensor):
            flat.append(item)
            groups.append(0)
        elif isinstance(item, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in item):
            flat.extend(item)
            groups.append(len(item))
        else:
            raise ExportError(f'cannot export an output of type {type(item).__name__}: only '
                              'tensors and lists of tensors')
    return flat, groups


def group_outputs(flat: Sequence, groups: Sequence[int]) -> list:
    """Inverse of :func:`flatten_outputs` (lists for groups)."""
    out, i = [], 0
    for n in groups:
        if n == 0:
            out.append(flat[i])
            i += 1
        else:
            out.append(list(flat[i:i + n]))
            i += n
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
    """``model(x)`` (backbone) or ``model._forward(x)`` (detector, mmdet's tensor mode), with
    flat tensor outputs. With a dynamic size rule, the input is first reshaped to its own size
    written as ``period * k + remainder``: a no-op for sizes the rule accepts, it lets the
    symbolic shape solver see every map size as linear in k (see the module docstring); and it
    is split along each side into two parts sized from k and put back, which fails for other
    sizes in onnxruntime too."""

    def __init__(self, model: nn.Module, part: str = 'backbone', rule: Optional[SizeRule] = None):
        super().__init__()
        if part not in PARTS:
            raise ExportError(f"part must be one of {PARTS}, got '{part}'")
        self.model, self.part = model, part
        self.period = rule.period if rule is not None else 0
        self.remainder = tuple(rule.remainder) if rule is not None else (0, 0)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if self.period:
            B, C, H, W = x.shape
            L, (rh, rw) = self.period, self.remainder
            kh, kw = (H - rh) // L, (W - rw) // L
            x = x.reshape(B, C, L * kh + rh, L * kw + rw)
            # The input cut in two along each side and put back, the two sizes computed from k:
            # in onnxruntime a size outside the rule fails there (sizes that do not add up to
            # the side). The reshape does not check it (a no-op for the solver, dropped), nor
            # does the model: its window layout, built from k, would gather a part of the map.
            # Not L k and r: the exporter writes L k as H - r, which always adds up.
            x = torch.cat(x.split([kh, (L - 1) * kh + rh], dim=2), dim=2)
            x = torch.cat(x.split([kw, (L - 1) * kw + rw], dim=3), dim=3)
        return tuple(flatten_outputs(_forward_part(self.model, self.part, x))[0])


def _forward_part(target: nn.Module, part: str, x: torch.Tensor):
    """What an export of ``part`` computes, unflattened: the backbone's features, or the
    detector's tensor mode (``_forward``: the raw head outputs)."""
    return target(x) if part == 'backbone' else target._forward(x)


def export_target(model: nn.Module, part: str) -> nn.Module:
    """The module an export of ``part`` runs: the backbone (of a detector, or the model itself
    if it is one), or the detector. Refuses fused models and two-stage detectors."""
    if part not in PARTS:
        raise ExportError(f"part must be one of {PARTS}, got '{part}'")
    from .models.posmlp import PosMLPStage
    fused = [n for n, m in model.named_modules() if type(m).__name__.startswith('Fused')
             or isinstance(m, PosMLPStage) and m.fixed_mixing is not None]
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


def example_input(size: Sequence[int], batch: int = 1, seed: int = 0,
                  channels: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, int(size[0]), int(size[1]), generator=g)


def reference_outputs(target: nn.Module, part: str, x: torch.Tensor) -> List[torch.Tensor]:
    """The PyTorch outputs the exported model must reproduce (eval, no_grad, flat)."""
    if target.training:
        raise ExportError('the reference outputs are those of the model in eval mode')
    with torch.no_grad():
        return list(ExportWrapper(target, part).eval()(x))


# --------------------------------------------------------------------------- torch.export

@contextlib.contextmanager
def _grad_mode(mode: str):
    if mode == 'no_grad':
        with torch.no_grad():
            yield
    elif mode == 'inference_mode':
        with torch.inference_mode():
            yield
    else:
        raise ExportError(f"mode must be 'no_grad' or 'inference_mode', got '{mode}'")


@contextlib.contextmanager
def _size_oblivious():
    """Symbolic sizes >= 2 are not guarded against being 1 (torch's backed_size_oblivious):
    three times faster export of PosMLP. Every size a dynamic export accepts has at least two
    whole windows per side and stage, so the assumption holds wherever the program runs."""
    try:
        from torch.fx.experimental import _config as fx_config
        ctx = fx_config.patch(backed_size_oblivious=True)
    except (ImportError, AttributeError):
        ctx = contextlib.nullcontext()
    with ctx:
        yield


def export_program(model: nn.Module, size: Sequence[int] = (800, 1344), part: str = 'backbone',
                   dynamic: bool = True, batch: int = 1,
                   mode: str = 'no_grad') -> Tuple[torch.export.ExportedProgram, SizeRule]:
    """``torch.export`` of the backbone or detector of ``model`` (see :func:`export_target`)
    in eval mode under ``mode`` ('no_grad' or 'inference_mode').

    Dynamic: height and width are derived dims ``period * Dim + remainder`` (the period of
    :func:`window_period`); the program is traced at a size with k >= 2 (a size of one window
    count would be specialised) and accepts the sizes of the returned rule, whose lower bound
    is the one torch.export proved. Raises ExportError if ``size`` itself is not accepted."""
    size = _check_size(size)
    target = export_target(model, part).eval()
    rule = size_rule(target, size, dynamic)
    wrapper = ExportWrapper(target, part, rule if dynamic else None).eval()
    if not dynamic:
        x = example_input(size, batch)
        with _grad_mode(mode):
            ep = torch.export.export(wrapper, (x,))
        return ep, rule
    L, (rh, rw) = rule.period, rule.remainder
    kh = torch.export.Dim('h_periods', min=0, max=(rule.maximum[0] - rh) // L)
    kw = torch.export.Dim('w_periods', min=0, max=(rule.maximum[1] - rw) // L)
    trace = tuple(L * max(2, (s - r) // L) + r for s, r in zip(size, rule.remainder))
    x = example_input(trace, batch)
    with _grad_mode(mode), _size_oblivious():
        ep = torch.export.export(wrapper, (x,), dynamic_shapes={'x': {2: L * kh + rh,
                                                                     3: L * kw + rw}})
    rule = dataclasses.replace(rule, minimum=_program_minimum(ep, rule))
    if not rule.accepts(*size):
        raise ExportError(
            f'a dynamic export at {size[0]}x{size[1]} would not accept that size itself: '
            f'{rule.describe()}. Export at one of those sizes (at k = 0 or 1 some stage has no '
            'whole window or a single one, another layout), or without --dynamic.')
    return ep, rule


def _program_minimum(ep: torch.export.ExportedProgram, rule: SizeRule) -> Tuple[int, int]:
    """The smallest height and width the exported program accepts (from its range
    constraints), within the rule's residue classes."""
    name = ep.graph_signature.user_inputs[0]
    placeholder = next(n for n in ep.graph.nodes if n.op == 'placeholder' and n.name == name)
    shape = placeholder.meta['val'].shape
    out = []
    for side, r in zip((shape[2], shape[3]), rule.remainder):
        lo = r
        if isinstance(side, torch.SymInt):
            expr = side.node.expr
            lo = max(int(expr.subs({s: ep.range_constraints[s].lower for s in expr.free_symbols
                                    if s in ep.range_constraints})), r)
        elif isinstance(side, int):
            lo = side
        out.append(lo)
    return tuple(out)


# --------------------------------------------------------------------------- ONNX

def onnxscript_available() -> bool:
    return importlib.util.find_spec('onnxscript') is not None


def resolve_exporter(exporter: str, dynamic: bool) -> str:
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter must be one of {EXPORTERS}, got '{exporter}'")
    if exporter == 'auto':
        exporter = 'dynamo' if dynamic else 'torchscript'
    if exporter == 'dynamo' and not onnxscript_available():
        raise ExportError(
            "the dynamo exporter (torch.export -> ONNX) needs the 'onnxscript' package, which "
            "is not installed: pip install onnxscript" + (
                '' if not dynamic else ' (a dynamic-size ONNX export needs it; the TorchScript '
                'exporter can only export at a fixed size)'))
    if exporter == 'torchscript' and dynamic:
        raise ExportError(
            'the TorchScript exporter (torch.onnx.export(..., dynamo=False)) cannot export '
            'PosMLP with dynamic sizes: its tracer records the window layout of the traced size '
            '(which windows are clipped, how many) as constants while keeping some size '
            'arithmetic dynamic, so the graph could run at another size and compute something '
            'else. Use the dynamo exporter (pip install onnxscript) or export at a fixed size.')
    return exporter


def _threshold_symbolic(g, x, threshold, value):
    """aten::threshold(x, t, v) = x where x > t else v; torch has a symbolic for t = 0 only."""
    return g.op('Where', g.op('Greater', x, g.op('CastLike', threshold, x)), x,
                g.op('CastLike', value, x))


@contextlib.contextmanager
def _torchscript_symbolics(opset: int):
    from torch.onnx import register_custom_op_symbolic, unregister_custom_op_symbolic
    register_custom_op_symbolic('aten::threshold', _threshold_symbolic, opset)
    try:
        yield
    finally:
        unregister_custom_op_symbolic('aten::threshold', opset)


@dataclasses.dataclass
class ExportReport:
    """What an export wrote and how it was checked."""
    path: str
    part: str
    exporter: str
    opset: int
    rule: SizeRule
    groups: List[int]
    output_names: List[str]
    checks: List[dict] = dataclasses.field(default_factory=list)   # one per size
    input_effect: float = 0.0    # smallest relative change of an output between two inputs
    file_bytes: int = 0
    nodes: int = 0
    export_s: float = 0.0

    @property
    def max_rel_diff(self) -> float:
        return max(c['max_rel_diff'] for c in self.checks)

    def format(self) -> str:
        import onnxruntime
        lines = [f'ONNX export of the {self.part}: {self.path}',
                 f'  exporter {self.exporter}, opset {self.opset}, {self.nodes} nodes, '
                 f'{self.file_bytes / 2 ** 20:.1f} MiB, {len(self.output_names)} outputs, '
                 f'exported in {self.export_s:.1f} s',
                 f'  input sizes: {self.rule.describe()}',
                 f'  check: onnxruntime {onnxruntime.__version__} (CPU) against PyTorch (eval, '
                 f'float32), max |onnx - torch| / max |torch| per output, tolerance '
                 f'{TOLERANCE:.0e}:']
        for c in self.checks:
            lines.append(f"    {'x'.join(str(s) for s in c['shape'])}: max relative difference "
                         f"{c['max_rel_diff']:.2e} (worst output {c['worst_output']})")
        if not self.checks:
            lines.append('    NOT CHECKED')
            return '\n'.join(lines)
        lines.append(f'  input dependence: a second random input changes every output by at '
                     f'least {self.input_effect:.2e} (relative; required > {MIN_INPUT_EFFECT:.0e}'
                     ') and matches PyTorch there too')
        lines.append('  OK')
        return '\n'.join(lines)


def export_onnx(model: nn.Module, out: str, part: str = 'backbone',
                size: Sequence[int] = (800, 1344), dynamic: bool = False,
                opset: Optional[int] = None, exporter: str = 'auto', batch: int = 1,
                verify: bool = True, log: Optional[Callable[[str], None]] = None) -> ExportReport:
    """Export the backbone or detector (``part``) of ``model`` (put in eval mode) to the ONNX
    file ``out`` and check it with onnxruntime (:func:`verify_onnx`); see the module
    docstring. On a failed check the file is removed and VerificationError raised."""
    log = log or (lambda s: None)
    size = _check_size(size)
    opset = DEFAULT_OPSET if opset is None else int(opset)
    exporter = resolve_exporter(exporter, dynamic)
    target = export_target(model, part).eval()
    x = example_input(size, batch)
    with torch.no_grad():
        _, groups = flatten_outputs(_forward_part(target, part, x))
    names = output_names(groups, part)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    start = time.perf_counter()
    if exporter == 'torchscript':
        rule = size_rule(target, size, False)
        log(f'exporting the {part} with the TorchScript exporter at {size[0]}x{size[1]} ...')
        with torch.no_grad(), _torchscript_symbolics(opset), warnings.catch_warnings():
            # TracerWarnings: the window layout is traced as constants, which is what a static
            # export wants (and why dynamic exports are refused)
            warnings.simplefilter('ignore', torch.jit.TracerWarning)
            # the gather of a clipped window's tokens (window_tokens: never negative indices)
            warnings.filterwarnings('ignore', 'Exporting aten::index operator of advanced')
            # the wrapper in eval mode: the exporter restores the wrapper's mode afterwards,
            # and a wrapper left in training mode would put the model back in training mode
            torch.onnx.export(ExportWrapper(target, part).eval(), (x,), out, dynamo=False,
                              opset_version=opset, input_names=[INPUT_NAME],
                              output_names=names, do_constant_folding=True)
    else:
        log(f'exporting the {part} with torch.export{" (dynamic H, W)" if dynamic else ""} '
            f'at {size[0]}x{size[1]} ...')
        ep, rule = export_program(target, size, part, dynamic, batch, mode='no_grad')
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', UserWarning)
            program = torch.onnx.export(ep, (x,), dynamo=True, opset_version=opset,
                                        input_names=[INPUT_NAME], output_names=names,
                                        optimize=True, verbose=False)
        program.save(out, external_data=False)
    export_s = time.perf_counter() - start
    _write_metadata(out, dict(part=part, rule=rule.to_dict(), groups=groups,
                              exporter=exporter))
    import onnx
    proto = onnx.load(out, load_external_data=False)
    report = ExportReport(
        path=out, part=part, exporter=exporter,
        opset=max(o.version for o in proto.opset_import if o.domain in ('', 'ai.onnx')),
        rule=rule, groups=groups, output_names=names, file_bytes=os.path.getsize(out),
        nodes=len(proto.graph.node) + sum(len(f.node) for f in proto.functions),
        export_s=export_s)
    del proto
    if verify:
        try:
            verify_onnx(out, target, part, rule, batch=batch, report=report)
        except VerificationError:
            os.remove(out)
            raise
    return report


def _write_metadata(path: str, meta: dict) -> None:
    import onnx
    proto = onnx.load(path)
    for p in list(proto.metadata_props):
        if p.key == METADATA_KEY:
            proto.metadata_props.remove(p)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.save(proto, path)


def read_metadata(session_or_path) -> dict:
    """The mmdet_posmlp metadata of an exported model (part, size rule, output groups)."""
    if isinstance(session_or_path, str):
        import onnx
        props = {p.key: p.value for p in onnx.load(session_or_path,
                                                   load_external_data=False).metadata_props}
    else:
        props = session_or_path.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise ExportError(f'not a model exported by mmdet_posmlp.deployment (no '
                          f"'{METADATA_KEY}' metadata)")
    meta = json.loads(props[METADATA_KEY])
    meta['rule'] = SizeRule.from_dict(meta['rule'])
    return meta


def onnx_session(path: str, threads: Optional[int] = None):
    """An onnxruntime CPU session using ``threads`` threads (default: torch's)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def run_onnx(session, inputs: torch.Tensor, check_size: bool = True) -> List[torch.Tensor]:
    """Run an exported model on a (B, C, H, W) batch; the flat outputs as tensors. The size is
    checked against the rule the model was exported for."""
    if check_size:
        read_metadata(session)['rule'].check(*inputs.shape[-2:])
    arrays = session.run(None, {session.get_inputs()[0].name:
                                inputs.detach().cpu().float().contiguous().numpy()})
    return [torch.from_numpy(a) for a in arrays]


def _max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = b.abs().max().item()
    diff = (a.double() - b.double()).abs().max().item()
    return diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf)


def verify_onnx(path: str, target: nn.Module, part: str, rule: SizeRule, batch: int = 1,
                report: Optional[ExportReport] = None, session=None) -> ExportReport:
    """Check an exported model against ``target`` (see the module docstring); raises
    VerificationError with the figures when a check fails."""
    session = session or onnx_session(path)
    sizes = [tuple(rule.size)]
    if rule.dynamic:
        sizes.append(rule.next_size(*rule.size))
    report = report or ExportReport(path, part, '?', 0, rule, [], [])
    report.checks = []
    first = None
    for i, size in enumerate(sizes):
        x = example_input(size, batch, seed=i)
        got = run_onnx(session, x)
        want = reference_outputs(target, part, x)
        if len(got) != len(want):
            raise VerificationError(f'{path}: {len(got)} outputs, PyTorch gives {len(want)}')
        diffs = []
        for j, (a, b) in enumerate(zip(got, want)):
            if a.shape != b.shape:
                raise VerificationError(f'{path}: output {j} at {size}: shape {tuple(a.shape)}, '
                                        f'PyTorch {tuple(b.shape)}')
            if not torch.isfinite(a).all():
                raise VerificationError(f'{path}: output {j} at {size} is not finite')
            diffs.append(_max_rel_diff(a, b))
        worst = int(np.argmax(diffs))
        report.checks.append(dict(shape=(batch, x.shape[1]) + tuple(size),
                                  max_rel_diff=diffs[worst], worst_output=worst))
        if diffs[worst] > TOLERANCE:
            raise VerificationError(
                f'{path}: onnxruntime differs from PyTorch at {size[0]}x{size[1]}: max relative '
                f'difference {diffs[worst]:.2e} (output {worst}) > {TOLERANCE:.0e}')
        if first is None:
            first = (got, want)
    # a second input at the export size: every output must change, in PyTorch and in ONNX
    x2 = example_input(sizes[0], batch, seed=100)
    got2, want2 = run_onnx(session, x2), reference_outputs(target, part, x2)
    effects = [_max_rel_diff(a, b) for a, b in zip(got2, first[0])]
    torch_effects = [_max_rel_diff(a, b) for a, b in zip(want2, first[1])]
    matches = [_max_rel_diff(a, b) for a, b in zip(got2, want2)]
    report.input_effect = min(effects)
    if min(effects) <= MIN_INPUT_EFFECT:
        j = int(np.argmin(effects))
        raise VerificationError(
            f'{path}: the exported outputs do not depend on the input: a second random input '
            f'changes output {j} by {effects[j]:.1e} (relative; PyTorch: {torch_effects[j]:.1e}). '
            'A graph that ignores its input is refused.')
    if max(matches) > TOLERANCE:
        raise VerificationError(f'{path}: onnxruntime differs from PyTorch on a second input: '
                                f'{max(matches):.2e} > {TOLERANCE:.0e}')
    return report


# --------------------------------------------------------------------------- detectors

def predict_with_onnx(session, detector: nn.Module, inputs: torch.Tensor,
                      data_samples: list, rescale: bool = True) -> list:
    """Detections from an exported detector (``part='detector'``): onnxruntime runs backbone,
    neck and head on the preprocessed batch ``inputs`` (what ``detector.data_preprocessor``
    returns), and the head's ``predict_by_feat`` (mmdet, Python) decodes the boxes and runs
    NMS, as ``detector.predict(inputs, data_samples)`` does. Returns the data samples with
    ``pred_instances``."""
    meta = read_metadata(session)
    if meta['part'] != 'detector':
        raise ExportError(f"predict_with_onnx needs a model exported with part='detector', "
                          f"this one is '{meta['part']}'")
    outputs = group_outputs(run_onnx(session, inputs), meta['groups'])
    head = detector.bbox_head
    results = head.predict_by_feat(*outputs, batch_img_metas=[s.metainfo for s in data_samples],
                                   rescale=rescale)
    return detector.add_pred_to_datasample(data_samples, results)


# --------------------------------------------------------------------------- from a config

def export_from_config(config, checkpoint: Optional[str], out: str, part: str = 'backbone',
                       size: Sequence[int] = (800, 1344), dynamic: bool = False,
                       opset: Optional[int] = None, exporter: str = 'auto',
                       cfg_options: Optional[dict] = None,
                       log: Optional[Callable[[str], None]] = print) -> ExportReport:
    """What tools/deployment/export_onnx.py does: load the model (analysis.complexity.
    load_detector), then :func:`export_onnx`."""
    resolve_exporter(exporter, dynamic)  # refuse before building the model
    from .analysis.complexity import load_detector
    model = load_detector(config, checkpoint, cfg_options, log=log)
    return export_onnx(model, out, part=part, size=size, dynamic=dynamic, opset=opset,
                       exporter=exporter, log=log)


__all__ = ['TOLERANCE', 'MIN_INPUT_EFFECT', 'ExportError', 'VerificationError', 'SizeRule',
           'window_period', 'size_rule', 'ExportWrapper', 'export_target', 'export_program',
           'export_onnx', 'verify_onnx', 'onnx_session', 'run_onnx', 'read_metadata',
           'predict_with_onnx', 'export_from_config', 'ExportReport']
