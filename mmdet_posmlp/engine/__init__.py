"""Library code behind tools/train.py and tools/test.py.

- :mod:`.data_check`: stop before anything is built when the dataset a config reads is missing.
- :mod:`.hooks`: crash-safe checkpointing, a stop on non-finite losses, and the deployment
  step (``fuse()``) for testing.
- :mod:`.amp`: the optimizer wrapper that ``--amp`` selects on CPUs (bfloat16 autocast), or a
  clear stop where the CPU has no native bfloat16.
- :mod:`.runner`: read a config, apply command-line options, return an mmengine Runner.

Nothing is imported here but the names of :mod:`mmdet_posmlp.safe_load` (safe loading of
mmengine-written checkpoints, which the tools catch errors of); ``import mmdet_posmlp``
registers :mod:`.hooks` and :mod:`.amp`; import :mod:`.runner` and :mod:`.data_check` where
they are used.
"""
from ..safe_load import (MMENGINE_CHECKPOINT_GLOBALS, UnsafeCheckpointError,
                        allow_mmengine_checkpoints, check_checkpoint_loadable,
                        mmengine_checkpoint_loading, unsafe_globals_in_checkpoint)

__all__ = [
    'MMENGINE_CHECKPOINT_GLOBALS', 'UnsafeCheckpointError', 'allow_mmengine_checkpoints',
    'check_checkpoint_loadable', 'mmengine_checkpoint_loading', 'unsafe_globals_in_checkpoint',
]
