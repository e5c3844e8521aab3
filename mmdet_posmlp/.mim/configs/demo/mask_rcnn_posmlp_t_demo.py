# Mask R-CNN + PosMLP-T on the synthetic shapes demo set (tools/make_demo_data.py): boxes and
# instance masks on data a new user has on day one, trained from scratch on a 2-core CPU in
# 25 minutes (measured on a shared machine; see docs/demo.md). Only what differs from
# ../mask_rcnn_posmlp_t_1x.py is set here.
#
#   python tools/make_demo_data.py
#   python tools/train.py configs/demo/mask_rcnn_posmlp_t_demo.py
_base_ = ['../mask_rcnn_posmlp_t_1x.py', './_shapes_data.py']

channels = 128  # FPN and heads (COCO: 256), so that 2 CPU cores get through enough iterations
model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone={{_base_.shapes_backbone}},  # PosMLP-T from scratch, windows for 128 px
    neck=dict(out_channels=channels),
    # objects are 20-88 px: RPN anchors from 16 px at stride 4 (COCO: scales=[8], 32 px)
    rpn_head=dict(in_channels=channels, feat_channels=channels,
                  anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=channels),
        bbox_head=dict(in_channels=channels, fc_out_channels=512, num_classes=4),
        mask_roi_extractor=dict(out_channels=channels),
        mask_head=dict(in_channels=channels, conv_out_channels=channels, num_classes=4)),
    # fewer proposals and sampled RoIs than COCO's: a few objects per small image
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))

train_dataloader = {{_base_.shapes_train_dataloader}}
val_dataloader = {{_base_.shapes_val_dataloader}}
test_dataloader = val_dataloader
val_evaluator = {{_base_.shapes_val_evaluator}}  # bbox and segm, from the 1x config
test_evaluator = val_evaluator
train_cfg = {{_base_.shapes_train_cfg}}
param_scheduler = {{_base_.shapes_param_scheduler}}
optim_wrapper = {{_base_.shapes_optim_wrapper}}
default_hooks = {{_base_.shapes_default_hooks}}
