"""The vision-MLP families (Hire-MLP, ViP, S2-MLP) as MMDetection backbones, and their configs.

- every family config builds, its parameter count is exact, and the strides agree: backbone
  map -> neck outputs -> anchor generators and RoI extractors (pixel anchor sizes as mmdet's);
- the backbones are registered, build from dicts, and out_indices / frozen_stages / norm_eval /
  with_cp behave; bad arguments raise naming the argument;
- init_cfg Pretrained reads checkpoints laid out as the official ones (wrapped, with a head)
  and reproduces the classifier's features; missing / foreign files raise naming the path;
- per family, one small RetinaNet training step and one Mask R-CNN predict on the CPU with
  mmcv's real ops; the Hire-MLP shapes demo trains 2 iterations.

Small archs keep it fast; only the parameter counts use the full-size detectors (built,
never run).
"""
import argparse
import copy
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn as nn

from mmdet_posmlp.models import hire_mlp, s2mlp, simple_pyramid, vip  # noqa: F401 (registers)
from mmdet_posmlp.models.common import CheckpointError
from conftest import REPO, detection_batch, small_heads_

pytestmark = pytest.mark.filterwarnings('ignore:pkg_resources is deprecated:UserWarning')

CONFIGS = osp.join(REPO, 'configs')

# Whole detector, every parameter (COCO heads, 80 classes). Measured; for the README.
DETECTOR_PARAMS = {
    'retinanet_hire_mlp_tiny_1x.py': 27_779_540,
    'retinanet_hire_mlp_small_1x.py': 42_851_716,
    'retinanet_hire_mlp_base_1x.py': 67_964_724,
    'mask_rcnn_hire_mlp_tiny_1x.py': 37_697_104,
    'mask_rcnn_hire_mlp_small_1x.py': 52_769_280,
    'mask_rcnn_hire_mlp_base_1x.py': 77_882_288,
    'retinanet_vip_s7_1x.py': 34_194_996,
    'retinanet_vip_m7_1x.py': 64_568_372,
    'mask_rcnn_vip_s7_1x.py': 45_275_696,
    'mask_rcnn_vip_m7_1x.py': 75_649_072,
    'retinanet_s2mlp_deep_1x.py': 59_351_348,
    'retinanet_s2mlp_wide_1x.py': 81_379_700,
    'mask_rcnn_s2mlp_deep_1x.py': 71_416_784,
    'mask_rcnn_s2mlp_wide_1x.py': 94_576_304,
}
BACKBONE_TYPE = {'hire_mlp': 'HireMLP', 'vip': 'ViP', 's2mlp': 'S2MLP'}

# Small archs of each family (same structure, a few channels and blocks).
SMALL_ARCH = {
    'HireMLP': dict(embed_dims=(16, 32, 32, 64), depths=(1, 2, 1, 1)),
    'ViP': dict(depths=(1, 2, 1, 1), embed_dims=(32, 64, 64, 64), segment_dim=(8, 4, 4, 4),
                transitions=(True, False, False, False)),
    'S2MLP': dict(patch_size=16, embed_dim=32, depth=3, mlp_ratio=2.),
}
CLASSIFIER = {'HireMLP': hire_mlp.HireMLPClassifier, 'ViP': vip.ViPClassifier,
              'S2MLP': s2mlp.S2MLPClassifier}


@pytest.fixture(scope='module', autouse=True)
def mmdet_scope():
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')


def build(cfg):
    from mmdet.registry import MODELS
    return MODELS.build(cfg)


def small(type_, **kwargs):
    kwargs.setdefault('drop_path_rate', 0.0)
    return build(dict(type=type_, arch=SMALL_ARCH[type_], **kwargs))


