# RetinaNet with a PosMLP-T backbone, 1x schedule on COCO 2017 (paper Table 3: 41.9 AP, 31.1M).
# mmdet's retinanet_r50_fpn_1x_coco.py, with the PosMLP recipe in place of its runtime and schedule.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py', 'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::retinanet/retinanet_tta.py',
    './_posmlp_det_recipe.py'
]

pretrained = 'checkpoints/posmlp_t_in1k.pth'  # see checkpoints/README.md
model = dict(
    backbone=dict(
        _delete_=True,
        type='PosMLP',
        arch='tiny',
        out_indices=(1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[192, 384, 768], start_level=0, num_outs=5),
    # the classification loss in float32, whatever the autocast dtype: mmcv's CUDA focal loss
    # has no bfloat16 kernel (mmdet_posmlp/models/losses.py); mmdet's FocalLoss otherwise
    bbox_head=dict(loss_cls=dict(type='Float32FocalLoss')))
