# Mask R-CNN with a ViP-Small/7 backbone, 1x schedule on COCO 2017 (no published figure).
# mmdet's mask-rcnn_r50_fpn_1x_coco.py with the PosMLP recipe, as mask_rcnn_posmlp_t_1x.py; what
# differs: the backbone, a simple feature pyramid for the neck (_vip.py), and the strides the
# heads use.
_base_ = ['./_mask_rcnn_1x.py', './_vip.py']

# The pyramid's levels are at strides 7, 14, 28, 56 (mmdet's 4..32 at 7/4) and 112 (the RPN's
# fifth level, mmdet's 64). So:
# - RPN anchors at strides 7..112; scales 32/7 keep mmdet's anchor sizes in pixels (32..512);
# - RoI extractors read the four levels at strides 7..56, and finest_scale 98 = 56 x 7/4 sends a
#   RoI to the level where it spans the same number of cells as mmdet's default does at 4..32
#   (e.g. a 224 px RoI to stride 14, as mmdet sends it to stride 16).
model = dict(
    backbone={{_base_.vip_s7}},
    neck={{_base_.vip_neck}},
    rpn_head=dict(anchor_generator=dict(scales=[32 / 7], strides=[7, 14, 28, 56, 112])),
    roi_head=dict(
        bbox_roi_extractor=dict(featmap_strides=[7, 14, 28, 56], finest_scale=98),
        mask_roi_extractor=dict(featmap_strides=[7, 14, 28, 56], finest_scale=98)))
