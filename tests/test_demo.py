"""The day-one demo: the synthetic shapes data set and both demo detectors, end to end.

Real generator, real configs, real mmcv ops, mmdet's CocoMetric; sizes kept tiny so the whole
file runs in a few minutes on 2 CPU cores.
"""
import copy
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest

from tools.demo import shapes
from tools.demo.shapes import CLASSES, make_shapes_dataset

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIGS = {
    'retinanet': osp.join(REPO, 'configs', 'demo', 'retinanet_posmlp_t_demo.py'),
    'mask_rcnn': osp.join(REPO, 'configs', 'demo', 'mask_rcnn_posmlp_t_demo.py'),
}
SMALL = dict(num_train=4, num_val=3, image_size=(96, 128), object_size=(12, 60))


def _read(path):
    with open(path, 'rb') as f:
        return f.read()


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    """4 train + 3 val images, drawn once for the module."""
    root = str(tmp_path_factory.mktemp('demo_shapes'))
    make_shapes_dataset(root, verbose=False, **SMALL)
    return root


# --------------------------------------------------------------------------- the generator

def test_generator_is_deterministic(tmp_path):
    a, b, c = (str(tmp_path / n) for n in 'abc')
    make_shapes_dataset(a, verbose=False, **SMALL)
    make_shapes_dataset(b, verbose=False, **SMALL)
    make_shapes_dataset(c, verbose=False, **dict(SMALL, seed=1))
    for split in ('train', 'val'):
        ann = osp.join('annotations', f'instances_{split}.json')
        assert _read(osp.join(a, ann)) == _read(osp.join(b, ann))  # same seed, same bytes
        assert _read(osp.join(a, ann)) != _read(osp.join(c, ann))  # another seed, other data
        for name in sorted(os.listdir(osp.join(a, split))):
            assert _read(osp.join(a, split, name)) == _read(osp.join(b, split, name))
    # train and val are drawn from different random streams
    assert _read(osp.join(a, 'train', '000000.jpg')) != _read(osp.join(a, 'val', '000000.jpg'))
    # a split's first images do not depend on how many images are asked for
    d = str(tmp_path / 'd')
    make_shapes_dataset(d, verbose=False, **dict(SMALL, num_train=6))
    assert _read(osp.join(a, 'train', '000003.jpg')) == _read(osp.join(d, 'train', '000003.jpg'))


def test_generator_writes_valid_coco(tiny_data):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    for split, count in (('train', SMALL['num_train']), ('val', SMALL['num_val'])):
        path = osp.join(tiny_data, 'annotations', f'instances_{split}.json')
        coco = COCO(path)
        assert len(coco.getImgIds()) == count
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
        assert len(coco.getAnnIds()) > 0
        for img in coco.loadImgs(coco.getImgIds()):
            file = osp.join(tiny_data, split, img['file_name'])
            from PIL import Image
            with Image.open(file) as im:
                assert im.size == (img['width'], img['height']) and im.mode == 'RGB'
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=img['id'])):
                assert ann['iscrowd'] == 0 and 1 <= ann['category_id'] <= len(CLASSES)
                x, y, w, h = ann['bbox']
                assert w > 0 and h > 0
                assert x >= 0 and y >= 0 and x + w <= img['width'] and y + h <= img['height']
                (poly,) = ann['segmentation']  # one polygon, as a flat list
                assert len(poly) >= 6 and len(poly) % 2 == 0
                pts = np.array(poly).reshape(-1, 2)
                assert np.allclose([pts[:, 0].min(), pts[:, 1].min()], [x, y], atol=0.02)
                mask = coco.annToMask(ann)
                assert mask.shape == (img['height'], img['width'])
                # the decoded mask is the polygon: same area, inside the box
                assert abs(int(mask.sum()) - ann['area']) <= 0.2 * ann['area'] + 2 * (w + h)
                ys, xs = np.nonzero(mask)
                assert xs.min() >= int(x) and xs.max() <= x + w and ys.min() >= int(y)
                assert ys.max() <= y + h
                rle = mask_utils.frPyObjects(ann['segmentation'], img['height'], img['width'])
                assert mask_utils.area(mask_utils.merge(rle)) == mask.sum()


def test_generator_is_idempotent(tmp_path):
    root = str(tmp_path / 'shapes')
    first = make_shapes_dataset(root, verbose=False, **SMALL)
    assert first['generated']
    ann = first['ann_files']['train']
    stamp = os.stat(ann).st_mtime_ns
    again = make_shapes_dataset(root, verbose=False, **SMALL)
    assert not again['generated'] and os.stat(ann).st_mtime_ns == stamp
    assert again['stats'] == first['stats']
    # other parameters: regenerated, and no image of the old set is left behind
    other = make_shapes_dataset(root, verbose=False, **dict(SMALL, num_train=2))
    assert other['generated'] and len(os.listdir(osp.join(root, 'train'))) == 2
    manifest = json.load(open(osp.join(root, 'manifest.json')))
    assert manifest['generator_version'] == shapes.GENERATOR_VERSION
    assert manifest['params']['num_train'] == 2
    # a damaged annotation file is noticed
    with open(ann, 'a') as f:
        f.write(' ')
    assert make_shapes_dataset(root, verbose=False, **dict(SMALL, num_train=2))['generated']


