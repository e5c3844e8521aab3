"""Losses for the project's detectors, registered in mmdet's MODELS.

``Float32FocalLoss``: mmdet's ``FocalLoss``, computed in float32 whatever autocast does.

Why: on a GPU, mmdet's ``FocalLoss`` (sigmoid, class-index targets) runs mmcv's compiled
``sigmoid_focal_loss`` op, and mmcv 2.1's CUDA kernel is dispatched for float32, float64 and
float16 only (``AT_DISPATCH_FLOATING_TYPES_AND_HALF``; mmcv issue #3061). Under
``AmpOptimWrapper(dtype='bfloat16')`` the classification head's output is bfloat16, and a
RetinaNet stops at its first step with "... not implemented for 'BFloat16'". The op is a plain
autograd Function, which autocast neither casts nor knows about.

What it changes: ``pred`` in float16 or bfloat16 is cast to float32 (float32 and float64 are
left as they are) and the loss runs with autocast disabled, so every operation of the loss (the
CUDA op, or the pure-PyTorch path elsewhere) computes in float32; the gradient flows back
through the cast to the head in the head's own dtype. Everything else (arguments, reduction,
avg_factor, the choice of kernel) is mmdet's. Only the loss is float32: the backbone, neck and
head keep running in the autocast dtype. In float32 training it is mmdet's FocalLoss exactly.
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
    """mmdet's ``FocalLoss`` computed in float32 (see the module docstring for why).

    A drop-in for ``type='FocalLoss'``: same arguments (``use_sigmoid``, ``gamma``, ``alpha``,
    ``reduction``, ``loss_weight``, ``activated``), same result in float32 training.
    """

    def forward(self,
                pred: torch.Tensor,
                target: torch.Tensor,
                weight: Optional[torch.Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None) -> torch.Tensor:
        if pred.is_floating_point() and torch.finfo(pred.dtype).bits < 32:
            pred = pred.float()  # float64 is left as it is
        with autocast_disabled(pred.device.type):
            return super().forward(pred, target, weight=weight, avg_factor=avg_factor,
                                   reduction_override=reduction_override)
