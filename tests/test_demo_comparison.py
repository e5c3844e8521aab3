"""tools/demo/comparison.py: run names, the plan decided from what has finished, and the report
(no training: made-up work dirs in the layout mmengine and tools/test.py leave)."""
import json
import os
import os.path as osp

import pytest

from conftest import REPO as ROOT, load_file_module

comparison = load_file_module(osp.join('tools', 'demo', 'comparison.py'), '_demo_comparison')
Run = comparison.Run


def _write_lines(path, records):
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        for r in records:
            f.write(json.dumps(r) + '\n')


def _fake_run(work_root, run, bbox_map, map50, times, test=True, resumed=False, val=None):
    """A work dir as training and tools/test.py leave it: val (bbox mAP, mAP@0.5) after the
    last of two epochs defaults to the test figures."""
    wd = osp.join(work_root, run.key)
    val_map, val_map50 = val or (bbox_map, map50)
    train = [dict(loss=2.0 - 0.1 * i, time=t, step=10 * (i + 1), epoch=1 + i // 30,
                  iter=10 * (i + 1)) for i, t in enumerate(times)]
    vals = [dict(**{'coco/bbox_mAP': val_map / 2 * e, 'coco/bbox_mAP_50': val_map50 / 2 * e},
                 step=e) for e in (1, 2)]
    if resumed:  # a stopped run resumed: a second <time> folder, whose records win
        _write_lines(osp.join(wd, '20261204_100000', 'vis_data', 'scalars.json'),
                     [dict(train[0], loss=99.0)])
    _write_lines(osp.join(wd, '20261204_110000', 'vis_data', 'scalars.json'), train + vals)
    with open(osp.join(wd, 'model_info.json'), 'w') as f:
        json.dump(dict(backbone_params=20_000_000, detector_params=21_500_000, max_epochs=2), f)
    if test:
        # tools/test.py's metrics file, then what the runner writes from it
        path = osp.join(wd, 'test', '20261204_120000', '20261204_120000.json')
        _write_lines(path, [{'coco/bbox_mAP': bbox_map, 'coco/bbox_mAP_50': map50,
                             'coco/bbox_mAP_75': 0.1}])
        with open(osp.join(wd, 'test_metrics.json'), 'w') as f:
            json.dump(dict(comparison.read_test_json(path), seed=run.seed, lr=run.lr), f)
    return wd


def test_run_names_round_trip():
    assert comparison.format_lr(1e-3) == '1e-3' and comparison.format_lr(2.5e-3) == '2.5e-3'
    assert comparison.format_lr(3e-4) == '3e-4'
    for run in (Run('posmlp_t', 1e-3, 2), Run('pvt_small', 1e-3, 0, 'warmup50'),
                Run('resnet50', 1.25e-3, 0, 'sgd'), Run('posmlp_t_shift', 3e-4, 1)):
        assert comparison.parse_key(run.key) == run, run.key
    assert Run('posmlp_t', 1e-3, 2).key == 'posmlp_t_lr1e-3_seed2'
    assert comparison.parse_key('posmlp_t_seed0') is None  # the first comparison's layout
    assert comparison.parse_key('resnet18_lr1e-3_seed0') is None


def test_parse_runs():
    assert comparison.parse_runs('posmlp_t@1e-3:0,1 resnet50@3e-4') == [
        Run('posmlp_t', 1e-3, 0), Run('posmlp_t', 1e-3, 1), Run('resnet50', 3e-4, 0)]
    assert comparison.parse_runs('pvt_small@1e-3+warmup50;vip_s7@3e-4:2') == [
        Run('pvt_small', 1e-3, 0, 'warmup50'), Run('vip_s7', 3e-4, 2)]
    with pytest.raises(ValueError, match='unknown backbone'):
        comparison.parse_runs('resnet18@1e-3')
    with pytest.raises(ValueError, match='learning rate'):
        comparison.parse_runs('resnet50:0')
    with pytest.raises(ValueError, match='unknown variant'):
        comparison.parse_runs('resnet50@1e-3+adam')


def test_train_options():
    options = Run('resnet50', 1.25e-3, 1, 'sgd').train_options()
    assert options[:4] == ['optim_wrapper.optimizer.lr=0.00125',
                           f'param_scheduler.0.end={comparison.WARMUP_ITERS}',
                           'randomness.seed=1', 'default_hooks.checkpoint.interval=1']
    assert 'optim_wrapper.optimizer.type=SGD' in options
    # the variant's warm-up comes after the common one: mmengine's last value wins
    options = Run('pvt_small', 1e-3, 0, 'warmup50').train_options()
    assert options.index('param_scheduler.0.end=50') > options.index(
        f'param_scheduler.0.end={comparison.WARMUP_ITERS}')


