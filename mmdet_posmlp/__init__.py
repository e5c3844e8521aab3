"""PosMLP backbone for MMDetection 3.x.

Importing this package registers `PosMLP` in mmdet's MODELS registry and the classifiers
`posmlp_t`, `posmlp_s`, `posmlp_b` with timm. From an mmdet config:

    custom_imports = dict(imports=['mmdet_posmlp'], allow_failed_imports=False)
"""
__version__ = '0.1.0'

from .models import PosMLP, PosMLPClassifier  # noqa: E402

__all__ = ['PosMLP', 'PosMLPClassifier', '__version__']
