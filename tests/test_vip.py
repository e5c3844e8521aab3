"""ViP (Vision Permutator): official layout and counts, the permute-MLP formula, any input size,
and what is ViP's own in timm's model API (the checks every family shares are in
test_timm_api.py)."""
import math

import pytest
import timm
import torch
import torch.nn.functional as F

from mmdet_posmlp.models import vip as vip_module
from mmdet_posmlp.models.vip import PermutatorBlock, ViPClassifier, WeightedPermuteMLP
from conftest import (FAMILY_ARCHS, check_published_macs, family_classifier,
                      layer_norm_literal, meta_model)

# The official models/vip.py (houqb/VisionPermutator), restated here as plain facts so that
# this test does not depend on the module tree under test.
OFFICIAL = {
    'vip_s7': dict(layers=[4, 3, 8, 3], transitions=[True, False, False, False],
                   segment_dim=[32, 16, 16, 16], embed_dims=[192, 384, 384, 384]),
    'vip_m7': dict(layers=[4, 3, 14, 3], transitions=[False, True, False, False],
                   segment_dim=[32, 32, 16, 16], embed_dims=[256, 256, 512, 512]),
    'vip_l7': dict(layers=[8, 8, 16, 4], transitions=[True, False, False, False],
                   segment_dim=[32, 16, 16, 16], embed_dims=[256, 512, 512, 512]),
}
# Instantiated from the official code and counted (equal to the sum over official_shapes)
OFFICIAL_PARAMS = {'vip_s7': 25_114_984, 'vip_m7': 55_272_488, 'vip_l7': 87_784_936}
PUBLISHED = {'vip_s7': (25e6, 6.9e9), 'vip_m7': (55e6, 16.3e9), 'vip_l7': (88e6, 24.3e9)}


