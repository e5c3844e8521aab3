"""CycleMLP: A MLP-like Architecture for Dense Prediction (Chen et al., ICLR 2022, arXiv:2107.10224)

A four-stage MLP whose token mixer, Cycle FC, is a channel FC (a 1x1 convolution) that reads input
channel i at a position shifted by an offset cycling with i: neighbouring channels see neighbouring
pixels, a spatial receptive field at the cost of a channel FC, at any input size.

Architecture, top to bottom (``CycleMLPClassifier``); maps are (B, H, W, C) inside the stages::

    image (B, 3, H, W)
    patch_embed  CycleStem: Conv 7x7 / stride 4 / pad 2, then to (B, H, W, C)         stride 4
    network.0    stage 1: depth[0] x CycleBlock(dim[0])
    network.1    CycleDownsample: Conv 3x3 / stride 2 / pad 1                        stride 8
    network.2    stage 2: depth[1] x CycleBlock(dim[1])
    network.3    CycleDownsample                                                    stride 16
    network.4    stage 3: depth[2] x CycleBlock(dim[2])
    network.5    CycleDownsample                                                    stride 32
    network.6    stage 4: depth[3] x CycleBlock(dim[3])
    norm         LayerNorm -> mean over all tokens -> head (Linear)

The module tree (the above; in a block ``norm1``, ``attn.{mlp_c, sfc_h, sfc_w, reweight.fc1/fc2,
proj}``, ``norm2``, ``mlp.fc1/fc2``; each Cycle FC with ``weight`` (C, C, 1, 1), ``bias`` and the
``offset`` buffer (1, 2C, 1, 1)) mirrors the official implementation (ShoufaChen/CycleMLP,
``cycle_mlp.py``) name for name, so its checkpoints load with ``strict=True``.

CycleMixer(x), x of C channels:

* ``sfc_h`` = CycleFC kernel (1, 3): out[y, x, o] = b[o] + sum_i W[o, i] in[y, x + d_i, i];
* ``sfc_w`` = CycleFC kernel (3, 1): the same with the offset on y (the official names: the "h"
  branch has a 1 x 3 kernel, so it shifts along the *width*);
* ``mlp_c``: Linear(C, C, no bias);
* reweighting: a = softmax over the three branches of Mlp(C -> C/4 -> 3C) on the spatial mean of
  (h + w + c), output 3 i + k weighing branch k of channel i; out = proj(a_h h + a_w w + a_c c).

Cycle FC offsets (kernel size k along one axis): d_i = (i + k // 2) mod k - k // 2, i.e.
0, +1, -1, 0, ... for k = 3; positions outside the map read zero. The official code passes them to
torchvision's ``deform_conv2d``, whose bilinear sampling at integer offsets is an exact per-channel
shift with zero fill; no deformable convolution here (see ``CycleFC``, ``CycleMixer.branches``).

Any input size: the stem needs H, W >= 3 (7 x 7 kernel, padding 2); later maps, even 1 x 1, work.

Variants b1-b5: ``ARCH_SETTINGS``; official parameters, FLOPs and top-1 in ``cycle_mlp_b*``.

This module imports only torch and timm; its MMDetection backbone, ``CycleMLP``, is in backbones.py.
"""
from typing import Dict, List, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, to_2tuple
from timm.models import generate_default_cfgs, register_model

from . import common
from .common import checkpoint_filter_fn  # noqa: F401  (the official names are the model's)

__all__ = ['CycleMLPClassifier', 'CycleMixer', 'CycleFC', 'CycleBlock', 'CycleStem',
           'CycleDownsample', 'cycle_offset', 'cycle_offsets', 'checkpoint_filter_fn',
           'ARCH_SETTINGS']


