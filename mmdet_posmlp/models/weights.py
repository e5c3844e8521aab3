"""PosMLP weights in every form they come in, turned into backbone weights: state dict in, state
dict out.

Accepted inputs (one loader, used by the backbone's init_cfg, by timm's pretrained loading and
by tools/model_converters/convert_posmlp_checkpoint.py):
- the reference implementation's training checkpoint: a dict with 'state_dict_ema' (preferred),
  'state_dict', 'optimizer', 'args' (a pickled argparse.Namespace), ...
- a timm state dict of posmlp_t / posmlp_s / posmlp_b (same key names as the reference);
- a backbone checkpoint written by the converter, or a detector checkpoint ('backbone.' keys).

Below the model: nothing here imports or builds one. The target of a conversion is a state dict
(``model.state_dict()``); building a model to convert into is the converter tool's business.

Files are read with torch's safe (``weights_only``) unpickler and the package's one allowlist
(:mod:`mmdet_posmlp.engine.safe_load`, which holds the reference checkpoints' argparse.Namespace
next to the types of mmengine's checkpoints).
"""
import math
import os
import pickle
import zipfile
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from ..engine.safe_load import allowed_global_names, mmengine_checkpoint_loading

# Window-derived buffers: rebuilt by the model for its own window, never loaded.
DERIVED_BUFFERS = ('rel_indices', 'window_relative_position_index')
# Parameters whose shape depends on the window and that can be resized.
WINDOW_PARAMS = ('token_proj_n_bias', 'window_relative_position_bias_table')
# Window-dependent parameters that cannot be resized (see NOT_RESIZABLE_WHY).
NOT_RESIZABLE = ('token_proj_n_weight',)
NOT_RESIZABLE_WHY = (
    "the dense 'sgu' mixer learns one free weight for every (output token, input token) pair "
    'of a window, at absolute positions, whereas GQPE (6 parameters per group, whatever the '
    'window) and LRPE (a table over relative offsets, resized bicubically) are functions of '
    'the offset between two tokens; a window of another size pairs other positions at other '
    'offsets than those the matrix learned, and interpolating it would treat a learned, '
    'unconstrained N x N matrix as a smooth kernel (nothing in training makes it one) and '
    "change what each row sums to. Build the model with the checkpoint's window for those stages (windows=...), or "
    'start the sgu mixer from its initialisation (no Pretrained)')
STATE_DICT_KEYS = ('state_dict_ema', 'state_dict', 'model', 'module')


class CheckpointError(RuntimeError):
    """A checkpoint that cannot become PosMLP weights; the message names the file and keys."""


def load_checkpoint_file(path: str, owner: str = 'PosMLP') -> dict:
    """torch.load a checkpoint with safe unpickling (URLs through mmengine); errors for missing
    or broken files name the file and start with `owner` (the model that wanted it)."""
    if not isinstance(path, str) or not path:
        raise CheckpointError(f'{owner}: checkpoint path must be a non-empty string, got {path!r}')
    if path.startswith(('http://', 'https://')):
        from mmengine.runner.checkpoint import CheckpointLoader
        with mmengine_checkpoint_loading():
            return CheckpointLoader.load_checkpoint(path, map_location='cpu')
    if not os.path.isfile(path):
        raise CheckpointError(
            f"{owner}: checkpoint file not found: '{path}'. ImageNet weights go in checkpoints/ "
            '(see checkpoints/README.md for where they come from and how they are named).')
    size = os.path.getsize(path)
    try:
        with mmengine_checkpoint_loading():
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        if 'global' not in str(e).lower():  # no refused type named: not a pickle at all
            # torch's message is a generic paragraph with the unpickler's reason on one line
            reason = next((line.strip() for line in str(e).splitlines() if 'Unsupported' in line),
                          type(e).__name__)
            raise CheckpointError(
                f"{owner}: cannot read checkpoint '{path}' ({size} bytes): not a torch "
                f'checkpoint ({reason})') from e
        raise CheckpointError(
            f"{owner}: '{path}' holds objects that safe loading refuses (only tensors, containers "
            f'and the types of mmdet_posmlp.engine.safe_load are allowed: '
            f'{allowed_global_names()}): {e}') from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(
            f"{owner}: cannot read checkpoint '{path}' ({size} bytes): the file is truncated or "
            f'not a torch checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})') from e


