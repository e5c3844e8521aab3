# RetinaNet with a ViP-Medium/7 backbone, 1x schedule on COCO 2017. Same recipe, pyramid and
# strides as ViP-Small/7 (the last map is again at stride 14); 512 channels into the neck.
_base_ = './retinanet_vip_s7_1x.py'

# ViP-Medium/7 ImageNet-1K weights (82.7%), from the same README as ViP-Small/7
pretrained = 'checkpoints/vip_m7_in1k.pth'
model = dict(
    backbone=dict(arch='m7', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=512))
