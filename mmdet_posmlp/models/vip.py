"""Vision Permutator (ViP): MLPs that mix tokens along height and width by permuting channels.

Hou et al., "Vision Permutator: A Permutable MLP-Like Architecture for Visual Recognition",
IEEE TPAMI (arXiv 2106.12368). Official code: houqb/VisionPermutator, `models/vip.py`.
This file is the whole architecture, written for this project; parameter names and shapes are
the official ones, so the official ImageNet checkpoints load with strict=True.

    PatchEmbed:    Conv p x p, stride p (p = 7)                       NCHW image -> NHWC tokens
    network:       [stage, (Downsample), stage, stage, stage]         (a ModuleList, as upstream)
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

Variants (official `vip_s7` / `vip_m7` / `vip_l7`; maps at strides 7 and 14):

    | model  | dims                | depths       | segment_dim     | transition | params     |
    |--------|---------------------|--------------|-----------------|------------|------------|
    | vip_s7 | 192, 384, 384, 384  | 4, 3, 8, 3   | 32, 16, 16, 16  | after 1    | 25,114,984 |
    | vip_m7 | 256, 256, 512, 512  | 4, 3, 14, 3  | 32, 32, 16, 16  | after 2    | 55,272,488 |
    | vip_l7 | 256, 512, 512, 512  | 8, 8, 16, 4  | 32, 16, 16, 16  | after 1    | 87,784,936 |

(published: 25M / 55M / 88M. The comment `# 55534632` in the official vip_m7 is 512 x 512 more
than the code it sits in builds; the counts above are what the official code instantiates.
Checked against the official file itself (not vendored here): the same state-dict keys,
shapes and order for all three, and identical float64 logits at 224 x 224 with shared weights.)

Any input size. mlp_h is a fixed C x C matrix over H * S values, so the official model only
runs when the map side equals the segment count s (32 x 32 tokens at 224 px for the first
stage, 16 x 16 after the transition). Here the height (width) mixing runs inside consecutive
runs of s rows (columns), i.e. in non-overlapping s x s windows: the map is zero-padded at the
bottom (right) to a multiple of s, every window is mixed with the unchanged official matrix,
and the padding is cropped off. Mixing is linear in its inputs, so padded zero tokens add
nothing to the real tokens' outputs (whatever the bias; outputs at padded positions are
discarded), and the reweighting mean is taken over the real tokens of the whole map, as
upstream. At the training size (side == s) there is one window and the computation is
exactly the official one. Why windows rather than resizing the weights: a weight of mlp_h
connects two row positions of an s-row field of view; windows keep that meaning and the
field of view the model was trained with, while interpolating the s x s row-mixing to, say,
the 115 rows of an 800 px detection image stretches every learned relation 3.6x. (Not
measured against resized weights: that needs ImageNet-trained ViP weights.) Cost: the
padding rows, at most s - 1 per axis per stage, in the height/width branches only (800 x 1333:
stage 1 has 115 -> 128 rows, 191 -> 192 columns; after the transition 58 -> 64, 96 -> 96).

Images whose side is not a multiple of 7 are zero-padded at the bottom/right before the
patch embedding, and an odd map is zero-padded before the 2x2 transition, so the maps are
ceil(H / 7) and ceil(H / 14) tokens high and no pixel is dropped.

This module imports only torch and timm. The MMDetection backbone ``ViP`` (this classifier
without head, returning the stage maps; detectors read the last, stride 14, through
``SimpleFeaturePyramid``) lives in mmdet_family.py, registered in mmdet's MODELS.
"""
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, Mlp, trunc_normal_
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

__all__ = ['ViPClassifier', 'WeightedPermuteMLP', 'PermutatorBlock', 'PermutatorStage',
           'PatchEmbed', 'Downsample', 'VIP_SETTINGS', 'ViP']

GLOBAL_POOLS = ('avg', '')


def _check_global_pool(global_pool: str) -> str:
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool must be 'avg' (mean over tokens) or '' (none), "
                         f'got {global_pool!r}')
    return global_pool


