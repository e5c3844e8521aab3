# RetinaNet with a CycleMLP-B3 backbone, 1x schedule on COCO 2017 (PosMLP paper Table 3: 48.1M, 42.5 AP).
# mmdet's retinanet_r50_fpn_1x_coco.py with the PosMLP recipe, exactly as retinanet_posmlp_t_1x.py;
# only the backbone and FPN inputs differ.
_base_ = ['./_retinanet_1x.py', './_cycle_mlp.py']

model = dict(
    backbone={{_base_.cycle_mlp_b3_last3}},
    neck=dict(in_channels=[128, 320, 512], start_level=0, num_outs=5))
