"""Config handling and Runner construction for tools/train.py and tools/test.py.

The behaviour follows MMDetection 3.3's own tools/train.py and tools/test.py option for option,
plus three things they lack:

- the plugin is registered (``import mmdet_posmlp``) even when a config has no custom_imports;
- a missing dataset stops the tool before the model is built (:mod:`.data_check`);
- checkpoints written by mmengine's CheckpointHook load under torch >= 2.6's safe unpickler
  (:mod:`.safe_load`), for ``--resume`` and for testing.
"""
import os
import os.path as osp
from typing import Optional, Sequence

from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from .data_check import check_data
from .safe_load import allow_mmengine_checkpoints, check_checkpoint_loadable

__all__ = ['LAUNCHERS', 'load_config', 'configure_training', 'configure_testing',
           'build_runner', 'build_train_runner', 'build_test_runner', 'set_local_rank']

# Job launchers accepted by --launcher (as in mmdet's tools).
LAUNCHERS: Sequence[str] = ('none', 'pytorch', 'slurm', 'mpi')


def load_config(config: str,
                cfg_options: Optional[dict] = None,
                launcher: str = 'none',
                work_dir: Optional[str] = None) -> Config:
    """Read ``config``, merge ``--cfg-options`` and set the launcher and work_dir.

    work_dir priority, as in mmdet: ``work_dir`` argument > ``work_dir`` in the file >
    ``./work_dirs/<config name>``.
    """
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    return cfg


def configure_training(cfg: Config,
                       amp: bool = False,
                       auto_scale_lr: bool = False,
                       resume: Optional[str] = None) -> Config:
    """Apply ``--amp``, ``--auto-scale-lr`` and ``--resume`` (a path, or 'auto') to ``cfg``."""
    if amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if auto_scale_lr:
        scale = cfg.get('auto_scale_lr')
        if not scale or 'enable' not in scale or 'base_batch_size' not in scale:
            raise RuntimeError('Can not find "auto_scale_lr" or "auto_scale_lr.enable" or '
                               '"auto_scale_lr.base_batch_size" in your configuration file.')
        cfg.auto_scale_lr.enable = True
    # resume priority: an explicit checkpoint > the latest one in work_dir ('auto')
    if resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif resume is not None:
        cfg.resume = True
        cfg.load_from = resume
    return cfg


def configure_testing(cfg: Config,
                      checkpoint: str,
                      show: bool = False,
                      show_dir: Optional[str] = None,
                      wait_time: float = 2.0) -> Config:
    """Load ``checkpoint`` for testing and turn on drawing for ``--show`` / ``--show-dir``.

    As in mmdet, drawing goes through the config's ``default_hooks.visualization``
    (DetVisualizationHook): ``draw=True``, and ``test_out_dir=show_dir``, which the hook puts
    under ``<work_dir>/<timestamp>/`` when it is a relative path.
    """
    cfg.load_from = checkpoint
    if show or show_dir:
        hooks = cfg.get('default_hooks') or {}
        if 'visualization' not in hooks:
            raise RuntimeError(
                'VisualizationHook must be included in default_hooks. refer to usage '
                '"visualization=dict(type=\'VisualizationHook\')"')
        vis = cfg.default_hooks.visualization
        vis['draw'] = True
        if show:
            vis['show'] = True
            vis['wait_time'] = wait_time
        if show_dir:
            vis['test_out_dir'] = show_dir
    return cfg


def build_runner(cfg: Config) -> Runner:
    """The Runner for ``cfg`` (``runner_type`` from the registry if the config names one)."""
    allow_mmengine_checkpoints()
    try:  # fewer repeated torch.compile recompilations, as mmdet's tools do
        from mmdet.utils import setup_cache_size_limit_of_dynamo
        setup_cache_size_limit_of_dynamo()
    except ImportError:
        pass
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)


def build_train_runner(config: str,
                       work_dir: Optional[str] = None,
                       amp: bool = False,
                       auto_scale_lr: bool = False,
                       resume: Optional[str] = None,
                       cfg_options: Optional[dict] = None,
                       launcher: str = 'none',
                       check_dataset: bool = True) -> Runner:
    """Everything tools/train.py does before ``runner.train()``.

    Raises DatasetNotFoundError before building anything when the training or validation data
    is missing, and FileNotFoundError / UnsafeCheckpointError for a bad ``--resume`` path.
    """
    cfg = load_config(config, cfg_options, launcher, work_dir)
    configure_training(cfg, amp, auto_scale_lr, resume)
    if check_dataset:
        check_data(cfg, ('train', 'val'), tool='tools/train.py')
    if resume not in (None, 'auto'):
        check_checkpoint_loadable(resume)
    return build_runner(cfg)


def build_test_runner(config: str,
                      checkpoint: str,
                      work_dir: Optional[str] = None,
                      out: Optional[str] = None,
                      show: bool = False,
                      show_dir: Optional[str] = None,
                      wait_time: float = 2.0,
                      cfg_options: Optional[dict] = None,
                      launcher: str = 'none',
                      check_dataset: bool = True) -> Runner:
    """Everything tools/test.py does before ``runner.test()``.

    ``out`` (a .pkl path) adds mmdet's DumpDetResults to the test evaluator, as mmdet's tool
    does. Raises DatasetNotFoundError / FileNotFoundError / UnsafeCheckpointError before the
    model is built.
    """
    if out is not None and not out.endswith(('.pkl', '.pickle')):
        raise ValueError(f"--out must be a .pkl or .pickle file, got '{out}'")
    cfg = load_config(config, cfg_options, launcher, work_dir)
    configure_testing(cfg, checkpoint, show, show_dir, wait_time)
    if check_dataset:
        check_data(cfg, ('test',), tool='tools/test.py')
    check_checkpoint_loadable(checkpoint)
    runner = build_runner(cfg)
    if out is not None:
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=out))
    return runner


def set_local_rank(local_rank: int) -> None:
    """torch.distributed.launch passes --local-rank; mmengine reads LOCAL_RANK (torchrun sets
    it itself)."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(local_rank)