def cycle_offset(channel: int, kernel: int) -> int:
    """Offset of input ``channel`` along the kernel's axis: (i + k // 2) mod k - k // 2."""
    return (channel + kernel // 2) % kernel - kernel // 2


def cycle_offsets(channels: int, kernel: int) -> List[int]:
    """``cycle_offset`` of channels 0 .. channels - 1."""
    return [cycle_offset(i, kernel) for i in range(channels)]


class CycleFC(nn.Module):
    """Cycle fully-connected layer (official ``CycleFC``) on (B, H, W, C) maps.

    ``kernel_size`` (1, k) offsets input channel i along the width, (k, 1) along the height, by
    ``cycle_offsets``; then a channel FC with ``weight`` (C_out, C_in, 1, 1) and ``bias``. The
    ``offset`` buffer holds the official deform_conv2d offsets, (dy_i, dx_i) at channels (2i, 2i+1),
    so official checkpoints load strictly; other offsets are refused: the cycle is fixed.

    Computed as: zero-pad the axis by (k // 2, k - 1 - k // 2); channels r, r + k, r + 2k, ... share
    r's offset, so one slice of the padded map per residue reads them; the k slices, concatenated,
    meet the weight (columns in the same residue order: ``grouped_weight``) in one GEMM."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, bias: bool = True):
        super().__init__()
        kernel_size = to_2tuple(kernel_size)
        if min(kernel_size) != 1:
            raise ValueError(f'CycleFC: kernel_size must be (1, k) or (k, 1) with k >= 1, got '
                             f'{kernel_size}')
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = kernel_size
        # NHWC: a (1, k) kernel moves along W (dim 2), a (k, 1) kernel along H (dim 1)
        self.axis = 2 if kernel_size[0] == 1 else 1
        self.k = max(kernel_size)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.register_buffer('offset', self.official_offset(in_channels, kernel_size))
        # input channels in residue order (0, k, 2k, ..., 1, k+1, ...): the order of the slices
        order = [i for r in range(self.k) for i in range(r, in_channels, self.k)]
        self.register_buffer('channel_order', torch.tensor(order, dtype=torch.long),
                             persistent=False)
        self.reset_parameters()

    @staticmethod
    def official_offset(channels: int, kernel_size: Tuple[int, int]) -> torch.Tensor:
        """The official buffer: (1, 2C, 1, 1), (dy, dx) of input channel i at (2i, 2i + 1)."""
        d = torch.tensor(cycle_offsets(channels, max(kernel_size)), dtype=torch.float32)
        offset = torch.zeros(channels, 2)
        offset[:, 1 if kernel_size[0] == 1 else 0] = d
        return offset.reshape(1, 2 * channels, 1, 1)

    def reset_parameters(self) -> None:
        # as nn.Conv2d / the official reset_parameters; CycleMLPClassifier re-draws both
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        if self.bias is not None:
            bound = 1 / self.in_channels ** 0.5
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}'
                + (', bias=False' if self.bias is None else ''))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        key = prefix + 'offset'
        if key in state_dict and state_dict[key].shape == self.offset.shape and \
                not torch.equal(state_dict[key].to(self.offset), self.offset):
            error_msgs.append(
                f'{key}: the checkpoint holds other offsets than the fixed cycle of a '
                f'{self.kernel_size} CycleFC with {self.in_channels} input channels; this '
                'implementation computes that cycle and cannot use other offsets')
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def pads(self) -> Tuple[int, int]:
        """Zeros needed before and after the axis: the most negative and positive offsets."""
        return self.k // 2, self.k - 1 - self.k // 2

    def shifted_groups(self, padded: torch.Tensor, pad_h: int, pad_w: int,
                       size: Tuple[int, int]) -> List[torch.Tensor]:
        """The k residue groups of input channels, each read at its offset, from a map padded
        by ``pad_h`` rows and ``pad_w`` columns before it (and enough after it)."""
        H, W = size
        out = []
        for r in range(self.k):
            d = cycle_offset(r, self.k)  # of every channel r + j k
            y0, x0 = (pad_h + d, pad_w) if self.axis == 1 else (pad_h, pad_w + d)
            out.append(padded[:, y0:y0 + H, x0:x0 + W, r::self.k])
        return out

    def grouped_weight(self) -> torch.Tensor:
        """(C_out, C_in) weight with its columns in the order of ``shifted_groups``."""
        return self.weight.flatten(1).index_select(1, self.channel_order)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, H, W, C_in) -> (B, H, W, C_out)."""
        lo, hi = self.pads()
        pad = (0, 0, lo, hi) if self.axis == 2 else (0, 0, 0, 0, lo, hi)
        pad_h, pad_w = (lo, 0) if self.axis == 1 else (0, lo)
        z = torch.cat(self.shifted_groups(F.pad(x, pad), pad_h, pad_w, x.shape[1:3]), dim=-1)
        return F.linear(z, self.grouped_weight(), self.bias)


class CycleMixer(nn.Module):
    """The CycleMLP token mixer (official ``CycleMLP``, the block's ``attn``; see the module
    docstring); (B, H, W, C) in and out."""

    def __init__(self, dim: int, qkv_bias: bool = False, proj_drop: float = 0.):
        super().__init__()
        self.dim = dim
        self.mlp_c = nn.Linear(dim, dim, bias=qkv_bias)
        self.sfc_h = CycleFC(dim, dim, (1, 3))
        self.sfc_w = CycleFC(dim, dim, (3, 1))
        # output 3 i + k weighs branch k of channel i (the official reshape(B, C, 3))
        self.reweight = Mlp(dim, dim // 4, dim * 3, act_layer=nn.GELU)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def branches(self, x: torch.Tensor) -> torch.Tensor:
        """(3, B, H, W, C): sfc_h(x), sfc_w(x) and mlp_c(x), from one zero pad of x, one
        concatenation of its shifted channel groups and x, and one batched GEMM."""
        B, H, W, C = x.shape
        lo_w, hi_w = self.sfc_h.pads()
        lo_h, hi_h = self.sfc_w.pads()
        padded = F.pad(x, (0, 0, lo_w, hi_w, lo_h, hi_h))
        z = torch.cat(self.sfc_h.shifted_groups(padded, lo_h, lo_w, (H, W))
                      + self.sfc_w.shifted_groups(padded, lo_h, lo_w, (H, W)) + [x], dim=-1)
        # (B H W, 3 C) read as the three (B H W, C) inputs, one per branch, without a copy
        z = z.reshape(B * H * W, 3, C).transpose(0, 1)
        weight = torch.cat([self.sfc_h.grouped_weight(), self.sfc_w.grouped_weight(),
                            self.mlp_c.weight], dim=1)  # (C_out, 3 C_in), in z's order
        bias_c = self.mlp_c.bias if self.mlp_c.bias is not None else self.sfc_h.bias.new_zeros(C)
        bias = torch.cat([self.sfc_h.bias, self.sfc_w.bias, bias_c]).reshape(3, 1, C)
        y = torch.baddbmm(bias, z, weight.reshape(C, 3, C).permute(1, 2, 0))
        return y.reshape(3, B, H, W, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        y = self.branches(x)
        # mean of (h + w + c) over the map = sum over branches of each branch's mean
        a = y.mean((2, 3)).sum(0)
        a = self.reweight(a).reshape(B, C, 3).permute(2, 0, 1).softmax(dim=0)
        x = (y * a.reshape(3, B, 1, 1, C)).sum(0)
        return self.proj_drop(self.proj(x))


class CycleBlock(nn.Module):
    """x + DropPath(CycleMixer(LN(x))), then x + DropPath(Mlp(LN(x))), LN over channels and Mlp =
    Linear (dim -> r dim), GELU, Linear; (B, H, W, C)."""

    def __init__(self, dim: int, mlp_ratio: float = 4., proj_drop: float = 0.,
                 drop_path: float = 0.):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CycleMixer(dim, proj_drop=proj_drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=proj_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class CycleStem(nn.Module):
    """Overlapping patch embedding (official ``patch_embed``): Conv 7x7 / 4 (pad 2), no norm;
    (B, C_in, H, W) -> (B, H / 4, W / 4, C)."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=7, stride=4, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch._assert(x.shape[-2] >= 3, 'CycleMLP needs an input of at least 3 x 3 pixels')
        torch._assert(x.shape[-1] >= 3, 'CycleMLP needs an input of at least 3 x 3 pixels')
        return self.proj(x).permute(0, 2, 3, 1)


class CycleDownsample(nn.Module):
    """Conv 3x3 / 2 (pad 1) between stages (official ``Downsample``); (B, H, W, C) in and out
    (the permutes are views: the convolution reads and writes the channels-last layout)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_dim, out_dim, kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class CycleMLPClassifier(common.StagedClassifier):
    """CycleMLP image classifier with timm's model API (see the module docstring) over NHWC maps;
    'NCHW' intermediates are channels-last views of them (no copy). ``global_pool``: 'avg' (the
    official head) or '' (a head per position); ``mlp_ratios``: per stage or one for all;
    ``proj_drop_rate``: dropout after the mixer and inside the channel MLP."""
    input_fmt = 'NHWC'

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, global_pool: str = 'avg',
                 embed_dims: Sequence[int] = (64, 128, 320, 512),
                 depths: Sequence[int] = (2, 2, 4, 2),
                 mlp_ratios: Union[float, Sequence[float]] = 4., drop_rate: float = 0.,
                 proj_drop_rate: float = 0., drop_path_rate: float = 0.):
        super().__init__()
        owner = type(self).__name__
        n = len(depths)
        embed_dims = common.per_stage(embed_dims, n, 'embed_dims', owner)
        mlp_ratios = common.per_stage(mlp_ratios, n, 'mlp_ratios', owner)
        self.num_features = self.head_hidden_size = embed_dims[-1]

        self.patch_embed = CycleStem(in_chans, embed_dims[0])
        dpr = common.drop_path_rates(depths, drop_path_rate)
        network = []
        self.feature_info = []
        for i in range(n):
            if i > 0:
                network.append(CycleDownsample(embed_dims[i - 1], embed_dims[i]))
            network.append(nn.Sequential(*[
                CycleBlock(embed_dims[i], mlp_ratio=mlp_ratios[i], proj_drop=proj_drop_rate,
                           drop_path=dpr[i][j])
                for j in range(depths[i])]))
            self.feature_info.append(dict(
                num_chs=embed_dims[i], reduction=4 * 2 ** i, module=f'network.{2 * i}'))
        self.network = nn.Sequential(*network)

        self.norm = nn.LayerNorm(self.num_features)
        self.head_drop = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes, global_pool)
        common.init_trunc_normal(self, layers=(nn.Linear, CycleFC))

    def forward_stage_container(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


# ---- timm registration ------------------------------------------------------------------------

def _cfg(url: str = '', **kwargs) -> Dict:
    return common.default_cfg(
        url=url, pool_size=(7, 7), license='mit', paper_ids='arXiv:2107.10224',
        paper_name='CycleMLP: A MLP-like Architecture for Dense Prediction',
        origin_url='https://github.com/ShoufaChen/CycleMLP', **kwargs)


_RELEASE = 'https://github.com/ShoufaChen/CycleMLP/releases/download/v0.1/'
# crop_pct as the official default_cfgs: 0.9 for B1-B3 ('cycle_S', 'cycle_M'), 0.875 for B4, B5
default_cfgs = generate_default_cfgs({
    'cycle_mlp_b1.in1k': _cfg(url=_RELEASE + 'CycleMLP_B1.pth'),
    'cycle_mlp_b2.in1k': _cfg(url=_RELEASE + 'CycleMLP_B2.pth'),
    'cycle_mlp_b3.in1k': _cfg(url=_RELEASE + 'CycleMLP_B3.pth'),
    'cycle_mlp_b4.in1k': _cfg(url=_RELEASE + 'CycleMLP_B4.pth', crop_pct=0.875),
    'cycle_mlp_b5.in1k': _cfg(url=_RELEASE + 'CycleMLP_B5.pth', crop_pct=0.875),
})

ARCH_SETTINGS = {
    'b1': dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 4, 2), mlp_ratios=4),
    'b2': dict(embed_dims=(64, 128, 320, 512), depths=(2, 3, 10, 3), mlp_ratios=4),
    'b3': dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 18, 3), mlp_ratios=(8, 8, 4, 4)),
    'b4': dict(embed_dims=(64, 128, 320, 512), depths=(3, 8, 27, 3), mlp_ratios=(8, 8, 4, 4)),
    'b5': dict(embed_dims=(96, 192, 384, 768), depths=(3, 4, 24, 3), mlp_ratios=4),
}


