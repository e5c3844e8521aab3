"""Deployment step: `fuse_posmlp(model)` turns a trained PosMLP into an inference-only one.

The plain modules (posmlp.py) recompute, on every forward, what only depends on the weights:
the stem's BatchNorm and the mixing matrices of every block. That is what training needs, and
it keeps every forward correct whatever happens to the weights (optimizer steps, EMA swaps,
load_state_dict). Once the weights are final, those can be computed once:

- `FusedConvStem`: BatchNorm folded into the convolutions, GELU in place, channels-last on
  the CPU (oneDNN's native layout: half the stem's time at 800x1344).
- `PosMLPStage.fuse()`: the stage keeps the mixing matrices of its blocks per map size (the
  blocks' forward is unchanged: the same formula runs in training and deployment).

Fuse after loading the final weights, and fuse again if they change. `tools/test.py` and the
benchmarks fuse before evaluating; training and validation during training never do.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .posmlp import ConvStem, PosMLPStage


class FusedConvStem(nn.Module):
    """ConvStem with each BatchNorm's running statistics and affine folded into its conv."""

    def __init__(self, stem: ConvStem):
        super().__init__()
        self.strides = [p.stride for p in stem.projs]
        self.paddings = [p.padding for p in stem.projs]
        for i, (proj, norm) in enumerate(zip(stem.projs, stem.norms)):
            scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
            self.register_buffer(f'weight{i}', (proj.weight * scale[:, None, None, None]).detach())
            self.register_buffer(f'bias{i}', ((proj.bias - norm.running_mean) * scale
                                              + norm.bias).detach())

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cpu:
            x = x.contiguous(memory_format=torch.channels_last)
        last = len(self.strides) - 1
        for i, (stride, padding) in enumerate(zip(self.strides, self.paddings)):
            x = F.conv2d(x, getattr(self, f'weight{i}'), getattr(self, f'bias{i}'), stride, padding)
            if i < last:
                torch.ops.aten.gelu_(x)
        return x


def fuse_posmlp(model: nn.Module) -> nn.Module:
    """Replace, in place, every ConvStem inside `model` by its fused form and fuse every
    PosMLPStage (see the module docstring); returns `model`, in eval mode."""
    model.eval()
    for module in list(model.modules()):
        if isinstance(module, PosMLPStage):
            module.fuse()
        for child_name, child in list(module.named_children()):
            if isinstance(child, ConvStem):
                setattr(module, child_name, FusedConvStem(child))
    return model
