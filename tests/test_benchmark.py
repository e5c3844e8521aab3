"""The benchmarks' machinery (benchmarks/harness.py, benchmark_backbones.py,
benchmark_detectors.py): memory accounting, interleaved worker sessions, the measured steps
and the reports. Timings themselves are never asserted."""
from unittest import mock

import pytest
import torch

from benchmarks import benchmark_backbones as backbones
from benchmarks import benchmark_detectors as detectors
from benchmarks import harness
from mmdet_posmlp.models import posmlp


def test_peak_tensor_bytes_sees_a_step_allocations():
    def step():
        a = torch.ones(1_000_000)       # 4 MB, freed before the next one
        del a
        b = torch.ones(2_000_000)       # 8 MB
        return b.sum()
    peak = harness.peak_tensor_bytes(step)
    assert 8_000_000 <= peak < 12_000_000 + 4096


def held_tensor_bytes(step) -> int:
    """Bytes of the tensors allocated during step() that are still held when it returns, its
    result kept alive: for a forward with autograd, its outputs and what it saved for
    backward (from the profiler's allocation events, as harness.peak_tensor_bytes)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = step()
    held = sum(e.nbytes() for e in prof.profiler.kineto_results.events()
               if e.name() == '[memory]')
    del result
    return held


def _spec(name, mode, h=160, w=224, **kw):
    return dict(suite='benchmark_backbones', name=name, mode=mode, height=h, width=w,
                threads=2, **kw)


def test_with_cp_cuts_training_memory_with_the_same_gradients():
    plain = harness.build_measurement(_spec('posmlp_t', 'train'))
    cp = harness.build_measurement(_spec('posmlp_t_cp', 'train'))
    x = torch.randn(1, 3, 160, 224)
    # what checkpointing is for: the tensors a forward keeps for backward, measured 143 -> 73
    # MB here (53 MB of it, in both, the mixing matrices of all the blocks)
    held = [held_tensor_bytes(lambda m=m: m.model(x)) for m in (plain, cp)]
    assert held[1] < 0.65 * held[0], held
    # the whole step's peak falls less at this small size: it also holds what checkpointing
    # leaves alone, the weight gradients (20.2M parameters, 77 MB) and the mixing matrices of
    # all the blocks, computed once per stage outside the checkpointed blocks, with their
    # gradients (53 MB each); measured 259 -> 232 MB
    assert cp.peak_memory_mb() < 0.95 * plain.peak_memory_mb()
    models = []
    for m in ('posmlp_t', 'posmlp_t_cp'):
        torch.manual_seed(0)
        models.append(backbones.build_model(m).train())
    models[1].load_state_dict(models[0].state_dict())
    grads = []
    for model in models:
        sum(o.mean() for o in model(x)).backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-9, msg=n)


def test_fused_backbone_counts_the_same_flops_and_gives_the_same_features():
    torch.manual_seed(0)
    plain = backbones.build_model('posmlp_t').eval()
    fused = backbones.build_model('posmlp_t').eval()
    fused.load_state_dict(plain.state_dict())
    fused.fuse()
    x = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        for a, b in zip(plain(x), fused(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    flops = [harness.count_flops(lambda m=m: m(x)) for m in (plain, fused)]
    with mock.patch.object(posmlp, '_chunks_pay', lambda x: False):  # the whole-map form
        whole = harness.count_flops(lambda: fused(x))
    # the same products: the mixing matrices that the fused model keeps take none to compute
    # (GQPE's scores and softmax are element-wise), and the folded BatchNorms were none either
    assert flops[0] == whole > 0
    # on the CPU the fused stages run their blocks chunk by chunk, which leaves out the zero
    # rows that round a stage's token matrix up to 8 (at most 7 rows a stage, here with
    # stage maps of 24 x 40 down to 3 x 5 tokens)
    assert 0.9 * whole < flops[1] < whole
    assert all(stage.fixed_mixing for stage in fused.model.levels)  # kept, for this size


def test_interleaved_sessions_and_report():
    specs = [_spec(n, 'infer', 64, 96) for n in ('posmlp_t_fused', 'resnet50', 'swin_t')]
    rows = harness.measure_interleaved(specs, repeat=2, memory=False, flops=True)
    assert [r['name'] for r in rows] == ['posmlp_t_fused', 'resnet50', 'swin_t']
    for r in rows:
        assert len(r['times']) == 2 and r['median_s'] > 0 and r['flops'] > 0
    # the worker counted what this process counts, in steady state (the fused model computed
    # its mixing matrices at the first pass)
    m = backbones.build_model('posmlp_t').fuse()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():  # a fused model runs for inference only
        m(x)
    assert rows[0]['flops'] == harness.count_flops(lambda: m(x))
    results = dict(machine=dict(threads=2, torch=torch.__version__, cpu='test', date='now',
                                matmul_gflops=100.0), rows=rows, sweep=[], agreement={})
    table = backbones.report(results)
    assert '| PosMLP-T (ours, fused) | 64x96 | 20.2M |' in table and 'ResNet-50 (mmdet)' in table


def test_reference_math_agrees_with_ours():
    assert backbones.agreement(64, 96) < 1e-5


def test_detector_training_step_and_report():
    """The measured detector step is mmengine's train_step with the config's optimizer: the
    weights change; predict returns detections; the report sets ours against Swin-T."""
    m = harness.build_measurement(dict(suite='benchmark_detectors', name='retinanet_posmlp_t',
                                       mode='train', batch=2, height=96, width=128, threads=2))
    assert m.info['optimizer'] == 'AdamW' and 31.0e6 < m.info['params'] < 31.2e6
    weight = m.model.backbone.model.levels[2].encoder[0].proj_c_e.weight
    before = weight.detach().clone()
    assert m.time_step() > 0 and not torch.equal(weight, before)  # an optimizer step happened
    assert m.flops() > 0
    p = harness.build_measurement(dict(suite='benchmark_detectors', name='retinanet_posmlp_t',
                                       mode='predict_fused', batch=1, height=96, width=128,
                                       threads=2))
    assert p.time_step() > 0 and not any(
        isinstance(m, torch.nn.BatchNorm2d) for m in p.model.backbone.modules())
    assert all(stage.fixed_mixing for stage in p.model.backbone.model.levels)  # fused, and run
    rows = [dict(name='retinanet_posmlp_t', mode='train', batch=2, median_s=1.0, params=31e6,
                 peak_mem_mb=900.0, flops=3e11, group=0),
            dict(name='retinanet_swin_t', mode='train', batch=2, median_s=1.25, params=38e6,
                 peak_mem_mb=1000.0, flops=3e11, group=0)]
    results = dict(machine=dict(cpu='test', threads=2, torch='x', date='now', matmul_gflops=300.0),
                   height=800, width=1333, rows=rows)
    table = detectors.report(results)
    assert ('| RetinaNet PosMLP-T (ours) | 31.0M | train | 2 | 1.00 | 2.00 | 0.80 | 900 | 0.90 | '
            '300 | 3.00 | 0.3x |') in table
    assert '800x1344 after padding' in table and 'CPU (float32)' in table


def test_detector_step_under_mixed_precision():
    """--amp as tools/train.py selects it (here a CPU: bfloat16 autocast, no loss scaling),
    and autocast for predict: the same machinery a GPU run uses with float16 or bfloat16."""
    from mmdet_posmlp.engine import amp
    if torch.cuda.is_available() or not amp.cpu_has_native_bfloat16():
        pytest.skip('needs a CPU-only machine with native bfloat16')
    spec = dict(suite='benchmark_detectors', name='retinanet_posmlp_t', batch=2, height=96,
                width=128, threads=2, amp='bfloat16')
    m = harness.build_measurement(dict(spec, mode='train'))
    assert m.info['optim_wrapper'] == 'BFloat16AutocastOptimWrapper'
    assert m.time_step() > 0 and m.peak_memory_mb() > 0
    p = harness.build_measurement(dict(spec, mode='predict', batch=1))
    assert p.time_step() > 0
