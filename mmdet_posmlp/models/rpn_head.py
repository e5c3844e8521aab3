"""``Float32RPNHead`` (mmdet's MODELS): ``RPNHead`` whose proposals are decoded in float32.

Why: mmdet makes the RPN's anchors in the dtype of its scores (``grid_priors(...,
dtype=cls_scores[0].dtype)``), so under bfloat16 autocast the anchors, the decoded boxes and the
proposals' NMS input are bfloat16:

- on a CPU the boxes stay bfloat16 to the end, and mmcv 2.1's ``nms`` (``data_ptr<float>``, CPU
  and CUDA) stops a Mask R-CNN's first training step: "expected scalar type Float but found
  BFloat16";
- on a GPU, CUDA autocast computes ``exp`` in float32, so the boxes come out float32, but from
  bfloat16 anchors: an 8-bit mantissa puts corners between 512 and 1024 px on a 4 px grid.

What it changes: bfloat16 scores and box deltas are cast to float32 and the proposals are decoded
with autocast off, from float32 anchors; what comes out is float32, as mmdet's own float32 and
CUDA runs give. float16 and float32 go through mmdet's code as they are. The RPN's loss is
untouched (mmdet builds its anchors in float32).
"""
from typing import List, Optional

import torch
from mmdet.models.dense_heads import RPNHead
from mmdet.registry import MODELS

from .losses import autocast_disabled

__all__ = ['Float32RPNHead']


@MODELS.register_module()
class Float32RPNHead(RPNHead):
    """A drop-in for ``type='RPNHead'`` (same arguments)."""

    def predict_by_feat(self, cls_scores: List[torch.Tensor], bbox_preds: List[torch.Tensor],
                        score_factors: Optional[List[torch.Tensor]] = None, *args, **kwargs):
        if cls_scores[0].dtype != torch.bfloat16:
            return super().predict_by_feat(cls_scores, bbox_preds, score_factors, *args,
                                           **kwargs)
        with autocast_disabled(cls_scores[0].device.type):
            return super().predict_by_feat(
                [s.float() for s in cls_scores], [b.float() for b in bbox_preds],
                None if score_factors is None else [f.float() for f in score_factors],
                *args, **kwargs)
