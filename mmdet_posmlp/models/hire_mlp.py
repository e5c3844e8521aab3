"""Hire-MLP: Vision MLP via Hierarchical Rearrangement (Guo et al., CVPR 2022, arXiv:2108.13341).

A four-stage, convolution-free-mixing MLP. Every spatial interaction happens in the token
mixer `HireMLPMixer` through *rearrangement*: tokens are moved into the channel axis, mixed by
ordinary 1x1 convolutions (channel MLPs) and moved back.

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

The module tree (``patch_embed``, ``network.{0..6}``, ``norm``, ``head``, and inside a block
``norm1``/``attn``/``norm2``/``mlp``) mirrors the official implementation
(ggjy/Hire-Wave-MLP.pytorch, ``mlp_based/hire_mlp.py``) name for name, so its checkpoints load
with ``strict=True``. That is also why stages and downsamples alternate in one flat ModuleList
instead of living in per-stage modules.

HireBlock (pre-norm, BatchNorm instead of LayerNorm, NCHW throughout)::

    x = x + DropPath(HireMLPMixer(BN(x)))
    x = x + DropPath(Mlp(BN(x)))          Mlp = 1x1 conv (dim -> 4 dim), GELU, 1x1 conv

HireMLPMixer(x), x with C channels, region size ``pixel`` = p, shift ``step`` = s:

* height branch -- cross-region rearrangement: roll x by s rows (circularly) so that regions
  straddle the previous block's region borders; pad H circularly to a multiple of p; inner-region
  rearrangement: fold every p consecutive rows into channels (C*p channels, H/p rows); channel MLP
  1x1 conv C*p -> C/2 (no bias), BatchNorm, ReLU, 1x1 conv C/2 -> C*p (bias); unfold the rows,
  crop to H, roll back by -s.
* width branch -- the same along W.
* channel branch -- 1x1 conv C -> C.
* split attention: a = softmax over the three branches of Mlp(C -> C/4 -> 3C) applied to the
  spatial mean of (h + w + c); out = proj(a_h * h + a_w * w + a_c * c), proj a 1x1 conv.

Within a stage the shift alternates as s_j = (j mod step_stride) * step_dilation for block j,
so blocks with s = 0 and s > 0 interleave, like Swin's shifted windows.

Any input size: the stem needs H, W >= 3 (a clear error otherwise); every later map size, even
1 x 1, works. The official code pads with ``F.pad(mode='circular')``, which refuses a pad larger
than the padded dimension (e.g. a 1-row map with p = 3 needs 2 rows of padding); here the
padding keeps wrapping around (index i of the padded axis reads i mod H), which is identical to
the official result wherever the official code runs and its natural periodic continuation
elsewhere. Rolls wrap modulo the size, so s >= H is fine too. BatchNorm in training mode still
needs more than one value per channel (batch size > 1 for 1 x 1 maps): PyTorch raises then.

Variants (published: parameters / MACs at 224 / ImageNet top-1; README of the official repo):
hire_mlp_tiny 18M / 2.1G / 79.7 (dims 64-128-320-512, depths 2-2-4-2),
hire_mlp_small 33M / 4.2G / 81.8-82.1 (depths 3-4-10-3),
hire_mlp_base 58M / 8.1G / 83.1-83.2 (depths 4-6-24-3),
hire_mlp_large 96M / 13.4-13.5G / 83.4-83.8 (dims 96-192-384-768, depths 4-6-24-3).

This module imports only torch and timm. The MMDetection backbone ``HireMLP`` (this classifier
without head, returning the stage maps for an FPN, each through a new BatchNorm as in the
authors' dense-prediction code) lives in mmdet_family.py, registered in mmdet's MODELS.
"""
from typing import Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, Mlp, SelectAdaptivePool2d, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from timm.layers import register_notrace_module

__all__ = [
    'HireMLPClassifier', 'HireMLPMixer', 'HireBlock', 'HireStem', 'HireDownsample',
    'circular_pad_end', 'checkpoint_filter_fn', 'HireMLP',
]

# the pooling types whose output has num_features channels, so the official head still fits
_POOL_TYPES = ('', 'avg', 'max', 'avgmax')


