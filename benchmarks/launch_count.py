"""Launch count: the GPU's view of one backbone training step, measured on any device.

    python benchmarks/launch_count.py                               # both models, 800x1216
    python benchmarks/launch_count.py --models posmlp_t --size 800 1344 --batch 2
    python benchmarks/launch_count.py --out-dir /tmp/launches       # results elsewhere

A training step of a backbone: forward of a (batch, 3, H, W) float32 random image in train
mode, loss = the sum of each output's mean, backward. Two figures per backbone:

1. Operators per training step. Every operator that reaches the Python dispatch key during
   forward + backward is seen by a ``TorchDispatchMode`` (below autograd: composite ops such as
   ``linear`` or ``matmul`` arrive already decomposed into ``addmm`` / ``mm`` / ``bmm`` and
   the like, autograd's backward formulas arrive as the ops they run, and so does
   ``torch.autograd.backward``'s own ``ones_like`` for the loss's gradient; what an operator
   does inside its own kernel is not seen). Each one is counted, EXCEPT (exclusion rule, exact):

   a. ops that only make a new view or reshape of existing memory: any op whose schema says a
      returned tensor aliases an input without writing to it (``Tensor(a)`` return, e.g. view,
      expand, permute, transpose, t, slice, select, detach, alias, as_strided, unfold, ...),
      plus, by name, the metadata-only ops the schema does not mark so, and the list/in-place
      forms of views: ``EXCLUDED_VIEWS`` below (``_unsafe_view``, ``_reshape_alias``, split,
      chunk, unbind, ..., ``squeeze_``/``unsqueeze_``/``t_``/``transpose_``/``as_strided_``/
      ``detach_``);
   b. allocations without a kernel: ``EXCLUDED_ALLOCS`` (empty, empty_like, empty_strided,
      new_empty, new_empty_strided, empty_permuted, and lift_fresh, the no-op wrapping of a
      constant made by ``torch.tensor``; its copying form ``lift_fresh_copy`` counts).

   Everything else counts once per call, whatever it costs: copies and casts (``clone``,
   ``copy_``, ``_to_copy``), fills (``zero_``, ``fill_``, ``zeros``, ``ones_like``), in-place
   arithmetic, random numbers (drop path's ``bernoulli_``), reductions, ``_local_scalar_dense``
   (``.item()``). One operator is not always one GPU launch (a fused kernel, a GEMM that cuBLAS
   splits, a reduction in two passes, a scalar op done on the host), so the count is the number
   of separate kernels a naive GPU execution would start, a proxy for launch overhead.

   One warm-up step (caches: a module's lazily built index buffers, autocast's casts, ...) runs
   first, not counted; gradients are set to None before each step, as an optimizer's
   ``zero_grad()`` does, so the counted step accumulates gradients as a training step does.

2. Aligned GEMM share under bfloat16 autocast. The same step with the forward (and the loss)
   under ``torch.autocast(device, dtype=torch.bfloat16)``, the backward outside it. For every
   matmul-family op seen at the dispatch key (``MATMUL_OPS``: mm, addmm, _addmm_activation,
   bmm, baddbmm, addbmm, matmul, linear, _scaled_mm, mv, addmv, dot; convolutions excluded)
   the GEMM (batch B, M, N, K) is read from the operand shapes: the first matrix operand is
   (.., M, K), the second (.., K, N) (for linear the weight is (N, K)); K is the contracted
   dimension. Shapes are the logical ones: an operand passed transposed (``a.t()``, a view with
   swapped strides) has the transposed shape, so K is still the contracted size, never a
   stride. FLOPs = 2 * B * M * N * K. The dtype is the first matrix operand's.

   Reported: the share of GEMM FLOPs whose K is a multiple of 8 among the GEMMs whose K is not
   exempt (exempt GEMMs are left out of both sides), the same share over all GEMM FLOPs without
   exemption, the exempt FLOP share, per dtype, and the largest misaligned (K % 8 != 0, not
   exempt) shapes with their share of all GEMM FLOPs. Exempt K values: the token counts of a
   window, the K of window-local token mixing that no layout choice can change: for PosMLP the
   token counts of every (possibly clipped) window shape present at the input size
   (``posmlp_window_tokens``), for Swin-T 49 (it pads the map to whole 7x7 windows).

Writes <out-dir>/launches.md and launches.json (default benchmarks/results/).
Importable: ``count_ops(model, x)``, ``gemm_alignment(model, x, exempt_k)``.
"""
import argparse
import json
import math
import os
import platform
import sys
import time
from collections import Counter, defaultdict
from contextlib import nullcontext
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

