"""The detectors on a CUDA device, with mmcv's compiled CUDA ops: what a GPU user runs first.

- mmcv's five compiled functions that RetinaNet and Mask R-CNN call (nms, RoIAlign forward and
  backward, the sigmoid focal loss forward and backward) against their CPU kernels;
- training steps of RetinaNet- and Mask R-CNN-PosMLP-T (the 1x configs) under mmengine's
  AmpOptimWrapper in float16 and bfloat16, as `tools/train.py --amp` builds it: losses finite,
  no step skipped (the loss scale never went down), every parameter finite and the backbone's
  weights moved;
- the deployment step: `backbone.fuse()` then prediction, against the plain detector.

Skipped without CUDA or without mmdet (benchmarks/gpu_check.sh runs it on the lent GPU)."""
import copy

import pytest
import torch

pytest.importorskip('mmdet')
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')

from benchmarks.benchmark_detectors import SAME_OPTIMIZER, synthetic_batch  # noqa: E402
from conftest import randomize_  # noqa: E402
from mmdet_posmlp.detector_io import load_detector  # noqa: E402

CONFIGS = {'retinanet': 'configs/retinanet_posmlp_t_1x.py',
           'mask_rcnn': 'configs/mask_rcnn_posmlp_t_1x.py'}
SIZE = (512, 672)  # clipped windows in every stage (maps 128x168, 64x84, 32x42, 16x21)


def _detector(name):
    torch.manual_seed(0)
    model = load_detector(CONFIGS[name], cfg_options={'model.backbone.init_cfg': None})
    model.init_weights()
    return model.cuda()


def test_mmcv_cuda_ops_match_their_cpu_kernels():
    from mmcv.ops import nms, roi_align, sigmoid_focal_loss
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 500
    boxes = torch.cat([xy, xy + torch.rand(300, 2, generator=g) * 100 + 1], 1)
    scores = torch.rand(300, generator=g)
    keep_cpu = nms(boxes, scores, 0.5)[1]
    keep_cuda = nms(boxes.cuda(), scores.cuda(), 0.5)[1]
    assert keep_cuda.cpu().tolist() == keep_cpu.tolist()
    feats = torch.randn(2, 16, 40, 50, generator=g)
    rois = torch.cat([torch.randint(0, 2, (30, 1), generator=g).float(), boxes[:30] / 12], 1)
    outs = []
    for device in ('cpu', 'cuda'):
        x = feats.to(device).requires_grad_()
        y = roi_align(x, rois.to(device), (7, 7), 1.0, 0, 'avg', True)
        y.square().sum().backward()
        outs.append((y.detach().cpu(), x.grad.cpu()))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-4)
    # the focal loss has no CPU kernel in mmcv: against mmdet's PyTorch formula, in float64
    from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss
    logits = torch.randn(500, 80, generator=g)
    labels = torch.randint(0, 81, (500,), generator=g)  # 80: background
    grads = []
    for device, dtype in (('cuda', torch.float32), ('cpu', torch.float64)):
        x = logits.to(device, dtype).requires_grad_()
        if device == 'cuda':
            loss = sigmoid_focal_loss(x, labels.cuda(), 2.0, 0.25, None, 'sum')
        else:
            one_hot = torch.nn.functional.one_hot(labels, 81)[:, :80].to(dtype)
            loss = py_sigmoid_focal_loss(x, one_hot, None, 2.0, 0.25, 'sum')
        loss.backward()
        grads.append((loss.detach().cpu().double(), x.grad.cpu().double()))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
@pytest.mark.parametrize('name', list(CONFIGS))
def test_amp_training_steps(name, dtype):
    from mmengine.optim import build_optim_wrapper
    from mmdet_posmlp.engine.amp import amp_optim_wrapper
    model = _detector(name).train()
    wrapper_cfg = dict(amp_optim_wrapper(dict(model.cfg.optim_wrapper,
                                              optimizer=dict(SAME_OPTIMIZER))), dtype=dtype)
    wrapper = build_optim_wrapper(model, wrapper_cfg)
    assert type(wrapper).__name__ == 'AmpOptimWrapper'
    data = synthetic_batch(2, *SIZE, masks=name == 'mask_rcnn')
    before = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    scales = [float(wrapper.loss_scaler.get_scale())]
    for _ in range(4):
        log_vars = model.train_step(data, wrapper)
        assert all(torch.isfinite(torch.as_tensor(v)).all() for v in log_vars.values()), log_vars
        scales.append(float(wrapper.loss_scaler.get_scale()))
    assert scales == sorted(scales), f'a step was skipped (the loss scale went down): {scales}'
    assert all(torch.isfinite(p).all() for p in model.parameters())
    moved = [n for n, p in model.backbone.named_parameters() if not torch.equal(p, before[n])]
    assert len(moved) > 0.9 * len(before), f'{len(moved)} of {len(before)} backbone tensors moved'


@pytest.mark.parametrize('dtype', [None, torch.bfloat16], ids=['float32', 'bfloat16'])
@pytest.mark.parametrize('name', list(CONFIGS))
def test_fused_prediction_matches_plain(name, dtype):
    """The FPN's maps after backbone.fuse(), on non-trivial weights, against the plain detector's
    (float32 without TF32, and bfloat16 autocast), and prediction runs."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        plain = _detector(name).eval()
        randomize_(plain.backbone)
        fused = copy.deepcopy(plain)
        fused.backbone.fuse()
        data = synthetic_batch(1, *SIZE, masks=False)
        outputs = []
        with torch.no_grad(), torch.autocast('cuda', dtype=dtype or torch.float32,
                                             enabled=dtype is not None):
            for model in (plain, fused):
                # what fuse() changes: the backbone, hence the FPN's maps (the proposals of a
                # two-stage detector can swap places on near ties, so not its final outputs)
                feats = model.extract_feat(model.data_preprocessor(data, False)['inputs'])
                outputs.append(([f.float() for f in feats], model.test_step(data)[0]))
        rtol = 1e-4 if dtype is None else 5e-2
        for a, b in zip(*(o[0] for o in outputs)):
            err = ((a - b).norm() / b.norm().clamp_min(1e-12)).item()
            assert err < rtol, err
        assert outputs[0][1].pred_instances.bboxes.shape[1] == 4  # predictions ran
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
