# Mask R-CNN with a PosMLP-T backbone, 1x schedule on COCO 2017 (paper Table 3: 41.6 AP, 40.5M).
# mmdet's mask-rcnn_r50_fpn_1x_coco.py, with the PosMLP recipe in place of its runtime and schedule.
_base_ = ['./_mask_rcnn_1x.py', './_posmlp.py']

model = dict(backbone={{_base_.posmlp_t}}, neck=dict(in_channels=[96, 192, 384, 768]))
