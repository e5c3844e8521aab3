# Mask R-CNN with an S2-MLP-deep backbone, 1x schedule on COCO 2017 (no published figure).
# mmdet's mask-rcnn_r50_fpn_1x_coco.py with the PosMLP recipe, as mask_rcnn_posmlp_t_1x.py; what
# differs: the backbone and a simple feature pyramid for the neck.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py', 'mmdet::_base_/datasets/coco_instance.py',
    './_posmlp_det_recipe.py'
]
# S2-MLP has no published weights (and no official code): this expects an ImageNet-1K state dict
# of this repository's timm model `s2mlp_deep` (e.g. trained with timm's train.py), saved here.
pretrained = 'checkpoints/s2mlp_deep_in1k.pth'
# S2-MLP is isotropic: one map at stride 16 (384 channels), the last block's, goes through a
# simple feature pyramid (ViTDet): scale factors (4, 2, 1, 0.5) give strides 4, 8, 16, 32 and a
# max-pooled fifth level 64: exactly mmdet's FPN strides, so the RPN anchors and the RoI
# extractors (featmap_strides 4..32, finest_scale 56) are mmdet's unchanged.
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
        scale_factors=(4.0, 2.0, 1.0, 0.5),
        num_outs=5))
# The neck's LayerNorms (LN2d, its own class) are not nn.LayerNorm, which is what the recipe's
# norm_decay_mult recognises: exempt them by name. S2-MLP itself needs nothing (no positional
# parameters; its norms are nn.LayerNorm).
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    'lateral_norm': dict(decay_mult=0.0),
    'output_norm': dict(decay_mult=0.0),
    'resample.norm': dict(decay_mult=0.0),
}))
