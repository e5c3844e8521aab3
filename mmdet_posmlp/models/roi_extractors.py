"""``Float32RoIExtractor`` (mmdet's MODELS): ``SingleRoIExtractor``; bfloat16 RoIAlign in float32.

Why: mmcv 2.1's RoIAlign (roi_align_cuda.cu, roi_align.cpp) is dispatched for float32, float64 and
float16 only (``AT_DISPATCH_FLOATING_TYPES_AND_HALF``), on GPU and CPU; a plain autograd Function,
it is neither cast nor known by autocast. Under ``--amp`` with bfloat16 (GPU or CPU) the FPN's maps
are bfloat16; a Mask R-CNN stops at its first RoI: "expected scalar type Float but found BFloat16".
mmdet also casts the RoIs to the features' dtype: bfloat16 box corners (8-bit mantissa) are off by
up to 4 pixels at x = 1000.

What it changes: bfloat16 maps are cast to float32 for the RoIAlign (the RoIs stay float32), with
autocast off inside; the RoI features come out float32 and the heads' first layers cast them back
under autocast. float16 and float32 go through mmdet's code as they are.
"""
from typing import Optional, Tuple

import torch
from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
from mmdet.registry import MODELS

from .losses import autocast_disabled

__all__ = ['Float32RoIExtractor']


@MODELS.register_module()
class Float32RoIExtractor(SingleRoIExtractor):
    """A drop-in for ``type='SingleRoIExtractor'`` (same arguments)."""

    def forward(self, feats: Tuple[torch.Tensor], rois: torch.Tensor,
                roi_scale_factor: Optional[float] = None) -> torch.Tensor:
        if feats[0].dtype != torch.bfloat16:
            return super().forward(feats, rois, roi_scale_factor)
        with autocast_disabled(feats[0].device.type):
            return super().forward(tuple(f.float() for f in feats), rois.float(), roi_scale_factor)
