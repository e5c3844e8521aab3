"""Reliability: images of every shape, data set, checkpoint and config faults, a kill during
training and during saving, a non-finite loss.

Everything runs for real: mmdet's detectors and data pipeline, mmcv's ops, mmengine's Runner,
tools/train.py in a subprocess that is killed with SIGKILL.
"""
import copy
import glob
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from mmdet_posmlp.datasets import AnnotationFormatError, check_coco_annotations
from tools.demo.shapes import make_shapes_dataset

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = {
    'retinanet': osp.join(REPO, 'configs', 'retinanet_posmlp_t_1x.py'),
    'mask_rcnn': osp.join(REPO, 'configs', 'mask_rcnn_posmlp_t_1x.py'),
}
DEMO = osp.join(REPO, 'configs', 'demo', 'retinanet_posmlp_t_demo.py')
TINY = dict(num_train=8, num_val=2, image_size=(96, 128), object_size=(12, 60))
# (H, W): smaller than one window at every stage, odd, and extreme aspect ratios
SHAPES = [(32, 32), (33, 47), (64, 2048), (2048, 64)]


def _stage_size(n: int, stage: int) -> int:
    for _ in range(stage + 2):  # stride-2 convolutions with padding 1: ceil(n / 2) each
        n = (n + 1) // 2
    return n


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('shapes'))
    make_shapes_dataset(root, verbose=False, **TINY)
    return root


def _copy_data(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


# --------------------------------------------------------------------------- image shapes

def test_backbone_takes_images_of_every_shape():
    from mmdet_posmlp import PosMLP
    torch.manual_seed(0)
    model = PosMLP('tiny').eval()
    with torch.no_grad():
        for h, w in SHAPES:
            outs = model(torch.randn(1, 3, h, w))
            assert [tuple(o.shape) for o in outs] == [
                (1, c, _stage_size(h, i), _stage_size(w, i))
                for i, c in enumerate((96, 192, 384, 768))], (h, w)
            assert all(torch.isfinite(o).all() for o in outs), (h, w)
    model.train()
    outs = model(torch.randn(2, 3, 32, 32))
    sum(o.square().mean() for o in outs).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _detector(name):
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(CONFIGS[name])
    cfg.model.backbone.init_cfg = None
    if name == 'retinanet':
        cfg.model.test_cfg.score_thr = 0.0  # an untrained detector: keep its boxes
    else:
        cfg.model.test_cfg.rcnn.score_thr = 0.0
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def _sample(h, w, boxes=(), with_mask=False):
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                         scale_factor=(1.0, 1.0)))
    gt = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                      labels=torch.zeros(len(boxes), dtype=torch.long))
    if with_mask:
        masks = np.zeros((len(boxes), h, w), dtype=np.uint8)
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            masks[k, int(y0):int(y1), int(x0):int(x1)] = 1
        gt.masks = BitmapMasks(masks, h, w)
    sample.gt_instances = gt
    return sample


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_detectors_take_images_of_every_shape(name):
    """Inference one image at a time and as a batch of different sizes, then a training step on
    a batch of different sizes in which one image has no objects."""
    model = _detector(name).eval()
    gen = torch.Generator().manual_seed(0)

    def image(h, w):
        return torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8)

    batches = [[s] for s in SHAPES] + [[(32, 32), (33, 47), (96, 160)]]
    with torch.no_grad():
        for sizes in batches:
            data = dict(inputs=[image(h, w) for h, w in sizes],
                        data_samples=[_sample(h, w) for h, w in sizes])
            results = model.test_step(data)
            assert len(results) == len(sizes)
            for (h, w), res in zip(sizes, results):
                pred = res.pred_instances
                assert pred.bboxes.ndim == 2 and pred.bboxes.shape[1] == 4, (sizes, h, w)
                assert torch.isfinite(pred.bboxes).all() and torch.isfinite(pred.scores).all()
                if len(pred.bboxes):
                    assert (pred.bboxes[:, 0::2] <= w + 1e-3).all(), (h, w)
                    assert (pred.bboxes[:, 1::2] <= h + 1e-3).all(), (h, w)
                if name == 'mask_rcnn':
                    assert tuple(pred.masks.shape) == (len(pred.bboxes), h, w), (h, w)

    model.train()
    with_mask = name == 'mask_rcnn'
    sizes = [(33, 47), (96, 160), (64, 256)]
    samples = [_sample(33, 47, [(2.0, 3.0, 30.0, 40.0)], with_mask),
               _sample(96, 160, [], with_mask),  # an image with no annotations
               _sample(64, 256, [(10.0, 5.0, 200.0, 60.0), (0.0, 0.0, 16.0, 16.0)], with_mask)]
    data = model.data_preprocessor(
        dict(inputs=[image(h, w) for h, w in sizes], data_samples=samples), True)
    losses = model(**data, mode='loss')
    loss, log_vars = model.parse_losses(losses)
    assert torch.isfinite(loss), log_vars
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# --------------------------------------------------------------------------- data set faults

