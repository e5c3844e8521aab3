"""The input sizes an exported PosMLP accepts, and why they come in residue classes.

A stage cuts its map into up to four regions of same-shaped windows (whole, right edge, bottom edge,
corner): which regions exist and the size of the clipped windows are Python integers, fixed per
size, so an exported program is specialised on that layout. That layout is the same for all sizes
congruent to the export size modulo the period L (:func:`window_period`; 224 for PosMLP-T/S/B:
16 x 14 and 32 x 7) from two periods up: H = L * k + (H0 mod L), k >= 2 (at k = 0 or 1 some stage
has no whole window or a single one). mmdet pads inputs to multiples of 32 only, so a deployment
that feeds arbitrary images must pad to the rule's sizes, or export at a fixed size.
"""
import dataclasses
import math
from typing import Sequence, Tuple

import torch.nn as nn

from ..models.posmlp import PosMLPStage

MAX_SIDE = 4096           # largest height / width a dynamic export is made for


class ExportError(RuntimeError):
    """The export cannot be done as asked; the message says why and what to do instead."""


@dataclasses.dataclass(frozen=True)
class SizeRule:
    """Input sizes an exported model accepts: static, exactly ``size``; dynamic,
    ``H = period * k + remainder[0]`` between ``minimum[0]`` and ``maximum[0]``, same for W."""
    size: Tuple[int, int]                        # the export size
    period: int = 0                              # 0: static
    remainder: Tuple[int, int] = (0, 0)
    minimum: Tuple[int, int] = (0, 0)
    maximum: Tuple[int, int] = (0, 0)

    @property
    def dynamic(self) -> bool:
        return self.period > 0

    def accepts(self, height: int, width: int) -> bool:
        if not self.dynamic:
            return (height, width) == tuple(self.size)
        return all(lo <= s <= hi and s % self.period == r for s, r, lo, hi in zip(
            (height, width), self.remainder, self.minimum, self.maximum))

    def check(self, height: int, width: int) -> None:
        if not self.accepts(height, width):
            raise ExportError(f'input size {height}x{width} is not one this model was exported '
                              f'for: {self.describe()}')

    def describe(self) -> str:
        if not self.dynamic:
            return f'static, H x W = {self.size[0]} x {self.size[1]}'
        sides = [f'{n} = {self.period}k + {r} in [{lo}, {hi}]' for n, r, lo, hi in zip(
            'HW', self.remainder, self.minimum, self.maximum)]
        return f'dynamic, {sides[0]}, {sides[1]}'

    def next_size(self, height: int, width: int) -> Tuple[int, int]:
        """Another accepted size: one period up on both sides (down at the top of the range)."""
        up = (height + self.period, width + self.period)
        return up if self.accepts(*up) else (height - self.period, width - self.period)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> 'SizeRule':
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _conv_stride(module: nn.Module) -> int:
    return math.prod(m.stride[0] for m in module.modules() if isinstance(m, nn.Conv2d))


def window_period(model: nn.Module) -> int:
    """The period L (module docstring): the least common multiple of stride x window over the PosMLP
    stages of ``model`` (adding it to H adds whole windows to every stage) and of the total stride.
    A stage's stride is that of the convolutions before it (the stem's) and in its own downsampling,
    each a 3x3 stride-2 convolution with padding 1, so stage i sees ceil(H / stride_i). The
    convolutions are read, not the stem's class (``fuse()`` turns the stem into plain layers) or a
    ``feature_info`` (the mmdet backbone has none)."""
    period, stride = 1, 1
    for m in model.modules():  # in order: the stem, then each stage and its downsampling
        if isinstance(m, PosMLPStage):
            if stride == 1:
                raise ExportError('a PosMLP stage without a stem before it: cannot work out its '
                                  'stride')
            period = math.lcm(period, stride * _conv_stride(m.pool) * m.window)
        elif isinstance(m, nn.Conv2d):
            stride *= m.stride[0]
    # and the network's whole stride: adding it adds whole pixels to every map, so each
    # convolution cuts its input the same way (for models without windows, e.g. CycleMLP)
    return math.lcm(period, stride)


def size_rule(model: nn.Module, size: Sequence[int], dynamic: bool) -> SizeRule:
    """The sizes an export at ``size`` accepts (lower bound refined by :func:`export_program`)."""
    h, w = check_size(size)
    if not dynamic:
        return SizeRule((h, w))
    period = window_period(model)
    rem = (h % period, w % period)
    top = tuple(period * ((MAX_SIDE - r) // period) + r for r in rem)
    return SizeRule((h, w), period, rem, rem, top)


def check_size(size: Sequence[int]) -> Tuple[int, int]:
    if len(size) != 2 or not all(int(s) == s and s > 0 for s in size):
        raise ExportError(f'the export size must be two positive integers H W, got {size}')
    return int(size[0]), int(size[1])
