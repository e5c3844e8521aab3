"""ONNX export of a backbone or single-stage detector, returned only once onnxruntime agrees.

Exporters: ``'dynamo'`` (``torch.export``, then ``torch.onnx.export(program, dynamo=True)``; needs
``onnxscript``; static or dynamic sizes), ``'torchscript'`` (``torch.onnx.export(...,
dynamo=False)``: static sizes only, :func:`resolve_exporter` says why), ``'auto'`` (dynamo for
dynamic sizes, else torchscript: faster, no onnxscript). The TorchScript tracer drops copies into
views: a model copying its input into a view would export a graph ignoring it, caught by the check's
second input. A file failing the check (``runtime.verify_onnx``) is removed.
"""
import importlib.util
import os
import time
import warnings
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn

from ..detector_io import dummy_images, load_detector
from .program import ExportWrapper, export_program, export_target, flatten_outputs, output_names
from .runtime import ExportReport, VerificationError, verify_onnx, write_metadata
from .sizes import ExportError, check_size, size_rule

DEFAULT_OPSET = 18
EXPORTERS = ('auto', 'dynamo', 'torchscript')
INPUT_NAME = 'input'


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
    """aten::threshold(x, t, v) = x where x > t else v, in the flushed softmax; torch has an ONNX
    symbolic for t = 0 only, so this one is registered for the export."""
    return g.op('Where', g.op('Greater', x, g.op('CastLike', threshold, x)), x,
                g.op('CastLike', value, x))


def _export_torchscript(target: nn.Module, part: str, x: torch.Tensor, out: str, opset: int,
                        names: Sequence[str]) -> None:
    torch.onnx.register_custom_op_symbolic('aten::threshold', _threshold_symbolic, opset)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # TracerWarnings: the window layout is traced as constants, what a static export wants
            warnings.simplefilter('ignore', torch.jit.TracerWarning)
            # the gather of a clipped window's tokens (window_tokens: never negative indices)
            warnings.filterwarnings('ignore', 'Exporting aten::index operator of advanced')
            # the wrapper in eval mode: the exporter restores the wrapper's mode afterwards, and
            # a wrapper left in training mode would put the model back in training mode
            torch.onnx.export(ExportWrapper(target, part).eval(), (x,), out, dynamo=False,
                              opset_version=opset, input_names=[INPUT_NAME],
                              output_names=list(names), do_constant_folding=True)
    finally:
        torch.onnx.unregister_custom_op_symbolic('aten::threshold', opset)


def export_onnx(model: nn.Module, out: str, part: str = 'backbone',
                size: Sequence[int] = (800, 1344), dynamic: bool = False,
                opset: Optional[int] = None, exporter: str = 'auto', batch: int = 1,
                verify: bool = True, log: Optional[Callable[[str], None]] = None) -> ExportReport:
    """Export ``model``'s ``part`` (put in eval mode) to the ONNX file ``out`` and check it
    (``runtime.verify_onnx``); a failed check removes the file and raises VerificationError."""
    import onnx
    log = log or (lambda s: None)
    size = check_size(size)
    opset = DEFAULT_OPSET if opset is None else int(opset)
    exporter = resolve_exporter(exporter, dynamic)
    target = export_target(model, part).eval()
    x = dummy_images(size, batch, normalised=True)
    with torch.no_grad():
        _, groups = flatten_outputs(ExportWrapper(target, part).model(x))
    names = output_names(groups, part)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    start = time.perf_counter()
    if exporter == 'torchscript':
        rule = size_rule(target, size, False)
        log(f'exporting the {part} with the TorchScript exporter at {size[0]}x{size[1]} ...')
        _export_torchscript(target, part, x, out, opset, names)
    else:
        log(f'exporting the {part} with torch.export{" (dynamic H, W)" if dynamic else ""} '
            f'at {size[0]}x{size[1]} ...')
        ep, rule = export_program(target, size, part, dynamic, batch, mode='no_grad')
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', UserWarning)
            program = torch.onnx.export(ep, (x,), dynamo=True, opset_version=opset, optimize=True,
                                        input_names=[INPUT_NAME], output_names=names, verbose=False)
        program.save(out, external_data=False)
    export_s = time.perf_counter() - start
    proto = onnx.load(out)
    write_metadata(proto, dict(part=part, rule=rule.to_dict(), groups=groups, exporter=exporter))
    onnx.save(proto, out)
    report = ExportReport(
        path=out, part=part, exporter=exporter, rule=rule, groups=groups, output_names=names,
        opset=max(o.version for o in proto.opset_import if o.domain in ('', 'ai.onnx')),
        nodes=len(proto.graph.node) + sum(len(f.node) for f in proto.functions),
        file_bytes=os.path.getsize(out), export_s=export_s)
    del proto
    if verify:
        try:
            verify_onnx(out, target, part, rule, batch=batch, report=report)
        except VerificationError:
            os.remove(out)
            raise
    return report


def export_from_config(config, checkpoint: Optional[str], out: str, part: str = 'backbone',
                       size: Sequence[int] = (800, 1344), dynamic: bool = False,
                       opset: Optional[int] = None, exporter: str = 'auto',
                       cfg_options: Optional[dict] = None,
                       log: Optional[Callable[[str], None]] = print) -> ExportReport:
    """What tools/deployment/export_onnx.py does: ``load_detector``, then :func:`export_onnx`."""
    resolve_exporter(exporter, dynamic)
    model = load_detector(config, checkpoint, cfg_options, log=log)
    return export_onnx(model, out, part=part, size=size, dynamic=dynamic, opset=opset,
                       exporter=exporter, log=log)