def test_generator_covers_classes_sizes_and_crowding(tmp_path):
    """The default recipe, on a few dozen images: every class, several sizes, several objects
    per image, some overlap (what makes the demo more than a toy)."""
    root = str(tmp_path / 'shapes')
    params = dict(num_train=40, num_val=0)
    make_shapes_dataset(root, verbose=False, **params)
    coco = json.load(open(osp.join(root, 'annotations', 'instances_train.json')))
    anns = coco['annotations']
    assert {a['category_id'] for a in anns} == set(range(1, len(CLASSES) + 1))
    areas = np.array([a['area'] for a in anns])
    assert (areas < 32 ** 2).any() and ((areas >= 32 ** 2) & (areas < 96 ** 2)).any()
    per_image = np.bincount([a['image_id'] for a in anns])
    assert per_image.max() >= 4
    boxes = {}
    for a in anns:
        boxes.setdefault(a['image_id'], []).append(a['bbox'])

    def overlaps(b1, b2):
        return (min(b1[0] + b1[2], b2[0] + b2[2]) > max(b1[0], b2[0])
                and min(b1[1] + b1[3], b2[1] + b2[3]) > max(b1[1], b2[1]))
    assert any(overlaps(p, q) for bs in boxes.values() for i, p in enumerate(bs)
               for q in bs[i + 1:])


def test_make_demo_data_cli(tmp_path):
    out = str(tmp_path / 'cli')
    cmd = [sys.executable, osp.join(REPO, 'tools', 'make_demo_data.py'), '--out', out,
           '--num-train', '2', '--num-val', '1', '--image-size', '64', '96']
    first = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert 'train: 2 images' in first.stdout
    second = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert 'up to date' in second.stdout
    assert sorted(os.listdir(osp.join(out, 'annotations'))) == [
        'instances_train.json', 'instances_val.json']


# --------------------------------------------------------------------------- the configs

@pytest.mark.parametrize('name', sorted(DEMO_CONFIGS))
def test_demo_config_is_the_1x_recipe_on_shapes(name):
    from mmengine.config import Config
    cfg = Config.fromfile(DEMO_CONFIGS[name])
    backbone = cfg.model.backbone
    assert backbone.type == 'PosMLP' and backbone.arch == 'tiny'
    assert backbone.init_cfg is None  # trains from scratch: no weights on a new machine
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        dataset = loader.dataset
        assert dataset.type == 'CocoDataset' and tuple(dataset.metainfo.classes) == CLASSES
        assert dataset.data_root == 'data/demo_shapes/'
    assert cfg.train_dataloader.dataset.ann_file == 'annotations/instances_train.json'
    assert cfg.val_dataloader.dataset.ann_file == 'annotations/instances_val.json'
    assert cfg.val_evaluator.type == 'CocoMetric'
    assert cfg.val_evaluator.ann_file == 'data/demo_shapes/annotations/instances_val.json'
    metrics = cfg.val_evaluator.metric
    assert metrics == ('bbox' if name == 'retinanet' else ['bbox', 'segm'])
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    heads = ([cfg.model.bbox_head] if name == 'retinanet'
             else [cfg.model.roi_head.bbox_head, cfg.model.roi_head.mask_head])
    assert all(h.num_classes == len(CLASSES) for h in heads)


# --------------------------------------------------------------------------- end to end

def _tiny_run_config(name, data_root, work_dir):
    """The real demo config, pointed at the tiny split, 1 epoch of 2 iterations at 128 px."""
    from mmengine.config import Config
    cfg = Config.fromfile(DEMO_CONFIGS[name])
    root = data_root.rstrip('/') + '/'
    cfg.work_dir = work_dir
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg[key]
        loader.batch_size = 2
        loader.dataset.data_root = root
        for step in loader.dataset.pipeline:
            if step.type == 'Resize':
                step.scale = (128, 128)
    for key in ('val_evaluator', 'test_evaluator'):
        cfg[key].ann_file = root + 'annotations/instances_val.json'
    cfg.train_cfg.max_epochs = 1
    cfg.train_cfg.val_interval = 1
    # an untrained detector scores below the usual 0.05: keep every box so the metric runs
    if name == 'retinanet':
        cfg.model.test_cfg.score_thr = 0.0
    else:
        cfg.model.test_cfg.rcnn.score_thr = 0.0
    cfg.default_hooks.logger.interval = 1
    cfg.log_level = 'WARNING'
    return cfg


@pytest.mark.parametrize('name', sorted(DEMO_CONFIGS))
def test_demo_detector_trains_validates_and_tests(name, tiny_data, tmp_path):
    import torch
    from mmengine.runner import Runner

    torch.manual_seed(0)
    cfg = _tiny_run_config(name, tiny_data, str(tmp_path / name))
    runner = Runner.from_cfg(copy.deepcopy(cfg))
    runner.train()
    assert runner.iter == 2  # 4 images, batch 2, 1 epoch
    losses = runner.message_hub.log_scalars
    assert 'train/loss' in losses and np.isfinite(losses['train/loss'].current())
    metrics = runner.test()
    expected = ['bbox'] if name == 'retinanet' else ['bbox', 'segm']
    for kind in expected:
        for key in ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l'):
            value = metrics[f'coco/{kind}_{key}']
            assert isinstance(value, float) and -1.0 <= value <= 1.0, (key, value)
    # the validation at the end of the epoch went through the same metric
    assert f'val/coco/{expected[0]}_mAP' in runner.message_hub.log_scalars
    assert osp.isfile(osp.join(cfg.work_dir, 'epoch_1.pth'))
