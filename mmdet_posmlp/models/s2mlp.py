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

SpatialShift: the channels are cut into 4 equal groups (boundaries c/4, c/2, 3c/4); group 1 is
shifted by +1 along the width, group 2 by -1 along the width, group 3 by +1 along the height,
group 4 by -1 along the height. At the border the vacated row/column keeps its old value: the
paper's pseudo-code (its Algorithm 1, on T of shape w x h x c) is
    T[1:, :, :c/4]       = T[:w-1, :, :c/4]         # width +1
    T[:w-1, :, c/4:c/2]  = T[1:, :, c/4:c/2]        # width -1
    T[:, 1:, c/2:3c/4]   = T[:, :h-1, c/2:3c/4]     # height +1
    T[:, :h-1, 3c/4:]    = T[:, 1:, 3c/4:]          # height -1
so index 0 of a +1 shift is not written and keeps T[0] (a copy of the edge, neither a
wrap-around nor a zero), as public re-implementations also do. Here the
shift is computed out of place from the input, which is what the in-place slices mean (each
right-hand side is read before it is written, as numpy does for overlapping slices).

Settings. Fitted to the published figures (deep: 51M params, 9.7G FLOPs in PosMLP's table;
wide: about 71M, about 14G) and the settings known from the paper's text (c = 384 deep, c = 768
wide, N = 12 wide, r = 4 wide), the variant table not being at hand. FLOPs / params is the number of tokens: 9.7G / 51M ~ 14G / 71M ~ 196 = (224/16)^2, so
p = 16 for both (p = 14 would give 256 tokens: wide 18.2G). Wide: p 16, c 768, r 4, N 12 is
72.24M / 13.99 GMACs, matching. Deep at c = 384, p = 16 (params, MACs at 224; multiply-adds):

    | r | N  | params | GMACs | note                                                   |
    |---|----|--------|-------|--------------------------------------------------------|
    | 3 | 36 | 43.29M | 8.38  | a narrower guess: 15% below 51M                        |
    | 4 | 36 | 53.92M | 10.46 | the ResMLP-36 shape; 5.7% above 51M                     |
    | 4 | 34 | 50.96M | 9.88  | chosen: 0.1% from 51M, 1.9% from 9.7G                  |
    | 3 | 42 | 50.39M | 9.77  | also fits (1.2%, 0.7%), but 6 blocks from "36"         |

No (r, N) with N = 36 reaches 51M, so N = 36 cannot be exactly what the paper counted; r = 4
with N = 34 is the fit nearest to the 36-block, r = 4 shape that the FLOPs point to. This is a
fit to published numbers, not a published setting: `timm.create_model('s2mlp_deep', depth=36)`
builds the 36-block model.

Any input size: the shift and the Linear layers do not depend on the map size; an image whose
side is not a multiple of p is zero-padded at the bottom/right to the next multiple before the
patch embedding (zero is the dataset mean after normalization), so the single output map is
ceil(H / p) x ceil(W / p) at stride p and no pixel is dropped.

