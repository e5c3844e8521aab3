"""Data-parallel training and testing through torch.distributed on the CPU, and reproducibility.

- ``tools/dist_train.sh CONFIG 2`` (torchrun, 2 processes, gloo) trains the RetinaNet demo with a
  frozen stem + stage 1 and activation checkpointing (the combination DDP is touchy about:
  parameters without gradients, recomputed forwards) and writes a checkpoint;
- ``tools/dist_test.sh`` on that checkpoint (2 processes) gives the same COCO bbox metrics and
  the same predictions, image for image, as single-process ``tools/test.py``;
- two single-process runs with ``randomness.seed=0`` log identical losses;
- :func:`setup_cpu_distributed` in-process: what it does to a config, and that it leaves
  accelerator machines to mmengine.

Everything runs on the CPU (``CUDA_VISIBLE_DEVICES=''`` for the subprocesses, so a GPU machine
tests the same path) with 8 + 4 generated images of 96x128 px: about 3 minutes on 2 cores.
"""
import glob
import json
import os
import os.path as osp
import pickle
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings('ignore:pkg_resources is deprecated:UserWarning')

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs', 'demo', 'retinanet_posmlp_t_demo.py')
TOOLS = osp.join(REPO, 'tools')
# 4 val images: an even split over 2 processes, so the distributed sampler pads nothing
DATA = dict(num_train=8, num_val=4, image_size=(96, 128), object_size=(12, 60))


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _run(cmd, cwd, timeout=300, **env):
    """Run a tool in its own process group (torchrun's workers included), as a user would;
    kill the whole group if it runs over ``timeout``. Returns (returncode, stdout + stderr)."""
    # PYTHON: the shell launchers run this interpreter (not whatever python3 is on PATH)
    full_env = dict(os.environ, PYTHONWARNINGS='ignore', CUDA_VISIBLE_DEVICES='',
                    PYTHON=sys.executable, PYTHONPATH=os.pathsep.join(
                        p for p in (REPO, os.environ.get('PYTHONPATH')) if p), **env)
    proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f'{cmd[:3]} ran over {timeout}s:\n{out[-4000:]}')
    return proc.returncode, out


def _data_options(root):
    root = root.rstrip('/') + '/'
    ann = root + 'annotations/instances_val.json'
    return [f'train_dataloader.dataset.data_root={root}',
            f'val_dataloader.dataset.data_root={root}',
            f'test_dataloader.dataset.data_root={root}',
            f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}']


# an untrained detector scores below the usual 0.05: keep every box so the metric has input
TEST_OPTIONS = ['model.test_cfg.score_thr=0.0', 'test_dataloader.batch_size=2']


@pytest.fixture(scope='module')
def shapes_root(tmp_path_factory):
    from tools.demo.shapes import make_shapes_dataset
    root = str(tmp_path_factory.mktemp('dist_shapes'))
    make_shapes_dataset(root, verbose=False, **DATA)
    return root


@pytest.fixture(scope='module')
def dist_trained(shapes_root, tmp_path_factory):
    """2 processes x 2 iterations (8 images, 2 per process per step), no validation (the
    distributed evaluation is tested through tools/dist_test.sh)."""
    work_dir = str(tmp_path_factory.mktemp('dist_train'))
    cmd = ['bash', osp.join(TOOLS, 'dist_train.sh'), CONFIG, '2', '--work-dir', work_dir,
           '--cfg-options', *_data_options(shapes_root),
           'train_cfg.max_epochs=1', 'train_cfg.val_begin=2', 'train_dataloader.batch_size=2',
           'default_hooks.logger.interval=1', 'default_hooks.checkpoint.interval=1',
           'randomness.seed=0', 'model.backbone.frozen_stages=1', 'model.backbone.with_cp=True']
    rc, log = _run(cmd, cwd=work_dir, PORT=str(_free_port()))
    return dict(rc=rc, log=log, work_dir=work_dir, checkpoint=osp.join(work_dir, 'epoch_1.pth'))


def test_dist_train_on_cpu(dist_trained):
    log = dist_trained['log']
    assert dist_trained['rc'] == 0, log[-6000:]
    # what the library chose, said in the log
    assert ('Distributed on CPU (no GPU found): launcher pytorch, backend gloo instead of nccl'
            in log), log[-6000:]
    assert 'rank 0 of 2' in log and 'MMDistributedDataParallel(device_ids=None)' in log
    # DDP's complaints about parameters that got no gradient (frozen stages, checkpointing)
    for text in ('Expected to have finished reduction', 'were not used in producing loss',
                 'marked ready', 'unused parameter', 'Traceback'):
        assert text not in log, (text, log[-6000:])
    # each process ran 2 iterations: 8 images / (2 processes x 2 images per batch)
    assert 'Epoch(train) [1][2/2]' in log and 'Epoch(train) [1][3/' not in log
    assert osp.isfile(dist_trained['checkpoint'])
    scalars = glob.glob(osp.join(dist_trained['work_dir'], '*', 'vis_data', 'scalars.json'))
    assert len(scalars) == 1  # rank 0 writes the logs
    losses = [json.loads(line)['loss'] for line in open(scalars[0]) if '"loss"' in line]
    assert len(losses) == 2 and all(np.isfinite(losses))