def extract_state_dict(ckpt, path: str = '<checkpoint>') -> Tuple[Dict[str, torch.Tensor], str]:
    """The weights inside a loaded checkpoint, and where they were found."""
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"PosMLP: '{path}' holds a {type(ckpt).__name__}, not a dict of weights")
    source = 'bare state dict'
    for key in STATE_DICT_KEYS:
        if isinstance(ckpt.get(key), dict) and ckpt[key]:
            ckpt, source = ckpt[key], key
            break
    tensors = {k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"PosMLP: '{path}' has no tensors (top-level keys: {list(ckpt)[:10]})")
    # DataParallel and detector prefixes
    if any(k.startswith('backbone.') for k in tensors):
        tensors = {k[len('backbone.'):]: v for k, v in tensors.items() if k.startswith('backbone.')}
        source += " ('backbone.' keys of a detector)"
    if all(k.startswith('module.') for k in tensors):
        tensors = {k[len('module.'):]: v for k, v in tensors.items()}
    return tensors, source


def resize_token_bias(bias: torch.Tensor, window: int) -> torch.Tensor:
    """(1, w*w, 1) per-token bias -> (1, window**2, 1), bicubic over the window's grid."""
    old = math.isqrt(bias.numel())
    grid = bias.reshape(1, 1, old, old).float()
    grid = F.interpolate(grid, size=(window, window), mode='bicubic', align_corners=False)
    return grid.reshape(1, window * window, 1).to(bias.dtype)


def resize_lrpe_table(table: torch.Tensor, window: int) -> torch.Tensor:
    """((2w-1)^2, G) relative table -> ((2*window-1)^2, G), bicubic as Swin does for its tables."""
    side, groups = math.isqrt(table.shape[0]), table.shape[1]
    new = 2 * window - 1
    grid = table.t().reshape(1, groups, side, side).float()
    grid = F.interpolate(grid, size=(new, new), mode='bicubic', align_corners=False)
    return grid.reshape(groups, new * new).t().contiguous().to(table.dtype)


def _window_of(num_tokens: int) -> str:
    side = math.isqrt(num_tokens)
    return f'{side}x{side}' if side * side == num_tokens else f'{num_tokens}-token'


def _describe_variant(sd: Dict[str, torch.Tensor]) -> str:
    w = sd.get('patch_embed.projs.2.weight')
    dims = [sd[f'levels.{i}.pool.conv.weight'].shape[0] for i in range(1, 4)
            if f'levels.{i}.pool.conv.weight' in sd]
    if w is None:
        return 'unknown variant'
    return f'embed_dims {tuple([w.shape[0]] + dims)}'


