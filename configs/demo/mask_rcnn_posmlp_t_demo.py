# Mask R-CNN + PosMLP-T on the synthetic shapes demo set (tools/make_demo_data.py): boxes and
# instance masks on data a new user has on day one, trained from scratch on a 2-core CPU in
# about 10 minutes. Only what differs from ../mask_rcnn_posmlp_t_1x.py is set here.
#
#   python tools/make_demo_data.py
#   python tools/train.py configs/demo/mask_rcnn_posmlp_t_demo.py
_base_ = '../mask_rcnn_posmlp_t_1x.py'

data_root = 'data/demo_shapes/'
metainfo = dict(
    classes=('circle', 'rectangle', 'triangle', 'star'),
    palette=[(220, 20, 60), (0, 130, 230), (30, 170, 60), (250, 170, 30)])
img_scale = (256, 256)  # images are 224-288 px a side; COCO configs use (1333, 800)
num_classes = len(metainfo['classes'])

model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        # Still PosMLP-T (arch='tiny'); windows 8 instead of (14, 14, 14, 7) because the stage
        # maps of a 256 px image are 64/32/16/8 tokens a side: 14 would mostly pad them.
        windows=8,
        drop_path_rate=0.0,
        init_cfg=None),  # no ImageNet weights on a new machine: the backbone trains from scratch
    # objects are 16-160 px: RPN anchors from 16 px at stride 4 (COCO: scales=[8], 32 px)
    rpn_head=dict(anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_head=dict(num_classes=num_classes),
        mask_head=dict(num_classes=num_classes)),
    # fewer proposals and sampled RoIs than COCO's: a few objects per small image
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=False, min_size=0),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')  # bbox + segm
test_evaluator = val_evaluator

# Schedule: a few epochs, AdamW at a from-scratch learning rate, warmup then cosine decay.
max_epochs = 8
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs,
         eta_min_ratio=0.05, convert_to_iter_based=True),
]
optim_wrapper = dict(optimizer=dict(lr=5e-4), clip_grad=dict(max_norm=10.0, norm_type=2))
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
