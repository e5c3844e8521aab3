# The Hire-MLP-Tiny backbone of retinanet_hire_mlp_tiny_1x.py and mask_rcnn_hire_mlp_tiny_1x.py,
# read there as {{_base_.hire_mlp_tiny}} (mmengine refuses a key that two bases of one config
# define). Mask R-CNN's FPN takes all four stages (strides 4-32), RetinaNet's the last three.
hire_mlp_tiny = dict(
    _delete_=True,
    type='HireMLP',
    arch='tiny',
    out_indices=(0, 1, 2, 3),
    drop_path_rate=0.1,  # the authors' dense-prediction setting for Tiny and Small
    # BatchNorm throughout and 2 images per GPU: keep the ImageNet statistics, as mmdet's
    # ResNet configs do (affine parameters still train). The new per-output BatchNorms
    # (out_norm, the authors' dense setting) learn their statistics.
    norm_eval=True,
    # The official ImageNet-1K weights, saved here as they are: hire_mlp_tiny.pth from
    # https://github.com/ggjy/Hire-Wave-MLP.pytorch/releases/download/log/hire_mlp_tiny.pth (79.7%).
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/hire_mlp_tiny_in1k.pth'))
hire_mlp_tiny_last3 = dict(hire_mlp_tiny, out_indices=(1, 2, 3))
