"""Windows: how PosMLP cuts a stage's map into windows and keeps its tokens in window order.

A stage keeps its map's tokens as one (T, C) matrix in *window order* (``WindowLayout``):
edge-clipped windows kept unpadded, in up to four regions of same-shaped windows (nine with a
shifted grid). All of it depends only on the map's size and the window: built once per size and
device (``per_size_cache``) for every block and step; ``chunk_layouts`` serves CPU deployment.
"""
import functools
from typing import Iterator, List, NamedTuple, Optional, Tuple

import torch

__all__ = ['per_size_cache', 'Region', 'window_regions', 'window_tokens', 'RegionIndex',
           'region_index', 'WindowLayout', 'window_layout', 'gather_rows', 'to_windows',
           'from_windows', 'StageWindows', 'stage_windows', 'chunk_layouts']


def per_size_cache(maxsize: int):
    """Memoise ``build(*sizes, device)`` per arguments, where they are Python ints. Symbolic sizes
    (torch.export with dynamic H and W) are built in the traced program instead, and nothing is
    cached while torch.export or torch.compile traces (the tensors made then are fake, and a cache
    would hand them to later eager calls). torch's jit tracer gives a shape's sizes as 0-dim
    tensors: they are read as ints (its trace records one layout anyway, see deployment/sizes.py).
    The tensors are built as ordinary ones even under torch.inference_mode: a later call with
    autograd saves them for backward, which inference tensors cannot be."""
    def decorate(build):
        cached = functools.lru_cache(maxsize=maxsize)(build)

        @functools.wraps(build)
        def lookup(*args):
            if torch.jit.is_tracing():
                args = tuple(int(a) if isinstance(a, torch.Tensor) else a for a in args)
            if all(type(a) is int for a in args[:-1]) and not torch.compiler.is_compiling():
                with torch.inference_mode(False):
                    return cached(*args)
            return build(*args)

        lookup.cache_clear = cached.cache_clear
        return lookup
    return decorate


class Region(NamedTuple):
    """A block of same-shaped windows of a (B, C, H, W) map: the whole windows, or the ones
    clipped by an edge of the map. Tokens ordered (image, window row, window col, row, col)."""
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

    @property
    def size(self) -> int:  # tokens of the whole region
        return self.batch * self.win_rows * self.win_cols * self.rows * self.cols


def _bands(size: int, window: int, shift: int) -> List[Tuple[int, int, int, int]]:
    """(start, windows, tokens per window, first token) of the bands of windows along one side of
    a map, for a grid of windows moved by `shift` tokens: a leading band of the last `shift` rows
    of a window, the whole windows, a trailing band clipped by the edge; empty ones out."""
    # plain integer arithmetic, which symbolic sizes (torch.export with dynamic H, W, see
    # deployment/) keep simple: no min() (a Min carried through every later shape) and no divmod
    # or % (the clipped band comes out an integer when the size is linear in whole windows, where
    # a Mod would stay symbolic)
    lead = size if size < shift else shift
    full = (size - lead) // window
    edge = size - lead - window * full
    bands = [(0, 1, lead, window - shift), (lead, full, window, 0),
             (lead + full * window, 1, edge, 0)]
    return [b for b in bands if b[1] and b[2]]


def window_regions(batch: int, height: int, width: int, window: int,
                   shift: int = 0) -> List[Region]:
    """How a map is cut into `window` x `window` windows, as regions of same-shaped windows, band by
    band of rows: with `shift` = 0 the whole windows, the right edge, the bottom edge and the
    corner; with a shift (the grid moved down and right by `shift` tokens, as Swin's) up to nine.

    Windows that the map cuts are clipped to it instead of padded: they hold only real tokens, and
    mix them with the matching block of the full window's matrix (softmax over that block for
    GQPE). That is what the reference computes with zero padding kept out of the mixing, without
    spending anything on padding; with a shift, what Swin's cyclic shift and attention mask
    compute, without the wrap-around."""
    return [Region(batch, top, left, win_rows, win_cols, rows, cols, row0, col0)
            for top, win_rows, rows, row0 in _bands(height, window, shift)
            for left, win_cols, cols, col0 in _bands(width, window, shift)]


