"""The models: timm classifiers (torch and timm only) and, where mmdet is installed, their
MMDetection backbones and the neck.

Always imported (each registers its classifiers with timm at its bottom):
``posmlp`` (``posmlp_t/s/b``), ``hire_mlp`` (``hire_mlp_*``), ``vip`` (``vip_*``), ``s2mlp``
(``s2mlp_*``), ``cycle_mlp`` (``cycle_mlp_b1`` ... ``b5``).

Only where mmdet is installed (``mmdet_posmlp.dependencies.MMDET_AVAILABLE``), registered in
mmdet's MODELS: ``backbones`` (``PosMLP``, ``HireMLP``, ``ViP``, ``S2MLP``, ``CycleMLP``, over
the one base ``mmdet_backbone.FamilyBackbone``), ``simple_pyramid`` (``SimpleFeaturePyramid``)
``losses`` (``Float32FocalLoss``) and ``roi_extractors`` (``Float32RoIExtractor``). Without mmdet, reading one of those names
from this module raises an ImportError that says what to install.
"""
from ..dependencies import MMDET_AVAILABLE, MMDET_NAMES, mmdet_names_getattr
from . import cycle_mlp, hire_mlp, s2mlp, vip  # noqa: F401  (register cycle_mlp_*, hire_mlp_*, ...)
# importing .posmlp registers posmlp_t / _s / _b with timm
from .posmlp import (ARCH_SETTINGS, GQPE, LRPE, MIXERS, DenseTokenMixer, PosMLPBlock,
                     PosMLPClassifier, PosMLPStage, PosSGU, resolve_arch)
from .windows import window_layout

__all__ = ['PosMLPClassifier', 'PosMLPStage', 'PosMLPBlock', 'PosSGU', 'GQPE', 'LRPE',
           'DenseTokenMixer', 'ARCH_SETTINGS', 'MIXERS', 'resolve_arch', 'window_layout']

if MMDET_AVAILABLE:
    from . import losses  # noqa: F401  (registers Float32FocalLoss in mmdet's MODELS)
    from . import roi_extractors  # noqa: F401  (registers Float32RoIExtractor)
    from .backbones import CycleMLP, HireMLP, PosMLP, S2MLP, ViP
    from .simple_pyramid import SimpleFeaturePyramid
    __all__ += list(MMDET_NAMES)
else:
    __getattr__ = mmdet_names_getattr(__name__)