def official_shapes(variant, num_classes=1000, patch=7, mlp_ratio=3):
    """Parameter names and shapes of the official VisionPermutator (no buffers)."""
    cfg = OFFICIAL[variant]
    dims, layers, trans = cfg['embed_dims'], cfg['layers'], cfg['transitions']
    shapes = {'patch_embed.proj.weight': (dims[0], 3, patch, patch),
              'patch_embed.proj.bias': (dims[0],)}
    n = 0  # index in the official `network` ModuleList: stages and Downsamples interleaved
    for i, d in enumerate(dims):
        hid = int(d * mlp_ratio)
        for j in range(layers[i]):
            p = f'network.{n}.{j}.'
            shapes.update({
                p + 'norm1.weight': (d,), p + 'norm1.bias': (d,),
                p + 'attn.mlp_c.weight': (d, d), p + 'attn.mlp_h.weight': (d, d),
                p + 'attn.mlp_w.weight': (d, d),
                p + 'attn.reweight.fc1.weight': (d // 4, d),
                p + 'attn.reweight.fc1.bias': (d // 4,),
                p + 'attn.reweight.fc2.weight': (3 * d, d // 4),
                p + 'attn.reweight.fc2.bias': (3 * d,),
                p + 'attn.proj.weight': (d, d), p + 'attn.proj.bias': (d,),
                p + 'norm2.weight': (d,), p + 'norm2.bias': (d,),
                p + 'mlp.fc1.weight': (hid, d), p + 'mlp.fc1.bias': (hid,),
                p + 'mlp.fc2.weight': (d, hid), p + 'mlp.fc2.bias': (d,),
            })
        n += 1
        if i < len(dims) - 1 and (trans[i] or dims[i] != dims[i + 1]):
            k = 2 if trans[i] else 1
            shapes[f'network.{n}.proj.weight'] = (dims[i + 1], d, k, k)
            shapes[f'network.{n}.proj.bias'] = (dims[i + 1],)
            n += 1
    shapes.update({'norm.weight': (dims[-1],), 'norm.bias': (dims[-1],),
                   'head.weight': (num_classes, dims[-1]), 'head.bias': (num_classes,)})
    return shapes


def tiny(dtype=torch.float64):
    """conftest's small ViP: its stage-1 map is 8 x 8 tokens (= segment_dim) at 56 x 56 pixels."""
    return family_classifier('vip', dtype, num_classes=5)


# ---- official layout and counts ---------------------------------------------------------

@pytest.mark.parametrize('variant', list(OFFICIAL))
def test_parameter_count_and_layout_equal_official(variant):
    shapes = official_shapes(variant)
    assert sum(math.prod(s) for s in shapes.values()) == OFFICIAL_PARAMS[variant]
    model = meta_model(variant)
    n = sum(p.numel() for p in model.parameters())
    print(f'{variant}: {n:,} parameters (official {OFFICIAL_PARAMS[variant]:,}, '
          f'published {PUBLISHED[variant][0] / 1e6:.0f}M)')
    assert n == OFFICIAL_PARAMS[variant]
    assert abs(n / PUBLISHED[variant][0] - 1) < 0.02
    sd = model.state_dict()
    assert list(sd) == list(shapes)  # same names, same order
    assert {k: tuple(v.shape) for k, v in sd.items()} == shapes


def test_official_state_dict_loads_strict():
    shapes = official_shapes('vip_s7', num_classes=10)
    g = torch.Generator().manual_seed(0)
    official = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    model = timm.create_model('vip_s7', num_classes=10)
    result = model.load_state_dict(official, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for k, v in model.state_dict().items():
        assert torch.equal(v, official[k]), k
    # the timm loader's filter accepts a checkpoint wrapped as the official training saves it
    wrapped = {'state_dict': {'module.' + k: v for k, v in official.items()}, 'epoch': 299}
    assert vip_module.checkpoint_filter_fn(wrapped, model).keys() == official.keys()


# ---- the published formula ----------------------------------------------------------------

def literal_permute_mlp(m: WeightedPermuteMLP, x: torch.Tensor) -> torch.Tensor:
    """ViP's weighted permute MLP as in the paper/official code, side == segment_dim, float64:
    for every segment k and column w the H x S block of x is flattened row-major, multiplied by
    mlp_h and put back (width: the same per row with mlp_w); the branch weights are a softmax
    over 3 of reweight(spatial mean of h + w + c), read as (C, 3)."""
    B, H, W, C = x.shape
    s = m.segment_dim
    S = C // s
    assert H == W == s
    Wh, Ww, Wc = m.mlp_h.weight, m.mlp_w.weight, m.mlp_c.weight
    h = torch.empty_like(x)
    w = torch.empty_like(x)
    for b in range(B):
        for k in range(s):
            seg = slice(k * S, (k + 1) * S)
            for col in range(W):
                v = x[b, :, col, seg].reshape(H * S)          # index = row * S + j
                h[b, :, col, seg] = (Wh @ v).reshape(H, S)
            for row in range(H):
                v = x[b, row, :, seg].reshape(W * S)          # index = col * S + j
                w[b, row, :, seg] = (Ww @ v).reshape(W, S)
    c = x @ Wc.t()
    mean = (h + w + c).mean(dim=(1, 2))                        # (B, C)
    r = m.reweight
    hidden = F.gelu(mean @ r.fc1.weight.t() + r.fc1.bias)
    logits = (hidden @ r.fc2.weight.t() + r.fc2.bias).reshape(B, C, 3)
    a = torch.softmax(logits, dim=2)                           # over the 3 branches
    mixed = (h * a[:, None, None, :, 0] + w * a[:, None, None, :, 1]
             + c * a[:, None, None, :, 2])
    return mixed @ m.proj.weight.t() + m.proj.bias


@pytest.mark.parametrize('dim,segments', [(32, 8), (64, 4)])
def test_permute_mlp_is_the_published_formula(dim, segments):
    torch.manual_seed(1)
    m = WeightedPermuteMLP(dim, segments).double().eval()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2, segments, segments, dim, dtype=torch.float64)
    torch.testing.assert_close(m(x), literal_permute_mlp(m, x), rtol=0, atol=1e-10)


def test_block_is_the_published_formula():
    torch.manual_seed(2)
    blk = PermutatorBlock(32, 8, mlp_ratio=3., skip_lam=2.0).double().eval()
    for p in blk.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2, 8, 8, 32, dtype=torch.float64)
    ln = layer_norm_literal

    y = x + literal_permute_mlp(blk.attn, ln(x, blk.norm1)) / 2.0
    u = ln(y, blk.norm2) @ blk.mlp.fc1.weight.t() + blk.mlp.fc1.bias
    u = 0.5 * u * (1 + torch.erf(u / math.sqrt(2)))
    y = y + (u @ blk.mlp.fc2.weight.t() + blk.mlp.fc2.bias) / 2.0
    torch.testing.assert_close(blk(x), y, rtol=0, atol=1e-10)


def clipped_permute_mlp(m: WeightedPermuteMLP, x: torch.Tensor) -> torch.Tensor:
    """The windowed mixer written without any padding: a window clipped to r < s rows uses the
    r x r block of row-to-row weights (what a zero-padded window computes for its real rows)."""
    B, H, W, C = x.shape
    s = m.segment_dim
    S = C // s
    Wh = m.mlp_h.weight.reshape(s, S, s, S)   # (out row, out j, in row, in j)
    Ww = m.mlp_w.weight.reshape(s, S, s, S)
    xs = x.reshape(B, H, W, s, S)
    h = torch.empty_like(xs)
    w = torch.empty_like(xs)
    for r0 in range(0, H, s):
        r1 = min(r0 + s, H)
        h[:, r0:r1] = torch.einsum('pqrj,brwkj->bpwkq', Wh[:r1 - r0, :, :r1 - r0],
                                   xs[:, r0:r1])
    for c0 in range(0, W, s):
        c1 = min(c0 + s, W)
        w[:, :, c0:c1] = torch.einsum('pqrj,bhrkj->bhpkq', Ww[:c1 - c0, :, :c1 - c0],
                                      xs[:, :, c0:c1])
    h, w = h.reshape(B, H, W, C), w.reshape(B, H, W, C)
    c = m.mlp_c(x)
    a = m.reweight((h + w + c).mean(dim=(1, 2))).reshape(B, C, 3).softmax(dim=2)
    return m.proj(h * a[:, None, None, :, 0] + w * a[:, None, None, :, 1]
                  + c * a[:, None, None, :, 2])


def test_windows_real_tokens_do_not_depend_on_padding():
    torch.manual_seed(3)
    m = WeightedPermuteMLP(32, 8).double().eval()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2, 13, 19, 32, dtype=torch.float64)   # pads to 16 x 24: 2 x 3 windows
    out = m(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, clipped_permute_mlp(m, x), rtol=0, atol=1e-10)
    # more zero padding (a third, empty window row) leaves the real rows unchanged ...
    more = F.pad(x, [0, 0, 0, 0, 0, 11])                  # 24 rows
    torch.testing.assert_close(m.mix_height(more)[:, :13], m.mix_height(x), rtol=0, atol=1e-12)
    # ... while anything but zeros in the padded rows would change them (the check can fail)
    junk = torch.cat([x, torch.ones_like(x[:, :3])], dim=1)  # 16 rows, the same windows
    assert (m.mix_height(junk)[:, 8:13] - m.mix_height(x)[:, 8:13]).abs().max() > 1e-3
    # at side == s the windowed module is one window: the official computation
    x8 = torch.randn(1, 8, 8, 32, dtype=torch.float64)
    torch.testing.assert_close(m(x8), literal_permute_mlp(m, x8), rtol=0, atol=1e-10)


# ---- any input size, training ---------------------------------------------------------------

@pytest.mark.parametrize('size', [(33, 47), (97, 61), (56, 56), (7, 7)])
def test_any_input_size(size):
    model = tiny(torch.float32)
    x = torch.randn(1, 3, *size)
    feats = model.forward_intermediates(x, intermediates_only=True)
    h7, w7 = math.ceil(size[0] / 7), math.ceil(size[1] / 7)
    h14, w14 = math.ceil(size[0] / 14), math.ceil(size[1] / 14)
    assert [tuple(f.shape) for f in feats] == [(1, 32, h7, w7)] + [(1, 64, h14, w14)] * 3
    assert model.feature_info[0]['reduction'] == 7 and model.feature_info[1]['reduction'] == 14
    out = model(x)
    assert out.shape == (1, 5) and torch.isfinite(out).all()


def test_flops_at_224():
    check_published_macs({variant: flops for variant, (_, flops) in PUBLISHED.items()}, 0.05)


# ---- timm API ---------------------------------------------------------------------------------

def test_default_cfg():
    cfg = meta_model('vip_s7').pretrained_cfg
    assert cfg['input_size'] == (3, 224, 224) and cfg['pool_size'] == (16, 16)
    assert cfg['crop_pct'] == 0.875 and cfg['interpolation'] == 'bicubic'


def test_features_only():
    net = timm.create_model('vip_s7', features_only=True, out_indices=(0, 3))
    assert net.feature_info.channels() == [192, 384]
    assert net.feature_info.reduction() == [7, 14]
    feats = net(torch.randn(1, 3, 61, 45))
    assert [tuple(f.shape) for f in feats] == [(1, 192, 9, 7), (1, 384, 5, 4)]


def test_per_position_head_and_global_pool():
    model = tiny(torch.float32)  # a new head is float32, as in every timm model
    x = torch.randn(1, 3, 56, 56)
    model.reset_classifier(4, global_pool='')
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (1, 4, 4, 64)
    with pytest.raises(ValueError, match='global_pool'):
        model.reset_classifier(4, global_pool='max')
    with pytest.raises(ValueError, match='global_pool'):
        ViPClassifier(**FAMILY_ARCHS['vip'], global_pool='token')
