"""Mixed precision: PosMLP under torch.autocast, float16 and bfloat16, training and evaluation,
every token mixer, against float32 (CPU autocast here; the CUDA versions run where a GPU is).

The bounds are a few times what mmdet's Swin-T shows in the same comparison (measured here,
224x224, batch 2: 1.4e-3 with float16, 1.1e-2 with bfloat16). With GQPE's scores and softmax in
float16, PosMLP-T with spread Gaussians is off by 1.4e-2 in training: the bounds catch that."""
import pytest
import torch

from mmdet_posmlp.models import posmlp
from mmdet_posmlp.models.posmlp import GQPE, PosMLPClassifier
from conftest import mixer_matrices, randomize_

BOUND = {torch.float16: 4e-3, torch.bfloat16: 3e-2}
SMALL = dict(embed_dims=(32, 64, 128, 256), depths=(1, 1, 2, 1), windows=(7, 7, 7, 4),
             groups=(4, 8, 16, 32), mlp_ratios=(4, 4, 4, 2))


def spread_gaussians_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """GQPE Gaussians as a trained model has them: centres a token or two away, broad
    spreads (the probabilities of a 14 x 14 window are then mostly below float16's
    sqrt(tiny), about 0.0078, which a dtype-derived flush threshold would zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, GQPE):
                G = m.attention_spreads.shape[0]
                s = torch.rand(G, generator=g) * 0.4 + 0.1
                t = s * (0.5 + torch.rand(G, generator=g))
                m.attention_spreads.copy_(torch.diag_embed(torch.stack([s, t], -1)))
                m.attention_centers.copy_(torch.randn(G, 2, generator=g))
    return model


def autocast_errors(model, x, dtype, training):
    """Relative L2 error of every stage's output under autocast (on x's device), against
    float32 on the same device."""
    model.train(training)
    with torch.no_grad():
        ref = model.forward_stages(x)
        with torch.autocast(x.device.type, dtype=dtype):
            out = model.forward_stages(x)
    assert [o.shape for o in out] == [r.shape for r in ref]
    return [float((a.float() - b).norm() / b.norm()) for a, b in zip(out, ref)]


@pytest.fixture(scope='module')
def posmlp_t():
    torch.manual_seed(0)
    return spread_gaussians_(PosMLPClassifier('tiny', num_classes=0, drop_path_rate=0.0))


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('training', [True, False])
def test_posmlp_t_stages_under_autocast_stay_close_to_float32(posmlp_t, dtype, training):
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    errors = autocast_errors(posmlp_t, x, dtype, training)
    assert max(errors) < BOUND[dtype], errors


@pytest.mark.parametrize('mixer', ['gqpe', 'lrpe', 'sgu'])
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_every_mixer_trains_and_evaluates_under_autocast(mixer, dtype):
    """Training step (loss, backward) and evaluation under autocast, odd sizes (clipped
    windows): finite gradients on every parameter, outputs close to float32."""
    torch.manual_seed(2)
    model = spread_gaussians_(randomize_(PosMLPClassifier(SMALL, mixer=mixer, num_classes=5,
                                                         drop_path_rate=0.0)))
    x = torch.randn(2, 3, 90, 75)
    for training in (True, False):
        errors = autocast_errors(model, x, dtype, training)
        assert max(errors) < BOUND[dtype], (training, errors)
    model.train()
    with torch.autocast('cpu', dtype=dtype):
        loss = model(x).float().logsumexp(1).mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32, name
        assert torch.isfinite(p.grad).all(), name


def test_heavy_arithmetic_runs_in_the_autocast_dtype_and_scores_in_float32(monkeypatch):
    """Under autocast the Linear layers and the mixing products run in the low dtype (so mixed
    precision keeps its speed); GQPE's probabilities are computed in float32, rows summing to
    one, for all the blocks of a stage at once, and cast once per stage and region."""
    torch.manual_seed(3)
    model = spread_gaussians_(PosMLPClassifier(SMALL, num_classes=0, drop_path_rate=0.0))
    seen = {'mm': set(), 'stacked': [], 'matrices': [], 'casts': []}
    real_stacked, real_matrices = posmlp.stacked_mixing, GQPE.stacked_matrices

    def stacked_mixing(mixers, layout, dtype):
        out = real_stacked(mixers, layout, dtype)
        seen['stacked'].append((len(mixers), len(layout.regions), dtype, out))
        return out

    def stacked_matrices(mixers, regions):
        Ps = real_matrices(mixers, regions)
        # (and the casts so far: the ones after are those that can read these Ps' memory)
        seen['matrices'].append((len(mixers), [len(r.tokens) for r in regions], Ps,
                                 len(seen['casts'])))
        return Ps

    monkeypatch.setattr(posmlp, 'stacked_mixing', stacked_mixing)
    monkeypatch.setattr(GQPE, 'stacked_matrices', staticmethod(stacked_matrices))

    class Spy(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            # any overload (the mixing writes into a buffer: baddbmm.out)
            if func.overloadpacket in (torch.ops.aten.addmm, torch.ops.aten.baddbmm,
                                       torch.ops.aten.mm, torch.ops.aten.bmm):
                seen['mm'].add((func.overloadpacket.__name__, args[1].dtype, args[2].dtype))
            if func is torch.ops.aten._to_copy.default and kwargs.get('dtype') == torch.bfloat16:
                seen['casts'].append((args[0].data_ptr(), tuple(args[0].shape)))
            return func(*args, **kwargs)

    x = torch.randn(1, 3, 64, 64)  # maps 16x16, 8x8, 4x4, 2x2: clipped windows in every stage
    with torch.autocast('cpu', dtype=torch.bfloat16), Spy():
        model.forward_stages(x)
    # both Linears (addmm) and the mixing (baddbmm) in bfloat16; no other product
    assert seen['mm'] == {('addmm', torch.bfloat16, torch.bfloat16),
                          ('baddbmm', torch.bfloat16, torch.bfloat16)}
    # one stacked computation per stage, for all its blocks; matrices and biases in bfloat16
    depths = SMALL['depths']
    assert [(n, dtype) for n, _, dtype, _ in seen['stacked']] == [(d, torch.bfloat16)
                                                                  for d in depths]
    for n, regions, _, out in seen['stacked']:
        assert len(out) == n and all(len(block) == 2 * regions for block in out)
        assert all(t.dtype == torch.bfloat16 for block in out for t in block)
    # GQPE's probabilities in float32, rows summing to one, (blocks, groups, n, n) per region
    assert [m[0] for m in seen['matrices']] == list(depths)
    for (n, sizes, Ps, first), groups in zip(seen['matrices'], SMALL['groups']):
        assert [P.shape for P in Ps] == [(n, groups, k, k) for k in sizes]
        for P in Ps:
            assert P.dtype == torch.float32
            torch.testing.assert_close(P.sum(-1), torch.ones(P.shape[:-1]), rtol=0, atol=1e-6)
            # cast to bfloat16 once per stage and region, whole (not per block or window)
            start, end = P.data_ptr(), P.data_ptr() + P.nbytes
            casts = [shape for ptr, shape in seen['casts'][first:] if start <= ptr < end]
            assert casts == [tuple(P.shape)], casts
    assert sum(len(m[1]) for m in seen['matrices']) > len(depths)  # clipped regions seen
    gqpe = model.levels[0].encoder[0].gate_unit.pos
    with torch.autocast('cpu', dtype=torch.float16):
        P = mixer_matrices(gqpe)
    assert P.dtype == torch.float32
    torch.testing.assert_close(P.sum(-1), torch.ones(P.shape[:2]), rtol=0, atol=1e-6)
    assert (P > 0).float().mean() > 0.9  # broad Gaussians: hardly any probability flushed


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_cuda_autocast_training_step_and_evaluation(dtype):
    """On a GPU: a training step with a GradScaler and evaluation under autocast, every stage
    close to float32 on the same device."""
    torch.manual_seed(4)
    model = spread_gaussians_(PosMLPClassifier('tiny', num_classes=10, drop_path_rate=0.0)).cuda()
    x = torch.randn(2, 3, 224, 224, device='cuda')
    for training in (True, False):
        errors = autocast_errors(model, x, dtype, training)
        assert max(errors) < BOUND[dtype], (training, errors)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler('cuda', enabled=dtype == torch.float16)
    with torch.autocast('cuda', dtype=dtype):
        loss = model(x).float().logsumexp(1).mean()
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert all(torch.isfinite(p).all() for p in model.parameters())
