"""The detection configs shipped inside the package, and their ``mmdet_posmlp::`` names.

The configs live in ``mmdet_posmlp/.mim/configs/`` (the repository's ``configs`` is a link to
it), where mim packages such as mmdet keep theirs, so that they are installed with the package
and can be read from any directory and from other projects::

    import mmdet_posmlp
    cfg = Config.fromfile('mmdet_posmlp::retinanet_posmlp_t_1x.py')
    # in a config of another project, read by a tool that imported mmdet_posmlp first:
    _base_ = 'mmdet_posmlp::retinanet_posmlp_t_1x.py'

mmengine 0.10.7 resolves ``package::name`` by itself only partly: ``Config._get_cfg_path``
accepts packages of its ``MODULE2PACKAGE`` table only (an assert), rejects names without a
folder (``mmdet::x.py``; its pattern wants ``pkg::folder/file``), and finds the package through
pkg_resources, which misses editable installs; ``Config.fromfile`` takes no ``::`` names at all.
:func:`register_config_package` (called on ``import mmdet_posmlp``) therefore

- adds ``mmdet_posmlp`` to ``mmengine.config.utils.MODULE2PACKAGE``;
- resolves names that start with ``mmdet_posmlp::`` itself, in ``Config._get_cfg_path`` (for
  ``_base_``) and in ``Config.fromfile``, from this package's folder; every other name goes to
  mmengine unchanged;
- gives what such a base brings the scope ``mmdet``: mmdet_posmlp registers its modules in
  mmdet's registries (an ``mmdet_posmlp`` scope would not find them).
"""
import os
import os.path as osp
from typing import List

PACKAGE = 'mmdet_posmlp'
PREFIX = PACKAGE + '::'
CONFIG_DIR = osp.join(osp.dirname(osp.abspath(__file__)), '.mim', 'configs')
# The registry scope of the modules our configs name (mmdet's registries hold ours too).
SCOPE = 'mmdet'


def config_names() -> List[str]:
    """The shipped configs, relative to the config folder ('retinanet_posmlp_t_1x.py', 'demo/...')."""
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

    for wrapper, original in ((_get_cfg_path, mmengine_get_cfg_path), (fromfile, mmengine_fromfile)):
        wrapper.__doc__ = (f'{original.__doc__}\n\n        (mmdet_posmlp: names starting with '
                           f"'{PREFIX}' are read from {CONFIG_DIR}.)")
        wrapper.__wrapped__ = original
        wrapper._mmdet_posmlp = True
    Config._get_cfg_path = staticmethod(_get_cfg_path)
    Config.fromfile = staticmethod(fromfile)
