"""`tools/train.py --amp` on a machine without a GPU: bfloat16 autocast on a CPU that has it
natively, a clear stop before anything loads on one that does not."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mmdet_posmlp.engine import amp
from mmdet_posmlp.engine.runner import build_train_runner

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs', 'retinanet_posmlp_t_1x.py')


def test_amp_without_native_bfloat16_stops_before_the_data(monkeypatch, tmp_path):
    """No GPU, no native bfloat16: the error names the reason, and comes before the data check
    (COCO is not on this machine, so the data check would otherwise speak first)."""
    monkeypatch.setattr(amp, 'has_accelerator', lambda: False)
    monkeypatch.setattr(amp, 'cpu_has_native_bfloat16', lambda: False)
    with pytest.raises(amp.AmpUnavailableError, match='no native bfloat16'):
        build_train_runner(CONFIG, work_dir=str(tmp_path), amp=True)


def test_amp_on_a_gpu_is_mmengines_loss_scaled_wrapper(monkeypatch):
    monkeypatch.setattr(amp, 'has_accelerator', lambda: True)
    cfg = amp.amp_optim_wrapper(dict(type='OptimWrapper', optimizer=dict(type='AdamW')))
    assert cfg == dict(type='AmpOptimWrapper', loss_scale='dynamic', optimizer=dict(type='AdamW'))


@pytest.mark.skipif(torch.cuda.is_available() or not amp.cpu_has_native_bfloat16(),
                    reason='needs a CPU-only machine with native bfloat16')
def test_train_tool_with_amp_on_cpu_trains_in_bfloat16(tmp_path):
    """The real tool, --amp, 2 iterations of the demo RetinaNet on a tiny shapes split."""
    data = tmp_path / 'shapes'
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='2')
    subprocess.run([sys.executable, osp.join(REPO, 'tools', 'make_demo_data.py'), '--out', str(data),
                    '--num-train', '4', '--num-val', '2'], check=True, env=env, cwd=REPO,
                   capture_output=True)
    root = f'{data}/'
    options = [f'{k}.dataset.data_root={root}' for k in
               ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    options += [f'{k}.ann_file={root}annotations/instances_val.json'
                for k in ('val_evaluator', 'test_evaluator')]
    options += ['train_cfg.max_epochs=1', 'train_dataloader.batch_size=2',
                'default_hooks.logger.interval=1', 'model.test_cfg.score_thr=0.0']
    out = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'train.py'),
         osp.join(REPO, 'configs', 'demo', 'retinanet_posmlp_t_demo.py'), '--amp',
         '--work-dir', str(tmp_path / 'work'), '--cfg-options', *options],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert 'bfloat16 autocast on the CPU' in log
    assert 'Epoch(train) [1][2/2]' in log and 'loss: nan' not in log
    assert osp.isfile(tmp_path / 'work' / 'epoch_1.pth')