def _create(variant: str, pretrained: bool = False, **kwargs) -> CycleMLPClassifier:
    return common.build_classifier(CycleMLPClassifier, variant,
                                   ARCH_SETTINGS[variant[len('cycle_mlp_'):]], pretrained, **kwargs)


@register_model
def cycle_mlp_b1(pretrained: bool = False, **kwargs) -> CycleMLPClassifier:
    """CycleMLP-B1: 15,155,400 parameters, 2.1G FLOPs, 78.9% ImageNet top-1 (official)."""
    return _create('cycle_mlp_b1', pretrained, **kwargs)


@register_model
def cycle_mlp_b2(pretrained: bool = False, **kwargs) -> CycleMLPClassifier:
    """CycleMLP-B2: 26,802,504 parameters, 3.9G FLOPs, 81.6% ImageNet top-1 (official)."""
    return _create('cycle_mlp_b2', pretrained, **kwargs)


@register_model
def cycle_mlp_b3(pretrained: bool = False, **kwargs) -> CycleMLPClassifier:
    """CycleMLP-B3: 38,385,720 parameters, 6.9G FLOPs, 82.4% ImageNet top-1 (official)."""
    return _create('cycle_mlp_b3', pretrained, **kwargs)


@register_model
def cycle_mlp_b4(pretrained: bool = False, **kwargs) -> CycleMLPClassifier:
    """CycleMLP-B4: 51,796,552 parameters, 10.1G FLOPs, 83.0% ImageNet top-1 (official)."""
    return _create('cycle_mlp_b4', pretrained, **kwargs)


@register_model
def cycle_mlp_b5(pretrained: bool = False, **kwargs) -> CycleMLPClassifier:
    """CycleMLP-B5: 75,747,280 parameters, 12.3G FLOPs, 83.2% ImageNet top-1 (official)."""
    return _create('cycle_mlp_b5', pretrained, **kwargs)