def _pad_nhwc(x: torch.Tensor, multiple_h: int, multiple_w: int) -> torch.Tensor:
    """Zero-pad a (B, H, W, C) map at the bottom and right to multiples of the given sizes."""
    pad_h = (multiple_h - x.shape[1] % multiple_h) % multiple_h
    pad_w = (multiple_w - x.shape[2] % multiple_w) % multiple_w
    # always called (a zero pad is a no-op) so that fx tracing sees no data-dependent branch
    return F.pad(x, [0, 0, 0, pad_w, 0, pad_h])


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> C channels; returns NHWC tokens."""

    def __init__(self, patch_size: int = 7, in_chans: int = 3, embed_dim: int = 192):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        pad_h = (p - x.shape[2] % p) % p
        pad_w = (p - x.shape[3] % p) % p
        x = self.proj(F.pad(x, [0, pad_w, 0, pad_h]))
        return x.permute(0, 2, 3, 1)


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
    """ViP's token mixer: height, width and channel Linear branches, mixed by learned weights.

    The height/width branches run in windows of `segment_dim` rows/columns (see the module
    docstring); on a map of side `segment_dim` this is the official computation.
    """

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


class PermutatorStage(nn.Sequential):
    """The blocks of one stage; a Sequential so that block keys are `network.<i>.<j>.*`."""

    def __init__(self, blocks: Sequence[nn.Module], dim: int, reduction: int):
        super().__init__(*blocks)
        self.dim = dim
        self.reduction = reduction


VIP_SETTINGS: Dict[str, Dict[str, Any]] = {
    'vip_s7': dict(layers=(4, 3, 8, 3), embed_dims=(192, 384, 384, 384),
                   segment_dim=(32, 16, 16, 16), transitions=(True, False, False, False)),
    'vip_m7': dict(layers=(4, 3, 14, 3), embed_dims=(256, 256, 512, 512),
                   segment_dim=(32, 32, 16, 16), transitions=(False, True, False, False)),
    'vip_l7': dict(layers=(8, 8, 16, 4), embed_dims=(256, 512, 512, 512),
                   segment_dim=(32, 16, 16, 16), transitions=(True, False, False, False)),
}


class ViPClassifier(nn.Module):
    """Vision Permutator with timm's model API.

    Features are NHWC inside and out of `forward_features`; `forward_intermediates` returns one
    map per stage (NCHW by default). Stride of each stage: patch_size x 2^(transitions so far).
    """

    def __init__(
            self,
            layers: Sequence[int] = (4, 3, 8, 3),
            embed_dims: Sequence[int] = (192, 384, 384, 384),
            segment_dim: Sequence[int] = (32, 16, 16, 16),
            transitions: Sequence[bool] = (True, False, False, False),
            mlp_ratios: Union[float, Sequence[float]] = 3.,
            patch_size: int = 7,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            qkv_bias: bool = False,
            skip_lam: float = 1.0,
            drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            norm_layer=nn.LayerNorm,
            act_layer=nn.GELU,
    ):
        super().__init__()
        num_stages = len(layers)
        if isinstance(mlp_ratios, (int, float)):
            mlp_ratios = (mlp_ratios,) * num_stages
        for name, value in (('embed_dims', embed_dims), ('segment_dim', segment_dim),
                            ('transitions', transitions), ('mlp_ratios', mlp_ratios)):
            if len(value) != num_stages:
                raise ValueError(f'{name} needs one value per stage ({num_stages}), got {value}')
        self.num_classes = num_classes
        self.global_pool = _check_global_pool(global_pool)
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.grad_checkpointing = False

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dims[0])
        total = sum(layers)
        reduction = patch_size
        network: List[nn.Module] = []
        self.num_stages = num_stages
        stage_of: List[int] = []  # per network entry: its stage index, -1: a transition
        self.feature_info = []  # one dict per stage, as timm expects
        for i in range(num_stages):
            # upstream's schedule: block b of all blocks gets drop_path_rate * b / (total - 1)
            dpr = [drop_path_rate * (sum(layers[:i]) + j) / max(total - 1, 1)
                   for j in range(layers[i])]
            blocks = [PermutatorBlock(embed_dims[i], segment_dim[i], mlp_ratios[i], qkv_bias,
                                      proj_drop_rate, dpr[j], skip_lam, act_layer, norm_layer)
                      for j in range(layers[i])]
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=reduction,
                                          module=f'network.{len(network)}'))
            network.append(PermutatorStage(blocks, embed_dims[i], reduction))
            stage_of.append(i)
            if i < num_stages - 1 and (transitions[i] or embed_dims[i] != embed_dims[i + 1]):
                k = 2 if transitions[i] else 1
                network.append(Downsample(embed_dims[i], embed_dims[i + 1], k))
                stage_of.append(-1)
                reduction *= k
        self.network = nn.ModuleList(network)
        self._stage_of = stage_of
        self.norm = norm_layer(embed_dims[-1])
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # as upstream: Linear trunc-normal(0.02) with zero bias, LayerNorm (1, 0), convs default
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
        # no positional or token parameters; timm's optimizer factory already exempts 1-D
        # parameters (norms, biases) from weight decay
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^patch_embed',
            blocks=r'^network\.(\d+)' if coarse else [
                (r'^network\.(\d+)\.(\d+)\.', None),  # block j of stage module i
                (r'^network\.(\d+)\.proj', (0,)),     # a transition, between its neighbours
                (r'^norm', (99999,)),
            ],
        )

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
        """Per-stage maps.

        Args:
            indices: last n stages if int, all if None, these stages if a list.
            norm: apply the final norm to the last stage's map (the only one it fits).
            stop_early: stop after the last stage asked for.
            output_fmt: 'NCHW' or 'NHWC'.
            intermediates_only: return only the list of maps.
        """
        assert output_fmt in ('NCHW', 'NHWC'), 'output_fmt must be NCHW or NHWC'
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        intermediates: List[torch.Tensor] = []
        x = self.patch_embed(x)
        last_stage = -1
        if torch.jit.is_scripting() or not stop_early:  # a ModuleList cannot be sliced in TS
            network = self.network
        else:
            network = self.network[:self._stage_of.index(max_index) + 1]
        for i, module in enumerate(network):
            stage = self._stage_of[i]
            if self.grad_checkpointing and not torch.jit.is_scripting() and stage >= 0:
                x = checkpoint_seq(module, x)  # one checkpoint per block
            else:
                x = module(x)
            if stage >= 0:
                last_stage = stage
                if stage in take_indices:
                    y = self.norm(x) if norm and stage == self.num_stages - 1 else x
                    intermediates.append(y.permute(0, 3, 1, 2) if output_fmt == 'NCHW' else y)
        if intermediates_only:
            return intermediates
        if last_stage == self.num_stages - 1:
            x = self.norm(x)
        return x, intermediates

    @torch.jit.ignore
    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1,
                                  prune_norm: bool = False, prune_head: bool = True) -> List[int]:
        """Drop the stages (and transitions) after the last one `indices` asks for."""
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        keep = self._stage_of.index(max_index) + 1
        self.network = self.network[:keep]
        self._stage_of = self._stage_of[:keep]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, 3, H, W) -> normalized last-stage map (B, H/14, W/14, C), NHWC."""
        x = self.patch_embed(x)
        for i, module in enumerate(self.network):
            if self.grad_checkpointing and not torch.jit.is_scripting() and self._stage_of[i] >= 0:
                x = checkpoint_seq(module, x)  # one checkpoint per block
            else:
                x = module(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == 'avg':
            x = x.mean(dim=(1, 2))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ---- timm registration --------------------------------------------------------------------

def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, Any]:
    """Accept the official checkpoints as saved by timm's training script (possibly wrapped)."""
    for key in ('state_dict_ema', 'state_dict', 'model'):
        if isinstance(state_dict, dict) and key in state_dict and isinstance(state_dict[key], dict):
            state_dict = state_dict[key]
            break
    return {k[7:] if k.startswith('module.') else k: v for k, v in state_dict.items()}


