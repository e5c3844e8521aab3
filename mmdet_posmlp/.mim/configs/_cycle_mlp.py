# The CycleMLP-B2 and B3 backbones of the retinanet_/mask_rcnn_cycle_mlp_*_1x.py configs, read
# there as {{_base_.cycle_mlp_b2}} (mmengine refuses a key that two bases of one config define).
# Each output gets its LayerNorm (out_norm), the authors' dense-prediction form. Mask R-CNN's FPN
# takes all four stages; RetinaNet's starts at stride 8 (`*_last3`), as the authors' RetinaNet,
# which replaced the unused stride-4 output norm by an Identity.
# The official ImageNet-1K weights, saved here as they are: CycleMLP_B2.pth (81.6%) and
# CycleMLP_B3.pth (82.4%) from https://github.com/ShoufaChen/CycleMLP/releases/download/v0.1/.
cycle_mlp_b2 = dict(
    _delete_=True,
    type='CycleMLP',
    arch='b2',
    out_indices=(0, 1, 2, 3),
    drop_path_rate=0.1,
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cycle_mlp_b2_in1k.pth'))
cycle_mlp_b2_last3 = dict(cycle_mlp_b2, out_indices=(1, 2, 3))
cycle_mlp_b3 = dict(
    cycle_mlp_b2, arch='b3',
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cycle_mlp_b3_in1k.pth'))
cycle_mlp_b3_last3 = dict(cycle_mlp_b3, out_indices=(1, 2, 3))
