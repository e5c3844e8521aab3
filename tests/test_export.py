"""Export (mmdet_posmlp/deployment/, tools/deployment/export_onnx.py): ONNX files checked with
onnxruntime against PyTorch, torch.export with dynamic H, W under no_grad and inference_mode,
single-stage detector outputs through predict_by_feat, and the old failure modes (a graph whose
outputs ignore the input, TorchScript with dynamic sizes)."""
import copy
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn as nn

from mmdet_posmlp import deployment as D
from mmdet_posmlp.detector_io import load_detector
from mmdet_posmlp.models import PosMLP
from conftest import REPO, randomize_

# Small PosMLP. Period 64 = lcm(4x4, 8x4, 16x4, 32x2): at 160x224 (and 224x288, 288x224) the
# third and fourth stages (10x14 and 5x7 with windows 4 and 2) have clipped windows at the
# right and bottom edges and in the corner.
ARCH = dict(embed_dims=(16, 32, 64, 128), depths=(1, 1, 1, 1), windows=(4, 4, 4, 2),
            groups=(2, 4, 8, 8), mlp_ratios=(4, 4, 4, 2))
SIZE, NEXT, OTHER, WRONG = (160, 224), (224, 288), (288, 224), (192, 224)

needs_onnxscript = pytest.mark.skipif(
    not D.onnxscript_available(),
    reason='dynamic ONNX export uses torch.export -> ONNX, which needs onnxscript')


def random_weights_(backbone: nn.Module) -> nn.Module:
    """randomize_ (values away from the symmetric initial ones) with a bias noise small enough
    for the signal of convolutions at their initial scale (std 0.02: the stem, the downsampling
    of every stage) to reach the deepest outputs, and BatchNorm statistics of the activations
    of random images, as training leaves them. Otherwise the outputs hardly depend on the
    input, and the export check rightly refuses the graph. In eval mode."""
    randomize_(backbone, scale=0.1)
    for m in backbone.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # the plain average over what it sees
    backbone.train()
    with torch.no_grad():
        backbone(torch.randn(2, 3, *SIZE))
    return backbone.eval()


@pytest.fixture(scope='module')
def backbone():
    torch.manual_seed(0)
    return random_weights_(PosMLP(ARCH, out_indices=(1, 2, 3)))


def max_rel_diff(got, want) -> float:
    assert len(got) == len(want)
    return max(((a.double() - b.double()).abs().max() / b.double().abs().max()).item()
               for a, b in zip(got, want))


def eager(model, x):
    with torch.no_grad():
        return model(x)


def test_window_period_and_size_rule(backbone):
    assert D.window_period(backbone) == 64
    assert D.window_period(PosMLP('tiny')) == 224 == D.window_period(PosMLP('small', shift=True))
    rule = D.size_rule(backbone, SIZE, dynamic=True)
    assert (rule.period, rule.remainder) == (64, (32, 32))
    assert rule.accepts(*SIZE) and rule.accepts(*NEXT) and not rule.accepts(*WRONG)
    assert D.size_rule(backbone, SIZE, dynamic=False).accepts(*SIZE)
    assert not D.size_rule(backbone, SIZE, dynamic=False).accepts(*NEXT)


@needs_onnxscript
def test_backbone_dynamic_onnx_matches_pytorch_at_two_sizes(backbone, tmp_path):
    out = str(tmp_path / 'backbone.onnx')
    report = D.export_onnx(backbone, out, size=SIZE, dynamic=True)
    assert report.exporter == 'dynamo' and report.rule.dynamic
    assert [c['shape'][2:] for c in report.checks] == [SIZE, NEXT]
    assert report.max_rel_diff < D.TOLERANCE and report.input_effect > D.MIN_INPUT_EFFECT
    assert report.rule.minimum == (160, 160)  # 64k + 32, k >= 2
    # onnxruntime on its own, at the export size and another accepted size
    session = D.onnx_session(out)
    assert D.read_metadata(session)['rule'] == report.rule
    for size in (SIZE, OTHER):
        x = torch.randn(1, 3, *size)
        assert max_rel_diff(D.run_onnx(session, x), eager(backbone, x)) < D.TOLERANCE
    # another size: refused by run_onnx, and an error in onnxruntime, not other numbers
    x = torch.randn(1, 3, *WRONG)
    with pytest.raises(D.ExportError, match='not one this model was exported for'):
        D.run_onnx(session, x)
    with pytest.raises(Exception):
        session.run(None, {D.INPUT_NAME: x.numpy()})