def _test_run(tool_args, shapes_root, work_dir, cwd, **env):
    out = osp.join(work_dir, 'predictions.pkl')
    rc, log = _run(tool_args + ['--work-dir', work_dir, '--out', out, '--cfg-options',
                                *_data_options(shapes_root), *TEST_OPTIONS], cwd=cwd, **env)
    assert rc == 0, log[-6000:]
    (json_path,) = glob.glob(osp.join(work_dir, '*', '*.json'))  # the metrics LoggerHook writes
    with open(json_path) as f:
        metrics = json.load(f)
    with open(out, 'rb') as f:
        predictions = pickle.load(f)
    return log, metrics, predictions


def test_dist_test_matches_single_process(dist_trained, shapes_root, tmp_path):
    if dist_trained['rc'] != 0:
        pytest.skip('distributed training failed (test_dist_train_on_cpu says why)')
    checkpoint = dist_trained['checkpoint']
    dist_log, dist_metrics, dist_preds = _test_run(
        ['bash', osp.join(TOOLS, 'dist_test.sh'), CONFIG, checkpoint, '2'], shapes_root,
        str(tmp_path / 'dist'), str(tmp_path), PORT=str(_free_port()))
    assert 'backend gloo' in dist_log and 'rank 0 of 2' in dist_log
    single_log, single_metrics, single_preds = _test_run(
        [sys.executable, osp.join(TOOLS, 'test.py'), CONFIG, checkpoint], shapes_root,
        str(tmp_path / 'single'), str(tmp_path))
    assert 'Distributed on CPU' not in single_log

    # the COCO bbox metrics, as logged (mmdet rounds them to 3 decimals)
    keys = [f'coco/bbox_{k}' for k in ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')]
    assert all(k in single_metrics for k in keys), single_metrics
    assert {k: dist_metrics[k] for k in keys} == {k: single_metrics[k] for k in keys}

    # and what they are computed from: every val image once, in order, the same boxes
    assert [p['img_id'] for p in dist_preds] == [p['img_id'] for p in single_preds]
    assert len(single_preds) == DATA['num_val']
    assert len({p['img_id'] for p in dist_preds}) == DATA['num_val']
    for d, s in zip(dist_preds, single_preds):
        d, s = d['pred_instances'], s['pred_instances']
        assert len(s['scores']) > 0  # score_thr=0: an untrained model still yields boxes
        assert len(d['scores']) == len(s['scores'])
        # one thread per process vs two threads: equal up to float rounding (measured: 3e-8 in
        # the scores, 4e-5 px in the boxes), which may swap detections of near-equal score
        _assert_same_detections(d, s, score_atol=1e-5, box_atol=1e-3)


def _assert_same_detections(d, s, score_atol, box_atol):
    """Every detection of one set has its own twin in the other (label equal, score and box
    within the tolerances); the order may differ between twins of near-equal score, and at
    the max_per_img cut a near-tie may keep a different detection of the lowest score."""
    d_scores, d_boxes, d_labels = (d[k].numpy() for k in ('scores', 'bboxes', 'labels'))
    s_scores, s_boxes, s_labels = (s[k].numpy() for k in ('scores', 'bboxes', 'labels'))
    unused = set(range(len(s_scores)))
    unmatched = []
    for i in range(len(d_scores)):
        twin = next((j for j in sorted(unused)
                     if d_labels[i] == s_labels[j]
                     and abs(d_scores[i] - s_scores[j]) <= score_atol
                     and np.abs(d_boxes[i] - s_boxes[j]).max() <= box_atol), None)
        if twin is None:
            unmatched.append(i)
        else:
            unused.remove(twin)
    lowest = min(d_scores.min(), s_scores.min())
    at_the_cut = [i for i in unmatched if d_scores[i] <= lowest + score_atol]
    assert unmatched == at_the_cut, (
        f'detections without a twin: {[(d_labels[i], d_scores[i], d_boxes[i]) for i in unmatched]}')


# ----------------------------------------------------------------------------- same seed

def _train_losses(shapes_root, work_dir):
    """tools/train.py, 2 iterations (the first 4 training images, 2 per batch), no validation
    or checkpoint; the per-iteration losses from vis_data/scalars.json."""
    cmd = [sys.executable, osp.join(TOOLS, 'train.py'), CONFIG, '--work-dir', work_dir,
           '--cfg-options', *_data_options(shapes_root),
           'train_dataloader.dataset.indices=4', 'train_dataloader.batch_size=2',
           'train_cfg.max_epochs=1', 'train_cfg.val_begin=2', 'default_hooks.logger.interval=1',
           'default_hooks.checkpoint.interval=2', 'default_hooks.checkpoint.save_last=False',
           'randomness.seed=0']
    os.makedirs(work_dir)
    rc, log = _run(cmd, cwd=work_dir)
    assert rc == 0, log[-6000:]
    (scalars,) = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    rows = [json.loads(line) for line in open(scalars)]
    keys = ('loss', 'loss_cls', 'loss_bbox', 'grad_norm')
    return [(r['step'],) + tuple(r[k] for k in keys) for r in rows if 'loss' in r]


def test_same_seed_same_losses(shapes_root, tmp_path):
    first = _train_losses(shapes_root, str(tmp_path / 'a'))
    second = _train_losses(shapes_root, str(tmp_path / 'b'))
    assert [r[0] for r in first] == [1, 2]
    assert all(np.isfinite(r[1:]).all() for r in first)
    assert first == second  # bit for bit, not approximately


# ----------------------------------------------------------------------------- in-process

@pytest.fixture
def cpu_process_group(monkeypatch):
    """torch's env:// variables for a 1-process group; the group is destroyed afterwards."""
    import torch.distributed as dist
    for name in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.setenv(name, '')  # so that teardown restores what the test changes
        monkeypatch.delenv(name)
    monkeypatch.setattr('mmengine.device.get_device', lambda: 'cpu')
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def _cfg(**kwargs):
    from mmengine.config import Config
    return Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl')), **kwargs))


def test_setup_cpu_distributed_torchrun_env(cpu_process_group, monkeypatch):
    import torch.distributed as dist
    from mmdet_posmlp.engine.runner import setup_cpu_distributed
    assert setup_cpu_distributed(_cfg(launcher='none')) is None
    assert not dist.is_initialized()

    cfg = _cfg(launcher='pytorch', find_unused_parameters=True)
    with pytest.raises(RuntimeError, match='RANK is not set'):
        setup_cpu_distributed(cfg)
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '1')
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', str(_free_port()))
    line = setup_cpu_distributed(cfg)
    assert dist.is_initialized() and dist.get_backend() == 'gloo'
    assert 'backend gloo instead of nccl' in line and 'rank 0 of 1' in line
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg == dict(
        type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
        find_unused_parameters=True)

    # a group that exists already is used as it is; a config's own wrapper keeps its settings
    cfg = _cfg(launcher='pytorch', model_wrapper_cfg=dict(
        type='MMDistributedDataParallel', broadcast_buffers=True))
    assert 'already initialised' in setup_cpu_distributed(cfg)
    assert cfg.model_wrapper_cfg == dict(
        type='MMDistributedDataParallel', broadcast_buffers=True, device_ids=None)
    cfg = _cfg(launcher='pytorch', model_wrapper_cfg=dict(type='MMFullyShardedDataParallel'))
    assert 'unchanged' in setup_cpu_distributed(cfg)
    assert 'device_ids' not in cfg.model_wrapper_cfg


