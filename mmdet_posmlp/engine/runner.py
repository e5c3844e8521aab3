"""Config and Runner for tools/train.py, tools/test.py: mmdet 3.3's tools option for option, plus:

- the plugin is registered (``import mmdet_posmlp``) even when a config has no custom_imports;
- a missing dataset stops the tool before the model is built (:mod:`.data_check`);
- mmengine's checkpoints load under torch >= 2.6's safe unpickler (:mod:`.safe_load`);
- distributed runs work on CPU-only machines (:func:`setup_cpu_distributed`).
"""
import argparse
import datetime
import os
import os.path as osp
import subprocess
from typing import Optional, Sequence

from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from ..datasets.coco_check import AnnotationFormatError
from ..safe_load import UnsafeCheckpointError, allow_mmengine_checkpoints, check_checkpoint_loadable
from .amp import AmpUnavailableError, amp_optim_wrapper
from .data_check import DatasetNotFoundError, check_data

# What building a runner raises for a mistake of the user's: the tools print the message, which
# says what to do, instead of a traceback.
SETUP_ERRORS = (DatasetNotFoundError, AnnotationFormatError, UnsafeCheckpointError,
                AmpUnavailableError, FileNotFoundError)

__all__ = ['SETUP_ERRORS', 'LAUNCHERS', 'load_config', 'configure_training', 'configure_testing',
           'build_runner', 'build_train_runner', 'build_test_runner', 'set_local_rank',
           'setup_cpu_distributed']

# Job launchers accepted by --launcher (as in mmdet's tools).
LAUNCHERS: Sequence[str] = ('none', 'pytorch', 'slurm', 'mpi')


def load_config(config: str, cfg_options: Optional[dict] = None, launcher: str = 'none',
                work_dir: Optional[str] = None) -> Config:
    """Read ``config``, merge ``--cfg-options`` and set the launcher and work_dir (priority, as
    in mmdet: ``work_dir`` argument > ``work_dir`` in the file > ``./work_dirs/<config name>``)."""
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    return cfg


def configure_training(cfg: Config, amp: bool = False, auto_scale_lr: bool = False,
                       resume: Optional[str] = None) -> Config:
    """Apply ``--amp``, ``--auto-scale-lr`` and ``--resume`` (a path, or 'auto') to ``cfg``."""
    if amp:  # before anything is built or read: a machine without mixed precision stops here
        cfg.optim_wrapper = amp_optim_wrapper(cfg.optim_wrapper)
        if cfg.optim_wrapper.type != 'AmpOptimWrapper':
            print_log('--amp without a GPU: bfloat16 autocast on the CPU '
                      f'({cfg.optim_wrapper.type}, no loss scaling)', logger='current')
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


def configure_testing(cfg: Config, checkpoint: str, show: bool = False,
                      show_dir: Optional[str] = None, wait_time: float = 2.0) -> Config:
    """Load ``checkpoint`` for testing and, as mmdet does, turn on drawing for ``--show`` /
    ``--show-dir`` in ``default_hooks.visualization``: ``draw=True``, and
    ``test_out_dir=show_dir``, which the hook puts under ``<work_dir>/<timestamp>/`` if relative."""
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


