"""PosMLP as an MMDetection backbone: multi-scale NCHW features for FPN."""
import functools
from typing import Optional, Sequence, Union

from mmdet.registry import MODELS
from timm.layers import LayerNorm2d

from .common import per_stage
from .mmdet_backbone import FamilyBackbone
from .posmlp import LN_EPS, PosMLPClassifier, checkpoint_filter_fn, resolve_arch


@MODELS.register_module()
class PosMLP(FamilyBackbone):
    """PosMLP backbone (ACM MM 2022) for dense prediction: ``PosMLPClassifier`` (posmlp.py)
    without head, through the shared backbone glue ``FamilyBackbone`` (mmdet_backbone.py).

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
            Only the stages up to the last one returned are built, so every parameter takes
            part in the loss and DistributedDataParallel needs no ``find_unused_parameters``.
        out_norm (bool): A LayerNorm ``norm{i}`` on each returned map; the classifier's final
            norm initialises the last stage's when that stage is returned.
        drop_rate (float): Dropout after each block's output projection.
        drop_path_rate (float): Stochastic depth, ramped linearly over all blocks.
        shift (bool): Every second block of a stage works on the window grid moved by half a
            window (Swin's shifted windows; not in the reference). No new parameters, so the
            ImageNet weights load as they are.
        frozen_stages, norm_eval (the stem's BatchNorms), with_cp, pretrained, init_cfg: see
            ``FamilyBackbone``; 'Pretrained' reads the reference's checkpoints, timm state
            dicts and backbone or detector checkpoints (``posmlp.checkpoint_filter_fn``).
    """

    classifier_cls = PosMLPClassifier
    checkpoint_filter = staticmethod(checkpoint_filter_fn)
    out_norm_layer = functools.partial(LayerNorm2d, eps=LN_EPS)
    final_norm_to_output = True

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
        setting = resolve_arch(arch)
        for key, value in (('windows', windows), ('groups', groups)):
            if value is not None:
                setting[key] = per_stage(value, len(setting['depths']), key, 'PosMLP')
        super().__init__(setting, in_channels, out_indices, out_norm, frozen_stages, norm_eval,
                         with_cp, pretrained, init_cfg, mixer=mixer, drop_rate=drop_rate,
                         drop_path_rate=drop_path_rate, shift=shift)
        self.setting = self.model.setting

    @classmethod
    def _resolve_arch(cls, arch) -> dict:
        return dict(arch=resolve_arch(arch))  # raises naming the key at fault

    def stage_modules(self):
        return [[stage] for stage in self.model.levels]
