from .backbone import PosMLP
from .posmlp import (ARCH_SETTINGS, GQPE, LRPE, MIXERS, DenseTokenMixer, PosMLPBlock,
                     PosMLPClassifier, PosMLPStage, PosSGU, resolve_arch, window_partition,
                     window_reverse)
from . import timm_models  # noqa: F401  (registers posmlp_t / posmlp_s / posmlp_b with timm)

__all__ = ['PosMLP', 'PosMLPClassifier', 'PosMLPStage', 'PosMLPBlock', 'PosSGU', 'GQPE', 'LRPE',
           'DenseTokenMixer', 'ARCH_SETTINGS', 'MIXERS', 'resolve_arch', 'window_partition',
           'window_reverse']
