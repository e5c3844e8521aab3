"""Build-time checks of a backbone's ``pretrained`` and ``init_cfg``, as mmdet's Swin and PVT do.

mmengine's BaseModule reads ``init_cfg`` unchecked, only in ``init_weights()`` after the detector is
built, where a typo is a KeyError deep in mmengine, or passes silently (a 'Pretrained' without a
checkpoint loads nothing). Here a mistake raises when built, naming the argument.
"""
from typing import List, Optional, Tuple, Union

InitCfg = Union[dict, List[dict], None]

__all__ = ['check_init_args', 'split_pretrained']


def _initializer_known(kind) -> bool:
    """``kind`` is an initializer class, or a name registered in mmengine's or mmdet's
    WEIGHT_INITIALIZERS (mmdet's also reaches its children under the current default scope)."""
    if isinstance(kind, type):
        return True
    if not isinstance(kind, str):
        return False
    import mmengine.model  # noqa: F401  (registers mmengine's initializers)
    from mmengine.registry import WEIGHT_INITIALIZERS
    from mmdet.registry import WEIGHT_INITIALIZERS as MMDET_WEIGHT_INITIALIZERS
    return any(registry.get(kind) is not None
               for registry in (WEIGHT_INITIALIZERS, MMDET_WEIGHT_INITIALIZERS))


def _is_pretrained(entry: dict) -> bool:
    from mmengine.model.weight_init import PretrainedInit
    return entry.get('type') in ('Pretrained', PretrainedInit)


def check_init_args(owner: str, pretrained, init_cfg) -> InitCfg:
    """The ``init_cfg`` to give BaseModule (``pretrained`` turned into a 'Pretrained' entry), or a
    TypeError / ValueError that names the argument at fault. ``owner`` starts the message."""
    if pretrained is not None:
        if not isinstance(pretrained, str):
            raise TypeError(f'{owner}: pretrained must be a checkpoint path (str) or None, got '
                            f'{type(pretrained).__name__} {pretrained!r}')
        if not pretrained:
            raise ValueError(f"{owner}: pretrained is an empty string; give a checkpoint path "
                             'or leave it None')
    if init_cfg is not None and not isinstance(init_cfg, (dict, list)):
        raise TypeError(f"{owner}: init_cfg must be a dict, a list of dicts or None, e.g. "
                        f"dict(type='Pretrained', checkpoint=...); got "
                        f'{type(init_cfg).__name__} {init_cfg!r}')
    if pretrained is not None:
        if init_cfg is not None:
            raise ValueError(f'{owner}: pretrained and init_cfg cannot both be set; use '
                             "init_cfg=dict(type='Pretrained', checkpoint=...) alone")
        init_cfg = dict(type='Pretrained', checkpoint=pretrained)
    if init_cfg is None:
        return None

    entries = [('init_cfg', init_cfg)] if isinstance(init_cfg, dict) else \
        [(f'init_cfg[{i}]', entry) for i, entry in enumerate(init_cfg)]
    pretrained_entries = []
    for name, entry in entries:
        if not isinstance(entry, dict):
            raise TypeError(f'{owner}: {name} must be a dict, got {type(entry).__name__} {entry!r}')
        if 'type' not in entry:
            raise ValueError(f"{owner}: {name} has no 'type' (e.g. 'Pretrained', 'Kaiming'): "
                             f'{entry!r}')
        if not _initializer_known(entry['type']):
            from mmengine.registry import WEIGHT_INITIALIZERS
            raise ValueError(f"{owner}: {name} has an unknown type {entry['type']!r}; weight "
                             f'initializers: {sorted(WEIGHT_INITIALIZERS.module_dict)}')
        if _is_pretrained(entry):
            pretrained_entries.append(name)
            if 'checkpoint' not in entry:
                raise ValueError(f"{owner}: {name} of type 'Pretrained' needs "
                                 f"checkpoint=<path or URL>, got {entry!r}")
            checkpoint = entry['checkpoint']
            if not isinstance(checkpoint, str):
                raise TypeError(f"{owner}: {name}['checkpoint'] must be a path or URL (str), "
                                f'got {type(checkpoint).__name__} {checkpoint!r}')
            if not checkpoint:
                raise ValueError(f"{owner}: {name}['checkpoint'] is an empty string")
    if len(pretrained_entries) > 1:
        raise ValueError(f"{owner}: init_cfg has more than one 'Pretrained' entry "
                         f'({pretrained_entries}); give one checkpoint')
    return init_cfg


def split_pretrained(init_cfg: InitCfg) -> Tuple[Optional[str], InitCfg]:
    """(the 'Pretrained' checkpoint or None, the other entries or None) of a checked init_cfg."""
    if init_cfg is None:
        return None, None
    entries = [init_cfg] if isinstance(init_cfg, dict) else list(init_cfg)
    checkpoint = next((e['checkpoint'] for e in entries if _is_pretrained(e)), None)
    others = [e for e in entries if not _is_pretrained(e)]
    if not others:
        others = None
    elif isinstance(init_cfg, dict):
        others = others[0]
    return checkpoint, others
