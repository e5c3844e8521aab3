"""PosMLP: gated MLPs whose token mixing comes from relative positional encodings.

Wang et al., "Parameterization of Cross-Token Relations with Relative Positional Encoding for
Vision MLP", ACM MM 2022. This file is the whole architecture, top to bottom:

    ConvStem (stride 4)
    -> 4 x PosMLPStage:   Downsample (stages 2-4)  -> tokens in window order (to_windows)
                          -> depth x PosMLPBlock   -> back to the map (from_windows)
    (classifier only: final LayerNorm, global average pool, head)

    PosMLPBlock:  x + DropPath(Dropout(Linear(PosSGU(GELU(Linear(LayerNorm(x)))))))
    PosSGU:       split hidden channels into u, v;   TokenMix(u) * v
    TokenMix:     per channel group g, a window-sized matrix P_g mixes the tokens of every
                  window; P_g comes from GQPE (default), LRPE, or a dense learned matrix (SGU).

Parameter names and state dicts follow the reference implementation, so its checkpoints load as
they are (its interleaved channel groups are contiguous here, see PosMLPBlock).

Shaped for what a GPU sees (few kernels, aligned GEMMs: windows.py, stacked_mixing; Triton kernels
on CUDA, posmlp_kernels.py). One forward for training and evaluation, on any device and under
autocast (GEMMs in the autocast dtype; LayerNorm statistics and GQPE's softmax in float32).
Deployment-only work is in each module's explicit `fuse()`, walked by timm's `reparameterize_model`.
"""
import contextlib
import math
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from timm.layers import (LayerNorm2d, register_notrace_module, resample_abs_pos_embed,
                         resize_rel_pos_bias_table_simple)
from timm.models import generate_default_cfgs, register_model, reparameterize_model

from . import posmlp_kernels as kernels
from .windows import (RegionIndex, StageWindows, WindowLayout, chunk_layouts, from_windows,
                      gather_rows, stage_windows, to_windows)
from .common import (CheckpointError, StagedClassifier, build_classifier, default_cfg,
                     drop_path_rates, init_trunc_normal, per_stage, unwrap_state_dict)

LN_EPS = 1e-6

# Settings of the published variants. B is not in the reference code; the paper's 82M fits it.
ARCH_SETTINGS = {
    'tiny': dict(embed_dims=(96, 192, 384, 768), depths=(2, 2, 18, 2), windows=(14, 14, 14, 7),
                 groups=(8, 16, 32, 64), mlp_ratios=(4, 4, 4, 2)),
    'small': dict(embed_dims=(128, 256, 512, 1024), depths=(2, 2, 18, 2), windows=(14, 14, 14, 7),
                  groups=(8, 16, 32, 64), mlp_ratios=(4, 4, 4, 2)),
    'base': dict(embed_dims=(192, 384, 768, 1536), depths=(2, 2, 18, 2), windows=(14, 14, 14, 7),
                 groups=(8, 16, 32, 64), mlp_ratios=(4, 4, 4, 2)),
}
ARCH_ALIASES = {'t': 'tiny', 's': 'small', 'b': 'base'}
MIXERS = ('gqpe', 'lrpe', 'sgu')


