"""PosMLP: gated MLPs whose token mixing comes from relative positional encodings.

Wang et al., "Parameterization of Cross-Token Relations with Relative Positional Encoding
for Vision MLP", ACM MM 2022. This file is the whole architecture, top to bottom:

    ConvStem (stride 4)
    -> 4 x PosMLPStage:   Downsample (stages 2-4)  -> window_partition
                          -> depth x PosMLPBlock   -> window_reverse
    (classifier only: final LayerNorm, global average pool, head)

    PosMLPBlock:  x + DropPath(Dropout(Linear(PosSGU(GELU(Linear(LayerNorm(x)))))))
    PosSGU:       split hidden channels into u, v;   TokenMix(u) * v
    TokenMix:     per channel group g, a window-sized matrix P_g mixes the tokens of every
                  window; P_g comes from GQPE (default), LRPE, or a dense learned matrix (SGU).

Parameter names follow the reference implementation so its checkpoints load as they are.

Layout inside a stage (why it looks unusual): activations are kept channel-major, as a
(C, T) matrix whose T = batch * windows * window_tokens columns have the token of a window
innermost. Then LayerNorm reduces over rows, both Linear layers are one GEMM each, splitting
u / v is a free row slice, and the grouped token mixing is one batched matrix product on a
free view of u: no permutes inside a block. Maps that windows do not divide are not padded:
the windows at the right and bottom edges are clipped to the map and form their own regions of
columns (see WindowGrid), so no arithmetic is spent on padding. Channel groups are interleaved
in the reference (channel c is in group c % groups); the rows of the expansion Linear are
gathered so that each group is contiguous, and the columns of the output Linear are gathered
the same way, which leaves the function unchanged while the stored parameters keep the
reference layout.
"""
import math
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp

LN_EPS = 1e-6
# Inference runs a block over chunks of whole windows whose hidden activations take about this
# many bytes: small enough to stay in cache between the products, large enough for an efficient
# GEMM (measured at 800x1344, 2 threads; see _forward_inference).
INFERENCE_CHUNK_BYTES = 16 * 2 ** 20

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


