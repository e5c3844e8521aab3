"""Float32FocalLoss (models/losses.py): RetinaNet's classification loss in float32 under any
autocast dtype, because mmcv 2.1's CUDA ``sigmoid_focal_loss`` has no bfloat16 kernel.

- bfloat16 predictions: the loss equals mmdet's FocalLoss on the same predictions in float32
  (every reduction), its gradient reaches the bfloat16 tensor in bfloat16 (the float32
  gradient rounded once); mmdet's FocalLoss itself computes in bfloat16 and differs;
- every operation of the loss runs in float32, also inside CPU bfloat16 autocast (recorded at
  dispatch);
- the project's RetinaNet configs use it with mmdet's other loss_cls settings unchanged, and a
  RetinaNet-PosMLP under bfloat16 autocast keeps its head in bfloat16 and its classification
  loss in float32;
- on CUDA (skipped without): under bfloat16 autocast mmdet's FocalLoss stops in mmcv's op,
  Float32FocalLoss runs that op (``mmcv.ops.sigmoid_focal_loss``) in float32.
"""
import glob
import os.path as osp

import pytest
import torch

from conftest import REPO, OpRecorder

pytestmark = pytest.mark.filterwarnings('ignore:pkg_resources is deprecated:UserWarning')

CONFIGS = osp.join(REPO, 'configs')
NUM_CLASSES = 80


@pytest.fixture(scope='module', autouse=True)
def mmdet_scope():
    import mmdet_posmlp  # noqa: F401
    import mmdet_posmlp.models.losses  # noqa: F401  (registers Float32FocalLoss)
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')


def losses(**kwargs):
    from mmdet.models.losses import FocalLoss
    from mmdet_posmlp.models.losses import Float32FocalLoss
    args = dict(use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0, **kwargs)
    return Float32FocalLoss(**args), FocalLoss(**args)


def inputs(n=300, device='cpu', seed=0):
    """Logits as a head gives them (spread, mostly negative), labels with background, weights."""
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(n, NUM_CLASSES, generator=g) * 3 - 2
    target = torch.randint(0, NUM_CLASSES + 1, (n,), generator=g)  # NUM_CLASSES: background
    weight = torch.rand(n, generator=g)
    return pred.to(device), target.to(device), weight.to(device)


def _float_dtypes(func, out):
    return [(str(func), t.dtype) for t in (out if isinstance(out, (tuple, list)) else (out,))
            if isinstance(t, torch.Tensor) and t.is_floating_point()]


def DtypeRecorder():  # noqa: N802
    """The dtype of every floating tensor each aten op returns, as it ran (below autocast)."""
    return OpRecorder(_float_dtypes)


REDUCTIONS = [dict(), dict(avg_factor=37.0), dict(reduction_override='sum'),
              dict(reduction_override='none')]


@pytest.mark.parametrize('call', REDUCTIONS, ids=['mean', 'avg_factor', 'sum', 'none'])
def test_bf16_predictions_give_the_float32_loss(call):
    ours, mmdet_loss = losses()
    pred, target, weight = inputs()
    pred16 = pred.bfloat16().requires_grad_()
    pred32 = pred16.detach().float().requires_grad_()  # the same values, in float32

    loss = ours(pred16, target, weight, **call)
    want = mmdet_loss(pred32, target, weight, **call)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, want, rtol=1e-6, atol=0)
    grad = torch.randn(loss.shape) if loss.dim() else torch.tensor(1.0)
    loss.backward(grad)
    want.backward(grad)
    assert pred16.grad.dtype == torch.bfloat16
    assert torch.equal(pred16.grad, pred32.grad.bfloat16())  # float32 gradient, rounded once

    # what the class fixes: mmdet's own FocalLoss computes in the predictions' dtype (up to
    # the float32 weights) and is off by bfloat16's rounding
    plain = mmdet_loss(pred16.detach(), target, weight, **call)
    assert not torch.allclose(plain.float(), want, rtol=1e-6, atol=0)


