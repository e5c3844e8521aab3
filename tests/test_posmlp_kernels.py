"""PosMLP's fused steps (mmdet_posmlp/models/posmlp_kernels.py): each Triton kernel against the
PyTorch path and a float64 reference, forward and backward, float32 / float16 / bfloat16,
layouts with several regions, clipped windows and padding columns, odd sizes; then whole
models with the kernels against without.

Without a GPU the kernels run in Triton's interpreter on CPU tensors (conftest.py sets
TRITON_INTERPRET=1 before they are defined); with one (benchmarks/gpu_check.sh) on CUDA."""
import pytest
import torch

pytest.importorskip('triton')

from mmdet_posmlp.models import posmlp_kernels as K  # noqa: E402
from mmdet_posmlp.models.posmlp import PosMLPClassifier  # noqa: E402
from mmdet_posmlp.models.windows import window_layout  # noqa: E402
from conftest import randomize_  # noqa: E402

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# one rounding of the stored result (the kernels compute in float32 and round once)
TOL = {torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@pytest.fixture(autouse=True)
def kernels():
    """The kernels for whatever device the tensors are on (the interpreter on the CPU)."""
    with K.kernels_on_any_device():
        yield


def _close(got, want, dtype, what):
    """got (dtype) against a float64 reference: within one rounding of dtype, relative to the
    reference's largest value."""
    scale = want.abs().max().clamp_min(1.0)
    err = ((got.double() - want) .abs().max() / scale).item()
    assert err <= TOL[dtype], f'{what} ({dtype}): max error {err:.2e} > {TOL[dtype]:.1e}'


def _gelu64(x):
    return torch.nn.functional.gelu(x.double())


def _gelu_grad64(x):
    return torch.ops.aten.gelu_backward(torch.ones_like(x, dtype=torch.float64), x.double())


# (channels C', region starts, columns Tp): one region; four (clipped windows: right edge, bottom
# edge, corner); nine (shifted windows) with the padding columns that round Tp up to 8; odd sizes
LAYOUTS = [(16, [0, 128], 128), (12, [0, 40, 52, 100, 103], 104),
           (5, [0, 3, 12, 15, 27, 63, 72, 75, 84, 87], 88), (3, [0, 1], 8)]


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('channels,starts,Tp', LAYOUTS)
def test_gate_steps_match_pytorch_and_float64(channels, starts, Tp, dtype):
    g = torch.Generator().manual_seed(0)
    T = starts[-1]
    h = (torch.randn(2 * channels, Tp, generator=g) * 2).to(DEVICE, dtype)
    starts_t = torch.tensor(starts, dtype=torch.int32, device=DEVICE)
    region = torch.cat([torch.full((e - s,), i) for i, (s, e) in enumerate(zip(starts, starts[1:]))])

    def region_major(full):  # (C', T) token-major -> region-major, as the reference
        return torch.cat([full[:, s:e].reshape(-1) for s, e in zip(starts, starts[1:])])

    assert region.numel() == T
    h64 = h.double()
    # forward: U = GELU(h_u) region-major; y = M * GELU(h_v) token-major, zero padding
    U = K.gelu_regions(h, starts, starts_t)
    _close(U, region_major(_gelu64(h64[:channels, :T])), dtype, 'gelu_regions')
    M = (torch.randn(channels * T, generator=g)).to(DEVICE, dtype)
    y = K.gate_out(M, h, starts, starts_t)
    M_tok = torch.zeros(channels, T, dtype=torch.float64, device=DEVICE)
    for s, e in zip(starts, starts[1:]):
        M_tok[:, s:e] = M[channels * s:channels * e].double().view(channels, e - s)
    want = torch.zeros(channels, Tp, dtype=torch.float64, device=DEVICE)
    want[:, :T] = M_tok * _gelu64(h64[channels:, :T])
    _close(y, want, dtype, 'gate_out')
    # backward: grad of h_v and G; then grad of h_u from the mixing's input gradient
    # transposed, as it arrives from the output Linear
    grad_y = torch.randn(Tp, channels, generator=g).to(DEVICE, dtype).t()
    grad_h = torch.full_like(h, float('nan'))
    G = K.gate_grad_v(grad_y, M, h, starts, starts_t, grad_h)
    gy = grad_y.double()[:, :T]
    _close(G, region_major(gy * _gelu64(h64[channels:, :T])), dtype, 'gate_grad_v: G')
    want_v = torch.zeros(channels, Tp, dtype=torch.float64, device=DEVICE)
    want_v[:, :T] = gy * M_tok * _gelu_grad64(h64[channels:, :T])
    _close(grad_h[channels:], want_v, dtype, 'gate_grad_v: grad of h_v')
    grad_U = torch.randn(channels * T, generator=g).to(DEVICE, dtype)
    K.gelu_grad_regions(grad_U, h, starts, starts_t, grad_h)
    gU_tok = torch.zeros(channels, Tp, dtype=torch.float64, device=DEVICE)
    for s, e in zip(starts, starts[1:]):
        gU_tok[:, s:e] = grad_U[channels * s:channels * e].double().view(channels, e - s)
    want_u = gU_tok * _gelu_grad64(h64[:channels])
    _close(grad_h[:channels], want_u, dtype, 'gelu_grad_regions')
    assert not grad_h.isnan().any()  # every element written, the padding columns with zeros
    # the PyTorch path gives the same (it rounds its intermediate GELU too: two roundings)
    with K.kernels_on_any_device():
        K.set_kernels(False)
        try:
            assert not K.use_kernels(h)
            _close(K.gate_out(M, h, starts, starts_t), want, dtype, 'PyTorch gate_out') \
                if dtype == torch.float32 else None
        finally:
            K.set_kernels(True)


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('rows,width', [(37, 96), (8, 768), (1, 24), (130, 384)])
def test_layer_norm_matches_float64(rows, width, dtype):
    """Output in the compute dtype from a float32 residual stream; gradients in float32 for x,
    weight and bias (what autograd's LayerNorm gives after autocast's cast)."""
    g = torch.Generator().manual_seed(1)
    norm = torch.nn.LayerNorm(width, eps=1e-6).to(DEVICE)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(width, generator=g))
        norm.bias.copy_(torch.randn(width, generator=g))
    x = (torch.randn(rows, width, generator=g) * 3 + 1).to(DEVICE).requires_grad_()
    y = K.layer_norm(x, norm, dtype)
    assert y.dtype == dtype
    grad = torch.randn(rows, width, generator=g).to(DEVICE, dtype)
    y.backward(grad)
    x64 = x.detach().double().requires_grad_()
    w64 = norm.weight.detach().double().requires_grad_()
    b64 = norm.bias.detach().double().requires_grad_()
    y64 = torch.nn.functional.layer_norm(x64, (width,), w64, b64, 1e-6)
    y64.backward(grad.double())
    _close(y, y64, dtype, 'layer_norm')
    # the gradients are float32 whatever the output dtype: float32 rounding of sums over rows
    for got, want, what in ((x.grad, x64.grad, 'grad x'), (norm.weight.grad, w64.grad, 'grad w'),
                            (norm.bias.grad, b64.grad, 'grad b')):
        assert got.dtype == torch.float32
        _close(got, want, torch.float32 if rows < 100 else torch.float16, what)