def window_tokens(window: int, rows: int, cols: int, row0: int = 0, col0: int = 0,
                  device=None) -> torch.Tensor:
    """Indices (row-major, in a full window) of the rows x cols tokens from (row0, col0)."""
    r = torch.arange(row0, row0 + rows, device=device)
    c = torch.arange(col0, col0 + cols, device=device)
    return (r[:, None] * window + c[None, :]).flatten()


class RegionIndex(NamedTuple):
    """What a mixer needs to know of the windows of one region, derived from their shape."""
    tokens: torch.Tensor     # (n,) the window's tokens, as indices in a full window
    positions: torch.Tensor  # (n, 2) float (x right, y up) of each token, from the window centre
    relative: torch.Tensor   # (n * n,) index of each (m, n) pair's offset in LRPE's table
    pairs: torch.Tensor      # (n * n,) index of each (m, n) pair in a full window's N x N


@per_size_cache(maxsize=256)
def region_index(window: int, rows: int, cols: int, row0: int, col0: int,
                 device: torch.device) -> RegionIndex:
    """The RegionIndex of windows of rows x cols tokens from (row0, col0) of a full window."""
    tokens = window_tokens(window, rows, cols, row0, col0, device)
    row = torch.div(tokens, window, rounding_mode='floor')
    col = tokens - row * window
    centre = (window - 1) / 2
    # x = col and y = -row: the reference's offsets are dx = col_n - col_m, dy = row_m - row_n
    # -(row - centre), not centre - row: torch.export writes a float minus a tensor as a
    # sub with a scalar first, which its ONNX decomposition cannot run
    positions = torch.stack([col - centre, -(row - centre)], dim=-1).float()
    relative = ((row[:, None] - row[None, :] + window - 1) * (2 * window - 1)
                + col[:, None] - col[None, :] + window - 1).flatten()
    pairs = (tokens[:, None] * window * window + tokens[None, :]).flatten()
    return RegionIndex(tokens, positions, relative, pairs)


class WindowLayout(NamedTuple):
    """Where the tokens of a stage are, for one grid of windows over a (B, H, W) map.

    Window order: region by region (see window_regions), and inside a region image by image,
    window by window, each window's tokens row-major. Everything token-wise (norm, both Linears,
    GELU, gate, residual, drop path) runs once over the (T, C) matrix, T = B * H * W; only the
    token mixing needs the regions, each a contiguous block of rows of same-shaped windows.

    The matrix has `rows` rows: T rounded up to a multiple of 8 with rows of zeros after the
    regions, which nothing mixes with and nothing reads back, so that the weight gradients of the
    Linears (GEMMs whose reduction runs over the rows) suit tensor cores; exact, since the extra
    rows get zero gradients. (Symbolic sizes, under torch.export, are not rounded.)"""
    regions: Tuple[Region, ...]
    starts: Tuple[int, ...]       # first row of each region, then T
    rows: int                     # rows of the token matrix: T, or T rounded up to 8
    order: torch.Tensor           # (T,) row of the map (B * H * W, NHWC order) of each token
    inverse: torch.Tensor         # (B * H * W,) token of each row of the map
    image: torch.Tensor           # (rows,) image of each token (stochastic depth per image)
    indices: Tuple[RegionIndex, ...]  # per region, what the mixers need of its windows' shape
    bias_tokens: torch.Tensor     # the regions' window tokens one after another (the biases)
    starts_tensor: Optional[torch.Tensor]  # int32 `starts` for the kernels (None if symbolic)

    @property
    def batch(self) -> int:
        return self.regions[0].batch