def _figures(val_map):
    return dict(val_bbox_mAP=val_map, val_bbox_mAP_50=2 * val_map)


def test_plan_sweep_then_extend_then_seeds():
    lo, mid, hi = comparison.SWEEP_LRS
    plan = comparison.planned_runs({})
    sweep = [Run(n, lr) for n in comparison.MAIN for lr in comparison.SWEEP_LRS]
    assert plan[:len(sweep)] == sweep
    # nothing decided yet: no extension and no seeds; the family and variants follow the sweep
    assert all(r.seed == 0 and r.lr in comparison.SWEEP_LRS + comparison.FAMILY_LRS + (1.25e-3,)
               for r in plan)
    assert [r for r in plan if r.name in comparison.OTHERS] == [
        Run(n, lr) for n in comparison.OTHERS for lr in comparison.FAMILY_LRS]
    for n in comparison.MAIN:
        for lr in comparison.SWEEP_LRS:
            assert comparison.BACKBONES[n].config and osp.exists(
                osp.join(ROOT, comparison.BACKBONES[n].config))

    results = {Run('posmlp_t', lo): _figures(0.1), Run('posmlp_t', mid): _figures(0.3),
               Run('posmlp_t', hi): _figures(0.2),
               Run('swin_t', lo): _figures(0.1), Run('swin_t', mid): _figures(0.2),
               Run('swin_t', hi): _figures(0.3),
               Run('resnet50', lo): _figures(0.1)}  # sweep not finished
    plan = comparison.planned_runs(results)
    assert Run('posmlp_t', mid, 1) in plan and Run('posmlp_t', mid, 2) in plan
    assert Run('swin_t', comparison.EXTRA_LR) in plan  # the largest lr won: one more
    assert not [r for r in plan if r.name == 'swin_t' and r.seed > 0]  # ... before the seeds
    assert not [r for r in plan if r.name == 'resnet50' and r.seed > 0]
    # the sweep comes first, then the seeds
    assert plan.index(Run('posmlp_t', mid, 1)) > plan.index(Run('cycle_mlp_b2', hi))
    assert comparison.next_runs(results)[0] == Run('resnet50', mid)

    results[Run('swin_t', comparison.EXTRA_LR)] = _figures(0.25)  # lower: 1e-3 stays the best
    plan = comparison.planned_runs(results)
    assert Run('swin_t', hi, 1) in plan and Run('swin_t', hi, 2) in plan
    results[Run('swin_t', comparison.EXTRA_LR)] = _figures(0.35)
    assert Run('swin_t', comparison.EXTRA_LR, 2) in comparison.planned_runs(results)
    # a variant at seed 0 does not take part in the choice
    results[Run('posmlp_t', hi, 0, 'warmup50')] = _figures(0.9)
    assert Run('posmlp_t', mid, 1) in comparison.planned_runs(results)
    failed = [Run('resnet50', mid)]
    assert comparison.next_runs(results, failed)[0] == Run('resnet50', hi)


def test_read_test_json(tmp_path):
    path = str(tmp_path / 'x.json')
    _write_lines(path, [{'coco/bbox_mAP': 0.3, 'coco/bbox_mAP_50': 0.6}])
    assert comparison.read_test_json(path) == dict(bbox_mAP=0.3, bbox_mAP_50=0.6)
    _write_lines(path, [{'other': 1}])
    assert comparison.read_test_json(path) is None


def test_test_options_point_at_the_held_out_split():
    root = comparison.TEST_DATA['root']
    assert comparison.test_options() == [
        f'test_dataloader.dataset.data_root={root}/',
        f'test_evaluator.ann_file={root}/annotations/instances_val.json']
    assert root != 'data/demo_shapes' and comparison.TEST_DATA['seed'] != 0


