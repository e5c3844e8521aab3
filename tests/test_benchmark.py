"""The backbone benchmark's machinery (benchmarks/benchmark_backbones.py): memory accounting,
interleaved worker sessions, the report. Timings themselves are never asserted."""
import torch

from mmdet_posmlp.analysis import backbone_benchmark as bench


def test_peak_tensor_bytes_sees_a_step_allocations():
    def step():
        a = torch.ones(1_000_000)       # 4 MB, freed before the next one
        del a
        b = torch.ones(2_000_000)       # 8 MB
        return b.sum()
    peak = bench.peak_tensor_bytes(step)
    assert 8_000_000 <= peak < 12_000_000 + 4096


def test_with_cp_cuts_training_memory_with_the_same_gradients():
    plain = bench.Measurement('posmlp_t', 160, 224, 'train', threads=2)
    cp = bench.Measurement('posmlp_t_cp', 160, 224, 'train', threads=2)
    cp.model.load_state_dict(plain.model.state_dict())
    assert cp.peak_memory_mb() < 0.65 * plain.peak_memory_mb()
    grads = []
    for m in (plain, cp):
        m.model(m.x)[-1].float().mean().backward()
        grads.append({n: p.grad.clone() for n, p in m.model.named_parameters() if p.grad is not None})
        m.model.zero_grad(set_to_none=True)
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-9, msg=n)


def test_interleaved_sessions_and_report(tmp_path):
    rows = bench.measure_interleaved(['posmlp_t', 'resnet50'], 64, 96, 'infer', repeat=2,
                                     threads=1)
    assert [r['model'] for r in rows] == ['posmlp_t', 'resnet50']
    for r in rows:
        assert len(r['times']) == 2 and r['median_s'] > 0 and r['flops'] > 0
    # the worker counted what this process counts, after the timed passes (which leave the
    # mixing matrices cached: steady-state inference does not recompute them)
    m = bench.build_model('posmlp_t').eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        m(x)
    assert rows[0]['flops'] == bench.count_flops(m, x)
    results = dict(machine=dict(threads=1, torch=torch.__version__, cpu='test', date='now',
                                matmul_gflops=100.0), rows=rows, sweep=[], agreement={})
    table = bench.summary_table(results)
    assert '| PosMLP-T (ours) | 64x96 | 20.2M |' in table and 'ResNet-50 (mmdet)' in table


def test_reference_math_agrees_with_ours():
    assert bench.agreement(64, 96) < 1e-5
