"""The token mixers against the paper's formulas, and the fast path against the oracle."""
import itertools

import pytest
import torch

from mmdet_posmlp.models import posmlp
from mmdet_posmlp.models.posmlp import (GQPE, LRPE, DenseTokenMixer, PosMLPClassifier, PosMLPStage,
                                        WindowGrid, window_partition, window_reverse,
                                        window_tokens)
from mmdet_posmlp.models.reference import reference_stages
from conftest import randomize_


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
    P = m.matrices()
    expected = _gqpe_by_formula(m.attention_centers.detach(), m.attention_spreads.detach(), window)
    torch.testing.assert_close(P, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(P.sum(-1), torch.ones(groups, window ** 2, dtype=torch.float64))
    assert m.attention_centers.shape == (groups, 2) and m.attention_spreads.shape == (groups, 2, 2)
    assert sum(p.numel() for n, p in m.named_parameters() if n != 'token_proj_n_bias') == 6 * groups


def test_clipped_window_matrices():
    """A clipped window (3 x 2 tokens of a 4 x 4 window) mixes its own tokens only: GQPE's
    softmax is taken over them, LRPE and the dense mixer keep the full matrix's entries."""
    torch.manual_seed(2)
    tokens = window_tokens(4, 3, 2)
    assert tokens.tolist() == [0, 1, 4, 5, 8, 9]
    m = GQPE(4, 2).double()
    P = m.matrices(tokens)
    assert P.shape == (2, 6, 6)
    torch.testing.assert_close(P.sum(-1), torch.ones(2, 6, dtype=torch.float64))
    full = m.matrices()[:, tokens][:, :, tokens]
    torch.testing.assert_close(P, full / full.sum(-1, keepdim=True))
    for mixer in (LRPE(4, 2), DenseTokenMixer(4, 2)):
        with torch.no_grad():
            for prm in mixer.parameters():
                prm.normal_()
        assert torch.equal(mixer.matrices(tokens), mixer.matrices()[:, tokens][:, :, tokens])


def test_lrpe_indexes_the_table_as_specified():
    w, G = 4, 3
    m = LRPE(w, G)
    with torch.no_grad():
        m.window_relative_position_bias_table.copy_(torch.randn((2 * w - 1) ** 2, G))
    table = m.window_relative_position_bias_table
    P = m.matrices()
    for mi, ni in itertools.product(range(w * w), repeat=2):
        (rm, cm), (rn, cn) = divmod(mi, w), divmod(ni, w)
        idx = (rm - rn + w - 1) * (2 * w - 1) + (cm - cn + w - 1)
        assert torch.equal(P[:, mi, ni], table[idx])
    assert torch.count_nonzero(LRPE(w, G).window_relative_position_bias_table) == 0  # zero init


def test_channel_groups_are_interleaved():
    """Channel c must be mixed by group c % groups: put a distinct matrix in each group and
    check which one acts on which channel."""
    w, G, C = 3, 4, 8
    sgu = posmlp.PosSGU(2 * C, w, G, mixer='sgu')
    N = w * w
    with torch.no_grad():
        sgu.pos.token_proj_n_bias.zero_()
        for g in range(G):  # group g shifts tokens by g+1 (a permutation matrix)
            sgu.pos.token_proj_n_weight[g] = torch.roll(torch.eye(N), g + 1, dims=0)
    x = torch.randn(1, C, w, w)
    u, grid = window_partition(x, w)
    block = posmlp.PosMLPBlock(C, w, G, 2.0, mixer='sgu')
    order = block._gate_order  # grouped layout used inside blocks
    mixed = sgu.token_mix(u[order].clone(), grid.regions[0])
    back = torch.empty_like(mixed)
    back[order] = mixed
    for c in range(C):
        g = c % G
        assert torch.equal(back[c], torch.roll(u[c], g + 1, dims=0)), c


def test_window_partition_roundtrip_and_layout():
    x = torch.randn(2, 5, 9, 11)
    t, grid = window_partition(x, 4)
    assert t.shape == (5, 2 * 9 * 11)  # every column a real token: nothing padded
    assert torch.equal(window_reverse(t, grid), x)
    # whole windows first, then the clipped ones: right edge, bottom edge, corner
    shapes = [(r.win_rows, r.win_cols, r.rows, r.cols) for r in grid.regions]
    assert shapes == [(2, 2, 4, 4), (2, 1, 4, 3), (1, 2, 1, 4), (1, 1, 1, 3)]
    assert grid.regions[-1].stop == t.shape[1]
    # token (r, c) of whole window (i, j) of image b is column ((b * 2 + i) * 2 + j) * 16 + r * 4 + c
    b, i, j, r, c = 1, 1, 0, 2, 3
    assert torch.equal(t[:, ((b * 2 + i) * 2 + j) * 16 + r * 4 + c], x[b, :, i * 4 + r, j * 4 + c])
    # token (0, c) of image b's bottom-edge window j
    start = grid.regions[2].start
    b, j, c = 1, 1, 2
    assert torch.equal(t[:, start + (b * 2 + j) * 4 + c], x[b, :, 8, j * 4 + c])
    assert grid.image_of_column().tolist() == [
        b for r in grid.regions for b in range(2) for _ in range((r.stop - r.start) // 2)]


def test_divisible_size_is_one_region():
    grid = WindowGrid(2, 28, 42, 14)
    assert len(grid.regions) == 1 and grid.regions[0].stop == 2 * 28 * 42


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
    weights = {**dict(model.named_parameters()), **dict(model.named_buffers())}
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


def test_mixing_matrices_once_per_forward_per_window_shape(monkeypatch):
    """Each block computes its matrices once per forward for each window shape present (whole
    and clipped), not per window or image; inference reuses them until the weights change."""
    stage = PosMLPStage(None, 16, 2, 4, 2, 4.0).eval()
    calls = []
    real = GQPE.matrices
    monkeypatch.setattr(GQPE, 'matrices', lambda self, tokens=None: calls.append(
        None if tokens is None else len(tokens)) or real(self, tokens))
    x = torch.randn(3, 16, 10, 9)  # 2 x 2 whole windows, clipped 4 x 1, 2 x 4 and 2 x 1
    stage.train()
    stage(x).sum().backward()
    assert sorted(calls, key=str) == sorted([None, 4, 8, 2] * 2, key=str)
    calls.clear()
    stage.eval()
    with torch.no_grad():
        first = stage(x)
        assert len(calls) == 8
        again = stage(x)
        assert len(calls) == 8 and torch.equal(first, again)
        stage.encoder[0].gate_unit.pos.attention_centers.add_(0.5)  # a weight update
        stage(x)
        assert len(calls) == 12


def test_clipped_windows_cost_only_their_tokens():
    """FLOPs of a stage on a 15 x 14 map with 14 x 14 windows: the per-token Linear layers for
    210 tokens, a 196-token and a 14-token mixing product, and each shape's matrices once
    (padding to whole windows would pay for 392 tokens)."""
    from mmdet_posmlp.analysis.backbone_benchmark import count_flops
    C, w, G = 16, 14, 2
    stage = PosMLPStage(None, C, 1, w, G, 4.0).eval()
    hidden, gate = 4 * C, 2 * C
    flops = count_flops(stage, torch.randn(1, C, 15, 14))
    tokens = 15 * 14
    linear = 2 * tokens * ((C + 1) * hidden + gate * C)  # expansion (bias row) and output
    norm_stats = 2 * 2 * tokens * C                       # the two 1 x C products per token
    mixing = 2 * gate * (196 * 196 + 14 * 14)
    # GQPE's matrices, once per window shape (2 shapes): A = S S^T (G products of 2 x 2
    # matrices), then 5 coefficients per offset of each shape
    matrices = 2 * (2 * G * 2 * 2 * 2) + 2 * 5 * G * (196 * 196 + 14 * 14)
    assert flops == linear + norm_stats + mixing + matrices


@pytest.mark.parametrize('chunk_bytes', [1, 10 ** 9])
def test_inference_chunks_match_plain_reference(monkeypatch, chunk_bytes):
    """Inference runs blocks over chunks of whole windows, in place: one window per chunk and
    one chunk per region give the oracle's result, and the stage input is left untouched."""
    monkeypatch.setattr(posmlp, 'INFERENCE_CHUNK_BYTES', chunk_bytes)
    torch.manual_seed(7)
    cfg = dict(embed_dims=(16, 32, 64, 128), depths=(2, 1, 2, 1), windows=(4, 4, 3, 2),
               groups=(2, 4, 4, 8), mlp_ratios=(4, 4, 4, 2))
    model = randomize_(PosMLPClassifier(cfg)).double().eval()
    x = torch.randn(2, 3, 50, 38, dtype=torch.float64)
    x0 = x.clone()
    with torch.no_grad():
        fast = model.forward_stages(x)
        plain = reference_stages(model.state_dict(), model.setting, x)
    assert torch.equal(x, x0)
    for a, b in zip(fast, plain):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_flushed_softmax_is_softmax_without_subnormals():
    """Gradient of the softmax where nothing is flushed; no subnormal forward or backward when
    scores span hundreds (GQPE at init: far tokens near -170)."""
    torch.manual_seed(8)
    s = torch.randn(2, 5, 7, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(posmlp.FlushedSoftmax.apply, (s,))
    torch.testing.assert_close(posmlp.FlushedSoftmax.apply(s), s.softmax(-1))
    wide = (torch.linspace(0, -300, 196).repeat(4, 196, 1) + torch.randn(4, 196, 196)).requires_grad_()
    P = posmlp.FlushedSoftmax.apply(wide)
    P.backward(torch.randn_like(P) * 1e-12)
    tiny = torch.finfo(torch.float32).tiny
    for t in (P, wide.grad):
        assert not ((t != 0) & (t.abs() < tiny)).any()
    torch.testing.assert_close(P, wide.softmax(-1), rtol=1e-6, atol=2e-19)


def test_inference_caches_follow_training_updates():
    """Fused AdamW and BatchNorm update tensors in place without bumping their versions: after
    a training step, inference must use the new weights and statistics, not cached ones."""
    torch.manual_seed(9)
    cfg = dict(embed_dims=(16, 32, 64, 128), depths=(1, 1, 1, 1), windows=(4, 4, 3, 2),
               groups=(2, 4, 4, 8), mlp_ratios=(4, 4, 4, 2))
    model = PosMLPClassifier(cfg, num_classes=3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    x = torch.randn(2, 3, 40, 36)
    model.eval()
    with torch.no_grad():
        model(x)  # fills the caches
    model.train()
    model(x).sum().backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        cached = model(x)
    fresh = PosMLPClassifier(cfg, num_classes=3).eval()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected = fresh(x)
    torch.testing.assert_close(cached, expected, rtol=1e-5, atol=1e-6)