@per_size_cache(maxsize=64)
def window_layout(batch: int, height: int, width: int, window: int, shift: int,
                  device: torch.device) -> WindowLayout:
    """The WindowLayout of a map (cached: no index arithmetic per call)."""
    regions = window_regions(batch, height, width, window, shift)
    pixels = torch.arange(batch * height * width, device=device).view(batch, height, width)
    orders, starts = [], [0]
    for r in regions:
        block = pixels[:, r.top:r.top + r.win_rows * r.rows, r.left:r.left + r.win_cols * r.cols]
        orders.append(block.reshape(batch, r.win_rows, r.rows, r.win_cols, r.cols)
                      .permute(0, 1, 3, 2, 4).flatten())
        starts.append(starts[-1] + r.size)
    order = torch.cat(orders)
    inverse = torch.empty_like(order)
    inverse.index_copy_(0, order, torch.arange(order.numel(), device=device))
    # a window shape is the same for every size of an export's rule: under torch.export the
    # solver gives it as a SymInt of a constant, which int() reads without a guard (and which
    # region_index's cache could not hash); a shape that did vary would be specialised here
    indices = tuple(region_index(window, int(r.rows), int(r.cols), int(r.row0), int(r.col0),
                                 device) for r in regions)
    tokens = starts[-1]
    rows = -(-tokens // 8) * 8 if type(tokens) is int else tokens
    image = torch.div(order, height * width, rounding_mode='floor')
    if rows > tokens:
        image = torch.cat([image, image.new_zeros(rows - tokens)])
    starts_tensor = (torch.tensor(starts, dtype=torch.int32, device=device)
                     if all(type(s) is int for s in starts) else None)
    return WindowLayout(tuple(regions), tuple(starts), rows, order, inverse, image, indices,
                        torch.cat([i.tokens for i in indices]), starts_tensor)


def gather_rows(x: torch.Tensor, index: torch.Tensor, rows: int) -> torch.Tensor:
    """(rows, C): x[index], then zero rows up to `rows`. Plain autograd: a Function with the scatter
    by the same index as its backward measured no faster or smaller on a PosMLP-T training step
    (benchmarks/autograd_functions.py, 2026-12-07: 0.99x the time, 1.00x the peak memory)."""
    picked = x.index_select(0, index)
    if rows == index.shape[0]:
        return picked
    return torch.cat([picked, x.new_zeros((rows - index.shape[0], x.shape[1]))])


def to_windows(x: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
    """(B, C, H, W) map -> (layout.rows, C) tokens in the layout's window order."""
    return gather_rows(x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]), layout.order, layout.rows)


def from_windows(tokens: torch.Tensor, layout: WindowLayout, height: int,
                 width: int) -> torch.Tensor:
    """Inverse of to_windows: tokens -> (B, C, H, W), a channels-last view."""
    x = gather_rows(tokens, layout.inverse, layout.inverse.shape[0])
    return x.view(layout.batch, height, width, -1).permute(0, 3, 1, 2)


class StageWindows(NamedTuple):
    """The grids of windows of a stage: the plain one and, with shift, the moved one."""
    grids: Tuple[WindowLayout, ...]
    into: Tuple[torch.Tensor, ...]  # into[g]: rows of the other grid's tokens giving grid g's


@per_size_cache(maxsize=64)
def stage_windows(batch: int, height: int, width: int, window: int, shift: int,
                  device: torch.device) -> StageWindows:
    grids = tuple(window_layout(batch, height, width, window, s, device)
                  for s in ((0, shift) if shift else (0,)))
    into = tuple(grids[g - 1].inverse.index_select(0, grids[g].order) for g in range(len(grids)))
    return StageWindows(grids, into if shift else ())


@functools.lru_cache(maxsize=256)
def _chunk_plan(starts: Tuple[int, ...], window_tokens: Tuple[int, ...],
                rows: int) -> Tuple[Tuple[int, int, int], ...]:
    plan = []
    for region, (start, end, n) in enumerate(zip(starts[:-1], starts[1:], window_tokens)):
        step = max(n, rows // n * n)
        plan += [(a, min(end, a + step), region) for a in range(start, end, step)]
    return tuple(plan)


def chunk_layouts(layout: WindowLayout, rows: int) -> Iterator[Tuple[int, int, int, WindowLayout]]:
    """(first row, end row, region, the chunk's own one-region layout) of chunks of at most `rows`
    rows (at least one window) that cut each region only between windows: what a block needs to
    run on the chunk alone (inference: no images for drop path, no gathers)."""
    window_tokens = tuple(len(index.tokens) for index in layout.indices)
    for start, end, region in _chunk_plan(layout.starts, window_tokens, rows):
        yield start, end, region, WindowLayout(
            (layout.regions[region],), (0, end - start), end - start, None, None, None,
            (layout.indices[region],), None, None)