This module imports only torch and timm. The MMDetection backbone ``S2MLP`` (this classifier
without head, returning block outputs; detectors read the last one through
``SimpleFeaturePyramid``) lives in mmdet_family.py, registered in mmdet's MODELS.
"""
from typing import Any, Dict, List, Optional, Set, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, Mlp, trunc_normal_
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

__all__ = ['S2MLPClassifier', 'S2MLPBlock', 'SpatialShift', 'ShiftMixer', 'PatchEmbed',
           'spatial_shift', 'S2MLP_SETTINGS', 'S2MLP']

GLOBAL_POOLS = ('avg', '')


def _check_global_pool(global_pool: str) -> str:
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool must be 'avg' (mean over tokens) or '' (none), "
                         f'got {global_pool!r}')
    return global_pool


def spatial_shift(x: torch.Tensor) -> torch.Tensor:
    """Algorithm 1 on an NHWC map: 4 channel groups moved by one token, edges copied."""
    C = x.shape[-1]
    g1, g2, g3 = C // 4, C // 2, C * 3 // 4
    a, b, c, d = x[..., :g1], x[..., g1:g2], x[..., g2:g3], x[..., g3:]
    # out[i] = in[i - 1] for i >= 1, out[0] = in[0]: the first column is kept, not wrapped
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


class PatchEmbed(nn.Module):
    """The paper's patch-wise fully-connected layer (as a p x p stride-p conv) and LayerNorm."""

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 384,
                 norm_layer=nn.LayerNorm):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = norm_layer(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        pad_h = (p - x.shape[2] % p) % p
        pad_w = (p - x.shape[3] % p) % p
        x = self.proj(F.pad(x, [0, pad_w, 0, pad_h]))
        return self.norm(x.permute(0, 2, 3, 1))


S2MLP_SETTINGS: Dict[str, Dict[str, Any]] = {
    # see the module docstring for how these were derived
    's2mlp_deep': dict(patch_size=16, embed_dim=384, depth=34, mlp_ratio=4.),
    's2mlp_wide': dict(patch_size=16, embed_dim=768, depth=12, mlp_ratio=4.),
}


class S2MLPClassifier(nn.Module):
    """S2-MLP with timm's model API: one NHWC map at stride `patch_size` throughout."""

    def __init__(
            self,
            patch_size: int = 16,
            embed_dim: int = 384,
            depth: int = 34,
            mlp_ratio: float = 4.,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            norm_layer=nn.LayerNorm,
            act_layer=nn.GELU,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.global_pool = _check_global_pool(global_pool)
        self.num_features = self.head_hidden_size = embed_dim
        self.grad_checkpointing = False

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, norm_layer)
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.Sequential(*[
            S2MLPBlock(embed_dim, mlp_ratio, proj_drop_rate, dpr[i], act_layer, norm_layer)
            for i in range(depth)])
        self.feature_info = [dict(num_chs=embed_dim, reduction=patch_size, module=f'blocks.{i}')
                             for i in range(depth)]
        self.norm = norm_layer(embed_dim)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # the paper gives no initialisation; this is the ViT / Mixer family's usual one
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # ---- timm API -------------------------------------------------------------------------

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        # no positional parameters; timm's optimizer factory exempts norms and biases itself
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^patch_embed',
                    blocks=[(r'^blocks\.(\d+)', None), (r'^norm', (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = _check_global_pool(global_pool)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Per-block maps, all at stride p.

        Args:
            indices: last n blocks if int, all if None, these blocks if a list.
            norm: apply the final norm to every returned map (all have its width).
            stop_early: stop after the last block asked for.
            output_fmt: 'NCHW' or 'NHWC'.
            intermediates_only: return only the list of maps.
        """
        assert output_fmt in ('NCHW', 'NHWC'), 'output_fmt must be NCHW or NHWC'
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        intermediates: List[torch.Tensor] = []
        x = self.patch_embed(x)
        if torch.jit.is_scripting() or not stop_early:  # a Sequential cannot be sliced in TS
            blocks = self.blocks
        else:
            blocks = self.blocks[:max_index + 1]
        for i, blk in enumerate(blocks):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
            if i in take_indices:
                y = self.norm(x) if norm else x
                intermediates.append(y.permute(0, 3, 1, 2) if output_fmt == 'NCHW' else y)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    @torch.jit.ignore
    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1,
                                  prune_norm: bool = False, prune_head: bool = True) -> List[int]:
        """Drop the blocks after the last one `indices` asks for."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, 3, H, W) -> normalized map (B, ceil(H/p), ceil(W/p), C), NHWC."""
        x = self.patch_embed(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == 'avg':
            x = x.mean(dim=(1, 2))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ---- timm registration --------------------------------------------------------------------

def _cfg(**kwargs) -> Dict[str, Any]:
    return {
        'url': '', 'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (14, 14),
        'crop_pct': 0.875, 'interpolation': 'bicubic', 'fixed_input_size': False,
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'patch_embed.proj', 'classifier': 'head',
        'paper_ids': 'arXiv:2106.07477', **kwargs,
    }


# no weights were published; the tag says so
default_cfgs = generate_default_cfgs({
    's2mlp_deep.untrained': _cfg(),
    's2mlp_wide.untrained': _cfg(),
})


def _create_s2mlp(variant: str, pretrained: bool = False, **kwargs) -> S2MLPClassifier:
    model_args = dict(S2MLP_SETTINGS[variant])
    model_args.update(kwargs)
    # like timm's MLP-Mixer: features_only returns the last 3 blocks unless told otherwise
    return build_model_with_cfg(
        S2MLPClassifier, variant, pretrained,
        feature_cfg=dict(feature_cls='getter', out_indices=3),
        **model_args)


@register_model
def s2mlp_deep(pretrained: bool = False, **kwargs) -> S2MLPClassifier:
    """S2-MLP-deep (fitted: p 16, c 384, r 4, N 34): 50.96M parameters; paper 51M, 80.7%."""
    return _create_s2mlp('s2mlp_deep', pretrained, **kwargs)


@register_model
def s2mlp_wide(pretrained: bool = False, **kwargs) -> S2MLPClassifier:
    """S2-MLP-wide (p 16, c 768, r 4, N 12): 72.24M parameters; paper about 71M, 80.0%."""
    return _create_s2mlp('s2mlp_wide', pretrained, **kwargs)
