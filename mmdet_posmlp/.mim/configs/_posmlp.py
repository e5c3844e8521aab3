# The PosMLP-T backbone of retinanet_posmlp_t_1x.py and mask_rcnn_posmlp_t_1x.py, read there as
# {{_base_.posmlp_t}} (mmengine refuses a key that two bases of one config define).
# Mask R-CNN's FPN takes all four stages (strides 4-32), RetinaNet's the last three (8-32).
posmlp_t = dict(
    _delete_=True,
    type='PosMLP',
    arch='tiny',
    out_indices=(0, 1, 2, 3),
    drop_path_rate=0.1,
    # the ImageNet-1K weights: see checkpoints/README.md
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/posmlp_t_in1k.pth'))
posmlp_t_last3 = dict(posmlp_t, out_indices=(1, 2, 3))
