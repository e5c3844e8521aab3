# mmdet's mask-rcnn_r50_fpn_1x_coco.py with the PosMLP recipe in place of its runtime and
# schedule: the base of the mask_rcnn_*_1x.py configs here, which set the backbone and the neck.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py', 'mmdet::_base_/datasets/coco_instance.py',
    './_posmlp_det_recipe.py'
]

# mmcv 2.1's RoIAlign and nms have no bfloat16 kernels: under --amp with bfloat16 they run in
# float32, the proposals decoded from float32 anchors (mmdet_posmlp/models/roi_extractors.py,
# rpn_head.py); float16 and float32 are mmdet's own extractor and RPN head
model = dict(rpn_head=dict(type='Float32RPNHead'),
             roi_head=dict(bbox_roi_extractor=dict(type='Float32RoIExtractor'),
                           mask_roi_extractor=dict(type='Float32RoIExtractor')))
