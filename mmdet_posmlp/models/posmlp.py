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

Layout inside a stage (why it looks unusual): a stage cuts its map into windows once, into up
to four *regions* of same-shaped windows (the whole windows, and the windows clipped by the
right edge, the bottom edge and the corner, see `window_regions`), and keeps each region
channel-major, as a (C, T) matrix whose T = batch x windows x window-tokens columns have the
tokens of a window innermost. Then both Linear layers are one GEMM each, splitting u / v is a
free row slice, and the grouped token mixing is one batched matrix product on a free view of
u: no permutes inside a block, and no arithmetic on padding. Channel groups are interleaved in
the reference (channel c is in group c % groups); the rows of the expansion Linear are gathered
so that each group is contiguous, and the columns of the output Linear are gathered the same
way, which leaves the function unchanged while the stored parameters keep the reference layout.

There is one forward, for training and evaluation alike, on any device and under autocast.
Under mixed precision the Linear layers, the mixing products and the convolutions run in the
autocast dtype, while the LayerNorm statistics and GQPE's scores and softmax are computed in
float32 (the probabilities are cast once per block). What only pays off at deployment (folded
norms, precomputed mixing matrices, CPU-cache-sized chunks) is the explicit `fuse()` step in
`fused.py`.
"""
import contextlib
import math
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp

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


def autocast_off(device: torch.device):
    """A region where autocast does not apply on `device` (float32 math under mixed precision)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------- windows

class Region(NamedTuple):
    """A block of same-shaped windows of a (B, C, H, W) map: the whole windows, or the ones
    clipped by an edge of the map. As a channel-major matrix its columns are ordered (image,
    window row, window col, token row, token col)."""
    batch: int
    top: int           # first pixel row and column of the region in the map
    left: int
    win_rows: int      # how many windows down and across
    win_cols: int
    rows: int          # tokens per window: rows x cols ...
    cols: int
    row0: int = 0      # ... whose first token is (row0, col0) of a full window
    col0: int = 0

    @property
    def tokens(self) -> int:  # tokens per window
        return self.rows * self.cols


def _bands(size: int, window: int, shift: int) -> List[Tuple[int, int, int, int]]:
    """(start, windows, tokens per window, first token) of the bands of windows along one side
    of a map, for a grid of windows moved by `shift` tokens: a leading band of the last `shift`
    rows of a window, the whole windows, a trailing band clipped by the edge; empty ones out."""
    # plain integer arithmetic, which symbolic sizes (torch.export with dynamic H, W, see
    # deployment.py) keep simple: no min() (a Min carried through every later shape) and no
    # divmod or % (the clipped band comes out an integer when the size is linear in whole
    # windows, where a Mod would stay symbolic)
    lead = size if size < shift else shift
    full = (size - lead) // window
    edge = size - lead - window * full
    bands = [(0, 1, lead, window - shift), (lead, full, window, 0),
             (lead + full * window, 1, edge, 0)]
    return [b for b in bands if b[1] and b[2]]


def window_regions(batch: int, height: int, width: int, window: int,
                   shift: int = 0) -> List[Region]:
    """How a map is cut into windows of `window` x `window` tokens, as regions of same-shaped
    windows, band by band of rows: with `shift` = 0 the whole windows, the right edge, the
    bottom edge and the corner; with a shift (the grid moved down and right by `shift` tokens,
    as Swin's shifted windows) up to nine.

    Windows that the map cuts are clipped to it instead of padded: they hold only real tokens,
    and mix them with the matching block of the full window's matrix (softmax over that block
    for GQPE). That is what the reference computes with zero padding kept out of the mixing,
    without spending anything on padding; with a shift, what Swin's cyclic shift and attention
    mask compute, without the wrap-around."""
    return [Region(batch, top, left, win_rows, win_cols, rows, cols, row0, col0)
            for top, win_rows, rows, row0 in _bands(height, window, shift)
            for left, win_cols, cols, col0 in _bands(width, window, shift)]


