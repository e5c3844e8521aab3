"""benchmarks/launch_count.py: the operator counter and the GEMM shape reader, on tiny models
whose operators and GEMMs are known by construction (real dispatch, no mocks; a second)."""
from collections import Counter

import pytest
import torch
import torch.nn as nn

from benchmarks.launch_count import count_ops, gemm_alignment, is_excluded, posmlp_window_tokens


def test_count_ops_linear_gelu():
    """Linear(8, 16) + GELU on a (4, 8) input that needs no gradient; loss = output.mean().

    forward:  linear -> t(weight) [view, left out] + addmm          1
              gelu                                                    1
              mean                                                    1
    backward: ones_like (the loss's gradient, torch.autograd.backward) 1
              MeanBackward: expand [view] + div (by the numel)       1
              GeluBackward: gelu_backward                             1
              AddmmBackward: weight: t [view] + mm (+ t [view]);
                             bias: sum over the batch (sum_to_size)   2
                             input: nothing (no gradient)
              TBackward: t [view];  AccumulateGrad: detach [view] x2 (gradients were None)
    = 3 forward + 5 backward operators, nothing else."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU())
    r = count_ops(model, torch.randn(4, 8))
    assert r['ops'] == Counter(addmm=1, gelu=1, mean=1, ones_like=1, div=1, gelu_backward=1,
                               mm=1, sum=1)
    assert (r['total'], r['forward'], r['backward']) == (8, 3, 5)
    assert set(r['excluded_ops']) <= {'t', 'expand', 'detach', 'view', '_reshape_alias',
                                      'empty_like', 'empty'}
    assert r['excluded_ops']['t'] >= 2 and r['excluded_ops']['expand'] == 1
    # the step left no gradients behind and can be counted again with the same result
    assert all(p.grad is None for p in model.parameters())
    assert count_ops(model, torch.randn(4, 8), warmup=0)['total'] == 8


def test_exclusion_rule():
    a = torch.ops.aten
    for op in (a.view.default, a._unsafe_view.default, a.t.default, a.permute.default,
               a.expand.default, a.slice.Tensor, a.select.int, a.split.Tensor, a.unbind.int,
               a.detach.default, a.as_strided.default, a.alias.default, a.empty.memory_format,
               a.empty_like.default, a.new_empty_strided.default, a.lift_fresh.default,
               a.transpose_.default, a.unsqueeze_.default):
        assert is_excluded(op), op
    for op in (a._to_copy.default, a.clone.default, a.copy_.default, a.add_.Tensor,
               a.add.Tensor, a.mm.default, a.zero_.default, a.fill_.Scalar, a.sum.dim_IntList,
               a.bernoulli_.float, a.index_select.default, a.cat.default,
               a.lift_fresh_copy.default):
        assert not is_excluded(op), op


class TwoGemms(nn.Module):
    """mm with a transposed operand and bmm with a transposed operand:
    forward:  mm(a.t(), x):  a is (K=16, M=5) stored, a.t() is (5, 16); x (16, 9)
                             -> M 5, N 9, K 16, 2*5*9*16 = 1440 FLOPs
              bmm(c, d.transpose(1, 2)): c (3, 4, 24), d (3, 6, 24) -> (3, 24, 6)
                             -> B 3, M 4, N 6, K 24, 2*3*4*6*24 = 3456 FLOPs
    backward (x needs no gradient): grad a.t() = grad_y (5, 9) @ x.t() (9, 16): K 9, 1440
              grad c  = grad_z (3, 4, 6) @ (3, 6, 24):  K 6, 3456
              grad dT = c^T (3, 24, 4) @ grad_z (3, 4, 6): K 4, 3456"""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.randn(16, 5))
        self.c = nn.Parameter(torch.randn(3, 4, 24))
        self.d = nn.Parameter(torch.randn(3, 6, 24))

    def forward(self, x):
        return torch.mm(self.a.t(), x), torch.bmm(self.c, self.d.transpose(1, 2))


@pytest.mark.parametrize('dtype', [torch.bfloat16, None])
def test_gemm_alignment_k_and_flops(dtype):
    torch.manual_seed(0)
    r = gemm_alignment(TwoGemms(), torch.randn(16, 9), exempt_k={6}, dtype=dtype)
    fwd = sorted((g['op'], g['B'], g['M'], g['N'], g['K'], g['flops'])
                 for g in r['gemms'] if g['phase'] == 'fwd')
    assert fwd == [('bmm', 3, 4, 6, 24, 3456), ('mm', 1, 5, 9, 16, 1440)]
    # backward: M and N depend on how autograd lays the product out; K and FLOPs do not
    bwd = sorted((g['op'], g['K'], g['flops']) for g in r['gemms'] if g['phase'] == 'bwd')
    assert bwd == [('bmm', 4, 3456), ('bmm', 6, 3456), ('mm', 9, 1440)]
    want = 'bfloat16' if dtype is not None else 'float32'
    assert {g['dtype'] for g in r['gemms']} == {want}
    assert r['calls'] == 5 and r['gflop'] == pytest.approx(13248e-9)
    # aligned: K 16 (1440) + K 24 (3456) = 4896 of 13248; K 6 (3456) exempt -> 4896 / 9792
    assert r['aligned_share_all'] == pytest.approx(4896 / 13248)
    assert r['aligned_share_exempt'] == pytest.approx(0.5)
    assert r['exempt_flop_share'] == pytest.approx(3456 / 13248)
    assert [(s['K'], s['flop_share']) for s in r['misaligned_shapes']] == \
        [(4, pytest.approx(3456 / 13248)), (9, pytest.approx(1440 / 13248))]
    assert r['per_dtype'][want]['aligned_share_exempt'] == pytest.approx(0.5)


def test_linear_3d_input_k():
    """Linear(12, 10) on (2, 7, 12): one (14 x 12) @ (12 x 10) GEMM forward, K 12, whichever
    aten op autograd's decomposition picks; backward: weight grad K 14, input grad K 10."""
    torch.manual_seed(0)
    r = gemm_alignment(nn.Linear(12, 10), torch.randn(2, 7, 12).requires_grad_(), exempt_k=(),
                       dtype=None)
    fwd = [(g['B'] * g['M'], g['N'], g['K']) for g in r['gemms'] if g['phase'] == 'fwd']
    assert fwd == [(14, 10, 12)]
    assert sorted(g['K'] for g in r['gemms'] if g['phase'] == 'bwd') == [10, 14]
    assert r['gflop'] == pytest.approx(3 * 2 * 14 * 10 * 12 * 1e-9)


def test_posmlp_window_tokens():
    # 800 x 1216: stage maps 200x304, 100x152, 50x76, 25x38; windows 14, 14, 14, 7
    # 200 = 14*14 + 4, 304 = 21*14 + 10 -> 196, 140, 56, 40
    # 100 = 7*14 + 2, 152 = 10*14 + 12 -> 196, 168, 28, 24
    # 50 = 3*14 + 8, 76 = 5*14 + 6     -> 196, 84, 112, 48
    # 25 = 3*7 + 4, 38 = 5*7 + 3       -> 49, 21, 28, 12
    assert posmlp_window_tokens(800, 1216) == {196, 140, 56, 40, 168, 28, 24, 84, 112, 48,
                                               49, 21, 12}
    # a map smaller than its window: only the clipped shape; odd sizes halve upwards
    assert posmlp_window_tokens(20, 28, windows=(14,)) == {5 * 7}
    assert posmlp_window_tokens(801, 1216, windows=(14,)) == {196, 140, 14 * 5, 50}
