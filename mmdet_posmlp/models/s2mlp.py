"""S2-MLP: an isotropic MLP whose only spatial operation is a parameter-free spatial shift.

Yu et al., "S2-MLP: Spatial-Shift MLP Architecture for Vision", WACV 2022 (arXiv 2106.07477).
There is no official code; this file follows the paper and is written for this project.

    PatchEmbed:  non-overlapping p x p patches, one Linear (here the equivalent p x p stride-p
                 conv) to c channels, LayerNorm                        NCHW image -> NHWC map
    N x S2MLPBlock:
        x + DropPath(fc2(SpatialShift(GELU(fc1(LN(x))))))      fc1, fc2: Linear(c, c)
        x + DropPath(Mlp(LN(x)))                               Mlp: c -> r c -> GELU -> c
        (4 Linear layers, 2 LayerNorm, 2 GELU, 2 skips per block, as in the paper)
    norm -> global average pool -> head

SpatialShift moves 4 equal channel groups by one token each, along the width and the height; the
vacated border row/column keeps its old value, as in the paper's Algorithm 1 (T is w x h x c):
    T[1:, :, :c/4]       = T[:w-1, :, :c/4]         # width +1
    T[:w-1, :, c/4:c/2]  = T[1:, :, c/4:c/2]        # width -1
    T[:, 1:, c/2:3c/4]   = T[:, :h-1, c/2:3c/4]     # height +1
    T[:, :h-1, 3c/4:]    = T[:, 1:, 3c/4:]          # height -1
so index 0 of a +1 shift keeps T[0] (a copy of the edge, neither a wrap-around nor a zero), as
public re-implementations also do. Here the shift is computed out of place, which is what the
in-place slices mean (numpy, too, reads each right-hand side before writing overlapping slices).

Settings (p, c, r, N): the paper's text gives c = 384 (deep); c = 768, N = 12, r = 4 (wide);
51M / 9.7G (deep, PosMLP's table), about 71M / 14G (wide). The rest meets those (MACs at 224):
- p = 16 for both: FLOPs / params is the token count, 9.7G / 51M ~ 14G / 71M ~ 196 = (224/16)^2
  (p = 14 would make wide 18.2G). Wide is then 72.24M, 13.99G.
- deep: r = 4, N = 34, 50.96M, 9.88G (0.1% and 1.9% off). At N = 36 no r reaches 51M (r 3:
  43.29M; r 4, the ResMLP-36 shape: 53.92M); r 3, N 42 (50.39M, 9.77G) fits too, further from
  36 blocks. ``timm.create_model('s2mlp_deep', depth=36)`` builds the 36-block model.

Any input size: the shift and the Linear layers do not depend on the map size; sides not a multiple
of p are zero-padded at the bottom/right before the patch embedding (zero is the dataset mean after
normalization), so the one output map is ceil(H / p) x ceil(W / p) at stride p, no pixel dropped.

This module imports only torch and timm; its MMDetection backbone, ``S2MLP``, is in backbones.py.
"""

import torch
import torch.nn as nn
from timm.layers import DropPath, Mlp, PatchEmbed
from timm.models import generate_default_cfgs, register_model

from . import common
from .common import checkpoint_filter_fn  # noqa: F401  (the names are the model's)

__all__ = ['S2MLPClassifier', 'S2MLPBlock', 'SpatialShift', 'ShiftMixer', 'spatial_shift',
           'checkpoint_filter_fn', 'ARCH_SETTINGS']


def spatial_shift(x: torch.Tensor) -> torch.Tensor:
    """Algorithm 1 on an NHWC map: 4 channel groups moved by one token, edges copied."""
    C = x.shape[-1]
    g1, g2, g3 = C // 4, C // 2, C * 3 // 4
    a, b, c, d = x[..., :g1], x[..., g1:g2], x[..., g2:g3], x[..., g3:]
    a = torch.cat([a[:, :, :1], a[:, :, :-1]], dim=2)   # width +1
    b = torch.cat([b[:, :, 1:], b[:, :, -1:]], dim=2)   # width -1
    c = torch.cat([c[:, :1], c[:, :-1]], dim=1)         # height +1
    d = torch.cat([d[:, 1:], d[:, -1:]], dim=1)         # height -1
    return torch.cat([a, b, c, d], dim=-1)


