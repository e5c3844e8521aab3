# RetinaNet with a ViP-Small/7 backbone, 1x schedule on COCO 2017 (no published figure).
# mmdet's retinanet_r50_fpn_1x_coco.py with the PosMLP recipe, as retinanet_posmlp_t_1x.py; what
# differs: the backbone, a simple feature pyramid for the neck, and the anchor strides.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py', 'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::retinanet/retinanet_tta.py',
    './_posmlp_det_recipe.py'
]
# The official ImageNet-1K weights of ViP-Small/7 (81.5%), linked (Google Drive) from the README of
# https://github.com/houqb/VisionPermutator, saved here as they are.
pretrained = 'checkpoints/vip_s7_in1k.pth'
# ViP's maps are at strides 7 and 14. The last (stride 14, 384 channels) goes through a simple
# feature pyramid (ViTDet): scale factors (2, 1, 0.5, 0.25) give strides 7, 14, 28, 56, and the
# max-pooled fifth level 112: RetinaNet's five levels at 7/8 of the usual 8..128. The anchor
# generator takes the same strides; octave_base_scale 32/7 keeps mmdet's anchor sizes in pixels
# (32 at the finest level up to 512 at the coarsest, as octave_base_scale=4 does at 8..128).
model = dict(
    backbone=dict(
        _delete_=True,
        type='ViP',
        arch='s7',
        out_indices=(3,),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(
        _delete_=True,
        type='SimpleFeaturePyramid',
        in_channels=384,
        out_channels=256,
        scale_factors=(2.0, 1.0, 0.5, 0.25),
        num_outs=5),
    # loss_cls: the classification loss in float32, whatever the autocast dtype: mmcv's CUDA
    # focal loss has no bfloat16 kernel (mmdet_posmlp/models/losses.py); mmdet's FocalLoss otherwise
    bbox_head=dict(
        anchor_generator=dict(octave_base_scale=32 / 7, strides=[7, 14, 28, 56, 112]),
        loss_cls=dict(type='Float32FocalLoss')))
# The neck's LayerNorms (LN2d, its own class) are not nn.LayerNorm, which is what the recipe's
# norm_decay_mult recognises: exempt them by name. ViP itself needs nothing (no positional
# parameters; its norms are nn.LayerNorm).
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    'lateral_norm': dict(decay_mult=0.0),
    'output_norm': dict(decay_mult=0.0),
    'resample.norm': dict(decay_mult=0.0),
}))
