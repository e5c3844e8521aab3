"""tools/demo/comparison.py: the run list and the report (no training: made-up work dirs in the
layout mmengine and tools/test.py leave)."""
import json
import os
import os.path as osp

import pytest

from conftest import REPO as ROOT, load_file_module

comparison = load_file_module(osp.join('tools', 'demo', 'comparison.py'), '_demo_comparison')


def _write_lines(path, records):
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        for r in records:
            f.write(json.dumps(r) + '\n')


def _fake_run(work_root, name, seed, bbox_map, map50, times, test=True, resumed=False):
    wd = osp.join(work_root, f'{name}_seed{seed}')
    train = [dict(loss=2.0 - 0.1 * i, time=t, step=10 * (i + 1), epoch=1 + i // 30,
                  iter=10 * (i + 1)) for i, t in enumerate(times)]
    val = [dict(**{'coco/bbox_mAP': bbox_map / 2 * e, 'coco/bbox_mAP_50': map50 / 2 * e},
                step=e) for e in (1, 2)]
    if resumed:  # a stopped run resumed: a second <time> folder, whose records win
        _write_lines(osp.join(wd, '20261204_100000', 'vis_data', 'scalars.json'),
                     [dict(train[0], loss=99.0)])
    _write_lines(osp.join(wd, '20261204_110000', 'vis_data', 'scalars.json'), train + val)
    with open(osp.join(wd, 'model_info.json'), 'w') as f:
        json.dump(dict(backbone_params=20_000_000, detector_params=21_500_000, max_epochs=2), f)
    if test:
        # tools/test.py's metrics file, then what the runner writes from it
        _write_lines(osp.join(wd, 'test', '20261204_120000', '20261204_120000.json'),
                     [{'coco/bbox_mAP': bbox_map, 'coco/bbox_mAP_50': map50, 'coco/bbox_mAP_75': 0.1}])
        metrics = comparison.read_test_json(
            osp.join(wd, 'test', '20261204_120000', '20261204_120000.json'))
        with open(osp.join(wd, 'test_metrics.json'), 'w') as f:
            json.dump(dict(metrics, seed=seed), f)
    return wd


def test_parse_runs():
    assert comparison.parse_runs('posmlp_t:0,1 resnet50') == [
        ('posmlp_t', 0), ('posmlp_t', 1), ('resnet50', 0)]
    assert comparison.parse_runs('swin_t:2;vip_s7:0') == [('swin_t', 2), ('vip_s7', 0)]
    with pytest.raises(ValueError, match='unknown backbone'):
        comparison.parse_runs('resnet18:0')


def test_default_plan_order():
    plan = comparison.DEFAULT_PLAN
    assert plan[:5] == [(n, 0) for n in ('posmlp_t', 'resnet50', 'swin_t', 'pvt_small',
                                         'cycle_mlp_b2')]
    assert plan[10:13] == [('hire_mlp_tiny', 0), ('vip_s7', 0), ('s2mlp_deep', 0)]
    assert len(plan) == len(set(plan)) == 18
    for name, _ in plan:  # every planned backbone has its demo config
        assert osp.exists(osp.join(ROOT, comparison.BACKBONES[name].config)), name


def test_read_test_json(tmp_path):
    path = str(tmp_path / 'x.json')
    _write_lines(path, [{'coco/bbox_mAP': 0.3, 'coco/bbox_mAP_50': 0.6}])
    assert comparison.read_test_json(path) == dict(bbox_mAP=0.3, bbox_mAP_50=0.6)
    _write_lines(path, [{'other': 1}])
    assert comparison.read_test_json(path) is None


def test_report(tmp_path):
    root = str(tmp_path / 'compare')
    _fake_run(root, 'posmlp_t', 0, 0.30, 0.60, [5.0, 0.4, 0.6], resumed=True)
    _fake_run(root, 'posmlp_t', 1, 0.20, 0.50, [5.0, 0.5, 0.5])
    _fake_run(root, 'resnet50', 0, 0.10, 0.25, [5.0, 0.3, 0.3])
    _fake_run(root, 'swin_t', 0, 0.5, 0.5, [1.0, 1.0], test=False)  # still training

    run = comparison.collect_run(osp.join(root, 'posmlp_t_seed0'))
    assert run['loss'][0] == (10, 2.0)  # the resumed folder's record replaced the earlier one
    assert run['s_per_iter'] == pytest.approx(0.5)  # records after iteration 10 only
    assert run['val_map50'] == [(1, 0.30), (2, 0.60)]

    md = str(tmp_path / 'docs' / 'cmp.md')
    png = str(tmp_path / 'docs' / 'cmp.png')
    comparison.write_report(root, md, png, planned=[('posmlp_t', 0), ('posmlp_t', 1),
                                                    ('resnet50', 0), ('swin_t', 0)])
    text = open(md).read()
    summary = text.split('## Per run')[0]
    rows = {line.split(' | ')[0].strip('| '): line for line in summary.splitlines()
            if line.startswith('| ')}
    assert '| 0, 1 | 0.250 [0.200-0.300] | 0.550 [0.500-0.600] | 0.50 (0.40) | 20.0M / 21.5M |' \
        in rows['PosMLP-T']
    assert '| 0 | 0.100 | 0.250 | 0.30 (0.30) |' in rows['ResNet-50']
    assert 'Swin-T' not in rows  # no test figures yet: not in the tables ...
    assert 'Swin-T seed 0' in text  # ... but named as not finished
    assert '| PosMLP-T | 1 | 0.250, 0.500 | 2.000 / 1.800 | in one go |' in text  # per run
    assert '| PosMLP-T | 0 | 0.300, 0.600 | 2.000 / 1.800 | stopped and resumed (2 sessions) |' \
        in text
    assert osp.getsize(png) > 1000
