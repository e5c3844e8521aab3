# Mask R-CNN with a Hire-MLP-Base backbone, 1x schedule on COCO 2017. Same recipe as
# Hire-MLP-Tiny; deeper (same widths, so the FPN inputs are unchanged), drop path 0.2 as the
# authors' dense setting.
_base_ = './mask_rcnn_hire_mlp_tiny_1x.py'

# hire_mlp_base.pth of the official release (83.1%), see _hire_mlp.py
pretrained = 'checkpoints/hire_mlp_base_in1k.pth'
model = dict(
    backbone=dict(arch='base', drop_path_rate=0.2,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
