# RetinaNet with a PosMLP-S backbone, 1x schedule on COCO 2017 (paper Table 3: 42.4 AP, 47.3M).
# Same recipe as PosMLP-T; only the backbone width (and so the FPN inputs) differ.
_base_ = './retinanet_posmlp_t_1x.py'

pretrained = 'checkpoints/posmlp_s_in1k.pth'  # see checkpoints/README.md
model = dict(
    backbone=dict(arch='small', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[256, 512, 1024]))
