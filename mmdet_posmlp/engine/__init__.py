"""Library code behind tools/train.py and tools/test.py: :mod:`.data_check` (stop before anything is
built if the dataset is missing), :mod:`.hooks` (crash-safe checkpoints, a stop on non-finite
losses, ``fuse()`` for testing), :mod:`.amp` (``--amp`` on CPUs), :mod:`.runner` (config to Runner).

Nothing is imported here: ``import mmdet_posmlp`` registers :mod:`.hooks` and :mod:`.amp`;
import :mod:`.runner` and :mod:`.data_check` where they are used.
"""
