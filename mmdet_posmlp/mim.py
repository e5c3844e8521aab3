"""The detection configs shipped inside the package, and their ``mmdet_posmlp::`` names.

The configs live in ``mmdet_posmlp/.mim/configs/`` (the repository's ``configs`` links to it), where
mim packages such as mmdet keep theirs: installed with the package, readable from anywhere::

    import mmdet_posmlp
    cfg = Config.fromfile('mmdet_posmlp::retinanet_posmlp_t_1x.py')
    # in a config of another project, read by a tool that imported mmdet_posmlp first
    # (custom_imports runs only after the _base_ files are read):
    _base_ = 'mmdet_posmlp::retinanet_posmlp_t_1x.py'

mmengine 0.10.7 resolves ``package::name`` only partly: ``Config._get_cfg_path`` accepts only
packages of its ``MODULE2PACKAGE`` table (an assert), rejects names without a folder (its pattern
wants ``pkg::folder/file``) and finds packages through pkg_resources, which misses editable
installs; ``Config.fromfile`` takes no ``::`` names. So, on import, :func:`register_config_package`

- adds ``mmdet_posmlp`` to ``mmengine.config.utils.MODULE2PACKAGE``;
- resolves ``mmdet_posmlp::`` names itself, in ``Config._get_cfg_path`` (for ``_base_``) and in
  ``Config.fromfile``; every other name goes to mmengine unchanged;
- gives what such a base brings the scope ``mmdet``: mmdet_posmlp registers its modules in
  mmdet's registries (an ``mmdet_posmlp`` scope would not find them).
"""
import os
import os.path as osp
from typing import List

PACKAGE = 'mmdet_posmlp'
PREFIX = PACKAGE + '::'
CONFIG_DIR = osp.join(osp.dirname(osp.abspath(__file__)), '.mim', 'configs')
SCOPE = 'mmdet'


def config_names() -> List[str]:
    """The shipped configs, relative to the config folder ('retinanet_posmlp_t_1x.py', ...)."""
    names = []
    for root, _dirs, files in os.walk(CONFIG_DIR):
        names += [osp.relpath(osp.join(root, f), CONFIG_DIR) for f in files if f.endswith('.py')]
    return sorted(names)


def config_path(name: str) -> str:
    """Absolute path of a shipped config, named with or without the ``mmdet_posmlp::`` prefix."""
    rel = name[len(PREFIX):] if name.startswith(PREFIX) else name
    path = osp.join(CONFIG_DIR, rel)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f"mmdet_posmlp ships no config '{rel}' (in {CONFIG_DIR}); its configs: "
            f"{', '.join(n for n in config_names() if not osp.basename(n).startswith('_'))}")
    return path


def register_config_package() -> None:
    """Make ``mmdet_posmlp::`` config names work in mmengine's Config (idempotent)."""
    from mmengine.config import Config
    from mmengine.config import utils as config_utils

    config_utils.MODULE2PACKAGE.setdefault(PACKAGE, PACKAGE)
    if getattr(Config._get_cfg_path, '_mmdet_posmlp', False):
        return
    mmengine_get_cfg_path = Config._get_cfg_path  # staticmethods: plain functions here
    mmengine_fromfile = Config.fromfile

    def _get_cfg_path(cfg_path, filename):
        if isinstance(cfg_path, str) and cfg_path.startswith(PREFIX):
            return config_path(cfg_path), SCOPE
        return mmengine_get_cfg_path(cfg_path, filename)

    def fromfile(filename, *args, **kwargs):
        if isinstance(filename, str) and filename.startswith(PREFIX):
            filename = config_path(filename)
        return mmengine_fromfile(filename, *args, **kwargs)

    for wrapper, original in ((_get_cfg_path, mmengine_get_cfg_path),
                              (fromfile, mmengine_fromfile)):
        wrapper.__doc__ = (f'{original.__doc__}\n\n        (mmdet_posmlp: names starting with '
                           f"'{PREFIX}' are read from {CONFIG_DIR}.)")
        wrapper.__wrapped__ = original
        wrapper._mmdet_posmlp = True
    Config._get_cfg_path = staticmethod(_get_cfg_path)
    Config.fromfile = staticmethod(fromfile)
