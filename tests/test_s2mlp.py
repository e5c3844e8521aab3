"""S2-MLP (spatial-shift MLP): the shift of Algorithm 1, the block formula, settings against the
published figures, any input size, and timm's model API."""
import math

import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from mmdet_posmlp.models.s2mlp import S2MLPBlock, S2MLPClassifier, SpatialShift, spatial_shift

PUBLISHED = {'s2mlp_deep': (51e6, 9.7e9), 's2mlp_wide': (71e6, 14e9)}

TINY = dict(patch_size=4, embed_dim=32, depth=3, mlp_ratio=2., num_classes=5)


def tiny(dtype=torch.float64, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = S2MLPClassifier(**{**TINY, **kwargs}).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


def meta_model(variant, **kwargs):
    with torch.device('meta'):
        return timm.create_model(variant, **kwargs)


# ---- Algorithm 1 ------------------------------------------------------------------------

def algorithm1(x: torch.Tensor) -> torch.Tensor:
    """The paper's pseudo-code on T (w x h x c), as explicit index copies on an NHWC map: each
    group is copied one step from its neighbour; the row/column it vacates is left as it was."""
    B, H, W, C = x.shape
    out = x.clone()
    q = C // 4
    for i in range(1, W):                       # T[1:, :, :c/4] = T[:w-1, :, :c/4]
        out[:, :, i, :q] = x[:, :, i - 1, :q]
    for i in range(W - 1):                      # T[:w-1, :, c/4:c/2] = T[1:, :, c/4:c/2]
        out[:, :, i, q:2 * q] = x[:, :, i + 1, q:2 * q]
    for j in range(1, H):                       # T[:, 1:, c/2:3c/4] = T[:, :h-1, c/2:3c/4]
        out[:, j, :, 2 * q:3 * q] = x[:, j - 1, :, 2 * q:3 * q]
    for j in range(H - 1):                      # T[:, :h-1, 3c/4:] = T[:, 1:, 3c/4:]
        out[:, j, :, 3 * q:] = x[:, j + 1, :, 3 * q:]
    return out


@pytest.mark.parametrize('shape', [(2, 5, 7, 8), (1, 1, 3, 12), (1, 6, 1, 4), (1, 9, 4, 16)])
def test_shift_is_algorithm_1(shape):
    x = torch.randn(*shape, dtype=torch.float64)
    y = spatial_shift(x)
    assert torch.equal(y, algorithm1(x))
    assert torch.equal(SpatialShift()(x), y)
    q = shape[-1] // 4
    # the border keeps its old value: a copy, not a wrap-around and not zeros
    assert torch.equal(y[:, :, 0, :q], x[:, :, 0, :q])
    assert torch.equal(y[:, :, -1, q:2 * q], x[:, :, -1, q:2 * q])
    assert torch.equal(y[:, 0, :, 2 * q:3 * q], x[:, 0, :, 2 * q:3 * q])
    assert torch.equal(y[:, -1, :, 3 * q:], x[:, -1, :, 3 * q:])
    if shape[2] > 1:
        assert not torch.equal(y, torch.roll(x, 1, dims=2))


def test_block_is_the_published_formula():
    torch.manual_seed(1)
    blk = S2MLPBlock(16, mlp_ratio=3.).double().eval()
    for p in blk.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 5, 6, 16, dtype=torch.float64)

    def ln(t, norm):
        mu = t.mean(-1, keepdim=True)
        var = ((t - mu) ** 2).mean(-1, keepdim=True)
        return (t - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias

    def gelu(t):
        return 0.5 * t * (1 + torch.erf(t / math.sqrt(2)))

    def fc(t, lin):
        return t @ lin.weight.t() + lin.bias

    m = blk.shift_mlp
    y = x + fc(algorithm1(gelu(fc(ln(x, blk.norm1), m.fc1))), m.fc2)
    y = y + fc(gelu(fc(ln(y, blk.norm2), blk.mlp.fc1)), blk.mlp.fc2)
    torch.testing.assert_close(blk(x), y, rtol=0, atol=1e-10)
    assert blk.mlp.fc1.out_features == 48  # ratio r


# ---- settings -------------------------------------------------------------------------------

def test_parameter_counts_against_published():
    lines = []
    for variant, (published, _) in PUBLISHED.items():
        n = sum(p.numel() for p in meta_model(variant).parameters())
        lines.append(f'{variant}: {n:,} parameters (published {published / 1e6:.0f}M, '
                     f'{100 * (n / published - 1):+.1f}%)')
    print('\n'.join(lines))
    deep = sum(p.numel() for p in meta_model('s2mlp_deep').parameters())
    wide = sum(p.numel() for p in meta_model('s2mlp_wide').parameters())
    assert deep == 50_960_488 and abs(deep / 51e6 - 1) < 0.02
    assert wide == 72_242_920 and abs(wide / 71e6 - 1) < 0.02
    # the settings the counts come from, by arithmetic: p, c, r, N
    def count(p, c, r, n, classes=1000):
        block = 2 * (c * c + c) + (c * r * c + r * c) + (r * c * c + c) + 4 * c
        return 3 * p * p * c + c + 2 * c + n * block + 2 * c + c * classes + classes
    assert count(16, 384, 4, 34) == deep and count(16, 768, 4, 12) == wide
    # the 36-block model is one keyword away, and is what the 10.5G figure would need
    assert sum(p.numel() for p in meta_model('s2mlp_deep', depth=36).parameters()) == \
        count(16, 384, 4, 36)


def test_flops_at_224():
    lines = []
    for variant, (_, flops) in PUBLISHED.items():
        model = meta_model(variant)
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(1, 3, 224, 224, device='meta'))
        macs = counter.get_total_flops() / 2
        lines.append(f'{variant}: {macs / 1e9:.2f} GMACs at 224 (published {flops / 1e9:.1f}G)')
        assert abs(macs / flops - 1) < 0.03, lines[-1]
    print('\n'.join(lines))