def convert_to_backbone(sd: Dict[str, torch.Tensor], target: Dict[str, torch.Tensor],
                        path: str = '<checkpoint>', final_norm: Optional[str] = None,
                        ) -> Tuple[Dict[str, torch.Tensor], Dict[str, List[str]]]:
    """Map classifier / timm / backbone weights onto a backbone's state dict `target`.

    Drops the classifier head and window-derived buffers, renames the classifier's final
    `norm` to `final_norm` (the last output's norm) when given, and resizes window-dependent
    parameters to the target window (GQPE's and LRPE's; the dense sgu matrix cannot be, see
    NOT_RESIZABLE_WHY). Raises CheckpointError naming the keys and shapes that disagree
    (another variant, or a dense sgu matrix of another window, saying why) or when nothing
    matches (another model).
    """
    report = {'dropped': [], 'resized': [], 'renamed': []}
    out = {}
    for key, value in sd.items():
        if key.startswith('head.') or key.endswith(DERIVED_BUFFERS):
            report['dropped'].append(key)
            continue
        if key.startswith('norm.') and key not in target:
            if final_norm is None:
                report['dropped'].append(key)
                continue
            new_key = final_norm + key[len('norm'):]
            report['renamed'].append(f'{key} -> {new_key}')
            key = new_key
        out[key] = value

    matched = [k for k in out if k in target]
    if not matched:
        raise CheckpointError(
            f"PosMLP: '{path}' is not a PosMLP checkpoint: none of its {len(sd)} keys match the "
            f'backbone (first keys: {list(sd)[:5]}; expected e.g. {list(target)[:3]})')

    mismatched, not_resizable = [], []
    for key in matched:
        have, want = out[key].shape, target[key].shape
        if have == want:
            continue
        if key.endswith('token_proj_n_bias') and out[key].dim() == 3:
            out[key] = resize_token_bias(out[key], math.isqrt(want[1]))
            report['resized'].append(f'{key}: {tuple(have)} -> {tuple(want)}')
        elif key.endswith('window_relative_position_bias_table') and have[1] == want[1]:
            out[key] = resize_lrpe_table(out[key], (math.isqrt(want[0]) + 1) // 2)
            report['resized'].append(f'{key}: {tuple(have)} -> {tuple(want)}')
        elif key.endswith(NOT_RESIZABLE) and len(have) == len(want) == 3 and \
                have[0] == want[0] and have[1] == have[2] and want[1] == want[2]:
            not_resizable.append(f'{key}: checkpoint {tuple(have)} ({_window_of(have[1])} '
                                 f'windows) vs model {tuple(want)} ({_window_of(want[1])} '
                                 'windows)')
        else:
            mismatched.append(f'{key}: checkpoint {tuple(have)} vs model {tuple(want)}')
    if not_resizable and not mismatched:
        shown = '\n  '.join(not_resizable[:12])
        more = f'\n  ... and {len(not_resizable) - 12} more' if len(not_resizable) > 12 else ''
        raise CheckpointError(
            f"PosMLP: '{path}' has windows of another size than the model, and "
            f'{len(not_resizable)} window-dependent tensors cannot be resized:\n  {shown}{more}'
            f'\nThey cannot be resized because {NOT_RESIZABLE_WHY}.')
    mismatched += not_resizable
    if mismatched:
        shown = '\n  '.join(mismatched[:12])
        more = f'\n  ... and {len(mismatched) - 12} more' if len(mismatched) > 12 else ''
        raise CheckpointError(
            f"PosMLP: '{path}' is a different PosMLP variant ({_describe_variant(sd)}) from the "
            f'model ({_describe_variant(target)}, or another mixer): {len(mismatched)} tensors '
            f'disagree in shape:\n  {shown}{more}')
    return out, report


def load_backbone_weights(path: str, target: Dict[str, torch.Tensor],
                          final_norm: Optional[str] = None):
    """Read `path` and return (backbone state dict, report) ready for load_state_dict."""
    sd, source = extract_state_dict(load_checkpoint_file(path), path)
    converted, report = convert_to_backbone(sd, target, path, final_norm)
    report['source'] = [source]
    return converted, report


VARIANT_BY_STEM_WIDTH = {96: 'tiny', 128: 'small', 192: 'base'}


def infer_arch(sd: Dict[str, torch.Tensor], path: str = '<checkpoint>') -> str:
    """'tiny' | 'small' | 'base' from the stem width of a PosMLP state dict."""
    w = sd.get('patch_embed.projs.2.weight')
    if w is None or w.shape[0] not in VARIANT_BY_STEM_WIDTH:
        raise CheckpointError(f"PosMLP: cannot tell the variant of '{path}' from its stem "
                              '(patch_embed.projs.2.weight); pass --arch')
    return VARIANT_BY_STEM_WIDTH[w.shape[0]]


def infer_mixer(sd: Dict[str, torch.Tensor]) -> str:
    if any(k.endswith('window_relative_position_bias_table') for k in sd):
        return 'lrpe'
    if any(k.endswith('token_proj_n_weight') for k in sd):
        return 'sgu'
    return 'gqpe'
