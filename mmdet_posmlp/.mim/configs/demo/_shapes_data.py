# The synthetic shapes data set (tools/make_demo_data.py) and the short from-scratch schedule
# shared by the demo configs. Every key is prefixed `shapes_` because mmengine forbids a key
# that two bases both define: a demo config inherits its detector's 1x config next to this file
# and picks these up with `{{_base_.shapes_...}}`.
shapes_root = 'data/demo_shapes/'
shapes_metainfo = dict(
    classes=('circle', 'rectangle', 'triangle', 'star'),
    palette=[(220, 20, 60), (0, 130, 230), (30, 170, 60), (250, 170, 30)])
shapes_scale = (128, 128)  # images are 112-144 px a side; COCO configs use (1333, 800)

# Still PosMLP-T (arch='tiny'); windows (8, 8, 8, 4) instead of (14, 14, 14, 7) because the stage
# maps of a 128 px image are 32/16/8/4 tokens a side: 14 would mostly pad them. No ImageNet
# weights on a new machine: the backbone trains from scratch.
shapes_backbone = dict(windows=(8, 8, 8, 4), drop_path_rate=0.0, init_cfg=None)

# Polygons stay polygons (poly2mask=False): cheap to resize and flip, and Mask R-CNN crops its
# mask targets from them directly. RetinaNet ignores the masks.
shapes_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True, poly2mask=False),
    dict(type='Resize', scale=shapes_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
shapes_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=shapes_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True, poly2mask=False),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
shapes_loader = dict(num_workers=0, persistent_workers=False)
shapes_dataset = dict(data_root=shapes_root, metainfo=shapes_metainfo)
shapes_train_dataloader = dict(
    shapes_loader,
    batch_size=2,  # from scratch, more steps learn more than bigger batches in the same time
    dataset=dict(shapes_dataset, ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='train/'), filter_cfg=dict(filter_empty_gt=False, min_size=0),
                 pipeline=shapes_train_pipeline))
shapes_val_dataloader = dict(
    shapes_loader, batch_size=4,
    dataset=dict(shapes_dataset, ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='val/'), pipeline=shapes_test_pipeline))
shapes_val_evaluator = dict(ann_file=shapes_root + 'annotations/instances_val.json')

# From scratch, a few epochs: AdamW at 10x the fine-tuning rate, short warmup, cosine decay.
shapes_max_epochs = 3
shapes_train_cfg = dict(max_epochs=shapes_max_epochs, val_interval=shapes_max_epochs)
shapes_param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=shapes_max_epochs,
         T_max=shapes_max_epochs, eta_min_ratio=0.05, convert_to_iter_based=True),
]
shapes_optim_wrapper = dict(optimizer=dict(lr=1e-3), clip_grad=dict(max_norm=10.0, norm_type=2))
shapes_default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=shapes_max_epochs, max_keep_ckpts=1))
