# RetinaNet with an S2-MLP-wide backbone, 1x schedule on COCO 2017. Same recipe and pyramid as
# S2-MLP-deep (the map is again at stride 16); 768 channels into the neck.
_base_ = './retinanet_s2mlp_deep_1x.py'

# no published weights: an ImageNet-1K state dict of this repository's timm model `s2mlp_wide`
pretrained = 'checkpoints/s2mlp_wide_in1k.pth'
model = dict(
    backbone=dict(arch='wide', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=768))