def resolve_arch(arch, **overrides) -> dict:
    """The full setting dict of an arch name ('tiny'|'small'|'base') or a dict, with
    `overrides` of its keys (one value for every stage, or one per stage), checked."""
    if isinstance(arch, str):
        name = ARCH_ALIASES.get(arch.lower(), arch.lower())
        if name not in ARCH_SETTINGS:
            raise KeyError(f"PosMLP: unknown arch '{arch}'; choose one of "
                           f"{sorted(ARCH_SETTINGS)} or pass a dict with keys "
                           f"{sorted(ARCH_SETTINGS['tiny'])}")
        arch = ARCH_SETTINGS[name]
    if not isinstance(arch, dict):
        raise TypeError(f'PosMLP: arch must be a str or a dict, got {type(arch).__name__}')
    arch = dict(arch, **overrides)
    missing = set(ARCH_SETTINGS['tiny']) - set(arch)
    unknown = set(arch) - set(ARCH_SETTINGS['tiny'])
    if missing or unknown:
        raise KeyError(f'PosMLP: arch dict has missing keys {sorted(missing)} and unknown keys '
                       f'{sorted(unknown)}; expected {sorted(ARCH_SETTINGS["tiny"])}')
    stages = len(tuple(arch['depths']))
    for key in overrides:
        arch[key] = per_stage(arch[key], stages, key, 'PosMLP')
    setting = {k: tuple(v) for k, v in arch.items()}
    lengths = {k: len(v) for k, v in setting.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f'PosMLP: arch entries must all have one value per stage, got lengths '
                         f'{lengths}')
    for i, (dim, ratio, g) in enumerate(zip(setting['embed_dims'], setting['mlp_ratios'],
                                            setting['groups'])):
        hidden = int(dim * ratio)
        if hidden % 2 or (hidden // 2) % g:
            raise ValueError(f'PosMLP: stage {i}: groups={g} does not divide the {hidden // 2} '
                             f'gated channels (embed_dim {dim} x mlp_ratio {ratio} / 2)')
    for i in range(1, len(setting['embed_dims'])):
        if setting['embed_dims'][i] % setting['embed_dims'][i - 1]:
            raise ValueError(f'PosMLP: embed_dims[{i}]={setting["embed_dims"][i]} must be a '
                             f'multiple of embed_dims[{i - 1}]={setting["embed_dims"][i - 1]} '
                             '(the downsampling conv is depthwise)')
    if any(w < 1 for w in setting['windows']):
        raise ValueError(f'PosMLP: windows must be positive, got {setting["windows"]}')
    return setting


def _has_autocast(device: torch.device) -> bool:
    # cpu and cuda answered without asking torch: older torch.compile cannot trace the query,
    # and a graph break per stage let it recompile with symbolic sizes
    return device.type in ('cpu', 'cuda') or torch.amp.is_autocast_available(device.type)


def autocast_off(device: torch.device):
    """A region where autocast does not apply on `device` (float32 math under mixed precision)."""
    if _has_autocast(device):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------- token mixers
# A mixer owns the per-token bias (named as in the reference) and gives mixing matrices P,
# out[m] = sum_n P[m, n] * u[n] + bias[m], for the windows of each region: P restricted to the
# region's tokens (a clipped window's), the softmax taken over them alone. GQPE and LRPE depend
# on relative positions only; the bias and the dense mixer index absolute positions. A stage
# asks for the matrices of all its blocks at once (`stacked_matrices`), in float32 or wider.

def _stack(mixers: Sequence[nn.Module], name: str) -> torch.Tensor:
    return torch.stack([getattr(m, name) for m in mixers])


_FLUSH_FLOOR = torch.finfo(torch.float32).tiny ** 0.5


class _QuadraticSoftmax(torch.autograd.Function):
    """Per region, P = softmax over n of s[m, n] = r[n] + (A p_m) . p_n, with probabilities
    below the square root of float32's smallest normal set to zero, forward and backward.

    GQPE's score -1/2 (d - delta)^T A (d - delta), d = p_n - p_m, is that plus terms in m alone,
    which the softmax over n cancels; so the (m, n) matrix is two broadcast multiply-adds of
    per-token vectors, elementwise: exact float32 even where a user turns TF32 matmuls on (a
    score error of 1e-3 moves a probability by as much).

    The flush: far tokens get probabilities near 1e-40 at init; on x86 their products run in the
    subnormal range, an order of magnitude slower (one mixing product: 3.5 s instead of 0.14 s on
    an Intel Xeon), as would autograd's softmax gradient of the unflushed output. The values
    changed are below 1.1e-19, far under the precision of a row that sums to one. A PosMLP-T
    training step with autograd's backward instead (AMD EPYC, whose subnormals cost less) takes
    1.02x the time and 1.05x the peak memory (benchmarks/autograd_functions.py, 2026-12-07)."""

    @staticmethod
    def forward(ctx, r, Ap, positions, sizes):
        # positions (sum n, 2) is one tensor and sizes Python ints: the jit tracer (mmengine's
        # FLOP count, the TorchScript ONNX exporter) crashes on a Function given a list of tensors
        # made inside the trace, or sizes from numel(), which it returns as tensors
        P = []
        for r_i, Ap_i, p in zip(r.split(sizes, -1), Ap.split(sizes, -2), positions.split(sizes)):
            s = torch.addcmul(r_i.unsqueeze(-2), Ap_i[..., 0:1], p[:, 0])
            s = s.addcmul_(Ap_i[..., 1:2], p[:, 1])
            P.append(F.threshold(torch.softmax(s, dim=-1), _FLUSH_FLOOR, 0.0))
        ctx.sizes = sizes
        ctx.save_for_backward(positions, *P)
        return tuple(P)

    @staticmethod
    def backward(ctx, *grads):
        grad_r, grad_Ap = [], []
        positions, *Ps = ctx.saved_tensors
        for P, p, g in zip(Ps, positions.split(ctx.sizes), grads):
            if g is None:
                g = torch.zeros_like(P)
            g = torch._softmax_backward_data(g, P, -1, P.dtype)
            grad_r.append(g.sum(-2))
            grad_Ap.append(g @ p.to(g.dtype))
        return torch.cat(grad_r, -1), torch.cat(grad_Ap, -2), None, None


class GQPE(nn.Module):
    """Generalized quadratic positional encoding (the default of the released models):
    score[m, n] = -1/2 (d - delta)^T A (d - delta),  d = (col_n - col_m, row_m - row_n),
    A = S S^T;  P[m, :] = softmax over n. Six parameters per group, whatever the window."""
    init_std = 0.01

    def __init__(self, window: int, groups: int):
        super().__init__()
        self.window, self.groups, self.num_tokens = window, groups, window * window
        self.attention_centers = nn.Parameter(torch.zeros(groups, 2).normal_(0.0, self.init_std))
        noise = torch.zeros(groups, 2, 2).normal_(0.0, self.init_std)
        self.attention_spreads = nn.Parameter(torch.eye(2).repeat(groups, 1, 1) + noise)
        self.token_proj_n_bias = nn.Parameter(torch.zeros(1, self.num_tokens, 1))

    @staticmethod
    def stacked_matrices(mixers: Sequence['GQPE'],
                         regions: Sequence[RegionIndex]) -> List[torch.Tensor]:
        """Per region, (len(mixers), groups, n, n) probabilities in float32 or wider."""
        S = _stack(mixers, 'attention_spreads')
        dtype = torch.promote_types(S.dtype, torch.float32)
        with autocast_off(S.device):
            S, delta = S.to(dtype), _stack(mixers, 'attention_centers').to(dtype)
            # products as broadcast multiply-adds, not matmuls (TF32, see _QuadraticSoftmax)
            A = (S.unsqueeze(-2) * S.unsqueeze(-3)).sum(-1)                    # S S^T
            p = torch.cat([r.positions for r in regions]).to(dtype)           # (sum n, 2)
            Ap = (A.unsqueeze(-3) * p.unsqueeze(-2)).sum(-1)                  # A p_n
            Adelta = (A * delta.unsqueeze(-2)).sum(-1)                        # A delta
            r = ((Adelta.unsqueeze(-2) - 0.5 * Ap) * p).sum(-1)  # delta^T A p_n - p_n^T A p_n / 2
            sizes = [len(x.tokens) for x in regions]
            return list(_QuadraticSoftmax.apply(r, Ap, p, sizes))


class LRPE(nn.Module):
    """Learned relative positional encoding: one table entry per relative offset and group."""

    def __init__(self, window: int, groups: int):
        super().__init__()
        self.window, self.groups, self.num_tokens = window, groups, window * window
        self.window_relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window - 1) ** 2, groups))
        self.token_proj_n_bias = nn.Parameter(torch.zeros(1, self.num_tokens, 1))

    @staticmethod
    def stacked_matrices(mixers: Sequence['LRPE'],
                         regions: Sequence[RegionIndex]) -> List[torch.Tensor]:
        table = _stack(mixers, 'window_relative_position_bias_table').transpose(1, 2)
        return [table.index_select(2, r.relative).unflatten(2, (-1, r.tokens.numel()))
                for r in regions]


