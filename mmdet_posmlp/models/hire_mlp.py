"""Hire-MLP: Vision MLP via Hierarchical Rearrangement (Guo et al., CVPR 2022, arXiv:2108.13341).

A four-stage MLP whose token mixer, `HireMLPMixer`, mixes space only by *rearrangement*: tokens are
moved into the channel axis, mixed by 1x1 convolutions (channel MLPs) and moved back.

Architecture, top to bottom (``HireMLPClassifier``)::

    image (B, 3, H, W)
    patch_embed  HireStem: Conv 7x7 / stride 4 / pad 2 -> BatchNorm -> ReLU          stride 4
    network.0    stage 1: depth[0] x HireBlock(dim[0], pixel 4)
    network.1    HireDownsample: Conv 3x3 / stride 2 / pad 1 -> BatchNorm -> ReLU   stride 8
    network.2    stage 2: depth[1] x HireBlock(dim[1], pixel 3)
    network.3    HireDownsample                                                    stride 16
    network.4    stage 3: depth[2] x HireBlock(dim[2], pixel 3)
    network.5    HireDownsample                                                    stride 32
    network.6    stage 4: depth[3] x HireBlock(dim[3], pixel 2)
    norm         BatchNorm -> global average pool -> head (Linear)

The module tree (the above; in a block ``norm1``/``attn``/``norm2``/``mlp``) mirrors the official
implementation (ggjy/Hire-Wave-MLP.pytorch, ``mlp_based/hire_mlp.py``) name for name, so its
checkpoints load with ``strict=True``; hence the one flat Sequential, not per-stage modules.

HireMLPMixer(x), x with C channels, region size ``pixel`` = p, shift ``step`` = s:

* height branch -- cross-region rearrangement: roll x by s rows (circularly) so that regions
  straddle the previous block's region borders; pad H circularly to a multiple of p; inner-region
  rearrangement: fold every p rows into channels (C*p channels, H/p rows); 1x1 conv C*p -> C/2 (no
  bias), BatchNorm, ReLU, 1x1 conv C/2 -> C*p (bias); unfold, crop to H, roll back by -s.
* width branch -- the same along W.
* channel branch -- 1x1 conv C -> C.
* split attention: a = softmax over the three branches of Mlp(C -> C/4 -> 3C) applied to the
  spatial mean of (h + w + c); out = proj(a_h * h + a_w * w + a_c * c), proj a 1x1 conv.

Within a stage the shift alternates as s_j = (j mod step_stride) * step_dilation for block j, so
blocks with s = 0 and s > 0 interleave, like Swin's shifted windows.

Any input size: the stem needs H, W >= 3 (7 x 7 kernel, padding 2); every later map, even 1 x 1,
works: ``circular_pad_end`` pads where the official circular ``F.pad`` refuses (1 row with p = 3
needs 2 rows), rolls wrap modulo the size. Training-mode BatchNorm needs batch > 1 for 1 x 1 maps.

Variants (published, README of the official repo: parameters / MACs at 224 / ImageNet top-1):
tiny 18M / 2.1G / 79.7, small 33M / 4.2G / 81.8-82.1, base 58M / 8.1G / 83.1-83.2, large 96M /
13.4-13.5G / 83.4-83.8; their dims and depths are ``ARCH_SETTINGS``.

This module imports only torch and timm; its MMDetection backbone, ``HireMLP``, is in backbones.py.
"""
from typing import Dict, Sequence, Union

import torch
import torch.nn as nn
from timm.layers import DropPath, Mlp, register_notrace_module
from timm.models import generate_default_cfgs, register_model

from . import common
from .common import checkpoint_filter_fn  # noqa: F401  (the official names are the model's)

__all__ = ['HireMLPClassifier', 'HireMLPMixer', 'HireBlock', 'HireStem', 'HireDownsample',
           'circular_pad_end', 'checkpoint_filter_fn', 'ARCH_SETTINGS']


def circular_pad_end(x: torch.Tensor, pad: int, dim: int) -> torch.Tensor:
    """x with `pad` entries appended to `dim` that continue it periodically (entry i reads i mod
    size): the official far-side circular ``F.pad``, also for pad > size, which F.pad refuses."""
    if pad == 0:
        return x
    size = x.shape[dim]
    if pad <= size:
        return torch.cat([x, x.narrow(dim, 0, pad)], dim)
    repeats = [1] * x.dim()
    repeats[dim] = (size + pad + size - 1) // size
    return x.repeat(repeats).narrow(dim, 0, size + pad)