@pytest.mark.parametrize('mode', ['no_grad', 'inference_mode'])
def test_torch_export_dynamic_height_width(backbone, mode):
    ep, rule = D.export_program(backbone, SIZE, dynamic=True, mode=mode)
    assert rule.minimum == (160, 160) and rule.maximum == (4064, 4064)
    symbolic = [n for n in ep.graph.nodes if n.op == 'placeholder'
                and n.name == ep.graph_signature.user_inputs[0]][0].meta['val'].shape[2:]
    assert all(isinstance(s, torch.SymInt) for s in symbolic)  # not specialised to SIZE
    program = ep.module()
    for size in (SIZE, NEXT, OTHER):
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            assert max_rel_diff(program(x), eager(backbone, x)) < 1e-6
    with pytest.raises(Exception):  # a size of another window layout: a guard, not numbers
        program(torch.randn(1, 3, *WRONG))


def test_torchscript_exporter_static_checked_dynamic_refused(backbone, tmp_path):
    """The TorchScript exporter (dynamo=False) once wrote a graph whose outputs did not
    depend on its input: now its static export matches and depends on the input, and it is
    refused for dynamic sizes."""
    out = str(tmp_path / 'ts.onnx')
    report = D.export_onnx(backbone, out, size=(96, 160), exporter='torchscript')
    assert report.exporter == 'torchscript' and not report.rule.dynamic
    assert report.max_rel_diff < D.TOLERANCE and report.input_effect > D.MIN_INPUT_EFFECT
    session = D.onnx_session(out)
    x1, x2 = torch.randn(1, 3, 96, 160), torch.randn(1, 3, 96, 160)
    o1, o2 = D.run_onnx(session, x1), D.run_onnx(session, x2)
    assert max_rel_diff(o1, eager(backbone, x1)) < D.TOLERANCE
    assert min(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(o1, o2)) > 0.01
    with pytest.raises(D.ExportError, match='TorchScript exporter .* cannot export PosMLP with '
                                            'dynamic sizes'):
        D.export_onnx(backbone, str(tmp_path / 'x.onnx'), size=(96, 160), dynamic=True,
                      exporter='torchscript')
    # the check catches a graph that computes something else: the file checked against
    # other weights
    other = copy.deepcopy(backbone)
    with torch.no_grad():
        other.model.levels[2].encoder[0].proj_c_s.weight.mul_(1.5)
    with pytest.raises(D.VerificationError, match='differs from PyTorch'):
        D.verify_onnx(out, other, 'backbone', report.rule)


def test_check_refuses_a_graph_that_ignores_its_input(tmp_path):
    class IgnoresInput(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(1, 4, 2, 2))

        def forward(self, x):
            return (self.w + 0 * x[:, :1, :2, :2],)

    out = tmp_path / 'constant.onnx'
    with pytest.raises(D.VerificationError, match='do not depend on the input'):
        D.export_onnx(IgnoresInput(), str(out), size=(32, 32), exporter='torchscript')
    assert not out.exists()


