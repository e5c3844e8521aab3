"""Export of PosMLP backbones and single-stage detectors, checked: ONNX (onnxruntime) and
torch.export. :mod:`.sizes`: the input sizes an export accepts; :mod:`.program`: what is exported,
and ``torch.export``; :mod:`.onnx_export`: the ONNX exporters (:func:`export_from_config` is
tools/deployment/export_onnx.py); :mod:`.runtime`: onnxruntime, the check, detections from ONNX.
"""
from .onnx_export import (DEFAULT_OPSET, EXPORTERS, INPUT_NAME, export_from_config, export_onnx,
                          onnxscript_available, resolve_exporter)
from .program import (PARTS, ExportWrapper, export_program, export_target, flatten_outputs,
                      group_outputs, output_names, reference_outputs)
from .runtime import (METADATA_KEY, MIN_INPUT_EFFECT, TOLERANCE, ExportReport, VerificationError,
                      onnx_session, predict_with_onnx, read_metadata, run_onnx, verify_onnx)
from .sizes import MAX_SIDE, ExportError, SizeRule, size_rule, window_period

__all__ = ['TOLERANCE', 'MIN_INPUT_EFFECT', 'ExportError', 'VerificationError', 'SizeRule',
           'window_period', 'size_rule', 'ExportWrapper', 'export_target', 'export_program',
           'export_onnx', 'verify_onnx', 'onnx_session', 'run_onnx', 'read_metadata',
           'predict_with_onnx', 'export_from_config', 'ExportReport']