# ---- any input size, training ---------------------------------------------------------------

@pytest.mark.parametrize('size', [(33, 47), (97, 61), (4, 4), (5, 3)])
def test_any_input_size(size):
    model = tiny(torch.float32)
    x = torch.randn(1, 3, *size)
    feat = model.forward_features(x)
    assert feat.shape == (1, math.ceil(size[0] / 4), math.ceil(size[1] / 4), 32)
    out = model(x)
    assert out.shape == (1, 5) and torch.isfinite(out).all()


def test_padding_is_zeros_at_bottom_right():
    model = tiny()
    x = torch.randn(1, 3, 9, 6, dtype=torch.float64)
    padded = torch.zeros(1, 3, 12, 8, dtype=torch.float64)
    padded[..., :9, :6] = x
    torch.testing.assert_close(model.forward_features(x), model.forward_features(padded))


def test_forward_backward_every_parameter_gets_a_gradient():
    model = tiny(torch.float32, drop_path_rate=0.1, proj_drop_rate=0.1, drop_rate=0.1).train()
    x = torch.randn(2, 3, 33, 47)
    loss = model(x).logsumexp(1).sum()
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_full_size_forward_224():
    model = timm.create_model('s2mlp_deep').eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


# ---- timm API ---------------------------------------------------------------------------------

def test_timm_registration_and_default_cfg():
    assert {'s2mlp_deep', 's2mlp_wide'} <= set(timm.list_models('s2mlp_*'))
    model = meta_model('s2mlp_wide', num_classes=7)
    cfg = model.pretrained_cfg
    for key in ('url', 'num_classes', 'input_size', 'pool_size', 'crop_pct', 'interpolation',
                'mean', 'std', 'first_conv', 'classifier'):
        assert key in cfg, key
    assert cfg['input_size'] == (3, 224, 224) and cfg['pool_size'] == (14, 14)
    assert model.get_submodule(cfg['first_conv']).in_channels == 3
    assert model.get_submodule(cfg['classifier']).out_features == 7
    assert model.num_features == model.head_hidden_size == 768
    assert len(model.feature_info) == 12
    assert {f['reduction'] for f in model.feature_info} == {16}
    for f in model.feature_info:
        model.get_submodule(f['module'])
    with pytest.raises(ValueError, match='global_pool'):
        S2MLPClassifier(**{**TINY, 'global_pool': 'max'})


def test_features_only():
    net = timm.create_model('s2mlp_deep', features_only=True, out_indices=(5, -1), depth=8)
    assert net.feature_info.channels() == [384, 384]
    assert net.feature_info.reduction() == [16, 16]
    assert len(net.model.blocks) == 8
    feats = net(torch.randn(1, 3, 50, 33))
    assert [tuple(f.shape) for f in feats] == [(1, 384, 4, 3)] * 2
    assert len(timm.create_model('s2mlp_deep', features_only=True, depth=6)(
        torch.randn(1, 3, 32, 32))) == 3  # default: the last 3 blocks, like timm's Mixer