def _dataset(root, ann='annotations/instances_train.json'):
    from mmengine.config import Config
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(DEMO).train_dataloader.dataset
    cfg.data_root = root.rstrip('/') + '/'
    cfg.ann_file = ann
    cfg.pipeline = [p for p in cfg.pipeline if p['type'] != 'RandomFlip']
    return DATASETS.build(cfg)


def _edit_annotations(root, edit):
    path = osp.join(root, 'annotations', 'instances_train.json')
    with open(path) as f:
        coco = json.load(f)
    edit(coco)
    with open(path, 'w') as f:
        json.dump(coco, f)
    return coco


def test_image_without_annotations_trains(tiny_data, tmp_path):
    root = _copy_data(tiny_data, str(tmp_path / 'data'))
    _edit_annotations(root, lambda c: c.update(
        annotations=[a for a in c['annotations'] if a['image_id'] != 1]))
    dataset = _dataset(root)
    index = [i for i in range(len(dataset)) if dataset.get_data_info(i)['img_id'] == 1][0]
    item = dataset[index]
    assert len(item['data_samples'].gt_instances) == 0
    model = _demo_model().train()
    data = model.data_preprocessor(
        dict(inputs=[item['inputs'], dataset[(index + 1) % len(dataset)]['inputs']],
             data_samples=[item['data_samples'],
                           dataset[(index + 1) % len(dataset)]['data_samples']]), True)
    loss, _ = model.parse_losses(model(**data, mode='loss'))
    assert torch.isfinite(loss)


def _demo_model():
    from mmengine.config import Config
    from mmdet.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(DEMO).model)
    model.init_weights()
    return model


def test_missing_and_corrupt_images_name_the_file(tiny_data, tmp_path):
    root = _copy_data(tiny_data, str(tmp_path / 'data'))
    dataset = _dataset(root)
    names = {dataset.get_data_info(i)['img_path']: i for i in range(len(dataset))}
    missing, corrupt = sorted(names)[:2]
    os.remove(missing)
    with open(corrupt, 'wb') as f:
        f.write(np.random.default_rng(0).bytes(3000))
    with pytest.raises(Exception, match=osp.basename(missing)) as info:
        dataset[names[missing]]
    assert missing in str(info.value)
    with pytest.raises(Exception, match=osp.basename(corrupt)) as info:
        dataset[names[corrupt]]
    assert corrupt in str(info.value)


def test_grayscale_and_rgba_images_load_as_three_channels(tiny_data, tmp_path):
    root = _copy_data(tiny_data, str(tmp_path / 'data'))
    modes = {}

    def convert(coco):
        for img, mode in zip(coco['images'][:2], ('L', 'RGBA')):
            src = osp.join(root, 'train', img['file_name'])
            img['file_name'] = img['file_name'].replace('.jpg', f'_{mode}.png')
            Image.open(src).convert(mode).save(osp.join(root, 'train', img['file_name']))
            modes[img['id']] = mode

    _edit_annotations(root, convert)
    dataset = _dataset(root)
    items = [dataset[i] for i in range(len(dataset))
             if dataset.get_data_info(i)['img_id'] in modes]
    assert len(items) == 2
    for item in items:
        path = item['data_samples'].img_path
        assert Image.open(path).mode in ('L', 'RGBA')
        assert item['inputs'].shape[0] == 3 and item['inputs'].dtype == torch.uint8
    model = _demo_model().eval()
    with torch.no_grad():
        results = model.test_step(dict(inputs=[i['inputs'] for i in items],
                                        data_samples=[i['data_samples'] for i in items]))
    assert all(torch.isfinite(r.pred_instances.bboxes).all() for r in results)


