"""PosMLP backbone for MMDetection 3.x. From an mmdet config::

    custom_imports = dict(imports=['mmdet_posmlp'], allow_failed_imports=False)

What importing the package does depends on what is installed. Always (needs only torch and timm):

- registers with timm the classifiers `posmlp_t/s/b`, `hire_mlp_tiny/small/base/large`,
  `vip_s7/m7/l7`, `s2mlp_deep/wide`, `cycle_mlp_b1` ... `b5` (`features_only=True`,
  `forward_intermediates`; PosMLP's `model.fuse()`, the deployment step);
- allowlists in torch's safe (weights_only) unpickler exactly the types of mmengine's and the
  reference PosMLP checkpoints (safe_load.py): any tool resumes and tests under torch >= 2.6.

Where mmdet is installed (`mmdet_posmlp.dependencies.MMDET_AVAILABLE`), in addition:

- registers in mmdet's MODELS the backbones `PosMLP`, `HireMLP`, `ViP`, `S2MLP`, `CycleMLP`, the
  neck `SimpleFeaturePyramid`, and `Float32FocalLoss` / `Float32RoIExtractor` / `Float32RPNHead`
  (mmcv's focal loss, RoIAlign and the proposals' nms in float32 under bfloat16, which mmcv 2.1
  compiles no kernel for);
- registers the hooks of engine/hooks.py in HOOKS and BFloat16AutocastOptimWrapper (`--amp` on
  CPUs, engine/amp.py) in OPTIM_WRAPPERS;
- adds FLOP handles for PosMLP's custom autograd Functions (analysis/flop_handles.py), so that
  ``get_model_complexity_info`` and mmdet's ``get_flops.py`` count the token mixing;
- makes shipped configs readable anywhere as ``mmdet_posmlp::retinanet_posmlp_t_1x.py`` (mim.py).

Without mmdet, nothing of mmcv, mmdet, mmengine or pycocotools is imported, and the MMDetection
names (`mmdet_posmlp[.models].PosMLP`, ...) raise an ImportError saying what to install. With mmdet,
mmcv (>= 2.0.0rc4, < 2.2.0, with compiled ops) is needed, undeclared as pip cannot build it
correctly (docs/usage.md; tools/setup_env.sh can): `import mmdet_posmlp` says how to get it.
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
