# The ViP-Small/7 backbone and its neck, shared by retinanet_vip_s7_1x.py and
# mask_rcnn_vip_s7_1x.py, read there as {{_base_.vip_s7}} and {{_base_.vip_neck}} (mmengine
# refuses a key that two bases of one config define), and their forms for the shapes demo
# (demo/retinanet_vip_s7_demo.py).
vip_s7 = dict(
    _delete_=True,
    type='ViP',
    arch='s7',
    out_indices=(3,),
    drop_path_rate=0.1,
    # The official ImageNet-1K weights of ViP-Small/7 (81.5%), linked (Google Drive) from the
    # README of https://github.com/houqb/VisionPermutator, saved here as they are.
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/vip_s7_in1k.pth'))
# ViP's maps are at strides 7 and 14. The last (stride 14, 384 channels) goes through a simple
# feature pyramid (ViTDet): scale factors (2, 1, 0.5, 0.25) give strides 7, 14, 28, 56 (mmdet's
# 4..32 at 7/4), and a max-pooled fifth level 112 (RetinaNet's P7, the RPN's fifth level).
vip_neck = dict(
    _delete_=True,
    type='SimpleFeaturePyramid',
    in_channels=384,
    out_channels=256,
    scale_factors=(2.0, 1.0, 0.5, 0.25),
    num_outs=5)
# The demo: from scratch without stochastic depth (as the PosMLP demo); the pyramid cut to the
# demo's three levels (strides 7, 14, 28) at its 128 channels.
vip_s7_scratch = dict(vip_s7, drop_path_rate=0.0, init_cfg=None)
vip_neck_demo = dict(vip_neck, out_channels=128, scale_factors=(2.0, 1.0, 0.5), num_outs=3)
