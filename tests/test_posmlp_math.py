"""The token mixers against the paper's formulas, and the fast path against the oracle."""
import itertools
import types

import pytest
import torch
import torch.nn as nn

from mmdet_posmlp.models import posmlp
from mmdet_posmlp.models.posmlp import (GQPE, LRPE, DenseTokenMixer, PosMLPClassifier,
                                        PosMLPStage)
from mmdet_posmlp.models.windows import (from_windows, region_index, to_windows, window_layout,
                                         window_regions, window_tokens)
from benchmarks.reference_math import reference_stages, reference_weights
from conftest import mixer_matrices, randomize_

CPU = torch.device('cpu')


def _gqpe_by_formula(centers, spreads, window):
    """P[g, m, n] computed one entry at a time, in float64, from the spec."""
    G, N = centers.shape[0], window * window
    P = torch.empty(G, N, N, dtype=torch.float64)
    for g in range(G):
        S = spreads[g].double()
        A = S @ S.T
        delta = centers[g].double()
        for m in range(N):
            rm, cm = divmod(m, window)
            row = []
            for n in range(N):
                rn, cn = divmod(n, window)
                d = torch.tensor([cn - cm, rm - rn], dtype=torch.float64) - delta
                row.append(-0.5 * d @ A @ d)
            P[g, m] = torch.stack(row).softmax(0)
    return P


