from .backbone import PosMLP
from .posmlp import (ARCH_SETTINGS, GQPE, LRPE, MIXERS, DenseTokenMixer, PosMLPBlock,
                     PosMLPClassifier, PosMLPStage, PosSGU, resolve_arch, window_partition,
                     window_reverse)
# importing .posmlp (above) registers posmlp_t / posmlp_s / posmlp_b with timm, at its bottom
# the vision-MLP family: mmdet backbones HireMLP, ViP, S2MLP, their timm classifiers, and the
# SimpleFeaturePyramid neck for the single-scale ones
from . import hire_mlp, s2mlp, simple_pyramid, vip  # noqa: F401,E402

__all__ = ['PosMLP', 'PosMLPClassifier', 'PosMLPStage', 'PosMLPBlock', 'PosSGU', 'GQPE', 'LRPE',
           'DenseTokenMixer', 'ARCH_SETTINGS', 'MIXERS', 'resolve_arch', 'window_partition',
           'window_reverse']
