# RetinaNet with a Hire-MLP-Tiny backbone, 1x schedule on COCO 2017 (no published figure: the
# Hire-MLP authors released segmentation results only). mmdet's retinanet_r50_fpn_1x_coco.py with
# the PosMLP recipe, exactly as retinanet_posmlp_t_1x.py; only the backbone and FPN inputs differ.
_base_ = ['./_retinanet_1x.py', './_hire_mlp.py']

model = dict(
    backbone={{_base_.hire_mlp_tiny_last3}},
    neck=dict(in_channels=[128, 320, 512], start_level=0, num_outs=5))
