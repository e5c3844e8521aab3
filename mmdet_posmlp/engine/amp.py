"""`--amp` where there is no GPU.

mmengine's AmpOptimWrapper (what `--amp` selects) asserts a CUDA, NPU, MLU or MUSA device, late
(after the data sets load) and as a raw AssertionError. On CPUs with native bfloat16 (AVX512-BF16 or
AMX: Intel since Cooper Lake, AMD since Zen 4) it pays: on this project's AMX Xeon, a PosMLP-T
backbone training step at 800x1344 ran about 1.6x faster under bfloat16 autocast than in float32,
with no loss scaling (bfloat16 has float32's exponent range). Elsewhere bfloat16 is emulated and
slower than float32, so `--amp` stops with an explanation before anything is built.
"""
from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper

from mmdet.registry import OPTIM_WRAPPERS


class AmpUnavailableError(RuntimeError):
    """--amp asked for on a machine that cannot run mixed precision usefully."""


def cpu_has_native_bfloat16() -> bool:
    cpu = getattr(torch, 'cpu', None)
    checks = ('_is_avx512_bf16_supported', '_is_amx_tile_supported')
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def has_accelerator() -> bool:
    from mmengine.device import (is_cuda_available, is_mlu_available, is_musa_available,
                                 is_npu_available)
    return is_cuda_available() or is_npu_available() or is_mlu_available() or is_musa_available()


def amp_optim_wrapper(optim_wrapper: dict) -> dict:
    """The optim_wrapper config for `--amp` here: AmpOptimWrapper with dynamic loss scaling on a
    GPU, BFloat16AutocastOptimWrapper on a CPU with native bfloat16, else AmpUnavailableError."""
    if has_accelerator():
        return dict(optim_wrapper, type='AmpOptimWrapper', loss_scale='dynamic')
    if not cpu_has_native_bfloat16():
        raise AmpUnavailableError(
            '--amp: no GPU (CUDA, NPU, MLU or MUSA) was found, and this CPU has no native '
            'bfloat16 arithmetic (AVX512-BF16 or AMX), where mixed precision would be slower than '
            'float32. Run without --amp, or on a GPU machine.')
    return dict(optim_wrapper, type='BFloat16AutocastOptimWrapper')


@OPTIM_WRAPPERS.register_module()
class BFloat16AutocastOptimWrapper(OptimWrapper):
    """OptimWrapper whose forward runs under CPU autocast to bfloat16 (no loss scaling)."""

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model), torch.autocast('cpu', dtype=torch.bfloat16):
            yield