class DenseTokenMixer(nn.Module):
    """gMLP's spatial gating FC inside a window (the paper's 'SGU' ablation): a dense learned
    N x N matrix per group, initialised near zero with a bias of one so the gate starts as v."""

    def __init__(self, window: int, groups: int):
        super().__init__()
        self.window, self.groups, self.num_tokens = window, groups, window * window
        N = self.num_tokens
        self.token_proj_n_weight = nn.Parameter(torch.zeros(groups, N, N).normal_(0.0, 1e-6))
        self.token_proj_n_bias = nn.Parameter(torch.ones(1, N, 1))

    @staticmethod
    def stacked_matrices(mixers: Sequence['DenseTokenMixer'],
                         regions: Sequence[RegionIndex]) -> List[torch.Tensor]:
        weight = _stack(mixers, 'token_proj_n_weight').flatten(2)
        return [weight.index_select(2, r.pairs).unflatten(2, (-1, r.tokens.numel()))
                for r in regions]


MIXER_CLASSES = {'gqpe': GQPE, 'lrpe': LRPE, 'sgu': DenseTokenMixer}


def stacked_mixing(mixers: Sequence[nn.Module], layout: 'WindowLayout',
                   dtype: torch.dtype) -> List[Tuple[torch.Tensor, ...]]:
    """For each mixer (the blocks of a stage on one grid), the (P, bias) of every region of the
    layout, in the compute dtype: (P_0, bias_0, P_1, bias_1, ...). One stacked computation for
    all the blocks, then per-block views; cast once."""
    mixers = list(mixers)
    Ps = type(mixers[0]).stacked_matrices(mixers, layout.indices)
    bias = _stack(mixers, 'token_proj_n_bias').flatten(1).index_select(1, layout.bias_tokens)
    per_region = []
    for P, b in zip(Ps, bias.split([r.tokens.numel() for r in layout.indices], 1)):
        per_region += [P.to(dtype).unbind(0), b.to(dtype).unbind(0)]
    return list(zip(*per_region))


def gated_token_mix(h: torch.Tensor, starts: Sequence[int], starts_t: Optional[torch.Tensor],
                    mixing: Sequence[torch.Tensor]):
    """(y, U, M): y = TokenMix(u) * v with [u; v] = GELU(h), for h (2C', Tp) channel-major in
    window order; U (u) and M (the mixed u) region-major (each region's (C', T_r) block
    contiguous, what its batched product needs), what the backward needs."""
    # inputs already in the compute dtype
    with autocast_off(h.device):
        gated = h.shape[0] // 2
        U = kernels.gelu_regions(h, starts, starts_t)
        tracing = torch.jit.is_tracing()  # the tracer drops writes into views (ONNX export)
        M = None if tracing else torch.empty_like(U)
        parts = []
        for i, (s, e) in enumerate(kernels.region_spans(starts)):
            P, bias = mixing[2 * i], mixing[2 * i + 1]
            groups, n = P.shape[0], P.shape[-1]
            u = U[gated * s:gated * e].view(groups, -1, n)
            out = None if tracing else M[gated * s:gated * e].view(groups, -1, n)
            parts.append(torch.baddbmm(bias.view(1, 1, n), u, P.transpose(1, 2), out=out))
        if tracing:
            M = torch.cat([part.flatten() for part in parts])
        return kernels.gate_out(M, h, starts, starts_t), U, M


class _GeluGatedTokenMix(torch.autograd.Function):
    """gated_token_mix with its own backward, whose elementwise steps (posmlp_kernels: GELU into
    region-major, the gate, their gradients) each read and write every element once.

    Backward keeps h and M; on CUDA u is recomputed from h (one elementwise pass), saving a quarter
    of the block's largest activations; on the CPU, where GELU's erf costs more than the memory, it
    is kept. Autograd would keep GELU(h) whole and turn the u / v row slices and the region column
    slices into zero-filled gradients the size of h; here h's gradient is one buffer. With plain
    autograd, a PosMLP-T training step (CPU, batch 2, 512x768) takes 1.12x the time and 1.13x the
    peak memory (benchmarks/autograd_functions.py, 2026-12-07); the Triton kernels need it."""

    @staticmethod
    def forward(ctx, h, starts, starts_t, *mixing):
        y, U, M = gated_token_mix(h, starts, starts_t, mixing)
        ctx.starts = starts
        ctx.keep_u = not (h.is_cuda or kernels.use_kernels(h))
        ctx.save_for_backward(h, M, starts_t, U if ctx.keep_u else None, *mixing)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        starts = ctx.starts
        h, M, starts_t, U, *mixing = ctx.saved_tensors
        with autocast_off(h.device):
            gated = h.shape[0] // 2
            grad_h = torch.empty_like(h)
            G = kernels.gate_grad_v(grad_y.to(h.dtype), M, h, starts, starts_t, grad_h)
            if U is None:
                U = kernels.gelu_regions(h, starts, starts_t)
            grad_U = torch.empty_like(U)
            grad_mixing = []
            for i, (s, e) in enumerate(kernels.region_spans(starts)):
                P = mixing[2 * i]
                groups, n = P.shape[0], P.shape[-1]
                g = G[gated * s:gated * e].view(groups, -1, n)
                torch.bmm(g, P, out=grad_U[gated * s:gated * e].view(groups, -1, n))
                need_P, need_bias = ctx.needs_input_grad[3 + 2 * i: 5 + 2 * i]
                u = U[gated * s:gated * e].view(groups, -1, n)
                grad_mixing.append(torch.bmm(g.transpose(1, 2), u) if need_P else None)
                grad_mixing.append(g.sum(dim=(0, 1)) if need_bias else None)
            kernels.gelu_grad_regions(grad_U, h, starts, starts_t, grad_h)
        return (grad_h, None, None, *grad_mixing)


