"""CycleMLP (mmdet_posmlp/models/cycle_mlp.py): official parameter names, shapes and counts, Cycle
FC against a plain float64 transcription of the paper's formula and against torchvision's
deform_conv2d with the official offsets, any input size, what is CycleMLP's own in timm's model API
(the checks every family shares are in test_timm_api.py); the mmdet backbone, its configs and a
detector training step; Table 3's parameter column; ONNX export."""
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

timm = pytest.importorskip('timm')

from mmdet_posmlp.models import cycle_mlp as cm  # noqa: E402  (registers cycle_mlp_* with timm)
from conftest import (FAMILY_ARCHS, REPO, detection_batch, family_classifier,  # noqa: E402
                      OpRecorder, randomize_, small_heads_)

CONFIGS = osp.join(REPO, 'configs')

# The official variants (cycle_mlp.py, CycleMLP_B1..B5): dims, depths, mlp ratios.
VARIANTS = {
    'cycle_mlp_b1': ((64, 128, 320, 512), (2, 2, 4, 2), (4, 4, 4, 4)),
    'cycle_mlp_b2': ((64, 128, 320, 512), (2, 3, 10, 3), (4, 4, 4, 4)),
    'cycle_mlp_b3': ((64, 128, 320, 512), (3, 4, 18, 3), (8, 8, 4, 4)),
    'cycle_mlp_b4': ((64, 128, 320, 512), (3, 8, 27, 3), (8, 8, 4, 4)),
    'cycle_mlp_b5': ((96, 192, 384, 768), (3, 4, 24, 3), (4, 4, 4, 4)),
}
# Parameters of the official classifiers with the 1000-way head (README: 15M / 27M / 38M / 52M /
# 76M), counted from the official file.
OFFICIAL_PARAMS = {
    'cycle_mlp_b1': 15_155_400,
    'cycle_mlp_b2': 26_802_504,
    'cycle_mlp_b3': 38_385_720,
    'cycle_mlp_b4': 51_796_552,
    'cycle_mlp_b5': 75_747_280,
}
TINY = FAMILY_ARCHS['cycle_mlp']


