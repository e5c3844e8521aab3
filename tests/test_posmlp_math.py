"""The token mixers against the paper's formulas, and the fast path against the oracle."""
import itertools

import pytest
import torch

from mmdet_posmlp.models import posmlp
from mmdet_posmlp.models.posmlp import (GQPE, LRPE, DenseTokenMixer, PosMLPClassifier, PosMLPStage,
                                        valid_token_mask, window_partition, window_reverse)
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


def test_gqpe_masked_softmax_is_over_valid_tokens_only():
    torch.manual_seed(2)
    m = GQPE(4, 2).double()
    mask = valid_token_mask(4, 3, 2)
    P = m.masked_matrices(mask)
    assert torch.all(P[:, :, ~mask] == 0)
    torch.testing.assert_close(P.sum(-1), torch.ones(2, 16, dtype=torch.float64))
    full = m.matrices()
    expected = full[:, :, mask] / full[:, :, mask].sum(-1, keepdim=True)
    torch.testing.assert_close(P[:, :, mask], expected)
    # an all-valid mask is the unpadded matrix, bit for bit
    assert torch.equal(m.masked_matrices(torch.ones(16, dtype=torch.bool)), full)


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
    mixed = sgu.token_mix(u[order].clone(), grid)
    back = torch.empty_like(mixed)
    back[order] = mixed
    for c in range(C):
        g = c % G
        assert torch.equal(back[c], torch.roll(u[c], g + 1, dims=0)), c


def test_window_partition_roundtrip_and_layout():
    x = torch.randn(2, 5, 9, 11)
    t, grid = window_partition(x, 4)
    assert (grid.rows, grid.cols, grid.pad_h, grid.pad_w) == (3, 3, 3, 1)
    assert t.shape == (5, 2 * 3 * 3 * 16)
    assert torch.equal(window_reverse(t, grid), x)
    # token (r, c) of window (i, j) of image b is column ((b * rows + i) * cols + j) * 16 + r * 4 + c
    b, i, j, r, c = 1, 2, 1, 0, 3
    assert torch.equal(t[:, ((b * 3 + i) * 3 + j) * 16 + r * 4 + c], x[b, :, i * 4 + r, j * 4 + c])


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


def test_border_fallback_equals_renormalisation(monkeypatch):
    """Both ways of restricting the softmax to valid tokens give the same result."""
    torch.manual_seed(5)
    stage = PosMLPStage(None, 16, 2, 5, 4, 4.0).double().eval()
    randomize_(stage)
    x = torch.randn(2, 16, 12, 8, dtype=torch.float64)
    with torch.no_grad():
        renormalised = stage(x)
        monkeypatch.setattr(posmlp, '_MIN_VALID_MASS', 2.0)  # forces the exact recompute
        exact = stage(x)
    torch.testing.assert_close(renormalised, exact, rtol=1e-12, atol=1e-12)


def test_padding_is_invisible(monkeypatch):
    """Valid outputs do not change when the padded values change. Padding noise of 1e4 would
    move any output it leaked into by far more than the tolerance, which only admits the
    last-bit differences of MKL's GEMM kernels (they depend on buffer alignment)."""
    torch.manual_seed(6)
    model = randomize_(PosMLPClassifier('tiny', drop_path_rate=0.0)).eval()
    x = torch.randn(1, 3, 90, 130)
    with torch.no_grad():
        zero_padded = model.forward_stages(x)

        def noisy_pad(t, grid):
            out = torch.randn(t.shape[0], t.shape[1], grid.rows * grid.window,
                              grid.cols * grid.window, dtype=t.dtype) * 1e4
            out[:, :, :grid.height, :grid.width] = t
            return out
        monkeypatch.setattr(posmlp, 'pad_to_windows', noisy_pad)
        noise_padded = model.forward_stages(x)
    for a, b in zip(zero_padded, noise_padded):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_divisible_size_takes_the_unpadded_path_exactly(monkeypatch):
    """At a size every window divides, the pad-aware code equals the reference without padding,
    and no border handling runs at all."""
    model = randomize_(PosMLPClassifier('tiny')).double().eval()
    calls = []
    monkeypatch.setattr(posmlp.PosSGU, '_renormalise_border',
                        lambda *a, **k: calls.append(1))
    x = torch.randn(1, 3, 448, 224, dtype=torch.float64)
    with torch.no_grad():
        fast = model.forward_stages(x)
        plain = reference_stages(model.state_dict(), model.setting, x)
    assert not calls
    for a, b in zip(fast, plain):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
