"""SyncBatchNorm for the BatchNorm parts (PosMLP's stem, Hire-MLP's norms): the route and its
limits.

A config's ``sync_bn = 'torch'`` is read by mmengine 0.10.7's ``Runner.wrap_model`` in
distributed runs only: it calls ``mmengine.model.convert_sync_batchnorm(model, 'torch')``,
which replaces every ``_BatchNorm`` by ``torch.nn.SyncBatchNorm`` (the same Parameters, the
running statistics carried over) before the model is wrapped in DDP; a non-distributed Runner
instead reverts SyncBatchNorm layers to BatchNorm. Checked here:

- a real Runner built from configs/retinanet_posmlp_t_1x.py with ``sync_bn='torch'`` in a
  one-process gloo group (the project's CPU route, engine/runner.py) converts before it wraps
  the model in DDP, and DDP refuses SyncBatchNorm on CPU modules; without ``sync_bn`` it
  builds; without distribution it leaves BatchNorm;
- ``mmengine.model.convert_sync_batchnorm(model, 'torch')``, the function the Runner calls,
  converts the stem's norms and nothing else (the same Parameters and statistics);
- torch's own ``nn.SyncBatchNorm.convert_sync_batchnorm`` on the built RetinaNet-PosMLP-T: the
  stem's norms become SyncBatchNorm, and an eval-mode forward on the CPU gives the same
  outputs as before the conversion;
- ``norm_eval=True`` keeps the SyncBatchNorm layers in eval mode (SyncBatchNorm subclasses
  ``_BatchNorm``, which ``train()`` looks for; mmcv's SyncBatchNorm does not, so ``'mmcv'``
  would escape norm_eval);
- SyncBatchNorm is for GPU runs: DDP refuses it in CPU modules, and in training mode inside
  a process group it refuses CPU tensors (torch raises), unless norm_eval keeps it in eval
  mode.
"""
import copy
import os
import os.path as osp
import socket

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

pytestmark = pytest.mark.filterwarnings('ignore:pkg_resources is deprecated:UserWarning')

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs', 'retinanet_posmlp_t_1x.py')


@pytest.fixture(scope='module', autouse=True)
def mmdet_scope():
    import mmdet_posmlp  # noqa: F401  (registers the backbones)
    import mmdet_posmlp.models.losses  # noqa: F401  (Float32FocalLoss, the configs' loss_cls)
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture
def dist_env(monkeypatch):
    """torch's env:// variables for a 1-process group; the group is destroyed afterwards."""
    if dist.is_initialized():
        pytest.skip('a process group is already initialised in this process')
    for name, value in dict(RANK='0', WORLD_SIZE='1', LOCAL_RANK='0', MASTER_ADDR='127.0.0.1',
                            MASTER_PORT=str(_free_port())).items():
        monkeypatch.setenv(name, value)
    for name in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'):  # a distributed Runner sets them
        monkeypatch.setenv(name, os.environ.get(name, ''))  # restored on teardown
        if not os.environ[name]:
            monkeypatch.delenv(name)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def build_retinanet(**backbone):
    from mmengine.config import Config
    from mmdet.registry import MODELS
    cfg = Config.fromfile(CONFIG)
    cfg.model.backbone.init_cfg = None  # no ImageNet file needed: nothing is loaded here
    cfg.model.backbone.update(backbone)
    torch.manual_seed(0)
    return MODELS.build(cfg.model)


def stem_norms(detector):
    return list(detector.backbone.model.patch_embed.norms)


def randomize_bn_(model):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.add_(torch.randn(m.weight.shape, generator=g) * 0.2)
    return model


