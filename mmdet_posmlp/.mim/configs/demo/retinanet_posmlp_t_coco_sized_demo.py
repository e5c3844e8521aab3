# The COCO detector itself, retinanet_posmlp_t_1x.py (800x1333 inputs, 256-channel FPN P3-P7,
# PosMLP-T with its windows 14, 14, 14, 7), trained from scratch on the shapes generator's
# COCO-sized images: the whole loop of a GPU user's main job on data made in seconds, what
# benchmarks/gpu_check.sh runs with tools/train.py --amp and tools/test.py on the GPU.
#
#   python tools/make_demo_data.py --out data/demo_shapes_coco_sized --num-train 160 \
#       --num-val 24 --image-size 800 1333 --object-size 40 400
#   python tools/train.py configs/demo/retinanet_posmlp_t_coco_sized_demo.py --amp
#
# 160 images, batch 4, 5 epochs: 200 iterations, enough to see the loss fall (not to learn the
# shapes: that takes the 128-px demo's 1,200 iterations or more).
_base_ = ['../retinanet_posmlp_t_1x.py', './_shapes_data.py']

data_root = 'data/demo_shapes_coco_sized/'
model = dict(backbone=dict(init_cfg=None), bbox_head=dict(num_classes=4))

max_epochs = 5
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs,
         eta_min_ratio=0.05, convert_to_iter_based=True),
]
# from scratch: 3x the fine-tuning rate, gradients clipped as in the 128-px demo
optim_wrapper = dict(optimizer=dict(lr=3e-4), clip_grad=dict(max_norm=10.0, norm_type=2))
randomness = dict(seed=0)
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4, num_workers=4, persistent_workers=True,
    dataset=dict(data_root=data_root, metainfo={{_base_.shapes_metainfo}},
                 ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
                 filter_cfg=dict(filter_empty_gt=False, min_size=0), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=4, persistent_workers=True,
    dataset=dict(data_root=data_root, metainfo={{_base_.shapes_metainfo}},
                 ann_file='annotations/instances_val.json', data_prefix=dict(img='val/'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
