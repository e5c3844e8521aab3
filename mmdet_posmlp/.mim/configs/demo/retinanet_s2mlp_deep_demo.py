# RetinaNet + S2-MLP-deep on the synthetic shapes demo set: retinanet_posmlp_t_demo.py (same data,
# schedule, head, seed) with S2-MLP-deep in place of PosMLP-T, for the backbone comparison
# (tools/demo/compare_backbones.py). From scratch, like the PosMLP demo.
#
#   python tools/train.py configs/demo/retinanet_s2mlp_deep_demo.py
#
# S2-MLP is isotropic: one map at stride 16 (384 channels; 8 x 8 tokens for a 128 px image). The
# neck is ../retinanet_s2mlp_deep_1x.py's simple feature pyramid cut to the demo's three levels:
# scale factors (2, 1, 0.5) give strides 8, 16, 32, exactly the P3-P5 of the demo FPN, at the
# demo's 128 channels, so the head (anchors included) is the demo's unchanged. Norm: LayerNorm
# in the backbone (as published) and in the neck (LN2d). drop_path 0 as the PosMLP demo.
_base_ = ['./retinanet_posmlp_t_demo.py', '../_s2mlp.py']
model = dict(backbone={{_base_.s2mlp_deep_scratch}}, neck={{_base_.s2mlp_neck_demo}})
