"""S2-MLP (spatial-shift MLP): the shift of Algorithm 1, the block formula, settings against the
published figures, any input size, and what is S2-MLP's own in timm's model API (the checks every
family shares are in test_timm_api.py)."""
import math

import pytest
import timm
import torch

from mmdet_posmlp.models.s2mlp import S2MLPBlock, S2MLPClassifier, SpatialShift, spatial_shift
from conftest import (FAMILY_ARCHS, check_published_macs, family_classifier,
                      layer_norm_literal, meta_model)

PUBLISHED = {'s2mlp_deep': (51e6, 9.7e9), 's2mlp_wide': (71e6, 14e9)}



def tiny(dtype=torch.float64):
    return family_classifier('s2mlp', dtype, num_classes=5)


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
    ln = layer_norm_literal

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
    check_published_macs({variant: flops for variant, (_, flops) in PUBLISHED.items()}, 0.03)


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


# ---- timm API ---------------------------------------------------------------------------------

def test_default_cfg_and_global_pool():
    cfg = meta_model('s2mlp_wide').pretrained_cfg
    assert cfg['input_size'] == (3, 224, 224) and cfg['pool_size'] == (14, 14)
    with pytest.raises(ValueError, match='global_pool'):
        S2MLPClassifier(**FAMILY_ARCHS['s2mlp'], global_pool='max')
    with pytest.raises(ValueError, match='global_pool'):
        tiny().reset_classifier(2, global_pool='max')


def test_features_only():
    net = timm.create_model('s2mlp_deep', features_only=True, out_indices=(5, -1), depth=8)
    assert net.feature_info.channels() == [384, 384]
    assert net.feature_info.reduction() == [16, 16]
    assert len(net.model.blocks) == 8
    feats = net(torch.randn(1, 3, 50, 33))
    assert [tuple(f.shape) for f in feats] == [(1, 384, 4, 3)] * 2
    assert len(timm.create_model('s2mlp_deep', features_only=True, depth=6)(
        torch.randn(1, 3, 32, 32))) == 3  # default: the last 3 blocks, like timm's Mixer


