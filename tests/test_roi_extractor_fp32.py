"""Float32RoIExtractor (mmdet_posmlp/models/roi_extractors.py): mmcv 2.1's RoIAlign has no
bfloat16 kernel (CPU or CUDA); under bfloat16 the extractor runs it in float32 with float32
RoIs, and is mmdet's SingleRoIExtractor otherwise."""
import os.path as osp

import pytest
import torch

pytest.importorskip('mmdet')

from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402

import mmdet_posmlp  # noqa: E402,F401  (registers Float32RoIExtractor)
from mmdet_posmlp.detector_io import load_model_config  # noqa: E402
from mmdet_posmlp.models.roi_extractors import Float32RoIExtractor  # noqa: E402
from conftest import REPO  # noqa: E402

CFG = dict(roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0), out_channels=8,
           featmap_strides=[4, 8, 16, 32])


def _inputs():
    g = torch.Generator().manual_seed(0)
    feats = tuple(torch.randn(2, 8, 256 // s, 320 // s, generator=g) for s in (4, 8, 16, 32))
    xy = torch.rand(20, 2, generator=g) * 200
    wh = torch.rand(20, 2, generator=g) * 180 + 8
    rois = torch.cat([torch.randint(0, 2, (20, 1), generator=g).float(), xy, xy + wh], 1)
    return feats, rois


def test_bfloat16_features_run_roi_align_in_float32():
    feats, rois = _inputs()
    mmdet_extractor, ours = SingleRoIExtractor(**CFG), Float32RoIExtractor(**CFG)
    bf16 = tuple(f.bfloat16() for f in feats)
    with pytest.raises(RuntimeError):  # mmcv's RoIAlign: no bfloat16 kernel
        mmdet_extractor(bf16, rois)
    got = ours(bf16, rois)
    assert got.dtype == torch.float32
    # float32 RoIAlign of the bfloat16 maps with float32 RoIs: mmdet's on the same maps in float32
    torch.testing.assert_close(got, mmdet_extractor(tuple(f.float() for f in bf16), rois))
    # gradients reach the bfloat16 maps
    leaves = tuple(f.clone().requires_grad_() for f in bf16)
    ours(leaves, rois).sum().backward()
    assert all(f.grad is not None and f.grad.dtype == torch.bfloat16 for f in leaves)
    assert leaves[0].grad.abs().sum() > 0


def test_float32_and_float16_are_mmdets_extractor():
    feats, rois = _inputs()
    torch.testing.assert_close(Float32RoIExtractor(**CFG)(feats, rois),
                               SingleRoIExtractor(**CFG)(feats, rois), rtol=0, atol=0)


def test_mask_rcnn_configs_use_it():
    cfg = load_model_config(osp.join(REPO, 'configs', 'mask_rcnn_posmlp_t_1x.py'))
    assert cfg.model.roi_head.bbox_roi_extractor.type == 'Float32RoIExtractor'
    assert cfg.model.roi_head.mask_roi_extractor.type == 'Float32RoIExtractor'
    assert cfg.model.roi_head.bbox_roi_extractor.roi_layer.output_size == 7  # mmdet's settings kept
    assert isinstance(MODELS.build(cfg.model.roi_head.mask_roi_extractor), Float32RoIExtractor)
