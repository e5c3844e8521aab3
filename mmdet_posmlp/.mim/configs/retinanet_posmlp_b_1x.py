# RetinaNet with a PosMLP-B backbone, 1x schedule on COCO 2017 (not in the paper's Table 3).
# Same recipe as PosMLP-T; only the backbone width (and so the FPN inputs) differ.
# The reference code publishes no PosMLP-B ImageNet weights: put your own in checkpoints/.
_base_ = './retinanet_posmlp_t_1x.py'

pretrained = 'checkpoints/posmlp_b_in1k.pth'  # see checkpoints/README.md
model = dict(
    backbone=dict(arch='base', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[384, 768, 1536]))
