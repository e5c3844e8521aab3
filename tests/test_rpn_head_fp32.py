"""Float32RPNHead (mmdet_posmlp/models/rpn_head.py): under bfloat16 the RPN's proposals are decoded
in float32 from float32 anchors, which mmcv 2.1's float32-only nms needs; it is mmdet's RPNHead
otherwise. And the Mask R-CNN configs train a step under CPU bfloat16 autocast with it."""
import os.path as osp

import pytest
import torch

pytest.importorskip('mmdet')

from mmdet.models.dense_heads import RPNHead  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mmengine.config import ConfigDict  # noqa: E402

import mmdet_posmlp  # noqa: E402,F401  (registers Float32RPNHead)
from mmdet_posmlp.detector_io import load_model_config  # noqa: E402
from mmdet_posmlp.models.rpn_head import Float32RPNHead  # noqa: E402
from conftest import REPO, detection_batch, small_heads_  # noqa: E402

CFG = dict(in_channels=8, feat_channels=8,
           anchor_generator=dict(type='AnchorGenerator', scales=[8], ratios=[0.5, 1.0, 2.0],
                                 strides=[4, 8, 16, 32, 64]),
           bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                           target_stds=[1.0, 1.0, 1.0, 1.0]))
PROPOSALS = ConfigDict(nms_pre=1000, max_per_img=300, nms=dict(type='nms', iou_threshold=0.7),
                       min_bbox_size=0)
# an image where anchors reach past 512 px, in bfloat16's 4 px steps
METAS = [dict(img_shape=(800, 1024), scale_factor=(1.0, 1.0))]


def _outputs(dtype):
    g = torch.Generator().manual_seed(0)
    sizes = [(800 // s, 1024 // s) for s in (4, 8, 16, 32, 64)]
    scores = [torch.randn(1, 3, h, w, generator=g).to(dtype) for h, w in sizes]
    deltas = [(0.2 * torch.randn(1, 12, h, w, generator=g)).to(dtype) for h, w in sizes]
    return scores, deltas


def _predict(head, scores, deltas):
    return head.predict_by_feat(scores, deltas, batch_img_metas=METAS, cfg=PROPOSALS)[0]


def test_bfloat16_proposals_are_decoded_in_float32():
    torch.manual_seed(0)
    mmdet_head = RPNHead(**CFG)
    ours = Float32RPNHead(**CFG)
    scores, deltas = _outputs(torch.bfloat16)
    with pytest.raises(RuntimeError, match='Float but found BFloat16'):  # mmcv's nms
        _predict(mmdet_head, scores, deltas)
    got = _predict(ours, scores, deltas)
    assert got.bboxes.dtype == torch.float32 and len(got) > 0
    # mmdet's head on the same bfloat16 outputs cast to float32: float32 anchors and decoding
    want = _predict(mmdet_head, [s.float() for s in scores], [d.float() for d in deltas])
    torch.testing.assert_close(got.bboxes, want.bboxes, rtol=0, atol=0)
    torch.testing.assert_close(got.scores, want.scores, rtol=0, atol=0)
    # corners that bfloat16 could not hold: the anchors were not rounded to its 4 px grid
    far = got.bboxes[got.bboxes > 512]
    assert (far != far.bfloat16().float()).any()


def test_float32_is_mmdets_head():
    scores, deltas = _outputs(torch.float32)
    got, want = _predict(Float32RPNHead(**CFG), scores, deltas), _predict(RPNHead(**CFG), scores,
                                                                          deltas)
    torch.testing.assert_close(got.bboxes, want.bboxes, rtol=0, atol=0)


def test_mask_rcnn_trains_a_step_under_cpu_bfloat16_autocast():
    cfg = load_model_config(osp.join(REPO, 'configs', 'mask_rcnn_posmlp_t_1x.py'))
    assert cfg.model.rpn_head.type == 'Float32RPNHead'
    assert cfg.model.rpn_head.anchor_generator.scales == [8]  # mmdet's settings kept
    cfg.model.backbone.init_cfg = None
    small_heads_(cfg.model)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    assert isinstance(model.rpn_head, Float32RPNHead)
    model.train()
    data = model.data_preprocessor(detection_batch(with_masks=True), True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        losses = model.loss(data['inputs'], data['data_samples'])
    total = sum(v for k, v in losses.items() if 'loss' in k and isinstance(v, torch.Tensor))
    assert torch.isfinite(total)
    total.backward()
    stem = model.backbone.model.patch_embed.projs[0].weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0  # back to the backbone's first layer