@pytest.mark.parametrize('breakage,expected', [
    (lambda text: text[:len(text) // 2], r'not valid JSON: .* at line 1, column \d+'),
    (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != 'images'}),
     r"missing top-level key 'images'"),
    (lambda text: _edit_json(text, lambda c: c['annotations'][3].update(bbox=[1, 2, 3])),
     r'annotations\[3\] \(id 4\): bbox must be \[x, y, width, height\]'),
    (lambda text: _edit_json(text, lambda c: c['annotations'][1].update(category_id=99)),
     r"annotations\[1\] \(id 2\): category_id 99 is not in 'categories'"),
    (lambda text: _edit_json(text, lambda c: c['annotations'][0].update(image_id=12345)),
     r"annotations\[0\] \(id 1\): image_id 12345 is not in 'images'"),
    (lambda text: _edit_json(text, lambda c: c['annotations'][2].update(
        segmentation=[[1, 2, 3, 4, 5]])), r'annotations\[2\] \(id 3\): segmentation polygon 0'),
    (lambda text: _edit_json(text, lambda c: c['images'][0].pop('file_name')),
     r"images\[0\] \(id 1\): missing 'file_name'"),
])
def test_malformed_annotation_json_names_file_and_entry(tiny_data, tmp_path, breakage,
                                                         expected):
    root = _copy_data(tiny_data, str(tmp_path / 'data'))
    path = osp.join(root, 'annotations', 'instances_train.json')
    with open(path) as f:
        text = f.read()
    check_coco_annotations(path)  # the generated file is fine
    with open(path, 'w') as f:
        f.write(breakage(text))
    with pytest.raises(AnnotationFormatError, match=expected) as info:
        check_coco_annotations(path)
    assert path in str(info.value)

    # and the tools stop with it before building anything
    from mmdet_posmlp.engine.data_check import check_data
    from mmengine.config import Config
    cfg = Config.fromfile(DEMO)
    cfg.train_dataloader.dataset.data_root = root + '/'
    cfg.val_cfg = None
    with pytest.raises(AnnotationFormatError, match=expected):
        check_data(cfg, ('train', 'val'))


def _edit_json(text, edit):
    coco = json.loads(text)
    edit(coco)
    return json.dumps(coco)


def test_train_tool_reports_a_malformed_annotation_file(tiny_data, tmp_path):
    root = _copy_data(tiny_data, str(tmp_path / 'data'))
    path = osp.join(root, 'annotations', 'instances_val.json')
    with open(path) as f:
        text = f.read()
    with open(path, 'w') as f:
        f.write(text[:100])
    proc = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'train.py'), DEMO,
         '--work-dir', str(tmp_path / 'work'), '--cfg-options', *_data_options(root)],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode != 0
    assert f'malformed COCO annotation file {path}' in proc.stderr
    assert 'not valid JSON' in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert not osp.exists(tmp_path / 'work')  # stopped before the runner made its work dir


# --------------------------------------------------------------------------- checkpoints, configs

