# RetinaNet + Hire-MLP-Tiny on the synthetic shapes demo set: retinanet_posmlp_t_demo.py exactly
# (same data, schedule, neck, head, seed) with the Hire-MLP-Tiny backbone of
# ../retinanet_hire_mlp_tiny_1x.py in place of PosMLP-T, so the two backbones can be compared
# side by side. From scratch, like the PosMLP demo (no ImageNet weights on a new machine).
#
#   python tools/make_demo_data.py
#   python tools/train.py configs/demo/retinanet_hire_mlp_tiny_demo.py
_base_ = './retinanet_posmlp_t_demo.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='HireMLP',
        arch='tiny',
        out_indices=(1, 2, 3),
        drop_path_rate=0.0,  # as the PosMLP demo backbone
        norm_eval=False,  # from scratch: the BatchNorm statistics must be learned
        init_cfg=None),
    neck=dict(in_channels=[128, 320, 512]))