HERE = os.path.dirname(os.path.abspath(__file__))

# ------------------------------------------------------------------ what is counted
EXCLUDED_VIEWS = frozenset({
    # views and reshapes (most are also caught by the schema test, listed to be explicit)
    'view', '_unsafe_view', '_reshape_alias', 'reshape', 'view_as', 'expand', 'expand_as',
    'permute', 'transpose', 't', 'squeeze', 'unsqueeze', 'slice', 'select', 'split',
    'split_with_sizes', 'unsafe_split', 'unsafe_split_with_sizes', 'chunk', 'unsafe_chunk',
    'unbind', 'narrow', 'as_strided', 'alias', 'detach', 'unflatten', 'flatten', 'diagonal',
    'unfold', 'movedim', 'swapaxes', 'swapdims', 'real', 'imag', 'view_as_real',
    'view_as_complex', '_neg_view', '_conj', 'conj',
    # in-place forms that change only the metadata
    'squeeze_', 'unsqueeze_', 't_', 'transpose_', 'as_strided_', 'detach_', 'swapaxes_',
    'swapdims_',
})
EXCLUDED_ALLOCS = frozenset({
    'empty', 'empty_like', 'empty_strided', 'new_empty', 'new_empty_strided', 'empty_permuted',
    'lift_fresh',
})

MATMUL_OPS = frozenset({
    'mm', 'addmm', '_addmm_activation', 'bmm', 'baddbmm', 'addbmm', 'matmul', 'linear',
    '_scaled_mm', 'mv', 'addmv', 'dot',
})


def op_name(func) -> str:
    """'addmm' for aten.addmm.default; other namespaces keep theirs ('mmcv::nms')."""
    name = func.overloadpacket.__name__
    ns = getattr(func, 'namespace', 'aten')
    return name if ns == 'aten' else f'{ns}::{name}'


def _schema_is_view(func) -> bool:
    """A returned tensor aliases an input and is not written: the op makes a view."""
    for ret in func._schema.returns:
        info = ret.alias_info
        if info is not None and not info.is_write:
            return True
    return False


def is_excluded(func) -> bool:
    """The exclusion rule of the module docstring (views, reshapes, empty allocations)."""
    name = func.overloadpacket.__name__
    return name in EXCLUDED_VIEWS or name in EXCLUDED_ALLOCS or _schema_is_view(func)


