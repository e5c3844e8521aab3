"""What every model family of the package shares, written once (torch and timm only).

Each family file (posmlp.py, hire_mlp.py, vip.py, s2mlp.py, cycle_mlp.py) holds its own blocks,
classifier, checkpoint filter and timm registration, and takes from here: argument helpers, the
initialisation all five official codes use, checkpoint unwrapping, ``StagedClassifier`` (the base of
every classifier, whose methods are timm's model API) and the timm registration helpers.
"""
from typing import Dict, List, Optional, Sequence, Set, Tuple, Type, Union

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import SelectAdaptivePool2d, calculate_drop_path_rates
from timm.models import build_model_with_cfg, checkpoint_seq
from timm.models._features import feature_take_indices
from torch.utils.checkpoint import checkpoint

from ..safe_load import CheckpointError

__all__ = ['per_stage', 'drop_path_rates', 'init_trunc_normal', 'CheckpointError',
           'unwrap_state_dict', 'STATE_DICT_KEYS', 'StagedClassifier',
           'stage_layout', 'default_cfg', 'checkpoint_filter_fn', 'build_classifier']


def per_stage(value, num_stages: int, name: str, owner: str) -> tuple:
    """``value`` repeated for each stage, or the per-stage sequence it already is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (value,) * num_stages
    value = tuple(value)
    if len(value) != num_stages:
        raise ValueError(f'{owner}: {name} needs one value per stage ({num_stages}), got {value}')
    return value


def drop_path_rates(depths: Sequence[int], drop_path_rate: float) -> List[List[float]]:
    """Block j of all blocks gets ``drop_path_rate * j / (total - 1)``, as in every family's
    official code; one list per stage."""
    rates = calculate_drop_path_rates(drop_path_rate, sum(depths), stagewise=False)
    out, start = [], 0
    for depth in depths:
        out.append(list(rates[start:start + depth]))
        start += depth
    return out


def init_trunc_normal(module: nn.Module,
                      layers: Tuple[Type[nn.Module], ...] = (nn.Linear, nn.Conv2d)) -> None:
    """Truncated normal (std 0.02) weights and zero biases for ``layers``; norms at (1, 0). PosMLP
    and Hire-MLP draw their convolutions this way too; ViP, S2-MLP and CycleMLP leave them at
    torch's default (their official codes do) and pass ``layers=(nn.Linear, ...)``."""
    for m in module.modules():
        if isinstance(m, layers):
            nn.init.trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)) and \
                m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# Where training scripts put the weights, first the ones each family published its accuracy with:
# timm's train.py and PosMLP's reference evaluate the EMA copy ('state_dict_ema', beside
# 'state_dict'); DeiT-style scripts (Hire-MLP's, CycleMLP's) evaluate 'model', not 'model_ema'.
STATE_DICT_KEYS = ('state_dict_ema', 'state_dict', 'model', 'model_ema', 'module')


def unwrap_state_dict(checkpoint, path: str = '<checkpoint>', owner: str = 'checkpoint'
                      ) -> Tuple[Dict[str, torch.Tensor], str]:
    """The tensors of a loaded checkpoint and where they were found: the first non-empty dict under
    ``STATE_DICT_KEYS`` (or the checkpoint itself), tensors only, without a detector's ``backbone.``
    prefix (dropping its neck and heads) or DataParallel's ``module.``. Raises naming ``path`` when
    there is nothing to load."""
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{owner}: '{path}' holds a {type(checkpoint).__name__}, not a dict "
                              'of weights')
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


def stage_layout(model: nn.Module) -> Tuple[str, List[int]]:
    """The attribute that holds the stages, and the index in it of the module that ends each stage
    it still holds after pruning (``feature_info[i]['module']``: 'network.2', 'blocks.5')."""
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