class PosSGU(nn.Module):
    """Positional spatial gating unit: TokenMix(u) * v, with no norm inside the gate. It takes
    the hidden activations before the block's GELU (see _GeluGatedTokenMix) and the mixing
    matrices that its stage computed for all its blocks (`stacked_mixing`)."""

    def __init__(self, dim: int, window: int, groups: int, mixer: str = 'gqpe'):
        super().__init__()
        if mixer not in MIXER_CLASSES:
            raise KeyError(f"PosMLP: unknown mixer '{mixer}', choose one of {MIXERS}")
        self.gate_dim, self.groups, self.window = dim // 2, groups, window
        self.pos = MIXER_CLASSES[mixer](window, groups)

    def forward(self, h: torch.Tensor, layout: 'WindowLayout',
                mixing: Sequence[torch.Tensor]) -> torch.Tensor:
        """h: (2 * gate_dim, T) channel-major, groups contiguous, tokens in window order."""
        if torch.compiler.is_compiling() and not torch.is_grad_enabled():
            # the same forward without the Function: torch.compile (2.14) mis-binds a Function's
            # arguments under no_grad when some require gradients (parameters): a break per block
            return gated_token_mix(h, layout.starts, layout.starts_tensor, mixing)[0]
        return _GeluGatedTokenMix.apply(h, layout.starts, layout.starts_tensor, *mixing)


# --------------------------------------------------------------------------- block and stage

