"""Which optional half of the package this Python can load: the timm classifiers need only torch
and timm; the MMDetection half (backbones, neck, hooks, configs) needs mmdet, mmengine and mmcv.

``MMDET_AVAILABLE`` says whether mmdet is installed (found, not imported); without it, the names
of the MMDetection half raise :func:`missing_mmdet` on access. Imports nothing of mm*.
"""
import importlib.util

# The names of the MMDetection half, as ``mmdet_posmlp`` / ``mmdet_posmlp.models`` export them.
MMDET_NAMES = ('PosMLP', 'HireMLP', 'ViP', 'S2MLP', 'CycleMLP', 'SimpleFeaturePyramid')


def installed(name: str) -> bool:
    """Whether the top-level module ``name`` can be found, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a finder that refuses the name; a broken __spec__
        return False


MMDET_AVAILABLE = installed('mmdet')


def check_mmcv() -> None:
    """Raise a clear ImportError when mmcv, which pip does not install for us, is missing."""
    try:
        import mmcv  # noqa: F401
    except ImportError as e:
        raise ImportError(
            'mmdet_posmlp needs mmcv >= 2.0.0rc4, < 2.2.0 built with its compiled ops for its '
            'MMDetection part (mmdet is installed here), which `pip install` does not install: '
            'run `bash tools/setup_env.sh` in the repository (it builds mmcv 2.1.0 against the '
            'installed torch), or install an mmcv wheel built for your torch (see docs/usage.md, '
            '"Installing as a package"). Without mmdet installed, mmdet_posmlp loads only its '
            'timm classifiers.') from e


def missing_mmdet(module: str, name: str) -> ImportError:
    """The error that ``module.name`` and ``from module import name`` raise for a name of the
    MMDetection half where mmdet is missing."""
    return ImportError(
        f'{module}.{name} is an MMDetection component, and mmdet is not installed: install '
        f'mmdet 3.x, mmengine and mmcv (>= 2.0.0rc4, < 2.2.0, with its compiled ops; '
        f'`bash tools/setup_env.sh` installs all three). Without them mmdet_posmlp provides '
        f'only its timm classifiers (posmlp_t/s/b, hire_mlp_*, vip_*, s2mlp_*, cycle_mlp_*) and '
        f'their classes (mmdet_posmlp.models.PosMLPClassifier, ...).', name='mmdet')


def mmdet_names_getattr(module: str):
    """The module-level ``__getattr__`` of a module whose MMDetection names are missing: those
    names raise ``missing_mmdet``, others the usual AttributeError."""
    def __getattr__(name: str):
        if name in MMDET_NAMES:
            raise missing_mmdet(module, name)
        raise AttributeError(f'module {module!r} has no attribute {name!r}')
    return __getattr__
