"""Vision Permutator (ViP): MLPs that mix tokens along height and width by permuting channels.

Hou et al., "Vision Permutator: A Permutable MLP-Like Architecture for Visual Recognition", TPAMI
(arXiv 2106.12368). Written for this project with the parameter names and shapes of the official
code (houqb/VisionPermutator, `models/vip.py`): its ImageNet checkpoints load with strict=True.

    PatchEmbed:    Conv p x p, stride p (p = 7)                       NCHW image -> NHWC tokens
    network:       [stage, (Downsample), stage, stage, stage]         (flat, as upstream)
      stage:       depth x PermutatorBlock at one resolution
      Downsample:  Conv 2x2 stride 2 where `transitions[i]` (a 1x1 conv where only the width
                   changes; no published variant has one)
    norm -> global average pool -> head

    PermutatorBlock:     x + DropPath(WeightedPermuteMLP(LN(x))) / skip_lam
                         x + DropPath(Mlp(LN(x))) / skip_lam          (Mlp: ratio 3, GELU)
    WeightedPermuteMLP:  three branches of x (B, H, W, C), C = s segments x S channels:
        h = height mixing: for every segment k and column w, the H x S values x[:, w, k] are
            flattened (row-major) and multiplied by mlp_h (a C x C matrix, so H * S == C);
        w = the same along the width with mlp_w;
        c = mlp_c(x), a plain channel Linear;
        a = softmax over the 3 branches of reweight(mean over all tokens of h + w + c),
            reweight = Mlp(C -> C/4 -> 3C) whose output is read as (C, 3) (branch innermost);
        out = proj(h * a0 + w * a1 + c * a2).
    mlp_h / mlp_w / mlp_c have no bias in every published variant (qkv_bias=False).

Variants ``vip_s7`` / ``vip_m7`` / ``vip_l7`` (``ARCH_SETTINGS``; maps at strides 7 and 14):
25,114,984 / 55,272,488 / 87,784,936 parameters (published: 25M / 55M / 88M), what the official code
builds, same keys, shapes and order (its comment `# 55534632` at vip_m7 is 512 x 512 too many).

Any input size. mlp_h is a fixed C x C matrix over H * S values, so the official model runs only at
map side == segment count s (32 x 32 tokens at 224 px, 16 x 16 after the transition). Here height
(width) mixing runs in non-overlapping windows of s rows (columns): the map is zero-padded at the
bottom (right) to a multiple of s, each window mixed by the unchanged official matrix, the padding
cropped off. Mixing is linear, so padded zeros add nothing to real tokens' outputs (whatever the
bias); the reweighting mean is over the real tokens, as upstream; at side == s this is exactly the
official computation. Why not resize the weights: a weight of mlp_h links two rows of an s-row field
of view; windows keep that meaning, while interpolating the s x s row-mixing to, say, the 115 rows
of an 800 px image stretches every learned relation 3.6x (not measured: that needs ImageNet-trained
ViP weights). Cost: at most s - 1 padding rows per axis per stage, in the height/width branches only
(800 x 1333: stage 1 115 -> 128 rows, 191 -> 192 columns; after the transition 58 -> 64, 96 -> 96).
Sides not a multiple of 7 are zero-padded at the bottom/right before the patch embedding, odd maps
before the 2x2 transition: maps are ceil(H / 7) and ceil(H / 14) tokens high, no pixel dropped.

This module imports only torch and timm; its MMDetection backbone, ``ViP``, is in backbones.py.
"""
from typing import Dict, List, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, PatchEmbed
from timm.models import generate_default_cfgs, register_model

from . import common
from .common import checkpoint_filter_fn  # noqa: F401  (the official names are the model's)

__all__ = ['ViPClassifier', 'WeightedPermuteMLP', 'PermutatorBlock', 'Downsample',
           'checkpoint_filter_fn', 'ARCH_SETTINGS']


def _pad_nhwc(x: torch.Tensor, multiple_h: int, multiple_w: int) -> torch.Tensor:
    """Zero-pad a (B, H, W, C) map at the bottom and right to multiples of the given sizes."""
    pad_h = (multiple_h - x.shape[1] % multiple_h) % multiple_h
    pad_w = (multiple_w - x.shape[2] % multiple_w) % multiple_w
    # always called (a zero pad is a no-op) so that fx tracing sees no data-dependent branch
    return F.pad(x, [0, 0, 0, pad_w, 0, pad_h])