class StagedClassifier(nn.Module):
    """A timm classifier laid out as ``patch_embed`` -> stage container -> ``norm`` ->
    ``global_pool`` -> ``head_drop`` -> ``head``, whose methods are timm's model API.

    A subclass builds, after ``super().__init__()``: ``num_features`` (= ``head_hidden_size``),
    ``patch_embed``, the stage container, ``feature_info``, ``norm``, ``head_drop``, then calls
    ``reset_classifier(num_classes, global_pool)``, and defines ``forward_stage_container``.

    The stage container is an ``nn.Sequential`` of stage modules (each a Sequential of blocks, or
    one block) with transitions between them; ``feature_info`` names the module that ends each
    stage (``stage_layout``), all the methods need to know of it. Class attributes:

    - ``pool_types``: the ``global_pool`` values the head takes;
    - ``input_fmt``: the layout of the model's maps, 'NCHW' or 'NHWC';
    - ``isotropic``: one width throughout (S2-MLP): the container holds the blocks themselves, each
      a stage of ``feature_info``, and the final norm fits every map and is never pruned;
    - ``stages_checkpoint_themselves``: the stage modules checkpoint their own blocks (PosMLP's);
      ``grad_checkpointing`` then wraps nothing here: one checkpoint around a stage would recompute
      all its blocks at once."""
    pool_types = ('', 'avg')
    input_fmt = 'NCHW'
    isotropic = False
    stages_checkpoint_themselves = False

    def __init__(self):
        super().__init__()
        self.grad_checkpointing = False

    def forward_stage_container(self, x: torch.Tensor) -> torch.Tensor:
        """The stage container, run as it is; each subclass names its own (TorchScript looks an
        attribute up by a literal name only)."""
        raise NotImplementedError

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        # no positional or token parameters; timm's optimizer exempts 1-D ones (norms, biases)
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict:
        """timm's ``group_matcher`` (layer-wise lr decay), stem to head: each block (coarse: each
        module of the stage container), a transition before the blocks of the stage it leads
        into, the final norm with the last block."""
        attr = stage_layout(self)[0]
        if self.isotropic:  # the container's modules are the blocks
            blocks = [(rf'^{attr}\.(\d+)', None), (r'^norm', (99999,))]
        else:
            blocks = rf'^{attr}\.(\d+)' if coarse else [
                (rf'^{attr}\.(\d+)\.(\d+)\.', None),
                (rf'^{attr}\.(\d+)\.(?:proj|norm)\.', (0,)),
                (r'^norm\.', (99999,)),
            ]
        return dict(stem=r'^patch_embed', blocks=blocks)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing per block, in training (call it outside TorchScript)."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """timm's ``reset_classifier``, also used to build the head: ``global_pool`` one of
        ``pool_types`` (None keeps the current pool) and a Linear ``head`` (none for 0 classes).
        Without pooling it classifies every position of an NHWC map. Refusals change nothing."""
        owner = type(self).__name__
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        if global_pool not in self.pool_types:
            raise ValueError(f'{owner}: global_pool={global_pool!r} is not supported; use one of '
                             f'{tuple(self.pool_types)}')
        if global_pool == '' and num_classes > 0 and self.input_fmt == 'NCHW':
            raise ValueError(f"{owner}: global_pool='' (no pooling) needs num_classes=0: the "
                             'linear head cannot take an unpooled map')
        self.num_classes = num_classes
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool),
                                                input_fmt=self.input_fmt)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_intermediates(
            self, x: torch.Tensor, indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False, stop_early: bool = False, output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """timm 1.0's ``forward_intermediates``: the maps of the selected stages, or (final
        features, maps), the final norm applied to the features when the last stage ran (always
        when ``isotropic``), which gives ``forward_features``'s map. ``indices``: None for all
        stages, n for the last n, or a list of stage indices; negative ones count from the last
        stage the model holds (after pruning too, as in timm). ``norm``: the final norm on the last
        stage's map, the only one it is sized for (on every map when ``isotropic``)."""
        if output_fmt not in ('NCHW', 'NHWC'):
            raise ValueError(f"{type(self).__name__}: output_fmt must be 'NCHW' or 'NHWC', got "
                             f'{output_fmt!r}')
        attr, ends = stage_layout(self)
        modules = getattr(self, attr)
        take_indices, max_index = feature_take_indices(len(ends), indices)
        stage_at = {k: i for i, k in enumerate(ends)}
        last = len(ends) - 1
        checkpointed = self.grad_checkpointing and not self.stages_checkpoint_themselves
        intermediates = []
        x = self.patch_embed(x)
        stage = -1
        for k in range(ends[max_index] + 1 if stop_early else len(modules)):
            x = _run(modules[k], x, checkpointed and k in stage_at)
            stage = stage_at.get(k, -1)
            if stage in take_indices:
                y = self.norm(x) if norm and (self.isotropic or stage == last) else x
                if output_fmt != self.input_fmt:
                    y = y.permute(0, 3, 1, 2) if self.input_fmt == 'NHWC' else \
                        y.permute(0, 2, 3, 1).contiguous()
                intermediates.append(y)
        if intermediates_only:
            return intermediates
        if self.isotropic or stage == last:
            x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1,
                                  prune_norm: bool = False, prune_head: bool = True) -> List[int]:
        """timm's ``prune_intermediate_layers``: drop the stages (and transitions) after the last
        one in ``indices``, and the final norm / head if asked; returns the absolute indices.
        Dropping the last stage also drops the norm and the head, sized for it (not when
        ``isotropic``), and ``num_features`` becomes the last kept stage's width."""
        attr, ends = stage_layout(self)
        take_indices, max_index = feature_take_indices(len(ends), indices)
        setattr(self, attr, getattr(self, attr)[:ends[max_index] + 1])
        prune_end = max_index < len(ends) - 1 and not self.isotropic
        if prune_norm or prune_end:
            self.norm = nn.Identity()
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
        if prune_head or prune_end:
            self.reset_classifier(0, '')
        return take_indices

    def forward_stages(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The map of every stage, before the final norm, for dense prediction."""
        return self.forward_intermediates(x, intermediates_only=True)

    @torch.jit.ignore
    def forward_checkpointed(self, x: torch.Tensor) -> torch.Tensor:
        """The stage container, checkpointed per block; transitions run as they are."""
        attr, ends = stage_layout(self)
        checkpointed = not self.stages_checkpoint_themselves
        for k, module in enumerate(getattr(self, attr)):
            x = _run(module, x, checkpointed and k in ends)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = self.forward_checkpointed(x)
        else:
            x = self.forward_stage_container(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def default_cfg(**kwargs) -> Dict:
    """timm's pretrained cfg of an ImageNet-1K classifier at 224 px; ``kwargs`` add or override."""
    return {'url': '', 'num_classes': 1000, 'input_size': (3, 224, 224), 'crop_pct': 0.9,
            'interpolation': 'bicubic', 'fixed_input_size': False, 'mean': IMAGENET_DEFAULT_MEAN,
            'std': IMAGENET_DEFAULT_STD, 'first_conv': 'patch_embed.proj', 'classifier': 'head',
            **kwargs}


def checkpoint_filter_fn(state_dict: Dict, model: nn.Module) -> Dict[str, torch.Tensor]:
    """timm's ``pretrained_filter_fn`` where the official names are the model's: unwrapping only."""
    return unwrap_state_dict(state_dict)[0]


def build_classifier(cls: Type[nn.Module], variant: str, settings: Dict, pretrained: bool = False,
                     default_out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                     filter_fn=checkpoint_filter_fn, **kwargs):
    """A registered variant through timm's ``build_model_with_cfg``: its arch ``settings``
    (``kwargs`` override them), checkpoints through ``filter_fn`` (the family's own where its
    official names are not its model's), and ``features_only`` through ``forward_intermediates``
    (the stages ``default_out_indices`` unless ``out_indices`` is given)."""
    return build_model_with_cfg(
        cls, variant, pretrained, pretrained_filter_fn=filter_fn,
        feature_cfg=dict(feature_cls='getter', out_indices=default_out_indices),
        **dict(settings, **kwargs))
