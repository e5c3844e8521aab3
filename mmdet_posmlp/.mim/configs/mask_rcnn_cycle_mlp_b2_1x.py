# Mask R-CNN with a CycleMLP-B2 backbone, 1x schedule on COCO 2017 (PosMLP paper Table 3:
# 46.5M, 41.7 AP / 38.2 AP^m). mmdet's mask-rcnn_r50_fpn_1x_coco.py with the PosMLP recipe, exactly as
# mask_rcnn_posmlp_t_1x.py; only the backbone and FPN inputs differ.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py', 'mmdet::_base_/datasets/coco_instance.py',
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
        out_indices=(0, 1, 2, 3),  # each output gets its LayerNorm (out_norm), as the authors'
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 320, 512]))