class Downsample(nn.Module):
    """The transition between stages: Conv k x k stride k on an NHWC map (k = 2, or 1)."""

    def __init__(self, in_dim: int, out_dim: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_dim, out_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _pad_nhwc(x, self.patch_size, self.patch_size)
        return self.proj(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class WeightedPermuteMLP(nn.Module):
    """ViP's token mixer: height, width and channel Linear branches, mixed by learned weights;
    height/width mixing runs in windows of `segment_dim` rows/columns (see the module docstring)."""

    def __init__(self, dim: int, segment_dim: int, qkv_bias: bool = False, proj_drop: float = 0.):
        super().__init__()
        if dim % segment_dim:
            raise ValueError(f'dim ({dim}) must be divisible by segment_dim ({segment_dim})')
        self.segment_dim = segment_dim
        self.mlp_c = nn.Linear(dim, dim, bias=qkv_bias)
        self.mlp_h = nn.Linear(dim, dim, bias=qkv_bias)
        self.mlp_w = nn.Linear(dim, dim, bias=qkv_bias)
        self.reweight = Mlp(dim, dim // 4, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def mix_height(self, x: torch.Tensor) -> torch.Tensor:
        """mlp_h over each (segment, column) of every run of s rows; (B, H, W, C) in and out."""
        B, H, W, C = x.shape
        s = self.segment_dim
        S = C // s
        x = _pad_nhwc(x, s, 1)
        n = x.shape[1] // s
        # (B, window, row, W, segment, S) -> (B, window, segment, W, row * S): the row-major
        # (row, channel-in-segment) order is the order of mlp_h's inputs and outputs upstream
        t = x.reshape(B, n, s, W, s, S).permute(0, 1, 4, 3, 2, 5).reshape(B, n, s, W, s * S)
        t = self.mlp_h(t)
        t = t.reshape(B, n, s, W, s, S).permute(0, 1, 4, 3, 2, 5).reshape(B, n * s, W, C)
        return t[:, :H]

    def mix_width(self, x: torch.Tensor) -> torch.Tensor:
        """mlp_w over each (row, segment) of every run of s columns; (B, H, W, C) in and out."""
        B, H, W, C = x.shape
        s = self.segment_dim
        S = C // s
        x = _pad_nhwc(x, 1, s)
        n = x.shape[2] // s
        t = x.reshape(B, H, n, s, s, S).permute(0, 1, 2, 4, 3, 5).reshape(B, H, n, s, s * S)
        t = self.mlp_w(t)
        t = t.reshape(B, H, n, s, s, S).permute(0, 1, 2, 4, 3, 5).reshape(B, H, n * s, C)
        return t[:, :, :W]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        h = self.mix_height(x)
        w = self.mix_width(x)
        c = self.mlp_c(x)
        a = (h + w + c).mean(dim=(1, 2))
        # reweight's 3C outputs are (channel, branch) with the branch innermost, as upstream
        a = self.reweight(a).reshape(B, C, 3).permute(2, 0, 1).softmax(dim=0)
        a = a.unsqueeze(2).unsqueeze(2)  # (3, B, 1, 1, C)
        x = h * a[0] + w * a[1] + c * a[2]
        return self.proj_drop(self.proj(x))


class PermutatorBlock(nn.Module):
    """Pre-norm residual block: permute-MLP token mixing, then a channel MLP."""

    def __init__(self, dim: int, segment_dim: int, mlp_ratio: float = 3., qkv_bias: bool = False,
                 proj_drop: float = 0., drop_path: float = 0., skip_lam: float = 1.0,
                 act_layer=nn.GELU, norm_layer=nn.LayerNorm):
        super().__init__()
        self.norm1 = norm_layer(dim)
        # named `attn` upstream although it is not attention: the name is a checkpoint key
        self.attn = WeightedPermuteMLP(dim, segment_dim, qkv_bias=qkv_bias, proj_drop=proj_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)
        self.skip_lam = skip_lam

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x))) / self.skip_lam
        x = x + self.drop_path(self.mlp(self.norm2(x))) / self.skip_lam
        return x


ARCH_SETTINGS = {
    's7': dict(depths=(4, 3, 8, 3), embed_dims=(192, 384, 384, 384),
               segment_dim=(32, 16, 16, 16), transitions=(True, False, False, False)),
    'm7': dict(depths=(4, 3, 14, 3), embed_dims=(256, 256, 512, 512),
               segment_dim=(32, 32, 16, 16), transitions=(False, True, False, False)),
    'l7': dict(depths=(8, 8, 16, 4), embed_dims=(256, 512, 512, 512),
               segment_dim=(32, 16, 16, 16), transitions=(True, False, False, False)),
}


