# RetinaNet + PosMLP-T on the synthetic shapes demo set (tools/make_demo_data.py): the whole
# detection loop on data a new user has on day one, trained from scratch on a 2-core CPU
# (training time measured: docs/demo.md). Only what differs from ../retinanet_posmlp_t_1x.py
# and the shared demo settings is set here.
#
#   python tools/make_demo_data.py
#   python tools/train.py configs/demo/retinanet_posmlp_t_demo.py
_base_ = ['../retinanet_posmlp_t_1x.py', './_shapes_data.py']

model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone={{_base_.shapes_backbone}},  # PosMLP-T from scratch, windows for 128 px
    # A lighter neck and head (COCO: 256 channels, 4 convs, no norm) so that 2 CPU cores get
    # through enough iterations; GroupNorm lets the head train from scratch at a high rate.
    # Objects are 20-88 px in 128 px images: P3-P5 only (P6/P7 would be 2x2 and 1x1 maps
    # whose 128-406 px anchors never match; with them the head learned more slowly and fired
    # large false boxes), anchors from 16 px at stride 8 (COCO: octave_base_scale=4).
    neck=dict(out_channels=128, num_outs=3, add_extra_convs=False),
    bbox_head=dict(
        num_classes=4,
        in_channels=128,
        feat_channels=128,
        stacked_convs=2,
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        anchor_generator=dict(octave_base_scale=2, strides=[8, 16, 32])),
    # Small objects meet few anchors at IoU 0.5: 0.4 / 0.3 gives the focal loss more positives.
    train_cfg=dict(assigner=dict(pos_iou_thr=0.4, neg_iou_thr=0.3)))

# RetinaNet from scratch learns more slowly than Mask R-CNN (which reaches its figures in 3
# epochs): 4 epochs of the same warmup + cosine schedule, validated after each, seeded (from
# scratch, runs differ a lot otherwise).
max_epochs = 4
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs,
         eta_min_ratio=0.05, convert_to_iter_based=True),
]
randomness = dict(seed=0)

train_dataloader = {{_base_.shapes_train_dataloader}}
val_dataloader = {{_base_.shapes_val_dataloader}}
test_dataloader = val_dataloader
val_evaluator = {{_base_.shapes_val_evaluator}}
test_evaluator = val_evaluator
optim_wrapper = {{_base_.shapes_optim_wrapper}}
default_hooks = dict(
    logger=dict(interval=10), checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
