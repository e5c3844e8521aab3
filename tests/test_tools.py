"""Tests of the command-line tools and the library code behind them (no mocks).

- every detection config builds, and the whole-detector parameter counts match the paper's
  Table 3 within 0.3M;
- tools/train.py and tools/test.py stop before building anything when COCO is missing, with a
  message that names the paths, where to get COCO, which --cfg-options work, and the demo;
- a real (tiny) training run through tools/train.py writes a checkpoint with mmengine's
  CheckpointHook; it loads under torch's weights_only unpickler for --resume and for
  tools/test.py, which still refuses anything outside the allowlist;
- get_flops, benchmark_fps and plot_logs run on real inputs.

The tiny runs use a 4-stage PosMLP with 16..128 channels, one block per stage, 32-channel FPN
and head, on a generated 2-image COCO-format dataset of 64x64 images: a few seconds each.
"""
import datetime
import os
import os.path as osp
import pickle
import runpy
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, TINY_RETINANET_CONFIG, write_tiny_coco

# mmengine imports pkg_resources, which setuptools < 81 deprecates loudly
pytestmark = pytest.mark.filterwarnings('ignore:pkg_resources is deprecated:UserWarning')

CONFIGS = osp.join(REPO, 'configs')
PYTHON = sys.executable

# Paper Table 3 (whole detector, millions of parameters).
PAPER_PARAMS_M = {
    'retinanet_posmlp_t_1x.py': 31.1,
    'retinanet_posmlp_s_1x.py': 47.3,
    'mask_rcnn_posmlp_t_1x.py': 40.5,
    'mask_rcnn_posmlp_s_1x.py': 56.1,
}
ALL_CONFIGS = sorted(PAPER_PARAMS_M) + ['mask_rcnn_posmlp_b_1x.py', 'retinanet_posmlp_b_1x.py']
BACKBONE_T_PARAMS = 20_155_002  # PosMLP-T without out norms: classifier minus head and norm