class ViPClassifier(common.StagedClassifier):
    """Vision Permutator with timm's model API, on NHWC maps; `forward_intermediates` returns one
    map per stage, at stride patch_size x 2^(transitions so far). ``global_pool``: 'avg' (mean
    over tokens) or '' (a head per position)."""
    input_fmt = 'NHWC'

    def __init__(self, depths: Sequence[int] = (4, 3, 8, 3),
                 embed_dims: Sequence[int] = (192, 384, 384, 384),
                 segment_dim: Sequence[int] = (32, 16, 16, 16),
                 transitions: Sequence[bool] = (True, False, False, False),
                 mlp_ratios: Union[float, Sequence[float]] = 3., patch_size: int = 7,
                 in_chans: int = 3, num_classes: int = 1000, global_pool: str = 'avg',
                 qkv_bias: bool = False, skip_lam: float = 1.0, drop_rate: float = 0.,
                 proj_drop_rate: float = 0., drop_path_rate: float = 0., norm_layer=nn.LayerNorm,
                 act_layer=nn.GELU):
        super().__init__()
        n = len(depths)
        owner = type(self).__name__
        embed_dims, segment_dim, transitions, mlp_ratios = (
            common.per_stage(value, n, name, owner) for name, value in (
                ('embed_dims', embed_dims), ('segment_dim', segment_dim),
                ('transitions', transitions), ('mlp_ratios', mlp_ratios)))
        self.num_features = self.head_hidden_size = embed_dims[-1]

        self.patch_embed = PatchEmbed(None, patch_size, in_chans, embed_dims[0],
                                      output_fmt='NHWC', dynamic_img_pad=True)
        dpr = common.drop_path_rates(depths, drop_path_rate)
        reduction = patch_size
        network: List[nn.Module] = []
        self._stage_of = []  # per network entry: its stage, -1 for a transition
        self.feature_info = []
        for i in range(n):
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=reduction,
                                          module=f'network.{len(network)}'))
            network.append(nn.Sequential(*[
                PermutatorBlock(embed_dims[i], segment_dim[i], mlp_ratios[i], qkv_bias,
                                proj_drop_rate, dpr[i][j], skip_lam, act_layer, norm_layer)
                for j in range(depths[i])]))
            self._stage_of.append(i)
            if i < n - 1 and (transitions[i] or embed_dims[i] != embed_dims[i + 1]):
                k = 2 if transitions[i] else 1
                network.append(Downsample(embed_dims[i], embed_dims[i + 1], k))
                self._stage_of.append(-1)
                reduction *= k
        self.network = nn.Sequential(*network)
        self.norm = norm_layer(embed_dims[-1])
        self.head_drop = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes, global_pool)
        common.init_trunc_normal(self, layers=(nn.Linear,))

    def forward_stage_container(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


# ---- timm registration --------------------------------------------------------------------

def _cfg(**kwargs) -> Dict:
    return common.default_cfg(
        pool_size=(16, 16), license='mit', paper_ids='arXiv:2106.12368',
        origin_url='https://github.com/houqb/VisionPermutator', **kwargs)


# The official weights are on Google Drive (see the upstream README), not on a hub timm can
# fetch: load them with pretrained=True, pretrained_cfg_overlay=dict(file=PATH).
default_cfgs = generate_default_cfgs({
    'vip_s7.in1k': _cfg(crop_pct=0.875),  # crop_pct as in the official default cfgs
    'vip_m7.in1k': _cfg(crop_pct=0.9),
    'vip_l7.in1k': _cfg(crop_pct=0.9),
})


@register_model
def vip_s7(pretrained: bool = False, **kwargs) -> ViPClassifier:
    """ViP-Small/7: 25.1M parameters, 81.5% ImageNet top-1 (paper)."""
    return common.build_classifier(ViPClassifier, 'vip_s7', ARCH_SETTINGS['s7'], pretrained,
                                   **kwargs)


@register_model
def vip_m7(pretrained: bool = False, **kwargs) -> ViPClassifier:
    """ViP-Medium/7: 55.3M parameters, 82.7% ImageNet top-1 (paper)."""
    return common.build_classifier(ViPClassifier, 'vip_m7', ARCH_SETTINGS['m7'], pretrained,
                                   **kwargs)


@register_model
def vip_l7(pretrained: bool = False, **kwargs) -> ViPClassifier:
    """ViP-Large/7: 87.8M parameters, 83.2% ImageNet top-1 (paper)."""
    return common.build_classifier(ViPClassifier, 'vip_l7', ARCH_SETTINGS['l7'], pretrained,
                                   **kwargs)
