# RetinaNet + CycleMLP-B2 on the synthetic shapes demo set: retinanet_posmlp_t_demo.py exactly
# (same data, schedule, neck, head, seed) with CycleMLP-B2 in place of PosMLP-T, for the backbone
# comparison (tools/demo/compare_backbones.py). From scratch, like the PosMLP demo.
#
#   python tools/train.py configs/demo/retinanet_cycle_mlp_b2_demo.py
#
# CycleMLP-B2: embed dims 64, 128, 320, 512, depths 2, 3, 10, 3 (mmdet_posmlp/models/cycle_mlp.py).
# Norm: LayerNorm, as published (no batch statistics). drop_path 0 as the PosMLP demo.
_base_ = './retinanet_posmlp_t_demo.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='CycleMLP',
        arch='b2',
        out_indices=(1, 2, 3),  # strides 8, 16, 32: the P3-P5 of the demo neck
        drop_path_rate=0.0,
        init_cfg=None),
    neck=dict(in_channels=[128, 320, 512]))