def run_tool(args, cwd, timeout=300):
    """Run a tool in a fresh interpreter, as a user would; returns the CompletedProcess."""
    env = dict(os.environ, PYTHONWARNINGS='ignore', PYTHON=PYTHON,
               PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get('PYTHONPATH')) if p))
    return subprocess.run([PYTHON] + args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def run_tool_in_process(tool, args, monkeypatch, cwd=None):
    """Run tools/<tool> in this interpreter (cheaper than a subprocess).

    Returns the SystemExit the tool raised, or None when it returned normally.
    """
    if cwd is not None:
        monkeypatch.chdir(cwd)
    monkeypatch.setenv('LOCAL_RANK', os.environ.get('LOCAL_RANK', '0'))  # the tools set it
    path = osp.join(REPO, 'tools', tool)
    monkeypatch.setattr(sys, 'argv', [path] + [str(a) for a in args])
    try:
        runpy.run_path(path, run_name='__main__')
    except SystemExit as e:
        return e
    return None


# ----------------------------------------------------------------------------- configs

@pytest.mark.parametrize('name', ALL_CONFIGS)
def test_config_builds_with_paper_param_count(name):
    from mmdet_posmlp.analysis.complexity import build_detector, count_parameters
    model = build_detector(osp.join(CONFIGS, name))
    backbone, neck = model.backbone, model.neck
    assert type(backbone).__name__ == 'PosMLP'
    # the FPN reads the stages the backbone returns, with their widths
    widths = [backbone.num_features[i] for i in backbone.out_indices]
    assert list(neck.in_channels) == widths
    arch = {'_t_': 96, '_s_': 128, '_b_': 192}
    assert backbone.num_features[0] == next(v for k, v in arch.items() if k in name)
    head = model.bbox_head if name.startswith('retinanet') else model.roi_head.bbox_head
    assert head.num_classes == 80
    total = count_parameters(model)
    if name in PAPER_PARAMS_M:
        assert abs(total / 1e6 - PAPER_PARAMS_M[name]) < 0.3, (name, total)
    else:  # B: no paper figure; it must be the largest of its family
        assert total > PAPER_PARAMS_M[name.replace('_b_', '_s_')] * 1e6


def test_backbone_t_param_count():
    from mmdet_posmlp.analysis.complexity import count_parameters
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    backbone = MODELS.build(dict(type='PosMLP', arch='tiny', out_norm=False))
    assert count_parameters(backbone) == BACKBONE_T_PARAMS


def test_data_root_overrides():
    """--cfg-options data_root=... leaves the resolved paths; the per-dataloader keys move them."""
    from mmdet_posmlp.engine.data_check import collect_data_paths
    from mmdet_posmlp.engine.runner import load_config
    config = osp.join(CONFIGS, 'retinanet_posmlp_t_1x.py')

    cfg = load_config(config, cfg_options={'data_root': '/elsewhere/'})
    paths = collect_data_paths(cfg, ('train', 'val', 'test'))
    assert paths and all(p.path.startswith('data/coco/') for p in paths)

    cfg = load_config(config, cfg_options={
        'train_dataloader.dataset.data_root': '/elsewhere/',
        'val_dataloader.dataset.data_root': '/elsewhere/',
        'test_dataloader.dataset.data_root': '/elsewhere/',
        'val_evaluator.ann_file': '/elsewhere/annotations/instances_val2017.json',
        'test_evaluator.ann_file': '/elsewhere/annotations/instances_val2017.json'})
    paths = collect_data_paths(cfg, ('train', 'val', 'test'))
    assert all(p.path.startswith('/elsewhere/') for p in paths), paths
    assert {p.path for p in paths} == {
        '/elsewhere/annotations/instances_train2017.json', '/elsewhere/train2017/',
        '/elsewhere/annotations/instances_val2017.json', '/elsewhere/val2017/'}


# ----------------------------------------------------------------------------- missing COCO

def _check_missing_coco_message(message, split, loader, cwd):
    for text in (f'data/coco/annotations/instances_{split}2017.json', f'data/coco/{split}2017/',
                 str(cwd), 'MISSING', 'https://cocodataset.org/#download',
                 'data/coco/train2017/', 'data/coco/val2017/', 'bash tools/run_demo.sh',
                 f'{loader}_dataloader.dataset.data_root=/path/to/coco/',
                 f'{loader}_evaluator.ann_file=/path/to/coco/annotations/instances_val2017.json',
                 "'--cfg-options data_root=...' does NOT move them"):
        assert text in message, (text, message)


def test_train_without_coco_stops_at_once(tmp_path):
    """A subprocess in an empty directory: exit code 1, directions, nothing built or written."""
    config = osp.join(CONFIGS, 'retinanet_posmlp_t_1x.py')
    result = run_tool([osp.join(REPO, 'tools', 'train.py'), config], cwd=str(tmp_path),
                      timeout=120)
    assert result.returncode == 1, result.stderr[-3000:]
    _check_missing_coco_message(result.stderr, 'train', 'val', tmp_path)
    assert 'Traceback' not in result.stderr
    # stopped before the Runner (and so the model) was built: it would have logged the
    # environment and created the work_dir
    assert os.listdir(tmp_path) == []
    assert 'System environment' not in result.stdout + result.stderr


def test_test_without_coco_stops_at_once(tmp_path, monkeypatch):
    config = osp.join(CONFIGS, 'mask_rcnn_posmlp_t_1x.py')
    exit_ = run_tool_in_process('test.py', [config, 'missing.pth'], monkeypatch, cwd=tmp_path)
    assert exit_ is not None and isinstance(exit_.code, str), exit_
    _check_missing_coco_message(exit_.code, 'val', 'test', tmp_path)
    assert 'test images' in exit_.code and 'train images' not in exit_.code
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- a real tiny run

@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    """tools/train.py on the tiny dataset for one epoch (one iteration) + validation."""
    root = tmp_path_factory.mktemp('tiny')
    write_tiny_coco(str(root / 'data'))
    config = root / 'tiny_retinanet.py'
    config.write_text(TINY_RETINANET_CONFIG.format(
        base=osp.join(CONFIGS, 'retinanet_posmlp_t_1x.py'), data_root=root / 'data', window=4,
        scale=64))
    work_dir = root / 'work'
    result = run_tool([osp.join(REPO, 'tools', 'train.py'), str(config),
                       '--work-dir', str(work_dir)], cwd=str(root))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    checkpoint = work_dir / 'epoch_1.pth'
    assert checkpoint.is_file()
    return dict(root=root, config=config, work_dir=work_dir, checkpoint=checkpoint,
                train_log=result.stdout + result.stderr)


@pytest.fixture
def no_safe_globals():
    """torch's allowlist emptied for the test (importing mmdet_posmlp fills it), then restored."""
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    yield
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals(saved)


def test_checkpoint_loads_with_exactly_the_allowlist(tiny_run, no_safe_globals):
    """The CheckpointHook checkpoint loads with weights_only=True and the allowlist; every entry
    of the allowlist's mmengine part is needed (the numpy 1.x aliases aside, which numpy 2 does
    not write; the reference checkpoints' Namespace is tested in test_checkpoint.py)."""
    from mmdet_posmlp.safe_load import (_NUMPY1_ALIASES, ALLOWED_CHECKPOINT_GLOBALS,
                                               REFERENCE_CHECKPOINT_GLOBALS,
                                               mmengine_checkpoint_loading, safe_globals_list)
    path = str(tiny_run['checkpoint'])
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)  # torch's default: weights_only=True, refused without the allowlist

    with mmengine_checkpoint_loading():
        ckpt = torch.load(path)  # still torch's default weights_only=True
    assert {'meta', 'state_dict', 'optimizer', 'message_hub', 'param_schedulers'} <= set(ckpt)
    loss = ckpt['message_hub']['log_scalars']['train/loss']
    assert type(loss).__name__ == 'HistoryBuffer' and np.isfinite(loss.mean())

    entries = safe_globals_list()
    assert [name for _, name in entries if name not in _NUMPY1_ALIASES.values()] == \
        [name for name, _ in ALLOWED_CHECKPOINT_GLOBALS]
    reference = {name for name, _ in REFERENCE_CHECKPOINT_GLOBALS}
    for dropped in entries:
        if dropped[1] in _NUMPY1_ALIASES.values() or dropped[1] in reference:
            continue
        with torch.serialization.safe_globals([e for e in entries if e is not dropped]):
            with pytest.raises(pickle.UnpicklingError):
                torch.load(path)
    # nothing in the checkpoint is outside the list
    found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    assert set(found) <= {name for _, name in entries}


