import argparse
import json
import os
import os.path as osp
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Without a GPU, PosMLP's Triton kernels (mmdet_posmlp/models/posmlp_kernels.py) run in Triton's
# interpreter on CPU tensors, for tests/test_posmlp_kernels.py; triton reads this when its
# kernels are defined, so before anything imports mmdet_posmlp. Models take the kernels only
# for CUDA tensors, so nothing else changes.
if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def randomize_(model: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """Move positional, norm and BN-statistics values away from their initial values, so that
    comparisons cannot pass by symmetry of an untrained model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if '.pos.' in name or 'norm' in name or name.endswith('bias'):
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
        for name, b in model.named_buffers():
            if name.endswith('running_mean'):
                b.copy_(torch.randn(b.shape, generator=g, dtype=b.dtype) * 0.1)
            elif name.endswith('running_var'):
                b.copy_(torch.rand(b.shape, generator=g, dtype=b.dtype) + 0.5)
    return model


def _relative_offsets(window: int) -> torch.Tensor:
    """The reference's GQPE buffer `rel_indices`, (N, N, 5) of [dx, dy, dx^2, dy^2, dx*dy]."""
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing='ij')
    rows, cols = rows.flatten().float(), cols.flatten().float()
    dx = cols[None, :] - cols[:, None]  # col_n - col_m
    dy = rows[:, None] - rows[None, :]  # row_m - row_n
    return torch.stack([dx, dy, dx * dx, dy * dy, dx * dy], dim=-1)


def reference_checkpoint(classifier: torch.nn.Module) -> dict:
    """A checkpoint laid out as the reference implementation's training script writes it."""
    from mmdet_posmlp.models.posmlp import GQPE, LRPE
    from mmdet_posmlp.models.windows import region_index
    sd = dict(classifier.state_dict())
    for name, m in classifier.named_modules():
        if isinstance(m, GQPE):  # the reference stored these derived buffers
            sd[f'{name}.rel_indices'] = _relative_offsets(m.window)
        elif isinstance(m, LRPE):
            w = m.window
            sd[f'{name}.window_relative_position_index'] = region_index(
                w, w, w, 0, 0, torch.device('cpu')).relative.view(w * w, -1)
    return {
        'epoch': 299, 'arch': 'Create_PosMLP', 'version': 2, 'metric': 82.1,
        'state_dict': {k: v.clone() for k, v in sd.items()},
        'state_dict_ema': sd,
        'optimizer': {'state': {}, 'param_groups': [{'lr': 1e-6, 'params': [0, 1]}]},
        'args': argparse.Namespace(model='Create_PosMLP', drop=0.02333, drop_path=0.1, lr=0.002),
    }


def mixer_matrices(mixer: torch.nn.Module, index=None) -> torch.Tensor:
    """A token mixer's (groups, n, n) matrices: of a full window, or of the windows of a region
    (a RegionIndex), as a stage computes them (``stacked_matrices`` of one mixer)."""
    from mmdet_posmlp.models.windows import region_index
    if index is None:
        w = mixer.window
        index = region_index(w, w, w, 0, 0, mixer.token_proj_n_bias.device)
    return type(mixer).stacked_matrices([mixer], [index])[0][0]


@pytest.fixture(scope='session')
def tiny_classifier():
    """PosMLP-T classifier in float64 with non-trivial weights (built once per session)."""
    from mmdet_posmlp.models.posmlp import PosMLPClassifier
    torch.manual_seed(0)
    return randomize_(PosMLPClassifier('tiny')).double().eval()


# ---- one small classifier of each family ------------------------------------------------------