def test_runner_honours_sync_bn(dist_env, tmp_path):
    """The Runner converts before wrapping in DDP: on the CPU route (gloo, one process) DDP
    then refuses the SyncBatchNorm layers, which shows both that ``sync_bn`` is honoured and
    that it is for GPU runs; the same config without ``sync_bn`` builds, and a
    non-distributed Runner leaves BatchNorm whatever ``sync_bn`` says."""
    from mmdet_posmlp.engine.runner import build_runner, load_config
    if torch.cuda.is_available():
        pytest.skip('checks the CPU route (gloo); on a GPU mmengine initialises nccl itself')
    no_init = {'model.backbone.init_cfg': None}
    cfg = load_config(CONFIG, dict(no_init, sync_bn='torch'), launcher='pytorch',
                      work_dir=str(tmp_path / 'sync'))
    with pytest.raises(ValueError, match='SyncBatchNorm layers only work with GPU modules'):
        build_runner(cfg)
    assert dist.is_initialized()

    cfg = load_config(CONFIG, no_init, launcher='pytorch', work_dir=str(tmp_path / 'plain'))
    runner = build_runner(cfg)  # the process group of the first build is reused
    assert runner.distributed and isinstance(runner.model, nn.parallel.DistributedDataParallel)
    assert all(type(m) is nn.BatchNorm2d for m in stem_norms(runner.model.module))
    dist.destroy_process_group()

    cfg = load_config(CONFIG, dict(no_init, sync_bn='torch'), launcher='none',
                      work_dir=str(tmp_path / 'single'))
    model = build_runner(cfg).model
    assert all(type(m) is nn.BatchNorm2d for m in stem_norms(model))


def test_mmengine_conversion_the_runner_calls():
    """``mmengine.model.convert_sync_batchnorm(model, 'torch')``, what Runner.wrap_model runs
    for ``sync_bn='torch'``: the stem's three norms, and nothing else, become torch's
    SyncBatchNorm with the same Parameters and statistics; norm_eval still acts on them."""
    from mmengine.model import convert_sync_batchnorm
    model = randomize_bn_(build_retinanet())
    before = stem_norms(model)
    assert len([m for m in model.modules() if isinstance(m, _BatchNorm)]) == 3
    model = convert_sync_batchnorm(model, 'torch')
    after = stem_norms(model)
    assert all(type(m) is nn.SyncBatchNorm for m in after)
    assert not any(type(m) is nn.BatchNorm2d for m in model.modules())
    for old, new in zip(before, after):
        assert new.weight is old.weight and new.bias is old.bias
        assert torch.equal(new.running_mean, old.running_mean)
        assert torch.equal(new.running_var, old.running_var) and new.eps == old.eps

    assert issubclass(nn.SyncBatchNorm, _BatchNorm)  # what the backbone's train() looks for
    model.backbone.norm_eval = True
    model.train()
    assert model.backbone.model.levels.training and not any(m.training for m in after)


def test_torch_conversion_keeps_eval_outputs_on_cpu():
    model = randomize_bn_(build_retinanet()).eval()
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model._forward(x)
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(model))
    assert all(type(m) is nn.SyncBatchNorm for m in stem_norms(converted))
    assert not any(type(m) is nn.BatchNorm2d for m in converted.modules())
    converted.eval()
    with torch.no_grad():
        after = converted._forward(x)
    flat = lambda outs: [t for level in outs for t in level]  # noqa: E731
    assert len(flat(before)) == len(flat(after)) == 10  # 5 levels x (scores, boxes)
    for a, b in zip(flat(before), flat(after)):
        assert torch.equal(a, b)


def test_norm_eval_keeps_sync_bn_in_eval():
    model = nn.SyncBatchNorm.convert_sync_batchnorm(build_retinanet(norm_eval=True))
    model.train()
    assert model.backbone.model.levels.training and model.bbox_head.training
    assert not any(m.training for m in stem_norms(model))
    model.backbone.norm_eval = False
    model.train()
    assert all(m.training for m in stem_norms(model))


def test_sync_bn_trains_only_on_gpus(dist_env):
    """In a process group, a training-mode SyncBatchNorm refuses CPU tensors (so sync_bn is for
    GPU runs); in eval mode, as norm_eval keeps it, it runs on the CPU."""
    from mmdet.registry import MODELS
    dist.init_process_group('gloo', init_method='env://', rank=0, world_size=1)
    x = torch.randn(2, 3, 64, 96)
    torch.manual_seed(0)
    backbone = MODELS.build(dict(type='PosMLP', arch='tiny', out_indices=(0,),
                                 drop_path_rate=0.0))
    backbone = nn.SyncBatchNorm.convert_sync_batchnorm(backbone).train()
    with pytest.raises(ValueError, match='SyncBatchNorm expected input tensor to be on GPU'):
        backbone(x)
    backbone.norm_eval = True
    outs = backbone.train()(x)
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is not None for p in backbone.parameters())