class _Unsafe:
    """Something a checkpoint must not be able to smuggle in."""

    def __reduce__(self):
        return (os.system, ('echo unsafe',))


class _GetattrEscape:
    """getattr is in the allowlist by name only: getattr(getattr, '__self__') is the builtins
    module, the way to eval and friends."""

    def __reduce__(self):
        return (getattr, (getattr, '__self__'))


class _OtherStatistic:
    def __reduce__(self):
        from mmengine.logging import HistoryBuffer
        return (getattr, (HistoryBuffer, 'register_statistics'))


@pytest.mark.parametrize('payload', [_Unsafe(), _GetattrEscape(), _OtherStatistic(),
                                     datetime.datetime(2026, 1, 1)],
                         ids=['os.system', 'getattr-escape', 'getattr-other', 'datetime'])
def test_unsafe_objects_still_refused(payload, tmp_path):
    from mmdet_posmlp.safe_load import allow_mmengine_checkpoints
    allow_mmengine_checkpoints()  # as importing mmdet_posmlp does
    path = tmp_path / 'unsafe.pth'
    torch.save({'state_dict': {'w': torch.zeros(2)}, 'payload': payload}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)


def test_resume_from_checkpoint(tiny_run):
    work_dir = tiny_run['work_dir']
    result = run_tool([osp.join(REPO, 'tools', 'train.py'), str(tiny_run['config']),
                       '--work-dir', str(work_dir), '--resume',
                       '--cfg-options', 'train_cfg.max_epochs=2'], cwd=str(tiny_run['root']))
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert 'resumed epoch: 1' in log, log[-3000:]
    assert (work_dir / 'epoch_2.pth').is_file()


def test_test_tool_with_checkpoint(tiny_run, tmp_path):
    out = tmp_path / 'results.pkl'
    work_dir = tmp_path / 'test_work'
    result = run_tool([osp.join(REPO, 'tools', 'test.py'), str(tiny_run['config']),
                       str(tiny_run['checkpoint']), '--work-dir', str(work_dir),
                       '--show-dir', 'vis', '--out', str(out)], cwd=str(tiny_run['root']))
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert 'Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all' in log  # pycocotools table
    assert 'coco/bbox_mAP' in log
    assert out.is_file()
    drawn = [f for _, _, files in os.walk(work_dir) for f in files if f.endswith('.jpg')]
    assert len(drawn) == 2, drawn
    assert 'PosMLP.fuse() done' in log  # the deployment step ran before testing


