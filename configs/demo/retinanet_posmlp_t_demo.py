# RetinaNet + PosMLP-T on the synthetic shapes demo set (tools/make_demo_data.py): the whole
# detection loop on data a new user has on day one, trained from scratch on a 2-core CPU in
# 15 minutes (measured on a shared machine; see README). Only what differs from
# ../retinanet_posmlp_t_1x.py is set here.
#
#   python tools/make_demo_data.py
#   python tools/train.py configs/demo/retinanet_posmlp_t_demo.py
_base_ = ['../retinanet_posmlp_t_1x.py', './_shapes_data.py']

model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone={{_base_.shapes_backbone}},  # PosMLP-T from scratch, windows for 128 px
    # A lighter neck and head (COCO: 256 channels, 4 convs, no norm) so that 2 CPU cores get
    # through enough iterations; GroupNorm lets the head train from scratch at a high rate.
    neck=dict(out_channels=128),
    bbox_head=dict(
        num_classes=4,
        in_channels=128,
        feat_channels=128,
        stacked_convs=2,
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        # objects are 20-88 px: anchors from 16 px at stride 8 (COCO: octave_base_scale=4)
        anchor_generator=dict(octave_base_scale=2)))

train_dataloader = {{_base_.shapes_train_dataloader}}
val_dataloader = {{_base_.shapes_val_dataloader}}
test_dataloader = val_dataloader
val_evaluator = {{_base_.shapes_val_evaluator}}
test_evaluator = val_evaluator
train_cfg = {{_base_.shapes_train_cfg}}
param_scheduler = {{_base_.shapes_param_scheduler}}
optim_wrapper = {{_base_.shapes_optim_wrapper}}
default_hooks = {{_base_.shapes_default_hooks}}
