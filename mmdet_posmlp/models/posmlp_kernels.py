"""The memory-bound steps of a PosMLP block, each in one pass: Triton kernels on CUDA, PyTorch
elsewhere.

A block's gate works on the hidden activations h (2C', Tp), channel-major with the tokens of a
stage in window order (posmlp.py, WindowLayout). The token mixing is a batched product per
region of same-shaped windows, which needs each region's u = GELU(h_u) contiguous, (C', T_r):
"region-major" below, the regions' blocks one after another in one flat buffer. Around those
products everything is elementwise, and each step here reads and writes every element once:

- ``gelu_regions``: U = GELU(h_u), token-major to region-major (forward, and again in backward
  where u is recomputed instead of kept);
- ``gate_out``: y = M * GELU(h_v), M the mixed u (region-major) -> y token-major, zero in the
  columns that round the layout up;
- ``gate_grad_v``: from grad_y, M and h_v, the gradient of h_v (into grad_h) and G = grad_y *
  GELU(h_v), region-major, what the mixing's backward multiplies;
- ``gelu_grad_regions``: the gradient of h_u from the mixing's input gradient (region-major).

``layer_norm``: a block's LayerNorm whose output is written in the dtype the expansion GEMM runs
in (autocast would write float32 and cast it in another pass), forward and backward.

Which implementation runs is decided per call by ``use_kernels(t)``: the Triton kernels for
CUDA tensors when triton imports, the switch is on (``set_kernels``, or ``POSMLP_TRITON=0`` in
the environment to turn them off) and torch.compile is not tracing (Inductor fuses the PyTorch
path itself). Both give the same results within the dtype's rounding (tests/test_posmlp_kernels.py;
on the CPU the kernels run in Triton's interpreter, ``TRITON_INTERPRET=1``, for those tests).
"""
import contextlib
import os
from typing import Sequence

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:  # optional: the PyTorch path runs everywhere
    triton = None

_STATE = {'enabled': os.environ.get('POSMLP_TRITON', '1') != '0', 'any_device': False}


def set_kernels(enabled: bool) -> None:
    """Turn the Triton kernels on or off for every later call (POSMLP_TRITON=0 starts off)."""
    _STATE['enabled'] = bool(enabled)


def kernels_available() -> bool:
    return triton is not None


@contextlib.contextmanager
def kernels_on_any_device():
    """Tests: the kernels for CPU tensors too (Triton's interpreter, TRITON_INTERPRET=1 set
    before triton was imported)."""
    previous = dict(_STATE)
    _STATE.update(enabled=True, any_device=True)
    try:
        yield
    finally:
        _STATE.update(previous)


def use_kernels(t: torch.Tensor) -> bool:
    return (triton is not None and _STATE['enabled'] and (t.is_cuda or _STATE['any_device'])
            and not torch.compiler.is_compiling())


# --------------------------------------------------------------------------- PyTorch path

def region_spans(starts: Sequence[int]):
    """(start, end) of each region, from the region starts (end of the last included)."""
    return zip(starts[:-1], starts[1:])


def _region_blocks(buffer: torch.Tensor, channels: int, starts: Sequence[int]):
    """The (channels, T_r) views of a region-major buffer."""
    return [buffer[channels * s:channels * e].view(channels, e - s)
            for s, e in region_spans(starts)]


def _eager() -> bool:
    """Writes into strided views of a buffer (out=) save a copy each; the tracers and compilers
    take whole tensors instead (dynamo refuses a non-contiguous out=, the jit tracer drops
    writes into views)."""
    return not (torch.compiler.is_compiling() or torch.jit.is_tracing())


def _gelu_grad_into(grad: torch.Tensor, x: torch.Tensor, out: torch.Tensor) -> None:
    """out = GELU'(x) * grad, for `out` a strided view of the gradient buffer."""
    if _eager():
        torch.ops.aten.gelu_backward.grad_input(grad, x, grad_input=out)
    else:
        out.copy_(torch.ops.aten.gelu_backward(grad, x))


