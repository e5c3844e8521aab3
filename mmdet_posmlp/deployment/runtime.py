"""An exported model in onnxruntime: sessions, its check against PyTorch, detections from it.

:func:`verify_onnx` runs onnxruntime against PyTorch (eval, float32, ``no_grad``) at the export size
and, when dynamic, at the next size the rule accepts: ``max|onnx - torch| / max|torch|`` must stay
below :data:`TOLERANCE` for every output. A second random input must change every output by more
than :data:`MIN_INPUT_EFFECT` and match there too, because a graph that ignores its input can match
closely at one input. The part, size rule and output groups are stored in the file's metadata (key
``mmdet_posmlp``), so that :func:`run_onnx` refuses sizes outside the rule and
:func:`predict_with_onnx` regroups the head's outputs from the file alone.
"""
import dataclasses
import json
import math
from typing import List, Optional

import numpy as np
import torch
import torch.nn as nn

from ..detector_io import dummy_images
from .program import group_outputs, reference_outputs
from .sizes import ExportError, SizeRule

TOLERANCE = 1e-4          # max |onnx - torch| / max |torch|, per output
MIN_INPUT_EFFECT = TOLERANCE  # a second input must change every output more than this (relative)
METADATA_KEY = 'mmdet_posmlp'


class VerificationError(ExportError):
    """The exported model does not compute what the PyTorch model computes."""


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
        lines += [f"    {'x'.join(str(s) for s in c['shape'])}: max relative difference "
                  f"{c['max_rel_diff']:.2e} (worst output {c['worst_output']})"
                  for c in self.checks]
        if not self.checks:
            return '\n'.join(lines + ['    NOT CHECKED'])
        return '\n'.join(lines + [
            f'  input dependence: a second random input changes every output by at least '
            f'{self.input_effect:.2e} (relative; required > {MIN_INPUT_EFFECT:.0e}) and matches '
            'PyTorch there too', '  OK'])


def write_metadata(proto, meta: dict) -> None:
    """Store ``meta`` as the mmdet_posmlp metadata of an ONNX ModelProto (replacing any)."""
    for p in [p for p in proto.metadata_props if p.key == METADATA_KEY]:
        proto.metadata_props.remove(p)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)


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
    """Run an exported model on a (B, C, H, W) batch, its size checked against the model's rule."""
    if check_size:
        read_metadata(session)['rule'].check(*inputs.shape[-2:])
    arrays = session.run(None, {session.get_inputs()[0].name:
                                inputs.detach().cpu().float().contiguous().numpy()})
    return [torch.from_numpy(a) for a in arrays]


def _max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = b.abs().max().item()
    diff = (a.double() - b.double()).abs().max().item()
    return diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf)


def _compare(path: str, got: List[torch.Tensor], want: List[torch.Tensor], where: str):
    """Per output, the relative difference of ``got`` (onnxruntime) to ``want`` (PyTorch)."""
    if len(got) != len(want):
        raise VerificationError(f'{path}: {len(got)} outputs, PyTorch gives {len(want)}')
    for j, (a, b) in enumerate(zip(got, want)):
        if a.shape != b.shape:
            raise VerificationError(f'{path}: output {j} at {where}: shape {tuple(a.shape)}, '
                                    f'PyTorch {tuple(b.shape)}')
        if not torch.isfinite(a).all():
            raise VerificationError(f'{path}: output {j} at {where} is not finite')
    return [_max_rel_diff(a, b) for a, b in zip(got, want)]


def verify_onnx(path: str, target: nn.Module, part: str, rule: SizeRule, batch: int = 1,
                report: Optional[ExportReport] = None, session=None) -> ExportReport:
    """Check an exported model against ``target`` (module docstring); raises VerificationError."""
    session = session or onnx_session(path)
    sizes = [tuple(rule.size)] + ([rule.next_size(*rule.size)] if rule.dynamic else [])
    report = report or ExportReport(path, part, '?', 0, rule, [], [])
    report.checks = []
    runs = []
    for seed, size in enumerate(sizes):
        x = dummy_images(size, batch, seed=seed, normalised=True)
        runs.append((run_onnx(session, x), reference_outputs(target, part, x)))
        diffs = _compare(path, *runs[-1], size)
        worst = int(np.argmax(diffs))
        report.checks.append(dict(shape=tuple(x.shape), max_rel_diff=diffs[worst],
                                  worst_output=worst))
        if diffs[worst] > TOLERANCE:
            raise VerificationError(
                f'{path}: onnxruntime differs from PyTorch at {size[0]}x{size[1]}: max relative '
                f'difference {diffs[worst]:.2e} (output {worst}) > {TOLERANCE:.0e}')
    x = dummy_images(sizes[0], batch, seed=100, normalised=True)
    got, want = run_onnx(session, x), reference_outputs(target, part, x)
    got0, want0 = runs[0]
    effects = [_max_rel_diff(a, b) for a, b in zip(got, got0)]
    report.input_effect = min(effects)
    if min(effects) <= MIN_INPUT_EFFECT:
        j = int(np.argmin(effects))
        raise VerificationError(
            f'{path}: the exported outputs do not depend on the input: a second random input '
            f'changes output {j} by {effects[j]:.1e} (relative; PyTorch: '
            f'{_max_rel_diff(want[j], want0[j]):.1e}). A graph that ignores its input is refused.')
    match = max(_compare(path, got, want, sizes[0]))
    if match > TOLERANCE:
        raise VerificationError(f'{path}: onnxruntime differs from PyTorch on a second input: '
                                f'{match:.2e} > {TOLERANCE:.0e}')
    return report


def predict_with_onnx(session, detector: nn.Module, inputs: torch.Tensor,
                      data_samples: list, rescale: bool = True) -> list:
    """Detections from an exported detector (``part='detector'``): onnxruntime runs backbone, neck
    and head on the preprocessed batch ``inputs`` (what ``detector.data_preprocessor`` returns), the
    head's ``predict_by_feat`` (mmdet, Python) decodes the boxes and runs NMS, as
    ``detector.predict`` does; returns the data samples with ``pred_instances``."""
    meta = read_metadata(session)
    if meta['part'] != 'detector':
        raise ExportError(f"predict_with_onnx needs a model exported with part='detector', "
                          f"this one is '{meta['part']}'")
    outputs = group_outputs(run_onnx(session, inputs), meta['groups'])
    results = detector.bbox_head.predict_by_feat(
        *outputs, batch_img_metas=[s.metainfo for s in data_samples], rescale=rescale)
    return detector.add_pred_to_datasample(data_samples, results)
