"""PosMLP backbone for MMDetection 3.x.

From an mmdet config::

    custom_imports = dict(imports=['mmdet_posmlp'], allow_failed_imports=False)

What importing the package does depends on what is installed.

Always (needs only torch and timm):

- registers the classifiers `posmlp_t/s/b`, `hire_mlp_tiny/small/base/large`, `vip_s7/m7/l7`,
  `s2mlp_deep/wide`, `cycle_mlp_b1` ... `b5` with timm (`timm.create_model(..., features_only=True)`,
  `forward_intermediates`; PosMLP's `model.fuse()`, the deployment step);
- lets torch's safe (weights_only) unpickler read the checkpoints that mmengine's
  CheckpointHook writes and the reference PosMLP ImageNet checkpoints, by allowlisting exactly
  the types they hold (one list, safe_load.py; the mmengine types only where mmengine is
  installed), so that resuming and testing work under torch >= 2.6 with any tool, mmdet's own
  included.

Where mmdet is installed (`mmdet_posmlp.dependencies.MMDET_AVAILABLE`), in addition:

- registers the backbones `PosMLP`, `HireMLP`, `ViP`, `S2MLP`, `CycleMLP`, the neck
  `SimpleFeaturePyramid`, and `Float32FocalLoss` / `Float32RoIExtractor` (mmcv's focal loss and
  RoIAlign in float32 under bfloat16, which mmcv 2.1 compiles no kernel for) in mmdet's MODELS;
- registers the hooks the configs and tools use (CrashSafeCheckpointHook, NonFiniteLossHook,
  FuseBackboneHook) in mmdet's HOOKS, and the optimizer wrapper that `--amp` selects on CPUs with native bfloat16
  (BFloat16AutocastOptimWrapper, engine/amp.py) in mmdet's OPTIM_WRAPPERS;
- adds handles for PosMLP's custom autograd Functions, which a jit trace shows as opaque
  ``prim::PythonOp`` nodes, to mmengine's default handle tables, so that
  ``get_model_complexity_info`` and mmdet's own ``tools/analysis_tools/get_flops.py`` count the
  token mixing (analysis/flop_handles.py; names mmengine already handles are left alone);
- makes the configs shipped in the package (`mmdet_posmlp/.mim/configs/`) readable by name from
  any directory: it adds `mmdet_posmlp` to mmengine's `MODULE2PACKAGE` table (mmengine 0.10.7
  accepts `pkg::` names only for packages listed there) and resolves names that start with
  `mmdet_posmlp::` in `Config.fromfile` and in `_base_` (mim.py says why mmengine cannot alone):
  `Config.fromfile('mmdet_posmlp::retinanet_posmlp_t_1x.py')`, or in another project's config
  `_base_ = 'mmdet_posmlp::retinanet_posmlp_t_1x.py'` when the tool reading it imported
  mmdet_posmlp before (`custom_imports` runs only after the `_base_` files are read).

Without mmdet, only the timm half is loaded (nothing of mmcv, mmdet, mmengine or pycocotools
is imported), and reading `mmdet_posmlp.PosMLP` (or `HireMLP`, `ViP`, `S2MLP`, `CycleMLP`,
`SimpleFeaturePyramid`, here or in `mmdet_posmlp.models`) raises an ImportError that says
what to install.

With mmdet, mmcv (>= 2.0.0rc4, < 2.2.0, built with its compiled ops) is needed but not a
declared dependency of the distribution: pip cannot build it correctly by itself (see
docs/usage.md, "Installing as a package"); tools/setup_env.sh builds and installs it. Where mmdet is installed
and mmcv is not, `import mmdet_posmlp` stops with an ImportError that says how to get it.
"""
__version__ = '0.1.0'

from .dependencies import MMDET_AVAILABLE, MMDET_NAMES, check_mmcv, mmdet_names_getattr

if MMDET_AVAILABLE:
    check_mmcv()  # before anything imports mmdet: mmcv is the one dependency pip cannot install

from .safe_load import allow_mmengine_checkpoints  # noqa: E402
from .models import PosMLPClassifier  # noqa: E402  (registers the timm classifiers)

allow_mmengine_checkpoints()

__all__ = ['PosMLPClassifier', 'MMDET_AVAILABLE', '__version__']

if MMDET_AVAILABLE:
    from .analysis.flop_handles import register_flop_handles
    from .engine import amp  # noqa: F401  (registers BFloat16AutocastOptimWrapper: --amp on CPUs)
    from .engine import hooks  # noqa: F401  (registers the hooks in mmdet's HOOKS)
    from .mim import register_config_package
    # importing .models registered these in mmdet's MODELS; re-exported here
    from .models import CycleMLP, HireMLP, PosMLP, S2MLP, SimpleFeaturePyramid, ViP  # noqa: F401

    register_config_package()
    register_flop_handles()
    __all__ += list(MMDET_NAMES)
else:
    __getattr__ = mmdet_names_getattr(__name__)
