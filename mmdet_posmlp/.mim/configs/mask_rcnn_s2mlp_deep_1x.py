# Mask R-CNN with an S2-MLP-deep backbone, 1x schedule on COCO 2017 (no published figure).
# mmdet's mask-rcnn_r50_fpn_1x_coco.py with the PosMLP recipe, as mask_rcnn_posmlp_t_1x.py; what
# differs: the backbone and a simple feature pyramid for the neck (_s2mlp.py: strides 4..64).
_base_ = ['./_mask_rcnn_1x.py', './_s2mlp.py']

model = dict(backbone={{_base_.s2mlp_deep}}, neck={{_base_.s2mlp_neck_p2_p6}})
