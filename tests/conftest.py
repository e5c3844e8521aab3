import argparse
import os
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def randomize_(model: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """Move positional, norm and BN-statistics values away from their initial values, so that
    comparisons cannot pass by symmetry of an untrained model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if '.pos.' in name or 'norm' in name or name.endswith('bias'):
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
        for name, b in model.named_buffers():
            if name.endswith('running_mean'):
                b.copy_(torch.randn(b.shape, generator=g, dtype=b.dtype) * 0.1)
            elif name.endswith('running_var'):
                b.copy_(torch.rand(b.shape, generator=g, dtype=b.dtype) + 0.5)
    return model


def _relative_offsets(window: int) -> torch.Tensor:
    """The reference's GQPE buffer `rel_indices`, (N, N, 5) of [dx, dy, dx^2, dy^2, dx*dy]."""
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing='ij')
    rows, cols = rows.flatten().float(), cols.flatten().float()
    dx = cols[None, :] - cols[:, None]  # col_n - col_m
    dy = rows[:, None] - rows[None, :]  # row_m - row_n
    return torch.stack([dx, dy, dx * dx, dy * dy, dx * dy], dim=-1)


def reference_checkpoint(classifier: torch.nn.Module) -> dict:
    """A checkpoint laid out as the reference implementation's training script writes it."""
    from mmdet_posmlp.models.posmlp import GQPE, LRPE, region_index
    sd = dict(classifier.state_dict())
    for name, m in classifier.named_modules():
        if isinstance(m, GQPE):  # the reference stored these derived buffers
            sd[f'{name}.rel_indices'] = _relative_offsets(m.window)
        elif isinstance(m, LRPE):
            w = m.window
            sd[f'{name}.window_relative_position_index'] = region_index(
                w, w, w, 0, 0, torch.device('cpu')).relative.view(w * w, -1)
    return {
        'epoch': 299, 'arch': 'Create_PosMLP', 'version': 2, 'metric': 82.1,
        'state_dict': {k: v.clone() for k, v in sd.items()},
        'state_dict_ema': sd,
        'optimizer': {'state': {}, 'param_groups': [{'lr': 1e-6, 'params': [0, 1]}]},
        'args': argparse.Namespace(model='Create_PosMLP', drop=0.02333, drop_path=0.1, lr=0.002),
    }


@pytest.fixture(scope='session')
def tiny_classifier():
    """PosMLP-T classifier in float64 with non-trivial weights (built once per session)."""
    from mmdet_posmlp.models.posmlp import PosMLPClassifier
    torch.manual_seed(0)
    return randomize_(PosMLPClassifier('tiny')).double().eval()