def test_report(tmp_path):
    root = str(tmp_path / 'compare')
    lo, mid, hi = comparison.SWEEP_LRS
    # PosMLP-T: best at 3e-4 on validation (its test figure at 1e-3 is higher: not chosen by it)
    _fake_run(root, Run('posmlp_t', lo), 0.10, 0.20, [5.0, 0.4], val=(0.1, 0.2))
    _fake_run(root, Run('posmlp_t', mid), 0.30, 0.60, [5.0, 0.4, 0.6], resumed=True,
              val=(0.3, 0.6))
    _fake_run(root, Run('posmlp_t', hi), 0.40, 0.70, [5.0, 0.4], val=(0.2, 0.5))
    _fake_run(root, Run('posmlp_t', mid, 1), 0.20, 0.50, [5.0, 0.5, 0.5])
    _fake_run(root, Run('resnet50', lo), 0.10, 0.25, [5.0, 0.3, 0.3])
    _fake_run(root, Run('resnet50', 1.25e-3, 0, 'sgd'), 0.05, 0.15, [5.0, 0.3, 0.3])
    _fake_run(root, Run('swin_t', lo), 0.5, 0.5, [1.0, 1.0], test=False)  # still training
    os.makedirs(osp.join(root, 'notes'))  # not a run: ignored

    run = comparison.collect_run(osp.join(root, Run('posmlp_t', mid).key))
    assert run['loss'][0] == (10, 2.0)  # the resumed folder's record replaced the earlier one
    assert run['s_per_iter'] == pytest.approx(0.5)  # records after iteration 10 only
    assert run['val_map50'] == [(1, 0.30), (2, 0.60)]
    assert (run['val_bbox_mAP'], run['val_bbox_mAP_50']) == (0.3, 0.6)
    assert set(comparison.finished_runs(root, archive=None)) == {
        Run('posmlp_t', lo), Run('posmlp_t', mid), Run('posmlp_t', hi), Run('posmlp_t', mid, 1),
        Run('resnet50', lo), Run('resnet50', 1.25e-3, 0, 'sgd')}

    md = str(tmp_path / 'docs' / 'cmp.md')
    png = str(tmp_path / 'docs' / 'cmp.png')
    comparison.write_report(root, md, png, archive=None)
    text = open(md).read()
    best = text.split('## Learning-rate sweep')[0]
    rows = {line.split(' | ')[0].strip('| '): line for line in best.splitlines()
            if line.startswith('| ')}
    assert '| 3e-4 | 0, 1 | 0.250 [0.200-0.300] | 0.550 [0.500-0.600] | 0.50 (0.40) ' \
           '| 20.0M / 21.5M |' in rows['PosMLP-T']
    assert '| 1e-4 | 0 | 0.100 | 0.250 | 0.30 (0.30) |' in rows['ResNet-50']
    assert 'Swin-T' not in rows  # no test figures yet: not in the tables ...
    assert 'swin_t lr 1e-4 seed 0' in text.split('## Not finished')[1]  # ... but to run
    sweep = text.split('## Learning-rate sweep')[1].split('##')[0]
    assert '| PosMLP-T | 0.100 / 0.200 | **0.300 / 0.600** | 0.200 / 0.700 | 3e-4 |' in sweep
    variants = text.split('## Published recipes')[1].split('##')[0]
    # no plain run at 1.25e-3: the variant is set beside the backbone's best plain run
    assert '| ResNet-50 | 1.25e-3 | sgd |' in variants
    assert '| 0.050 / 0.150 | 0.100 / 0.250 (at 1e-4) |' in variants
    assert comparison.PUBLISHED_RECIPES in variants
    every = text.split('## Every run')[1]
    assert '| PosMLP-T | 3e-4 | 1 | 0.250, 0.500 | 0.200 / 0.500 | 2.000 / 1.800 | in one go |' \
        in every
    assert '| PosMLP-T | 3e-4 | 0 | 0.300, 0.600 | 0.300 / 0.600 | 2.000 / 1.800 | stopped and ' \
           'resumed (2 sessions) |' in every
    assert '| ResNet-50 | 1.25e-3 (sgd) | 0 |' in every
    assert open(png, 'rb').read(8) == b'\x89PNG\r\n\x1a\n' and osp.getsize(png) > 10_000


def test_archive_keeps_a_finished_run_without_its_work_dir(tmp_path):
    """A finished run's figures copied to the archive (no checkpoint) give the same report
    figures once work_dirs/ is gone, and the runner skips the run."""
    root, archive = str(tmp_path / 'compare'), str(tmp_path / 'archive')
    run = Run('posmlp_t', 3e-4)
    wd = _fake_run(root, run, 0.30, 0.60, [5.0, 0.4, 0.6], resumed=True)
    open(osp.join(wd, 'epoch_2.pth'), 'wb').write(b'not kept')
    kept = comparison.archive_run(run, root, archive)
    assert sorted(os.listdir(kept)) == ['model_info.json', 'test_metrics.json', 'vis_data']
    before = comparison.finished_runs(root, archive=None)[run]
    import shutil
    shutil.rmtree(root)
    after = comparison.finished_runs(root, archive)[run]
    assert after['sessions'] == before['sessions'] == 2  # resumed once
    for key in ('loss', 'val_map50', 'val_bbox_mAP', 's_per_iter', 'model_info'):
        assert after[key] == before[key], key
    assert after['test_metrics'] == dict(before['test_metrics'], training_sessions=2)