def official_state_shapes(dims, depths, ratios, num_classes=1000, in_chans=3):
    """The official CycleNet's state-dict names and shapes, enumerated from its source:
    patch_embed.proj (Conv 7x7; its norm is an Identity); network = [blocks, Downsample,
    blocks, ...] (7 entries, Downsample.proj a Conv 3x3); each CycleBlock has norm1 (LayerNorm),
    attn.{mlp_c (Linear, no bias), sfc_h / sfc_w (CycleFC: weight (C, C, 1, 1), bias, buffer
    offset (1, 2C, 1, 1)), reweight.fc1 (C -> C/4), reweight.fc2 (C/4 -> 3C), proj}, norm2,
    mlp.{fc1, fc2}; then norm (LayerNorm) and head (Linear)."""
    t = {}

    def linear(name, cin, cout, bias=True):
        t[f'{name}.weight'] = (cout, cin)
        if bias:
            t[f'{name}.bias'] = (cout,)

    def ln(name, c):
        t[f'{name}.weight'] = (c,)
        t[f'{name}.bias'] = (c,)

    t['patch_embed.proj.weight'] = (dims[0], in_chans, 7, 7)
    t['patch_embed.proj.bias'] = (dims[0],)
    idx = 0
    for i, (d, depth) in enumerate(zip(dims, depths)):
        if i > 0:
            t[f'network.{idx}.proj.weight'] = (d, dims[i - 1], 3, 3)
            t[f'network.{idx}.proj.bias'] = (d,)
            idx += 1
        for j in range(depth):
            b = f'network.{idx}.{j}'
            ln(f'{b}.norm1', d)
            linear(f'{b}.attn.mlp_c', d, d, bias=False)
            for br in ('sfc_h', 'sfc_w'):
                t[f'{b}.attn.{br}.weight'] = (d, d, 1, 1)
                t[f'{b}.attn.{br}.bias'] = (d,)
                t[f'{b}.attn.{br}.offset'] = (1, 2 * d, 1, 1)
            linear(f'{b}.attn.reweight.fc1', d, d // 4)
            linear(f'{b}.attn.reweight.fc2', d // 4, 3 * d)
            linear(f'{b}.attn.proj', d, d)
            ln(f'{b}.norm2', d)
            linear(f'{b}.mlp.fc1', d, int(d * ratios[i]))
            linear(f'{b}.mlp.fc2', int(d * ratios[i]), d)
        idx += 1
    ln('norm', dims[-1])
    linear('head', dims[-1], num_classes)
    return t


def official_offset(channels, kernel_size):
    """The official CycleFC.gen_offset, transcribed: (1, 2C, 1, 1), (dy, dx) of channel i at
    2i, 2i + 1; start_idx = (kh * kw) // 2."""
    kh, kw = kernel_size
    offset = torch.empty(1, channels * 2, 1, 1)
    start_idx = (kh * kw) // 2
    for i in range(channels):
        if kh == 1:
            offset[0, 2 * i + 0, 0, 0] = 0
            offset[0, 2 * i + 1, 0, 0] = (i + start_idx) % kw - (kw // 2)
        else:
            offset[0, 2 * i + 0, 0, 0] = (i + start_idx) % kh - (kh // 2)
            offset[0, 2 * i + 1, 0, 0] = 0
    return offset


def official_state_dict(dims, depths, ratios, seed=1, num_classes=1000):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, s in official_state_shapes(dims, depths, ratios, num_classes).items():
        if k.endswith('.offset'):
            sd[k] = official_offset(s[1] // 2, (1, 3) if '.sfc_h.' in k else (3, 1))
        else:
            sd[k] = torch.randn(s, generator=g) * 0.1 + (1. if 'norm' in k else 0.)
    return sd


@pytest.fixture(scope='module')
def tiny():
    return family_classifier('cycle_mlp', num_classes=10)


def _map_size(n):  # stem 7/4 pad 2, then three 3/2 pad 1
    out = [(n + 4 - 7) // 4 + 1]
    for _ in range(3):
        out.append((out[-1] - 1) // 2 + 1)
    return out


# ---- parameter counts, names and shapes; official checkpoints ---------------------------------

@pytest.mark.parametrize('name', list(VARIANTS))
def test_parameter_count_and_official_state_dict(name):
    dims, depths, ratios = VARIANTS[name]
    expected = official_state_shapes(dims, depths, ratios)
    assert sum(math.prod(s) for k, s in expected.items() if not k.endswith('.offset')) \
        == OFFICIAL_PARAMS[name]
    with torch.device('meta'):  # shapes only: the big variants cost nothing to build
        model = timm.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[name]
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected


def test_official_state_dict_loads_strict_and_offsets_are_checked():
    dims, depths, ratios = VARIANTS['cycle_mlp_b1']
    sd = official_state_dict(dims, depths, ratios)
    model = timm.create_model('cycle_mlp_b1')
    result = model.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    # the DeiT-style training checkpoint; the published accuracies are of 'model' (main.py
    # --eval --resume loads checkpoint['model']), not of the EMA copy beside it
    ema = {k: v + 1 if v.is_floating_point() and not k.endswith('offset') else v
           for k, v in sd.items()}
    wrapped = {'model': sd, 'model_ema': ema, 'optimizer': {}, 'epoch': 299}
    got = cm.checkpoint_filter_fn(wrapped, model)
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)
    got = cm.checkpoint_filter_fn({'module.' + k: v for k, v in sd.items()}, model)
    assert got.keys() == sd.keys()
    # other offsets cannot be computed by the fixed cycle: refused, naming the key
    bad = dict(sd)
    key = 'network.4.1.attn.sfc_w.offset'
    bad[key] = bad[key].flip(1)
    with pytest.raises(RuntimeError, match=r'network\.4\.1\.attn\.sfc_w\.offset: .*other offsets'):
        model.load_state_dict(bad)


# ---- Cycle FC and the mixer against the formula ----------------------------------------------

def cycle_fc_formula(x, weight, bias, kernel_size):
    """The paper's Cycle FC, index by index, x (B, H, W, C_in) float64: output channel o at
    (y, x) = b_o + sum_i W[o, i] x[y + dy_i, x + dx_i, i], zero outside the map, with
    (dy_i, dx_i) = (0, (i + k // 2) mod k - k // 2) for kernel (1, k), swapped for (k, 1)."""
    B, H, W, C = x.shape
    kh, kw = kernel_size
    out = torch.zeros(B, H, W, weight.shape[0], dtype=x.dtype)
    for i in range(C):
        k = kw if kh == 1 else kh
        d = (i + k // 2) % k - k // 2
        dy, dx = (0, d) if kh == 1 else (d, 0)
        shifted = torch.zeros(B, H, W, dtype=x.dtype)
        for yy in range(H):
            for xx in range(W):
                if 0 <= yy + dy < H and 0 <= xx + dx < W:
                    shifted[:, yy, xx] = x[:, yy + dy, xx + dx, i]
        out += shifted[..., None] * weight[:, i, 0, 0]
    return out + bias


@pytest.mark.parametrize('kernel_size,size', [
    ((1, 3), (5, 7)), ((3, 1), (6, 4)), ((1, 3), (1, 1)), ((3, 1), (2, 1)), ((1, 5), (3, 4)),
    ((2, 1), (4, 3)), ((1, 1), (2, 2))])
def test_cycle_fc_is_the_formula(kernel_size, size):
    torch.manual_seed(0)
    fc = cm.CycleFC(11, 7, kernel_size).double()  # 11 channels: the cycle does not divide them
    x = torch.randn(2, *size, 11, dtype=torch.float64)
    want = cycle_fc_formula(x, fc.weight, fc.bias, kernel_size)
    torch.testing.assert_close(fc(x), want, rtol=1e-12, atol=1e-12)
    assert torch.equal(fc.offset, official_offset(11, kernel_size))


@pytest.mark.parametrize('kernel_size', [(1, 3), (3, 1)])
def test_cycle_fc_equals_the_official_deform_conv2d(kernel_size):
    """The official forward: deform_conv2d(x, offset.expand(B, -1, H, W), weight, bias)."""
    tv_ops = pytest.importorskip('torchvision.ops', reason='torchvision not installed')
    torch.manual_seed(0)
    fc = cm.CycleFC(20, 20, kernel_size).double()
    x = torch.randn(2, 9, 13, 20, dtype=torch.float64)
    nchw = x.permute(0, 3, 1, 2)
    offset = official_offset(20, kernel_size).double().expand(2, -1, 9, 13)
    want = tv_ops.deform_conv2d(nchw, offset, fc.weight, fc.bias).permute(0, 2, 3, 1)
    torch.testing.assert_close(fc(x), want, rtol=1e-12, atol=1e-12)


def mixer_formula(x, m):
    """CycleMLP's token mixer written out (official CycleMLP.forward) in float64."""
    B, H, W, C = x.shape
    h = cycle_fc_formula(x, m.sfc_h.weight, m.sfc_h.bias, (1, 3))
    w = cycle_fc_formula(x, m.sfc_w.weight, m.sfc_w.bias, (3, 1))
    c = x @ m.mlp_c.weight.T
    a = (h + w + c).mean(dim=(1, 2))
    a = F.gelu(a @ m.reweight.fc1.weight.T + m.reweight.fc1.bias)
    a = a @ m.reweight.fc2.weight.T + m.reweight.fc2.bias  # (B, 3C): branch k of channel i at 3i+k
    a = torch.softmax(torch.stack([a[:, k::3] for k in range(3)]), dim=0)
    mixed = h * a[0, :, None, None] + w * a[1, :, None, None] + c * a[2, :, None, None]
    return mixed @ m.proj.weight.T + m.proj.bias


@pytest.mark.parametrize('size', [(5, 7), (1, 1), (2, 9)])
def test_mixer_and_block_are_the_formula(size):
    torch.manual_seed(0)
    block = randomize_(cm.CycleBlock(20, mlp_ratio=2.)).double().eval()
    x = torch.randn(2, *size, 20, dtype=torch.float64)
    torch.testing.assert_close(block.attn(x), mixer_formula(x, block.attn), rtol=1e-10,
                               atol=1e-12)
    ln = lambda t, n: F.layer_norm(t, (20,), n.weight, n.bias, n.eps)  # noqa: E731
    y = x + mixer_formula(ln(x, block.norm1), block.attn)
    y = y + block.mlp.fc2(F.gelu(block.mlp.fc1(ln(y, block.norm2))))
    torch.testing.assert_close(block(x), y, rtol=1e-10, atol=1e-12)


def test_mixer_branches_are_three_activation_sized_kernels():
    """All three branches: one pad, one concatenation, one batched GEMM on the activations,
    whatever the channel count (no per-channel or per-offset loop of kernels)."""
    views = ('view', 'slice', 'transpose', 'permute', 'select', 't', 'expand', '_unsafe_view',
             'alias')

    def activation_sized(func, out):
        name = func.__name__.split('.')[0]
        big = isinstance(out, torch.Tensor) and out.numel() >= x.numel() and name not in views
        return [name] if big else []

    for dim in (20, 64):
        m = cm.CycleMixer(dim)
        x = torch.randn(2, 9, 11, dim)
        with torch.no_grad(), OpRecorder(activation_sized) as ops:
            y = m.branches(x)
        assert ops.ops == ['constant_pad_nd', 'cat', 'baddbmm'], ops.ops
        torch.testing.assert_close(y[0], m.sfc_h(x))
        torch.testing.assert_close(y[1], m.sfc_w(x))
        torch.testing.assert_close(y[2], m.mlp_c(x))


# ---- any input size, gradients ---------------------------------------------------------------

@pytest.mark.parametrize('size', [(97, 131), (3, 3), (5, 200), (64, 64)])
def test_any_input_size(tiny, size):
    with torch.no_grad():
        out = tiny(torch.randn(2, 3, *size))
        maps = tiny.forward_intermediates(torch.randn(1, 3, *size), intermediates_only=True)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert [tuple(m.shape[2:]) for m in maps] == list(zip(_map_size(size[0]),
                                                          _map_size(size[1])))


def test_too_small_input_is_refused(tiny):
    with pytest.raises(AssertionError, match='at least 3 x 3'):
        tiny(torch.randn(1, 3, 2, 40))


PUBLISHED_GFLOPS = {'cycle_mlp_b1': 2.1, 'cycle_mlp_b2': 3.9, 'cycle_mlp_b3': 6.9,
                    'cycle_mlp_b4': 10.1, 'cycle_mlp_b5': 12.3}


def test_flops_at_224_are_the_published_figures():
    """The official count (fvcore, main.py --flops): multiply-adds of convolutions and matrix
    products (Cycle FC as a 1x1 convolution, utils.sfc_flop_jit) plus fvcore's 5 per element of
    each LayerNorm; rounded to 0.1G it gives the README's figures. GEMMs by torch's
    FlopCounterMode on the meta device (the three branches' batched GEMM counts as three)."""
    from torch.utils.flop_counter import FlopCounterMode
    for name, published in PUBLISHED_GFLOPS.items():
        with torch.device('meta'):
            model = timm.create_model(name).eval()
            x = torch.empty(1, 3, 224, 224)
        norm_flops = []
        hooks = [m.register_forward_hook(lambda m, i, o: norm_flops.append(5 * i[0].numel()))
                 for m in model.modules() if isinstance(m, nn.LayerNorm)]
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(x)
        for h in hooks:
            h.remove()
        macs = counter.get_total_flops() / 2
        assert round((macs + sum(norm_flops)) / 1e9, 1) == published, (name, macs)


# ---- timm API ----------------------------------------------------------------------------------

def test_default_cfg_and_nhwc_features():
    model = timm.create_model('cycle_mlp_b2', num_classes=7).eval()
    cfg = model.pretrained_cfg
    assert cfg['url'].endswith('CycleMLP_B2.pth') and cfg['crop_pct'] == 0.9
    assert timm.create_model('cycle_mlp_b5', pretrained=False).pretrained_cfg['crop_pct'] == 0.875
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (1, 2, 3, 512)  # NHWC, as the official layout
        assert model.forward_head(feats, pre_logits=True).shape == (1, 512)
        torch.testing.assert_close(model.forward_head(feats), model(x))


def test_global_pool_and_mlp_ratios_validation():
    with pytest.raises(ValueError, match='global_pool'):
        cm.CycleMLPClassifier(global_pool='max', **TINY)
    # without pooling the head classifies every position of the (B, H, W, C) map
    per_position = cm.CycleMLPClassifier(num_classes=3, global_pool='', **TINY).eval()
    with torch.no_grad():
        y = per_position(torch.randn(1, 3, 48, 40))
        feats = per_position.forward_features(torch.randn(1, 3, 48, 40))
    assert y.shape == (1, 2, 2, 3) and feats.shape == (1, 2, 2, 40)
    with pytest.raises(ValueError, match='mlp_ratios'):
        cm.CycleMLPClassifier(embed_dims=(8, 16, 24), mlp_ratios=(4, 4), depths=(1, 1, 1))


def test_features_only_strides_4_to_32():
    model = timm.create_model('cycle_mlp_b1', features_only=True).eval()
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    assert model.feature_info.channels() == [64, 128, 320, 512]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 97, 131))
    assert [tuple(f.shape) for f in feats] == [
        (1, c, h, w) for c, h, w in zip((64, 128, 320, 512), _map_size(97), _map_size(131))]
    part = timm.create_model('cycle_mlp_b1', features_only=True, out_indices=(1, 3))
    assert part.feature_info.reduction() == [8, 32]


# ---- the MMDetection backbone and its configs ------------------------------------------------

mmdet = pytest.importorskip('mmdet', reason='the mmdet half needs mmdet installed')

# Whole detector, every parameter (COCO heads, 80 classes), measured; Table 3 of the PosMLP paper
# gives 36.5M / 48.1M (RetinaNet) and 46.5M / 58.0M (Mask R-CNN).
DETECTOR_PARAMS = {
    'retinanet_cycle_mlp_b2_1x.py': (36_540_372, 36.5e6),
    'retinanet_cycle_mlp_b3_1x.py': (48_123_588, 48.1e6),
    'mask_rcnn_cycle_mlp_b2_1x.py': (46_457_936, 46.5e6),
    'mask_rcnn_cycle_mlp_b3_1x.py': (58_041_152, 58.0e6),
}


@pytest.fixture(scope='module')
def mmdet_scope():
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')


def build(cfg):
    from mmdet.registry import MODELS
    return MODELS.build(cfg)


@pytest.mark.parametrize('name', sorted(DETECTOR_PARAMS))
def test_config_builds_within_table3_params(name, mmdet_scope):
    from mmdet_posmlp.analysis.complexity import build_detector, count_parameters
    model = build_detector(osp.join(CONFIGS, name))
    backbone = model.backbone
    assert type(backbone).__name__ == 'CycleMLP'
    assert list(model.neck.in_channels) == [backbone.num_features[i]
                                            for i in backbone.out_indices]
    assert [backbone.strides[i] for i in backbone.out_indices] == \
        ([8, 16, 32] if name.startswith('retinanet') else [4, 8, 16, 32])
    # the official dense-prediction form: a LayerNorm over the channels of every output
    for i in backbone.out_indices:
        norm = getattr(backbone, f'norm{i}')
        assert isinstance(norm, nn.LayerNorm) and norm.normalized_shape == (
            backbone.num_features[i],)
    cfg_init = backbone.init_cfg
    assert cfg_init['type'] == 'Pretrained' and cfg_init['checkpoint'] == \
        f"checkpoints/cycle_mlp_{name.split('_')[-2]}_in1k.pth"
    total = count_parameters(model)
    measured, paper = DETECTOR_PARAMS[name]
    assert total == measured
    assert abs(total - paper) < 0.3e6


SMALL = dict(embed_dims=(16, 24, 32, 40), depths=(1, 2, 1, 1), mlp_ratios=2)


def test_backbone_outputs_are_the_classifier_maps_through_layernorms(mmdet_scope, tmp_path):
    """Official weights (DeiT-style {'model': ...}, offsets included) load; the outputs are the
    classifier's stage maps, each through its LayerNorm over channels."""
    torch.manual_seed(0)
    classifier = randomize_(cm.CycleMLPClassifier(num_classes=7, **SMALL)).eval()
    path = str(tmp_path / 'CycleMLP_small.pth')
    torch.save({'model': classifier.state_dict(), 'optimizer': {}, 'epoch': 299}, path)
    model = build(dict(type='CycleMLP', arch=SMALL, out_indices=(1, 2, 3), drop_path_rate=0.,
                       init_cfg=dict(type='Pretrained', checkpoint=path)))
    model.init_weights()
    assert torch.equal(model.model.network[2][0].attn.sfc_h.weight,
                       classifier.network[2][0].attn.sfc_h.weight)
    assert len(model.model.network) == 7 and not hasattr(model, 'norm0')
    with torch.no_grad():
        for i in (1, 2, 3):
            norm = getattr(model, f'norm{i}')
            norm.weight.normal_()
            norm.bias.normal_()
        x = torch.randn(2, 3, 97, 131)
        outs = model.eval()(x)
        maps = classifier.forward_intermediates(x, indices=[1, 2, 3], intermediates_only=True)
    assert len(outs) == 3
    for i, out, m in zip((1, 2, 3), outs, maps):
        norm = getattr(model, f'norm{i}')
        want = F.layer_norm(m.permute(0, 2, 3, 1), norm.normalized_shape, norm.weight,
                            norm.bias, norm.eps).permute(0, 3, 1, 2)
        torch.testing.assert_close(out, want)
        assert out.is_contiguous()
    # frozen stages: the stem and stages 1..k (with their output norms) get no gradients
    frozen = build(dict(type='CycleMLP', arch=SMALL, frozen_stages=2)).train()
    sum(o.sum() for o in frozen(torch.randn(2, 3, 64, 64))).backward()
    for n, p in frozen.named_parameters():
        is_frozen = n.startswith(('model.patch_embed', 'model.network.0.', 'model.network.1.',
                                  'model.network.2.', 'norm0', 'norm1'))
        assert (p.grad is None) == is_frozen, n


def test_backbone_pretrained_takes_model_before_model_ema(mmdet_scope, tmp_path):
    """The official evaluation (main.py --eval --resume), which gave the published accuracies,
    loads checkpoint['model'], not the EMA copy DeiT's script saves beside it."""
    torch.manual_seed(0)
    classifier = randomize_(cm.CycleMLPClassifier(**SMALL))
    sd = classifier.state_dict()
    ema = {k: v + 1 if k.endswith('weight') else v for k, v in sd.items()}
    path = str(tmp_path / 'CycleMLP_small.pth')
    torch.save({'model': sd, 'model_ema': ema, 'epoch': 299}, path)
    model = build(dict(type='CycleMLP', arch=SMALL, drop_path_rate=0.))
    model.load_pretrained(path)
    assert torch.equal(model.model.patch_embed.proj.weight, sd['patch_embed.proj.weight'])


def test_bad_arguments_name_the_argument(mmdet_scope):
    with pytest.raises(ValueError, match='arch'):
        build(dict(type='CycleMLP', arch='b9'))
    with pytest.raises(ValueError, match='arch'):
        build(dict(type='CycleMLP', arch=dict(dims=(1, 2))))
    with pytest.raises(ValueError, match='out_indices'):
        build(dict(type='CycleMLP', arch=SMALL, out_indices=(4,)))


def _small_detector(name):
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(CONFIGS, name))
    m = cfg.model
    m.backbone.update(arch=SMALL, init_cfg=None, drop_path_rate=0.0)
    m.neck.in_channels = [SMALL['embed_dims'][i] for i in m.backbone.out_indices]
    small_heads_(m)
    return build(m)


@pytest.mark.parametrize('name', ['retinanet_cycle_mlp_b2_1x.py', 'mask_rcnn_cycle_mlp_b3_1x.py'])
def test_detector_training_step(name, mmdet_scope):
    """The real config (small backbone and heads) takes one optimizer step: finite losses,
    gradients on every backbone parameter, and the backbone's weights move."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.config import Config
    torch.manual_seed(0)
    model = _small_detector(name).train()
    wrapper = build_optim_wrapper(model, Config.fromfile(osp.join(CONFIGS, name)).optim_wrapper)
    before = model.backbone.model.network[2][0].attn.sfc_w.weight.detach().clone()
    data = model.data_preprocessor(detection_batch(name.startswith('mask')), True)
    losses = model.loss(data['inputs'], data['data_samples'])
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total) and total > 0
    wrapper.backward(total)
    for n, p in model.backbone.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    wrapper.step()
    assert not torch.equal(before, model.backbone.model.network[2][0].attn.sfc_w.weight)
    # the output norms are nn.LayerNorm subclasses: the recipe's norm_decay_mult exempts them
    decay = {id(p): g['weight_decay'] for g in wrapper.optimizer.param_groups for p in g['params']}
    norm = getattr(model.backbone, f'norm{model.backbone.out_indices[0]}')
    assert decay[id(norm.weight)] == 0
    assert decay[id(model.backbone.model.network[2][0].attn.proj.weight)] == 0.05


# ---- Table 3's parameter column --------------------------------------------------------------

def test_table3_rows_are_the_paper_table():
    from mmdet_posmlp.analysis.table3 import ROWS, resolve_config
    assert len(ROWS) == 16 and len({(r.backbone, r.detector) for r in ROWS}) == 16
    paper = {r.backbone: {} for r in ROWS}
    for r in ROWS:
        paper[r.backbone][r.detector] = r.paper
        assert osp.isfile(resolve_config(r.config)), r.config
    assert paper == {
        'ResNet-50': {'Mask R-CNN': 44.2, 'RetinaNet': 37.7},
        'PVT-Small': {'Mask R-CNN': 44.1, 'RetinaNet': 34.2},
        'CycleMLP-B2': {'Mask R-CNN': 46.5, 'RetinaNet': 36.5},
        'PosMLP-T': {'Mask R-CNN': 40.5, 'RetinaNet': 31.1},
        'ResNet-101': {'Mask R-CNN': 63.2, 'RetinaNet': 56.7},
        'PVT-Medium': {'Mask R-CNN': 63.9, 'RetinaNet': 53.9},
        'CycleMLP-B3': {'Mask R-CNN': 58.0, 'RetinaNet': 48.1},
        'PosMLP-S': {'Mask R-CNN': 56.1, 'RetinaNet': 47.3},
    }
    # only the PVT Mask R-CNN rows have no mmdet config of their own, and say so
    assert [r.backbone for r in ROWS if r.note] == ['PVT-Small', 'PVT-Medium']
    with pytest.raises(FileNotFoundError, match=r"'mmdet::pvt/mask-rcnn_pvt-s\.py' not found"):
        resolve_config('mmdet::pvt/mask-rcnn_pvt-s.py')


def test_table3_measured_within_0_3m_of_the_paper(mmdet_scope):
    """Every detector of the table, built from its config: the trainable parameters (the
    paper's count: mmdet's ResNet configs freeze the stem and stage 1) within 0.3M."""
    from mmdet_posmlp.analysis.table3 import ROWS, format_table, measure
    results = measure(ROWS)
    for r in results:
        row = r['row']
        assert abs(r['trainable'] - row.paper * 1e6) < 0.3e6, (row, r['trainable'])
        frozen = r['total'] - r['trainable']
        if row.backbone.startswith('ResNet'):  # stem and stage 1: 0.23M, frozen
            assert 0.2e6 < frozen < 0.25e6 and abs(r['total'] - row.paper * 1e6) > 0.15e6
        else:
            assert frozen == 0
    by = {(r['row'].backbone, r['row'].detector): r for r in results}
    assert by[('CycleMLP-B2', 'RetinaNet')]['total'] == DETECTOR_PARAMS[
        'retinanet_cycle_mlp_b2_1x.py'][0]
    # the swapped PVT Mask R-CNN: the PVT-Small backbone exactly as in its RetinaNet
    assert by[('PVT-Small', 'Mask R-CNN')]['backbone'] == by[('PVT-Small', 'RetinaNet')]['backbone']
    text = format_table(results)
    assert text.count('\n| ') == 16 and '[2] mask-rcnn_r50_fpn_1x_coco.py with the backbone of ' \
        'retinanet_pvt-m_fpn_1x_coco.py' in text


def test_table3_tool_prints_the_selected_rows(capsys, mmdet_scope):
    import runpy
    tool = runpy.run_path(osp.join(REPO, 'tools', 'analysis', 'table3_params.py'))
    assert tool['main'](['--only', 'cycle_mlp', 'CycleMLP-B2']) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith('| backbone | detector | params (M) | trainable (M) | paper (M)')
    assert out[2:] == [
        '| CycleMLP-B2 | Mask R-CNN | 46.46 | 46.46 | 46.5 | -0.04 | '
        'mmdet_posmlp::mask_rcnn_cycle_mlp_b2_1x.py |',
        '| CycleMLP-B2 | RetinaNet | 36.54 | 36.54 | 36.5 | +0.04 | '
        'mmdet_posmlp::retinanet_cycle_mlp_b2_1x.py |']
    with pytest.raises(SystemExit):
        tool['main'](['--only', 'ConvNeXt'])
    assert 'matches no row' in capsys.readouterr().err


# ---- ONNX export of the backbone ---------------------------------------------------------------

@pytest.mark.parametrize('dynamic', [False, True], ids=['static', 'dynamic'])
def test_backbone_onnx_matches_pytorch(mmdet_scope, tmp_path, dynamic):
    """The project's export (mmdet_posmlp.deployment: export, then its check against PyTorch)
    of the CycleMLP backbone at an odd size, and onnxruntime on its own against PyTorch; a
    dynamic export at another size of its rule too (the network's stride, 32: no windows)."""
    pytest.importorskip('onnxruntime')
    onnx = pytest.importorskip('onnx')
    from mmdet_posmlp import deployment as D
    torch.manual_seed(0)
    backbone = build(dict(type='CycleMLP', arch=SMALL, out_indices=(0, 1, 2, 3),
                          drop_path_rate=0.))
    randomize_(backbone).eval()
    size = (97, 131)
    out = str(tmp_path / 'cycle_mlp.onnx')
    report = D.export_onnx(backbone, out, size=size, dynamic=dynamic)
    assert report.max_rel_diff < D.TOLERANCE and report.input_effect > D.MIN_INPUT_EFFECT
    session = D.onnx_session(out)
    if dynamic:
        rule = D.read_metadata(session)['rule']
        assert rule.period == 32 and rule.accepts(*size)
        size = rule.next_size(*size)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        want = backbone(x)
    got = D.run_onnx(session, x)
    assert [tuple(g.shape) for g in got] == [tuple(w.shape) for w in want]
    for g, w in zip(got, want):
        assert ((g.double() - w.double()).abs().max() / w.double().abs().max()) < D.TOLERANCE
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert not any('Deform' in op for op in ops), ops  # Cycle FC: a pad, slices and a GEMM