@pytest.mark.parametrize('window,groups', [(5, 3), (7, 2)])
def test_gqpe_matrix_matches_formula(window, groups):
    torch.manual_seed(1)
    m = GQPE(window, groups).double()
    with torch.no_grad():  # away from the identity init, so the shape of A matters
        m.attention_centers.normal_(0, 1.5)
        m.attention_spreads.normal_(0, 0.7)
    P = mixer_matrices(m)
    expected = _gqpe_by_formula(m.attention_centers.detach(), m.attention_spreads.detach(), window)
    torch.testing.assert_close(P, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(P.sum(-1), torch.ones(groups, window ** 2, dtype=torch.float64))
    assert m.attention_centers.shape == (groups, 2) and m.attention_spreads.shape == (groups, 2, 2)
    assert sum(p.numel() for n, p in m.named_parameters() if n != 'token_proj_n_bias') == 6 * groups


def test_clipped_window_matrices():
    """A clipped window (3 x 2 tokens of a 4 x 4 window) mixes its own tokens only: GQPE's
    softmax is taken over them, LRPE and the dense mixer keep the full matrix's entries."""
    torch.manual_seed(2)
    index = region_index(4, 3, 2, 0, 0, torch.device('cpu'))
    tokens = index.tokens
    assert tokens.tolist() == [0, 1, 4, 5, 8, 9] == window_tokens(4, 3, 2).tolist()
    m = GQPE(4, 2).double()
    P = mixer_matrices(m, index)
    assert P.shape == (2, 6, 6)
    torch.testing.assert_close(P.sum(-1), torch.ones(2, 6, dtype=torch.float64))
    full = mixer_matrices(m)[:, tokens][:, :, tokens]
    torch.testing.assert_close(P, full / full.sum(-1, keepdim=True))
    for mixer in (LRPE(4, 2), DenseTokenMixer(4, 2)):
        with torch.no_grad():
            for prm in mixer.parameters():
                prm.normal_()
        assert torch.equal(mixer_matrices(mixer, index), mixer_matrices(mixer)[:, tokens][:, :, tokens])


def test_lrpe_indexes_the_table_as_specified():
    w, G = 4, 3
    m = LRPE(w, G)
    with torch.no_grad():
        m.window_relative_position_bias_table.copy_(torch.randn((2 * w - 1) ** 2, G))
    table = m.window_relative_position_bias_table
    P = mixer_matrices(m)
    for mi, ni in itertools.product(range(w * w), repeat=2):
        (rm, cm), (rn, cn) = divmod(mi, w), divmod(ni, w)
        idx = (rm - rn + w - 1) * (2 * w - 1) + (cm - cn + w - 1)
        assert torch.equal(P[:, mi, ni], table[idx])
    assert torch.count_nonzero(LRPE(w, G).window_relative_position_bias_table) == 0  # zero init


def test_channel_groups_are_interleaved():
    """Channel c must be mixed by group c % groups: put a distinct matrix in each group and
    check which one acts on which channel."""
    w, G, C = 3, 4, 8
    N = w * w
    block = posmlp.PosMLPBlock(C, w, G, 2.0, mixer='sgu')
    sgu = block.gate_unit
    with torch.no_grad():
        sgu.pos.token_proj_n_bias.zero_()
        for g in range(G):  # group g shifts tokens by g+1 (a permutation matrix)
            sgu.pos.token_proj_n_weight[g] = torch.roll(torch.eye(N), g + 1, dims=0)
    u = torch.randn(C, N)  # one window, channel-major
    order = block._gate_order  # grouped layout used inside blocks
    P, bias = mixer_matrices(sgu.pos), sgu.pos.token_proj_n_bias.view(1, 1, N)
    # the stage's product: group g's rows as (channels x windows, tokens), times P_g transposed
    mixed = torch.baddbmm(bias, u[order].reshape(G, -1, N), P.transpose(1, 2)).reshape(C, N)
    back = torch.empty_like(mixed)
    back[order] = mixed
    for c in range(C):
        g = c % G
        assert torch.equal(back[c], torch.roll(u[c], g + 1, dims=0)), c


def test_window_order_roundtrip_and_layout():
    x = torch.randn(2, 5, 9, 11, requires_grad=True)
    layout = window_layout(2, 9, 11, 4, 0, CPU)
    # whole windows first, then the clipped ones: right edge, bottom edge, corner
    assert [(r.win_rows, r.win_cols, r.rows, r.cols) for r in layout.regions] == [
        (2, 2, 4, 4), (2, 1, 4, 3), (1, 2, 1, 4), (1, 1, 1, 3)]
    assert layout.starts == (0, 2 * 4 * 16, 2 * 4 * 16 + 2 * 2 * 12, 2 * 4 * 16 + 2 * 2 * 12 + 2 * 2 * 4,
                             2 * 9 * 11)  # every row a real token
    tokens = to_windows(x, layout)
    assert layout.rows == 200 and tokens.shape == (200, 5)  # 198 tokens, rounded up to 8
    assert not tokens[198:].any()
    assert torch.equal(from_windows(tokens, layout, 9, 11), x)
    # token (r, c) of whole window (i, j) of image b is row ((b * 2 + i) * 2 + j) * 16 + r * 4 + c
    b, i, j, r, c = 1, 1, 0, 2, 3
    assert torch.equal(tokens[((b * 2 + i) * 2 + j) * 16 + r * 4 + c], x[b, :, i * 4 + r, j * 4 + c])
    # token (0, c) of image b's bottom-edge window j
    b, j, c = 1, 1, 2
    assert torch.equal(tokens[layout.starts[2] + (b * 2 + j) * 4 + c], x[b, :, 8, j * 4 + c])
    assert torch.equal(layout.image[:198], layout.order // (9 * 11))
    # gradients flow back through the gathers, whatever the layout
    g = torch.randn_like(x)
    from_windows(to_windows(x, layout) * 2, layout, 9, 11).backward(g)
    assert torch.equal(x.grad, 2 * g)
    assert window_layout(2, 9, 11, 4, 0, CPU) is layout  # index tensors built once per size


@pytest.mark.parametrize('height,width', [(9, 8), (8, 9), (3, 3), (8, 8)])
def test_window_order_roundtrip_with_one_or_two_edges(height, width):
    x = torch.randn(1, 3, height, width)
    layout = window_layout(1, height, width, 4, 0, CPU)
    assert list(layout.regions) == window_regions(1, height, width, 4)  # as documented there
    assert torch.equal(from_windows(to_windows(x, layout), layout, height, width), x)
    assert layout.starts[-1] == height * width
    assert sorted(layout.order.tolist()) == list(range(height * width))


def test_divisible_size_is_one_region():
    regions = window_regions(2, 28, 42, 14)
    assert len(regions) == 1 and regions[0].win_rows * regions[0].win_cols == 6


@pytest.mark.parametrize('mixer,size', [('gqpe', (224, 224)), ('gqpe', (100, 150)),
                                        ('gqpe', (32, 32)), ('lrpe', (100, 150)),
                                        ('sgu', (100, 150))])
def test_fast_path_matches_plain_reference(mixer, size):
    torch.manual_seed(3)
    model = randomize_(PosMLPClassifier('tiny', mixer=mixer)).double().eval()
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    with torch.no_grad():
        fast = model.forward_stages(x)
        plain = reference_stages(model.state_dict(), model.setting, x, mixer)
    for a, b in zip(fast, plain):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_gradients_match_plain_reference_with_padding():
    """Autograd through the in-place border handling gives the oracle's gradients."""
    torch.manual_seed(4)
    stage_cfg = dict(embed_dims=(16, 32, 64, 128), depths=(1, 1, 1, 1), windows=(4, 4, 3, 2),
                     groups=(2, 4, 4, 8), mlp_ratios=(4, 4, 4, 2))
    model = randomize_(PosMLPClassifier(stage_cfg, drop_path_rate=0.0)).double().eval()
    x = torch.randn(1, 3, 50, 38, dtype=torch.float64)
    params = {k: v for k, v in model.named_parameters() if k.startswith(('patch_embed', 'levels'))}
    weights = reference_weights(model)
    fast = sum(o.sum() for o in model.forward_stages(x))
    g_fast = torch.autograd.grad(fast, list(params.values()))
    plain = sum(o.sum() for o in reference_stages(weights, model.setting, x))
    g_plain = torch.autograd.grad(plain, list(params.values()))
    torch.testing.assert_close(fast, plain, rtol=1e-10, atol=1e-10)
    for name, a, b in zip(params, g_fast, g_plain):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10, msg=name)


def test_clipped_windows_are_not_padded_windows_in_disguise():
    """A map one token taller than a window multiple: the extra row forms windows of 1 x w
    tokens that mix only among themselves (a zero-padded version with the padding left in the
    softmax would differ), matching the oracle on that row."""
    torch.manual_seed(5)
    stage = randomize_(PosMLPStage(None, 16, 2, 5, 4, 4.0)).double().eval()
    x = torch.randn(1, 16, 11, 10, dtype=torch.float64)
    with torch.no_grad():
        out = stage(x)
        top = stage(x[:, :, :10])
        row = stage(x[:, :, 10:])  # the last row alone: 1 x 5 windows, the same computation
    torch.testing.assert_close(out[:, :, :10], top, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out[:, :, 10:], row, rtol=1e-12, atol=1e-12)


def test_divisible_size_matches_reference_without_padding():
    """At a size every window divides, one region per stage, and the reference's own
    (unpadded) computation."""
    model = randomize_(PosMLPClassifier('tiny')).double().eval()
    x = torch.randn(1, 3, 448, 224, dtype=torch.float64)
    with torch.no_grad():
        fast = model.forward_stages(x)
        plain = reference_stages(model.state_dict(), model.setting, x)
    for a, b in zip(fast, plain):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_mixing_matrices_once_per_stage_forward(monkeypatch):
    """A stage computes the matrices of all its blocks in one stacked call per forward (two
    with shift: one per grid), for every window shape present (whole and clipped), not per
    block, window or image, in training and evaluation alike."""
    calls = []
    real = GQPE.stacked_matrices
    monkeypatch.setattr(GQPE, 'stacked_matrices', staticmethod(lambda mixers, regions: calls.append(
        (len(mixers), sorted(r.tokens.numel() for r in regions))) or real(mixers, regions)))
    x = torch.randn(3, 16, 10, 9)  # 2 x 2 whole windows, clipped 4 x 1, 2 x 4 and 2 x 1
    for shift in (False, True):
        stage = PosMLPStage(None, 16, 4, 4, 2, 4.0, shift=shift)
        for train in (True, False):
            calls.clear()
            stage.train(train)
            with torch.set_grad_enabled(train):
                out = stage(x)
            if train:
                out.sum().backward()
            plain = sorted([2 * 1, 2 * 4, 4 * 1, 4 * 4])  # bands of 4, 4, 2 rows and 4, 4, 1 columns
            if not shift:
                assert calls == [(4, plain)]
            else:  # the moved grid: bands of 2, 4, 4 rows and 2, 4, 3 columns
                assert calls == [(2, plain), (2, [2 * 2, 2 * 3, 2 * 4, 4 * 2, 4 * 3, 4 * 4])]


def test_clipped_windows_cost_only_their_tokens():
    """FLOPs of a stage on a 15 x 14 map with 14 x 14 windows: the per-token Linear layers for
    210 tokens (and the 6 zero rows that round the token matrix up to 216, a multiple of 8),
    a 196-token and a 14-token mixing product (padding to whole windows would pay for 392
    tokens)."""
    from benchmarks.harness import count_flops
    C, w, G = 16, 14, 2
    stage = PosMLPStage(None, C, 1, w, G, 4.0).eval()
    hidden, gate = 4 * C, 2 * C
    x = torch.randn(1, C, 15, 14)
    flops = count_flops(lambda: stage(x))
    tokens = 216
    linear = 2 * tokens * (C * hidden + gate * C)  # expansion and output, biases in the GEMMs
    mixing = 2 * gate * (196 * 196 + 14 * 14)
    # the norm's statistics and GQPE's matrices are elementwise work, not products (TF32)
    assert flops == linear + mixing


def test_fused_model_matches_plain_reference():
    """The deployment step (fuse: the stem's BatchNorm folded, the mixing matrices kept per
    size) gives the oracle's result, at two sizes, and leaves the input untouched."""
    torch.manual_seed(7)
    cfg = dict(embed_dims=(16, 32, 64, 128), depths=(2, 1, 2, 1), windows=(4, 4, 3, 2),
               groups=(2, 4, 4, 8), mlp_ratios=(4, 4, 4, 2))
    for mixer in posmlp.MIXERS:
        model = randomize_(PosMLPClassifier(cfg, mixer=mixer)).double().eval()
        x = torch.randn(2, 3, 50, 38, dtype=torch.float64)
        x0 = x.clone()
        weights = dict(model.state_dict())
        plain = reference_stages(weights, model.setting, x, mixer)
        model.fuse()
        assert not any(isinstance(m, (posmlp.ConvStem, nn.BatchNorm2d)) for m in model.modules())
        assert [type(m) for m in model.patch_embed] == [nn.Conv2d, nn.GELU] * 2 + [nn.Conv2d]
        assert all(stage.fixed_mixing is not None for stage in model.levels)
        with torch.no_grad():
            fast = model.forward_stages(x)
            assert torch.equal(x, x0)
            for a, b in zip(fast, plain):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
            assert torch.equal(model.forward_stages(x)[-1], fast[-1])  # the same matrices again
            other = torch.randn(1, 3, 41, 45, dtype=torch.float64)
            for a, b in zip(model.forward_stages(other),
                            reference_stages(weights, model.setting, other, mixer)):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        with pytest.raises(RuntimeError, match='fused for inference'):
            model.forward_stages(x)


def test_gqpe_softmax_gradients_and_no_subnormals():
    """The stacked GQPE matrices have autograd's gradients (gradcheck, float64, a clipped
    region beside the whole window), and neither the probabilities nor the gradients go
    subnormal when scores span hundreds (sharp spreads: far tokens near -300)."""
    torch.manual_seed(8)
    regions = [region_index(3, 3, 3, 0, 0, torch.device('cpu')),
               region_index(3, 2, 1, 1, 2, torch.device('cpu'))]

    def matrices(*flat):  # two blocks' (centres, spreads), as stacked_matrices reads them
        mixers = [types.SimpleNamespace(attention_centers=c, attention_spreads=s)
                  for c, s in zip(flat[::2], flat[1::2])]
        return tuple(GQPE.stacked_matrices(mixers, regions))

    inputs = [p.detach().double().requires_grad_() for _ in range(2)
              for p in (GQPE(3, 2).attention_centers * 20, GQPE(3, 2).attention_spreads)]
    torch.autograd.gradcheck(matrices, inputs)
    wide = GQPE(14, 4)
    with torch.no_grad():
        wide.attention_spreads.mul_(3.0)
    P = mixer_matrices(wide)
    P.backward(torch.randn_like(P) * 1e-12)
    tiny = torch.finfo(torch.float32).tiny
    for t in (P, wide.attention_spreads.grad, wide.attention_centers.grad):
        assert not ((t != 0) & (t.abs() < tiny)).any()
    assert P.min() == 0 and torch.allclose(P.sum(-1), torch.ones(4, 196))


def _fresh_copy_output(model, cfg, x):
    fresh = PosMLPClassifier(cfg, num_classes=3).eval()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        return fresh(x)


@pytest.mark.parametrize('update', ['fused_adamw', 'foreach_adamw', 'ema_swap', 'load_state_dict'])
def test_evaluation_follows_every_weight_update(update):
    """Whatever changes the weights in place (fused or foreach optimizer steps and BatchNorm's
    statistics, which do not all bump version counters; an EMA hook's p.data.copy_ swap;
    load_state_dict), the next forward uses the new weights: nothing is kept between passes."""
    torch.manual_seed(9)
    cfg = dict(embed_dims=(16, 32, 64, 128), depths=(1, 1, 1, 1), windows=(4, 4, 3, 2),
               groups=(2, 4, 4, 8), mlp_ratios=(4, 4, 4, 2))
    model = PosMLPClassifier(cfg, num_classes=3)
    x = torch.randn(2, 3, 40, 36)
    model.eval()
    with torch.no_grad():
        before = model(x)
    if update.endswith('adamw'):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=update == 'fused_adamw',
                                foreach=update == 'foreach_adamw' or None)
        model.train()
        model(x).sum().backward()
        opt.step()
    else:
        other = randomize_(PosMLPClassifier(cfg, num_classes=3), scale=1.0, seed=3)
        if update == 'ema_swap':  # how mmengine's EMAHook swaps weights in for validation
            for p, q in zip(model.state_dict().values(), other.state_dict().values()):
                p.data.copy_(q.data)
        else:
            model.load_state_dict(other.state_dict())
    model.eval()
    with torch.no_grad():
        after = model(x)
    assert (after - before).abs().max() > 1e-3
    torch.testing.assert_close(after, _fresh_copy_output(model, cfg, x), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- shifted windows

def test_shifted_grid_regions_and_roundtrip():
    """A grid moved by 2 on a 4-token window over a 9 x 11 map: bands of 2, 4, 3 rows and 2,
    4, 4, 1 columns; the leading bands hold the last 2 rows / columns of a window."""
    x = torch.randn(2, 3, 9, 11)
    layout = window_layout(2, 9, 11, 4, 2, CPU)
    assert [(r.top, r.left, r.win_rows, r.win_cols, r.rows, r.cols, r.row0, r.col0)
            for r in layout.regions] == [
        (0, 0, 1, 1, 2, 2, 2, 2), (0, 2, 1, 2, 2, 4, 2, 0), (0, 10, 1, 1, 2, 1, 2, 0),
        (2, 0, 1, 1, 4, 2, 0, 2), (2, 2, 1, 2, 4, 4, 0, 0), (2, 10, 1, 1, 4, 1, 0, 0),
        (6, 0, 1, 1, 3, 2, 0, 2), (6, 2, 1, 2, 3, 4, 0, 0), (6, 10, 1, 1, 3, 1, 0, 0)]
    assert list(layout.regions) == window_regions(2, 9, 11, 4, shift=2)
    assert layout.starts[-1] == 2 * 9 * 11
    assert torch.equal(from_windows(to_windows(x, layout), layout, 9, 11), x)
    for h, w in [(1, 1), (2, 3), (5, 2), (8, 8)]:  # maps smaller than a window or the shift
        y = torch.randn(1, 2, h, w)
        lay = window_layout(1, h, w, 4, 2, CPU)
        assert torch.equal(from_windows(to_windows(y, lay), lay, h, w), y)
    assert window_tokens(4, 2, 3, row0=2, col0=1).tolist() == [9, 10, 11, 13, 14, 15]
    assert region_index(4, 2, 3, 2, 1, torch.device('cpu')).tokens.tolist() == [9, 10, 11, 13, 14, 15]


@pytest.mark.parametrize('mixer', posmlp.MIXERS)
@pytest.mark.parametrize('size', [(50, 38), (64, 64), (20, 27)])
def test_shifted_windows_match_the_literal_implementation(mixer, size):
    """shift=True: every second block on the grid moved by half a window, mixing only each
    shifted window's real tokens, against the oracle (zero padding at the top and left kept
    out of the mixing), outputs and gradients; and it is not the unshifted model."""
    torch.manual_seed(11)
    cfg = dict(embed_dims=(16, 32, 64, 128), depths=(2, 3, 2, 2), windows=(5, 4, 3, 2),
               groups=(2, 4, 4, 8), mlp_ratios=(4, 4, 4, 2))
    model = randomize_(PosMLPClassifier(cfg, mixer=mixer, shift=True, drop_path_rate=0.0))
    model = model.double().eval()
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    params = [p for n, p in model.named_parameters() if n.startswith(('patch_embed', 'levels'))]
    weights = reference_weights(model)
    ours = model.forward_stages(x)
    plain = reference_stages(weights, model.setting, x, mixer, shift=True)
    for a, b in zip(ours, plain):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    g_ours = torch.autograd.grad(sum(o.sum() for o in ours), params)
    g_plain = torch.autograd.grad(sum(o.sum() for o in plain), params, allow_unused=True)
    for a, b in zip(g_ours, g_plain):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
    unshifted = reference_stages(weights, model.setting, x, mixer, shift=False)
    assert (ours[-1] - unshifted[-1]).abs().max() > 1e-3


def test_shift_adds_no_parameters_and_fuses():
    """The same parameters (ImageNet weights load as they are); the deployed form agrees."""
    torch.manual_seed(12)
    cfg = dict(embed_dims=(16, 32, 64, 128), depths=(2, 2, 2, 2), windows=(4, 4, 3, 2),
               groups=(2, 4, 4, 8), mlp_ratios=(4, 4, 4, 2))
    plain = PosMLPClassifier(cfg)
    shifted = PosMLPClassifier(cfg, shift=True)
    assert {k: v.shape for k, v in plain.state_dict().items()} == \
        {k: v.shape for k, v in shifted.state_dict().items()}
    shifted = randomize_(shifted).double().eval()
    x = torch.randn(1, 3, 45, 61, dtype=torch.float64)
    expected = shifted.forward_stages(x)
    shifted.fuse()
    with torch.no_grad():
        fused = shifted.forward_stages(x)
    for a, b in zip(fused, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- stochastic depth

@pytest.mark.parametrize('shift', [False, True])
def test_stochastic_depth_drops_whole_images(shift):
    """Each block drops its residual branch for whole images: on a 20 x 20 map (four regions of
    windows; nine on the moved grid) every image's tokens are either all unchanged by a block
    or all changed, in every region and on both grids, and both outcomes occur."""
    torch.manual_seed(13)
    depth = 2 if shift else 1
    stage = PosMLPStage(None, 8, depth, 14, 2, 2.0, drop_path=[0.5] * depth, shift=shift).train()
    x = torch.randn(32, 8, 20, 20)
    block_inputs = []
    for block in stage.encoder:
        block.register_forward_pre_hook(lambda m, args: block_inputs.append(args[0].detach()))
    with torch.no_grad():
        out = stage(x)
    outputs = block_inputs[1:] + [to_windows(out, window_layout(32, 20, 20, 14, 7 if shift else 0, CPU))]
    layouts = [window_layout(32, 20, 20, 14, s, CPU) for s in ((0, 7) if shift else (0,))]
    dropped = []
    for i, (before, after) in enumerate(zip(block_inputs, outputs)):
        if shift and i == 0:  # the next block's input is on the other grid: compare on grid 0
            after = to_windows(from_windows(after, layouts[1], 20, 20), layouts[0])
        image = layouts[i % len(layouts)].image[:32 * 20 * 20]
        same = (before == after).all(dim=1)[:32 * 20 * 20]
        for b in range(32):
            tokens = same[image == b]
            assert tokens.all() or not tokens.any(), (i, b)
            dropped.append(bool(tokens.all()))
    assert any(dropped) and not all(dropped)
