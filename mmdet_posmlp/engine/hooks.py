"""Hooks registered in mmdet's HOOKS: the 1x configs use the first two, tools/test.py the third.

- :class:`CrashSafeCheckpointHook`: a kill while saving leaves the previous checkpoint usable;
- :class:`NonFiniteLossHook`: stops at a non-finite loss (AMP: ``max_amp_skips`` skips in a row);
- :class:`FuseBackboneHook`: the backbone's deployment step (``fuse()``) before testing.
"""
import math
import os
from collections import deque
import os.path as osp
from typing import Optional, Union

import torch
from mmengine.dist import is_main_process
from mmengine.fileio import register_backend
from mmengine.fileio.backends import LocalBackend
from mmengine.hooks import CheckpointHook, Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import AmpOptimWrapper
from mmdet.registry import HOOKS

ATOMIC_BACKEND = 'posmlp_atomic_local'


def atomic_write(data: Union[bytes, str], path: str) -> None:
    """Write ``data`` to ``path`` so that a reader (or a crash) sees the old file or the whole
    new one, never a prefix: write ``path.part``, flush it to disk, rename it over ``path``."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    part = f'{path}.part'
    with open(part, 'wb') as f:
        f.write(data.encode('utf-8') if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, path)


@register_backend(ATOMIC_BACKEND)
class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose ``put`` (what ``save_checkpoint`` writes with) is
    :func:`atomic_write`."""

    def put(self, obj: bytes, filepath) -> None:
        atomic_write(obj, str(filepath))


@HOOKS.register_module()
class CrashSafeCheckpointHook(CheckpointHook):
    """CheckpointHook whose saving survives a kill at any moment (same arguments).

    mmengine 0.10 deletes the oldest checkpoint *before* writing the new one and writes the file in
    place, so with ``max_keep_ckpts=1`` a kill mid-write (SIGKILL, a full disk, a pre-empted node)
    leaves no usable checkpoint. Here the new file and ``last_checkpoint`` are written with
    :func:`atomic_write` (unless ``backend_args`` names another backend: remote storage keeps its
    own semantics), and only then are old checkpoints removed."""

    def __init__(self, *args, backend_args: Optional[dict] = None, **kwargs):
        super().__init__(*args, backend_args=backend_args or dict(backend=ATOMIC_BACKEND),
                         **kwargs)

    def _save_checkpoint_with_step(self, runner, step, meta):
        # The new id is recorded before saving, so that the checkpoint's own message hub lists it
        # (resuming from it then knows which files are its predecessors).
        if self.max_keep_ckpts > 0 and (not self.keep_ckpt_ids or self.keep_ckpt_ids[-1] != step):
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir, filename, self.file_client_args, save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler, meta=meta, by_epoch=self.by_epoch,
            backend_args=self.backend_args, **self.args)
        if not is_main_process():  # sharded saving: the main process does the bookkeeping
            return
        atomic_write(self.last_ckpt, osp.join(runner.work_dir, 'last_checkpoint'))
        self._drop_old_checkpoints(runner)

    def _drop_old_checkpoints(self, runner) -> None:
        """Delete the oldest checkpoints beyond max_keep_ckpts (the new one is safely on disk)."""
        if self.max_keep_ckpts <= 0:
            return
        while len(self.keep_ckpt_ids) > self.max_keep_ckpts:
            old = self.file_backend.join_path(
                self.out_dir, self.filename_tmpl.format(self.keep_ckpt_ids.popleft()))
            if self.file_backend.isfile(old):
                self.file_backend.remove(old)
            elif self.file_backend.isdir(old):  # deepspeed writes directories
                self.file_backend.rmtree(old)
        runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

    def before_train(self, runner) -> None:
        super().before_train(runner)
        # mmengine keeps at most max_keep_ckpts ids in a bounded deque; this hook appends the
        # new id before dropping the oldest, so it needs one slot more.
        if self.max_keep_ckpts > 0:
            self.keep_ckpt_ids = deque(self.keep_ckpt_ids, maxlen=self.max_keep_ckpts + 1)


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Detect a NaN or infinite loss after every training iteration.

    Without AMP the optimizer has already applied the step, so the weights in memory are spoiled:
    the run stops (FloatingPointError) with the iteration, the loss terms and the last checkpoint to
    resume from. Under AMP the dynamic loss scaler has skipped the step (non-finite gradients) and
    lowered the scale, mmengine's normal recovery: each skip is logged as a warning, and the run
    stops only after ``max_amp_skips`` skips in a row (the loss itself is broken)."""

    priority = 'VERY_HIGH'  # before the logger and the checkpoint hook see this iteration

    def __init__(self, max_amp_skips: int = 20):
        if max_amp_skips < 1:
            raise ValueError(f'NonFiniteLossHook: max_amp_skips must be >= 1, got {max_amp_skips}')
        self.max_amp_skips = max_amp_skips
        self._skips_in_a_row = 0

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        if not outputs:
            return
        values = {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
                  for k, v in outputs.items() if k.startswith('loss')}
        if all(math.isfinite(v) for v in values.values()):
            self._skips_in_a_row = 0
            return
        terms = ', '.join(f'{k}={v:g}' for k, v in values.items())
        where = (f'epoch {runner.epoch + 1}, iteration {runner.iter + 1} '
                 f'(batch {batch_idx + 1} of the epoch)')
        last = runner.message_hub.get_info('last_ckpt') or 'none saved yet'
        wrapper = runner.optim_wrapper
        if isinstance(wrapper, AmpOptimWrapper):
            self._skips_in_a_row += 1
            runner.logger.warning(
                f'non-finite loss at {where}: {terms}; the AMP loss scaler skipped this step '
                f'(scale now {wrapper.loss_scaler.get_scale():g}; '
                f'{self._skips_in_a_row} skipped in a row)')
            if self._skips_in_a_row < self.max_amp_skips:
                return
            reason = f'{self._skips_in_a_row} AMP steps in a row had a non-finite loss'
        else:
            reason = 'the optimizer step has been applied with non-finite gradients'
        raise FloatingPointError(
            f'Non-finite loss at {where}: {terms}. Stopping: {reason}. Last checkpoint: {last} '
            '(resume with --resume after lowering the learning rate or checking the data).')


@HOOKS.register_module()
class FuseBackboneHook(Hook):
    """Run the backbone's deployment step (``fuse()``: stem BatchNorm folded into its
    convolutions, mixing matrices kept per map size; models/posmlp.py) before testing.

    The fused backbone gives the plain one's outputs (tests/test_posmlp_math.py) without
    recomputing, every forward, what only the weights and the map size fix; it is inference-only (a
    fused stage refuses gradients), so the hook acts in ``before_test`` only (tools/test.py adds it
    unless ``--no-fuse``). Backbones without ``fuse()`` are left alone."""

    priority = 'LOWEST'

    def before_test(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        fuse = getattr(getattr(model, 'backbone', None), 'fuse', None)
        if fuse is None:
            runner.logger.info('FuseBackboneHook: the backbone has no fuse(); testing as built')
            return
        fuse()
        runner.logger.info(f'FuseBackboneHook: {type(model.backbone).__name__}.fuse() done '
                           '(deployment step: folded stem BatchNorm, mixing matrices kept '
                           'per map size)')
