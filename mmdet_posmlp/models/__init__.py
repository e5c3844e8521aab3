"""The models. Always imported, torch and timm only: the timm classifiers ``posmlp``, ``hire_mlp``,
``vip``, ``s2mlp``, ``cycle_mlp``. Only with mmdet (``dependencies.MMDET_AVAILABLE``), registered in
mmdet's MODELS: ``backbones``, ``simple_pyramid``, ``losses``, ``roi_extractors``, ``rpn_head``;
without it, reading ``PosMLP``, ... here raises an ImportError saying what to install.
"""
from ..dependencies import MMDET_AVAILABLE, MMDET_NAMES, mmdet_names_getattr
from . import cycle_mlp, hire_mlp, s2mlp, vip  # noqa: F401  (registers them with timm)
from .posmlp import (ARCH_SETTINGS, GQPE, LRPE, MIXERS, DenseTokenMixer, PosMLPBlock,
                     PosMLPClassifier, PosMLPStage, PosSGU, resolve_arch)
from .windows import window_layout

__all__ = ['PosMLPClassifier', 'PosMLPStage', 'PosMLPBlock', 'PosSGU', 'GQPE', 'LRPE',
           'DenseTokenMixer', 'ARCH_SETTINGS', 'MIXERS', 'resolve_arch', 'window_layout']

if MMDET_AVAILABLE:
    from . import losses  # noqa: F401  (registers Float32FocalLoss in mmdet's MODELS)
    from . import roi_extractors  # noqa: F401  (registers Float32RoIExtractor)
    from . import rpn_head  # noqa: F401  (registers Float32RPNHead)
    from .backbones import CycleMLP, HireMLP, PosMLP, S2MLP, ViP
    from .simple_pyramid import SimpleFeaturePyramid
    __all__ += list(MMDET_NAMES)
else:
    __getattr__ = mmdet_names_getattr(__name__)
