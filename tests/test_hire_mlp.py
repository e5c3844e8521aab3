"""Hire-MLP (mmdet_posmlp/models/hire_mlp.py): official parameter names, shapes and counts, the
mixer against a plain float64 transcription of the published formula, any input size, and what
is Hire-MLP's own in timm's model API (the checks every family shares are in test_timm_api.py)."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

timm = pytest.importorskip('timm')

from mmdet_posmlp.models import hire_mlp as hm  # noqa: E402  (registers hire_mlp_* with timm)
from conftest import hire_tiny, randomize_  # noqa: E402

VARIANTS = {  # the four official settings (mlp_based/hire_mlp.py); pixel etc. are shared
    'hire_mlp_tiny': ((64, 128, 320, 512), (2, 2, 4, 2)),
    'hire_mlp_small': ((64, 128, 320, 512), (3, 4, 10, 3)),
    'hire_mlp_base': ((64, 128, 320, 512), (4, 6, 24, 3)),
    'hire_mlp_large': ((96, 192, 384, 768), (4, 6, 24, 3)),
}
PIXEL, STEP_STRIDE, STEP_DILATION = (4, 3, 3, 2), (2, 2, 3, 2), (2, 2, 1, 1)

# Counted from the official architecture by arithmetic (official_state_shapes below, and an
# independent closed-form count per block: 4d (two BN) + 2 (2 d p d/2 + d + d p) + 2 (d^2 + d)
# + (d d/4 + d/4 + 3 d d/4 + 3d) + (8 d^2 + 5d), stem 147 d0 + 3 d0, downsamples 9 d_in d_out +
# 3 d_out, final BN and 1000-way head). Published: 18M / 33M / 58M / 96M.
EXPECTED_PARAMS = {
    'hire_mlp_tiny': 18_041_672,
    'hire_mlp_small': 33_113_848,
    'hire_mlp_base': 58_226_856,
    'hire_mlp_large': 95_723_944,
}
PUBLISHED_GMACS = {'hire_mlp_tiny': 2.1, 'hire_mlp_small': 4.2, 'hire_mlp_base': 8.1,
                   'hire_mlp_large': 13.5}


def official_state_shapes(dims, depths, num_classes=1000, in_chans=3, mlp_ratio=4):
    """The official HireMLPNet's state-dict names and shapes, enumerated from its source:
    patch_embed.{proj,norm}; network = [blocks, Downsample, blocks, ...] (7 entries); each
    HireBlock has norm1, attn.{mlp_h1 (no bias), mlp_h1_norm, mlp_h2, mlp_w1 (no bias),
    mlp_w1_norm, mlp_w2, mlp_c, reweight.fc1, reweight.fc2, proj}, norm2, mlp.{fc1, fc2};
    then norm and head."""
    t = {}

    def conv(name, cin, cout, k=1, bias=True):
        t[f'{name}.weight'] = (cout, cin, k, k)
        if bias:
            t[f'{name}.bias'] = (cout,)

    def bn(name, c):
        for s in ('weight', 'bias', 'running_mean', 'running_var'):
            t[f'{name}.{s}'] = (c,)
        t[f'{name}.num_batches_tracked'] = ()

    conv('patch_embed.proj', in_chans, dims[0], 7)
    bn('patch_embed.norm', dims[0])
    idx = 0
    for i, (d, depth) in enumerate(zip(dims, depths)):
        if i > 0:
            conv(f'network.{idx}.proj', dims[i - 1], d, 3)
            bn(f'network.{idx}.norm', d)
            idx += 1
        p = PIXEL[i]
        for j in range(depth):
            b = f'network.{idx}.{j}'
            bn(f'{b}.norm1', d)
            for br in ('h', 'w'):
                conv(f'{b}.attn.mlp_{br}1', d * p, d // 2, bias=False)
                bn(f'{b}.attn.mlp_{br}1_norm', d // 2)
                conv(f'{b}.attn.mlp_{br}2', d // 2, d * p)
            conv(f'{b}.attn.mlp_c', d, d)
            conv(f'{b}.attn.reweight.fc1', d, d // 4)
            conv(f'{b}.attn.reweight.fc2', d // 4, 3 * d)
            conv(f'{b}.attn.proj', d, d)
            bn(f'{b}.norm2', d)
            conv(f'{b}.mlp.fc1', d, d * mlp_ratio)
            conv(f'{b}.mlp.fc2', d * mlp_ratio, d)
        idx += 1
    bn('norm', dims[-1])
    t['head.weight'] = (num_classes, dims[-1])
    t['head.bias'] = (num_classes,)
    return t


def _is_buffer(name):
    return name.endswith(('running_mean', 'running_var', 'num_batches_tracked'))


@pytest.fixture(scope='module')
def tiny():
    return hire_tiny()


# ---- 1, 2: parameter counts, names and shapes --------------------------------------------------

@pytest.mark.parametrize('name', list(VARIANTS))
def test_parameter_count_and_official_state_dict(name):
    dims, depths = VARIANTS[name]
    expected = official_state_shapes(dims, depths)
    assert sum(math.prod(s) for k, s in expected.items() if not _is_buffer(k)) \
        == EXPECTED_PARAMS[name]

    with torch.device('meta'):  # shapes only: the big variants cost nothing to build
        model = hm.HireMLPClassifier(embed_dims=dims, depths=depths)
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMS[name]
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected


def test_official_state_dict_loads_strict():
    dims, depths = VARIANTS['hire_mlp_tiny']
    g = torch.Generator().manual_seed(1)
    sd = {k: (torch.tensor(7) if k.endswith('num_batches_tracked')
              else torch.rand(s, generator=g) + 0.5)
          for k, s in official_state_shapes(dims, depths).items()}
    model = hm.HireMLPClassifier(embed_dims=dims, depths=depths)
    result = model.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    # the official training checkpoint wraps the weights: {'model': state_dict, 'epoch': ...}
    assert hm.checkpoint_filter_fn({'model': sd, 'epoch': 299}, model).keys() == sd.keys()


# ---- 3: the mixer against the formula ------------------------------------------------------

def _conv1x1(x, weight, bias=None):
    y = torch.einsum('oi,bihw->bohw', weight[:, :, 0, 0], x)
    return y if bias is None else y + bias[None, :, None, None]


def _bn_eval(x, sd, name, eps=1e-5):
    scale = sd[f'{name}.weight'] / torch.sqrt(sd[f'{name}.running_var'] + eps)
    return (x - sd[f'{name}.running_mean'][None, :, None, None]) * scale[None, :, None, None] \
        + sd[f'{name}.bias'][None, :, None, None]


def reference_mixer(x, sd, pixel, step):
    """Hire-MLP token mixing written out index by index (eval-mode BN), in float64."""
    B, C, H, W = x.shape
    p = pixel

    def branch(t, size, axis, tag):
        # work on axis 2 only; the width branch transposes in and out
        if axis == 3:
            t = t.transpose(2, 3)
        regions = -(-size // p)
        # cross-region shift then circular padding: padded row r is original row (r - step) mod size
        src = torch.tensor([(r - step) % size for r in range(regions * p)])
        padded = t[:, :, src]
        other = padded.shape[3]
        folded = torch.zeros(B, C * p, regions, other, dtype=t.dtype)
        for q in range(regions):
            for i in range(p):
                folded[:, i::p, q] = padded[:, :, q * p + i]  # channel c*p + i <- row q*p + i
        y = _conv1x1(folded, sd[f'mlp_{tag}1.weight'])
        y = torch.relu(_bn_eval(y, sd, f'mlp_{tag}1_norm'))
        y = _conv1x1(y, sd[f'mlp_{tag}2.weight'], sd[f'mlp_{tag}2.bias'])
        unfolded = torch.zeros(B, C, regions * p, other, dtype=t.dtype)
        for q in range(regions):
            for i in range(p):
                unfolded[:, :, q * p + i] = y[:, i::p, q]
        cropped = unfolded[:, :, :size]
        back = cropped[:, :, torch.tensor([(j + step) % size for j in range(size)])]
        return back.transpose(2, 3) if axis == 3 else back

    h = branch(x, H, 2, 'h')
    w = branch(x, W, 3, 'w')
    c = _conv1x1(x, sd['mlp_c.weight'], sd['mlp_c.bias'])
    m = (h + w + c).mean(dim=(2, 3))
    z = F.gelu(m @ sd['reweight.fc1.weight'][:, :, 0, 0].T + sd['reweight.fc1.bias'])
    z = z @ sd['reweight.fc2.weight'][:, :, 0, 0].T + sd['reweight.fc2.bias']  # (B, 3C)
    a = torch.softmax(torch.stack([z[:, k::3] for k in range(3)]), dim=0)  # branch k: 3c + k
    mixed = h * a[0, :, :, None, None] + w * a[1, :, :, None, None] + c * a[2, :, :, None, None]
    return _conv1x1(mixed, sd['proj.weight'], sd['proj.bias'])


# odd sizes, non-zero shifts, sizes below the region (1 row with pixel 3 or 4 wraps more than
# once, where the official F.pad('circular') would refuse) and shifts beyond the size
MIXER_CASES = [(7, 5), (5, 11), (1, 2), (3, 1), (9, 6)]


def test_every_tiny_mixer_matches_the_formula(tiny):
    mixers = [(n, m) for n, m in tiny.named_modules() if isinstance(m, hm.HireMLPMixer)]
    assert len(mixers) == 10
    assert [(m.pixel, m.step) for _, m in mixers] == [
        (4, 0), (4, 2), (3, 0), (3, 2), (3, 0), (3, 1), (3, 2), (3, 0), (2, 0), (2, 1)]
    g = torch.Generator().manual_seed(2)
    for k, (name, mixer) in enumerate(mixers):
        mixer = mixer.double().eval()
        sd = {n: v.double() for n, v in mixer.state_dict().items()}
        H, W = MIXER_CASES[k % len(MIXER_CASES)]
        x = torch.randn(2, mixer.dim, H, W, generator=g, dtype=torch.float64)
        with torch.no_grad():
            got = mixer(x)
        want = reference_mixer(x, sd, mixer.pixel, mixer.step)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10, msg=name)
        mixer.float()


@pytest.mark.parametrize('pixel,step,H,W', [(4, 2, 7, 5), (3, 1, 2, 13), (2, 5, 3, 3),
                                             (3, 4, 1, 1), (4, 0, 6, 9)])
def test_mixer_formula_other_settings(pixel, step, H, W):
    torch.manual_seed(3)
    mixer = randomize_(hm.HireMLPMixer(16, pixel=pixel, step=step)).double().eval()
    sd = {n: v for n, v in mixer.state_dict().items()}
    x = torch.randn(2, 16, H, W, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(mixer(x), reference_mixer(x, sd, pixel, step),
                                   rtol=0, atol=1e-10)


def test_circular_pad_matches_torch_and_extends_it():
    x = torch.randn(2, 3, 5, 4)
    for pad in range(0, 5):
        torch.testing.assert_close(hm.circular_pad_end(x, pad, 2),
                                   F.pad(x, (0, 0, 0, pad), mode='circular'))
        torch.testing.assert_close(hm.circular_pad_end(x, pad, 3),
                                   F.pad(x, (0, pad, 0, 0), mode='circular'))
    long = hm.circular_pad_end(x, 12, 2)  # wraps more than once
    assert torch.equal(long, x[:, :, torch.arange(17) % 5])


# ---- 4: forward / backward, any size -----------------------------------------------------------

def _map_size(n):
    n = (n - 3) // 4 + 1  # stem: 7x7, stride 4, pad 2
    sizes = [n]
    for _ in range(3):
        n = (n - 1) // 2 + 1  # 3x3, stride 2, pad 1
        sizes.append(n)
    return sizes


@pytest.mark.parametrize('size', [(33, 47), (64, 96), (97, 61), (3, 3), (5, 130)])
def test_any_input_size(tiny, size):
    with torch.no_grad():
        feats = tiny.forward_stages(torch.randn(1, 3, *size))
        out = tiny(torch.randn(1, 3, *size))
    hs, ws = _map_size(size[0]), _map_size(size[1])
    assert [tuple(f.shape[1:]) for f in feats] == [
        (c, h, w) for c, h, w in zip((64, 128, 320, 512), hs, ws)]
    assert all(torch.isfinite(f).all() for f in feats) and out.shape == (1, 1000)
    if size == (3, 3):
        assert hs == [1, 1, 1, 1]  # every stage 1 pixel high: regions wrap on themselves


def test_one_pixel_stages_train_and_too_small_input():
    model = hm.HireMLPClassifier(num_classes=5).train()
    out = model(torch.randn(2, 3, 3, 40))  # stages 1 pixel high, BN needs batch > 1 there
    out.sum().backward()
    assert torch.isfinite(out).all()
    with pytest.raises(AssertionError, match='at least 3 x 3'):
        model.eval()(torch.randn(1, 3, 2, 40))


# ---- 5: timm API -------------------------------------------------------------------------------

def test_default_cfg_and_in_chans():
    model = timm.create_model('hire_mlp_tiny', num_classes=7).eval()
    assert isinstance(model, hm.HireMLPClassifier)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert model.forward_features(x).shape == (1, 512, 2, 2)
        feats = model.forward_head(model.forward_features(x), pre_logits=True)
    assert feats.shape == (1, 512)
    gray = timm.create_model('hire_mlp_tiny', in_chans=1, num_classes=0).eval()
    with torch.no_grad():
        assert gray(torch.randn(1, 1, 40, 40)).shape == (1, 512)


def test_global_pool_validation_and_reset_classifier(tiny):
    with pytest.raises(ValueError, match='global_pool'):
        hm.HireMLPClassifier(global_pool='token')
    with pytest.raises(ValueError, match='num_classes=0'):
        hm.HireMLPClassifier(global_pool='')
    model = hm.HireMLPClassifier(num_classes=3, global_pool='max').eval()
    x = torch.randn(1, 3, 48, 40)
    model.reset_classifier(10)
    assert model.global_pool.pool_type == 'max' and model(x).shape == (1, 10)
    model.reset_classifier(0, '')
    assert model(x).shape == (1, 512, 2, 2) and isinstance(model.get_classifier(), nn.Identity)
    with pytest.raises(ValueError, match='global_pool'):
        model.reset_classifier(5, 'catavgmax')


def test_features_only():
    model = timm.create_model('hire_mlp_tiny', features_only=True, out_indices=(1, 3)).eval()
    assert model.feature_info.channels() == [128, 512]
    assert model.feature_info.reduction() == [8, 32]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [(1, 128, 8, 12), (1, 512, 2, 3)]


def test_fx_feature_extraction(tiny):
    from timm.models import create_feature_extractor
    extractor = create_feature_extractor(tiny, return_nodes={'network.2': 'c3', 'norm': 'out'})
    x = torch.randn(1, 3, 50, 70)
    with torch.no_grad():
        got = extractor(x)
        inter = tiny.forward_intermediates(x, indices=[1], intermediates_only=True)
        torch.testing.assert_close(got['c3'], inter[0])
        torch.testing.assert_close(got['out'], tiny.forward_features(x))
    fx_model = timm.create_model('hire_mlp_tiny', features_only=True, feature_cls='fx')
    assert fx_model.feature_info.channels() == [64, 128, 320, 512]
    wanted = fx_model.state_dict().keys()
    fx_model.load_state_dict({f'graph_module.{k}': v for k, v in tiny.state_dict().items()
                              if f'graph_module.{k}' in wanted})
    with torch.no_grad():
        feats = fx_model.eval()(x)
        for a, b in zip(feats, tiny.forward_stages(x)):
            torch.testing.assert_close(a, b)


# ---- 6: FLOPs ----------------------------------------------------------------------------------

def hire_mlp_gmacs(img_size=(224, 224)):
    """Multiply-accumulates (FLOPs / 2, as the papers count them) of each variant, in G, by
    torch's FlopCounterMode on the meta device: convolutions and matrix products only (BN,
    activations, softmax, means and rearrangements uncounted, as in the published figures)."""
    from torch.utils.flop_counter import FlopCounterMode
    out = {}
    for name, arch in hm.ARCH_SETTINGS.items():
        with torch.device('meta'):
            model = hm.HireMLPClassifier(**arch).eval()
            x = torch.empty(1, 3, *img_size)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(x)
        out['hire_mlp_' + name] = counter.get_total_flops() / 2 / 1e9
    return out


def test_flops(capsys):
    macs = hire_mlp_gmacs()
    with capsys.disabled():
        print('\nHire-MLP GMACs at 224x224 (measured / published): ' + ', '.join(
            f'{n}: {macs[n]:.2f} / {PUBLISHED_GMACS[n]}' for n in macs))
    for name, published in PUBLISHED_GMACS.items():
        assert abs(macs[name] - published) / published < 0.05, (name, macs[name])
