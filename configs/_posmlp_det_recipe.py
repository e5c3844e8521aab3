# The recipe shared by every PosMLP detection config (Swin / PVT family, 1x schedule):
# AdamW lr 1e-4, weight decay 0.05 except norms, biases and positional parameters,
# linear warmup, steps at epochs 8 and 11 of 12, batch 16 = 8 GPUs x 2 images.
custom_imports = dict(imports=['mmdet_posmlp'], allow_failed_imports=False)

data_root = 'data/coco/'
train_dataloader = dict(batch_size=2, num_workers=2, dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

max_epochs = 12
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11],
         gamma=0.1),
]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={
            'attention_centers': dict(decay_mult=0.0),
            'attention_spreads': dict(decay_mult=0.0),
            'token_proj_n_bias': dict(decay_mult=0.0),
            'relative_position_bias_table': dict(decay_mult=0.0),
            'token_proj_n_weight': dict(decay_mult=0.0),
        }))
auto_scale_lr = dict(enable=False, base_batch_size=16)
