# RetinaNet + PVT-Small (mmdet's PyramidVisionTransformer, PVT v1) on the synthetic shapes demo
# set: retinanet_posmlp_t_demo.py exactly (same data, schedule, neck, head, seed) with PVT-Small
# in place of PosMLP-T, for the backbone comparison (tools/demo/compare_backbones.py). From
# scratch, like the PosMLP demo.
#
#   python tools/train.py configs/demo/retinanet_pvt_small_demo.py
#
# PVT-Small as mmdet's pvt/retinanet_pvt-s_fpn_1x_coco.py: embed dims 64, 128, 320, 512, layers
# 3, 4, 6, 3, heads 1, 2, 5, 8, spatial reduction 8, 4, 2, 1, MLP ratios 8, 8, 4, 4 (mmdet's
# defaults), absolute position embeddings (resized to the input's maps). Norm: LayerNorm, as
# published (no batch statistics). drop_path 0 as the PosMLP demo.
_base_ = './retinanet_posmlp_t_demo.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='PyramidVisionTransformer',
        num_layers=[3, 4, 6, 3],
        out_indices=(1, 2, 3),  # strides 8, 16, 32: the P3-P5 of the demo neck
        drop_path_rate=0.0,
        init_cfg=None),
    neck=dict(in_channels=[128, 320, 512]))