def test_forward_intermediates():
    model = tiny()
    x = torch.randn(2, 3, 21, 13, dtype=torch.float64)
    final, feats = model.forward_intermediates(x)
    assert len(feats) == 3 and all(f.shape == (2, 32, 6, 4) for f in feats)
    torch.testing.assert_close(final, model.forward_features(x))
    torch.testing.assert_close(final, model.norm(feats[-1].permute(0, 2, 3, 1)))
    nhwc = model.forward_intermediates(x, indices=[0, -1], output_fmt='NHWC',
                                       intermediates_only=True)
    torch.testing.assert_close(nhwc[0], feats[0].permute(0, 2, 3, 1))
    normed = model.forward_intermediates(x, indices=2, norm=True, intermediates_only=True)
    torch.testing.assert_close(normed[0], model.norm(feats[1].permute(0, 2, 3, 1))
                               .permute(0, 3, 1, 2))
    calls = []
    model.blocks[2].register_forward_hook(lambda *a: calls.append(1))
    _, early = model.forward_intermediates(x, indices=[1], stop_early=True)
    torch.testing.assert_close(early[0], feats[1])
    assert not calls  # block 2 never ran


def test_prune_intermediate_layers():
    model = tiny()
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    full = model.forward_intermediates(x, intermediates_only=True)
    assert model.prune_intermediate_layers([1]) == [1]
    assert len(model.blocks) == 2 and isinstance(model.head, torch.nn.Identity)
    torch.testing.assert_close(model.forward_intermediates(x, indices=[1],
                                                           intermediates_only=True)[0], full[1])


def test_grad_checkpointing_same_outputs_and_gradients_and_recomputes():
    x = torch.randn(2, 3, 21, 13)
    results = []
    for enable in (False, True):
        model = tiny(torch.float32).train()
        model.set_grad_checkpointing(enable)
        calls = []
        # a pre-hook: recomputation stops early, before a module's post-hooks would run
        model.blocks[1].register_forward_pre_hook(lambda *a: calls.append(1))
        out = model(x)
        out.square().sum().backward()
        inter = model.forward_intermediates(x, indices=[1], intermediates_only=True)[0]
        inter.sum().backward()
        results.append((out.detach(), {n: p.grad for n, p in model.named_parameters()},
                        len(calls)))
    (out0, g0, calls0), (out1, g1, calls1) = results
    torch.testing.assert_close(out1, out0)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-5, atol=1e-6)
    assert calls0 == 2 and calls1 == 4  # forward and intermediates, each recomputed once


def test_reset_classifier_and_group_matcher():
    from timm.models import group_parameters
    model = tiny(torch.float32)  # a new head is float32, as in every timm model
    x = torch.randn(1, 3, 16, 16)
    assert model.get_classifier() is model.head
    model.reset_classifier(3)
    assert model(x).shape == (1, 3)
    model.reset_classifier(0)
    assert model(x).shape == (1, 32)
    model.reset_classifier(2, global_pool='')
    assert model(x).shape == (1, 4, 4, 2)
    with pytest.raises(ValueError, match='global_pool'):
        model.reset_classifier(2, global_pool='max')
    names = sorted(n for n, _ in model.named_parameters())
    groups = group_parameters(model, model.group_matcher())
    assert sorted(n for g in groups.values() for n in g) == names
    assert model.no_weight_decay() == set()


def test_fx_feature_extraction():
    from timm.models import FeatureGraphNet
    model = tiny(torch.float32)
    net = FeatureGraphNet(model, out_indices=(0, 2))
    x = torch.randn(1, 3, 21, 13)
    feats = net(x)
    ref = model.forward_intermediates(x, indices=[0, 2], output_fmt='NHWC',
                                      intermediates_only=True)
    for a, b in zip(feats, ref):
        torch.testing.assert_close(a, b)


def test_torchscript():
    model = tiny(torch.float32)
    scripted = torch.jit.script(model)
    for size in ((16, 16), (21, 13)):
        x = torch.randn(1, 3, *size)
        torch.testing.assert_close(scripted(x), model(x))