def window_partition(x: torch.Tensor, window: int,
                     shift: int = 0) -> Tuple[List[torch.Tensor], List[Region]]:
    """(B, C, H, W) -> one channel-major (C, B * wr * wc * rows * cols) matrix per region."""
    B, C, H, W = x.shape
    row_bands, col_bands = _bands(H, window, shift), _bands(W, window, shift)
    parts, regions = [], []
    # split, not slices: the gradient of a split is one concatenation, of a slice a zero-filled
    # tensor the size of the map per region
    for band, (top, win_rows, rows, row0) in zip(
            x.split([n * k for _, n, k, _ in row_bands], dim=2), row_bands):
        for block, (left, win_cols, cols, col0) in zip(
                band.split([n * k for _, n, k, _ in col_bands], dim=3), col_bands):
            r = Region(B, top, left, win_rows, win_cols, rows, cols, row0, col0)
            # always a new tensor (a reshape may return a view of x): the deployed blocks
            # (fused.py) add their output into it in place. A clone, not a copy_ into an empty
            # tensor: TorchScript's ONNX export drops copies into views, and wrote a graph
            # whose outputs did not depend on its input.
            t = (block.unflatten(2, (win_rows, rows)).unflatten(4, (win_cols, cols))
                 .permute(1, 0, 2, 4, 3, 5).clone(memory_format=torch.contiguous_format))
            parts.append(t.view(C, -1))
            regions.append(r)
    return parts, regions


def window_reverse(parts: Sequence[torch.Tensor], regions: Sequence[Region]) -> torch.Tensor:
    """Inverse of window_partition: the region matrices -> (B, C, H, W)."""
    bands = []  # the blocks of each band of rows, left to right
    for t, r in zip(parts, regions):
        block = t.view(t.shape[0], r.batch, r.win_rows, r.win_cols, r.rows, r.cols)
        block = block.permute(1, 0, 2, 4, 3, 5).reshape(
            r.batch, t.shape[0], r.win_rows * r.rows, r.win_cols * r.cols)
        # regions come band by band, each band from the map's left edge (not a dict keyed by
        # r.top: a symbolic size under torch.export cannot be hashed)
        if r.left == 0:
            bands.append([])
        bands[-1].append(block)
    return _cat([_cat(blocks, dim=3) for blocks in bands], dim=2)


def _cat(tensors: List[torch.Tensor], dim: int) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=dim)


def window_tokens(window: int, rows: int, cols: int, row0: int = 0, col0: int = 0,
                  device=None) -> torch.Tensor:
    """Indices (row-major, in a full window) of the rows x cols tokens from (row0, col0)."""
    r = torch.arange(row0, row0 + rows, device=device)
    c = torch.arange(col0, col0 + cols, device=device)
    return (r[:, None] * window + c[None, :]).flatten()


# --------------------------------------------------------------------------- token mixers
# Each mixer owns the per-token bias (named as in the reference) and returns its mixing
# matrices P of shape (groups, N, N), out[m] = sum_n P[m, n] * u[n] + bias[m], in float32 or
# wider. Given `tokens` (the indices of a clipped window's tokens, from window_tokens) they
# return the matrices of that window: P restricted to those tokens, the softmax taken over
# them alone. GQPE and LRPE depend on relative positions only, so any clipped window of the
# same shape gets the same matrix; the bias and the dense mixer index absolute positions.

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
        """(groups, n, n) logits over all N tokens or the given ones, in float32 or wider
        whatever autocast is doing: a score's error of 1e-3 (float16) moves a probability by
        as much, and the exponential of a half-precision score underflows early. The constant
        -1/2 delta^T A delta drops out of the softmax."""
        dtype = torch.promote_types(self.attention_spreads.dtype, torch.float32)
        with autocast_off(self.attention_spreads.device):
            S = self.attention_spreads.to(dtype)
            A = S @ S.transpose(1, 2)
            a, b, c = A[:, 0, 0], A[:, 0, 1], A[:, 1, 1]
            delta = self.attention_centers.to(dtype)
            d1, d2 = delta[:, 0], delta[:, 1]
            coef = torch.stack([a * d1 + b * d2, b * d1 + c * d2, -0.5 * a, -0.5 * c, -b], dim=-1)
            offsets = self.rel_indices
            if tokens is not None:
                offsets = offsets[tokens[:, None], tokens[None, :]]
            n = offsets.shape[0]
            # (groups, 5) x (5, n * n): the scores come out contiguous, as the softmax wants
            return (coef @ offsets.reshape(n * n, 5).to(dtype).t()).view(-1, n, n)

    def matrices(self, tokens: Optional[torch.Tensor] = None) -> torch.Tensor:
        return FlushedSoftmax.apply(self.scores(tokens))


