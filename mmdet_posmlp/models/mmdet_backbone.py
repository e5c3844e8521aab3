"""The one MMDetection backbone base of every family (PosMLP, Hire-MLP, ViP, S2-MLP, CycleMLP).

A backbone wraps its family's timm classifier (``self.model``), headless and pruned after the last
stage asked for (``prune_intermediate_layers``): every parameter it holds is used, so DDP needs no
unused-parameter checks. Stages come from ``feature_info`` (``common.stage_layout``). Shared:

- ``out_indices``: stages whose maps ``forward`` returns, NCHW; negative indices count from the end.
- ``out_norm``: a new norm layer ``norm{i}`` per returned map (only for families that ask). Why: a
  stage output is the un-normalised residual stream (the classifier normalises only the last stage)
  and its scale differs from stage to stage, while an FPN adds the laterals of neighbouring stages.
- ``frozen_stages``: -1 trains all; 0 freezes the stem; k also freezes stages 1..k (with the
  transition that leads into each, and their output norms): no gradients, always in eval mode.
- ``norm_eval``: the classifier's BatchNorms stay in eval mode while training, keeping their
  ImageNet statistics (ViP, S2-MLP, CycleMLP have none); new output norms (none to keep) are exempt.
- ``with_cp``: activation checkpointing per block, through ``set_grad_checkpointing``.
- ``drop_path_rate`` (a classifier argument): stochastic depth, rising linearly over all blocks.
- ``init_cfg=dict(type='Pretrained', checkpoint=...)`` (alone or in a list, applied after the other
  entries): reads the file with torch's safe unpickler (safe_load.py), unwraps it
  (``common.unwrap_state_dict``: EMA first, a detector's ``backbone.`` keys), maps it through the
  family's ``checkpoint_filter_fn`` (reference names, window resizing), drops what the pruned
  backbone lacks, logs what was resized, missing and unexpected, and raises, naming the path, for a
  missing or unreadable file, disagreeing shapes (another variant) or another model's checkpoint.
- Invalid arguments raise at build time, naming the argument.
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule
from timm.models import reparameterize_model
from torch.nn.modules.batchnorm import _BatchNorm

from .init_args import check_init_args, split_pretrained
from .common import CheckpointError, stage_layout, unwrap_state_dict
from ..safe_load import load_checkpoint_file

__all__ = ['FamilyBackbone']


def _short(keys: Sequence[str], n: int = 8) -> str:
    keys = list(keys)
    return str(keys[:n])[:-1] + (f', ... {len(keys) - n} more]' if len(keys) > n else ']')


class FamilyBackbone(BaseModule):
    """Base of the family backbones; see the module docstring. Subclasses set:

    - ``classifier_cls``: the classifier (timm API: ``feature_info``, ``forward_intermediates``,
      ``prune_intermediate_layers``, ``set_grad_checkpointing``, a ``patch_embed`` stem);
    - ``arch_settings``: arch name -> classifier kwargs; ``arch_keys``: keys an arch dict may use;
    - ``checkpoint_filter``: reads the family's official checkpoints (a staticmethod);
    - ``out_norm_layer``: the norm built per output when ``out_norm=True`` (None: not offered)."""

    classifier_cls: Type[nn.Module]
    arch_settings: Dict[str, dict] = {}
    arch_keys: Tuple[str, ...] = ()
    checkpoint_filter: Callable[[Dict, nn.Module], Dict] = staticmethod(lambda sd, model: sd)
    out_norm_layer: Optional[Callable[[int], nn.Module]] = None
    final_norm_to_output = False  # the classifier's final norm initialises the last output's

    def __init__(self, arch: Union[str, dict], in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3), out_norm: bool = False,
                 frozen_stages: int = -1, norm_eval: bool = False, with_cp: bool = False,
                 pretrained: Optional[str] = None, init_cfg: Optional[dict] = None,
                 **classifier_kwargs):
        name = type(self).__name__
        super().__init__(init_cfg=self._check_init_cfg(pretrained, init_cfg))

        kwargs = dict(self._resolve_arch(arch), **classifier_kwargs)
        kwargs.update(in_chans=in_channels, num_classes=0, global_pool='')
        self._classifier_kwargs = kwargs
        self.model = self.classifier_cls(**kwargs)
        info = self.model.feature_info
        self.num_features = [f['num_chs'] for f in info]
        self.strides = [f['reduction'] for f in info]
        num_stages = len(info)

        if isinstance(out_indices, int) or not isinstance(out_indices, Sequence) or \
                not out_indices or not all(isinstance(i, int) for i in out_indices):
            raise ValueError(f'{name}: out_indices must be a non-empty sequence of stage '
                             f'indices, got {out_indices!r}')
        bad = [i for i in out_indices if not -num_stages <= i < num_stages]
        if bad:
            raise ValueError(f'{name}: out_indices {tuple(out_indices)} has {bad} outside the '
                             f'{num_stages} stages of this arch (0..{num_stages - 1}, or '
                             'negative from the end)')
        resolved = [i % num_stages for i in out_indices]
        if len(set(resolved)) != len(resolved) or resolved != sorted(resolved):
            raise ValueError(f'{name}: out_indices {tuple(out_indices)} must be increasing '
                             'without repeats (the neck reads them in order)')
        if isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int) or \
                not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'{name}: frozen_stages={frozen_stages!r} must be an int in '
                             f'[-1, {num_stages}] (-1: none, 0: the stem, k: stem and stages '
                             '1..k)')
        if out_norm and self.out_norm_layer is None:
            raise ValueError(f'{name}: out_norm is not offered by this family (its neck '
                             'normalises the map itself)')

        self.out_indices = tuple(resolved)
        self.out_channels = [self.num_features[i] for i in self.out_indices]
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.out_norm = bool(out_norm)

        self.model.prune_intermediate_layers(list(self.out_indices), prune_norm=True,
                                             prune_head=True)
        self.model.set_grad_checkpointing(with_cp)
        if self.out_norm:
            for i in self.out_indices:
                self.add_module(f'norm{i}', self.out_norm_layer(self.num_features[i]))
        self._freeze_stages()

    @classmethod
    def _check_init_cfg(cls, pretrained, init_cfg) -> Union[dict, List[dict], None]:
        """init_cfg with ``pretrained`` folded in; raises naming the argument (init_args.py)."""
        return check_init_args(cls.__name__, pretrained, init_cfg)

    @classmethod
    def _resolve_arch(cls, arch) -> dict:
        name = cls.__name__
        if isinstance(arch, str):
            if arch not in cls.arch_settings:
                raise ValueError(f'{name}: unknown arch {arch!r}; choose one of '
                                 f'{sorted(cls.arch_settings)} or give a dict of {cls.arch_keys}')
            return dict(cls.arch_settings[arch])
        if isinstance(arch, dict):
            unknown = sorted(set(arch) - set(cls.arch_keys))
            if unknown:
                raise ValueError(f'{name}: arch dict has unknown keys {unknown}; allowed: '
                                 f'{cls.arch_keys}')
            return dict(arch)
        raise TypeError(f'{name}: arch must be a name or a dict, got {type(arch).__name__}')

    def stage_modules(self) -> List[List[nn.Module]]:
        """The modules of each stage kept after pruning, the transition into it included."""
        attr, ends = stage_layout(self.model)
        modules = getattr(self.model, attr)
        starts = [0] + [end + 1 for end in ends[:-1]]
        return [list(modules[start:end + 1]) for start, end in zip(starts, ends)]

    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:
            self._freeze(self.model.patch_embed)
        stages = self.stage_modules()
        for i in range(min(self.frozen_stages, len(stages))):
            for module in stages[i]:
                self._freeze(module)
            if hasattr(self, f'norm{i}'):
                self._freeze(getattr(self, f'norm{i}'))

    @staticmethod
    def _freeze(module: nn.Module) -> None:
        module.eval()
        for p in module.parameters():
            p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.model.modules():  # the classifier's own norms, not the new out norms
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def init_weights(self) -> None:
        # the classifier initialised itself when built (its family's scheme)
        path, others = split_pretrained(self.init_cfg)
        if others is not None:  # mmengine's initializers, before the checkpoint (as mmengine)
            init_cfg, self.init_cfg = self.init_cfg, others
            try:
                super().init_weights()
            finally:
                self.init_cfg = init_cfg
        if path is not None:
            self.load_pretrained(path)
            self._is_init = True

    def load_pretrained(self, path: str) -> Dict[str, List[str]]:
        """Load ImageNet/backbone/detector weights; return what was dropped, resized and missing."""
        name = type(self).__name__
        raw, source = unwrap_state_dict(load_checkpoint_file(path, owner=name), path, name)
        # a backbone checkpoint holds this wrapper's output norms beside the classifier's names
        # ('model.'-prefixed, or bare in older PosMLP backbone checkpoints)
        own = {k: v for k, v in raw.items() if k.split('.')[0] in self._output_norms()}
        sd = {k[len('model.'):] if k.startswith('model.') else k: v
              for k, v in raw.items() if k not in own}
        try:
            sd = self.checkpoint_filter(sd, self.model)
        except CheckpointError as e:
            raise CheckpointError(f"{name}: '{path}': {e}") from None
        last = f'norm{len(self.num_features) - 1}'
        if self.final_norm_to_output and last in self._output_norms() and \
                not any(k.startswith(last + '.') for k in own):
            own.update({last + k[len('norm'):]: sd.pop(k) for k in list(sd)
                        if k.startswith('norm.')})
        resized = [f'{k}: {tuple(raw[k].shape)} -> {tuple(v.shape)}' for k, v in sd.items()
                   if k in raw and raw[k].shape != v.shape]
        sd = dict({'model.' + k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}, **own)

        target = self.state_dict()
        with torch.device('meta'):  # the unpruned classifier's names, for free
            full = set('model.' + k for k in self.classifier_cls(**dict(
                self._classifier_kwargs, num_classes=1, global_pool='avg')).state_dict())
        head = [k for k in sd if k.startswith('model.head.')]
        unused = [k for k in sd if k not in target and k in full and k not in head]
        unexpected = [k for k in sd if k not in target and k not in full]
        matched = [k for k in sd if k in target]
        model_keys = [k for k in target if k.startswith('model.')]
        if len([k for k in matched if k.startswith('model.')]) < len(model_keys) / 2:
            raise CheckpointError(
                f"{name}: '{path}' is not a {name} checkpoint of this arch: "
                f'{len(matched)} of the backbone\'s {len(model_keys)} tensors found '
                f'(checkpoint keys {_short(list(sd), 5)}; expected e.g. {_short(model_keys, 3)})')
        mismatched = [f'{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(target[k].shape)}'
                      for k in matched if sd[k].shape != target[k].shape]
        if mismatched:
            raise CheckpointError(f"{name}: '{path}' is another {name} variant: "
                                  f'{len(mismatched)} tensors disagree in shape: '
                                  + '; '.join(mismatched[:6]))
        missing = list(self.load_state_dict({k: sd[k] for k in matched}, strict=False).missing_keys)
        print_log(f"{name}: loaded {len(matched)} tensors from '{path}' ({source}); dropped the "
                  f'head ({len(head)}) and {len(unused)} the backbone does not use (final norm, '
                  'stages after the last output)', logger='current')
        for line in resized:
            print_log(f'{name}: resized {line}', logger='current')
        if missing:
            print_log(f'{name}: missing keys (kept at initialisation): {_short(missing, 20)}',
                      logger='current', level=30)
        if unexpected:
            print_log(f'{name}: unexpected keys (ignored): {_short(unexpected, 20)}',
                      logger='current', level=30)
        return dict(head=head, unused=unused, unexpected=unexpected, missing=missing,
                    resized=resized, source=[source])

    def _output_norms(self) -> List[str]:
        return [f'norm{i}' for i in self.out_indices if hasattr(self, f'norm{i}')]

    def fuse(self) -> 'FamilyBackbone':
        """Deployment step, in place and inference only: every module's own ``fuse()``, walked
        by timm's ``reparameterize_model``; call it after loading the final weights."""
        return reparameterize_model(self, inplace=True).eval()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if x.dim() != 4:
            raise ValueError(f'{type(self).__name__} expects (B, C, H, W) images, got shape '
                             f'{tuple(x.shape)}')
        maps = self.model.forward_intermediates(x, indices=list(self.out_indices), stop_early=True,
                                                output_fmt='NCHW', intermediates_only=True)
        if self.out_norm:
            maps = [getattr(self, f'norm{i}')(y) for i, y in zip(self.out_indices, maps)]
        return tuple(y.contiguous() for y in maps)
