"""PosMLP backbone for MMDetection 3.x.

Importing this package registers `PosMLP` in mmdet's MODELS registry and the classifiers
`posmlp_t`, `posmlp_s`, `posmlp_b` with timm. From an mmdet config:

    custom_imports = dict(imports=['mmdet_posmlp'], allow_failed_imports=False)

It also lets torch's safe (weights_only) unpickler read the checkpoints that mmengine's
CheckpointHook writes, by allowlisting exactly the types they hold (see engine/safe_load.py), so
that resuming and testing work under torch >= 2.6 with any tool, mmdet's own included, and
registers the training hooks the configs use (CrashSafeCheckpointHook, NonFiniteLossHook).
"""
__version__ = '0.1.0'

from .models import PosMLP, PosMLPClassifier  # noqa: E402
from .engine import hooks  # noqa: E402,F401  (registers the hooks in mmdet's HOOKS)
from .engine.safe_load import allow_mmengine_checkpoints  # noqa: E402

allow_mmengine_checkpoints()

__all__ = ['PosMLP', 'PosMLPClassifier', '__version__']
