"""Loading checkpoints with torch's safe (``weights_only``) unpickler: the package's one allowlist.

torch >= 2.6 unpickles with ``weights_only=True`` by default: only tensors, primitive types,
containers and allowlisted globals may appear in a checkpoint. mmengine 0.10.7 calls
``torch.load`` without ``weights_only``, so the checkpoints its own ``CheckpointHook`` writes are
refused (``UnpicklingError``): ``meta['message_hub']`` holds the training log as ``HistoryBuffer``
objects, which store numpy arrays. That breaks ``tools/train.py --resume`` and ``tools/test.py``.

We keep safe loading on, allowing exactly the globals such checkpoints contain, plus the one type of
the reference PosMLP ImageNet checkpoints; the backbones' Pretrained loading uses the same list
(:func:`load_checkpoint_file`). Anything else in a pickle (an arbitrary class, a function call
smuggled through ``__reduce__``) stays refused. ``weights_only=False`` is never used here.
"""
import contextlib
import importlib
import os
import os.path as osp
import pickle
import warnings
import zipfile
from typing import Iterator, List, Tuple

import torch

# The globals that a checkpoint written by mmengine 0.10's CheckpointHook references, as torch's
# unpickler names them, and why each one is there. Found by training a detector for one iteration
# with tools/train.py and running torch.serialization.get_unsafe_globals_in_checkpoint on the
# epoch_1.pth it wrote (numpy 2.4, torch 2.14); tests/test_tools.py checks it again.
MMENGINE_CHECKPOINT_GLOBALS: Tuple[Tuple[str, str], ...] = (
    # meta/message_hub: log_scalars holds one HistoryBuffer per logged scalar (train/loss, ...)
    ('mmengine.logging.history_buffer.HistoryBuffer',
     'message_hub.log_scalars: the training log, one buffer per scalar'),
    # HistoryBuffer._log_history (float64) and _count_history (int64) are numpy arrays: an array
    # pickles as _reconstruct(ndarray, shape, dtype) followed by its state, a dtype as
    # numpy.dtype('f8', False, True) followed by its state.
    ('numpy._core.multiarray._reconstruct', 'numpy arrays in the HistoryBuffers'),
    ('numpy.ndarray', 'numpy arrays in the HistoryBuffers'),
    ('numpy.dtype', 'dtypes of those arrays and scalars'),
    # numpy.dtype('f8', ...) returns an instance of numpy.dtypes.Float64DType, whose state is then
    # set by BUILD: torch only runs BUILD on instances of allowlisted types. These two classes are
    # not globals of the pickle (get_unsafe_globals_in_checkpoint misses them); loading names them.
    ('numpy.dtypes.Float64DType', 'dtype of HistoryBuffer._log_history and of eta'),
    ('numpy.dtypes.Int64DType', 'dtype of HistoryBuffer._count_history'),
    # message_hub.runtime_info['eta'] is a numpy.float64 (pickled as scalar(dtype, raw bytes)).
    ('numpy._core.multiarray.scalar', 'numpy scalars in message_hub.runtime_info (eta)'),
    # HistoryBuffer.__getstate__ saves its statistics methods {'min': HistoryBuffer.min, ...};
    # pickle protocol 2 writes each as getattr(HistoryBuffer, 'min'). We do NOT allow the real
    # getattr: the name is bound to _history_buffer_statistic, which returns only those four
    # methods of HistoryBuffer and refuses every other lookup.
    ('builtins.getattr', 'HistoryBuffer statistics methods, getattr(HistoryBuffer, "min"|...)'),
)

# The globals of the reference implementation's ImageNet checkpoints (read by the configs'
# init_cfg and tools/model_converters): besides tensors and containers only the training command
# line. argparse.Namespace is a plain attribute container: unpickling one runs no code beyond
# setting its attributes, which are themselves unpickled safely.
REFERENCE_CHECKPOINT_GLOBALS: Tuple[Tuple[str, str], ...] = (
    ('argparse.Namespace', "'args' of the reference PosMLP training checkpoints (command line)"),
)
ALLOWED_CHECKPOINT_GLOBALS = MMENGINE_CHECKPOINT_GLOBALS + REFERENCE_CHECKPOINT_GLOBALS

# The same functions under the module names that numpy 1.x writes into pickles.
_NUMPY1_ALIASES = {
    'numpy._core.multiarray._reconstruct': 'numpy.core.multiarray._reconstruct',
    'numpy._core.multiarray.scalar': 'numpy.core.multiarray.scalar',
}
# The only attributes that getattr may fetch while unpickling, and only from HistoryBuffer.
HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')

_registered = False


class CheckpointError(RuntimeError):
    """A checkpoint that cannot become a model's weights (the message names file, keys, shapes)."""


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint that references globals outside the allowlist; the message names them."""


def _history_buffer_statistic(obj, name):
    """What 'builtins.getattr' means while unpickling: HistoryBuffer's statistics methods only."""
    from mmengine.logging import HistoryBuffer
    if obj is HistoryBuffer and name in HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'mmdet_posmlp safe loading: refused getattr({obj!r}, {name!r}); only '
        f'getattr(HistoryBuffer, one of {HISTORY_BUFFER_STATISTICS}) is allowed')