def randomize_bn_(model):
    """Non-trivial BatchNorm statistics, so that eval-mode comparisons mean something."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.add_(torch.randn(m.weight.shape, generator=g) * 0.2)
    return model


# ----------------------------------------------------------------------------- configs

def _neck_strides(model):
    backbone, neck = model.backbone, model.neck
    if isinstance(neck, simple_pyramid.SimpleFeaturePyramid):
        return neck.strides(backbone.strides[backbone.out_indices[-1]])
    # mmdet's FPN: the backbone levels from start_level, then stride-2 extra levels
    strides = [backbone.strides[i] for i in backbone.out_indices]
    strides = strides[neck.start_level:neck.backbone_end_level]
    while len(strides) < neck.num_outs:
        strides.append(strides[-1] * 2)
    return strides


def _anchor_sizes(generator):
    """Base anchor side (ratio 1) of every scale at every level, in pixels."""
    return [sorted(float(b) * float(s) for s in generator.scales) for b in generator.base_sizes]


@pytest.mark.parametrize('name', sorted(DETECTOR_PARAMS))
def test_config_builds_with_exact_param_count(name):
    from mmdet_posmlp.analysis.complexity import build_detector, count_parameters
    model = build_detector(osp.join(CONFIGS, name))
    backbone, neck = model.backbone, model.neck
    family = next(k for k in BACKBONE_TYPE if f'_{k}_' in name)
    assert type(backbone).__name__ == BACKBONE_TYPE[family]
    # the neck reads what the backbone returns, with its widths
    widths = [backbone.num_features[i] for i in backbone.out_indices]
    if isinstance(neck, simple_pyramid.SimpleFeaturePyramid):
        assert neck.in_channels == widths[-1]
    else:
        assert list(neck.in_channels) == widths

    # the heads use the strides the neck produces, with mmdet's anchor sizes in pixels
    strides = _neck_strides(model)
    if name.startswith('retinanet'):
        head = model.bbox_head
        gen = head.prior_generator
        assert [s[0] for s in gen.strides] == pytest.approx(strides)
        assert len(strides) == 5
        ref = [sorted(32 * 2 ** (k + j / 3) for j in range(3)) for k in range(5)]
    else:
        head = model.roi_head.bbox_head
        gen = model.rpn_head.prior_generator
        assert [s[0] for s in gen.strides] == pytest.approx(strides)
        ref = [[32 * 2 ** k] for k in range(5)]
        for extractor in (model.roi_head.bbox_roi_extractor, model.roi_head.mask_roi_extractor):
            assert list(extractor.featmap_strides) == pytest.approx(strides[:4])
            # a RoI of side 14 x stride goes to level 0 (as mmdet's 56 at stride 4)
            assert extractor.finest_scale == pytest.approx(14 * extractor.featmap_strides[0])
    for got, want in zip(_anchor_sizes(gen), ref):
        assert got == pytest.approx(want)
    assert head.num_classes == 80

    total = count_parameters(model)
    print(f'{name}: {total:,} parameters (backbone {count_parameters(backbone):,})')
    assert total == DETECTOR_PARAMS[name]


def test_simple_pyramid_norms_get_no_weight_decay():
    """The recipe exempts norms by type, the neck's LayerNorm2d (an nn.LayerNorm) included."""
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(osp.join(CONFIGS, 'mask_rcnn_s2mlp_deep_1x.py'))
    cfg.model.backbone.arch = SMALL_ARCH['S2MLP']
    cfg.model.neck.in_channels = 32
    model = build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {id(p): g['weight_decay'] for g in wrapper.optimizer.param_groups for p in g['params']}
    names = dict(model.named_parameters())
    norms = [n for n in names if 'norm' in n]
    assert any('neck.' in n for n in norms)
    assert all(decay[id(names[n])] == 0 for n in norms), [
        n for n in norms if decay[id(names[n])] != 0]
    assert decay[id(names['neck.branches.0.lateral_conv.weight'])] == 0.05


# ----------------------------------------------------------------------------- backbones

@pytest.mark.parametrize('type_,strides,shapes', [
    ('HireMLP', [4, 8, 16, 32], [(16, 24), (8, 12), (4, 6), (2, 3)]),
    ('ViP', [7, 14, 14, 14], [(10, 14), (5, 7), (5, 7), (5, 7)]),
    ('S2MLP', [16, 16, 16], [(4, 6)] * 3),
])
def test_backbone_registered_builds_from_dict(type_, strides, shapes):
    from mmdet.registry import MODELS
    assert MODELS.get(type_) is not None
    n = len(strides)
    model = small(type_, out_indices=tuple(range(n))).eval()
    assert model.strides == strides
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 64, 96))
    assert isinstance(outs, tuple) and len(outs) == n
    for out, c, hw in zip(outs, model.num_features, shapes):
        assert out.shape == (2, c, *hw) and out.is_contiguous()
    # the default arch builds too, with its family's default outputs
    full = build(dict(type=type_))
    assert len(full.out_indices) == (4 if type_ == 'HireMLP' else 1)