def _dist_env_from_launcher(launcher: str, port: Optional[int] = None) -> None:
    """Fill torch's env:// variables (RANK, WORLD_SIZE, MASTER_ADDR, ...) from srun's SLURM_* or
    Open MPI's OMPI_COMM_WORLD_* (torchrun sets them itself), keeping those already set."""
    env = os.environ

    def need(name):
        if name not in env:
            raise RuntimeError(f"--launcher {launcher}: environment variable {name} is not set "
                               '(start the processes with the matching launcher: '
                               'tools/dist_train.sh, tools/slurm_train.sh or mpirun)')
        return env[name]

    if launcher == 'pytorch':
        for name in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
            need(name)
        env.setdefault('LOCAL_RANK', '0')
        return
    if launcher == 'slurm':
        env.setdefault('RANK', need('SLURM_PROCID'))
        env.setdefault('WORLD_SIZE', need('SLURM_NTASKS'))
        env.setdefault('LOCAL_RANK', env.get('SLURM_LOCALID', '0'))
        if 'MASTER_ADDR' not in env:  # the first host of the allocation
            nodes = need('SLURM_NODELIST')
            env['MASTER_ADDR'] = subprocess.getoutput(
                f'scontrol show hostname {nodes} | head -n1').strip()
    elif launcher == 'mpi':
        env.setdefault('RANK', need('OMPI_COMM_WORLD_RANK'))
        env.setdefault('WORLD_SIZE', need('OMPI_COMM_WORLD_SIZE'))
        env.setdefault('LOCAL_RANK', env.get('OMPI_COMM_WORLD_LOCAL_RANK', '0'))
        need('MASTER_ADDR')
    else:
        raise ValueError(f"unknown launcher '{launcher}', expected one of {LAUNCHERS}")
    if port is not None:
        env['MASTER_PORT'] = str(port)
    env.setdefault('MASTER_PORT', '29500')  # torch.distributed's default


def setup_cpu_distributed(cfg: Config) -> Optional[str]:
    """Make a distributed ``cfg`` run on CPU-only machines; returns a line for the log, or None
    when there is nothing to do (not distributed, or an accelerator mmengine knows is present).

    mmengine 0.10 assumes a GPU per process: its ``init_dist`` calls ``torch.cuda.set_device`` and
    defaults to nccl, and ``Runner.wrap_model`` gives DDP ``device_ids=[LOCAL_RANK]``, which DDP
    rejects for a CPU module. So where ``mmengine.device.get_device() == 'cpu'``, this

    - initialises the process group before the Runner is built (its ``setup_env`` then skips
      ``init_dist``): backend ``env_cfg.dist_cfg.backend`` unless that is nccl or unset, then
      gloo; ``dist_cfg.timeout`` (seconds) and ``port`` (slurm, mpi) are honoured;
    - gives DDP ``device_ids=None``: in mmengine's default ``model_wrapper_cfg``
      (MMDistributedDataParallel, ``broadcast_buffers=False``, the config's
      ``find_unused_parameters``), or added to a config's own DDP-type one."""
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none':
        return None
    from mmengine.device import get_device
    if get_device() != 'cpu':
        return None
    import torch.distributed as dist
    from mmengine.registry import MODEL_WRAPPERS
    from torch.nn.parallel import DistributedDataParallel

    env_cfg = cfg.get('env_cfg') or {}
    dist_cfg = dict(env_cfg.get('dist_cfg') or {})
    asked = dist_cfg.pop('backend', None)
    backend = 'gloo' if asked in (None, 'nccl') else asked
    if not dist.is_available():
        raise RuntimeError(f'--launcher {launcher}: this torch build has no torch.distributed')
    if dist.is_initialized():
        backend = dist.get_backend()
        how = f'backend {backend} (process group already initialised)'
    else:
        port = dist_cfg.pop('port', None)
        dist_cfg.pop('init_backend', None)
        timeout = dist_cfg.pop('timeout', None)
        if timeout is not None:
            dist_cfg['timeout'] = datetime.timedelta(seconds=timeout)
        _dist_env_from_launcher(launcher, port)
        dist.init_process_group(backend=backend, init_method='env://',
                                rank=int(os.environ['RANK']),
                                world_size=int(os.environ['WORLD_SIZE']), **dist_cfg)
        instead = ' instead of nccl (which needs GPUs)' if backend != asked else ''
        how = f'backend {backend}{instead}, process group initialised before the Runner'
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = backend

    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
        wrapped = 'MMDistributedDataParallel(device_ids=None) (mmengine would pass LOCAL_RANK)'
    else:
        kind = wrapper.get('type', 'MMDistributedDataParallel')
        cls = kind if isinstance(kind, type) else MODEL_WRAPPERS.get(kind)
        name = getattr(cls, '__name__', str(kind))
        if isinstance(cls, type) and issubclass(cls, DistributedDataParallel):
            wrapper.setdefault('device_ids', None)
            wrapped = f'{name}(device_ids={wrapper["device_ids"]}) from model_wrapper_cfg'
        else:
            wrapped = f'{name} from model_wrapper_cfg, unchanged'
    return (f'Distributed on CPU (no GPU found): launcher {launcher}, {how}; '
            f'rank {dist.get_rank()} of {dist.get_world_size()}; model wrapper {wrapped}')


