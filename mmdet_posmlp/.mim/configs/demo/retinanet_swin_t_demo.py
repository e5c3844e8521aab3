# RetinaNet + Swin-T (mmdet's SwinTransformer) on the synthetic shapes demo set:
# retinanet_posmlp_t_demo.py exactly (same data, schedule, neck, head, seed) with Swin-T in place
# of PosMLP-T, for the backbone comparison (tools/demo/compare_backbones.py). From scratch, like
# the PosMLP demo.
#
#   python tools/train.py configs/demo/retinanet_swin_t_demo.py
#
# Swin-T as mmdet's swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py (embed dims 96, depths 2, 2, 6, 2,
# heads 3, 6, 12, 24, patch 4, MLP ratio 4, qkv bias), except the window: 4 instead of 7. A 128 px
# image gives stage maps of 32, 16, 8 and 4 tokens a side: windows of 4 tile all of them exactly
# (no padding, every window full, the last stage one window as Swin-T's 7 x 7 last stage at
# 224 px), where windows of 7 would pad them to 35, 21, 14 and 7 (the last stage 67% padding)
# and shifting by 3 would mostly move padding. The PosMLP demo shrinks its windows the same way
# ((8, 8, 8, 4) for (14, 14, 14, 7)). Norm: LayerNorm, as published. drop_path 0 as the PosMLP demo.
_base_ = './retinanet_posmlp_t_demo.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinTransformer',
        embed_dims=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=4,
        mlp_ratio=4,
        qkv_bias=True,
        qk_scale=None,
        drop_rate=0.,
        attn_drop_rate=0.,
        drop_path_rate=0.0,
        patch_norm=True,
        out_indices=(1, 2, 3),  # strides 8, 16, 32: the P3-P5 of the demo neck
        with_cp=False,
        convert_weights=False,
        init_cfg=None),
    neck=dict(in_channels=[192, 384, 768]))