# Small settings of each family (Hire-MLP: its tiny variant, whose stage settings are fixed), for
# the checks every family shares (test_timm_api.py) and each family's own tests.
FAMILY_ARCHS = {
    's2mlp': dict(patch_size=4, embed_dim=32, depth=3, mlp_ratio=2.),
    # a small ViP whose stage-1 map is 8 x 8 tokens (= segment_dim) at 56 x 56 pixels
    'vip': dict(depths=(1, 2, 1, 1), embed_dims=(32, 64, 64, 64), segment_dim=(8, 4, 4, 4),
                transitions=(True, False, False, False), mlp_ratios=3., patch_size=7),
    'cycle_mlp': dict(embed_dims=(16, 24, 32, 40), depths=(1, 2, 1, 1), mlp_ratios=(2, 2, 4, 4)),
    'hire_mlp': dict(),
    # (no stochastic depth: the other families' default, PosMLP's is 0.1)
    'posmlp': dict(embed_dims=(16, 32, 64, 128), depths=(1, 1, 2, 1), windows=(4, 4, 4, 2),
                   groups=(2, 4, 8, 8), mlp_ratios=(4, 4, 4, 2), drop_path_rate=0.0),
}


def family_classifier(family: str, dtype=torch.float32, seed: int = 0,
                      **kwargs) -> torch.nn.Module:
    """`family`'s classifier at FAMILY_ARCHS (kwargs on top), norms, biases and BN statistics
    moved off their initial values (randomize_), in eval mode."""
    import importlib
    module = importlib.import_module(f'mmdet_posmlp.models.{family}')
    cls = {'s2mlp': 'S2MLPClassifier', 'vip': 'ViPClassifier', 'cycle_mlp': 'CycleMLPClassifier',
           'hire_mlp': 'HireMLPClassifier', 'posmlp': 'PosMLPClassifier'}[family]
    torch.manual_seed(seed)
    model = getattr(module, cls)(**{**FAMILY_ARCHS[family], **kwargs})
    return randomize_(model, seed=seed).to(dtype).eval()


_hire_tiny = []


def hire_tiny() -> torch.nn.Module:
    """hire_mlp_tiny with randomize_'s weights, eval mode: built once a session, shared by
    test_hire_mlp.py and test_timm_api.py (tests that change it put it back)."""
    if not _hire_tiny:
        _hire_tiny.append(family_classifier('hire_mlp'))
    return _hire_tiny[0]


def detection_batch(with_masks: bool = False) -> dict:
    """Two 128 x 160 uint8 images with 2 and 1 boxes (and masks), as a detector's
    data_preprocessor takes them."""
    import numpy as np
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for boxes in ([[10., 12., 70., 90.], [80., 20., 150., 60.]], [[30., 40., 100., 120.]]):
        inputs.append(torch.randint(0, 256, (3, 128, 160), generator=g, dtype=torch.uint8))
        sample = DetDataSample(metainfo=dict(img_shape=(128, 160), ori_shape=(128, 160),
                                             scale_factor=(1.0, 1.0), pad_shape=(128, 160)))
        gt = InstanceData(bboxes=torch.tensor(boxes), labels=torch.tensor([1, 5][:len(boxes)]))
        if with_masks:
            masks = np.zeros((len(boxes), 128, 160), dtype=np.uint8)
            for k, (x1, y1, x2, y2) in enumerate(boxes):
                masks[k, int(y1):int(y2), int(x1):int(x2)] = 1
            gt.masks = BitmapMasks(masks, 128, 160)
        sample.gt_instances = gt
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def small_heads_(model_cfg, channels: int = 32):
    """A detector config's neck output and heads (RetinaNet's, or Mask R-CNN's RPN and RoI
    heads) narrowed to `channels`, one conv where they stack them; in place."""
    m = model_cfg
    m.neck.out_channels = channels
    if 'bbox_head' in m:  # RetinaNet
        m.bbox_head.update(in_channels=channels, feat_channels=channels, stacked_convs=1)
    else:
        m.rpn_head.update(in_channels=channels, feat_channels=channels)
        m.roi_head.bbox_roi_extractor.out_channels = channels
        m.roi_head.mask_roi_extractor.out_channels = channels
        m.roi_head.bbox_head.update(in_channels=channels, fc_out_channels=2 * channels)
        m.roi_head.mask_head.update(in_channels=channels, conv_out_channels=channels,
                                    num_convs=2)
    return m


