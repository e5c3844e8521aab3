# RetinaNet with a CycleMLP-B2 backbone, 1x schedule on COCO 2017 (PosMLP paper Table 3: 36.5M, 40.9 AP).
# mmdet's retinanet_r50_fpn_1x_coco.py with the PosMLP recipe, exactly as retinanet_posmlp_t_1x.py;
# only the backbone and FPN inputs differ.
_base_ = ['./_retinanet_1x.py', './_cycle_mlp.py']

model = dict(
    backbone={{_base_.cycle_mlp_b2_last3}},
    neck=dict(in_channels=[128, 320, 512], start_level=0, num_outs=5))
