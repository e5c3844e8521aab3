# The S2-MLP-deep backbone and its necks, shared by retinanet_s2mlp_deep_1x.py and
# mask_rcnn_s2mlp_deep_1x.py, read there as {{_base_.s2mlp_deep}} and {{_base_.s2mlp_neck_...}}
# (mmengine refuses a key that two bases of one config define), and their forms for the shapes
# demo (demo/retinanet_s2mlp_deep_demo.py).
s2mlp_deep = dict(
    _delete_=True,
    type='S2MLP',
    arch='deep',
    out_indices=(-1,),
    drop_path_rate=0.1,
    # S2-MLP has no published weights (and no official code): this expects an ImageNet-1K state
    # dict of this repository's timm model `s2mlp_deep` (e.g. trained with timm's train.py).
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/s2mlp_deep_in1k.pth'))
# S2-MLP is isotropic: one map at stride 16 (384 channels), the last block's, goes through a
# simple feature pyramid (ViTDet). Scale factors (2, 1, 0.5) give strides 8, 16, 32, and two
# max-pooled levels 64, 128: exactly RetinaNet's usual P3..P7, so its head is mmdet's unchanged.
s2mlp_neck_p3_p7 = dict(
    _delete_=True,
    type='SimpleFeaturePyramid',
    in_channels=384,
    out_channels=256,
    scale_factors=(2.0, 1.0, 0.5),
    num_outs=5)
# (4, 2, 1, 0.5) give strides 4, 8, 16, 32 and a max-pooled fifth level 64: exactly mmdet's FPN
# strides for Mask R-CNN, so the RPN anchors and the RoI extractors (featmap_strides 4..32,
# finest_scale 56) are mmdet's unchanged.
s2mlp_neck_p2_p6 = dict(s2mlp_neck_p3_p7, scale_factors=(4.0, 2.0, 1.0, 0.5))
# The demo: from scratch without stochastic depth (as the PosMLP demo); P3-P5 at 128 channels.
s2mlp_deep_scratch = dict(s2mlp_deep, drop_path_rate=0.0, init_cfg=None)
s2mlp_neck_demo = dict(s2mlp_neck_p3_p7, out_channels=128, num_outs=3)