def test_fused_models_and_two_stage_detectors_are_refused(backbone):
    with pytest.raises(D.ExportError, match='fused'):
        D.export_target(copy.deepcopy(backbone).fuse(), 'backbone')
    stage_only = copy.deepcopy(backbone)
    stage_only.model.levels[1].fuse()  # a fused stage, the stem as trained
    with pytest.raises(D.ExportError, match=r'fused \(deployment\) modules \(model\.levels\.1, '):
        D.export_target(stage_only, 'backbone')
    model = load_detector(os.path.join(REPO, 'configs/mask_rcnn_posmlp_t_1x.py'),
                         cfg_options={'model.backbone.init_cfg': None})
    with pytest.raises(D.ExportError, match='single-stage'):
        D.export_target(model, 'detector')


def test_retinanet_onnx_with_predict_by_feat_gives_predict_detections(tmp_path):
    from mmdet.structures import DetDataSample
    torch.manual_seed(0)
    model = load_detector(os.path.join(REPO, 'configs/retinanet_posmlp_t_1x.py'),
                         cfg_options={'model.backbone.init_cfg': None})
    random_weights_(model.backbone)
    with torch.no_grad():  # scores spread over (0.05, 0.95): no near-ties at the top 100
        model.bbox_head.retina_cls.bias.fill_(-10.0)
    model.bbox_head.test_cfg.score_thr = 0.0
    out = str(tmp_path / 'retinanet.onnx')
    report = D.export_onnx(model, out, part='detector', size=(128, 160))
    assert report.groups == [5, 5] and report.max_rel_diff < D.TOLERANCE
    session = D.onnx_session(out)

    image = torch.randint(0, 256, (3, 118, 140), dtype=torch.uint8)
    sample = DetDataSample(metainfo=dict(img_id=0, img_shape=(118, 140), ori_shape=(236, 280),
                                         scale_factor=(0.5, 0.5)))
    data = model.data_preprocessor(dict(inputs=[image], data_samples=[sample]), False)
    assert data['inputs'].shape[-2:] == (128, 160)  # padded to 32
    with torch.no_grad():
        want = model.predict(data['inputs'], copy.deepcopy(data['data_samples']))[0].pred_instances
    got = D.predict_with_onnx(session, model, data['inputs'],
                              copy.deepcopy(data['data_samples']))[0].pred_instances
    assert len(got) == len(want) == 100
    assert torch.equal(got.labels, want.labels)
    assert (got.scores - want.scores).abs().max() < 1e-5
    assert (got.bboxes - want.bboxes).abs().max() < 1e-2  # pixels of the 236x280 original


def test_cli_end_to_end_with_checkpoint(tmp_path):
    config = tmp_path / 'small_retinanet.py'
    config.write_text(textwrap.dedent(f"""
        _base_ = {os.path.join(REPO, 'configs/retinanet_posmlp_t_1x.py')!r}
        model = dict(backbone=dict(arch=dict(_delete_=True, **{ARCH!r}), init_cfg=None),
                     neck=dict(in_channels=[32, 64, 128]))
    """))
    torch.manual_seed(1)
    model = load_detector(str(config))
    random_weights_(model.backbone)
    checkpoint = tmp_path / 'model.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoint)
    out = tmp_path / 'cli.onnx'
    tool = os.path.join(REPO, 'tools/deployment/export_onnx.py')
    r = subprocess.run([sys.executable, tool, str(config), str(checkpoint), '--out', str(out),
                        '--shape', '96', '160'], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'max relative difference' in r.stdout and r.stdout.rstrip().endswith('OK')
    assert 'input sizes: static, H x W = 96 x 160' in r.stdout
    # the file computes the checkpoint's backbone
    x = torch.randn(1, 3, 96, 160)
    got = D.run_onnx(D.onnx_session(str(out)), x)
    assert max_rel_diff(got, eager(model.backbone, x)) < D.TOLERANCE
    # a request the tool refuses: dynamic sizes with the TorchScript exporter
    r = subprocess.run([sys.executable, tool, str(config), '--out', str(tmp_path / 'd.onnx'),
                        '--dynamic', '--exporter', 'torchscript'],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode != 0 and 'cannot export PosMLP with dynamic sizes' in r.stderr
    assert not (tmp_path / 'd.onnx').exists()
