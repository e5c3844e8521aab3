"""Deployment step: `fuse_posmlp(model)` turns a trained PosMLP into an inference-only one.

The plain modules (posmlp.py) recompute, on every forward, what only depends on the weights:
the LayerNorm affine folded into the expansion, the grouped weight order, the GQPE mixing
matrices, the stem's BatchNorm. That is what training needs, and it keeps every forward
correct whatever happens to the weights (optimizer steps, EMA swaps, load_state_dict). Once
the weights are final, those tensors can be computed once:

- `FusedConvStem`: BatchNorm folded into the convolutions, GELU in place, channels-last on
  the CPU (oneDNN's native layout: half the stem's time at 800x1344).
- `FusedPosMLPBlock`: expansion weight with LayerNorm folded in and its bias as an extra
  column, output weight, mixing matrices for every window shape met, all precomputed; the
  block runs over chunks of whole windows, in place. On the CPU a chunk's hidden activations
  take about `chunk_bytes` (16 MB), so the normalised input, hidden activations and gate
  output stay in cache from one product to the next, and no tensor the size of the map is
  allocated (large CPU allocations are fresh pages from the OS, whose first touch costs as
  much as a high-resolution block's arithmetic). On other devices a region is one chunk.

The fused modules hold copies (buffers), not parameters, and compute without autograd: fuse
after loading the final weights, and fuse again if they change. `tools/test.py` and the
benchmarks fuse before evaluating; training and validation during training never do.
"""
import copy
from typing import Dict, List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .posmlp import LN_EPS, ConvStem, PosMLPBlock, Region, autocast_off

CHUNK_BYTES = 16 * 2 ** 20


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


class FusedPosMLPBlock(nn.Module):
    """PosMLPBlock with its weights and mixing matrices precomputed, run in place by chunks."""

    def __init__(self, block: PosMLPBlock, chunk_bytes: int = CHUNK_BYTES):
        super().__init__()
        self.dim, self.hidden = block.dim, block.hidden
        self.chunk_bytes = chunk_bytes
        with torch.no_grad():
            w_eb, w_s, b_s = (t.detach().clone() for t in block.grouped_weights())
            self.register_buffer('w_eb', w_eb)  # the bias rides a row of ones
            self.register_buffer('w_s', w_s)
            self.register_buffer('b_s', b_s)
        self.gate_unit = copy.deepcopy(block.gate_unit).requires_grad_(False)
        self._mixing: Dict[tuple, Tuple[torch.Tensor, torch.Tensor]] = {}

    def mixing(self, region: Region, dtype: torch.dtype):
        """The gate's (P, bias) for a region's windows; the weights are fixed, so each window
        shape and position is computed once (and again after a move to another device or
        dtype)."""
        key = (region.rows, region.cols, region.row0, region.col0, dtype, self.w_s.device)
        if key not in self._mixing:
            with torch.no_grad():
                self._mixing[key] = self.gate_unit.mixing(region, dtype)
        return self._mixing[key]

    def _apply(self, fn, *args, **kwargs):
        self._mixing = {}
        return super()._apply(fn, *args, **kwargs)

    @torch.no_grad()
    def forward(self, parts: List[torch.Tensor], regions: List[Region]) -> List[torch.Tensor]:
        """Adds each region's block output into `parts` (the stage's own tensors) in place.
        Computes in the weights' dtype (float32), autocast or not: the statistics here are
        products with a 1/C row, which half precision would round."""
        with autocast_off(self.w_s.device):
            return [self._forward_region(x.to(self.w_s.dtype), r) for x, r in zip(parts, regions)]

    def _forward_region(self, x: torch.Tensor, r: Region) -> torch.Tensor:
        C = self.dim
        P, bias = self.mixing(r, x.dtype)
        groups, n = P.shape[0], P.shape[-1]
        mean_row = x.new_full((1, C), 1.0 / C)
        step = x.shape[1]
        if x.is_cpu:
            step = n * max(1, self.chunk_bytes // (self.hidden * x.element_size() * n))
        for start in range(0, x.shape[1], step):
            xc = x[:, start:start + step]
            # LayerNorm statistics per token (column) by products with a 1/C row: several
            # times faster than a reduction across the rows of a channel-major matrix
            xn = x.new_empty(C + 1, xc.shape[1])
            d = torch.sub(xc, mean_row @ xc, out=xn[:C])
            d.mul_(torch.rsqrt(mean_row @ (d * d) + LN_EPS))
            xn[C] = 1.0
            h = torch.mm(self.w_eb, xn)
            torch.ops.aten.gelu_(h)
            u, v = h.chunk(2)
            y = torch.baddbmm(bias.view(1, 1, n), u.view(groups, -1, n), P.transpose(1, 2))
            xc.addmm_(self.w_s, y.view(v.shape).mul_(v)).add_(self.b_s)
        return x


def fuse_posmlp(model: nn.Module, chunk_bytes: int = CHUNK_BYTES) -> nn.Module:
    """Replace, in place, every ConvStem and PosMLPBlock inside `model` by its fused,
    inference-only form (see the module docstring); returns `model`, in eval mode."""
    model.eval()
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, ConvStem):
                setattr(module, child_name, FusedConvStem(child))
            elif isinstance(child, PosMLPBlock):
                setattr(module, child_name, FusedPosMLPBlock(child, chunk_bytes))
    return model