def test_failed_conversion_overwrites_nothing(tmp_path):
    from mmdet_posmlp.models.common import CheckpointError
    from tools.model_converters.convert_posmlp_checkpoint import convert_checkpoint
    dst = tmp_path / 'posmlp_t_backbone.pth'
    dst.write_bytes(b'previous converted weights')
    truncated = tmp_path / 'truncated.pth'
    torch.save({'state_dict_ema': {'w': torch.zeros(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:500])
    other = tmp_path / 'resnet.pth'
    torch.save({'conv1.weight': torch.zeros(64, 3, 7, 7), 'fc.weight': torch.zeros(10, 64)},
               other)
    for src in (tmp_path / 'missing.pth', truncated, other):
        with pytest.raises((CheckpointError, FileNotFoundError), match=str(src.name)):
            convert_checkpoint(str(src), str(dst))
        assert dst.read_bytes() == b'previous converted weights'
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ['posmlp_t_backbone.pth', 'truncated.pth', 'resnet.pth'])  # no temporary left behind


@pytest.mark.parametrize('backbone,match', [
    (dict(arch='medium'), "unknown arch 'medium'"),
    (dict(arch='tiny', windows=0), 'windows must be positive'),
    (dict(arch='tiny', groups=5), 'groups=5'),
    (dict(arch='tiny', out_indices=(1, 2, 5)), 'out_indices'),
    (dict(arch='tiny', frozen_stages=7), 'frozen_stages=7'),
])
def test_bad_backbone_config_fails_at_build_naming_the_argument(backbone, match):
    from mmengine.config import Config
    from mmdet.registry import MODELS
    cfg = Config.fromfile(CONFIGS['retinanet'])
    cfg.model.backbone = dict(type='PosMLP', **backbone)
    with pytest.raises(Exception, match=match):
        MODELS.build(cfg.model)


# --------------------------------------------------------------------------- faults in training

def _data_options(root):
    root = root.rstrip('/') + '/'
    return [f'{split}_dataloader.dataset.data_root={root}' for split in ('train', 'val', 'test')
            ] + [f'{split}_evaluator.ann_file={root}annotations/instances_val.json'
                 for split in ('val', 'test')]


def _train_command(root, work_dir, *extra):
    return [sys.executable, osp.join(REPO, 'tools', 'train.py'), DEMO, '--work-dir', work_dir,
            *extra, '--cfg-options', *_data_options(root),
            'train_dataloader.batch_size=2', 'train_cfg.max_epochs=3',
            'train_cfg.val_interval=100', 'default_hooks.checkpoint.interval=1',
            'default_hooks.checkpoint.max_keep_ckpts=1', 'default_hooks.logger.interval=1',
            'randomness.seed=0']


def _run_until(command, condition, log, timeout=300):
    """Start ``command``; SIGKILL it as soon as ``condition()`` holds. Returns the wait time."""
    with open(log, 'w') as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        start = time.monotonic()
        try:
            while not condition():
                assert proc.poll() is None, f'finished before the kill (rc {proc.returncode})'
                assert time.monotonic() - start < timeout, 'condition never held'
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return time.monotonic() - start


def _log_text(work_dir):
    return '\n'.join(open(p).read() for p in sorted(glob.glob(osp.join(work_dir, '*', '*.log'))))


def _load(path):
    import mmdet_posmlp  # noqa: F401  (mmengine checkpoint types allowed by torch.load)
    return torch.load(path, map_location='cpu', weights_only=True)


def test_kill_while_saving_then_mid_epoch_then_resume(tiny_data, tmp_path):
    """SIGKILL while epoch 2's checkpoint is being written, resume; SIGKILL in the middle of
    epoch 3, resume again: the run ends where an uninterrupted one would, with the optimizer
    and scheduler state carried through, and every log line written before each kill kept."""
    work = str(tmp_path / 'work')
    ckpt = lambda name: osp.join(work, name)  # noqa: E731

    # 1. killed while writing epoch_2.pth (max_keep_ckpts=1: epoch_1.pth is the only other)
    _run_until(_train_command(tiny_data, work), lambda: osp.exists(ckpt('epoch_2.pth.part')),
               tmp_path / 'run1.out')
    with open(ckpt('last_checkpoint')) as f:
        last = f.read()
    assert last == ckpt('epoch_1.pth') or last == ckpt('epoch_2.pth')  # kill after the rename
    first = _load(last)
    assert first['meta']['epoch'] in (1, 2) and 'optimizer' in first
    if last == ckpt('epoch_1.pth'):
        assert not osp.exists(ckpt('epoch_2.pth'))  # no half-written checkpoint under its name
    log = _log_text(work)
    assert 'Epoch(train) [2][4/4]' in log  # everything before the kill is in the log

    # 2. resume, killed in the middle of epoch 3
    _run_until(_train_command(tiny_data, work, '--resume'),
               lambda: 'Epoch(train) [3][1/4]' in _log_text(work), tmp_path / 'run2.out')
    log = _log_text(work)
    assert f'resumed epoch: {first["meta"]["epoch"]}, iter: {first["meta"]["iter"]}' in log
    assert 'Epoch(train) [2][4/4]' in log  # the first run's log is still there
    with open(ckpt('last_checkpoint')) as f:
        assert f.read() == ckpt('epoch_2.pth')
    assert not osp.exists(ckpt('epoch_1.pth'))  # max_keep_ckpts=1, after epoch 2 was safe

    # 3. resume to the end
    proc = subprocess.run(_train_command(tiny_data, work, '--resume'), capture_output=True,
                          text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'resumed epoch: 2, iter: 8' in _log_text(work)
    final = _load(ckpt('epoch_3.pth'))
    assert final['meta']['epoch'] == 3 and final['meta']['iter'] == 12
    # AdamW counted all 12 steps: its state came through both resumes
    steps = {float(s['step']) for s in final['optimizer']['state'].values()}
    assert steps == {12.0}
    # and the schedulers: had their state been lost at a resume, they would have counted at
    # most the 4 iterations (1 epoch) since it; mmengine's exact count at saving time differs by
    # one between scheduler kinds, so only the carry-over is asserted
    for s in final['param_schedulers']:
        assert s['last_step'] > (1 if s['by_epoch'] else 4), s


def test_non_finite_loss_stops_the_run_naming_the_iteration(tiny_data, tmp_path):
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = Config.fromfile(DEMO)
    cfg.merge_from_dict(dict(
        work_dir=str(tmp_path / 'work'), log_level='WARNING',
        train_dataloader=dict(batch_size=2, dataset=dict(data_root=tiny_data + '/')),
        val_cfg=None, val_dataloader=None, val_evaluator=None,
        train_cfg=dict(max_epochs=1, val_interval=100),
        # a zero std divides every pixel by zero: the loss is not finite from the first step
        model=dict(data_preprocessor=dict(std=[0.0, 0.0, 0.0]))))
    runner = Runner.from_cfg(copy.deepcopy(cfg))
    with pytest.raises(FloatingPointError,
                       match=r'Non-finite loss at epoch 1, iteration 1 .*loss_cls=') as info:
        runner.train()
    assert 'Last checkpoint: none saved yet' in str(info.value)