def _torch_gelu_regions(h: torch.Tensor, starts: Sequence[int]) -> torch.Tensor:
    C = h.shape[0] // 2
    if torch.jit.is_tracing():  # the tracer (TorchScript ONNX export) drops writes into views
        return torch.cat([F.gelu(h[:C, s:e]).flatten() for s, e in region_spans(starts)])
    U = h.new_empty(C * starts[-1])
    for (s, e), block in zip(region_spans(starts), _region_blocks(U, C, starts)):
        torch.ops.aten.gelu.out(h[:C, s:e], out=block)
    return U


def _torch_gate_out(M: torch.Tensor, h: torch.Tensor, starts: Sequence[int]) -> torch.Tensor:
    C = h.shape[0] // 2
    if _eager():
        y = h.new_empty(C, h.shape[1])
        for (s, e), block in zip(region_spans(starts), _region_blocks(M, C, starts)):
            torch.mul(block, F.gelu(h[C:, s:e]), out=y[:, s:e])
        y[:, starts[-1]:].zero_()
        return y
    parts = [block * F.gelu(h[C:, s:e])
             for (s, e), block in zip(region_spans(starts), _region_blocks(M, C, starts))]
    if h.shape[1] > starts[-1]:
        parts.append(h.new_zeros(C, h.shape[1] - starts[-1]))
    return torch.cat(parts, 1) if len(parts) > 1 else parts[0]


def _torch_gate_grad_v(grad_y: torch.Tensor, M: torch.Tensor, h: torch.Tensor,
                       starts: Sequence[int], grad_h: torch.Tensor) -> torch.Tensor:
    C = h.shape[0] // 2
    G = h.new_empty(C * starts[-1])
    for (s, e), m, g in zip(region_spans(starts), _region_blocks(M, C, starts),
                            _region_blocks(G, C, starts)):
        h_v, gy = h[C:, s:e], grad_y[:, s:e]
        torch.mul(gy, F.gelu(h_v), out=g)
        _gelu_grad_into(gy * m, h_v, grad_h[C:, s:e])
    grad_h[C:, starts[-1]:].zero_()
    return G


def _torch_gelu_grad_regions(grad_U: torch.Tensor, h: torch.Tensor, starts: Sequence[int],
                             grad_h: torch.Tensor) -> None:
    C = h.shape[0] // 2
    for (s, e), g in zip(region_spans(starts), _region_blocks(grad_U, C, starts)):
        _gelu_grad_into(g, h[:C, s:e], grad_h[:C, s:e])
    grad_h[:C, starts[-1]:].zero_()


# --------------------------------------------------------------------------- Triton path

