"""The backbones, in mmdet's MODELS: ``type='PosMLP'`` | ``'HireMLP'`` | ``'ViP'`` | ``'S2MLP'`` |
``'CycleMLP'``. Each is its family's timm classifier without head, through the one base
``FamilyBackbone`` (mmdet_backbone.py: the options they share). Imported only with mmdet.
"""
import functools
from typing import Optional, Sequence, Union

import torch.nn as nn
from mmdet.registry import MODELS
from timm.layers import LayerNorm2d

from .cycle_mlp import ARCH_SETTINGS as CYCLE_MLP_SETTINGS
from .cycle_mlp import CycleMLPClassifier
from .cycle_mlp import checkpoint_filter_fn as cycle_mlp_checkpoint_filter
from .hire_mlp import ARCH_SETTINGS as HIRE_MLP_SETTINGS
from .hire_mlp import HireMLPClassifier
from .hire_mlp import checkpoint_filter_fn as hire_mlp_checkpoint_filter
from .mmdet_backbone import FamilyBackbone
from .posmlp import LN_EPS, PosMLPClassifier
from .posmlp import checkpoint_filter_fn as posmlp_checkpoint_filter
from .s2mlp import ARCH_SETTINGS as S2MLP_SETTINGS
from .s2mlp import S2MLPClassifier
from .vip import ARCH_SETTINGS as VIP_SETTINGS
from .vip import ViPClassifier
from .vip import checkpoint_filter_fn as vip_checkpoint_filter

__all__ = ['PosMLP', 'HireMLP', 'ViP', 'S2MLP', 'CycleMLP']


class PyramidFamilyBackbone(FamilyBackbone):
    """The arguments of the families with four stages of maps at strides 4-32, output norms and
    dropout inside the blocks (Hire-MLP, CycleMLP); ``arch`` defaults to ``default_arch``.
    ``proj_drop_rate`` is the dropout after the mixers and inside the channel MLPs."""
    default_arch: str

    def __init__(self, arch: Union[str, dict, None] = None, in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3), out_norm: bool = True,
                 drop_path_rate: float = 0.1, proj_drop_rate: float = 0.,
                 frozen_stages: int = -1, norm_eval: bool = False, with_cp: bool = False,
                 pretrained: Optional[str] = None, init_cfg: Optional[dict] = None):
        super().__init__(self.default_arch if arch is None else arch, in_channels, out_indices,
                         out_norm, frozen_stages, norm_eval, with_cp, pretrained, init_cfg,
                         drop_path_rate=drop_path_rate, proj_drop_rate=proj_drop_rate)


@MODELS.register_module()
class HireMLP(PyramidFamilyBackbone):
    """Hire-MLP as an MMDetection backbone: stage maps at strides 4, 8, 16, 32 for an FPN.

    ``HireMLPClassifier`` (hire_mlp.py) without head and final norm; init_cfg Pretrained reads the
    official ``hire_mlp_*.pth``. Stage i (0-3) is ``network.{2i}`` with the downsample
    ``network.{2i-1}`` that leads into it. Other arguments: ``PyramidFamilyBackbone``'s.

    Args:
        arch (str | dict): 'tiny' (default) | 'small' | 'base' | 'large', or a dict of embed_dims,
            depths, pixel, step_stride, step_dilation, mlp_ratio.
        out_norm (bool): A new BatchNorm ``norm{i}`` on each returned map, as the official
            dense-prediction backbone (``extra_norm=True`` in the authors' mmseg code)."""

    classifier_cls = HireMLPClassifier
    arch_settings = HIRE_MLP_SETTINGS
    arch_keys = ('embed_dims', 'depths', 'pixel', 'step_stride', 'step_dilation', 'mlp_ratio')
    checkpoint_filter = staticmethod(hire_mlp_checkpoint_filter)
    out_norm_layer = nn.BatchNorm2d
    default_arch = 'tiny'


@MODELS.register_module()
class ViP(FamilyBackbone):
    """ViP as an MMDetection backbone: the stage maps (strides 7 and 14) as NCHW.

    A detector reads the last map (stride 14) through ``SimpleFeaturePyramid`` (strides: see
    simple_pyramid.py), so ``out_indices`` (0-3) defaults to (3,). No output norms: that neck
    normalises every branch itself. init_cfg Pretrained reads the official checkpoints. ``arch``:
    's7' | 'm7' | 'l7', or a dict of depths, embed_dims, segment_dim, transitions, mlp_ratios,
    patch_size, skip_lam, qkv_bias. Other arguments: see ``FamilyBackbone``."""

    classifier_cls = ViPClassifier
    arch_settings = VIP_SETTINGS
    arch_keys = ('depths', 'embed_dims', 'segment_dim', 'transitions', 'mlp_ratios',
                 'patch_size', 'skip_lam', 'qkv_bias')
    checkpoint_filter = staticmethod(vip_checkpoint_filter)

    @classmethod
    def _resolve_arch(cls, arch) -> dict:
        if isinstance(arch, dict) and 'layers' in arch:  # the official code's name for depths
            raise ValueError("ViP: arch key 'layers' is now 'depths' (blocks per stage), as in "
                             'every family')
        return super()._resolve_arch(arch)

    def __init__(self, arch: Union[str, dict] = 's7', in_channels: int = 3,
                 out_indices: Sequence[int] = (3,), drop_path_rate: float = 0.1,
                 frozen_stages: int = -1, norm_eval: bool = False, with_cp: bool = False,
                 pretrained: Optional[str] = None, init_cfg: Optional[dict] = None):
        super().__init__(arch, in_channels, out_indices, False, frozen_stages, norm_eval,
                         with_cp, pretrained, init_cfg, drop_path_rate=drop_path_rate)


