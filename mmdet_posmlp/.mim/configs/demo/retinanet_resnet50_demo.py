# RetinaNet + ResNet-50 (mmdet's ResNet) on the synthetic shapes demo set: retinanet_posmlp_t_demo.py
# exactly (same data, schedule, neck, head, seed) with ResNet-50 in place of PosMLP-T, for the
# backbone comparison (tools/demo/compare_backbones.py). From scratch, like the PosMLP demo.
#
#   python tools/train.py configs/demo/retinanet_resnet50_demo.py
#
# Norm: GroupNorm (32 groups) in place of every BatchNorm, as mmdet's from-scratch configs
# (configs/scratch/*_gn-all_*: "Rethinking ImageNet Pre-training"). BatchNorm from scratch at 2
# images of 128 px a batch normalises with statistics of two images: noisy in training, and
# the running averages used at test time differ from them; frozen BN (mmdet's default,
# norm_eval=True) needs ImageNet statistics that a from-scratch backbone does not have. GN
# normalises each image on its own, the same in training and testing, at any batch size.
_base_ = './retinanet_posmlp_t_demo.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(1, 2, 3),  # C3-C5, strides 8, 16, 32: the P3-P5 of the demo neck
        frozen_stages=-1,
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        norm_eval=False,
        zero_init_residual=False,  # as mmdet's scratch configs
        style='pytorch',
        init_cfg=None),
    neck=dict(in_channels=[512, 1024, 2048]))