def resolve_arch(arch) -> dict:
    """Return the full setting dict for an arch name ('tiny'|'small'|'base') or a dict."""
    if isinstance(arch, str):
        name = ARCH_ALIASES.get(arch.lower(), arch.lower())
        if name not in ARCH_SETTINGS:
            raise KeyError(f"PosMLP: unknown arch '{arch}'; choose one of "
                           f"{sorted(ARCH_SETTINGS)} or pass a dict with keys "
                           f"{sorted(ARCH_SETTINGS['tiny'])}")
        return dict(ARCH_SETTINGS[name])
    if not isinstance(arch, dict):
        raise TypeError(f'PosMLP: arch must be a str or a dict, got {type(arch).__name__}')
    missing = set(ARCH_SETTINGS['tiny']) - set(arch)
    unknown = set(arch) - set(ARCH_SETTINGS['tiny'])
    if missing or unknown:
        raise KeyError(f'PosMLP: arch dict has missing keys {sorted(missing)} and unknown keys '
                       f'{sorted(unknown)}; expected {sorted(ARCH_SETTINGS["tiny"])}')
    setting = {k: tuple(v) for k, v in arch.items()}
    lengths = {k: len(v) for k, v in setting.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f'PosMLP: arch entries must all have one value per stage, got lengths {lengths}')
    for i, (dim, ratio, g) in enumerate(zip(setting['embed_dims'], setting['mlp_ratios'],
                                            setting['groups'])):
        hidden = int(dim * ratio)
        if hidden % 2 or (hidden // 2) % g:
            raise ValueError(f'PosMLP: stage {i}: groups={g} does not divide the {hidden // 2} '
                             f'gated channels (embed_dim {dim} x mlp_ratio {ratio} / 2)')
    for i in range(1, len(setting['embed_dims'])):
        if setting['embed_dims'][i] % setting['embed_dims'][i - 1]:
            raise ValueError(f'PosMLP: embed_dims[{i}]={setting["embed_dims"][i]} must be a multiple '
                             f'of embed_dims[{i - 1}]={setting["embed_dims"][i - 1]} '
                             '(the downsampling conv is depthwise)')
    if any(w < 1 for w in setting['windows']):
        raise ValueError(f'PosMLP: windows must be positive, got {setting["windows"]}')
    return setting


# --------------------------------------------------------------------------- windows

class Region(NamedTuple):
    """A block of same-shaped windows: the whole windows, or the clipped ones at the right
    edge, the bottom edge or the corner. Its tokens are columns [start, stop) of a stage's
    channel-major matrix, ordered (image, window row, window col, token row, token col)."""
    start: int
    stop: int
    top: int           # first pixel row and column of the region in the map
    left: int
    win_rows: int      # how many windows down and across
    win_cols: int
    rows: int          # tokens per window: rows x cols, the top-left part of a full window
    cols: int

    @property
    def tokens(self) -> int:  # tokens per window
        return self.rows * self.cols


class WindowGrid(NamedTuple):
    """How a (B, C, H, W) map is cut into windows of `window` x `window` tokens.

    Where H or W is not a multiple of the window, the last windows are clipped to the map
    instead of padded: they hold only real tokens, and mix them with the top-left block of
    the full window's matrix (softmax over that block for GQPE). That is what the reference
    computes with zero padding kept out of the mixing, without spending anything on padding.
    """
    batch: int
    height: int
    width: int
    window: int

    @property
    def tokens(self) -> int:  # columns of the channel-major matrix
        return self.batch * self.height * self.width

    @property
    def regions(self) -> List[Region]:
        w, B = self.window, self.batch
        full_r, full_c = self.height // w, self.width // w
        edge_r, edge_c = self.height % w, self.width % w
        regions, start = [], 0
        for top, win_rows, rows in ((0, full_r, w), (full_r * w, 1, edge_r)):
            for left, win_cols, cols in ((0, full_c, w), (full_c * w, 1, edge_c)):
                if win_rows and win_cols and rows and cols:
                    stop = start + B * win_rows * win_cols * rows * cols
                    regions.append(Region(start, stop, top, left, win_rows, win_cols, rows, cols))
                    start = stop
        return regions

    def image_of_column(self, device=None) -> torch.Tensor:
        """(T,) index of the image each column belongs to (for per-sample drop path)."""
        return torch.cat([torch.arange(self.batch, device=device).repeat_interleave(
            (r.stop - r.start) // self.batch) for r in self.regions])


def _region_view(t: torch.Tensor, grid: WindowGrid, r: Region) -> torch.Tensor:
    """Columns of region r of a channel-major (C, T) matrix as (C, B, wr, wc, rows, cols)."""
    return t[:, r.start:r.stop].view(-1, grid.batch, r.win_rows, r.win_cols, r.rows, r.cols)


def _map_view(x: torch.Tensor, r: Region) -> torch.Tensor:
    """Pixels of region r of a (B, C, H, W) map as (C, B, wr, wc, rows, cols), no copy."""
    block = x[:, :, r.top:r.top + r.win_rows * r.rows, r.left:r.left + r.win_cols * r.cols]
    return block.unflatten(3, (r.win_cols, r.cols)).unflatten(2, (r.win_rows, r.rows)) \
        .permute(1, 0, 2, 4, 3, 5)


def window_partition(x: torch.Tensor, window: int) -> Tuple[torch.Tensor, WindowGrid]:
    """(B, C, H, W) -> channel-major (C, B * H * W) in window order, tokens innermost."""
    B, C, H, W = x.shape
    grid = WindowGrid(B, H, W, window)
    t = x.new_empty(C, grid.tokens)
    for r in grid.regions:
        _region_view(t, grid, r).copy_(_map_view(x, r))
    return t, grid


def window_reverse(t: torch.Tensor, grid: WindowGrid) -> torch.Tensor:
    """Inverse of window_partition: (C, T) -> (B, C, H, W)."""
    x = t.new_empty(grid.batch, t.shape[0], grid.height, grid.width)
    for r in grid.regions:
        _map_view(x, r).copy_(_region_view(t, grid, r))
    return x


def window_tokens(window: int, rows: int, cols: int, device=None) -> torch.Tensor:
    """Indices (row-major, in a full window) of the top-left rows x cols tokens."""
    r = torch.arange(rows, device=device)
    c = torch.arange(cols, device=device)
    return (r[:, None] * window + c[None, :]).flatten()


class InferenceCache:
    """Keeps a value derived from parameters (mixing matrices, fused weights) between forward
    passes that record no gradient, for as long as the parameters are unchanged: same storage
    and same in-place version counter (optimizer steps and load_state_dict bump it). At 224x224
    preparing these costs more than the block's own arithmetic. Training recomputes them every
    forward, as autograd needs, and drops what was kept. `variant` tells apart values derived
    from the same parameters (the mixing matrices of full and clipped windows). Fused AdamW and
    BatchNorm's statistics update change tensors without bumping their version: what is cached
    relies on every training forward passing through get() (or clear()) with grad enabled."""

    def __init__(self):
        self.key, self.values = None, {}

    def clear(self) -> None:
        self.key, self.values = None, {}

    def get(self, params, compute, variant=None):
        if torch.is_grad_enabled():
            self.clear()
            return compute()
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        if key != self.key:
            self.key, self.values = key, {}
        if variant not in self.values:
            self.values[variant] = compute()
        return self.values[variant]


# --------------------------------------------------------------------------- token mixers
# Each mixer owns the per-token bias (named as in the reference) and returns its mixing
# matrices P of shape (groups, N, N), out[m] = sum_n P[m, n] * u[n] + bias[m]. Given `tokens`
# (the indices of a clipped window's tokens, from window_tokens) they return the matrices of
# that window: P restricted to those tokens, the softmax taken over them alone.

class GQPE(nn.Module):
    """Generalized quadratic positional encoding (the default of the released models).

    score[m, n] = -1/2 (d - delta)^T A (d - delta),  d = (col_n - col_m, row_m - row_n),
    A = S S^T;  P[m, :] = softmax over n. Six parameters per group, whatever the window.
    """
    init_std = 0.01

    def __init__(self, window: int, groups: int):
        super().__init__()
        self.window, self.groups, self.num_tokens = window, groups, window * window
        self.attention_centers = nn.Parameter(torch.zeros(groups, 2).normal_(0.0, self.init_std))
        self.attention_spreads = nn.Parameter(
            torch.eye(2).repeat(groups, 1, 1) + torch.zeros(groups, 2, 2).normal_(0.0, self.init_std))
        self.token_proj_n_bias = nn.Parameter(torch.zeros(1, self.num_tokens, 1))
        # [dx, dy, dx^2, dy^2, dx*dy] for every (m, n): derived from the window, never stored.
        self.register_buffer('rel_indices', self.relative_offsets(window), persistent=False)

    @staticmethod
    def relative_offsets(window: int) -> torch.Tensor:
        rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing='ij')
        rows, cols = rows.flatten().float(), cols.flatten().float()
        dx = cols[None, :] - cols[:, None]  # col_n - col_m
        dy = rows[:, None] - rows[None, :]  # row_m - row_n (the reference's opposite sign)
        return torch.stack([dx, dy, dx * dx, dy * dy, dx * dy], dim=-1)

    def scores(self, tokens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(groups, n, n) logits over all N tokens or the given ones; the constant
        -1/2 delta^T A delta drops out of the softmax."""
        S = self.attention_spreads
        A = S @ S.transpose(1, 2)
        a, b, c = A[:, 0, 0], A[:, 0, 1], A[:, 1, 1]
        d1, d2 = self.attention_centers[:, 0], self.attention_centers[:, 1]
        coef = torch.stack([a * d1 + b * d2, b * d1 + c * d2, -0.5 * a, -0.5 * c, -b], dim=-1)
        offsets = self.rel_indices
        if tokens is not None:
            offsets = offsets[tokens[:, None], tokens[None, :]]
        return torch.einsum('mnk,gk->gmn', offsets.to(coef.dtype), coef)

    def matrices(self, tokens: Optional[torch.Tensor] = None) -> torch.Tensor:
        return FlushedSoftmax.apply(self.scores(tokens))


class FlushedSoftmax(torch.autograd.Function):
    """Softmax over the last dimension, with the probabilities below the square root of the
    smallest normal float set to zero, forward and backward.

    Far tokens get scores near -170 at init. Their probabilities, the products of those with
    activations, and autograd's softmax gradient (computed from the unflushed output) land in
    the subnormal range, where x86 arithmetic is an order of magnitude slower: one mixing
    product took 3.5 s instead of 0.14 s, and at 224x224 the gradient of the 18 third-stage
    matrices took a quarter of a training step. The values changed are below 1.1e-19 (float32),
    far under the precision of a row that sums to one; scores that far below their row's
    maximum are clamped before the exponential so that it never goes subnormal either.
    """

    @staticmethod
    def forward(ctx, scores: torch.Tensor) -> torch.Tensor:
        floor = torch.finfo(scores.dtype).tiny ** 0.5
        shifted = scores - scores.amax(dim=-1, keepdim=True)
        P = shifted.clamp_(min=math.log(floor) - 10.0).exp_()
        P = P.div_(P.sum(dim=-1, keepdim=True))
        P = P.masked_fill_(P < floor, 0.0)
        ctx.save_for_backward(P)
        return P

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        P, = ctx.saved_tensors
        return P * (grad - (P * grad).sum(dim=-1, keepdim=True))


class LRPE(nn.Module):
    """Learned relative positional encoding: one table entry per relative offset and group."""

    def __init__(self, window: int, groups: int):
        super().__init__()
        self.window, self.groups, self.num_tokens = window, groups, window * window
        self.window_relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window - 1) ** 2, groups))
        self.token_proj_n_bias = nn.Parameter(torch.zeros(1, self.num_tokens, 1))
        self.register_buffer('window_relative_position_index', self.relative_index(window),
                             persistent=False)

    @staticmethod
    def relative_index(window: int) -> torch.Tensor:
        rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing='ij')
        rows, cols = rows.flatten(), cols.flatten()
        drow = rows[:, None] - rows[None, :] + window - 1
        dcol = cols[:, None] - cols[None, :] + window - 1
        return drow * (2 * window - 1) + dcol

    def matrices(self, tokens: Optional[torch.Tensor] = None) -> torch.Tensor:
        index = self.window_relative_position_index
        if tokens is not None:
            index = index[tokens[:, None], tokens[None, :]]
        n = index.shape[0]
        table = self.window_relative_position_bias_table
        return table[index.reshape(-1)].view(n, n, -1).permute(2, 0, 1)


class DenseTokenMixer(nn.Module):
    """gMLP's spatial gating FC inside a window (the paper's 'SGU' ablation): a dense learned
    N x N matrix per group, initialised near zero with a bias of one so the gate starts as v."""

    def __init__(self, window: int, groups: int):
        super().__init__()
        self.window, self.groups, self.num_tokens = window, groups, window * window
        N = self.num_tokens
        self.token_proj_n_weight = nn.Parameter(torch.zeros(groups, N, N).normal_(0.0, 1e-6))
        self.token_proj_n_bias = nn.Parameter(torch.ones(1, N, 1))

    def matrices(self, tokens: Optional[torch.Tensor] = None) -> torch.Tensor:
        if tokens is None:
            return self.token_proj_n_weight
        return self.token_proj_n_weight[:, tokens[:, None], tokens[None, :]]


MIXER_CLASSES = {'gqpe': GQPE, 'lrpe': LRPE, 'sgu': DenseTokenMixer}


class PosSGU(nn.Module):
    """Positional spatial gating unit: TokenMix(u) * v, with no norm inside the gate."""

    def __init__(self, dim: int, window: int, groups: int, mixer: str = 'gqpe'):
        super().__init__()
        if mixer not in MIXER_CLASSES:
            raise KeyError(f"PosMLP: unknown mixer '{mixer}', choose one of {MIXERS}")
        self.gate_dim, self.groups, self.window = dim // 2, groups, window
        self.pos = MIXER_CLASSES[mixer](window, groups)
        self._mixing = InferenceCache()

    def forward(self, u: torch.Tensor, v: torch.Tensor, region: Region) -> torch.Tensor:
        """u, v: (gate_dim, T_r) channel-major with groups contiguous, the columns of one
        region of windows. Returns TokenMix(u) * v."""
        return self.token_mix(u, region) * v

    def mixing(self, region: Region) -> torch.Tensor:
        """P for the windows of a region: computed once per forward per window shape,
        whatever the number of windows and images."""
        shape = (region.rows, region.cols)
        return self._mixing.get(list(self.pos.parameters()), lambda: self._matrices(*shape),
                                variant=shape)

    def _clipped_tokens(self, rows: int, cols: int) -> Optional[torch.Tensor]:
        if rows == cols == self.window:
            return None
        return window_tokens(self.window, rows, cols, device=self.pos.token_proj_n_bias.device)

    def _matrices(self, rows: int, cols: int) -> torch.Tensor:
        return self.pos.matrices(self._clipped_tokens(rows, cols))

    def token_mix(self, u: torch.Tensor, region: Region) -> torch.Tensor:
        """One batched product for windows of one region: group g's rows of u, viewed as
        (channels x windows, tokens), times P_g transposed. u: contiguous rows, whole windows."""
        P = self.mixing(region)
        bias = self.pos.token_proj_n_bias.view(-1)
        tokens = self._clipped_tokens(region.rows, region.cols)
        if tokens is not None:
            bias = bias[tokens]
        n = region.tokens
        out = torch.baddbmm(bias.to(u.dtype).view(1, 1, n), u.view(self.groups, -1, n),
                            P.to(u.dtype).transpose(1, 2))
        return out.view(u.shape)


# --------------------------------------------------------------------------- block and stage

class DropPath(nn.Module):
    """Stochastic depth per sample, for channel-major (C, B * tokens) activations."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor, grid: WindowGrid) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty(grid.batch).bernoulli_(keep).div_(keep)
        return x * mask[grid.image_of_column(x.device)]

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}'


def _group_contiguous_order(channels: int, groups: int) -> torch.Tensor:
    """Index list that sorts interleaved groups (c in group c % groups) into contiguous blocks."""
    return torch.arange(channels).view(channels // groups, groups).t().flatten()


class _Permute(torch.autograd.Function):
    """x.index_select(dim, order) for a permutation `order`, whose gradient is a gather by the
    inverse permutation. Autograd's own backward for indexing is an accumulating scatter
    (index_put_ / index_add_), which for a permutation costs up to 20% of a training step."""

    @staticmethod
    def forward(ctx, x, dim, order, inverse):
        ctx.dim, ctx.inverse = dim, inverse
        return x.index_select(dim, order)

    @staticmethod
    def backward(ctx, grad):
        return grad.index_select(ctx.dim, ctx.inverse), None, None, None


def permute(x: torch.Tensor, dim: int, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    return _Permute.apply(x, dim, order, inverse)


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
        half = _group_contiguous_order(hidden // 2, groups)
        full = torch.cat([half, half + hidden // 2])
        self.register_buffer('_gate_order', half, persistent=False)
        self.register_buffer('_gate_inverse', torch.argsort(half), persistent=False)
        self.register_buffer('_hidden_order', full, persistent=False)
        self.register_buffer('_hidden_inverse', torch.argsort(full), persistent=False)
        self._weights = InferenceCache()

    def fused_weights(self):
        """[expansion weight | bias] with the LayerNorm affine folded in and rows grouped, and
        the output weight with columns grouped the same way. Tiny next to the activations."""
        order, inverse = self._hidden_order, self._hidden_inverse
        w_e = permute(self.proj_c_e.weight, 0, order, inverse)
        b_e = permute(self.proj_c_e.bias, 0, order, inverse) + w_e @ self.norm.bias
        w_eb = torch.cat([w_e * self.norm.weight, b_e[:, None]], dim=1)
        return w_eb, permute(self.proj_c_s.weight, 1, self._gate_order, self._gate_inverse)

    def forward(self, x: torch.Tensor, grid: WindowGrid, inplace: bool = False) -> torch.Tensor:
        """x: (C, T) channel-major. `inplace`: when no gradient is recorded, add the residual
        into x (PosMLPStage does, on its own copy of the map)."""
        stochastic = self.training and (self.drop.p or self.drop_path.drop_prob)
        if not (torch.is_grad_enabled() or stochastic):
            return self._forward_inference(x, grid, inplace)
        w_eb, w_s = self._fused()
        C, half = self.dim, self.hidden // 2
        # LayerNorm statistics per token (column) by two products with a row of 1/C: two-pass
        # and several times faster than var_mean's reduction across rows.
        mean_row = x.new_full((1, C), 1.0 / C)
        d = x - mean_row @ x
        xn = d * torch.rsqrt(mean_row @ (d * d) + LN_EPS)
        # The expansion runs per region of windows, so that each region's u is a contiguous
        # (channels, windows x tokens) matrix for the mixing product (a column slice is a
        # strided GEMM operand, not a copy); norm and output projection take all columns.
        ys = []
        for r in grid.regions:
            h = F.gelu(torch.addmm(w_eb[:, C:], w_eb[:, :C], xn[:, r.start:r.stop]))
            ys.append(self.gate_unit(h[:half], h[half:], r))
        y = ys[0] if len(ys) == 1 else torch.cat(ys, dim=1)
        y = torch.addmm(self.proj_c_s.bias[:, None], w_s, y)
        return x + self.drop_path(self.drop(y), grid)

    def _fused(self):
        return self._weights.get((self.proj_c_e.weight, self.proj_c_e.bias, self.norm.weight,
                                  self.norm.bias, self.proj_c_s.weight), self.fused_weights)

    def _forward_inference(self, x: torch.Tensor, grid: WindowGrid, inplace: bool) -> torch.Tensor:
        """The same arithmetic, one chunk of whole windows at a time: a chunk's normalised
        input, hidden activations and gate output stay in cache from the expansion product
        to the output product, and no tensor the size of the map is allocated (large CPU
        allocations are fresh pages from the OS, whose first touch costs as much as the
        arithmetic of a high-resolution block). The normalised input gets a row of ones so
        that the expansion bias rides in the product."""
        w_eb, w_s = self._fused()
        C, half = self.dim, self.hidden // 2
        mean_row = x.new_full((1, C), 1.0 / C)
        bias = self.proj_c_s.bias[:, None]
        out = x if inplace else x.clone()
        chunk = max(1, INFERENCE_CHUNK_BYTES // (self.hidden * x.element_size()))
        for r in grid.regions:
            step = r.tokens * max(1, chunk // r.tokens)
            for start in range(r.start, r.stop, step):
                xc = out[:, start:min(start + step, r.stop)]
                xn = x.new_empty(C + 1, xc.shape[1])
                d = torch.sub(xc, mean_row @ xc, out=xn[:C])
                d.mul_(torch.rsqrt(mean_row @ (d * d) + LN_EPS))
                xn[C] = 1.0
                h = torch.mm(w_eb, xn)
                torch.ops.aten.gelu_(h)
                y = self.gate_unit.token_mix(h[:half], r).mul_(h[half:])
                xc.addmm_(w_s, y).add_(bias)
        return out


class Downsample(nn.Module):
    """Depthwise 3x3 stride-2 conv with channel multiplier, then LayerNorm over channels."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, 3, stride=2, padding=1, groups=in_dim)
        self.norm = nn.LayerNorm(out_dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
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
        self._folded = InferenceCache()

    def folded_weights(self) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Each conv with its BatchNorm's running statistics and affine folded in."""
        out = []
        for proj, norm in zip(self.projs, self.norms):
            scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
            out.append((proj.weight * scale[:, None, None, None],
                        (proj.bias - norm.running_mean) * scale + norm.bias))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or any(norm.training for norm in self.norms):
            # Training changes the weights and running statistics in place without always
            # bumping their version counters (fused AdamW, BatchNorm's statistics update do
            # not), so the folded weights are dropped here rather than trusted later.
            self._folded.clear()
            for i, (proj, norm) in enumerate(zip(self.projs, self.norms)):
                x = norm(proj(x))
                if i < len(self.projs) - 1:
                    x = self.act(x)
            return x
        # Inference: BatchNorm folded into the convs, GELU in place, channels-last maps (what
        # oneDNN's convolutions use natively; the first stage's window partition reads any
        # layout). At 800x1344 this halves the stem's time.
        x = x.contiguous(memory_format=torch.channels_last)
        tensors = [t for m in (*self.projs, *self.norms) for t in (*m.parameters(), *m.buffers())
                   if t.is_floating_point()]
        for i, (proj, (weight, bias)) in enumerate(
                zip(self.projs, self._folded.get(tensors, self.folded_weights))):
            x = F.conv2d(x, weight, bias, proj.stride, proj.padding)
            if i < len(self.projs) - 1:
                torch.ops.aten.gelu_(x)
        return x


class PosMLPStage(nn.Module):
    """Optional downsampling, then `depth` blocks that share one window partition."""

    def __init__(self, in_dim: Optional[int], dim: int, depth: int, window: int, groups: int,
                 mlp_ratio: float, mixer: str = 'gqpe', drop: float = 0.0,
                 drop_path: Sequence[float] = (), with_cp: bool = False):
        super().__init__()
        self.window = window
        self.with_cp = with_cp
        self.pool = Downsample(in_dim, dim) if in_dim is not None else nn.Identity()
        drop_path = list(drop_path) or [0.0] * depth
        self.encoder = nn.Sequential(*[
            PosMLPBlock(dim, window, groups, mlp_ratio, mixer, drop, drop_path[i])
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C, H', W')."""
        x = self.pool(x)
        t, grid = window_partition(x, self.window)  # a new tensor: blocks may update it in place
        for block in self.encoder:
            if self.with_cp and t.requires_grad:
                t = cp.checkpoint(block, t, grid, use_reentrant=False)
            else:
                t = block(t, grid, inplace=True)
        return window_reverse(t, grid)


def build_stages(setting: dict, mixer: str = 'gqpe', drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, with_cp: bool = False) -> nn.Sequential:
    """The four stages ('levels' in the reference), drop path ramped linearly over all blocks."""
    if mixer not in MIXERS:
        raise KeyError(f"PosMLP: unknown mixer '{mixer}', choose one of {MIXERS}")
    depths = setting['depths']
    rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
    stages, start, prev = [], 0, None
    for i, depth in enumerate(depths):
        dim = setting['embed_dims'][i]
        stages.append(PosMLPStage(
            prev, dim, depth, setting['windows'][i], setting['groups'][i],
            setting['mlp_ratios'][i], mixer, drop_rate, rates[start:start + depth], with_cp))
        start += depth
        prev = dim
    return nn.Sequential(*stages)


def init_posmlp_weights(module: nn.Module) -> None:
    """The reference's initialisation: truncated normal 0.02 for Linear and Conv, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=0.02, a=-2, b=2)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class PosMLPClassifier(nn.Module):
    """The ImageNet classifier, with the reference's parameter names (timm: posmlp_t/s/b)."""

    def __init__(self, arch='tiny', in_chans: int = 3, num_classes: int = 1000,
                 mixer: str = 'gqpe', drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 global_pool: str = 'avg', with_cp: bool = False, **kwargs):
        super().__init__()
        if kwargs:
            raise TypeError(f'PosMLPClassifier: unexpected arguments {sorted(kwargs)}')
        setting = resolve_arch(arch)
        self.setting = setting
        self.num_classes = num_classes
        self.num_features = setting['embed_dims'][-1]
        self.drop_rate = drop_rate
        self.global_pool = global_pool
        self.patch_embed = ConvStem(in_chans, setting['embed_dims'][0])
        self.levels = build_stages(setting, mixer, drop_rate, drop_path_rate, with_cp)
        self.feature_info = [dict(num_chs=d, reduction=4 * 2 ** i, module=f'levels.{i}')
                             for i, d in enumerate(setting['embed_dims'])]
        self.norm = nn.LayerNorm(self.num_features, eps=LN_EPS)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        init_posmlp_weights(self)

    def forward_stages(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The (B, C, H, W) output of every stage, before the final norm."""
        x = self.patch_embed(x)
        outs = []
        for stage in self.levels:
            x = stage(x)
            outs.append(x)
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_stages(x)[-1]
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == 'avg':
            x = x.mean(dim=(2, 3))
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.head(x)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ['ARCH_SETTINGS', 'MIXERS', 'resolve_arch', 'WindowGrid', 'window_partition',
           'window_reverse', 'window_tokens', 'Region', 'GQPE', 'LRPE',
           'DenseTokenMixer', 'PosSGU', 'PosMLPBlock', 'PosMLPStage', 'Downsample', 'ConvStem',
           'build_stages', 'init_posmlp_weights', 'PosMLPClassifier', 'count_parameters']
