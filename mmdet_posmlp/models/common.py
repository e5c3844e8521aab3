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

and, for timm's model API, functions as timm shares ``feature_take_indices`` (the methods stay in
each class and call them): ``default_cfg``, ``checkpoint_filter_fn`` and ``build_classifier``
(registration), ``reset_head``, ``stage_layout``, ``forward_checkpointed``,
``forward_intermediates``, ``prune_intermediate_layers`` and ``stage_group_matcher``.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import SelectAdaptivePool2d, calculate_drop_path_rates
from timm.models import build_model_with_cfg, checkpoint_seq
from timm.models._features import feature_take_indices
from torch.utils.checkpoint import checkpoint

from ..safe_load import CheckpointError

__all__ = ['per_stage', 'drop_path_rates', 'init_trunc_normal', 'check_global_pool',
           'CheckpointError', 'unwrap_state_dict', 'STATE_DICT_KEYS', 'fuse_modules',
           'default_cfg', 'checkpoint_filter_fn', 'build_classifier', 'reset_head', 'stage_layout',
           'forward_checkpointed', 'forward_intermediates', 'prune_intermediate_layers',
           'stage_group_matcher']


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

    PosMLP and Hire-MLP draw their convolutions this way too; ViP, S2-MLP and CycleMLP leave
    them at torch's default (their official codes do) and pass ``layers=(nn.Linear, ...)``."""
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


# Where training scripts put the weights, in the order they are taken: the weights each family
# published its accuracy with. timm's train.py and PosMLP's reference evaluate the EMA copy
# ('state_dict_ema', next to 'state_dict'); DeiT-style scripts (Hire-MLP's, CycleMLP's) evaluate
# 'model' and keep 'model_ema' beside it.
STATE_DICT_KEYS = ('state_dict_ema', 'state_dict', 'model', 'model_ema', 'module')


def unwrap_state_dict(checkpoint, path: str = '<checkpoint>', owner: str = 'checkpoint'
                      ) -> Tuple[Dict[str, torch.Tensor], str]:
    """The tensors of a loaded checkpoint and where they were found.

    Takes the first non-empty dict under ``STATE_DICT_KEYS`` (or the checkpoint itself), keeps
    only tensors, and strips a detector's ``backbone.`` prefix (dropping its neck and heads)
    and DataParallel's ``module.``. Raises naming ``path`` when there is nothing to load."""
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{owner}: '{path}' holds a {type(checkpoint).__name__}, not a dict of "
                         'weights')
    source = 'bare state dict'
    for key in STATE_DICT_KEYS:
        if isinstance(checkpoint.get(key), dict) and checkpoint[key]:
            checkpoint, source = checkpoint[key], key
            break
    tensors = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{owner}: '{path}' has no tensors (top-level keys: "
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


# ---- timm's model API ---------------------------------------------------------------------------
# For a classifier laid out as timm's hierarchical models are: ``patch_embed``, a Sequential of
# stage modules (each a Sequential of blocks, or one block) with transitions between them,
# ``norm``, ``global_pool``, ``head_drop``, ``head``; ``feature_info[i]['module']`` names the
# module that ends stage i ('network.2', 'blocks.5'), which is all these functions need to know.

def default_cfg(**kwargs) -> Dict:
    """timm's pretrained cfg of an ImageNet-1K classifier at 224 px; ``kwargs`` add or override."""
    return {'url': '', 'num_classes': 1000, 'input_size': (3, 224, 224), 'crop_pct': 0.9,
            'interpolation': 'bicubic', 'fixed_input_size': False, 'mean': IMAGENET_DEFAULT_MEAN,
            'std': IMAGENET_DEFAULT_STD, 'first_conv': 'patch_embed.proj', 'classifier': 'head',
            **kwargs}


def checkpoint_filter_fn(state_dict: Dict, model: nn.Module) -> Dict[str, torch.Tensor]:
    """timm's ``pretrained_filter_fn`` for a family whose official names are its model's own:
    the weights ``unwrap_state_dict`` finds, as they are."""
    return unwrap_state_dict(state_dict)[0]


def build_classifier(cls: Type[nn.Module], variant: str, settings: Dict, pretrained: bool = False,
                     default_out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3), **kwargs):
    """A registered variant through timm's ``build_model_with_cfg``: its arch ``settings``
    (``kwargs`` override them), official checkpoints through ``checkpoint_filter_fn``, and
    ``features_only`` through ``forward_intermediates`` (the stages ``default_out_indices``
    unless ``out_indices`` is given)."""
    return build_model_with_cfg(
        cls, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls='getter', out_indices=default_out_indices),
        **dict(settings, **kwargs))


def reset_head(model: nn.Module, num_classes: int, global_pool: Optional[str] = None,
               allowed: Sequence[str] = ('', 'avg'), input_fmt: str = 'NCHW') -> None:
    """timm's ``reset_classifier``, also used to build the head: ``model.global_pool`` (timm's
    ``SelectAdaptivePool2d`` over the model's ``input_fmt`` maps; ``None`` keeps the current
    pool) and ``model.head``, a Linear on ``model.num_features`` (none for 0 classes). Without
    pooling a Linear head classifies every position of an NHWC map, but cannot take an NCHW
    map: ``check_global_pool`` refuses that."""
    if global_pool is None:
        global_pool = model.global_pool.pool_type
    check_global_pool(type(model).__name__, global_pool,
                      num_classes if input_fmt == 'NCHW' else 0, allowed)
    model.num_classes = num_classes
    model.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool),
                                             input_fmt=input_fmt)
    model.head = nn.Linear(model.num_features, num_classes) if num_classes > 0 else nn.Identity()


