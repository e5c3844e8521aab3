# Mask R-CNN with a Hire-MLP-Small backbone, 1x schedule on COCO 2017. Same recipe as Hire-MLP-Tiny;
# only the depths differ (same widths, so the FPN inputs are unchanged).
_base_ = './mask_rcnn_hire_mlp_tiny_1x.py'

# hire_mlp_small.pth of the official release (81.8%), see _hire_mlp.py
pretrained = 'checkpoints/hire_mlp_small_in1k.pth'
model = dict(
    backbone=dict(arch='small', init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