def test_setup_cpu_distributed_slurm_env(cpu_process_group, monkeypatch):
    import torch.distributed as dist
    from mmdet_posmlp.engine.runner import setup_cpu_distributed
    port = _free_port()
    for name, value in dict(SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_LOCALID='0',
                            SLURM_NODELIST='node0', MASTER_ADDR='127.0.0.1').items():
        monkeypatch.setenv(name, value)
    # gloo asked for explicitly; port from dist_cfg as mmengine's slurm launcher takes it
    cfg = _cfg(launcher='slurm')
    cfg.env_cfg.dist_cfg = dict(backend='gloo', port=port, timeout=60)
    line = setup_cpu_distributed(cfg)
    assert 'launcher slurm, backend gloo, process group initialised' in line, line
    assert dist.get_world_size() == 1
    assert os.environ['RANK'] == '0' and os.environ['WORLD_SIZE'] == '1'
    assert os.environ['MASTER_PORT'] == str(port)


def test_setup_cpu_distributed_leaves_gpus_to_mmengine(monkeypatch):
    from mmdet_posmlp.engine.runner import setup_cpu_distributed
    monkeypatch.setattr('mmengine.device.get_device', lambda: 'cuda')
    cfg = _cfg(launcher='pytorch')
    assert setup_cpu_distributed(cfg) is None
    assert cfg.env_cfg.dist_cfg.backend == 'nccl' and 'model_wrapper_cfg' not in cfg