@pytest.mark.parametrize('autocast', [False, True], ids=['plain', 'cpu_autocast_bf16'])
def test_every_op_of_the_loss_runs_in_float32(autocast):
    ours, mmdet_loss = losses()
    pred, target, weight = inputs(n=64)
    head = torch.nn.Linear(NUM_CLASSES, NUM_CLASSES)
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
        logits = head(pred) if autocast else pred.bfloat16()
        assert logits.dtype == torch.bfloat16
        with DtypeRecorder() as ours_ops:
            loss = ours(logits, target, weight, avg_factor=20.0)
        with DtypeRecorder() as plain_ops:
            mmdet_loss(logits, target, weight, avg_factor=20.0)
    assert loss.dtype == torch.float32
    assert len(ours_ops.ops) > 10  # sigmoid, pow, BCE with logits, weighting, reduction...
    assert all(dtype == torch.float32 for _, dtype in ours_ops.ops), ours_ops.ops
    # the recorder sees what mmdet's FocalLoss does: bfloat16 arithmetic
    assert any(dtype == torch.bfloat16 for _, dtype in plain_ops.ops)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_float32_and_float64_are_mmdets_loss(dtype):
    ours, mmdet_loss = losses()
    pred, target, weight = inputs()
    pred = pred.to(dtype)
    loss = ours(pred, target, weight, avg_factor=37.0)
    assert loss.dtype == dtype
    assert torch.equal(loss, mmdet_loss(pred, target, weight, avg_factor=37.0))


def retinanet_configs():
    return sorted(glob.glob(osp.join(CONFIGS, 'retinanet_*.py')) +
                  glob.glob(osp.join(CONFIGS, 'demo', 'retinanet_*.py')))


def test_retinanet_configs_use_it():
    from mmengine.config import Config
    from mmdet.models.losses import FocalLoss
    from mmdet.registry import MODELS
    from mmdet_posmlp.models.losses import Float32FocalLoss
    import mmdet
    base = Config.fromfile(osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', '_base_',
                                    'models', 'retinanet_r50_fpn.py')).model.bbox_head.loss_cls
    assert base.type == 'FocalLoss'
    names = retinanet_configs()
    assert len(names) == 22  # 12 COCO configs (5 families), 10 demos
    for name in names:
        loss_cls = Config.fromfile(name).model.bbox_head.loss_cls
        assert loss_cls == dict(base, type='Float32FocalLoss'), name
    loss = MODELS.build(loss_cls)
    assert type(loss) is Float32FocalLoss and isinstance(loss, FocalLoss)


def test_retinanet_under_bf16_autocast_keeps_head_bf16_and_loss_float32():
    """Only the loss is float32: the head's scores stay bfloat16 under autocast."""
    from mmengine.config import Config
    from mmengine.structures import InstanceData
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    cfg = Config.fromfile(osp.join(CONFIGS, 'retinanet_posmlp_t_1x.py'))
    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.drop_path_rate = 0.0
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).train()
    h, w = 96, 128
    sample = DetDataSample(metainfo=dict(img_shape=(h, w), pad_shape=(h, w),
                                         batch_input_shape=(h, w), scale_factor=(1.0, 1.0)))
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[10., 12., 70., 80.]]),
                                       labels=torch.tensor([3]))
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        scores, _ = model._forward(x)
        result = model.loss(x, [sample])
    assert all(s.dtype == torch.bfloat16 for s in scores)
    assert len(result['loss_cls']) == 5
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in result['loss_cls'])
    sum(result['loss_cls']).backward()
    assert model.bbox_head.retina_cls.weight.grad is not None


# ----------------------------------------------------------------------------- CUDA

def _grad_fn_names(t):
    seen, stack, names = set(), [t.grad_fn], []
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.append(type(fn).__name__)
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return names


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA (mmcv CUDA op)')
def test_cuda_bf16_autocast_runs_mmcv_op_in_float32():
    from mmcv.ops import sigmoid_focal_loss
    ours, mmdet_loss = losses()
    pred, target, weight = inputs(device='cuda')
    head = torch.nn.Linear(NUM_CLASSES, NUM_CLASSES).cuda()
    with torch.autocast('cuda', dtype=torch.bfloat16):
        logits = head(pred)
        assert logits.dtype == torch.bfloat16
        # without the cast: mmcv's CUDA kernel has no bfloat16 (mmcv issue #3061)
        with pytest.raises(RuntimeError, match='BFloat16'):
            mmdet_loss(logits, target, weight, avg_factor=50.0)
        loss = ours(logits, target, weight, avg_factor=50.0)
    assert loss.dtype == torch.float32
    assert 'SigmoidFocalLossFunctionBackward' in _grad_fn_names(loss)  # mmcv's op ran
    ref = logits.detach().float().requires_grad_()
    direct = (sigmoid_focal_loss(ref, target, 2.0, 0.25, None, 'none')
              * weight[:, None]).sum() / 50.0
    torch.testing.assert_close(loss, direct, rtol=1e-6, atol=0)
    logits.retain_grad()
    loss.backward()
    direct.backward()
    assert logits.grad.dtype == torch.bfloat16
    assert torch.equal(logits.grad, ref.grad.bfloat16())
