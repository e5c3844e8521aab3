# RetinaNet with a CycleMLP-B2 backbone, 1x schedule on COCO 2017 (PosMLP paper Table 3: 36.5M, 40.9 AP).
# mmdet's retinanet_r50_fpn_1x_coco.py with the PosMLP recipe, exactly as retinanet_posmlp_t_1x.py;
# only the backbone and FPN inputs differ.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py', 'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::retinanet/retinanet_tta.py',
    './_posmlp_det_recipe.py'
]
# The official ImageNet-1K weights, saved here as they are: CycleMLP_B2.pth from
# https://github.com/ShoufaChen/CycleMLP/releases/download/v0.1/CycleMLP_B2.pth (81.6%).
pretrained = 'checkpoints/cycle_mlp_b2_in1k.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='CycleMLP',
        arch='b2',
        # the FPN starts at stride 8, as the authors' RetinaNet (which replaced the unused
        # stride-4 output norm by an Identity); each output gets its LayerNorm (out_norm)
        out_indices=(1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[128, 320, 512], start_level=0, num_outs=5),
    # the classification loss in float32, whatever the autocast dtype: mmcv's CUDA focal loss
    # has no bfloat16 kernel (mmdet_posmlp/models/losses.py); mmdet's FocalLoss otherwise
    bbox_head=dict(loss_cls=dict(type='Float32FocalLoss')))