if triton is not None:
    # globals a kernel reads must be constexpr (compiled Triton refuses others; its interpreter
    # does not check)
    _SQRT1_2 = tl.constexpr(0.7071067811865476)
    _INV_SQRT_2PI = tl.constexpr(0.3989422804014327)

    @triton.jit
    def _gelu_f32(x):
        return 0.5 * x * (1.0 + tl.math.erf(x * _SQRT1_2))

    @triton.jit
    def _gelu_grad_f32(x):
        return 0.5 * (1.0 + tl.math.erf(x * _SQRT1_2)) + x * _INV_SQRT_2PI * tl.exp(-0.5 * x * x)

    @triton.jit
    def _tile(starts_ptr, C, T, REGIONS: tl.constexpr, BLOCK_C: tl.constexpr,
              BLOCK_T: tl.constexpr):
        """A tile of (channel, token) of a (C, Tp) token-major matrix: its channels, tokens,
        and each element's offset in the region-major buffer (tokens < T)."""
        c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
        t = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
        first = tl.zeros([BLOCK_T], dtype=tl.int64)
        width = tl.zeros([BLOCK_T], dtype=tl.int64)
        for i in tl.static_range(REGIONS):
            lo = tl.load(starts_ptr + i).to(tl.int64)
            hi = tl.load(starts_ptr + i + 1).to(tl.int64)
            inside = (t >= lo) & (t < hi)
            first = tl.where(inside, lo, first)
            width = tl.where(inside, hi - lo, width)
        c64 = c.to(tl.int64)[:, None]
        region_major = C * first[None, :] + c64 * width[None, :] + (t[None, :] - first[None, :])
        return c64, t[None, :], region_major

    @triton.jit
    def _gelu_regions_kernel(h_ptr, u_ptr, starts_ptr, C, T, Tp, REGIONS: tl.constexpr,
                             BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr):
        c, t, rm = _tile(starts_ptr, C, T, REGIONS, BLOCK_C, BLOCK_T)
        mask = (c < C) & (t < T)
        x = tl.load(h_ptr + c * Tp + t, mask=mask, other=0.0).to(tl.float32)
        tl.store(u_ptr + rm, _gelu_f32(x).to(u_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _gate_out_kernel(m_ptr, h_ptr, y_ptr, starts_ptr, C, T, Tp, REGIONS: tl.constexpr,
                         BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr):
        c, t, rm = _tile(starts_ptr, C, T, REGIONS, BLOCK_C, BLOCK_T)
        real = (c < C) & (t < T)
        m = tl.load(m_ptr + rm, mask=real, other=0.0).to(tl.float32)
        v = tl.load(h_ptr + (C + c) * Tp + t, mask=real, other=0.0).to(tl.float32)
        y = tl.where(real, m * _gelu_f32(v), 0.0)
        tl.store(y_ptr + c * Tp + t, y.to(y_ptr.dtype.element_ty), mask=(c < C) & (t < Tp))

    @triton.jit
    def _gate_grad_v_kernel(gy_ptr, gy_stride_c, gy_stride_t, m_ptr, h_ptr, gh_ptr, g_ptr,
                            starts_ptr, C, T, Tp, REGIONS: tl.constexpr, BLOCK_C: tl.constexpr,
                            BLOCK_T: tl.constexpr):
        """grad_y by its strides: it arrives transposed, the gradient of the output Linear's
        (T, C') input."""
        c, t, rm = _tile(starts_ptr, C, T, REGIONS, BLOCK_C, BLOCK_T)
        real = (c < C) & (t < T)
        gy = tl.load(gy_ptr + c * gy_stride_c + t * gy_stride_t, mask=real,
                     other=0.0).to(tl.float32)
        m = tl.load(m_ptr + rm, mask=real, other=0.0).to(tl.float32)
        v = tl.load(h_ptr + (C + c) * Tp + t, mask=real, other=0.0).to(tl.float32)
        tl.store(g_ptr + rm, (gy * _gelu_f32(v)).to(g_ptr.dtype.element_ty), mask=real)
        gv = tl.where(real, gy * m * _gelu_grad_f32(v), 0.0)
        tl.store(gh_ptr + (C + c) * Tp + t, gv.to(gh_ptr.dtype.element_ty),
                 mask=(c < C) & (t < Tp))

    @triton.jit
    def _gelu_grad_regions_kernel(gu_ptr, h_ptr, gh_ptr, starts_ptr, C, T, Tp,
                                  REGIONS: tl.constexpr, BLOCK_C: tl.constexpr,
                                  BLOCK_T: tl.constexpr):
        c, t, rm = _tile(starts_ptr, C, T, REGIONS, BLOCK_C, BLOCK_T)
        real = (c < C) & (t < T)
        g = tl.load(gu_ptr + rm, mask=real, other=0.0).to(tl.float32)
        x = tl.load(h_ptr + c * Tp + t, mask=real, other=0.0).to(tl.float32)
        gx = tl.where(real, g * _gelu_grad_f32(x), 0.0)
        tl.store(gh_ptr + c * Tp + t, gx.to(gh_ptr.dtype.element_ty), mask=(c < C) & (t < Tp))

    @triton.jit
    def _layer_norm_fwd_kernel(x_ptr, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr, M, N, eps,
                               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.arange(0, BLOCK_N)
        mask = (rows[:, None] < M) & (cols[None, :] < N)
        offs = rows.to(tl.int64)[:, None] * N + cols[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        mean = tl.sum(x, axis=1) / N
        xc = tl.where(mask, x - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / N + eps)
        w = tl.load(w_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)
        y = xc * rstd[:, None] * w[None, :] + b[None, :]
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)
        tl.store(mean_ptr + rows, mean, mask=rows < M)
        tl.store(rstd_ptr + rows, rstd, mask=rows < M)

    @triton.jit
    def _layer_norm_bwd_kernel(gy_ptr, x_ptr, w_ptr, mean_ptr, rstd_ptr, gx_ptr, gw_ptr, gb_ptr,
                               M, N, CHUNKS: tl.constexpr, BLOCK_M: tl.constexpr,
                               BLOCK_N: tl.constexpr):
        """dx per row; dw and db summed over this program's CHUNKS x BLOCK_M rows into row
        `pid` of the partial sums (the caller adds the programs' rows). The loop's bound is a
        constant: one compilation whatever M is (triton 3.6's interpreter also takes no
        runtime bound there)."""
        pid = tl.program_id(0)
        cols = tl.arange(0, BLOCK_N)
        w = tl.load(w_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)
        gw = tl.zeros([BLOCK_N], dtype=tl.float32)
        gb = tl.zeros([BLOCK_N], dtype=tl.float32)
        for chunk in range(CHUNKS):
            rows = (pid * CHUNKS + chunk) * BLOCK_M + tl.arange(0, BLOCK_M)
            rmask = rows < M
            mask = rmask[:, None] & (cols[None, :] < N)
            offs = rows.to(tl.int64)[:, None] * N + cols[None, :]
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            gy = tl.load(gy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            mean = tl.load(mean_ptr + rows, mask=rmask, other=0.0)
            rstd = tl.load(rstd_ptr + rows, mask=rmask, other=0.0)
            xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
            gxhat = gy * w[None, :]
            c1 = tl.sum(xhat * gxhat, axis=1) / N
            c2 = tl.sum(gxhat, axis=1) / N
            gx = (gxhat - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
            tl.store(gx_ptr + offs, gx.to(gx_ptr.dtype.element_ty), mask=mask)
            gw += tl.sum(gy * xhat, axis=0)
            gb += tl.sum(gy, axis=0)
        tl.store(gw_ptr + pid * N + cols, gw, mask=cols < N)
        tl.store(gb_ptr + pid * N + cols, gb, mask=cols < N)


_BLOCK_C, _BLOCK_T = 8, 128


def _launch_tiles(kernel, channels: int, Tp: int, *args, starts: torch.Tensor, T: int) -> None:
    grid = (triton.cdiv(channels, _BLOCK_C), triton.cdiv(Tp, _BLOCK_T))
    kernel[grid](*args, starts, channels, T, Tp, REGIONS=starts.numel() - 1,
                 BLOCK_C=_BLOCK_C, BLOCK_T=_BLOCK_T)


def _triton_gelu_regions(h, starts, starts_t):
    C, Tp = h.shape[0] // 2, h.shape[1]
    U = h.new_empty(C * starts[-1])
    grid = (triton.cdiv(C, _BLOCK_C), triton.cdiv(starts[-1], _BLOCK_T))
    _gelu_regions_kernel[grid](h, U, starts_t, C, starts[-1], Tp, REGIONS=len(starts) - 1,
                               BLOCK_C=_BLOCK_C, BLOCK_T=_BLOCK_T)
    return U


def _triton_gate_out(M, h, starts, starts_t):
    C, Tp = h.shape[0] // 2, h.shape[1]
    y = h.new_empty(C, Tp)
    _launch_tiles(_gate_out_kernel, C, Tp, M, h, y, starts=starts_t, T=starts[-1])
    return y


def _triton_gate_grad_v(grad_y, M, h, starts, starts_t, grad_h):
    C, Tp = h.shape[0] // 2, h.shape[1]
    G = h.new_empty(C * starts[-1])
    _launch_tiles(_gate_grad_v_kernel, C, Tp, grad_y, grad_y.stride(0), grad_y.stride(1), M, h,
                  grad_h, G, starts=starts_t, T=starts[-1])
    return G


def _triton_gelu_grad_regions(grad_U, h, starts, starts_t, grad_h):
    C, Tp = h.shape[0] // 2, h.shape[1]
    _launch_tiles(_gelu_grad_regions_kernel, C, Tp, grad_U, h, grad_h, starts=starts_t,
                  T=starts[-1])


# --------------------------------------------------------------------------- the four steps

def gelu_regions(h: torch.Tensor, starts: Sequence[int], starts_t: torch.Tensor) -> torch.Tensor:
    """U = GELU(h[:C']) region-major, (C' * T,); h (2C', Tp) contiguous, starts the regions'
    first tokens then T (Python ints), starts_t the same as an int32 tensor on h's device."""
    if use_kernels(h):
        return _triton_gelu_regions(h, starts, starts_t)
    return _torch_gelu_regions(h, starts)


def gate_out(M: torch.Tensor, h: torch.Tensor, starts: Sequence[int],
             starts_t: torch.Tensor) -> torch.Tensor:
    """y = M * GELU(h[C':]), (C', Tp) token-major, zero after token T; M region-major."""
    if use_kernels(h):
        return _triton_gate_out(M, h, starts, starts_t)
    return _torch_gate_out(M, h, starts)


def gate_grad_v(grad_y: torch.Tensor, M: torch.Tensor, h: torch.Tensor, starts: Sequence[int],
                starts_t: torch.Tensor, grad_h: torch.Tensor) -> torch.Tensor:
    """Writes grad_h[C':] = grad_y * M * GELU'(h[C':]) (zero after token T) and returns
    G = grad_y * GELU(h[C':]) region-major."""
    if use_kernels(h):
        return _triton_gate_grad_v(grad_y, M, h, starts, starts_t, grad_h)
    return _torch_gate_grad_v(grad_y, M, h, starts, grad_h)


def gelu_grad_regions(grad_U: torch.Tensor, h: torch.Tensor, starts: Sequence[int],
                      starts_t: torch.Tensor, grad_h: torch.Tensor) -> None:
    """Writes grad_h[:C'] = grad_U * GELU'(h[:C']) token-major (zero after token T)."""
    if use_kernels(h):
        _triton_gelu_grad_regions(grad_U, h, starts, starts_t, grad_h)
    else:
        _torch_gelu_grad_regions(grad_U, h, starts, grad_h)


# --------------------------------------------------------------------------- LayerNorm

_LN_CHUNKS = 16  # row blocks per program of the backward: its partial sums are M / (16 BLOCK_M)


def _ln_blocks(N: int):
    block_n = triton.next_power_of_2(N)
    return max(1, min(16, 4096 // block_n)), block_n


class _LayerNormInto(torch.autograd.Function):
    """LayerNorm over the last dim of a contiguous (M, N) x, written in `dtype`; statistics
    and the affine in float32."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, dtype):
        M, N = x.shape
        y = x.new_empty((M, N), dtype=dtype)
        mean = x.new_empty(M, dtype=torch.float32)
        rstd = x.new_empty(M, dtype=torch.float32)
        block_m, block_n = _ln_blocks(N)
        _layer_norm_fwd_kernel[(triton.cdiv(M, block_m),)](
            x, weight, bias, y, mean, rstd, M, N, eps, BLOCK_M=block_m, BLOCK_N=block_n)
        ctx.save_for_backward(x, weight, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, mean, rstd = ctx.saved_tensors
        M, N = x.shape
        block_m, block_n = _ln_blocks(N)
        programs = triton.cdiv(M, _LN_CHUNKS * block_m)
        grad_x = torch.empty_like(x)
        partial_w = x.new_empty((programs, N), dtype=torch.float32)
        partial_b = x.new_empty((programs, N), dtype=torch.float32)
        _layer_norm_bwd_kernel[(programs,)](
            grad_y.contiguous(), x, weight, mean, rstd, grad_x, partial_w, partial_b, M, N,
            CHUNKS=_LN_CHUNKS, BLOCK_M=block_m, BLOCK_N=block_n)
        grad_w = partial_w.sum(0).to(weight.dtype) if ctx.needs_input_grad[1] else None
        grad_b = partial_b.sum(0).to(weight.dtype) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None


def layer_norm(x: torch.Tensor, norm: torch.nn.LayerNorm, dtype: torch.dtype) -> torch.Tensor:
    """norm(x) for a contiguous (M, N) x, in `dtype` (the compute dtype of the GEMM it feeds)."""
    if use_kernels(x) and x.is_contiguous() and norm.weight is not None:
        return _LayerNormInto.apply(x, norm.weight, norm.bias, norm.eps, dtype)
    return norm(x)


__all__ = ['set_kernels', 'kernels_available', 'kernels_on_any_device', 'use_kernels',
           'gelu_regions', 'gate_out', 'gate_grad_v', 'gelu_grad_regions', 'layer_norm']