_FLUSH_FLOOR = torch.finfo(torch.float32).tiny ** 0.5
_LOG_FLUSH_FLOOR = math.log(_FLUSH_FLOOR) - 10.0


class FlushedSoftmax(torch.autograd.Function):
    """Softmax over the last dimension, with the probabilities below the square root of the
    smallest normal float32 set to zero, forward and backward.

    Far tokens get scores near -170 at init. Their probabilities, the products of those with
    activations, and autograd's softmax gradient (computed from the unflushed output) land in
    the subnormal range, where x86 arithmetic is an order of magnitude slower: one mixing
    product took 3.5 s instead of 0.14 s, and at 224x224 the gradient of the 18 third-stage
    matrices took a quarter of a training step. The values changed are below 1.1e-19, far under
    the precision of a row that sums to one; scores that far below their row's maximum are
    clamped before the exponential so that it never goes subnormal either. The threshold is
    float32's whatever the dtype of the scores (which are float32 or wider, see GQPE.scores).
    """

    @staticmethod
    def forward(ctx, scores: torch.Tensor) -> torch.Tensor:
        shifted = scores - scores.amax(dim=-1, keepdim=True)
        P = torch.clamp(shifted, min=_LOG_FLUSH_FLOOR).exp()
        P = F.threshold(P / P.sum(dim=-1, keepdim=True), _FLUSH_FLOOR, 0.0)
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


