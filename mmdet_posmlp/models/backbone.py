"""PosMLP as an MMDetection backbone: multi-scale NCHW features for FPN."""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from mmdet.registry import MODELS

from .common import fuse_modules
from .weights import load_backbone_weights
from .posmlp import LN_EPS, MIXERS, ConvStem, build_stages, init_posmlp_weights, resolve_arch


def _per_stage(value, name: str, num_stages: int) -> Optional[tuple]:
    if value is None:
        return None
    if isinstance(value, int):
        return (value,) * num_stages
    value = tuple(value)
    if len(value) != num_stages:
        raise ValueError(f'PosMLP: {name} needs one value per stage ({num_stages}), got {value}')
    return value


def _stage_of(key: str) -> int:
    """i for a 'levels.{i}.' key, -1 for any other."""
    parts = key.split('.')
    return int(parts[1]) if len(parts) > 2 and parts[0] == 'levels' and parts[1].isdigit() else -1


@MODELS.register_module()
class PosMLP(BaseModule):
    """PosMLP backbone (ACM MM 2022) for dense prediction.

    Args:
        arch (str | dict): 'tiny' | 'small' | 'base', or a dict with embed_dims, depths,
            windows, groups and mlp_ratios (one value per stage).
        in_channels (int): Input image channels.
        mixer (str): Token mixer: 'gqpe' (default), 'lrpe', or 'sgu' (dense, ablation).
        windows (int | Sequence[int], optional): Window size per stage, overriding the arch.
            Window-dependent pretrained parameters are resized to it on loading.
        groups (int | Sequence[int], optional): Channel groups per stage, overriding the arch
            (1 = ungrouped mixing).
        out_indices (Sequence[int]): Stages whose outputs are returned (strides 4/8/16/32).
            Only the stages up to the last one returned are built (``levels.0`` ..
            ``levels.{max(out_indices)}``, the classifier's names), so every parameter takes
            part in the loss and DistributedDataParallel needs no
            ``find_unused_parameters``; an ImageNet checkpoint's later stages (and its final
            norm, when the last stage is not kept) are dropped on loading.
        out_norm (bool): Apply a LayerNorm (`norm{i}`) to each returned map.
        drop_rate (float): Dropout after each block's output projection.
        drop_path_rate (float): Stochastic depth, ramped linearly over all blocks.
        frozen_stages (int): -1 trains everything; 0 freezes the stem; k also freezes stages
            1..k (and their output norms).
        norm_eval (bool): Keep BatchNorm layers (the stem's) in eval mode while training.
        with_cp (bool): Activation checkpointing per block: less memory, more compute.
        shift (bool): Every second block of a stage works on the window grid moved by half a
            window (Swin's shifted windows; not in the reference). No new parameters, so the
            ImageNet weights load as they are.
        pretrained (str, optional): Deprecated, use init_cfg=dict(type='Pretrained', checkpoint=...).
        init_cfg (dict | list[dict], optional): Initialisation; 'Pretrained' accepts the
            reference's checkpoints, timm state dicts and converted backbone checkpoints, and is
            applied after the other entries. Invalid values raise here, naming the argument.
    """

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 mixer: str = 'gqpe',
                 windows: Union[int, Sequence[int], None] = None,
                 groups: Union[int, Sequence[int], None] = None,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 out_norm: bool = True,
                 drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 shift: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[dict] = None):
        from .init_args import check_init_args
        # raises naming the argument: wrong types, both set, a 'Pretrained' without a string
        # checkpoint, an unknown initializer type
        super().__init__(init_cfg=check_init_args('PosMLP', pretrained, init_cfg))

        setting = resolve_arch(arch)
        num_stages = len(setting['depths'])
        for key, value in (('windows', windows), ('groups', groups)):
            value = _per_stage(value, key, num_stages)
            if value is not None:
                setting[key] = value
        setting = resolve_arch(setting)  # re-validate with the overrides
        if mixer not in MIXERS:
            raise KeyError(f"PosMLP: unknown mixer '{mixer}', choose one of {MIXERS}")
        out_indices = tuple(out_indices)
        bad = [i for i in out_indices if not 0 <= i < num_stages]
        if bad or not out_indices:
            raise ValueError(f'PosMLP: out_indices {out_indices} must be non-empty stage indices '
                             f'in [0, {num_stages - 1}]')
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'PosMLP: frozen_stages={frozen_stages} must be in [-1, {num_stages}]')

        self.setting = setting
        self.mixer = mixer
        self.out_indices = out_indices
        self.out_norm = out_norm
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.num_stages = num_stages
        self.num_features = [setting['embed_dims'][i] for i in range(num_stages)]

        # Same module names as the classifier, so ImageNet weights map one to one.
        self.patch_embed = ConvStem(in_channels, setting['embed_dims'][0])
        # All stages are built (drop path ramps over all blocks, as in the classifier), then
        # the ones after the last output are dropped: a parameter that never reaches the loss
        # gets no gradient, and DDP (find_unused_parameters=False) stops on it. Slicing an
        # nn.Sequential keeps the names levels.0 .. levels.k.
        levels = build_stages(setting, mixer, drop_rate, drop_path_rate, with_cp, shift)
        self.levels = levels[:max(out_indices) + 1]
        if out_norm:
            for i in out_indices:
                self.add_module(f'norm{i}', nn.LayerNorm(self.num_features[i], eps=LN_EPS))
        self._freeze_stages()

    # ------------------------------------------------------------------ init and loading
    def init_weights(self) -> None:
        from .init_args import split_pretrained
        path, others = split_pretrained(self.init_cfg)
        init_posmlp_weights(self)  # whatever the checkpoint does not hold starts as in training
        if others is not None:  # mmengine's initializers, before the checkpoint (as mmengine)
            init_cfg, self.init_cfg = self.init_cfg, others
            try:
                super().init_weights()
            finally:
                self.init_cfg = init_cfg
        if path is None:
            return
        # The classifier's final norm normalises the last stage: it becomes that stage's output
        # norm only where the last stage is kept and returned (norm{num_stages - 1} exists).
        last_norm = f'norm{self.num_stages - 1}'
        target = self.state_dict()
        state, report = load_backbone_weights(
            path, target, final_norm=last_norm if hasattr(self, last_norm) else None)
        # the stages after the last output were not built: their weights are expected to go
        pruned = {k for k in state if k not in target and _stage_of(k) >= len(self.levels)}
        state = {k: v for k, v in state.items() if k not in pruned}
        result = self.load_state_dict(state, strict=False)
        stages = (f' and {len(pruned)} of the stages after the last output (levels.'
                  f'{len(self.levels)}..{self.num_stages - 1}, not built)' if pruned else '')
        print_log(f'PosMLP: loaded {len(state)} tensors from {path} '
                  f'({report["source"][0]}); dropped {len(report["dropped"])} '
                  '(classifier head, window-derived buffers, the final norm unless the last '
                  f'stage is returned){stages}', logger='current')
        for line in report['renamed'] + report['resized']:
            print_log(f'PosMLP: {line}', logger='current')
        if result.missing_keys:
            print_log(f'PosMLP: missing keys (kept at initialisation): {result.missing_keys}',
                      logger='current', level=30)
        if result.unexpected_keys:
            print_log(f'PosMLP: unexpected keys (ignored): {result.unexpected_keys}',
                      logger='current', level=30)
        self._is_init = True

    # ------------------------------------------------------------------ training modes
    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:
            self._freeze(self.patch_embed)
        for i in range(min(self.frozen_stages, len(self.levels))):
            self._freeze(self.levels[i])
            if hasattr(self, f'norm{i}'):
                self._freeze(getattr(self, f'norm{i}'))

    @staticmethod
    def _freeze(module: nn.Module) -> None:
        module.eval()
        for p in module.parameters():
            p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def fuse(self) -> 'PosMLP':
        """Deployment step: fold and precompute what the final weights fix (each module's own fuse(), see posmlp.py).
        Inference only; call it after the weights are loaded."""
        return fuse_modules(self)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if x.dim() != 4:
            raise ValueError(f'PosMLP expects (B, C, H, W) images, got shape {tuple(x.shape)}')
        x = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.levels):  # the last kept stage is the last output
            x = stage(x)
            if i in self.out_indices:
                out = x
                if self.out_norm:
                    out = getattr(self, f'norm{i}')(out.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
                outs.append(out.contiguous())
        return tuple(outs)