@register_notrace_module  # shape-dependent padding: torch.fx keeps the mixer as one leaf call
class HireMLPMixer(nn.Module):
    """Hierarchical rearrangement token mixer (the official code calls it ``HireMLP``/``attn``)."""

    def __init__(self, dim: int, pixel: int = 2, step: int = 0, proj_drop: float = 0.):
        super().__init__()
        if pixel < 1 or step < 0:
            raise ValueError(f'pixel must be >= 1 and step >= 0, got pixel={pixel}, step={step}')
        self.dim, self.pixel, self.step = dim, pixel, step
        # BN sits in the C*pixel -> C/2 bottleneck, so the first conv has no bias of its own
        self.mlp_h1 = nn.Conv2d(dim * pixel, dim // 2, 1, bias=False)
        self.mlp_h1_norm = nn.BatchNorm2d(dim // 2)
        self.mlp_h2 = nn.Conv2d(dim // 2, dim * pixel, 1)
        self.mlp_w1 = nn.Conv2d(dim * pixel, dim // 2, 1, bias=False)
        self.mlp_w1_norm = nn.BatchNorm2d(dim // 2)
        self.mlp_w2 = nn.Conv2d(dim // 2, dim * pixel, 1)
        self.mlp_c = nn.Conv2d(dim, dim, 1)
        self.act = nn.ReLU()
        # output channel 3*i + k weighs branch k of channel i (the official reshape(B, C, 3))
        self.reweight = Mlp(dim, dim // 4, dim * 3, act_layer=nn.GELU, use_conv=True)
        self.proj = nn.Conv2d(dim, dim, 1)
        self.proj_drop = nn.Dropout(proj_drop)

    def extra_repr(self) -> str:
        return f'pixel={self.pixel}, step={self.step}'

    def rearrange_in(self, x: torch.Tensor, axis: int) -> torch.Tensor:
        """Shift by `step` along `axis` (2 = H, 3 = W), pad to whole regions, fold them into C."""
        if self.step != 0:
            x = torch.roll(x, self.step, axis)
        p = self.pixel
        x = circular_pad_end(x, (p - x.shape[axis] % p) % p, axis)
        B, C, H, W = x.shape
        if axis == 2:  # channel c*p + i of region r holds row r*p + i
            return x.reshape(B, C, H // p, p, W).transpose(2, 3).reshape(B, C * p, H // p, W)
        return x.reshape(B, C, H, W // p, p).permute(0, 1, 4, 2, 3).reshape(B, C * p, H, W // p)

    def rearrange_out(self, x: torch.Tensor, axis: int, size: int) -> torch.Tensor:
        """Inverse of `rearrange_in`: unfold, drop the padding, undo the shift."""
        p = self.pixel
        B, Cp, rows, cols = x.shape  # `axis` counts regions here
        x = x.reshape(B, Cp // p, p, rows, cols)
        if axis == 2:
            x = x.transpose(2, 3).reshape(B, Cp // p, rows * p, cols)
        else:
            x = x.permute(0, 1, 3, 4, 2).reshape(B, Cp // p, rows, cols * p)
        x = x.narrow(axis, 0, size)
        if self.step != 0:
            x = torch.roll(x, -self.step, axis)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.rearrange_in(x, 2)
        h = self.mlp_h2(self.act(self.mlp_h1_norm(self.mlp_h1(h))))
        h = self.rearrange_out(h, 2, H)

        w = self.rearrange_in(x, 3)
        w = self.mlp_w2(self.act(self.mlp_w1_norm(self.mlp_w1(w))))
        w = self.rearrange_out(w, 3, W)

        c = self.mlp_c(x)

        a = (h + w + c).mean((2, 3), keepdim=True)
        a = self.reweight(a).reshape(B, C, 3).softmax(dim=2).reshape(B, C, 3, 1, 1)
        x = h * a[:, :, 0] + w * a[:, :, 1] + c * a[:, :, 2]
        return self.proj_drop(self.proj(x))


class HireBlock(nn.Module):
    """x + DropPath(HireMLPMixer(BN(x))), then x + DropPath(Mlp(BN(x))), Mlp = 1x1 conv (dim ->
    r dim), GELU, 1x1 conv: pre-norm with BatchNorm instead of LayerNorm, NCHW throughout."""

    def __init__(self, dim: int, pixel: int = 2, step: int = 0, mlp_ratio: float = 4.,
                 proj_drop: float = 0., drop_path: float = 0.):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = HireMLPMixer(dim, pixel=pixel, step=step, proj_drop=proj_drop)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=proj_drop, use_conv=True)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class HireStem(nn.Module):
    """Overlapping patch embedding (official ``patch_embed``): Conv 7x7 / 4 (pad 2), BN, ReLU."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=7, stride=4, padding=2)
        self.norm = nn.BatchNorm2d(dim)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch._assert(x.shape[-2] >= 3, 'Hire-MLP needs an input of at least 3 x 3 pixels')
        torch._assert(x.shape[-1] >= 3, 'Hire-MLP needs an input of at least 3 x 3 pixels')
        return self.act(self.norm(self.proj(x)))


class HireDownsample(nn.Module):
    """Conv 3x3 / 2 (pad 1) -> BN -> ReLU between stages (official ``Downsample``)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_dim, out_dim, kernel_size=3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(out_dim)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.proj(x)))


class HireMLPClassifier(common.StagedClassifier):
    """Hire-MLP image classifier with timm's model API (see the module docstring for ``pixel``,
    ``step_stride`` and ``step_dilation``). ``global_pool``: '', 'avg', 'max' or 'avgmax' (''
    only with num_classes=0); ``proj_drop_rate``: dropout after the mixer and in the channel MLP."""
    # the pooling types whose output has num_features channels, so the official head still fits
    pool_types = ('', 'avg', 'max', 'avgmax')

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, global_pool: str = 'avg',
                 embed_dims: Sequence[int] = (64, 128, 320, 512),
                 depths: Sequence[int] = (2, 2, 4, 2), pixel: Sequence[int] = (4, 3, 3, 2),
                 step_stride: Sequence[int] = (2, 2, 3, 2),
                 step_dilation: Sequence[int] = (2, 2, 1, 1),
                 mlp_ratio: Union[float, Sequence[float]] = 4., drop_rate: float = 0.,
                 proj_drop_rate: float = 0., drop_path_rate: float = 0.):
        super().__init__()
        n = len(depths)
        owner = type(self).__name__
        embed_dims, pixel, step_stride, step_dilation, mlp_ratio = (
            common.per_stage(value, n, name, owner) for name, value in (
                ('embed_dims', embed_dims), ('pixel', pixel), ('step_stride', step_stride),
                ('step_dilation', step_dilation), ('mlp_ratio', mlp_ratio)))
        self.num_features = self.head_hidden_size = embed_dims[-1]

        self.patch_embed = HireStem(in_chans, embed_dims[0])
        dpr = common.drop_path_rates(depths, drop_path_rate)
        network = []
        self.feature_info = []
        for i in range(n):
            if i > 0:
                network.append(HireDownsample(embed_dims[i - 1], embed_dims[i]))
            network.append(nn.Sequential(*[
                HireBlock(
                    embed_dims[i], pixel=pixel[i], step=(j % step_stride[i]) * step_dilation[i],
                    mlp_ratio=mlp_ratio[i], proj_drop=proj_drop_rate, drop_path=dpr[i][j])
                for j in range(depths[i])]))
            self.feature_info.append(dict(
                num_chs=embed_dims[i], reduction=4 * 2 ** i, module=f'network.{2 * i}'))
        self.network = nn.Sequential(*network)

        self.norm = nn.BatchNorm2d(self.num_features)
        self.head_drop = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes, global_pool)
        common.init_trunc_normal(self)

    def forward_stage_container(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


# ---- timm registration ------------------------------------------------------------------------

def _cfg(url: str = '', **kwargs) -> Dict:
    return common.default_cfg(
        url=url, pool_size=(7, 7), license='mit', paper_ids='arXiv:2108.13341',
        paper_name='Hire-MLP: Vision MLP via Hierarchical Rearrangement',
        origin_url='https://github.com/ggjy/Hire-Wave-MLP.pytorch', **kwargs)


_RELEASE = 'https://github.com/ggjy/Hire-Wave-MLP.pytorch/releases/download/log/'
default_cfgs = generate_default_cfgs({
    'hire_mlp_tiny.in1k': _cfg(url=_RELEASE + 'hire_mlp_tiny.pth'),
    'hire_mlp_small.in1k': _cfg(url=_RELEASE + 'hire_mlp_small.pth'),
    'hire_mlp_base.in1k': _cfg(url=_RELEASE + 'hire_mlp_base.pth'),
    'hire_mlp_large.untrained': _cfg(),  # the official repository published no Large weights
})

# pixel, step_stride, step_dilation and mlp_ratio are the same in all four: the defaults above
ARCH_SETTINGS = {
    'tiny': dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 4, 2)),
    'small': dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 10, 3)),
    'base': dict(embed_dims=(64, 128, 320, 512), depths=(4, 6, 24, 3)),
    'large': dict(embed_dims=(96, 192, 384, 768), depths=(4, 6, 24, 3)),
}


@register_model
def hire_mlp_tiny(pretrained: bool = False, **kwargs) -> HireMLPClassifier:
    """Hire-MLP-Tiny: 18,041,672 parameters, 2.1G MACs, 79.7% ImageNet top-1 (published)."""
    return common.build_classifier(HireMLPClassifier, 'hire_mlp_tiny', ARCH_SETTINGS['tiny'],
                                   pretrained, **kwargs)


@register_model
def hire_mlp_small(pretrained: bool = False, **kwargs) -> HireMLPClassifier:
    """Hire-MLP-Small: 33,113,848 parameters, 4.2G MACs, 81.8% ImageNet top-1 (published)."""
    return common.build_classifier(HireMLPClassifier, 'hire_mlp_small', ARCH_SETTINGS['small'],
                                   pretrained, **kwargs)


@register_model
def hire_mlp_base(pretrained: bool = False, **kwargs) -> HireMLPClassifier:
    """Hire-MLP-Base: 58,226,856 parameters, 8.1G MACs, 83.1% ImageNet top-1 (published)."""
    return common.build_classifier(HireMLPClassifier, 'hire_mlp_base', ARCH_SETTINGS['base'],
                                   pretrained, **kwargs)


@register_model
def hire_mlp_large(pretrained: bool = False, **kwargs) -> HireMLPClassifier:
    """Hire-MLP-Large: 95,723,944 parameters, 13.5G MACs, 83.4% ImageNet top-1 (published)."""
    return common.build_classifier(HireMLPClassifier, 'hire_mlp_large', ARCH_SETTINGS['large'],
                                   pretrained, **kwargs)