def stage_layout(model: nn.Module) -> Tuple[str, List[int]]:
    """The attribute that holds the stages and, of the stages it still holds (after pruning),
    the index of each one's module in it."""
    names = [f['module'].split('.') for f in model.feature_info]
    attr = names[0][0]
    held = len(getattr(model, attr))
    return attr, [int(name[1]) for name in names if int(name[1]) < held]


def _run(module: nn.Module, x: torch.Tensor, checkpointed: bool) -> torch.Tensor:
    if not checkpointed or not torch.is_grad_enabled():
        return module(x)
    # one checkpoint per block: only block inputs are kept, each block is recomputed in backward
    # (BatchNorm running statistics are then updated twice per step, as in timm)
    if isinstance(module, nn.Sequential):
        return checkpoint_seq(module, x)
    return checkpoint(module, x, use_reentrant=False)


def forward_checkpointed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The stage container with activation checkpointing per block; transitions run as they are
    (``set_grad_checkpointing``; call it only outside TorchScript)."""
    attr, ends = stage_layout(model)
    for k, module in enumerate(getattr(model, attr)):
        x = _run(module, x, k in ends)
    return x


def forward_intermediates(
        model: nn.Module,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = 'NCHW',
        intermediates_only: bool = False,
        input_fmt: str = 'NCHW',
        isotropic: bool = False,
) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
    """timm 1.0's ``forward_intermediates``: the maps of the selected stages.

    Args:
        indices: None for all stages, n for the last n, or a list of stage indices; negative
            ones count from the last stage the model holds (after pruning too, as in timm).
        norm: the final norm on the last stage's map, the only one it is sized for (on every
            map when ``isotropic``: one width throughout).
        stop_early: skip the stages after the last selected one.
        output_fmt: 'NCHW' or 'NHWC' for the maps.
        intermediates_only: return only the maps.
        input_fmt: the layout of the model's own maps, 'NCHW' or 'NHWC'.

    Returns:
        The maps, or (final features, maps): the final norm is applied when the last stage ran
        (always when ``isotropic``).
    """
    if output_fmt not in ('NCHW', 'NHWC'):
        raise ValueError(f"{type(model).__name__}: output_fmt must be 'NCHW' or 'NHWC', got "
                         f'{output_fmt!r}')
    attr, ends = stage_layout(model)
    modules = getattr(model, attr)
    take_indices, max_index = feature_take_indices(len(ends), indices)
    stage_at = {k: i for i, k in enumerate(ends)}
    last = len(ends) - 1
    intermediates = []
    x = model.patch_embed(x)
    stage = -1
    for k in range(ends[max_index] + 1 if stop_early else len(modules)):
        x = _run(modules[k], x, model.grad_checkpointing and k in stage_at)
        stage = stage_at.get(k, -1)
        if stage in take_indices:
            y = model.norm(x) if norm and (isotropic or stage == last) else x
            if output_fmt != input_fmt:
                y = y.permute(0, 3, 1, 2) if input_fmt == 'NHWC' else \
                    y.permute(0, 2, 3, 1).contiguous()
            intermediates.append(y)
    if intermediates_only:
        return intermediates
    if isotropic or stage == last:
        x = model.norm(x)
    return x, intermediates


def prune_intermediate_layers(model: nn.Module, indices: Union[int, List[int]] = 1,
                              prune_norm: bool = False, prune_head: bool = True,
                              isotropic: bool = False) -> List[int]:
    """timm's ``prune_intermediate_layers``: drop the stages (and transitions) after the last
    one in ``indices``, and the final norm / head if asked; returns the absolute indices.

    Dropping the last stage also drops the norm and the head, sized for it (not when
    ``isotropic``), and ``num_features`` becomes the last kept stage's width."""
    attr, ends = stage_layout(model)
    take_indices, max_index = feature_take_indices(len(ends), indices)
    setattr(model, attr, getattr(model, attr)[:ends[max_index] + 1])
    prune_end = max_index < len(ends) - 1 and not isotropic
    if prune_norm or prune_end:
        model.norm = nn.Identity()
    if prune_end:
        model.num_features = model.head_hidden_size = model.feature_info[max_index]['num_chs']
    if prune_head or prune_end:
        model.reset_classifier(0, '')
    return take_indices


def stage_group_matcher(model: nn.Module, coarse: bool = False) -> Dict:
    """timm's ``group_matcher`` (layer-wise lr decay), stem to head: each block (coarse: each
    module of the stage container), a transition before the blocks of the stage it leads
    into, the final norm with the last block."""
    attr = stage_layout(model)[0]
    blocks = rf'^{attr}\.(\d+)' if coarse else [
        (rf'^{attr}\.(\d+)\.(\d+)\.', None),
        (rf'^{attr}\.(\d+)\.(?:proj|norm)\.', (0,)),
        (r'^norm\.', (99999,)),
    ]
    return dict(stem=r'^patch_embed', blocks=blocks)
