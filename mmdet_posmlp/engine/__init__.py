"""Library code behind tools/train.py and tools/test.py.

- :mod:`.data_check`: stop before anything is built when the dataset a config reads is missing.
- :mod:`.hooks`: crash-safe checkpointing, a stop on non-finite losses, and the deployment
  step (``fuse()``) for testing.
- :mod:`.amp`: the optimizer wrapper that ``--amp`` selects on CPUs (bfloat16 autocast), or a
  clear stop where the CPU has no native bfloat16.
- :mod:`.runner`: read a config, apply command-line options, return an mmengine Runner.

Nothing is imported here: ``import mmdet_posmlp`` registers :mod:`.hooks` and :mod:`.amp`;
import :mod:`.runner` and :mod:`.data_check` where they are used.
"""