def test_switch_and_where_the_kernels_run():
    x = torch.ones(2, 2)
    assert K.use_kernels(x)  # the fixture: any device
    with K.kernels_on_any_device():
        K.set_kernels(False)
        try:
            assert not K.use_kernels(x)
        finally:
            K.set_kernels(True)


# ---- whole models: the kernels against the PyTorch path -------------------------------------

SMALL = dict(embed_dims=(16, 32, 64, 128), depths=(1, 2, 2, 1), windows=(4, 4, 4, 2),
             groups=(2, 4, 8, 8), mlp_ratios=(4, 4, 4, 2))


def _step(model, x, use, autocast_dtype=None):
    model.zero_grad()
    K.set_kernels(use)
    try:
        with torch.autocast(torch.device(DEVICE).type, dtype=autocast_dtype or torch.float32,
                            enabled=autocast_dtype is not None):
            out = model(x)
        out.float().square().sum().backward()
    finally:
        K.set_kernels(True)
    return out.detach().double(), {n: p.grad.double() for n, p in model.named_parameters()
                                   if p.grad is not None}


def _rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize('shift', [False, True])
@pytest.mark.parametrize('autocast_dtype', [None, torch.bfloat16], ids=['float32', 'bfloat16'])
def test_model_with_kernels_matches_without(shift, autocast_dtype):
    """A small PosMLP (clipped windows at 75 x 53, and shifted ones) in training: the output and
    every parameter's gradient with the kernels against the same model in float64: the kernels'
    error is no larger than the PyTorch path's (they round less often), in float32 and under
    bfloat16 autocast."""
    torch.manual_seed(0)
    model = randomize_(PosMLPClassifier(SMALL, num_classes=5, shift=shift,
                                        drop_path_rate=0.0)).to(DEVICE).train()
    x = torch.randn(2, 3, 75, 53, device=DEVICE)
    ref_out, ref_grads = _step(model.double(), x.double(), False)
    model.float()
    out0, grads0 = _step(model, x, False, autocast_dtype)
    out1, grads1 = _step(model, x, True, autocast_dtype)
    assert set(grads0) == set(grads1) == set(ref_grads)
    names = [n for n in ref_grads  # biases before a BatchNorm in batch statistics: zero gradients
             if not (n.startswith('patch_embed.projs') and n.endswith('bias'))]
    bound = 1e-4 if autocast_dtype is None else 0.1
    assert _rel(out1, ref_out) <= 1.25 * _rel(out0, ref_out) + bound / 100
    errs0 = [_rel(grads0[n], ref_grads[n]) for n in names]
    errs1 = [_rel(grads1[n], ref_grads[n]) for n in names]
    assert max(errs1) < bound, max(zip(errs1, names))
    assert sum(errs1) <= 1.25 * sum(errs0) + bound / 100, (sum(errs1), sum(errs0))


