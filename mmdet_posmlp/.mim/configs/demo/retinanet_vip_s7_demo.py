# RetinaNet + ViP-Small/7 on the synthetic shapes demo set: retinanet_posmlp_t_demo.py (same data,
# schedule, head layers, seed) with ViP-S/7 in place of PosMLP-T, for the backbone comparison
# (tools/demo/compare_backbones.py). From scratch, like the PosMLP demo.
#
#   python tools/train.py configs/demo/retinanet_vip_s7_demo.py
#
# ViP-S/7 has maps at strides 7 and 14 only; its last map (384 channels, 9 x 9 tokens for a
# 128 px image) goes through ../retinanet_vip_s7_1x.py's simple feature pyramid cut to the
# demo's three levels at its 128 channels: scale factors (2, 1, 0.5) give strides 7, 14, 28, the
# P3-P5 of this backbone (no integer resampling of a stride-14 map gives 8, 16, 32). The head's
# layers are the demo's; its anchors are placed at the true strides 7, 14, 28, with
# octave_base_scale 16/7 so that they keep the demo's sizes in pixels (16 px at the finest level,
# as octave_base_scale 2 at stride 8). Norm: LayerNorm in the backbone (as published) and in the
# neck (LN2d). drop_path 0 as the PosMLP demo.
_base_ = ['./retinanet_posmlp_t_demo.py', '../_vip.py']
model = dict(
    backbone={{_base_.vip_s7_scratch}},
    neck={{_base_.vip_neck_demo}},
    bbox_head=dict(anchor_generator=dict(octave_base_scale=16 / 7, strides=[7, 14, 28])))