class DropPath(nn.Module):
    """Stochastic depth per image: x + y with y dropped for whole images (scaled by 1 / keep for
    the others), one draw per block and forward, whichever regions the image's tokens are in."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor, y: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x + y
        keep = 1.0 - self.drop_prob
        mask = y.new_empty(layout.batch).bernoulli_(keep).div_(keep)
        return torch.addcmul(x, y, mask.index_select(0, layout.image).unsqueeze(1))

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}'


class PosMLPBlock(nn.Module):
    """One gated MLP: x + DropPath(Dropout(proj_c_s(PosSGU(GELU(proj_c_e(norm(x)))))))."""

    def __init__(self, dim: int, window: int, groups: int, mlp_ratio: float, mixer: str = 'gqpe',
                 drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.dim, self.hidden = dim, hidden
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.proj_c_e = nn.Linear(dim, hidden)
        self.gate_unit = PosSGU(hidden, window, groups, mixer)
        self.proj_c_s = nn.Linear(hidden // 2, dim)
        self.drop = nn.Dropout(drop)
        self.drop_path = DropPath(drop_path)
        # the parameters keep the gate's channel groups contiguous (for the batched mixing), state
        # dicts the reference's interleaved layout (channel c in group c % groups): converted when
        # saved and loaded, not per step
        half = torch.arange(hidden // 2).view(-1, groups).t().flatten()  # grouped order
        self._hidden_order = torch.cat([half, half + hidden // 2])
        self._gate_order = half
        self.register_state_dict_post_hook(PosMLPBlock._to_reference_layout)
        self.register_load_state_dict_pre_hook(PosMLPBlock._from_reference_layout)

    def _layouts(self, prefix: str):
        """(key, dim, grouped order) of each tensor whose layout differs from the reference."""
        return ((prefix + 'proj_c_e.weight', 0, self._hidden_order),
                (prefix + 'proj_c_e.bias', 0, self._hidden_order),
                (prefix + 'proj_c_s.weight', 1, self._gate_order))

    @staticmethod
    def _to_reference_layout(block, state_dict, prefix, local_metadata):
        for key, dim, order in block._layouts(prefix):
            # keep_vars=True (torch.jit's tracer matches the module's own variables by identity):
            # given as they are, in the grouped layout
            if key in state_dict and not isinstance(state_dict[key], nn.Parameter):
                t = state_dict[key]
                state_dict[key] = t.index_select(dim, torch.argsort(order).to(t.device))

    @staticmethod
    def _from_reference_layout(block, state_dict, prefix, *args):
        for key, dim, order in block._layouts(prefix):
            t = state_dict.get(key)
            if isinstance(t, torch.Tensor) and t.dim() > dim and t.shape[dim] == order.numel():
                state_dict[key] = t.index_select(dim, order.to(t.device))

    def forward(self, x: torch.Tensor, layout: WindowLayout,
                mixing: Sequence[torch.Tensor]) -> torch.Tensor:
        """x: (T, C) the stage's tokens in window order; mixing: this block's matrices and
        biases per region (stacked_mixing)."""
        # the norm in the GEMM's dtype (a kernel on CUDA); the hidden activations channel-major,
        # (rC, T): the token mixing is then a batched product over free views of them
        normed = kernels.layer_norm(x, self.norm, compute_dtype(x))
        h = torch.addmm(self.proj_c_e.bias.unsqueeze(1), self.proj_c_e.weight, normed.t())
        y = self.gate_unit(h, layout, mixing)
        y = self.drop(self.proj_c_s(y.t()))
        return self.drop_path(x, y, layout)


class Downsample(nn.Module):
    """Depthwise 3x3 stride-2 conv with channel multiplier, then LayerNorm over channels."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, 3, stride=2, padding=1, groups=in_dim)
        self.norm = nn.LayerNorm(out_dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # contiguous NCHW, not the channels-last view a stage returns: cuDNN's weight gradient of
        # this depthwise conv on channels-last input took 60% of a GPU training step (H200, bf16,
        # batch 8: 288 wgrad kernels of 0.6 ms); on NCHW PyTorch's own depthwise kernels run
        x = self.conv(x.contiguous())
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvStem(nn.Module):
    """Stride-4 stem: conv3x3/2 + BN + GELU, conv3x3/2 + BN + GELU, conv1x1 + BN."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        chans = [in_chans, dim // 2, dim, dim]
        self.projs = nn.Sequential(
            nn.Conv2d(chans[0], chans[1], 3, stride=2, padding=1),
            nn.Conv2d(chans[1], chans[2], 3, stride=2, padding=1),
            nn.Conv2d(chans[2], chans[3], 1))
        self.norms = nn.Sequential(*[nn.BatchNorm2d(c, eps=LN_EPS) for c in chans[1:]])
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (proj, norm) in enumerate(zip(self.projs, self.norms)):
            x = norm(proj(x))
            if i < len(self.projs) - 1:
                x = self.act(x)
        return x

    @torch.no_grad()
    def fuse(self) -> nn.Sequential:
        """Deployment: each BatchNorm's running statistics and affine folded into its conv, as
        plain layers (conv, GELU, conv, GELU, conv). The weights are kept channels-last, the native
        layout of oneDNN's and cuDNN's convolutions, which then run without a layout change (on
        the CPU, half the stem's time at 800x1344)."""
        layers = []
        for i, (proj, norm) in enumerate(zip(self.projs, self.norms)):
            scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
            conv = nn.Conv2d(proj.in_channels, proj.out_channels, proj.kernel_size, proj.stride,
                             proj.padding).to(proj.weight)
            conv.weight.copy_(proj.weight * scale[:, None, None, None])
            conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last)
            conv.bias.copy_((proj.bias - norm.running_mean) * scale + norm.bias)
            layers += [conv, nn.GELU()] if i < len(self.projs) - 1 else [conv]
        return nn.Sequential(*layers).eval()


# Deployment on the CPU: a fused stage runs each block over chunks of whole windows whose hidden
# activations take about this many bytes, so that a chunk's passes (norm, expansion, GELU, mixing,
# gate, output, residual) read what the previous one wrote from the cache instead of memory.
# Windows mix only among themselves, so the chunks give the whole map's result.
CPU_CHUNK_BYTES = 8 << 20


def _chunks_pay(x: torch.Tensor) -> bool:
    """Chunks for fused inference on the CPU, in eager mode (the tracers and compilers see the
    whole-map form, one node per operation)."""
    return (x.device.type == 'cpu' and not torch.is_grad_enabled() and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling())


def _blockwise_in_chunks(block: 'PosMLPBlock', tokens: torch.Tensor, layout: WindowLayout,
                         mixing: Sequence[torch.Tensor]) -> torch.Tensor:
    """block(tokens, layout, mixing), inference only, chunk by chunk, written into `tokens`."""
    rows = CPU_CHUNK_BYTES // (block.hidden * tokens.element_size())
    for start, end, region, part in chunk_layouts(layout, rows):
        tokens[start:end] = block(tokens[start:end], part, mixing[2 * region:2 * region + 2])
    return tokens


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the GEMMs of a block run in: autocast's where it is on, else x's."""
    if _has_autocast(x.device) and torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class PosMLPStage(nn.Module):
    """Optional downsampling, then `depth` blocks on the map's windows: its tokens put into window
    order once, all the blocks' mixing matrices computed in one stacked step, the blocks run on the
    (T, C) token matrix, the tokens put back. Without `shift` all blocks share one window grid. With
    `shift` (not in the reference: Swin's idea, no new parameters) every second block uses the grid
    moved by half a window down and right: information crosses window borders within a stage."""

    def __init__(self, in_dim: Optional[int], dim: int, depth: int, window: int, groups: int,
                 mlp_ratio: float, mixer: str = 'gqpe', drop: float = 0.0,
                 drop_path: Sequence[float] = (), with_cp: bool = False, shift: bool = False):
        super().__init__()
        self.window = window
        self.shift = window // 2 if shift else 0
        self.with_cp = with_cp
        self.pool = Downsample(in_dim, dim) if in_dim is not None else nn.Identity()
        drop_path = list(drop_path) or [0.0] * depth
        self.encoder = nn.Sequential(*[
            PosMLPBlock(dim, window, groups, mlp_ratio, mixer, drop, drop_path[i])
            for i in range(depth)])
        self.fixed_mixing: Optional[Dict[tuple, list]] = None  # set by fuse()

    def mixing(self, windows: StageWindows, dtype: torch.dtype) -> List[list]:
        """Per grid, per block of that grid, its (P, bias) per region (stacked_mixing)."""
        num_grids = len(windows.grids)
        return [stacked_mixing([b.gate_unit.pos for b in self.encoder[g::num_grids]], layout, dtype)
                if g < len(self.encoder) else []  # depth 1: no block on the moved grid
                for g, layout in enumerate(windows.grids)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C, H', W')."""
        x = self.pool(x)
        if len(self.encoder) == 0:
            return x
        B, _, H, W = x.shape
        windows = stage_windows(B, H, W, self.window, self.shift, x.device)
        dtype = compute_dtype(x)
        mixing = (self.mixing(windows, dtype) if self.fixed_mixing is None
                  else self._fixed_mixing(windows, (B, H, W, x.device, dtype), dtype))
        num_grids = len(windows.grids)
        tokens = to_windows(x, windows.grids[0])
        for i, block in enumerate(self.encoder):
            grid = i % num_grids
            if num_grids > 1 and i:
                tokens = gather_rows(tokens, windows.into[grid], windows.grids[grid].rows)
            args = (tokens, windows.grids[grid], mixing[grid][i // num_grids])
            if self.with_cp and torch.is_grad_enabled():
                tokens = cp.checkpoint(block, *args, use_reentrant=False)
            elif self.fixed_mixing is not None and _chunks_pay(x):
                tokens = _blockwise_in_chunks(block, *args)
            else:
                tokens = block(*args)
        return from_windows(tokens, windows.grids[(len(self.encoder) - 1) % num_grids], H, W)

    # ---- deployment
    def fuse(self) -> 'PosMLPStage':
        """Deployment step: the mixing matrices depend on the weights and the map's size only, so
        once the weights are final they are computed once per size and kept. Inference only: a
        fused stage refuses to run with gradients."""
        self.fixed_mixing = {}
        return self

    def _fixed_mixing(self, windows: StageWindows, key: tuple, dtype: torch.dtype) -> List[list]:
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()):
            raise RuntimeError('PosMLPStage: this stage was fused for inference (fuse()) and '
                               'keeps its mixing matrices fixed; run it under torch.no_grad() '
                               'or torch.inference_mode(), or build an unfused model to train')
        if key not in self.fixed_mixing:
            with torch.no_grad():
                self.fixed_mixing[key] = self.mixing(windows, dtype)
        return self.fixed_mixing[key]

    def _apply(self, fn, *args, **kwargs):
        if self.fixed_mixing is not None:
            self.fixed_mixing = {}  # on another device or dtype: computed again
        return super()._apply(fn, *args, **kwargs)


def build_stages(setting: dict, mixer: str = 'gqpe', drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, with_cp: bool = False,
                 shift: bool = False) -> nn.Sequential:
    """The four stages ('levels' in the reference), drop path ramped linearly over all blocks."""
    if mixer not in MIXERS:
        raise KeyError(f"PosMLP: unknown mixer '{mixer}', choose one of {MIXERS}")
    dims = (None,) + tuple(setting['embed_dims'])
    return nn.Sequential(*[
        PosMLPStage(dims[i], dims[i + 1], depth, setting['windows'][i], setting['groups'][i],
                    setting['mlp_ratios'][i], mixer, drop_rate, rates, with_cp, shift)
        for i, (depth, rates) in enumerate(zip(
            setting['depths'], drop_path_rates(setting['depths'], drop_path_rate)))])


class PosMLPClassifier(StagedClassifier):
    """The ImageNet classifier, with the reference's parameter names (timm: posmlp_t/s/b).

    ConvStem -> levels (4 x PosMLPStage) -> norm (LayerNorm over channels) -> global pool ->
    dropout -> head, with timm's model API (``StagedClassifier``; ``features_only=True`` builds a
    ``feature_cls='getter'`` net on ``forward_intermediates``). Any input size: the windows clip
    at the right and bottom edges (see ``window_regions``); nothing is sized by ``img_size``.

    Export (docs/export.md): ``torch.compile``, torch.export and the jit tracer capture the model;
    ``torch.jit.script`` cannot type the window layouts (NamedTuples of variable-length tuples)
    nor the custom autograd Functions, and stops with "Can not create tuple with None type". FX:
    ``PosMLPStage`` is a timm leaf ("notrace") module (windows need the map's concrete size):
    any stage output is a node, nothing inside one."""
    pool_types = ('', 'avg', 'max')
    stages_checkpoint_themselves = True
    positional_params = ('attention_centers', 'attention_spreads', 'token_proj_n_bias',
                         'window_relative_position_bias_table', 'token_proj_n_weight')

    def __init__(self, arch='tiny', in_chans: int = 3, num_classes: int = 1000,
                 mixer: str = 'gqpe', drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 global_pool: str = 'avg', with_cp: bool = False, img_size=None,
                 shift: bool = False, embed_dims=None, depths=None, windows=None, groups=None,
                 mlp_ratios=None, **kwargs):
        """
        Args:
            arch: 'tiny' | 'small' | 'base' (or 't' | 's' | 'b'), or a dict as ARCH_SETTINGS.
            embed_dims, depths, windows, groups, mlp_ratios: the arch's settings, overridden
                (one value for every stage, or one per stage).
            num_classes: classes of the head; 0 removes it (forward returns pooled features).
            mixer: token mixer of every block, one of MIXERS.
            drop_rate: dropout before the head (and inside the blocks, as the reference).
            drop_path_rate: stochastic depth, rising linearly from 0 over all blocks.
            global_pool: 'avg' (the reference), 'max', or '' (no pooling, only with
                num_classes=0: forward then returns the normalised (B, C, H, W) map).
            with_cp: activation checkpointing per block (``set_grad_checkpointing``).
            img_size: accepted for timm's API (int or (H, W)) and ignored: any size runs.
            shift: every second block on windows moved by half a window (PosMLPStage; not in the
                reference, no new parameters)."""
        super().__init__()
        if kwargs:
            raise TypeError(f'PosMLPClassifier: unexpected arguments {sorted(kwargs)}')
        if img_size is not None:
            size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
            if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
                raise ValueError(f'PosMLPClassifier: img_size must be a positive int or (H, W), '
                                 f'got {img_size!r}')
        overrides = dict(embed_dims=embed_dims, depths=depths, windows=windows, groups=groups,
                         mlp_ratios=mlp_ratios)
        setting = resolve_arch(arch, **{k: v for k, v in overrides.items() if v is not None})
        self.setting = setting
        self.num_features = self.head_hidden_size = setting['embed_dims'][-1]
        self.grad_checkpointing = with_cp
        self.patch_embed = ConvStem(in_chans, setting['embed_dims'][0])
        self.levels = build_stages(setting, mixer, drop_rate, drop_path_rate, with_cp, shift)
        self.feature_info = [dict(num_chs=d, reduction=4 * 2 ** i, module=f'levels.{i}')
                             for i, d in enumerate(setting['embed_dims'])]
        # an nn.LayerNorm over the channels of the (B, C, H, W) map: the reference's parameters
        self.norm = LayerNorm2d(self.num_features, eps=LN_EPS)
        self.head_drop = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes, global_pool)
        init_trunc_normal(self)  # the reference's: Linear and Conv2d

    # ---- timm API ---------------------------------------------------------------------------

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        """Names of the positional parameters (every mixer's), exempt from weight decay as in the
        reference training and configs/_posmlp_det_recipe.py. Norm weights and biases are 1-D,
        which timm's optimizer factory exempts by itself."""
        return {name for name, _ in self.named_parameters()
                if name.rsplit('.', 1)[-1] in self.positional_params}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups, stem to head, for layer-wise lr decay: a stage's downsampling joins
        its first block (coarse: whole stages); the final norm joins the last block."""
        return dict(
            stem=r'^patch_embed',
            blocks=r'^levels\.(\d+)' if coarse else [
                (r'^levels\.(\d+)\.pool', (0,)),
                (r'^levels\.(\d+)\.encoder\.(\d+)', None),
                (r'^norm', (99999,)),
            ])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing per block (the stages' ``with_cp``), in training only."""
        super().set_grad_checkpointing(enable)
        for stage in self.levels:
            stage.with_cp = enable

    def forward_stage_container(self, x: torch.Tensor) -> torch.Tensor:
        return self.levels(x)

    def fuse(self) -> 'PosMLPClassifier':
        """Deployment step, in place and inference only (call it after loading the final weights):
        ``ConvStem.fuse`` and ``PosMLPStage.fuse``, walked by timm's ``reparameterize_model``."""
        return reparameterize_model(self, inplace=True).eval()


register_notrace_module(PosMLPStage)  # FX: see the PosMLPClassifier docstring


# --------------------------------------------------------------------------- checkpoints

# Window-derived buffers the reference stored: the model rebuilds them for its own windows.
DERIVED_BUFFERS = ('rel_indices', 'window_relative_position_index')


def timm_adapts(key: str, have: torch.Size, want: torch.Size) -> bool:
    """Whether timm adapts this tensor after the filter: the classifier for another num_classes (it
    drops it) and the first conv for another in_chans (it sums or repeats the input channels); the
    pretrained cfg's 'classifier' and 'first_conv'. Other shape differences mean another variant."""
    differs = [d for d in range(len(have)) if len(have) != len(want) or have[d] != want[d]]
    if key.startswith('head.'):
        return differs == [0]
    return key == 'patch_embed.projs.0.weight' and differs == [1]


NOT_RESIZABLE_WHY = (
    "the dense 'sgu' mixer learns one free weight for every (output token, input token) pair "
    'of a window, at absolute positions, whereas GQPE (6 parameters per group, whatever the '
    'window) and LRPE (a table over relative offsets, resized bicubically) are functions of '
    'the offset between two tokens; a window of another size pairs other positions at other '
    'offsets than those the matrix learned, and interpolating it would treat a learned, '
    'unconstrained N x N matrix as a smooth kernel (nothing in training makes it one) and '
    "change what each row sums to. Build the model with the checkpoint's window for those "
    'stages (windows=...), or start the sgu mixer from its initialisation (no Pretrained)')


def resize_window_param(key: str, value: torch.Tensor, shape: torch.Size) -> Optional[torch.Tensor]:
    """A window-dependent parameter resized to ``shape`` (another window), bicubically as Swin
    resizes its tables, or None if it cannot be: GQPE's per-token bias (1, w*w, 1) over the
    window's grid, LRPE's table ((2w-1)^2, G) over the grid of relative offsets."""
    if key.endswith('token_proj_n_bias') and value.dim() == 3:
        side = math.isqrt(shape[1])
        return resample_abs_pos_embed(value, [side, side], num_prefix_tokens=0,
                                      interpolation='bicubic', antialias=False)
    if key.endswith('window_relative_position_bias_table') and value.shape[1] == shape[1]:
        window = (math.isqrt(shape[0]) + 1) // 2
        return resize_rel_pos_bias_table_simple(value, (window, window), tuple(shape))
    return None


def _window(tokens: int) -> str:
    side = math.isqrt(tokens)
    return f'{side}x{side}' if side * side == tokens else f'{tokens}-token'


def _variant(sd: Dict[str, torch.Tensor]) -> str:
    dims = [sd[k].shape[0] for k in ['patch_embed.projs.2.weight'] +
            [f'levels.{i}.pool.conv.weight' for i in range(1, 4)] if k in sd]
    return f'embed_dims {tuple(dims)}' if dims else 'unknown variant'


def checkpoint_filter_fn(state_dict: Dict, model: nn.Module) -> Dict[str, torch.Tensor]:
    """Any PosMLP weights -> ``model``'s state dict: the reference's training checkpoint
    ('state_dict_ema' preferred), a timm state dict, a backbone or detector checkpoint.

    Drops the window-derived buffers and resizes GQPE's and LRPE's window-dependent parameters
    to the model's windows. Raises CheckpointError naming the keys and shapes when nothing
    matches (another model), when shapes disagree otherwise (another variant), and when a
    dense 'sgu' matrix has another window (NOT_RESIZABLE_WHY)."""
    sd, _ = unwrap_state_dict(state_dict, owner='PosMLP')
    sd = {k: v for k, v in sd.items() if not k.endswith(DERIVED_BUFFERS)}
    target = model.state_dict()
    if not any(k in target for k in sd):
        raise CheckpointError(
            f'not a PosMLP checkpoint: none of its {len(sd)} keys match the model (first keys: '
            f'{list(sd)[:5]}; expected e.g. {list(target)[:3]})')
    mismatched, sgu = [], []
    for key in [k for k in sd if k in target and sd[k].shape != target[k].shape
                and not timm_adapts(k, sd[k].shape, target[k].shape)]:
        have, want = tuple(sd[key].shape), tuple(target[key].shape)
        resized = resize_window_param(key, sd[key], target[key].shape)
        if resized is not None:
            sd[key] = resized
        elif key.endswith('token_proj_n_weight') and have[0] == want[0]:
            sgu.append(f'{key}: checkpoint {have} ({_window(have[1])} windows) vs model {want} '
                       f'({_window(want[1])} windows)')
        else:
            mismatched.append(f'{key}: checkpoint {have} vs model {want}')
    if mismatched:
        raise CheckpointError(
            f'a different PosMLP variant ({_variant(sd)}) from the model ({_variant(target)}, or '
            f'another mixer): {len(mismatched + sgu)} tensors disagree in shape:\n  '
            + '\n  '.join(mismatched[:12]) + (f'\n  ... and {len(mismatched) - 12} more'
                                               if len(mismatched) > 12 else ''))
    if sgu:
        raise CheckpointError(
            f'windows of another size than the model, and {len(sgu)} window-dependent tensors '
            'cannot be resized:\n  ' + '\n  '.join(sgu[:12])
            + f'\nThey cannot be resized because {NOT_RESIZABLE_WHY}.')
    return sd


def infer_arch_and_mixer(sd: Dict[str, torch.Tensor],
                         path: str = '<checkpoint>') -> Tuple[str, str]:
    """('tiny' | 'small' | 'base', mixer) of a PosMLP state dict, from its stem width and the
    mixer's parameter names."""
    width = sd.get('patch_embed.projs.2.weight', sd.get('model.patch_embed.projs.2.weight'))
    arch = {96: 'tiny', 128: 'small', 192: 'base'}.get(None if width is None else width.shape[0])
    if arch is None:
        raise CheckpointError(f"PosMLP: cannot tell the variant of '{path}' from its stem "
                              '(patch_embed.projs.2.weight); pass --arch')
    mixer = 'gqpe'
    if any(k.endswith('window_relative_position_bias_table') for k in sd):
        mixer = 'lrpe'
    elif any(k.endswith('token_proj_n_weight') for k in sd):
        mixer = 'sgu'
    return arch, mixer


# --------------------------------------------------------------------------- timm registration
# timm.create_model('posmlp_t' | 'posmlp_s' | 'posmlp_b'); the reference's ImageNet checkpoints
# load with `pretrained_cfg_overlay=dict(file=PATH)`.

default_cfgs = generate_default_cfgs({
    variant: default_cfg(pool_size=(7, 7), first_conv='patch_embed.projs.0', license='apache-2.0')
    for variant in ('posmlp_t.in1k', 'posmlp_s.in1k', 'posmlp_b.untrained')})


def _create(variant: str, arch: str, pretrained: bool = False, **kwargs) -> PosMLPClassifier:
    return build_classifier(PosMLPClassifier, variant, ARCH_SETTINGS[arch], pretrained,
                            filter_fn=checkpoint_filter_fn, **kwargs)


@register_model
def posmlp_t(pretrained: bool = False, **kwargs) -> PosMLPClassifier:
    """PosMLP-T: 20.9M parameters, 82.1% ImageNet top-1 in the paper."""
    return _create('posmlp_t', 'tiny', pretrained, **kwargs)


@register_model
def posmlp_s(pretrained: bool = False, **kwargs) -> PosMLPClassifier:
    """PosMLP-S: 36.8M parameters, 83.0% ImageNet top-1 in the paper."""
    return _create('posmlp_s', 'small', pretrained, **kwargs)


@register_model
def posmlp_b(pretrained: bool = False, **kwargs) -> PosMLPClassifier:
    """PosMLP-B: about 82M parameters, 83.6% ImageNet top-1 in the paper (no reference code)."""
    return _create('posmlp_b', 'base', pretrained, **kwargs)


__all__ = ['ARCH_SETTINGS', 'MIXERS', 'resolve_arch', 'stacked_mixing', 'GQPE', 'LRPE',
           'DenseTokenMixer', 'gated_token_mix', 'PosSGU', 'PosMLPBlock', 'PosMLPStage',
           'Downsample', 'ConvStem', 'build_stages', 'PosMLPClassifier', 'checkpoint_filter_fn',
           'posmlp_t', 'posmlp_s', 'posmlp_b']
