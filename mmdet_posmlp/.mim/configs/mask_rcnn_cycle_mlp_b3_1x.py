# Mask R-CNN with a CycleMLP-B3 backbone, 1x schedule on COCO 2017 (PosMLP paper Table 3:
# 58.0M, 43.4 AP / 39.5 AP^m). mmdet's mask-rcnn_r50_fpn_1x_coco.py with the PosMLP recipe, exactly as
# mask_rcnn_posmlp_t_1x.py; only the backbone and FPN inputs differ.
_base_ = ['./_mask_rcnn_1x.py', './_cycle_mlp.py']

model = dict(backbone={{_base_.cycle_mlp_b3}}, neck=dict(in_channels=[64, 128, 320, 512]))
