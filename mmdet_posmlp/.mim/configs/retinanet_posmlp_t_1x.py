# RetinaNet with a PosMLP-T backbone, 1x schedule on COCO 2017 (paper Table 3: 41.9 AP, 31.1M).
# mmdet's retinanet_r50_fpn_1x_coco.py, with the PosMLP recipe in place of its runtime and schedule.
_base_ = ['./_retinanet_1x.py', './_posmlp.py']

model = dict(
    backbone={{_base_.posmlp_t_last3}},
    neck=dict(in_channels=[192, 384, 768], start_level=0, num_outs=5))
