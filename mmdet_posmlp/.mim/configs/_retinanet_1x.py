# mmdet's retinanet_r50_fpn_1x_coco.py with the PosMLP recipe in place of its runtime and
# schedule: the base of the retinanet_*_1x.py configs here, which set the backbone and the neck.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py', 'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::retinanet/retinanet_tta.py',
    './_posmlp_det_recipe.py'
]
# the classification loss in float32, whatever the autocast dtype: mmcv's CUDA focal loss has no
# bfloat16 kernel (mmdet_posmlp/models/losses.py); mmdet's FocalLoss otherwise
model = dict(bbox_head=dict(loss_cls=dict(type='Float32FocalLoss')))
