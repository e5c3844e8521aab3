"""What every model family of the package shares, written once (torch and timm only).

Each family file (posmlp.py, hire_mlp.py, vip.py, s2mlp.py, cycle_mlp.py) holds its own blocks,
classifier, checkpoint filter and timm registration, and takes these from here:

- ``per_stage``: an argument given once or per stage, checked against the number of stages;
- ``drop_path_rates``: stochastic depth rising linearly from 0 over all blocks, split per stage
  (timm's ``calculate_drop_path_rates``, which every family's official code computes);
- ``init_trunc_normal``: the family of initialisations all five official codes use;
- ``check_global_pool``: the pools a classifier's head can take, named in the error;
- ``unwrap_state_dict``: the weights inside a checkpoint, whoever wrote it;
- ``fuse_modules``: the deployment walker over each module's own ``fuse()``.
"""
from typing import Dict, List, Sequence, Tuple, Type

import torch
import torch.nn as nn
from timm.layers import calculate_drop_path_rates

__all__ = ['per_stage', 'drop_path_rates', 'init_trunc_normal', 'check_global_pool',
           'unwrap_state_dict', 'STATE_DICT_KEYS', 'fuse_modules']


def per_stage(value, num_stages: int, name: str, owner: str) -> tuple:
    """``value`` repeated for each stage, or the per-stage sequence it already is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (value,) * num_stages
    value = tuple(value)
    if len(value) != num_stages:
        raise ValueError(f'{owner}: {name} needs one value per stage ({num_stages}), got {value}')
    return value


def drop_path_rates(depths: Sequence[int], drop_path_rate: float) -> List[List[float]]:
    """Block j of all blocks gets ``drop_path_rate * j / (total - 1)``; one list per stage."""
    rates = calculate_drop_path_rates(drop_path_rate, sum(depths), stagewise=False)
    out, start = [], 0
    for depth in depths:
        out.append(list(rates[start:start + depth]))
        start += depth
    return out


def init_trunc_normal(module: nn.Module,
                      layers: Tuple[Type[nn.Module], ...] = (nn.Linear, nn.Conv2d)) -> None:
    """Truncated normal (std 0.02) weights and zero biases for ``layers``; norms at (1, 0).

    PosMLP, Hire-MLP and CycleMLP draw their convolutions this way too; ViP and S2-MLP leave
    them at torch's default and pass ``layers=(nn.Linear,)``."""
    for m in module.modules():
        if isinstance(m, layers):
            nn.init.trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)) and \
                m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def check_global_pool(owner: str, global_pool: str, num_classes: int,
                      allowed: Sequence[str] = ('', 'avg')) -> str:
    """Raise naming ``owner`` for a pool the head cannot take; returns ``global_pool``."""
    if global_pool not in allowed:
        raise ValueError(f'{owner}: global_pool={global_pool!r} is not supported; use one of '
                         f'{tuple(allowed)}')
    if global_pool == '' and num_classes > 0:
        raise ValueError(f"{owner}: global_pool='' (no pooling) needs num_classes=0: the "
                         'linear head cannot take an unpooled map')
    return global_pool


# Where training scripts put the weights, in the order they are taken: an EMA copy first (the
# weights the authors evaluated: PosMLP's reference and timm's train.py save 'state_dict_ema',
# DeiT-style scripts such as Hire-MLP's and CycleMLP's 'model_ema'), then the model itself.
STATE_DICT_KEYS = ('state_dict_ema', 'model_ema', 'state_dict', 'model', 'module')


def unwrap_state_dict(checkpoint, path: str = '<checkpoint>', owner: str = 'checkpoint'
                      ) -> Tuple[Dict[str, torch.Tensor], str]:
    """The tensors of a loaded checkpoint and where they were found.

    Takes the first non-empty dict under ``STATE_DICT_KEYS`` (or the checkpoint itself), keeps
    only tensors, and strips a detector's ``backbone.`` prefix (dropping its neck and heads)
    and DataParallel's ``module.``. Raises naming ``path`` when there is nothing to load."""
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{owner}: '{path}' holds a {type(checkpoint).__name__}, not a dict of "
                         'weights')
    source = 'bare state dict'
    for key in STATE_DICT_KEYS:
        if isinstance(checkpoint.get(key), dict) and checkpoint[key]:
            checkpoint, source = checkpoint[key], key
            break
    tensors = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"{owner}: '{path}' has no tensors (top-level keys: "
                         f'{list(checkpoint)[:10]})')
    if all(k.startswith('module.') for k in tensors):
        tensors = {k[len('module.'):]: v for k, v in tensors.items()}
    if any(k.startswith('backbone.') for k in tensors):
        tensors = {k[len('backbone.'):]: v for k, v in tensors.items() if k.startswith('backbone.')}
        source += " ('backbone.' keys of a detector)"
    return tensors, source


def fuse_modules(model: nn.Module) -> nn.Module:
    """Deployment: replace every submodule that has a ``fuse()`` by what it returns (timm's
    ``reparameterize_model``), outermost first; the model is put in eval mode and returned.

    A module's ``fuse()`` returns its inference form (plain layers where it can, e.g. a conv
    with its BatchNorm folded in) or itself, changed in place."""
    model.eval()

    def visit(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            fuse = getattr(child, 'fuse', None)
            if callable(fuse):
                child = fuse()
                setattr(parent, name, child)
            visit(child)

    visit(model)
    return model