def test_out_indices_select_and_prune():
    model = small('HireMLP', out_indices=(0, 2), out_norm=False)
    assert model.out_indices == (0, 2) and len(model.model.network) == 5  # stage 3 dropped
    assert not hasattr(model, 'norm1')
    outs = model.eval()(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [16, 32]
    # no parameter is left unused (DDP without find_unused_parameters)
    model.train()
    sum(o.sum() for o in model(torch.randn(2, 3, 64, 64))).backward()
    assert all(p.grad is not None for p in model.parameters())

    vip_model = small('ViP', out_indices=(0, -1))
    assert vip_model.out_indices == (0, 3)
    assert [o.shape[2] for o in vip_model(torch.randn(1, 3, 56, 56))] == [8, 4]
    s2 = small('S2MLP', out_indices=(-1,))
    assert s2.out_indices == (2,)
    s2 = small('S2MLP', out_indices=(0,))
    assert len(s2.model.blocks) == 1


def _grads(model, x, seed=0):
    model.zero_grad(set_to_none=True)
    outs = model(x)
    g = torch.Generator().manual_seed(seed)
    sum((o * torch.randn(o.shape, generator=g)).sum() for o in outs).backward()
    return outs


@pytest.mark.parametrize('type_,frozen', [('HireMLP', 2), ('ViP', 2), ('S2MLP', 1)])
def test_frozen_stages(type_, frozen):
    model = small(type_, frozen_stages=frozen)
    model.train()
    stages = model.stage_modules()
    frozen_parts = [model.model.patch_embed] + [m for s in stages[:frozen] for m in s]
    if type_ == 'HireMLP':
        frozen_parts += [model.norm0, model.norm1]
    if type_ == 'ViP':  # stage 2 includes the transition (network.1) that leads into it
        assert model.model.network[1] in frozen_parts
    trained = [m for s in stages[frozen:] for m in s]
    assert all(not m.training for part in frozen_parts for m in part.modules())
    assert all(m.training for part in trained for m in part.modules())
    stats = [b for part in frozen_parts for n, b in part.named_buffers() if 'running' in n]
    stats_before = [b.clone() for b in stats]
    _grads(model, torch.randn(2, 3, 64, 64))
    for part in frozen_parts:
        assert all(not p.requires_grad and p.grad is None for p in part.parameters())
    for part in trained:
        assert all(p.grad is not None for p in part.parameters())
    # frozen BatchNorm statistics do not move
    assert all(torch.equal(b, c) for b, c in zip(stats, stats_before))
    assert bool(stats) == (type_ == 'HireMLP')
    # train() again (as the runner does each epoch) keeps them frozen
    model.train()
    assert not model.model.patch_embed.training


def test_norm_eval_keeps_the_classifier_batchnorms_in_eval():
    model = small('HireMLP', norm_eval=True).train()
    bns = [m for m in model.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) > 10 and all(not m.training for m in bns)
    out_norms = [getattr(model, f'norm{i}') for i in model.out_indices]
    assert all(m.training for m in out_norms)  # new layers: they learn their statistics
    before = [m.running_mean.clone() for m in bns]
    _grads(model, torch.randn(2, 3, 64, 64))
    assert all(torch.equal(m.running_mean, b) for m, b in zip(bns, before))
    assert all(p.grad is not None for m in bns for p in m.parameters())  # affine still trains
    assert not all(torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
                   for m in out_norms)
    plain = small('HireMLP').train()
    assert all(m.training for m in plain.model.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize('type_', ['HireMLP', 'ViP', 'S2MLP'])
def test_with_cp_same_outputs_and_gradients(type_):
    kwargs = dict(out_indices=(1, 2) if type_ == 'S2MLP' else (1, 3), frozen_stages=0)
    torch.manual_seed(0)
    ref = small(type_, **kwargs)
    cp = small(type_, with_cp=True, **kwargs)
    cp.load_state_dict(ref.state_dict())
    ref.train(), cp.train()
    assert cp.model.grad_checkpointing and not ref.model.grad_checkpointing
    block = cp.stage_modules()[1][-1]
    block = block[0] if isinstance(block, nn.Sequential) else block
    calls = []
    block.register_forward_pre_hook(lambda *a: calls.append(1))  # recompute stops early
    x = torch.randn(2, 3, 64, 64)
    out_ref, out_cp = _grads(ref, x), _grads(cp, x)
    assert len(calls) == 2  # recomputed during backward: checkpointing is on
    for a, b in zip(out_ref, out_cp):
        torch.testing.assert_close(a, b)
    grads_ref = {n: p.grad for n, p in ref.named_parameters() if p.requires_grad}
    for n, p in cp.named_parameters():
        if p.requires_grad:  # stage 1 after a frozen stem gets gradients too (non-reentrant)
            assert p.grad is not None, n
            torch.testing.assert_close(p.grad, grads_ref[n], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('cfg,error,match', [
    (dict(type='HireMLP', out_indices=(4,)), ValueError, 'out_indices'),
    (dict(type='HireMLP', out_indices=()), ValueError, 'out_indices'),
    (dict(type='HireMLP', out_indices=(2, 1)), ValueError, 'out_indices'),
    (dict(type='HireMLP', out_indices=3), ValueError, 'out_indices'),
    (dict(type='HireMLP', frozen_stages=5), ValueError, 'frozen_stages'),
    (dict(type='HireMLP', arch='huge'), ValueError, 'arch'),
    (dict(type='HireMLP', arch=dict(dims=(1, 2))), ValueError, 'arch'),
    (dict(type='HireMLP', pretrained='a.pth',
          init_cfg=dict(type='Pretrained', checkpoint='b.pth')), ValueError, 'pretrained'),
    (dict(type='HireMLP', init_cfg='a.pth'), TypeError, 'init_cfg'),
    (dict(type='ViP', init_cfg=dict(type='Pretrained')), ValueError, 'checkpoint'),
    (dict(type='ViP', arch='s14'), ValueError, 'arch'),
    (dict(type='ViP', arch=dict(layers=(1, 2, 1, 1))), ValueError, "'layers' is now 'depths'"),
    (dict(type='ViP', out_norm=True), TypeError, 'out_norm'),
    (dict(type='S2MLP', arch=SMALL_ARCH['S2MLP'], out_indices=(3,)), ValueError, 'out_indices'),
    (dict(type='S2MLP', arch=SMALL_ARCH['S2MLP'], frozen_stages=-2), ValueError,
     'frozen_stages'),
    (dict(type='S2MLP', pretrained=3), TypeError, 'pretrained'),
])
def test_bad_arguments_raise_naming_the_argument(cfg, error, match):
    if 'arch' not in cfg:
        cfg = dict(cfg, arch=SMALL_ARCH[cfg['type']])
    with pytest.raises(error, match=match):
        build(cfg)


# ----------------------------------------------------------------------------- weights

def _official_checkpoint(type_, classifier):
    """The classifier's weights (head included) wrapped as the official files wrap them."""
    sd = {k: v.clone() for k, v in classifier.state_dict().items()}
    if type_ == 'HireMLP':  # DeiT-style training script
        return {'model': sd, 'optimizer': {}, 'epoch': 299,
                'args': argparse.Namespace(model='hire_mlp_tiny')}
    if type_ == 'ViP':  # timm's training script, EMA weights
        return {'state_dict': {k: torch.zeros_like(v) for k, v in sd.items()},
                'state_dict_ema': sd, 'epoch': 299, 'arch': 'vip_s7', 'version': 2,
                'args': argparse.Namespace(model='vip_s7')}
    return {'state_dict': {'module.' + k: v for k, v in sd.items()}}  # DataParallel, wrapped


@pytest.mark.parametrize('type_', ['HireMLP', 'ViP', 'S2MLP'])
def test_pretrained_official_checkpoint_gives_the_classifier_features(type_, tmp_path):
    torch.manual_seed(0)
    classifier = randomize_bn_(CLASSIFIER[type_](num_classes=7, **SMALL_ARCH[type_])).eval()
    path = str(tmp_path / 'official.pth')
    torch.save(_official_checkpoint(type_, classifier), path)
    out_indices = (1, 2) if type_ == 'S2MLP' else (0, 1, 3)
    extra = dict(out_norm=False) if type_ == 'HireMLP' else {}
    model = small(type_, out_indices=out_indices,
                  init_cfg=dict(type='Pretrained', checkpoint=path), **extra)
    report = model.load_pretrained(path)
    assert report['missing'] == [] and report['unexpected'] == []
    assert report['head'] == ['model.head.weight', 'model.head.bias']
    model.init_weights()  # the mmengine path reads the same file
    assert model.is_init
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        want = classifier.forward_intermediates(x, indices=list(out_indices),
                                                intermediates_only=True)
        got = model.eval()(x)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_pretrained_hire_out_norms_missing_and_detector_checkpoints(tmp_path):
    classifier = CLASSIFIER['HireMLP'](**SMALL_ARCH['HireMLP'])
    path = str(tmp_path / 'hire.pth')
    torch.save({'model': classifier.state_dict()}, path)
    model = small('HireMLP', out_indices=(1, 2))
    report = model.load_pretrained(path)
    # only the new output norms are missing; the stage after the last output is unused
    assert {k.split('.')[0] for k in report['missing']} == {'norm1', 'norm2'}
    assert report['unexpected'] == [] and any('network.6' in k for k in report['unused'])
    assert torch.equal(model.model.network[2][0].mlp.fc1.weight,
                       classifier.network[2][0].mlp.fc1.weight)
    # a detector checkpoint ('backbone.' keys) restores the whole backbone, out norms included
    randomize_bn_(model)
    detector = {'meta': {}, 'state_dict': {'backbone.' + k: v
                                           for k, v in model.state_dict().items()}}
    path = str(tmp_path / 'detector.pth')
    torch.save(detector, path)
    again = small('HireMLP', out_indices=(1, 2))
    assert again.load_pretrained(path)['missing'] == []
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


def test_pretrained_errors_name_the_path(tmp_path):
    missing = str(tmp_path / 'nowhere' / 'hire_mlp_tiny_in1k.pth')
    model = small('HireMLP', init_cfg=dict(type='Pretrained', checkpoint=missing))
    with pytest.raises(CheckpointError, match='HireMLP: .*nowhere/hire_mlp_tiny_in1k.pth'):
        model.init_weights()
    # another family's checkpoint
    foreign = str(tmp_path / 'vip.pth')
    torch.save({'state_dict_ema': CLASSIFIER['ViP'](**SMALL_ARCH['ViP']).state_dict()}, foreign)
    with pytest.raises(CheckpointError, match=r"vip\.pth' is not a HireMLP checkpoint"):
        small('HireMLP').load_pretrained(foreign)
    # another variant of the family
    other = str(tmp_path / 'wide.pth')
    torch.save(CLASSIFIER['HireMLP'](embed_dims=(16, 32, 48, 64), depths=(1, 2, 1, 1))
               .state_dict(), other)
    with pytest.raises(CheckpointError,
                       match=r"wide\.pth' is another HireMLP variant.*network\.3\.proj"):
        small('HireMLP').load_pretrained(other)
    # not a torch file
    junk = tmp_path / 'junk.pth'
    junk.write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match=r"S2MLP: .*junk\.pth' .*not a torch checkpoint"):
        small('S2MLP').load_pretrained(str(junk))


# ----------------------------------------------------------------------------- detectors

def _small_detector_cfg(name):
    """The family's real config with a small backbone, 32-channel neck and heads."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(CONFIGS, name))
    m = cfg.model
    type_ = m.backbone.type
    m.backbone.arch = SMALL_ARCH[type_]
    m.backbone.init_cfg = None
    m.backbone.drop_path_rate = 0.0
    widths = {'HireMLP': [16, 32, 32, 64], 'ViP': [32, 64, 64, 64], 'S2MLP': [32]}[type_]
    if m.neck.type == 'FPN':
        m.neck.in_channels = [widths[i] for i in m.backbone.out_indices]
    else:
        m.neck.in_channels = widths[-1]
    small_heads_(m)
    if 'bbox_head' not in m:  # Mask R-CNN
        m.test_cfg.rpn.update(nms_pre=200, max_per_img=50)
        m.test_cfg.rcnn.update(score_thr=0.0, max_per_img=20)  # untrained: keep its boxes
    return cfg


@pytest.mark.parametrize('name', ['retinanet_hire_mlp_tiny_1x.py', 'retinanet_vip_s7_1x.py',
                                  'retinanet_s2mlp_deep_1x.py'])
def test_retinanet_training_step(name, tmp_path):
    torch.manual_seed(0)
    cfg = _small_detector_cfg(name)
    # the detector's init_weights reaches the backbone's Pretrained init (official layout)
    type_ = cfg.model.backbone.type
    classifier = CLASSIFIER[type_](**SMALL_ARCH[type_])
    path = str(tmp_path / 'in1k.pth')
    torch.save(_official_checkpoint(type_, classifier), path)
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=path)
    model = build(cfg.model)
    model.init_weights()
    assert torch.equal(model.backbone.model.patch_embed.proj.weight,
                       classifier.patch_embed.proj.weight)
    model.train()
    data = model.data_preprocessor(detection_batch(), True)
    feats = model.extract_feat(data['inputs'])
    # each map covers the image at its anchors' stride: ceil(side / stride) cells, or one more
    # where an odd map was padded on the way down and upsampled again (ViP: 128 px -> 19 cells
    # at 7 -> 10 at 14 -> 20 at 7; mmdet flags the anchors past the image invalid)
    gen = model.bbox_head.prior_generator
    assert len(feats) == len(gen.strides)
    for f, (s, _) in zip(feats, gen.strides):
        for size, side in zip(f.shape[-2:], (128, 160)):
            assert -(-side // s) <= size <= -(-side // s) + 1, (f.shape, s)
    losses = model.loss(data['inputs'], data['data_samples'])
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(x.sum() for x in v)
                for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total) and total > 0
    total.backward()
    grads = [p.grad for p in model.backbone.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize('name', ['mask_rcnn_hire_mlp_tiny_1x.py', 'mask_rcnn_vip_s7_1x.py',
                                  'mask_rcnn_s2mlp_deep_1x.py'])
def test_mask_rcnn_predict(name):
    torch.manual_seed(0)
    model = build(_small_detector_cfg(name).model).eval()
    data = model.data_preprocessor(detection_batch(with_masks=True), False)
    with torch.no_grad():
        results = model.predict(data['inputs'], data['data_samples'])
    assert len(results) == 2
    for r in results:
        pred = r.pred_instances
        assert len(pred) > 0 and pred.bboxes.shape[1] == 4
        assert pred.masks.shape[1:] == (128, 160)
    # and a training step on the same batch, RoI extractor levels included
    model.train()
    data = model.data_preprocessor(detection_batch(with_masks=True), True)
    losses = model.loss(data['inputs'], data['data_samples'])
    assert all(torch.isfinite(v).all() for k, v in losses.items()
               if 'loss' in k and isinstance(v, torch.Tensor))


# ----------------------------------------------------------------------------- demo

DEMO = osp.join(CONFIGS, 'demo', 'retinanet_hire_mlp_tiny_demo.py')
POSMLP_DEMO = osp.join(CONFIGS, 'demo', 'retinanet_posmlp_t_demo.py')


def test_hire_demo_is_the_posmlp_demo_with_another_backbone():
    from mmengine.config import Config
    hire, pos = Config.fromfile(DEMO).to_dict(), Config.fromfile(POSMLP_DEMO).to_dict()
    assert hire['model']['backbone']['type'] == 'HireMLP'
    assert hire['model']['backbone']['arch'] == 'tiny'
    assert hire['model']['backbone']['init_cfg'] is None
    assert hire['model']['neck']['in_channels'] == [128, 320, 512]
    for cfg in (hire, pos):
        del cfg['model']['backbone'], cfg['model']['neck']['in_channels'], cfg['custom_imports']
    assert hire == pos  # data, schedule, neck, head, seed, hooks: all the same


def test_hire_demo_trains_two_iterations(tmp_path):
    from mmengine.config import Config
    from mmengine.runner import Runner
    from tools.demo.shapes import make_shapes_dataset
    root = str(tmp_path / 'shapes') + '/'
    make_shapes_dataset(root, verbose=False, num_train=4, num_val=2, image_size=(96, 128),
                        object_size=(12, 60))
    cfg = Config.fromfile(DEMO)
    cfg.work_dir = str(tmp_path / 'work')
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.data_root = root
    for key in ('val_evaluator', 'test_evaluator'):
        cfg[key].ann_file = root + 'annotations/instances_val.json'
    cfg.train_cfg.update(max_epochs=1, val_interval=2)  # train only
    cfg.log_level = 'WARNING'
    torch.manual_seed(0)
    runner = Runner.from_cfg(copy.deepcopy(cfg))
    runner.train()
    assert runner.iter == 2
    assert type(runner.model.backbone).__name__ == 'HireMLP'
    assert np.isfinite(runner.message_hub.log_scalars['train/loss'].current())
