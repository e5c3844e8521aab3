# RetinaNet with a Hire-MLP-Tiny backbone, 1x schedule on COCO 2017 (no published figure: the
# Hire-MLP authors released segmentation results only). mmdet's retinanet_r50_fpn_1x_coco.py with
# the PosMLP recipe, exactly as retinanet_posmlp_t_1x.py; only the backbone and FPN inputs differ.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py', 'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::retinanet/retinanet_tta.py',
    './_posmlp_det_recipe.py'
]
# The official ImageNet-1K weights, saved here as they are: hire_mlp_tiny.pth from
# https://github.com/ggjy/Hire-Wave-MLP.pytorch/releases/download/log/hire_mlp_tiny.pth (79.7%).
pretrained = 'checkpoints/hire_mlp_tiny_in1k.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='HireMLP',
        arch='tiny',
        out_indices=(1, 2, 3),
        drop_path_rate=0.1,  # the authors' dense-prediction setting for Tiny and Small
        # BatchNorm throughout and 2 images per GPU: keep the ImageNet statistics, as mmdet's
        # ResNet configs do (affine parameters still train). The new per-output BatchNorms
        # (out_norm, the authors' dense setting) learn their statistics.
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[128, 320, 512], start_level=0, num_outs=5),
    # the classification loss in float32, whatever the autocast dtype: mmcv's CUDA focal loss
    # has no bfloat16 kernel (mmdet_posmlp/models/losses.py); mmdet's FocalLoss otherwise
    bbox_head=dict(loss_cls=dict(type='Float32FocalLoss')))