def _resolve(name: str):
    """Import 'package.module.attr' and return the object, or None where this stack lacks it."""
    if name == 'builtins.getattr':
        return _history_buffer_statistic
    module, _, attr = name.rpartition('.')
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', DeprecationWarning)  # numpy.core under numpy 2
            return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return None


def safe_globals_list() -> List:
    """The allowlist as ``(object, 'module.qualname')`` entries for torch's ``add_safe_globals``
    / ``safe_globals``, so that the name matched is the one written in the pickle (numpy's
    ``__module__`` attributes differ from the names its pickles use, and 'builtins.getattr' is
    bound to a restricted function). Entries that the installed versions lack are skipped."""
    entries = []
    for name, _why in ALLOWED_CHECKPOINT_GLOBALS:
        alias = _NUMPY1_ALIASES.get(name)
        obj = _resolve(name)
        if obj is None and alias:
            obj = _resolve(alias)
        if obj is not None:
            entries += [(obj, n) for n in (name, alias) if n]
    return entries


def allowed_global_names() -> List[str]:
    """The 'module.qualname' strings this module allows (for messages and tests)."""
    return [name for _, name in safe_globals_list()]


def _torch_has_named_allowlist() -> bool:
    """torch >= 2.6: weights_only=True by default, and allowlist entries may be (obj, name)."""
    try:
        major, minor = (int(v) for v in torch.__version__.split('+')[0].split('.')[:2])
    except ValueError:
        return hasattr(torch.serialization, 'get_unsafe_globals_in_checkpoint')
    return (major, minor) >= (2, 6)


def allow_mmengine_checkpoints() -> None:
    """Allowlist the globals of mmengine and reference checkpoints for every later ``torch.load``
    (idempotent; nothing on torch < 2.6, which does not unpickle safely by default)."""
    global _registered
    if _registered or not _torch_has_named_allowlist():
        return
    torch.serialization.add_safe_globals(safe_globals_list())
    _registered = True


@contextlib.contextmanager
def mmengine_checkpoint_loading() -> Iterator[None]:
    """Allow the globals of the allowlist inside the block.

    Only the entries not allowed already are added (and removed on exit): torch's ``safe_globals``
    removes what it was given, so the whole list would undo :func:`allow_mmengine_checkpoints`.
    torch 2.5 matches objects by their own ``module.qualname`` only, so there only the entries
    named that (argparse.Namespace, HistoryBuffer) are allowed; torch < 2.5 has no scoped one."""
    if _torch_has_named_allowlist():
        entries = safe_globals_list()
    elif hasattr(torch.serialization, 'safe_globals'):
        entries = [obj for obj, name in safe_globals_list()
                   if name == '{}.{}'.format(getattr(obj, '__module__', ''),
                                             getattr(obj, '__qualname__', ''))]
    else:
        yield
        return
    present = set(torch.serialization.get_safe_globals())
    with torch.serialization.safe_globals([e for e in entries if e not in present]):
        yield


def unsafe_globals_in_checkpoint(path: str) -> List[str]:
    """Globals in the checkpoint at ``path`` that the weights_only unpickler would refuse, the
    allowlist taken into account. Reads only the pickle, not the tensors. Returns [] on torch
    versions without the inspection API, and for legacy (non-zip) checkpoints."""
    inspect = getattr(torch.serialization, 'get_unsafe_globals_in_checkpoint', None)
    if inspect is None:
        return []
    try:
        found = inspect(path)
    except (RuntimeError, ValueError):  # not a zip checkpoint
        return []
    allowed = set(allowed_global_names())
    if hasattr(torch.serialization, 'get_safe_globals'):
        for entry in torch.serialization.get_safe_globals():
            if isinstance(entry, tuple):
                allowed.add(entry[1])
            else:
                allowed.add(f'{entry.__module__}.{entry.__qualname__}')
    return [name for name in found if name not in allowed]


def check_checkpoint_loadable(path: str) -> None:
    """Fail before a model is built: FileNotFoundError (missing local file), UnsafeCheckpointError
    (naming them) for globals outside the allowlist; remote paths (``scheme://``) go to mmengine."""
    if '://' in path:
        return
    if not osp.isfile(osp.expanduser(path)):
        raise FileNotFoundError(f"checkpoint not found: '{path}'")
    unsafe = unsafe_globals_in_checkpoint(osp.expanduser(path))
    if unsafe:
        raise UnsafeCheckpointError(
            f"'{path}' references globals that torch's safe unpickler refuses: {unsafe}. "
            f'mmdet_posmlp allows only those of mmengine and reference PosMLP checkpoints '
            f'({allowed_global_names()}). If you trust this file, convert it to a plain state '
            "dict first (torch.save({'state_dict': ckpt['state_dict']}, new_path)).")


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
            f'and the types of mmdet_posmlp.safe_load are allowed: '
            f'{allowed_global_names()}): {e}') from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(
            f"{owner}: cannot read checkpoint '{path}' ({size} bytes): the file is truncated or "
            f'not a torch checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})') from e