def test_layout_carries_its_starts_for_the_kernels():
    layout = window_layout(2, 19, 11, 4, 2, torch.device('cpu'))
    assert layout.starts_tensor.dtype == torch.int32
    assert layout.starts_tensor.tolist() == list(layout.starts)


# ---- compiled for the GPUs users have, without one ------------------------------------------

_COMPILE_SCRIPT = r'''
import itertools, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from mmdet_posmlp.models import posmlp_kernels as K
arch = int(sys.argv[1])
done = 0
for dtype in ('bf16', 'fp16', 'fp32'):
    p = '*' + dtype
    tile = dict(starts_ptr='*i32', C='i32', T='i32', Tp='i32')
    for regions in (1, 4, 9):  # whole windows; clipped at the edges; shifted
        consts = dict(REGIONS=regions, BLOCK_C=K._BLOCK_C, BLOCK_T=K._BLOCK_T)
        for fn, ptrs in ((K._gelu_regions_kernel, ('h_ptr', 'u_ptr')),
                         (K._gate_out_kernel, ('m_ptr', 'h_ptr', 'y_ptr')),
                         (K._gate_grad_v_kernel, ('gy_ptr', 'gy_stride_c', 'gy_stride_t',
                                                  'm_ptr', 'h_ptr', 'gh_ptr', 'g_ptr')),
                         (K._gelu_grad_regions_kernel, ('gu_ptr', 'h_ptr', 'gh_ptr'))):
            sig = dict({name: 'i32' if 'stride' in name else p for name in ptrs}, **tile)
            triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts),
                           target=GPUTarget('cuda', arch, 32))
            done += 1
    for width in (96, 192, 384, 768):  # PosMLP-T's widths (S and B: 128 ... 1536)
        block_m, block_n = K._ln_blocks(width)
        f32 = '*fp32'
        triton.compile(ASTSource(fn=K._layer_norm_fwd_kernel, signature=dict(
            x_ptr=f32, w_ptr=f32, b_ptr=f32, y_ptr=p, mean_ptr=f32, rstd_ptr=f32, M='i32',
            N='i32', eps='fp32'), constexprs=dict(BLOCK_M=block_m, BLOCK_N=block_n)),
            target=GPUTarget('cuda', arch, 32))
        triton.compile(ASTSource(fn=K._layer_norm_bwd_kernel, signature=dict(
            gy_ptr=p, x_ptr=f32, w_ptr=f32, mean_ptr=f32, rstd_ptr=f32, gx_ptr=f32, gw_ptr=f32,
            gb_ptr=f32, M='i32', N='i32'), constexprs=dict(
            CHUNKS=K._LN_CHUNKS, BLOCK_M=block_m, BLOCK_N=block_n)),
            target=GPUTarget('cuda', arch, 32))
        done += 2
print('compiled', done)
'''


@pytest.mark.parametrize('arch', [90])
def test_kernels_compile_for_the_gpu(arch):
    """Every kernel, in every dtype and block configuration the model uses, compiled to a cubin
    for sm_90 (H100, H200) with the installed triton, no GPU needed: what the
    interpreter does not check (compiled Triton refuses what it lets through, e.g. a global
    that is not constexpr)."""
    import os
    import subprocess
    import sys
    from conftest import REPO
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    result = subprocess.run([sys.executable, '-c', _COMPILE_SCRIPT, str(arch)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1] == str(3 * (3 * 4 + 4 * 2))