def circular_pad_end(x: torch.Tensor, pad: int, dim: int) -> torch.Tensor:
    """Append `pad` entries to `dim` that continue x periodically (entry i reads i mod size).

    Equal to ``F.pad(x, ..., mode='circular')`` padded on the far side only, as the official
    code does, but also defined when pad exceeds the size (F.pad refuses that).
    """
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
        self.dim = dim
        self.pixel = pixel
        self.step = step
        # the region MLPs squeeze C*pixel -> C/2; BN sits in the bottleneck, so the first conv
        # has no bias of its own
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
        """Shift by `step` along `axis` (2 = H, 3 = W), pad to whole regions, fold regions into C."""
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
        a = self.reweight(a).reshape(B, C, 3).softmax(dim=2)
        a = a.reshape(B, C, 3, 1, 1)
        x = h * a[:, :, 0] + w * a[:, :, 1] + c * a[:, :, 2]
        return self.proj_drop(self.proj(x))


class HireBlock(nn.Module):
    """x + DropPath(mixer(BN(x))), then x + DropPath(Mlp(BN(x)))."""

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
    """Overlapping patch embedding: Conv 7x7 / 4 (pad 2) -> BN -> ReLU (official ``patch_embed``)."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=7, stride=4, padding=2)
        self.norm = nn.BatchNorm2d(dim)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a 7x7 kernel over 2 pixels of padding needs 3 input pixels to produce one output
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


def _per_stage(value, n: int, name: str) -> tuple:
    if isinstance(value, (int, float)):
        return (value,) * n
    value = tuple(value)
    if len(value) != n:
        raise ValueError(f'{name} needs {n} entries (one per stage), got {value}')
    return value


class HireMLPClassifier(nn.Module):
    """Hire-MLP image classifier with timm's model API (see the module docstring)."""

    def __init__(
            self,
            num_classes: int = 1000,
            in_chans: int = 3,
            global_pool: str = 'avg',
            embed_dims: Sequence[int] = (64, 128, 320, 512),
            depths: Sequence[int] = (2, 2, 4, 2),
            pixel: Sequence[int] = (4, 3, 3, 2),
            step_stride: Sequence[int] = (2, 2, 3, 2),
            step_dilation: Sequence[int] = (2, 2, 1, 1),
            mlp_ratio: Union[float, Sequence[float]] = 4.,
            drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
    ):
        """
        Args:
            num_classes: classes of the head; 0 removes it (forward returns pooled features).
            in_chans: image channels.
            global_pool: one of '', 'avg', 'max', 'avgmax' ('' only with num_classes=0).
            embed_dims, depths: channels and blocks per stage.
            pixel: region size (rows / columns folded together) per stage.
            step_stride, step_dilation: block j of a stage shifts by
                (j % step_stride) * step_dilation tokens.
            mlp_ratio: hidden width of the channel MLP, per stage or one for all.
            drop_rate: dropout before the head.
            proj_drop_rate: dropout after the mixer and inside the channel MLP.
            drop_path_rate: stochastic depth, rising linearly from 0 over all blocks.
        """
        super().__init__()
        n = len(depths)
        embed_dims = _per_stage(embed_dims, n, 'embed_dims')
        pixel = _per_stage(pixel, n, 'pixel')
        step_stride = _per_stage(step_stride, n, 'step_stride')
        step_dilation = _per_stage(step_dilation, n, 'step_dilation')
        mlp_ratio = _per_stage(mlp_ratio, n, 'mlp_ratio')
        self._check_pool(global_pool, num_classes)

        self.num_classes = num_classes
        self.num_stages = n
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.patch_embed = HireStem(in_chans, embed_dims[0])
        total = sum(depths)
        # the official schedule rate * k / (total - 1); plain floats so meta-device builds work
        dpr = [drop_path_rate * k / max(total - 1, 1) for k in range(total)]
        network = []
        self.feature_info = []
        for i in range(n):
            if i > 0:
                network.append(HireDownsample(embed_dims[i - 1], embed_dims[i]))
            first = sum(depths[:i])
            network.append(nn.Sequential(*[
                HireBlock(
                    embed_dims[i], pixel=pixel[i], step=(j % step_stride[i]) * step_dilation[i],
                    mlp_ratio=mlp_ratio[i], proj_drop=proj_drop_rate, drop_path=dpr[first + j])
                for j in range(depths[i])]))
            self.feature_info.append(dict(
                num_chs=embed_dims[i], reduction=4 * 2 ** i, module=f'network.{2 * i}'))
        self.network = nn.ModuleList(network)

        self.norm = nn.BatchNorm2d(self.num_features)
        self.global_pool = self._make_pool(global_pool)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # as the official training: truncated normal 0.02 for every conv and linear, zero biases
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @staticmethod
    def _make_pool(global_pool: str) -> nn.Module:
        # '' passes the map through unflattened (timm's flatten=True would flatten it)
        return SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))

    @staticmethod
    def _check_pool(global_pool: str, num_classes: int) -> None:
        if global_pool not in _POOL_TYPES:
            raise ValueError(
                f'global_pool={global_pool!r} is not supported by Hire-MLP; use one of '
                f'{_POOL_TYPES}, the pools that keep num_features channels for the head')
        if global_pool == '' and num_classes > 0:
            raise ValueError("global_pool='' (no pooling) needs num_classes=0: the linear head "
                             'cannot take an unpooled map')

    # ---- timm API ---------------------------------------------------------------------------

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        # no positional parameters; BN weights and biases are exempted by timm's optimizer factory
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict:
        if coarse:
            blocks = r'^network\.(\d+)'  # whole stages, downsamples between them
        else:
            blocks = [
                (r'^network\.(\d+)\.(\d+)\.', None),  # single blocks
                (r'^network\.(\d+)\.(?:proj|norm)\.', (0,)),  # downsample before a stage
                (r'^norm\.', (99999,)),
            ]
        return dict(stem=r'^patch_embed', blocks=blocks)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        self._check_pool(global_pool, num_classes)
        self.num_classes = num_classes
        self.global_pool = self._make_pool(global_pool)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    @torch.jit.ignore
    def _run_layer(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and isinstance(layer, nn.Sequential) and torch.is_grad_enabled():
            # one checkpoint per block: only block inputs are kept, each block is recomputed
            # during backward (BN running statistics are then updated twice per step, as in timm)
            for block in layer:
                x = checkpoint(block, x, use_reentrant=False)
            return x
        return layer(x)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Outputs of the selected stages (0-3, strides 4-32), timm 1.0 semantics.

        Args:
            indices: None for all stages, an int n for the last n, or a list of stage indices.
            norm: apply the final BatchNorm to the last stage's output when it is taken.
            stop_early: skip the stages after the last selected one.
            output_fmt: 'NCHW' or 'NHWC' for the intermediates.
            intermediates_only: return only the list of intermediates.
        """
        if output_fmt not in ('NCHW', 'NHWC'):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        # count the stages present now, so that after pruning negative indices count from the
        # last kept stage, as in timm
        take_indices, max_index = feature_take_indices((len(self.network) + 1) // 2, indices)
        last_idx = self.num_stages - 1  # the final norm is sized for the model's last stage
        # stage i is network[2 * i]; stopping early drops what follows the last stage taken
        end = 2 * max_index + 1 if stop_early else len(self.network)

        intermediates = []
        x = self.patch_embed(x)
        for i, layer in enumerate(self.network):
            if i >= end:
                break
            x = self._run_layer(layer, x)
            stage = i // 2
            if i % 2 == 0 and stage in take_indices:
                x_inter = self.norm(x) if norm and stage == last_idx else x
                if output_fmt == 'NHWC':
                    x_inter = x_inter.permute(0, 2, 3, 1).contiguous()
                intermediates.append(x_inter)

        if intermediates_only:
            return intermediates
        if end == 2 * last_idx + 1:  # the final norm belongs to the last stage only
            x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages after the last one in `indices` (and the norm / head if asked)."""
        take_indices, max_index = feature_take_indices((len(self.network) + 1) // 2, indices)
        prune_end = max_index < (len(self.network) + 1) // 2 - 1
        self.network = self.network[:2 * max_index + 1]
        if prune_norm or prune_end:
            # the final norm is sized for, and only applied to, the last stage
            self.norm = nn.Identity()
        if prune_end:
            # forward_features now ends at the last kept stage; the head was sized for the old end
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
        if prune_head or prune_end:
            self.reset_classifier(0, '')
        return take_indices

    def forward_stages(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The four stage outputs (strides 4, 8, 16, 32), for dense prediction backbones."""
        return self.forward_intermediates(x, intermediates_only=True)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            for layer in self.network:
                x = self._run_layer(layer, x)
        else:
            for layer in self.network:
                x = layer(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ---- timm registration ------------------------------------------------------------------------

def checkpoint_filter_fn(state_dict: Dict, model: nn.Module) -> Dict:
    """Unwrap the official training checkpoint ({'model': state_dict, ...}); names already match."""
    for key in ('model', 'state_dict', 'model_ema'):
        if key in state_dict and isinstance(state_dict[key], dict):
            state_dict = state_dict[key]
            break
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state_dict.items()}


def _cfg(url: str = '', **kwargs) -> Dict:
    return {
        'url': url, 'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.9, 'interpolation': 'bicubic', 'fixed_input_size': False,
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'patch_embed.proj', 'classifier': 'head', 'license': 'mit',
        'paper_ids': 'arXiv:2108.13341', 'paper_name': 'Hire-MLP: Vision MLP via Hierarchical Rearrangement',
        'origin_url': 'https://github.com/ggjy/Hire-Wave-MLP.pytorch',
        **kwargs,
    }


_RELEASE = 'https://github.com/ggjy/Hire-Wave-MLP.pytorch/releases/download/log/'
default_cfgs = generate_default_cfgs({
    'hire_mlp_tiny.in1k': _cfg(url=_RELEASE + 'hire_mlp_tiny.pth'),
    'hire_mlp_small.in1k': _cfg(url=_RELEASE + 'hire_mlp_small.pth'),
    'hire_mlp_base.in1k': _cfg(url=_RELEASE + 'hire_mlp_base.pth'),
    'hire_mlp_large.untrained': _cfg(),  # the official repository published no Large weights
})

_ARCHS = {
    'hire_mlp_tiny': dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 4, 2)),
    'hire_mlp_small': dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 10, 3)),
    'hire_mlp_base': dict(embed_dims=(64, 128, 320, 512), depths=(4, 6, 24, 3)),
    'hire_mlp_large': dict(embed_dims=(96, 192, 384, 768), depths=(4, 6, 24, 3)),
}


def _create(variant: str, pretrained: bool = False, **kwargs) -> HireMLPClassifier:
    # pixel (4, 3, 3, 2), step_stride (2, 2, 3, 2), step_dilation (2, 2, 1, 1) and mlp_ratio 4
    # are shared by all four variants: the constructor's defaults
    model_args = dict(_ARCHS[variant], **kwargs)
    return build_model_with_cfg(
        HireMLPClassifier, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls='getter', out_indices=(0, 1, 2, 3)),
        **model_args)


@register_model
def hire_mlp_tiny(pretrained: bool = False, **kwargs) -> HireMLPClassifier:
    """Hire-MLP-Tiny: 18,041,672 parameters, 2.1G MACs, 79.7% ImageNet top-1 (published)."""
    return _create('hire_mlp_tiny', pretrained, **kwargs)


@register_model
def hire_mlp_small(pretrained: bool = False, **kwargs) -> HireMLPClassifier:
    """Hire-MLP-Small: 33,113,848 parameters, 4.2G MACs, 81.8% ImageNet top-1 (published)."""
    return _create('hire_mlp_small', pretrained, **kwargs)


@register_model
def hire_mlp_base(pretrained: bool = False, **kwargs) -> HireMLPClassifier:
    """Hire-MLP-Base: 58,226,856 parameters, 8.1G MACs, 83.1% ImageNet top-1 (published)."""
    return _create('hire_mlp_base', pretrained, **kwargs)


@register_model
def hire_mlp_large(pretrained: bool = False, **kwargs) -> HireMLPClassifier:
    """Hire-MLP-Large: 95,723,944 parameters, 13.5G MACs, 83.4% ImageNet top-1 (published)."""
    return _create('hire_mlp_large', pretrained, **kwargs)
