"""PosMLP backbone for MMDetection 3.x.

From an mmdet config::

    custom_imports = dict(imports=['mmdet_posmlp'], allow_failed_imports=False)

What importing the package does:

- registers the backbones `PosMLP`, `HireMLP`, `ViP`, `S2MLP` and the neck
  `SimpleFeaturePyramid` in mmdet's MODELS registry, and the classifiers `posmlp_t/s/b`,
  `hire_mlp_tiny/small/base/large`, `vip_s7/m7/l7`, `s2mlp_deep/wide` with timm;
- registers the hooks the configs and tools use (CrashSafeCheckpointHook, NonFiniteLossHook,
  FuseBackboneHook) in mmdet's HOOKS, and the optimizer wrapper that `--amp` selects on CPUs with native bfloat16
  (BFloat16AutocastOptimWrapper, engine/amp.py) in mmdet's OPTIM_WRAPPERS;
- lets torch's safe (weights_only) unpickler read the checkpoints that mmengine's
  CheckpointHook writes and the reference PosMLP ImageNet checkpoints, by allowlisting exactly
  the types they hold (one list, engine/safe_load.py), so that resuming and testing work under
  torch >= 2.6 with any tool, mmdet's own included;
- adds handles for the operators of PosMLP that mmengine's FLOP counter lacks (``baddbmm``,
  ``addmm_``, and the custom autograd Functions, which a jit trace shows as opaque
  ``prim::PythonOp`` nodes) to mmengine's default handle tables, so that
  ``get_model_complexity_info`` and mmdet's own ``tools/analysis_tools/get_flops.py`` count the
  token mixing (analysis/flop_handles.py; names mmengine already handles are left alone);
- makes the configs shipped in the package (`mmdet_posmlp/.mim/configs/`) readable by name from
  any directory: it adds `mmdet_posmlp` to mmengine's `MODULE2PACKAGE` table (mmengine 0.10.7
  accepts `pkg::` names only for packages listed there) and resolves names that start with
  `mmdet_posmlp::` in `Config.fromfile` and in `_base_` (mim.py says why mmengine cannot alone):
  `Config.fromfile('mmdet_posmlp::retinanet_posmlp_t_1x.py')`, or in another project's config
  `_base_ = 'mmdet_posmlp::retinanet_posmlp_t_1x.py'` when the tool reading it imported
  mmdet_posmlp before (`custom_imports` runs only after the `_base_` files are read).

mmcv (>= 2.0.0rc4, < 2.2.0, built with its compiled ops) is needed but not a declared
dependency of the distribution: pip cannot build it correctly by itself (see README,
"Installing as a package"); tools/setup_env.sh builds and installs it.
"""
__version__ = '0.1.0'

try:
    import mmcv  # noqa: E402,F401
except ImportError as e:  # the one dependency pip does not install for us
    raise ImportError(
        'mmdet_posmlp needs mmcv >= 2.0.0rc4, < 2.2.0 built with its compiled ops, which '
        '`pip install` does not install: run `bash tools/setup_env.sh` in the repository (it '
        'builds mmcv 2.1.0 against the installed torch), or install an mmcv wheel built for '
        'your torch (see README, "Installing as a package")') from e

from .models import PosMLP, PosMLPClassifier  # noqa: E402
from .engine import hooks  # noqa: E402,F401  (registers the hooks in mmdet's HOOKS)
from .engine import amp  # noqa: E402,F401  (registers BFloat16AutocastOptimWrapper: --amp on CPUs)
from .engine.safe_load import allow_mmengine_checkpoints  # noqa: E402
from .mim import register_config_package  # noqa: E402
from .analysis.flop_handles import register_flop_handles  # noqa: E402

allow_mmengine_checkpoints()
register_config_package()
register_flop_handles()

__all__ = ['PosMLP', 'PosMLPClassifier', '__version__']
