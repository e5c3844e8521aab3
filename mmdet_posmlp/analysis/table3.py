"""The parameter column of the PosMLP paper's Table 3 (COCO, Mask R-CNN and RetinaNet, 1x).

mmdet has no Mask R-CNN config for PVT: those rows put its RetinaNet PVT config's backbone into
``mask-rcnn_r50_fpn_1x_coco.py`` (``Row.note``). Detectors are built without weights, on the meta
device where their code allows, else on the CPU. The paper counts parameters with requires_grad:
mmdet's ResNet configs freeze the stem and first stage (``frozen_stages=1``, 0.23M); only then do
ResNet rows match (RetinaNet R-50: 37.97M in all, 37.74M trainable, paper 37.7M).
"""
import os.path as osp
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from ..detector_io import build_detector, load_model_config, resolve_config

__all__ = ['Row', 'ROWS', 'resolve_config', 'row_config', 'build_row', 'measure',
           'format_table']


@dataclass(frozen=True)
class Row:
    """One (backbone, detector) cell pair of Table 3."""
    backbone: str
    detector: str  # 'Mask R-CNN' | 'RetinaNet'
    config: str  # 'mmdet::folder/file.py' | 'mmdet_posmlp::file.py' | a path
    paper: float  # parameters in millions, as printed in the paper
    # where mmdet has no config for this pair: the config whose model.backbone replaces the
    # one of ``config``, and the FPN inputs of that backbone
    backbone_from: Optional[str] = None
    neck_in_channels: Optional[Sequence[int]] = None

    @property
    def note(self) -> str:
        if self.backbone_from is None:
            return ''
        return (f'{osp.basename(self.config)} with the backbone of '
                f'{osp.basename(self.backbone_from)} (mmdet has no config for this pair)')


_R50_MASK = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
_PVT_S = 'mmdet::pvt/retinanet_pvt-s_fpn_1x_coco.py'
_PVT_M = 'mmdet::pvt/retinanet_pvt-m_fpn_1x_coco.py'
_PVT_WIDTHS = (64, 128, 320, 512)

# Table 3 of the PosMLP paper, in its order: Mask R-CNN and RetinaNet parameters (M).
ROWS = (
    Row('ResNet-50', 'Mask R-CNN', _R50_MASK, 44.2),
    Row('ResNet-50', 'RetinaNet', 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', 37.7),
    Row('PVT-Small', 'Mask R-CNN', _R50_MASK, 44.1, _PVT_S, _PVT_WIDTHS),
    Row('PVT-Small', 'RetinaNet', _PVT_S, 34.2),
    Row('CycleMLP-B2', 'Mask R-CNN', 'mmdet_posmlp::mask_rcnn_cycle_mlp_b2_1x.py', 46.5),
    Row('CycleMLP-B2', 'RetinaNet', 'mmdet_posmlp::retinanet_cycle_mlp_b2_1x.py', 36.5),
    Row('PosMLP-T', 'Mask R-CNN', 'mmdet_posmlp::mask_rcnn_posmlp_t_1x.py', 40.5),
    Row('PosMLP-T', 'RetinaNet', 'mmdet_posmlp::retinanet_posmlp_t_1x.py', 31.1),
    Row('ResNet-101', 'Mask R-CNN', 'mmdet::mask_rcnn/mask-rcnn_r101_fpn_1x_coco.py', 63.2),
    Row('ResNet-101', 'RetinaNet', 'mmdet::retinanet/retinanet_r101_fpn_1x_coco.py', 56.7),
    Row('PVT-Medium', 'Mask R-CNN', _R50_MASK, 63.9, _PVT_M, _PVT_WIDTHS),
    Row('PVT-Medium', 'RetinaNet', _PVT_M, 53.9),
    Row('CycleMLP-B3', 'Mask R-CNN', 'mmdet_posmlp::mask_rcnn_cycle_mlp_b3_1x.py', 58.0),
    Row('CycleMLP-B3', 'RetinaNet', 'mmdet_posmlp::retinanet_cycle_mlp_b3_1x.py', 48.1),
    Row('PosMLP-S', 'Mask R-CNN', 'mmdet_posmlp::mask_rcnn_posmlp_s_1x.py', 56.1),
    Row('PosMLP-S', 'RetinaNet', 'mmdet_posmlp::retinanet_posmlp_s_1x.py', 47.3),
)


def row_config(row: Row):
    """The Config that builds ``row``'s detector (its backbone swapped in where the row says)."""
    cfg = load_model_config(row.config)
    if row.backbone_from is not None:
        cfg.model.backbone = load_model_config(row.backbone_from).model.backbone
        cfg.model.neck.in_channels = list(row.neck_in_channels)
    return cfg


def build_row(row: Row) -> nn.Module:
    """The detector of ``row`` without weights, on the meta device where its constructors allow."""
    cfg = row_config(row)
    try:
        with torch.device('meta'):
            return build_detector(cfg)
    except (RuntimeError, NotImplementedError):  # data-dependent construction: build for real
        return build_detector(cfg)


def measure(rows: Sequence[Row] = ROWS) -> List[Dict]:
    """Per row: the ``row``, ``total``, ``trainable``, ``backbone`` parameters and ``device``."""
    results = []
    for row in rows:
        model = build_row(row)
        params = list(model.parameters())
        results.append(dict(row=row, total=sum(p.numel() for p in params),
                            trainable=sum(p.numel() for p in params if p.requires_grad),
                            backbone=sum(p.numel() for p in model.backbone.parameters()),
                            device=params[0].device.type))
        del model
    return results


def format_table(results: Sequence[Dict]) -> str:
    """A Markdown table: ours (trainable, as the paper counts, and all) against the paper."""
    lines = ['| backbone | detector | params (M) | trainable (M) | paper (M) | trainable - paper '
             '(M) | config |',
             '|---|---|---|---|---|---|---|']
    notes = []
    for r in results:
        row = r['row']
        config = row.config + (f' [{len(notes) + 1}]' if row.note else '')
        if row.note:
            notes.append(row.note)
        lines.append(f"| {row.backbone} | {row.detector} | {r['total'] / 1e6:.2f} | "
                     f"{r['trainable'] / 1e6:.2f} | {row.paper:.1f} | "
                     f"{r['trainable'] / 1e6 - row.paper:+.2f} | {config} |")
    lines += [''] + [f'[{i}] {n}' for i, n in enumerate(notes, 1)]
    return '\n'.join(lines).rstrip('\n')
