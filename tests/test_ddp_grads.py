"""Every backbone is DDP-correct: each parameter that requires grad gets a gradient in a step.

DistributedDataParallel (``find_unused_parameters=False``, mmengine's default) stops at the
next iteration when a parameter that requires grad took no part in the loss. A backbone that
kept stages after its last output had such parameters, so:

- for every backbone (PosMLP-T with each mixer and with shifted windows, Hire-MLP-Tiny,
  ViP-S/7, S2-MLP-deep; built by mmdet's MODELS) and every ``out_indices`` of OUT_INDICES, and
  with ``frozen_stages=1``: one training step on 2 images of 32x48 gives every parameter with
  requires_grad a finite gradient, frozen ones none, and no parameter of a stage after the
  last output exists;
- PosMLP with out_indices=(0, 1, 2) trains two steps inside a real DistributedDataParallel
  (gloo process group of one process, find_unused_parameters=False);
- an ImageNet classifier checkpoint loads into a pruned PosMLP without warnings: the weights of
  the stages that were not built are dropped as expected, the final norm maps to the last
  output norm only when the last stage is returned.
"""
import logging
import socket

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn

pytestmark = pytest.mark.filterwarnings('ignore:pkg_resources is deprecated:UserWarning')

OUT_INDICES = [(0, 1, 2, 3), (1, 2, 3), (0, 1, 2), (2,), (0,), (3,)]
BACKBONES = {
    'posmlp_gqpe': dict(type='PosMLP', arch='tiny', mixer='gqpe'),
    'posmlp_lrpe': dict(type='PosMLP', arch='tiny', mixer='lrpe'),
    'posmlp_sgu': dict(type='PosMLP', arch='tiny', mixer='sgu'),
    'posmlp_shift': dict(type='PosMLP', arch='tiny', mixer='gqpe', shift=True),
    'hire_mlp': dict(type='HireMLP', arch='tiny'),
    'vip': dict(type='ViP', arch='s7'),
    's2mlp': dict(type='S2MLP', arch='deep'),  # isotropic: out_indices are block indices
}


@pytest.fixture(scope='module', autouse=True)
def mmdet_scope():
    import mmdet_posmlp  # noqa: F401  (registers the backbones in mmdet's MODELS)
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    # small maps: many small ops, where a second thread gains little and, on a busy host,
    # costs much in OpenMP waits (this file: ~60 s with 1 thread, 3-5 min with 2 on a loaded
    # 2-core machine)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(name, **kwargs):
    from mmdet.registry import MODELS
    torch.manual_seed(0)
    return MODELS.build(dict(BACKBONES[name], drop_path_rate=0.0, **kwargs))


def training_step(model, generator_seed=0):
    """Two 32x48 images (1x2 maps at stride 32) forward in training mode, a loss that reads
    every output, backward."""
    g = torch.Generator().manual_seed(generator_seed)
    model.train()
    model.zero_grad(set_to_none=True)
    outs = model(torch.randn(2, 3, 32, 48, generator=g))
    # random weights: no output's gradient can vanish by symmetry (a plain mean would, after
    # a LayerNorm)
    loss = sum((o * torch.randn(o.shape, generator=g)).sum() for o in outs)
    loss.backward()
    return outs


def stage_modules(model):
    """The modules of each stage the backbone holds (the transition into it included)."""
    if hasattr(model, 'levels'):  # PosMLP
        return [[stage] for stage in model.levels]
    return model.stage_modules()


def stem(model):
    return model.patch_embed if hasattr(model, 'levels') else model.model.patch_embed


def params_of(modules):
    return [p for m in modules for p in m.parameters()]


def check_gradients(model):
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    frozen = [(n, p) for n, p in model.named_parameters() if not p.requires_grad]
    no_grad = [n for n, p in trainable if p.grad is None]
    assert not no_grad, f'{len(no_grad)} trainable parameters got no gradient: {no_grad[:8]}'
    bad = [n for n, p in trainable if not torch.isfinite(p.grad).all()]
    assert not bad, f'non-finite gradients: {bad[:8]}'
    assert all(p.grad is None for _, p in frozen), [n for n, p in frozen if p.grad is not None]
    return trainable, frozen


