"""``Float32FocalLoss`` (mmdet's MODELS): mmdet's ``FocalLoss`` in float32 whatever autocast does.

Why: on a GPU, mmdet's ``FocalLoss`` (sigmoid, class-index targets) runs mmcv's compiled op
``sigmoid_focal_loss``, a plain autograd Function that autocast neither casts nor knows about;
mmcv 2.1 dispatches its CUDA kernel for float32, float64 and float16 only (mmcv issue #3061,
``AT_DISPATCH_FLOATING_TYPES_AND_HALF``). Under ``AmpOptimWrapper(dtype='bfloat16')`` the head's
output is bfloat16: a RetinaNet stops at its first step with "... not implemented for 'BFloat16'".

What it changes: ``pred`` in float16 or bfloat16 is cast to float32 and the loss runs with autocast
disabled, so all of the loss (the CUDA op, or the pure-PyTorch path elsewhere) computes in float32;
the gradient flows back through the cast to the head in its own dtype. Only the loss is float32;
everything else (reduction, avg_factor, the choice of kernel) is mmdet's.
"""
from contextlib import nullcontext
from typing import Optional

import torch
from mmdet.models.losses import FocalLoss
from mmdet.registry import MODELS

__all__ = ['Float32FocalLoss']


def autocast_disabled(device_type: str):
    """A context that turns autocast off for `device_type` (nothing where torch has none)."""
    available = getattr(torch.amp, 'is_autocast_available', None)
    if available is not None and not available(device_type):
        return nullcontext()
    try:
        return torch.autocast(device_type=device_type, enabled=False)
    except RuntimeError:  # an older torch without is_autocast_available, unknown device type
        return nullcontext()


@MODELS.register_module()
class Float32FocalLoss(FocalLoss):
    """mmdet's ``FocalLoss`` computed in float32 (see the module docstring for why): a drop-in for
    ``type='FocalLoss'`` with the same arguments, and the same result in float32 training."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor,
                weight: Optional[torch.Tensor] = None, avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None) -> torch.Tensor:
        if pred.is_floating_point() and torch.finfo(pred.dtype).bits < 32:
            pred = pred.float()  # float64 is left as it is
        with autocast_disabled(pred.device.type):
            return super().forward(pred, target, weight=weight, avg_factor=avg_factor,
                                   reduction_override=reduction_override)