# ------------------------------------------------------------------ the step
def _outputs(out) -> List[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    return [t for t in out if isinstance(t, torch.Tensor)]


def train_step(model: torch.nn.Module, x: torch.Tensor,
               autocast_dtype: Optional[torch.dtype] = None,
               on_backward: Optional[Callable[[], None]] = None) -> None:
    """Forward in train mode, loss = sum of each output's mean, backward (outside autocast).
    Gradients are set to None first, as an optimizer's zero_grad() does."""
    model.train()
    model.zero_grad(set_to_none=True)
    ctx = (torch.autocast(x.device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else nullcontext())
    with ctx:
        loss = None
        for y in _outputs(model(x)):
            m = y.mean()
            loss = m if loss is None else loss + m
    if on_backward is not None:
        on_backward()
    loss.backward()


class _Recorder(TorchDispatchMode):
    """Counts the operators dispatched (and records the GEMMs, when asked) while active."""

    def __init__(self, gemms: bool = False):
        super().__init__()
        self.phase = 'fwd'
        self.counted: Dict[str, Counter] = {'fwd': Counter(), 'bwd': Counter()}
        self.excluded: Counter = Counter()
        self.record_gemms = gemms
        self.gemms: List[dict] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = op_name(func)
        if is_excluded(func):
            self.excluded[name] += 1
        else:
            self.counted[self.phase][name] += 1
        if self.record_gemms and func.overloadpacket.__name__ in MATMUL_OPS:
            self.gemms.append(dict(gemm_shape(func.overloadpacket.__name__, args, kwargs),
                                   op=func.overloadpacket.__name__, phase=self.phase))
        return func(*args, **kwargs)


def _run(model, x, warmup: int, gemms: bool, autocast_dtype=None) -> _Recorder:
    for _ in range(warmup):
        train_step(model, x, autocast_dtype)
    rec = _Recorder(gemms=gemms)
    with rec:
        train_step(model, x, autocast_dtype, on_backward=lambda: setattr(rec, 'phase', 'bwd'))
    model.zero_grad(set_to_none=True)
    return rec


# ------------------------------------------------------------------ 1. operator count
def count_ops(model: torch.nn.Module, x: torch.Tensor, warmup: int = 1) -> dict:
    """Operators of one training step (module docstring, figure 1).

    Returns dict(total, forward, backward, ops (Counter, name -> calls, counted ones only),
    excluded (total of views / reshapes / empty allocations left out), excluded_ops)."""
    rec = _run(model, x, warmup, gemms=False)
    ops = rec.counted['fwd'] + rec.counted['bwd']
    return dict(total=sum(ops.values()), forward=sum(rec.counted['fwd'].values()),
                backward=sum(rec.counted['bwd'].values()), ops=ops,
                excluded=sum(rec.excluded.values()), excluded_ops=rec.excluded)


# ------------------------------------------------------------------ 2. GEMM alignment
def _prod(xs: Iterable[int]) -> int:
    return math.prod(int(v) for v in xs)


def gemm_shape(op: str, args: Sequence, kwargs: dict) -> dict:
    """dict(B, M, N, K, flops, dtype) of a matmul-family call, from its operands' shapes."""
    def mats(i, j):
        return args[i], args[j]

    if op in ('mm', '_scaled_mm'):
        a, b = mats(0, 1)
        B, M, K, N = 1, a.shape[0], a.shape[1], b.shape[1]
    elif op in ('addmm', '_addmm_activation'):
        a, b = mats(1, 2)
        B, M, K, N = 1, a.shape[0], a.shape[1], b.shape[1]
    elif op == 'bmm':
        a, b = mats(0, 1)
        B, M, K, N = a.shape[0], a.shape[1], a.shape[2], b.shape[2]
    elif op in ('baddbmm', 'addbmm'):  # addbmm also sums over the batch: FLOPs as bmm's
        a, b = mats(1, 2)
        B, M, K, N = a.shape[0], a.shape[1], a.shape[2], b.shape[2]
    elif op == 'mv':
        a, b = mats(0, 1)
        B, M, K, N = 1, a.shape[0], a.shape[1], 1
    elif op == 'addmv':
        a, b = mats(1, 2)
        B, M, K, N = 1, a.shape[0], a.shape[1], 1
    elif op == 'dot':
        a, b = mats(0, 1)
        B, M, K, N = 1, 1, a.shape[0], 1
    elif op == 'linear':  # input (..., K), weight (N, K)
        a, w = args[0], args[1]
        B, M, K, N = 1, _prod(a.shape[:-1]), a.shape[-1], w.shape[0]
    elif op == 'matmul':
        a, b = mats(0, 1)
        sa = list(a.shape) if a.dim() > 1 else [1] + list(a.shape)
        sb = list(b.shape) if b.dim() > 1 else list(b.shape) + [1]
        batch = torch.broadcast_shapes(tuple(sa[:-2]), tuple(sb[:-2]))
        B, M, K, N = _prod(batch), sa[-2], sa[-1], sb[-1]
    else:
        raise KeyError(op)
    B, M, N, K = int(B), int(M), int(N), int(K)
    return dict(B=B, M=M, N=N, K=K, flops=2 * B * M * N * K,
                dtype=str(a.dtype).replace('torch.', ''))


def summarize_gemms(gemms: List[dict], exempt_k: Set[int], top: int = 10) -> dict:
    """Aligned shares (K % 8 == 0) of a list of gemm_shape records; see the module docstring."""
    exempt_k = set(int(k) for k in exempt_k)
    total = sum(g['flops'] for g in gemms)
    aligned = sum(g['flops'] for g in gemms if g['K'] % 8 == 0)
    exempt = sum(g['flops'] for g in gemms if g['K'] in exempt_k)
    counted = total - exempt
    aligned_counted = sum(g['flops'] for g in gemms if g['K'] not in exempt_k and g['K'] % 8 == 0)

    def share(a, b):
        return a / b if b else float('nan')

    per_dtype = {}
    for dt in sorted({g['dtype'] for g in gemms}):
        sub = [g for g in gemms if g['dtype'] == dt]
        f = sum(g['flops'] for g in sub)
        f_counted = sum(g['flops'] for g in sub if g['K'] not in exempt_k)
        per_dtype[dt] = dict(
            calls=len(sub), gflop=f / 1e9, flop_share=share(f, total),
            aligned_share_exempt=share(sum(g['flops'] for g in sub if g['K'] not in exempt_k
                                           and g['K'] % 8 == 0), f_counted),
            aligned_share_all=share(sum(g['flops'] for g in sub if g['K'] % 8 == 0), f))

    groups: Dict[tuple, dict] = defaultdict(lambda: dict(calls=0, flops=0))
    for g in gemms:
        if g['K'] % 8 and g['K'] not in exempt_k:
            key = (g['op'], g['B'], g['M'], g['N'], g['K'], g['dtype'], g['phase'])
            groups[key]['calls'] += 1
            groups[key]['flops'] += g['flops']
    misaligned = sorted(groups.items(), key=lambda kv: -kv[1]['flops'])
    return dict(
        calls=len(gemms), gflop=total / 1e9, exempt_k=sorted(exempt_k),
        aligned_share_exempt=share(aligned_counted, counted),
        aligned_share_all=share(aligned, total),
        exempt_flop_share=share(exempt, total),
        misaligned_flop_share=share(counted - aligned_counted, total),
        per_dtype=per_dtype,
        misaligned_shapes=[dict(op=k[0], B=k[1], M=k[2], N=k[3], K=k[4], dtype=k[5], phase=k[6],
                                calls=v['calls'], gflop=v['flops'] / 1e9,
                                flop_share=share(v['flops'], total))
                           for k, v in misaligned[:top]],
        misaligned_shape_count=len(misaligned))


def gemm_alignment(model: torch.nn.Module, x: torch.Tensor, exempt_k: Iterable[int],
                   dtype: Optional[torch.dtype] = torch.bfloat16, warmup: int = 1,
                   top: int = 10) -> dict:
    """GEMM alignment of one training step under autocast(dtype) (module docstring, figure 2).

    `dtype=None` runs without autocast. Returns summarize_gemms' dict plus `gemms` (every
    record: op, phase, B, M, N, K, flops, dtype) and `ops_total` (operators counted, rule 1)."""
    rec = _run(model, x, warmup, gemms=True, autocast_dtype=dtype)
    out = summarize_gemms(rec.gemms, set(exempt_k), top)
    out['gemms'] = rec.gemms
    out['ops_total'] = sum((rec.counted['fwd'] + rec.counted['bwd']).values())
    return out


# ------------------------------------------------------------------ models
def posmlp_window_tokens(height: int, width: int,
                         windows: Sequence[int] = (14, 14, 14, 7)) -> Set[int]:
    """Token counts of every window shape of PosMLP's stages (no shift) at an input size.

    Stage maps: the stem's two 3x3 stride-2 convs with padding 1 (n -> floor((n + 1) / 2)
    twice, i.e. ceil(n / 4)), then the same halving before each later stage. A map of h x w cut
    into w_s x w_s windows has rows of w_s (if h >= w_s) and a clipped band of h mod w_s (if
    nonzero), the same across; each row size x column size present is one window shape."""
    h, w = int(height), int(width)
    for _ in range(2):  # the stem
        h, w = (h + 1) // 2, (w + 1) // 2
    tokens = set()
    for i, win in enumerate(windows):
        if i > 0:  # the stage's downsampling conv
            h, w = (h + 1) // 2, (w + 1) // 2
        rows = ([win] if h >= win else []) + ([h % win] if h % win else [])
        cols = ([win] if w >= win else []) + ([w % win] if w % win else [])
        tokens.update(r * c for r in rows for c in cols)
    return tokens


def _mmdet_backbone(cfg: dict) -> torch.nn.Module:
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS
    if os.path.dirname(HERE) not in sys.path:
        sys.path.insert(0, os.path.dirname(HERE))
    import mmdet_posmlp  # noqa: F401  (registers PosMLP and the family)
    init_default_scope('mmdet')
    return MODELS.build(cfg)


def _posmlp_exempt(model, height: int, width: int) -> Set[int]:
    setting = getattr(model, 'setting', None) or {}
    windows = tuple(setting.get('windows', (14, 14, 14, 7)))
    stages = len(getattr(model, 'levels', windows))
    return posmlp_window_tokens(height, width, windows[:stages])


# name -> (label, build(), exempt_k(model, H, W)); add a backbone by adding a line
MODELS: Dict[str, Tuple[str, Callable[[], torch.nn.Module],
                        Callable[[torch.nn.Module, int, int], Set[int]]]] = {
    'posmlp_t': ('PosMLP-T (ours)',
                 lambda: _mmdet_backbone(dict(type='PosMLP', arch='tiny', out_indices=(1, 2, 3),
                                              drop_path_rate=0.1)),
                 _posmlp_exempt),
    # as in mmdet's retinanet_swin-t-p4-w7_fpn_1x_coco.py
    'swin_t': ('Swin-T (mmdet)',
               lambda: _mmdet_backbone(dict(
                   type='SwinTransformer', embed_dims=96, depths=[2, 2, 6, 2],
                   num_heads=[3, 6, 12, 24], window_size=7, mlp_ratio=4, qkv_bias=True,
                   qk_scale=None, drop_rate=0., attn_drop_rate=0., drop_path_rate=0.2,
                   patch_norm=True, out_indices=(1, 2, 3), with_cp=False,
                   convert_weights=False)),
               lambda model, h, w: {49}),
}


# ------------------------------------------------------------------ CLI
def _pct(v: float) -> str:
    return 'n/a' if v != v else f'{100 * v:.1f}%'


def measure(name: str, size: Tuple[int, int], batch: int, top_ops: int = 12) -> dict:
    label, build, exempt_fn = MODELS[name]
    torch.manual_seed(0)
    model = build()
    x = torch.randn(batch, 3, *size)
    t0 = time.time()
    ops = count_ops(model, x)
    t1 = time.time()
    exempt = exempt_fn(model, *size)
    gemm = gemm_alignment(model, x, exempt)
    t2 = time.time()
    gemm.pop('gemms')
    return dict(label=label, size=list(size), batch=batch,
                ops=dict(total=ops['total'], forward=ops['forward'], backward=ops['backward'],
                         excluded=ops['excluded'], distinct=len(ops['ops']),
                         top=ops['ops'].most_common(top_ops), all=dict(ops['ops'].most_common()),
                         excluded_ops=dict(ops['excluded_ops'].most_common())),
                gemm_bf16=gemm, seconds=dict(count=t1 - t0, gemm=t2 - t1))


def report(name: str, r: dict) -> List[str]:
    o, g = r['ops'], r['gemm_bf16']
    lines = [f"## {r['label']} [{name}], input ({r['batch']}, 3, {r['size'][0]}, {r['size'][1]})",
             '',
             f"Operators per training step: {o['total']:,} (forward {o['forward']:,}, "
             f"backward {o['backward']:,}; {o['distinct']} distinct; left out: "
             f"{o['excluded']:,} views/reshapes/empty allocations)",
             f"Under bf16 autocast: {g['ops_total']:,} operators", '',
             f"Top {len(o['top'])} ops:", '', '| op | calls | share |', '|---|---|---|']
    lines += [f"| {k} | {v:,} | {_pct(v / o['total'])} |" for k, v in o['top']]
    lines += ['', f"GEMMs under bf16 autocast: {g['calls']} calls, {g['gflop']:.1f} GFLOP; "
              f"exempt K (window tokens): {g['exempt_k']}", '',
              f"- aligned (K % 8 == 0), exempt K left out: **{_pct(g['aligned_share_exempt'])}**",
              f"- aligned among all GEMM FLOPs, no exemption: **{_pct(g['aligned_share_all'])}**",
              f"- exempt FLOP share: {_pct(g['exempt_flop_share'])}; misaligned and not exempt: "
              f"{_pct(g['misaligned_flop_share'])} of all GEMM FLOPs", '',
              '| dtype | calls | GFLOP | FLOP share | aligned (exempt left out) | aligned (all) |',
              '|---|---|---|---|---|---|']
    lines += [f"| {dt} | {d['calls']} | {d['gflop']:.1f} | {_pct(d['flop_share'])} | "
              f"{_pct(d['aligned_share_exempt'])} | {_pct(d['aligned_share_all'])} |"
              for dt, d in g['per_dtype'].items()]
    lines += ['', f"Misaligned, not exempt shapes (top {len(g['misaligned_shapes'])} of "
              f"{g['misaligned_shape_count']}):", '',
              '| op | phase | B | M | N | K | dtype | calls | GFLOP | share of GEMM FLOPs |',
              '|---|---|---|---|---|---|---|---|---|---|']
    lines += [f"| {s['op']} | {s['phase']} | {s['B']} | {s['M']} | {s['N']} | {s['K']} | "
              f"{s['dtype']} | {s['calls']} | {s['gflop']:.2f} | {_pct(s['flop_share'])} |"
              for s in g['misaligned_shapes']]
    return lines + ['']


def code_state() -> str:
    """The commit measured and the package files that differ from it (sha256 of their text), so
    a result says which code it came from while the working tree is being edited."""
    import hashlib
    import subprocess
    repo = os.path.dirname(HERE)
    try:
        head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=repo, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--', 'mmdet_posmlp'], cwd=repo,
                               text=True, capture_output=True, check=True).stdout.split('\n')
    except (OSError, subprocess.CalledProcessError):
        return 'unknown (no git)'
    files = sorted(line[3:] for line in dirty if line.strip() and line[3:].endswith('.py'))
    digests = []
    for f in files:
        try:
            with open(os.path.join(repo, f), 'rb') as fh:
                digests.append(f'{f}@{hashlib.sha256(fh.read()).hexdigest()[:10]}')
        except OSError:
            digests.append(f'{f}@deleted')
    return f"commit {head}" + (f" + uncommitted {', '.join(digests)}" if digests else '')


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--size', nargs=2, type=int, default=(800, 1216), metavar=('H', 'W'))
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--models', nargs='+', default=list(MODELS), choices=list(MODELS))
    p.add_argument('--out-dir', default=os.path.join(HERE, 'results'))
    p.add_argument('--top', type=int, default=12, help='most frequent ops listed per model')
    args = p.parse_args(argv)

    size = tuple(args.size)
    code = code_state()
    header = ["# Launch count: operators per training step and GEMM alignment (bf16 autocast)",
              '', f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, device cpu, {time.strftime('%Y-%m-%d %H:%M')}",
              '', f'Code: {code}', '',
              'Counting rule and exemptions: see the docstring of benchmarks/launch_count.py '
              '(views, reshapes and empty allocations left out; one warm-up step first).', '']
    print('\n'.join(header), flush=True)
    results, lines = {}, list(header)
    for name in args.models:
        r = measure(name, size, args.batch, args.top)
        results[name] = r
        text = report(name, r)
        print('\n'.join(text), flush=True)
        lines += text
    summary = ['## Summary', '',
               '| model | operators / step | aligned GEMM FLOPs (exempt left out) '
               '| aligned (all) |',
               '|---|---|---|---|']
    summary += [f"| {r['label']} | {r['ops']['total']:,} | "
                f"{_pct(r['gemm_bf16']['aligned_share_exempt'])} | "
                f"{_pct(r['gemm_bf16']['aligned_share_all'])} |" for r in results.values()]
    print('\n'.join(summary))
    lines += summary

    if code_state() != code:
        warn = f'WARNING: the package changed during the run (now: {code_state()})'
        print(warn)
        lines += ['', warn]
    os.makedirs(args.out_dir, exist_ok=True)
    meta = dict(torch=torch.__version__, threads=torch.get_num_threads(),
                date=time.strftime('%Y-%m-%d %H:%M'), size=list(size), batch=args.batch,
                code=code)
    for fname, text in (('launches.md', '\n'.join(lines) + '\n'),
                        ('launches.json', json.dumps(dict(meta=meta, models=results), indent=1))):
        path = os.path.join(args.out_dir, fname)
        with open(path + '.tmp', 'w') as f:
            f.write(text)
        os.replace(path + '.tmp', path)
    print(f"wrote {os.path.join(args.out_dir, 'launches.md')} and launches.json")
    return 0


if __name__ == '__main__':
    sys.exit(main())
