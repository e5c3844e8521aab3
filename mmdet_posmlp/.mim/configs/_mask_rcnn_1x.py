# mmdet's mask-rcnn_r50_fpn_1x_coco.py with the PosMLP recipe in place of its runtime and
# schedule: the base of the mask_rcnn_*_1x.py configs here, which set the backbone and the neck.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py', 'mmdet::_base_/datasets/coco_instance.py',
    './_posmlp_det_recipe.py'
]
