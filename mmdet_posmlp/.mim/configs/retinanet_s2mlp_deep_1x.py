# RetinaNet with an S2-MLP-deep backbone, 1x schedule on COCO 2017 (no published figure).
# mmdet's retinanet_r50_fpn_1x_coco.py with the PosMLP recipe, as retinanet_posmlp_t_1x.py; what
# differs: the backbone and a simple feature pyramid for the neck.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py', 'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::retinanet/retinanet_tta.py',
    './_posmlp_det_recipe.py'
]
# S2-MLP has no published weights (and no official code): this expects an ImageNet-1K state dict
# of this repository's timm model `s2mlp_deep` (e.g. trained with timm's train.py), saved here.
pretrained = 'checkpoints/s2mlp_deep_in1k.pth'
# S2-MLP is isotropic: one map at stride 16 (384 channels), the last block's, goes through a
# simple feature pyramid (ViTDet): scale factors (2, 1, 0.5) give strides 8, 16, 32, and two
# max-pooled levels 64, 128: exactly RetinaNet's usual P3..P7, so the head is mmdet's unchanged.
model = dict(
    backbone=dict(
        _delete_=True,
        type='S2MLP',
        arch='deep',
        out_indices=(-1,),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(
        _delete_=True,
        type='SimpleFeaturePyramid',
        in_channels=384,
        out_channels=256,
        scale_factors=(2.0, 1.0, 0.5),
        num_outs=5),
    # the classification loss in float32, whatever the autocast dtype: mmcv's CUDA focal loss
    # has no bfloat16 kernel (mmdet_posmlp/models/losses.py); mmdet's FocalLoss otherwise
    bbox_head=dict(loss_cls=dict(type='Float32FocalLoss')))
# The neck's LayerNorms (LN2d, its own class) are not nn.LayerNorm, which is what the recipe's
# norm_decay_mult recognises: exempt them by name. S2-MLP itself needs nothing (no positional
# parameters; its norms are nn.LayerNorm).
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    'lateral_norm': dict(decay_mult=0.0),
    'output_norm': dict(decay_mult=0.0),
    'resample.norm': dict(decay_mult=0.0),
}))