def test_test_tool_fused_and_plain_give_the_same_detections(tiny_run, tmp_path):
    """tools/test.py fuses the backbone by default; --no-fuse tests it as trained: the same
    detections either way (the fused blocks are the same function, tested to 1e-10)."""
    outs = {}
    for flag in ([], ['--no-fuse']):
        out = tmp_path / f"results{''.join(flag)}.pkl"
        result = run_tool([osp.join(REPO, 'tools', 'test.py'), str(tiny_run['config']),
                           str(tiny_run['checkpoint']), '--work-dir', str(tmp_path / 'w'),
                           '--out', str(out)] + flag, cwd=str(tiny_run['root']))
        log = result.stdout + result.stderr
        assert result.returncode == 0, log[-3000:]
        assert ('fuse() done' in log) == (not flag)
        with open(out, 'rb') as f:
            outs[bool(flag)] = pickle.load(f)
    for fused, plain in zip(outs[False], outs[True]):
        a, b = fused['pred_instances'], plain['pred_instances']
        assert torch.equal(a['labels'], b['labels'])
        torch.testing.assert_close(a['bboxes'], b['bboxes'], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(a['scores'], b['scores'], rtol=1e-4, atol=1e-5)


def test_test_tool_refuses_unsafe_checkpoint(tiny_run, tmp_path, monkeypatch):
    path = tmp_path / 'unsafe.pth'
    torch.save({'state_dict': {}, 'payload': _Unsafe()}, path)
    exit_ = run_tool_in_process('test.py', [tiny_run['config'], path], monkeypatch, cwd=tmp_path)
    assert exit_ is not None and isinstance(exit_.code, str), exit_
    assert "torch's safe unpickler refuses" in exit_.code and 'system' in exit_.code
    assert os.listdir(tmp_path) == ['unsafe.pth']  # stopped before building anything


# ----------------------------------------------------------------------------- analysis tools

def test_plot_logs(tiny_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / 'curves.png'
    exit_ = run_tool_in_process('analysis/plot_logs.py', [tiny_run['work_dir'], '--out', out],
                                monkeypatch)
    assert exit_ is None, exit_
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and out.stat().st_size > 10_000
    assert 'coco/bbox_mAP' in capsys.readouterr().out


def test_plot_logs_compares_runs(tiny_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / 'compare.png'
    run = tiny_run['work_dir']
    assert run_tool_in_process('analysis/plot_logs.py', [run, run, '--labels', 'a', 'b', '--out',
                                                         out], monkeypatch) is None
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and out.stat().st_size > 10_000
    assert capsys.readouterr().out.count('coco/bbox_mAP') == 2
    exit_ = run_tool_in_process('analysis/plot_logs.py', [run, run], monkeypatch)
    assert exit_ is not None and exit_.code == 2  # several runs need --out


def test_plot_logs_reads_scalars(tiny_run):
    from mmdet_posmlp.analysis.training_logs import find_scalar_files, load_scalars
    train, val = load_scalars(find_scalar_files(str(tiny_run['work_dir'])))
    assert train and {'loss', 'loss_cls', 'loss_bbox'} <= set(train[0])
    assert val and 'coco/bbox_mAP' in val[0] and val[0]['step'] == 1


def test_get_flops_and_benchmark(tiny_run, monkeypatch, capsys):
    from mmdet_posmlp.analysis.complexity import model_complexity
    result = model_complexity(str(tiny_run['config']), shape=(64, 90))
    assert result['input_shape'] == (64, 96)  # padded to the preprocessor's 32
    assert 0 < result['backbone_flops'] < result['flops']
    assert result['params']['total'] > result['params']['backbone'] > 0

    exit_ = run_tool_in_process('analysis/get_flops.py', [tiny_run['config'], '--shape', '64'],
                                monkeypatch)
    assert exit_ is None, exit_
    out = capsys.readouterr().out
    assert f"Parameters, whole detector: {result['params']['total']:,}" in out
    assert 'FLOPs, backbone' in out

    exit_ = run_tool_in_process(
        'analysis/benchmark_fps.py',
        [tiny_run['config'], '--checkpoint', tiny_run['checkpoint'], '--shape', '64', '96',
         '--repeat', '2', '--warmup', '1'], monkeypatch)
    assert exit_ is None, exit_
    out = capsys.readouterr().out
    assert 'network input 64x96' in out and 'FPS' in out