def build_runner(cfg: Config) -> Runner:
    """The Runner for ``cfg`` (``runner_type`` from the registry if the config names one), set up
    for gloo first where a distributed ``cfg`` meets no GPU (:func:`setup_cpu_distributed`)."""
    allow_mmengine_checkpoints()
    try:  # fewer repeated torch.compile recompilations, as mmdet's tools do
        from mmdet.utils import setup_cache_size_limit_of_dynamo
        setup_cache_size_limit_of_dynamo()
    except ImportError:
        pass
    cpu_dist = setup_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    if cpu_dist is not None:
        print_log(cpu_dist, logger=getattr(runner, 'logger', None) or 'current')
    return runner


def build_train_runner(config: str, work_dir: Optional[str] = None, amp: bool = False,
                       auto_scale_lr: bool = False, resume: Optional[str] = None,
                       cfg_options: Optional[dict] = None, launcher: str = 'none',
                       check_dataset: bool = True) -> Runner:
    """Everything tools/train.py does before ``runner.train()``.

    Raises DatasetNotFoundError before building anything when the training or validation data
    is missing, and FileNotFoundError / UnsafeCheckpointError for a bad ``--resume`` path."""
    cfg = load_config(config, cfg_options, launcher, work_dir)
    configure_training(cfg, amp, auto_scale_lr, resume)
    if check_dataset:
        check_data(cfg, ('train', 'val'), tool='tools/train.py')
    if resume not in (None, 'auto'):
        check_checkpoint_loadable(resume)
    return build_runner(cfg)


def build_test_runner(config: str, checkpoint: str, work_dir: Optional[str] = None,
                      out: Optional[str] = None, show: bool = False,
                      show_dir: Optional[str] = None, wait_time: float = 2.0,
                      cfg_options: Optional[dict] = None, launcher: str = 'none',
                      check_dataset: bool = True, fuse: bool = True) -> Runner:
    """Everything tools/test.py does before ``runner.test()``.

    ``fuse``: run the backbone's deployment step once the checkpoint is loaded (FuseBackboneHook).
    ``out`` (a .pkl path) adds DumpDetResults to the test evaluator, as mmdet's tool does. Raises
    DatasetNotFoundError / FileNotFoundError / UnsafeCheckpointError before the model is built."""
    if out is not None and not out.endswith(('.pkl', '.pickle')):
        raise ValueError(f"--out must be a .pkl or .pickle file, got '{out}'")
    cfg = load_config(config, cfg_options, launcher, work_dir)
    configure_testing(cfg, checkpoint, show, show_dir, wait_time)
    if fuse:
        cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [dict(type='FuseBackboneHook')]
    if check_dataset:
        check_data(cfg, ('test',), tool='tools/test.py')
    check_checkpoint_loadable(checkpoint)
    runner = build_runner(cfg)
    if out is not None:
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=out))
    return runner


def add_launch_arguments(parser: argparse.ArgumentParser, dataset_keys: str) -> None:
    """The options tools/train.py and tools/test.py share with mmdet's: --cfg-options (the
    dataset keys to override named in its help), --launcher and --local-rank."""
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override some settings in the used config, the key-value pair in xxx=yyy format '
        'will be merged into config file. If the value to be overwritten is a list, it should '
        'be like key="[a,b]" or key=a,b It also allows nested list/tuple values, e.g. '
        'key="[(a,b),(c,d)]" Note that the quotation marks are necessary and that no white '
        f'space is allowed. Dataset paths: override {dataset_keys}, not data_root (already '
        'substituted when the config is read).')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def set_local_rank(local_rank: int) -> None:
    """mmengine reads LOCAL_RANK; torch.distributed.launch passes --local-rank, torchrun sets it."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(local_rank)