@MODELS.register_module()
class S2MLP(FamilyBackbone):
    """S2-MLP as an MMDetection backbone: block outputs, one stride-16 map, NCHW.

    Isotropic: its "stages" are the blocks, so ``out_indices`` are block indices (default -1, the
    last) and ``frozen_stages=k`` freezes the patch embedding and blocks 1..k. A detector reads the
    map through ``SimpleFeaturePyramid`` (RetinaNet: scale factors (2, 1, 0.5) and two extra levels,
    strides 8-128; Mask R-CNN: (4, 2, 1, 0.5), strides 4-32 and 64 for the RPN), which normalises
    every branch itself. No official weights exist; init_cfg Pretrained reads this implementation's
    timm state dicts (``s2mlp_deep`` / ``s2mlp_wide``). ``arch``: 'deep' | 'wide', or a dict of
    patch_size, embed_dim, depth, mlp_ratio. Other arguments: see ``FamilyBackbone``."""

    classifier_cls = S2MLPClassifier
    arch_settings = S2MLP_SETTINGS
    arch_keys = ('patch_size', 'embed_dim', 'depth', 'mlp_ratio')

    def __init__(self, arch: Union[str, dict] = 'deep', in_channels: int = 3,
                 out_indices: Sequence[int] = (-1,), drop_path_rate: float = 0.1,
                 frozen_stages: int = -1, norm_eval: bool = False, with_cp: bool = False,
                 pretrained: Optional[str] = None, init_cfg: Optional[dict] = None):
        super().__init__(arch, in_channels, out_indices, False, frozen_stages, norm_eval,
                         with_cp, pretrained, init_cfg, drop_path_rate=drop_path_rate)


@MODELS.register_module()
class CycleMLP(PyramidFamilyBackbone):
    """CycleMLP as an MMDetection backbone: stage maps at strides 4, 8, 16, 32 for an FPN.

    ``CycleMLPClassifier`` (cycle_mlp.py) without head and final norm; init_cfg Pretrained reads
    the official ``CycleMLP_B*.pth``. Stage i (0-3) is ``network.{2i}`` with the downsample
    ``network.{2i-1}`` that leads into it. Other arguments: ``PyramidFamilyBackbone``'s.

    Args:
        arch (str | dict): 'b1' ... 'b5' (default 'b2') or a dict of embed_dims, depths, mlp_ratios.
        out_norm (bool): A new LayerNorm over channels ``norm{i}`` (timm's LayerNorm2d, an
            ``nn.LayerNorm``, so optimizer rules by type exempt it from weight decay) on each
            returned map: the official dense-prediction form (``fork_feat``)."""

    classifier_cls = CycleMLPClassifier
    arch_settings = CYCLE_MLP_SETTINGS
    arch_keys = ('embed_dims', 'depths', 'mlp_ratios')
    checkpoint_filter = staticmethod(cycle_mlp_checkpoint_filter)
    out_norm_layer = LayerNorm2d
    default_arch = 'b2'


@MODELS.register_module()
class PosMLP(FamilyBackbone):
    """PosMLP backbone (ACM MM 2022) for dense prediction: ``PosMLPClassifier`` (posmlp.py)
    without head, through ``FamilyBackbone`` (mmdet_backbone.py). Stages 0-3 have strides 4-32.

    Args:
        arch (str | dict): 'tiny' | 'small' | 'base', or a dict with embed_dims, depths, windows,
            groups and mlp_ratios (one value per stage).
        mixer (str): Token mixer: 'gqpe' (default), 'lrpe', or 'sgu' (dense, ablation).
        windows (int | Sequence[int], optional): Window size per stage, overriding the arch.
            Window-dependent pretrained parameters are resized to it on loading.
        groups (int | Sequence[int], optional): Channel groups per stage (1 = ungrouped), likewise.
        out_norm (bool): A LayerNorm ``norm{i}`` on each returned map; the classifier's final
            norm initialises the last stage's when that stage is returned.
        drop_rate (float): Dropout after each block's output projection.
        shift (bool): Every second block of a stage works on the window grid moved by half a
            window (Swin's shifted windows; not in the reference); no new parameters.
        norm_eval (bool): Acts on the stem's BatchNorms.
        Others: see ``FamilyBackbone``; 'Pretrained' reads the reference's checkpoints, timm state
            dicts and backbone or detector checkpoints (``posmlp.checkpoint_filter_fn``)."""

    classifier_cls = PosMLPClassifier
    checkpoint_filter = staticmethod(posmlp_checkpoint_filter)
    out_norm_layer = functools.partial(LayerNorm2d, eps=LN_EPS)
    final_norm_to_output = True

    def __init__(self, arch: Union[str, dict] = 'tiny', in_channels: int = 3, mixer: str = 'gqpe',
                 windows: Union[int, Sequence[int], None] = None,
                 groups: Union[int, Sequence[int], None] = None,
                 out_indices: Sequence[int] = (0, 1, 2, 3), out_norm: bool = True,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.1, frozen_stages: int = -1,
                 norm_eval: bool = False, with_cp: bool = False, shift: bool = False,
                 pretrained: Optional[str] = None, init_cfg: Optional[dict] = None):
        overrides = {k: v for k, v in (('windows', windows), ('groups', groups)) if v is not None}
        super().__init__(arch, in_channels, out_indices, out_norm, frozen_stages, norm_eval,
                         with_cp, pretrained, init_cfg, mixer=mixer, drop_rate=drop_rate,
                         drop_path_rate=drop_path_rate, shift=shift, **overrides)
        self.setting = self.model.setting

    @classmethod
    def _resolve_arch(cls, arch) -> dict:
        return dict(arch=arch)  # the classifier resolves it (posmlp.resolve_arch), naming the fault
