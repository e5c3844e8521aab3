# Mask R-CNN with a Hire-MLP-Tiny backbone, 1x schedule on COCO 2017 (no published figure).
# mmdet's mask-rcnn_r50_fpn_1x_coco.py with the PosMLP recipe, exactly as mask_rcnn_posmlp_t_1x.py;
# only the backbone and FPN inputs differ.
_base_ = ['./_mask_rcnn_1x.py', './_hire_mlp.py']

model = dict(backbone={{_base_.hire_mlp_tiny}}, neck=dict(in_channels=[64, 128, 320, 512]))