@pytest.mark.parametrize('out_indices', OUT_INDICES, ids=lambda o: ''.join(map(str, o)))
@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_every_trainable_parameter_gets_a_gradient(name, out_indices):
    model = build(name, out_indices=out_indices)
    outs = training_step(model)
    assert len(outs) == len(out_indices)
    assert len(stage_modules(model)) == max(out_indices) + 1, 'stages after the last output kept'
    trainable, frozen = check_gradients(model)
    assert not frozen and trainable


@pytest.mark.parametrize('name', ['posmlp_gqpe', 'hire_mlp'])
def test_frozen_stages_have_no_gradient(name):
    model = build(name, out_indices=(1, 2), frozen_stages=1)
    training_step(model)
    trainable, frozen = check_gradients(model)
    stages = stage_modules(model)
    frozen_parts = [stem(model)] + stages[0]
    assert {id(p) for _, p in frozen} == {id(p) for p in params_of(frozen_parts)}
    # stage 1 on, and the output norms of the returned stages, train; frozen parts stay in eval
    assert all(p.requires_grad for p in params_of(stages[1] + stages[2]))
    assert all(p.requires_grad for p in params_of([model.norm1, model.norm2]))
    assert model.training and not any(m.training for part in frozen_parts for m in part.modules())


# ----------------------------------------------------------------------------- real DDP

def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture
def gloo_group():
    if dist.is_initialized():
        pytest.skip('a process group is already initialised in this process')
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{_free_port()}', rank=0,
                            world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_ddp_two_steps_without_find_unused_parameters(gloo_group):
    model = build('posmlp_gqpe', out_indices=(0, 1, 2))
    ddp = nn.parallel.DistributedDataParallel(model, find_unused_parameters=False)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=1e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for step in range(2):  # DDP's unused-parameter error comes at the second forward
        optimizer.zero_grad(set_to_none=True)
        training_step(ddp, generator_seed=step)
        check_gradients(model)
        optimizer.step()
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(moved) == len(before)


# ----------------------------------------------------------------------------- checkpoints

class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.mark.parametrize('out_indices', [(0, 1, 2), (1, 2, 3), (1,)],
                         ids=lambda o: ''.join(map(str, o)))
def test_imagenet_checkpoint_loads_into_pruned_backbone(out_indices, tmp_path):
    from mmengine.logging import MMLogger
    from mmdet_posmlp.models.posmlp import PosMLPClassifier
    torch.manual_seed(1)
    classifier = PosMLPClassifier('tiny')
    with torch.no_grad():  # final norm away from its (1, 0) initialisation
        classifier.norm.weight.uniform_(0.5, 1.5)
        classifier.norm.bias.uniform_(-0.5, 0.5)
    path = tmp_path / 'posmlp_t.pth'
    torch.save({'state_dict_ema': classifier.state_dict()}, path)

    model = build('posmlp_gqpe', out_indices=out_indices,
                  init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    logger = MMLogger.get_current_instance()
    handler = _Records()
    logger.addHandler(handler)
    try:
        model.init_weights()
    finally:
        logger.removeHandler(handler)
    # the one warning left is the new output norms (not in a classifier), as before pruning
    warnings = [r.getMessage() for r in handler.records if r.levelno >= logging.WARNING]
    new_norms = [f'norm{i}.{w}' for i in out_indices if i < 3 for w in ('weight', 'bias')]
    assert warnings == ([f'PosMLP: missing keys (kept at initialisation): {new_norms}']
                        if new_norms else []), warnings
    info = ' '.join(r.getMessage() for r in handler.records)
    last = max(out_indices)
    unused = [k for k in classifier.state_dict() if k.startswith('levels.')
              and int(k.split('.')[1]) > last] + (['norm.weight', 'norm.bias'] if last < 3 else [])
    assert f'and {len(unused)} the backbone does not use' in info, info

    ref = classifier.state_dict()
    state = model.state_dict()
    for key, value in state.items():
        if key.startswith('model.'):
            assert torch.equal(value, ref[key[len('model.'):]]), key
    # the classifier's final norm normalises stage 3: it is norm3 when stage 3 is returned
    if 3 in out_indices:
        assert torch.equal(state['norm3.weight'], ref['norm.weight'])
        assert torch.equal(state['norm3.bias'], ref['norm.bias'])
    else:
        assert not any(k.startswith('norm3.') for k in state)
        for i in out_indices:  # new output norms keep their initialisation
            assert torch.equal(state[f'norm{i}.weight'], torch.ones_like(state[f'norm{i}.weight']))