def token_mix(u: torch.Tensor, P: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """out = P_g u + bias for the channel-major rows of u, groups contiguous: group g's rows,
    viewed as (channels x windows, tokens), times P_g transposed, in one batched product.
    u: (C, T) contiguous with whole windows of n tokens; P: (groups, n, n); bias: (n,)."""
    groups, n = P.shape[0], P.shape[-1]
    out = torch.baddbmm(bias.view(1, 1, n), u.view(groups, -1, n), P.transpose(1, 2))
    return out.view(u.shape)


class _GeluGatedTokenMix(torch.autograd.Function):
    """y = TokenMix(u) * v with [u; v] = GELU(h), keeping h and TokenMix(u) for backward and
    recomputing GELU there.

    Autograd would keep GELU(h) as well (the hidden activations once more), and turn the
    u / v row slices into zero-filled gradients the size of h (14% of a training step was
    such fills). Here the gradient of [u; v] is written into one buffer."""

    @staticmethod
    def forward(ctx, h, P, bias):
        with autocast_off(h.device):  # inputs already in the compute dtype
            u, v = F.gelu(h).chunk(2)
            mixed = token_mix(u, P, bias)
            ctx.save_for_backward(h, P, mixed)
            return mixed * v

    @staticmethod
    def backward(ctx, grad_y):
        h, P, mixed = ctx.saved_tensors
        groups, n = P.shape[0], P.shape[-1]
        with autocast_off(h.device):
            u, v = F.gelu(h).chunk(2)
            grad_act = torch.empty_like(h)
            grad_u, grad_v = grad_act.chunk(2)
            torch.mul(grad_y, mixed, out=grad_v)
            grad_mixed = (grad_y * v).view(groups, -1, n)
            torch.bmm(grad_mixed, P, out=grad_u.view(groups, -1, n))
            grad_P = grad_bias = None
            if ctx.needs_input_grad[1]:
                grad_P = torch.bmm(grad_mixed.transpose(1, 2), u.view(groups, -1, n))
            if ctx.needs_input_grad[2]:
                grad_bias = grad_mixed.sum(dim=(0, 1))
            grad_h = torch.ops.aten.gelu_backward(grad_act, h)
        return grad_h, grad_P, grad_bias


class PosSGU(nn.Module):
    """Positional spatial gating unit: TokenMix(u) * v, with no norm inside the gate.

    It takes the hidden activations before the block's GELU (see _GeluGatedTokenMix)."""

    def __init__(self, dim: int, window: int, groups: int, mixer: str = 'gqpe'):
        super().__init__()
        if mixer not in MIXER_CLASSES:
            raise KeyError(f"PosMLP: unknown mixer '{mixer}', choose one of {MIXERS}")
        self.gate_dim, self.groups, self.window = dim // 2, groups, window
        self.pos = MIXER_CLASSES[mixer](window, groups)

    def mixing(self, region: Region, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
        """(P, bias) for the windows of a region, cast once to the compute dtype."""
        bias = self.pos.token_proj_n_bias.view(-1)
        if region.rows == region.cols == self.window:
            P = self.pos.matrices()
        else:
            tokens = window_tokens(self.window, region.rows, region.cols, region.row0,
                                   region.col0, device=bias.device)
            P, bias = self.pos.matrices(tokens), bias[tokens]
        return P.to(dtype), bias.to(dtype)

    def forward(self, h: torch.Tensor, region: Region) -> torch.Tensor:
        """h: (2 * gate_dim, T) channel-major, groups contiguous, the windows of one region.
        The mixing matrices are computed once per call, i.e. once per forward for each
        region."""
        return _GeluGatedTokenMix.apply(h, *self.mixing(region, h.dtype))


# --------------------------------------------------------------------------- block and stage

class _ChannelNorm(torch.autograd.Function):
    """(x - mean) / std over the rows (channels) of a channel-major (C, T) matrix, statistics
    in float32 or wider, with a row of ones appended: (C + 1, T).

    The LayerNorm's affine and the expansion's bias are folded into the expansion weight
    (PosMLPBlock.grouped_weights), the bias as a last column that meets the row of ones: the
    product then needs no pass over the hidden activations to add the bias, and the bias
    gradient comes out of the weight-gradient product. One function, so that only its output
    (which the Linear keeps anyway) and 1/std are stored. The means over channels are products
    with a row of 1/C: several times faster than a reduction across the rows of a row-major
    matrix."""

    @staticmethod
    def forward(ctx, x, eps: float):
        C = x.shape[0]
        stats = x.to(torch.promote_types(x.dtype, torch.float32))
        mean_row = stats.new_full((1, C), 1.0 / C)
        d = stats - mean_row @ stats
        rstd = torch.rsqrt(mean_row @ (d * d) + eps)
        out = torch.cat([d * rstd, rstd.new_ones(1, x.shape[1])]).to(x.dtype)
        ctx.save_for_backward(out, rstd)
        return out

    @staticmethod
    def backward(ctx, grad):
        out, rstd = ctx.saved_tensors
        C = out.shape[0] - 1
        xhat, grad = out[:C], grad[:C]
        mean_row = grad.new_full((1, C), 1.0 / C)
        mean_grad = mean_row @ grad
        mean_proj = mean_row @ (grad * xhat)
        # (grad - mean(grad) - xhat * mean(grad * xhat)) / std
        return torch.addcmul(grad, xhat, mean_proj, value=-1).sub_(mean_grad).mul_(rstd), None


def channel_norm(x: torch.Tensor, eps: float = LN_EPS) -> torch.Tensor:
    """(C, T) -> (C + 1, T): normalised over channels, then a row of ones (see _ChannelNorm)."""
    with autocast_off(x.device):
        return _ChannelNorm.apply(x, eps)


class DropPath(nn.Module):
    """Stochastic depth per sample, for a region's channel-major (C, B * tokens) matrix."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty(1, batch, 1).bernoulli_(keep).div_(keep)
        return (x.view(x.shape[0], batch, -1) * mask).view(x.shape)

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
        ctx.dim = dim
        ctx.save_for_backward(inverse)
        return x.index_select(dim, order)

    @staticmethod
    def backward(ctx, grad):
        inverse, = ctx.saved_tensors
        return grad.index_select(ctx.dim, inverse), None, None, None


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

    def grouped_weights(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(expansion weight, output weight, output bias) for channel-major inputs: the
        expansion with the LayerNorm affine folded in and its bias as a last column (against
        channel_norm's row of ones), the hidden channels in contiguous groups. Weight-sized
        work, tiny next to the activations; the folding is elementwise so that autocast
        leaves it in float32."""
        order, inverse = self._hidden_order, self._hidden_inverse
        w_e = permute(self.proj_c_e.weight, 0, order, inverse)
        b_e = permute(self.proj_c_e.bias, 0, order, inverse) + (w_e * self.norm.bias).sum(1)
        w_eb = torch.cat([w_e * self.norm.weight, b_e[:, None]], dim=1)
        w_s = permute(self.proj_c_s.weight, 1, self._gate_order, self._gate_inverse)
        return w_eb, w_s, self.proj_c_s.bias[:, None]

    def forward(self, parts: List[torch.Tensor], regions: List[Region]) -> List[torch.Tensor]:
        """parts: one channel-major (C, T_r) matrix per region of windows (window_partition)."""
        w_eb, w_s, b_s = self.grouped_weights()
        out = []
        for x, r in zip(parts, regions):
            h = torch.mm(w_eb, channel_norm(x))
            y = self.gate_unit(h, r)
            y = torch.addmm(b_s, w_s, y)
            out.append(x + self.drop_path(self.drop(y), r.batch))
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (proj, norm) in enumerate(zip(self.projs, self.norms)):
            x = norm(proj(x))
            if i < len(self.projs) - 1:
                x = self.act(x)
        return x


class PosMLPStage(nn.Module):
    """Optional downsampling, then `depth` blocks on windows of the map.

    Without `shift` all blocks share one window partition. With `shift` (not in the reference:
    Swin's idea, no new parameters) every second block works on the grid of windows moved by
    half a window down and right, so that information crosses window borders within a stage;
    windows cut by the map's edges mix their own real tokens only (see window_regions)."""

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C, H', W')."""
        x = self.pool(x)
        parts, regions, grid = None, None, None
        for i, block in enumerate(self.encoder):
            shift = self.shift if i % 2 else 0
            if shift != grid:  # (re)partition when the grid moves
                if parts is not None:
                    x = window_reverse(parts, regions)
                parts, regions = window_partition(x, self.window, shift)
                grid = shift
            if self.with_cp and torch.is_grad_enabled():
                parts = cp.checkpoint(block, parts, regions, use_reentrant=False)
            else:
                parts = block(parts, regions)
        return window_reverse(parts, regions) if parts is not None else x


def build_stages(setting: dict, mixer: str = 'gqpe', drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, with_cp: bool = False,
                 shift: bool = False) -> nn.Sequential:
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
            setting['mlp_ratios'][i], mixer, drop_rate, rates[start:start + depth], with_cp,
            shift))
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
    """The ImageNet classifier, with the reference's parameter names (timm: posmlp_t/s/b).

    ConvStem -> levels (4 x PosMLPStage) -> norm (LayerNorm over channels) -> global pool ->
    dropout -> head, with timm's model API: ``forward_features`` / ``forward_head``,
    ``forward_intermediates`` / ``prune_intermediate_layers`` (``features_only=True`` builds a
    ``feature_cls='getter'`` net on them), ``set_grad_checkpointing``, ``group_matcher``,
    ``no_weight_decay``, ``get_classifier`` / ``reset_classifier``.

    Any input size: the windows clip at the right and bottom edges (see ``window_regions``),
    so ``img_size`` is accepted for timm's API and ignored; nothing is sized by it.

    Export: ``torch.jit.script`` is not supported. The blocks run custom autograd Functions
    (gated token mixing, channel norm, permutations: one kernel each way and a small saved
    state) and pass the windows as lists of ``Region`` NamedTuples with Python-int shapes;
    TorchScript compiles neither ``Function.apply`` nor that control flow and stops with
    "Python builtin <built-in method apply of FunctionMeta object ...> is currently not
    supported in Torchscript". ``torch.compile`` captures the whole model (tests/test_compile.py).
    FX (``timm.models.create_feature_extractor``, ``features_only=True, feature_cls='fx'``):
    ``PosMLPStage`` is registered with timm as a leaf ("notrace") module, because partitioning
    into windows needs the map's concrete height and width; the graph then holds the stem, one
    call per stage, the final norm, the pool and the head, so any stage output is a node
    (``levels.0`` ... ``levels.3``).
    """
    pool_types = ('', 'avg', 'max')
    # every mixer's positional parameters: GQPE, LRPE, dense (SGU), and their per-token bias
    positional_params = ('attention_centers', 'attention_spreads', 'token_proj_n_bias',
                         'window_relative_position_bias_table', 'token_proj_n_weight')

    def __init__(self, arch='tiny', in_chans: int = 3, num_classes: int = 1000,
                 mixer: str = 'gqpe', drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 global_pool: str = 'avg', with_cp: bool = False, img_size=None,
                 shift: bool = False, **kwargs):
        """
        Args:
            arch: 'tiny' | 'small' | 'base' (or 't' | 's' | 'b'), or a dict as ARCH_SETTINGS.
            in_chans: image channels.
            num_classes: classes of the head; 0 removes it (forward returns pooled features).
            mixer: token mixer of every block, one of MIXERS.
            drop_rate: dropout before the head (and inside the blocks, as the reference).
            drop_path_rate: stochastic depth, rising linearly from 0 over all blocks.
            global_pool: 'avg' (the reference), 'max', or '' (no pooling, only with
                num_classes=0: forward then returns the normalised (B, C, H, W) map).
            with_cp: activation checkpointing per block (``set_grad_checkpointing``).
            img_size: accepted for timm's API (int or (H, W)) and ignored: any size runs.
            shift: every second block on windows moved by half a window (PosMLPStage); not
                in the reference, no new parameters.
        """
        super().__init__()
        if kwargs:
            raise TypeError(f'PosMLPClassifier: unexpected arguments {sorted(kwargs)}')
        self._check_pool(global_pool, num_classes)
        if img_size is not None:
            size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
            if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
                raise ValueError(f'PosMLPClassifier: img_size must be a positive int or (H, W), '
                                 f'got {img_size!r}')
        setting = resolve_arch(arch)
        self.setting = setting
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = setting['embed_dims'][-1]
        self.drop_rate = drop_rate
        self.global_pool = global_pool
        self.grad_checkpointing = with_cp
        self.patch_embed = ConvStem(in_chans, setting['embed_dims'][0])
        self.levels = build_stages(setting, mixer, drop_rate, drop_path_rate, with_cp, shift)
        self.feature_info = [dict(num_chs=d, reduction=4 * 2 ** i, module=f'levels.{i}')
                             for i, d in enumerate(setting['embed_dims'])]
        self.norm = nn.LayerNorm(self.num_features, eps=LN_EPS)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        init_posmlp_weights(self)

    @classmethod
    def _check_pool(cls, global_pool: str, num_classes: int) -> None:
        if global_pool not in cls.pool_types:
            raise ValueError(f'PosMLPClassifier: global_pool={global_pool!r} is not supported; '
                             f'use one of {cls.pool_types}')
        if global_pool == '' and num_classes > 0:
            raise ValueError("PosMLPClassifier: global_pool='' (no pooling) needs num_classes=0: "
                             'the linear head cannot take an unpooled map')

    # ---- timm API ---------------------------------------------------------------------------

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        """Names of the positional parameters (every mixer's), exempt from weight decay as in
        the reference training and configs/_posmlp_det_recipe.py. Norm weights and biases are
        1-D, which timm's optimizer factory exempts by itself."""
        return {name for name, _ in self.named_parameters()
                if name.rsplit('.', 1)[-1] in self.positional_params}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups, stem to head, for layer-wise lr decay: a stage's downsampling
        joins its first block (coarse: whole stages); the final norm joins the last block."""
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
        self.grad_checkpointing = enable
        for stage in self.levels:
            stage.with_cp = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        if global_pool is None:
            global_pool = self.global_pool
        self._check_pool(global_pool, num_classes)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def _final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> 'Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]':
        """Outputs of the selected stages (0-3, strides 4-32), timm 1.0 semantics.

        Args:
            indices: None for all stages, an int n for the last n, or a list of stage indices
                (negative ones count from the last stage present).
            norm: apply the final norm to the last stage's output when it is taken.
            stop_early: skip the stages after the last selected one.
            output_fmt: 'NCHW' or 'NHWC' for the intermediates (the final features are NCHW).
            intermediates_only: return only the list of intermediates.

        Returns:
            The intermediates, or (final features, intermediates); the final features are
            ``forward_features``'s when every stage ran, else the last stage run's output.
        """
        if output_fmt not in ('NCHW', 'NHWC'):
            raise ValueError(f"PosMLPClassifier: output_fmt must be 'NCHW' or 'NHWC', "
                             f'got {output_fmt!r}')
        nhwc = output_fmt == 'NHWC'
        take_indices, max_index = feature_take_indices(len(self.levels), indices)
        last_idx = len(self.levels) - 1  # the final norm is sized for (and only applies to) it
        stages = self.levels[:max_index + 1] if stop_early else self.levels

        intermediates = []
        x = self.patch_embed(x)
        i = 0
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                if norm and i == last_idx:
                    x_inter = self.norm(x.permute(0, 2, 3, 1))
                    x_inter = x_inter if nhwc else x_inter.permute(0, 3, 1, 2)
                else:
                    x_inter = x.permute(0, 2, 3, 1).contiguous() if nhwc else x
                intermediates.append(x_inter)

        if intermediates_only:
            return intermediates
        if i == last_idx:
            x = self._final_norm(x)
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: 'Union[int, List[int]]' = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages after the last one in `indices`, and the norm / head if asked.

        Dropping the last stage drops the final norm and the head too (both are sized for it);
        ``num_features`` then becomes the last kept stage's width. Returns the absolute indices.
        """
        take_indices, max_index = feature_take_indices(len(self.levels), indices)
        prune_end = max_index < len(self.levels) - 1
        self.levels = self.levels[:max_index + 1]  # nn.Sequential slice: names are kept
        if prune_norm or prune_end:
            self.norm = nn.Identity()
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
        if prune_head or prune_end:
            self.reset_classifier(0, '')
        return take_indices

    def forward_stages(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The (B, C, H, W) output of every stage, before the final norm."""
        return self.forward_intermediates(x, intermediates_only=True)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = self.levels(x)
        return self._final_norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == 'avg':
            x = x.mean(dim=(2, 3))
        elif self.global_pool == 'max':
            x = x.amax(dim=(2, 3))
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def fuse(self) -> 'PosMLPClassifier':
        """Deployment step: fold and precompute what the final weights fix (fused.py)."""
        from .fused import fuse_posmlp
        return fuse_posmlp(self)



# --------------------------------------------------------------------------- timm registration
# timm.create_model('posmlp_t' | 'posmlp_s' | 'posmlp_b'). Parameter names are the reference
# implementation's, so its ImageNet checkpoints load with `pretrained_cfg_overlay=dict(file=PATH)`
# (checkpoint_filter_fn picks 'state_dict_ema' and drops the window-derived buffers it stored).

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD  # noqa: E402
from timm.layers import register_notrace_module  # noqa: E402
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model  # noqa: E402
from timm.models._features import feature_take_indices  # noqa: E402

from .weights import DERIVED_BUFFERS, extract_state_dict  # noqa: E402

# FX: a stage partitions its map into windows by the map's concrete size (see the class docstring)
register_notrace_module(PosMLPStage)


def checkpoint_filter_fn(state_dict: Dict, model: nn.Module) -> Dict:
    """A reference training checkpoint, a timm state dict, ... (weights.extract_state_dict) ->
    this model's state dict, without the window-derived buffers the reference stored."""
    state_dict, _ = extract_state_dict(state_dict)
    return {k: v for k, v in state_dict.items() if not k.endswith(DERIVED_BUFFERS)}


def _cfg(**kwargs) -> Dict:
    return {
        'url': '', 'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.9, 'interpolation': 'bicubic', 'fixed_input_size': False,
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'patch_embed.projs.0', 'classifier': 'head', 'license': 'apache-2.0',
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    'posmlp_t.in1k': _cfg(),
    'posmlp_s.in1k': _cfg(),
    'posmlp_b.untrained': _cfg(),
})


def _create(variant: str, arch: str, pretrained: bool = False, **kwargs) -> PosMLPClassifier:
    return build_model_with_cfg(
        PosMLPClassifier, variant, pretrained, arch=arch,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls='getter', out_indices=(0, 1, 2, 3)),
        **kwargs)


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


__all__ = ['ARCH_SETTINGS', 'MIXERS', 'resolve_arch', 'Region', 'window_regions',
           'window_partition', 'window_reverse', 'window_tokens', 'GQPE', 'LRPE',
           'DenseTokenMixer', 'PosSGU', 'PosMLPBlock', 'PosMLPStage', 'Downsample', 'ConvStem',
           'build_stages', 'init_posmlp_weights', 'PosMLPClassifier',
           'checkpoint_filter_fn', 'posmlp_t', 'posmlp_s', 'posmlp_b']