def _cfg(**kwargs) -> Dict[str, Any]:
    return {
        'url': '', 'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (16, 16),
        'crop_pct': 0.9, 'interpolation': 'bicubic', 'fixed_input_size': False,
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'patch_embed.proj', 'classifier': 'head', 'license': 'mit',
        'paper_ids': 'arXiv:2106.12368', 'origin_url': 'https://github.com/houqb/VisionPermutator',
        **kwargs,
    }


# The official weights are on Google Drive (see the upstream README), not on a hub timm can
# fetch: load them with pretrained=True, pretrained_cfg_overlay=dict(file=PATH).
default_cfgs = generate_default_cfgs({
    'vip_s7.in1k': _cfg(crop_pct=0.875),  # crop_pct as in the official default cfgs
    'vip_m7.in1k': _cfg(crop_pct=0.9),
    'vip_l7.in1k': _cfg(crop_pct=0.9),
})


def _create_vip(variant: str, pretrained: bool = False, **kwargs) -> ViPClassifier:
    model_args = dict(VIP_SETTINGS[variant], mlp_ratios=3., patch_size=7)
    model_args.update(kwargs)
    return build_model_with_cfg(
        ViPClassifier, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls='getter', out_indices=(0, 1, 2, 3)),
        **model_args)


@register_model
def vip_s7(pretrained: bool = False, **kwargs) -> ViPClassifier:
    """ViP-Small/7: 25.1M parameters, 81.5% ImageNet top-1 (paper)."""
    return _create_vip('vip_s7', pretrained, **kwargs)


@register_model
def vip_m7(pretrained: bool = False, **kwargs) -> ViPClassifier:
    """ViP-Medium/7: 55.3M parameters, 82.7% ImageNet top-1 (paper)."""
    return _create_vip('vip_m7', pretrained, **kwargs)


@register_model
def vip_l7(pretrained: bool = False, **kwargs) -> ViPClassifier:
    """ViP-Large/7: 87.8M parameters, 83.2% ImageNet top-1 (paper)."""
    return _create_vip('vip_l7', pretrained, **kwargs)
