"""A simple feature pyramid: a detector's multi-scale maps from ONE backbone map.

From ViTDet (Li et al., "Exploring Plain Vision Transformer Backbones for Object Detection", ECCV
2022): the map is resampled to each level by a branch of its own, no top-down or lateral fusion.

    input: the LAST map of the backbone outputs, C channels, stride s
    per scale factor f:
        f = 4:    ConvTranspose 2x2/2 (C -> C/2) -> norm -> GELU -> ConvTranspose 2x2/2 (-> C/4)
        f = 2:    ConvTranspose 2x2/2 (C -> C/2)
        f = 1:    identity
        f = 1/k:  max-pool k x k, stride k, ceil mode (k = 2, 4, 8): h x w -> ceil(h/k) x ceil(w/k),
                  so odd sizes keep their last row and column
        then:     Conv 1x1 -> out_channels, norm;  Conv 3x3 -> out_channels, norm
    extra levels (num_outs > len(scale_factors)): max-pool 1x1 stride 2 of the previous output,
    as mmdet's FPN does without extra convs (RetinaNet's P6 / P7).

Output map i has stride s / f_i, doubled for each extra level; the detector must be told so (the
anchor generator's `strides`, the RoI extractor's `featmap_strides`):

    | backbone (map used)        | s  | scale_factors         | num_outs | strides                |
    |----------------------------|----|-----------------------|----------|------------------------|
    | ViP /7 (last stage)        | 14 | (2, 1, 0.5, 0.25)     | 4        | 7, 14, 28, 56          |
    | ViP /7, RetinaNet          | 14 | (2, 1, 0.5, 0.25)     | 5        | 7, 14, 28, 56, 112     |
    | ViP /7                     | 14 | (4, 2, 1, 0.5)        | 4        | 3.5, 7, 14, 28 (avoid) |
    | S2-MLP p = 16              | 16 | (4, 2, 1, 0.5)        | 4        | 4, 8, 16, 32           |
    | S2-MLP p = 16, RetinaNet   | 16 | (2, 1, 0.5)           | 5        | 8, 16, 32, 64, 128     |
    | ViT-style p = 16 (ViTDet)  | 16 | (4, 2, 1, 0.5)        | 5        | 4, 8, 16, 32, 64       |

Norm: `LN2d` (the default; `LN` is the same), a LayerNorm over each position's channels, as ViTDet:
independent of the batch (detection trains with 2 images per GPU, too few for BatchNorm), and unlike
GroupNorm(32) it takes any width (the x4 branch of a 192-channel map has 48 channels). It is timm's
`LayerNorm2d`, an `nn.LayerNorm`, so optimizer rules by type (the recipe's `norm_decay_mult`) find
it. Any mmcv norm (`GN`, `BN`, `SyncBN`) may replace it. Convolutions before a norm have no bias.
"""
from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from timm.layers import LayerNorm2d

from mmdet.registry import MODELS

__all__ = ['SimpleFeaturePyramid', 'LayerNorm2d']


def build_norm(norm_cfg: dict, channels: int) -> nn.Module:
    cfg = dict(norm_cfg)
    kind = cfg.pop('type')
    if kind in ('LN2d', 'LN'):
        cfg.pop('requires_grad', None)
        return LayerNorm2d(channels, **cfg)
    return build_norm_layer(dict(type=kind, **cfg), channels)[1]


def _resample(scale: float, channels: int, norm_cfg: dict) -> Tuple[nn.Module, int]:
    """The branch that brings the input to `scale` times its size; returns it and its width."""
    if scale == 4.0:
        return nn.Sequential(OrderedDict(
            up1=nn.ConvTranspose2d(channels, channels // 2, 2, stride=2),
            norm=build_norm(norm_cfg, channels // 2),
            act=nn.GELU(),
            up2=nn.ConvTranspose2d(channels // 2, channels // 4, 2, stride=2),
        )), channels // 4
    if scale == 2.0:
        return nn.ConvTranspose2d(channels, channels // 2, 2, stride=2), channels // 2
    if scale == 1.0:
        return nn.Identity(), channels
    k = round(1.0 / scale) if scale > 0 else 0
    if k in (2, 4, 8) and abs(scale * k - 1.0) < 1e-9:
        return nn.MaxPool2d(k, stride=k, ceil_mode=True), channels
    raise ValueError(f'scale factor {scale} is not one of 4, 2, 1, 0.5, 0.25, 0.125')


@MODELS.register_module()
class SimpleFeaturePyramid(BaseModule):
    """Feature pyramid from the last backbone map (see the module docstring for strides).

    Args:
        in_channels (int | Sequence[int]): Channels of the backbone outputs; the last is used.
        scale_factors (Sequence[float]): One output each, in order, among 4, 2, 1, 0.5, 0.25, 0.125.
        num_outs (int, optional): Total outputs, extra levels included. Default: len(scale_factors).
        norm_cfg (dict): Norm after each conv (and inside the x4 branch)."""

    def __init__(self, in_channels: Union[int, Sequence[int]], out_channels: int = 256,
                 scale_factors: Sequence[float] = (2.0, 1.0, 0.5, 0.25),
                 num_outs: Optional[int] = None, norm_cfg: dict = dict(type='LN2d', eps=1e-6),
                 init_cfg: Union[dict, List[dict], None] = dict(
                     type='Xavier', layer=['Conv2d', 'ConvTranspose2d'], distribution='uniform')):
        super().__init__(init_cfg=init_cfg)
        if not isinstance(in_channels, int):
            in_channels = list(in_channels)[-1]
        scale_factors = tuple(float(f) for f in scale_factors)
        if not scale_factors:
            raise ValueError('scale_factors is empty')
        num_outs = len(scale_factors) if num_outs is None else num_outs
        if num_outs < len(scale_factors):
            raise ValueError(f'num_outs ({num_outs}) < number of scale factors '
                             f'({len(scale_factors)})')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.scale_factors = scale_factors
        self.num_outs = num_outs
        self.branches = nn.ModuleList()
        for scale in scale_factors:
            resample, width = _resample(scale, in_channels, norm_cfg)
            self.branches.append(nn.Sequential(OrderedDict(
                resample=resample,
                lateral_conv=nn.Conv2d(width, out_channels, 1, bias=False),
                lateral_norm=build_norm(norm_cfg, out_channels),
                output_conv=nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                output_norm=build_norm(norm_cfg, out_channels),
            )))

    def strides(self, backbone_stride: float) -> List[float]:
        """The stride of each output for a backbone map of `backbone_stride`."""
        strides = [backbone_stride / f for f in self.scale_factors]
        for _ in range(self.num_outs - len(strides)):
            strides.append(strides[-1] * 2)
        return strides

    def forward(self, inputs: Union[torch.Tensor, Sequence[torch.Tensor]]
                ) -> Tuple[torch.Tensor, ...]:
        x = inputs if isinstance(inputs, torch.Tensor) else inputs[-1]
        if x.shape[1] != self.in_channels:
            raise ValueError(f'expected a map of {self.in_channels} channels, got {x.shape[1]}')
        outs = [branch(x) for branch in self.branches]
        for _ in range(self.num_outs - len(outs)):
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)