class SpatialShift(nn.Module):
    """Parameter-free token communication; see `spatial_shift`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spatial_shift(x)


class ShiftMixer(nn.Module):
    """fc1 -> GELU -> spatial shift -> fc2: the block's spatial (first) branch."""

    def __init__(self, dim: int, act_layer=nn.GELU, drop: float = 0.):
        super().__init__()
        self.fc1 = nn.Linear(dim, dim)
        self.act = act_layer()
        self.shift = SpatialShift()
        self.fc2 = nn.Linear(dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.shift(self.act(self.fc1(x)))))


class S2MLPBlock(nn.Module):
    """Pre-norm residual block: shift mixer, then the channel MLP of ratio r."""

    def __init__(self, dim: int, mlp_ratio: float = 4., proj_drop: float = 0.,
                 drop_path: float = 0., act_layer=nn.GELU, norm_layer=nn.LayerNorm):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.shift_mlp = ShiftMixer(dim, act_layer, proj_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.shift_mlp(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


ARCH_SETTINGS = {  # see the module docstring for the choices
    'deep': dict(patch_size=16, embed_dim=384, depth=34, mlp_ratio=4.),
    'wide': dict(patch_size=16, embed_dim=768, depth=12, mlp_ratio=4.),
}


class S2MLPClassifier(common.StagedClassifier):
    """S2-MLP with timm's model API: one NHWC map at stride `patch_size` throughout; every block
    is a stage of ``feature_info`` (as timm's MLP-Mixer), the final norm fits every map, and
    ``global_pool`` is 'avg' (mean over tokens) or '' (a head per position)."""
    input_fmt = 'NHWC'
    isotropic = True

    def __init__(self, patch_size: int = 16, embed_dim: int = 384, depth: int = 34,
                 mlp_ratio: float = 4., in_chans: int = 3, num_classes: int = 1000,
                 global_pool: str = 'avg', drop_rate: float = 0., proj_drop_rate: float = 0.,
                 drop_path_rate: float = 0., norm_layer=nn.LayerNorm, act_layer=nn.GELU):
        super().__init__()
        self.num_features = self.head_hidden_size = embed_dim

        self.patch_embed = PatchEmbed(None, patch_size, in_chans, embed_dim, norm_layer,
                                      output_fmt='NHWC', dynamic_img_pad=True)
        dpr = common.drop_path_rates([depth], drop_path_rate)[0]
        self.blocks = nn.Sequential(*[
            S2MLPBlock(embed_dim, mlp_ratio, proj_drop_rate, dpr[i], act_layer, norm_layer)
            for i in range(depth)])
        self.feature_info = [dict(num_chs=embed_dim, reduction=patch_size, module=f'blocks.{i}')
                             for i in range(depth)]
        self.norm = norm_layer(embed_dim)
        self.head_drop = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes, global_pool)
        # the paper gives no initialisation; this is the ViT / Mixer family's usual one
        common.init_trunc_normal(self, layers=(nn.Linear,))

    def forward_stage_container(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


# ---- timm registration --------------------------------------------------------------------

default_cfgs = generate_default_cfgs({
    f's2mlp_{arch}.untrained': common.default_cfg(pool_size=(14, 14), crop_pct=0.875,
                                                  paper_ids='arXiv:2106.07477')
    for arch in ARCH_SETTINGS})


@register_model
def s2mlp_deep(pretrained: bool = False, **kwargs) -> S2MLPClassifier:
    """S2-MLP-deep (chosen: p 16, c 384, r 4, N 34): 50.96M parameters; paper 51M, 80.7%."""
    # like timm's MLP-Mixer: features_only returns the last 3 blocks unless told otherwise
    return common.build_classifier(S2MLPClassifier, 's2mlp_deep', ARCH_SETTINGS['deep'],
                                   pretrained, default_out_indices=3, **kwargs)


@register_model
def s2mlp_wide(pretrained: bool = False, **kwargs) -> S2MLPClassifier:
    """S2-MLP-wide (p 16, c 768, r 4, N 12): 72.24M parameters; paper about 71M, 80.0%."""
    return common.build_classifier(S2MLPClassifier, 's2mlp_wide', ARCH_SETTINGS['wide'],
                                   pretrained, default_out_indices=3, **kwargs)