def load_file_module(relpath: str, name: str):
    """A module of the repository outside the package (tools/...), loaded from its file."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class OpRecorder(TorchDispatchMode):
    """Every aten op as it runs (below autocast): `ops` collects what record(func, out) returns
    for it (a list of entries, empty to skip the op)."""

    def __init__(self, record):
        super().__init__()
        self.record = record
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.extend(self.record(func, out))
        return out


# ---- a tiny RetinaNet-PosMLP config and COCO-format dataset, for the tools' real runs ----------

# format with base (a detection config), data_root, window (PosMLP's, every stage) and scale
# (the images' resize)
TINY_RETINANET_CONFIG = '''
_base_ = '{base}'
data_root = '{data_root}/'
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=(16, 32, 64, 128), depths=(1, 1, 1, 1),
                  windows=({window},) * 4,
                  groups=(2, 2, 4, 4), mlp_ratios=(2, 2, 2, 2)),
        drop_path_rate=0.0, init_cfg=None),
    neck=dict(in_channels=[32, 64, 128], out_channels=32),
    bbox_head=dict(num_classes=2, in_channels=32, feat_channels=32, stacked_convs=1),
    test_cfg=dict(score_thr=0.0, max_per_img=20))  # an untrained model: keep low scores
pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=({scale}, {scale}), keep_ratio=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=({scale}, {scale}), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
dataset = dict(data_root=data_root, ann_file='annotations/tiny.json',
               data_prefix=dict(img='images/'), metainfo=dict(classes=('person', 'bicycle')))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(dataset, pipeline=pipeline, filter_cfg=None))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/tiny.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=1)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
'''


def write_tiny_coco(root, num_images=2, size=64):
    """A COCO-format dataset of random images with one box (and polygon) each."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    os.makedirs(osp.join(root, 'images'))
    os.makedirs(osp.join(root, 'annotations'))
    images, annotations = [], []
    for i in range(num_images):
        name = f'{i:06d}.jpg'
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
            osp.join(root, 'images', name))
        images.append(dict(id=i + 1, file_name=name, width=size, height=size))
        x, y, w, h = 8 + 4 * i, 10, 30, 26
        annotations.append(dict(
            id=i + 1, image_id=i + 1, category_id=1 + i, bbox=[x, y, w, h], area=w * h,
            iscrowd=0, segmentation=[[x, y, x + w, y, x + w, y + h, x, y + h]]))
    categories = [dict(id=1, name='person'), dict(id=2, name='bicycle')]
    with open(osp.join(root, 'annotations', 'tiny.json'), 'w') as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)


def meta_model(variant: str, **kwargs) -> torch.nn.Module:
    """timm.create_model on the meta device: names and shapes only, at no cost."""
    import timm
    with torch.device('meta'):
        return timm.create_model(variant, **kwargs)


def check_published_macs(published: dict, tolerance: float, size: int = 224):
    """Each variant's multiply-accumulates (torch's FlopCounterMode on the meta device, FLOPs / 2,
    as the papers count them) at size x size within `tolerance` (relative) of its published
    figure; prints them all."""
    from torch.utils.flop_counter import FlopCounterMode
    lines = []
    for variant, flops in published.items():
        with FlopCounterMode(display=False) as counter:
            meta_model(variant)(torch.empty(1, 3, size, size, device='meta'))
        macs = counter.get_total_flops() / 2
        lines.append(f'{variant}: {macs / 1e9:.2f} GMACs at {size} '
                     f'(published {flops / 1e9:.1f}G)')
        assert abs(macs / flops - 1) < tolerance, lines[-1]
    print('\n'.join(lines))


def layer_norm_literal(t: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    """LayerNorm over the last dimension written out (biased variance, eps inside the root)."""
    mu = t.mean(-1, keepdim=True)
    var = ((t - mu) ** 2).mean(-1, keepdim=True)
    return (t - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias
