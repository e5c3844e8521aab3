# Mask R-CNN with a PosMLP-T backbone, 1x schedule on COCO 2017 (paper Table 3: 41.6 AP, 40.5M).
# mmdet's mask-rcnn_r50_fpn_1x_coco.py, with the PosMLP recipe in place of its runtime and schedule.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py', 'mmdet::_base_/datasets/coco_instance.py',
    './_posmlp_det_recipe.py'
]

pretrained = 'checkpoints/posmlp_t_in1k.pth'  # see checkpoints/README.md
model = dict(
    backbone=dict(
        _delete_=True,
        type='PosMLP',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
