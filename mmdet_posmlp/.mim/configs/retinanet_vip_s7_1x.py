# RetinaNet with a ViP-Small/7 backbone, 1x schedule on COCO 2017 (no published figure).
# mmdet's retinanet_r50_fpn_1x_coco.py with the PosMLP recipe, as retinanet_posmlp_t_1x.py; what
# differs: the backbone, a simple feature pyramid for the neck (_vip.py), and the anchor strides.
_base_ = ['./_retinanet_1x.py', './_vip.py']

# The pyramid's five levels are at strides 7, 14, 28, 56, 112: RetinaNet's at 7/8 of the usual
# 8..128. The anchor generator takes the same strides; octave_base_scale 32/7 keeps mmdet's anchor
# sizes in pixels (32 at the finest level up to 512 at the coarsest, as octave_base_scale=4 does
# at 8..128).
model = dict(
    backbone={{_base_.vip_s7}},
    neck={{_base_.vip_neck}},
    bbox_head=dict(anchor_generator=dict(octave_base_scale=32 / 7, strides=[7, 14, 28, 56, 112])))
