"""Hire-MLP (mmdet_posmlp/models/hire_mlp.py): official parameter names, shapes and counts, the
mixer against a plain float64 transcription of the published formula, any input size, and
timm's model API."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

timm = pytest.importorskip('timm')

from mmdet_posmlp.models import hire_mlp as hm  # noqa: E402  (registers hire_mlp_* with timm)

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


def randomize_(model, seed=0):
    """Move BN statistics and affine terms and all biases away from their initial values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if 'norm' in name or name.endswith('bias'):
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
        for name, b in model.named_buffers():
            if name.endswith('running_mean'):
                b.copy_(torch.randn(b.shape, generator=g, dtype=b.dtype) * 0.1)
            elif name.endswith('running_var'):
                b.copy_(torch.rand(b.shape, generator=g, dtype=b.dtype) + 0.5)
    return model


@pytest.fixture(scope='module')
def tiny():
    torch.manual_seed(0)
    return randomize_(timm.create_model('hire_mlp_tiny')).eval()


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

@pytest.mark.parametrize('size', [(224, 224), (160, 96)])
def test_forward_backward(size):
    torch.manual_seed(4)
    model = hm.HireMLPClassifier(num_classes=10, drop_path_rate=0.1).train()
    out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


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

def test_timm_registration_and_default_cfg():
    for name in VARIANTS:
        assert name in timm.list_models('hire_mlp*')
    model = timm.create_model('hire_mlp_tiny', num_classes=7)
    assert isinstance(model, hm.HireMLPClassifier) and model.num_classes == 7
    cfg = model.pretrained_cfg
    for key in ('url', 'num_classes', 'input_size', 'pool_size', 'crop_pct', 'interpolation',
                'mean', 'std', 'first_conv', 'classifier'):
        assert key in cfg, key
    modules = dict(model.named_modules())
    assert isinstance(modules[cfg['first_conv']], nn.Conv2d)
    assert modules[cfg['first_conv']].in_channels == 3
    assert modules[cfg['classifier']] is model.get_classifier()
    assert model.num_features == model.head_hidden_size == 512
    assert [(f['num_chs'], f['reduction'], f['module']) for f in model.feature_info] == [
        (64, 4, 'network.0'), (128, 8, 'network.2'), (320, 16, 'network.4'),
        (512, 32, 'network.6')]
    assert model.no_weight_decay() == set()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert model.eval().forward_features(x).shape == (1, 512, 2, 2)
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


def test_forward_intermediates(tiny):
    x = torch.randn(2, 3, 70, 45)
    with torch.no_grad():
        final, inter = tiny.forward_intermediates(x)
        assert torch.equal(final, tiny.forward_features(x))
        assert [f.shape[1] for f in inter] == [64, 128, 320, 512]
        assert [tuple(f.shape[2:]) for f in inter] == list(zip(_map_size(70), _map_size(45)))

        last2 = tiny.forward_intermediates(x, indices=2, intermediates_only=True)
        assert len(last2) == 2 and torch.equal(last2[0], inter[2]) and torch.equal(last2[1], inter[3])
        normed = tiny.forward_intermediates(x, indices=[0, 3], norm=True, intermediates_only=True)
        assert torch.equal(normed[0], inter[0]) and torch.equal(normed[1], final)

        early, sel = tiny.forward_intermediates(x, indices=[1], stop_early=True)
        assert torch.equal(early, inter[1]) and torch.equal(sel[0], inter[1])
        nhwc = tiny.forward_intermediates(x, indices=[0, -1], output_fmt='NHWC',
                                          intermediates_only=True)
        assert torch.equal(nhwc[0], inter[0].permute(0, 2, 3, 1))
        assert torch.equal(nhwc[1], inter[3].permute(0, 2, 3, 1))
    with pytest.raises(ValueError):
        tiny.forward_intermediates(x, output_fmt='NLC')


def test_prune_intermediate_layers(tiny):
    import copy
    model = copy.deepcopy(tiny)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = tiny.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        assert model.prune_intermediate_layers([0, 1]) == [0, 1]
        assert len(model.network) == 3 and isinstance(model.norm, nn.Identity)
        assert model.num_classes == 0 and isinstance(model.head, nn.Identity)
        got = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(got, want))
        assert torch.equal(model(x), want[1])  # no pooling, no norm: the stage-2 map

    full = copy.deepcopy(tiny)
    assert full.prune_intermediate_layers(indices=1, prune_norm=False, prune_head=False) == [3]
    assert len(full.network) == 7 and isinstance(full.norm, nn.BatchNorm2d)
    assert full.num_classes == 1000
    full.prune_intermediate_layers(indices=1, prune_norm=True, prune_head=True)
    assert isinstance(full.norm, nn.Identity) and full.num_classes == 0

    # dropping the last stages drops norm and head even when asked to keep them (sized for the
    # old end); negative indices then count from the last kept stage, as in timm
    cut = copy.deepcopy(tiny)
    assert cut.prune_intermediate_layers([2], prune_norm=False, prune_head=False) == [2]
    assert cut.num_features == 320 and cut.num_classes == 0 and isinstance(cut.norm, nn.Identity)
    with torch.no_grad():
        last = cut.forward_intermediates(x, indices=1, intermediates_only=True)
        assert len(last) == 1 and torch.equal(last[0], tiny.forward_intermediates(
            x, indices=[2], intermediates_only=True)[0])


def test_grad_checkpointing_same_results_and_recomputes():
    torch.manual_seed(5)
    model = randomize_(hm.HireMLPClassifier(num_classes=4)).train()
    x = torch.randn(2, 3, 40, 56)
    runs = []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad()
        calls = []
        hook = model.network[4][0].attn.register_forward_hook(lambda *a: calls.append(1))
        state = {k: v.clone() for k, v in model.state_dict().items()}
        out = model(x)
        out.square().sum().backward()
        hook.remove()
        model.load_state_dict(state)  # undo the BN statistics updates
        runs.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()},
                     len(calls)))
    (o0, g0, c0), (o1, g1, c1) = runs
    assert c0 == 1 and c1 == 2  # with checkpointing the block runs again during backward
    torch.testing.assert_close(o1, o0, rtol=0, atol=0)
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-5, atol=1e-6, msg=n)


def test_group_matcher():
    from timm.models import group_parameters
    model = hm.HireMLPClassifier(depths=(1, 2, 1, 1))
    names = [n for n, _ in model.named_parameters()]
    for coarse in (False, True):
        groups = group_parameters(model, model.group_matcher(coarse=coarse))
        assert sorted(n for g in groups.values() for n in g) == sorted(names)
        order = [n for g in groups.values() for n in g]
        first = [min(order.index(n) for n in names if n.startswith(f'network.{i}.'))
                 for i in range(7)]
        assert first == sorted(first)  # groups run from the stem to the head
        assert all(n.startswith('patch_embed') for n in groups[0])
    # stem, 5 blocks, 3 downsamples, head; the final norm joins the last block (timm's 99999)
    groups = group_parameters(model, model.group_matcher())
    assert len(groups) == 1 + 5 + 3 + 1
    assert 'norm.weight' in groups[8] and 'network.6.0.norm1.weight' in groups[8]


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


@pytest.mark.filterwarnings('ignore:`torch.jit.script` is deprecated:FutureWarning')
def test_torchscript(tiny):
    scripted = torch.jit.script(tiny)
    x = torch.randn(1, 3, 45, 38)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), tiny(x))


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
