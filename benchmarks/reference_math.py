"""PosMLP written the plain way, straight from the paper's equations: the oracle.

Token-major (B, windows, N, C) activations, interleaved channel groups, the GQPE score
written as -1/2 (d - delta)^T A (d - delta) with its constant, and an einsum per window.
Windows that hold padding get their own matrix, softmax taken over their valid tokens only.
Nothing is shared with `posmlp.py` but the checkpoint key names, so the tests compare two
independent implementations, and the benchmark uses this as the plain-math baseline.

It reads a state dict in the reference layout (timm `posmlp_*` or the original checkpoints)
and runs in whatever dtype the weights are given in (the tests use float64).
"""
from typing import Dict, List

import torch
import torch.nn.functional as F

EPS = 1e-6


def _gelu(x):
    return F.gelu(x)


def _stem(sd: Dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    for i, (stride, pad) in enumerate([(2, 1), (2, 1), (1, 0)]):
        x = F.conv2d(x, sd[f'patch_embed.projs.{i}.weight'], sd[f'patch_embed.projs.{i}.bias'],
                     stride=stride, padding=pad)
        p = f'patch_embed.norms.{i}.'
        x = F.batch_norm(x, sd[p + 'running_mean'], sd[p + 'running_var'], sd[p + 'weight'],
                         sd[p + 'bias'], training=False, eps=EPS)
        if i < 2:
            x = _gelu(x)
    return x


def gqpe_matrix(centers: torch.Tensor, spreads: torch.Tensor, window: int,
                valid: torch.Tensor = None) -> torch.Tensor:
    """(G, N, N) GQPE mixing matrices; `valid` (N,) bool limits the softmax to those sources."""
    coords = [(r, c) for r in range(window) for c in range(window)]
    r = torch.tensor([p[0] for p in coords], dtype=centers.dtype, device=centers.device)
    c = torch.tensor([p[1] for p in coords], dtype=centers.dtype, device=centers.device)
    dx = c[None, :] - c[:, None]           # [m, n] = col_n - col_m
    dy = r[:, None] - r[None, :]           # [m, n] = row_m - row_n
    d = torch.stack([dx, dy], dim=-1)      # (N, N, 2)
    A = spreads @ spreads.transpose(1, 2)  # (G, 2, 2)
    e = d[None] - centers[:, None, None, :]  # (G, N, N, 2)
    score = -0.5 * torch.einsum('gmni,gij,gmnj->gmn', e, A, e)
    if valid is not None:
        score = score.masked_fill(~valid, float('-inf'))
    return score.softmax(dim=-1)


def lrpe_matrix(table: torch.Tensor, window: int, valid: torch.Tensor = None) -> torch.Tensor:
    """(G, N, N): P_g[m, n] = table[(row_m - row_n + w - 1) * (2w - 1) + col_m - col_n + w - 1, g]."""
    tokens = torch.arange(window * window, device=table.device)
    r, c = tokens // window, tokens % window
    idx = (r[:, None] - r[None, :] + window - 1) * (2 * window - 1) + (c[:, None] - c[None, :] + window - 1)
    P = table[idx].permute(2, 0, 1)
    if valid is not None:
        P = P * valid
    return P


def _mixing(sd, prefix, mixer, window, valid):
    if mixer == 'gqpe':
        return gqpe_matrix(sd[prefix + 'attention_centers'], sd[prefix + 'attention_spreads'],
                           window, valid)
    if mixer == 'lrpe':
        return lrpe_matrix(sd[prefix + 'window_relative_position_bias_table'], window, valid)
    W = sd[prefix + 'token_proj_n_weight']
    return W if valid is None else W * valid


def _windows(x: torch.Tensor, w: int, offset: int):
    """Zero-pad x (B, C, H, W) by `offset` at the top and left and to window multiples at the
    bottom and right; cut into windows: (B, nW, N, C), the valid-token mask of each window,
    and the function that puts windows back and crops."""
    B, C, H, W = x.shape
    top = (w - offset) % w
    Hp, Wp = -(-(H + top) // w) * w, -(-(W + top) // w) * w
    t = F.pad(x, (top, Wp - W - top, top, Hp - H - top)).permute(0, 2, 3, 1)  # B, Hp, Wp, C
    t = t.reshape(B, Hp // w, w, Wp // w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(B, -1, w * w, C)
    inside = torch.zeros(Hp, Wp, dtype=torch.bool, device=x.device)
    inside[top:top + H, top:top + W] = True
    valid = inside.view(Hp // w, w, Wp // w, w).permute(0, 2, 1, 3).reshape(-1, w * w)

    def back(t):
        t = t.view(B, Hp // w, Wp // w, w, w, C).permute(0, 5, 1, 3, 2, 4).reshape(B, C, Hp, Wp)
        return t[:, :, top:top + H, top:top + W].contiguous()
    return t, valid, back


def reference_weights(model) -> Dict[str, torch.Tensor]:
    """The model's parameters and buffers in the reference layout, still differentiable: what
    ``model.state_dict()`` holds, without the detach (a block stores its hidden channels in
    grouped order; ``PosMLPBlock._layouts`` names the tensors and their orders)."""
    weights = dict(model.named_parameters())
    weights.update(model.named_buffers())
    for name, module in model.named_modules():
        if hasattr(module, '_layouts'):
            for key, dim, order in module._layouts(name + '.'):
                weights[key] = weights[key].index_select(dim, torch.argsort(order))
    return weights


def reference_stages(sd: Dict[str, torch.Tensor], setting: dict, x: torch.Tensor,
                     mixer: str = 'gqpe', shift: bool = False) -> List[torch.Tensor]:
    """The (B, C, H, W) output of every stage for image batch x (eval mode). With `shift`,
    every second block of a stage works on the window grid moved down and right by half a
    window (zero padding at the top and left, kept out of the mixing like any padding)."""
    x = _stem(sd, x)
    outs = []
    for i, depth in enumerate(setting['depths']):
        w, G = setting['windows'][i], setting['groups'][i]
        if i > 0:
            p = f'levels.{i}.pool.'
            x = F.conv2d(x, sd[p + 'conv.weight'], sd[p + 'conv.bias'], stride=2, padding=1,
                         groups=x.shape[1])
            x = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), sd[p + 'norm.weight'],
                             sd[p + 'norm.bias'], EPS).permute(0, 3, 1, 2)
        B, C = x.shape[:2]
        for j in range(depth):
            t, valid, back = _windows(x, w, w // 2 if shift and j % 2 else 0)
            kinds, kind_of_window = torch.unique(valid, dim=0, return_inverse=True)
            p = f'levels.{i}.encoder.{j}.'
            h = F.layer_norm(t, (C,), sd[p + 'norm.weight'], sd[p + 'norm.bias'], EPS)
            h = _gelu(F.linear(h, sd[p + 'proj_c_e.weight'], sd[p + 'proj_c_e.bias']))
            u, v = h.chunk(2, dim=-1)
            u = u.reshape(B, -1, w * w, u.shape[-1] // G, G)                # channel = v * G + g
            mixed = torch.empty_like(u)
            for k, kind in enumerate(kinds):
                sel = kind_of_window == k
                P = _mixing(sd, p + 'gate_unit.pos.', mixer, w, None if kind.all() else kind)
                mixed[:, sel] = torch.einsum('gmn,bwnvg->bwmvg', P, u[:, sel])
            mixed = mixed + sd[p + 'gate_unit.pos.token_proj_n_bias'].view(1, 1, -1, 1, 1)
            y = mixed.reshape(v.shape) * v
            x = back(t + F.linear(y, sd[p + 'proj_c_s.weight'], sd[p + 'proj_c_s.bias']))
        outs.append(x)
    return outs
