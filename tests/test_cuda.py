"""PosMLP-T on a CUDA device: mixed-precision training steps, autocast against float32, the
deployment step (fuse) against the plain model, and GQPE's mixing matrices under TF32.

Skipped as a whole without CUDA. Needs only torch and timm (and this package), no mmcv.

800x1216 images: the stage maps (200x304, 100x152, 50x76, 25x38) are no multiple of the
windows (14, 14, 14, 7), so every stage has clipped windows at its right and bottom edges.

The matrix, chosen to stay well under 90 s on one recent GPU: the factors are the mixer
(gqpe, lrpe, sgu), shift (False, True) and with_cp (False, True); their full product (12) with
both dtypes would be 24 runs of PosMLP-T at 800x1216. Instead four combinations, each with
float16 AND bfloat16 (8 runs), where every value of every factor occurs with both dtypes:

    gqpe, shift False, with_cp False     the released configuration
    gqpe, shift True,  with_cp True      both options at once, on the default mixer
    lrpe, shift True,  with_cp False
    sgu,  shift False, with_cp True

and the deployment step (fuse) is checked in the same runs (eval; with_cp has no effect there).
"""
import copy

import pytest
import torch

from conftest import mixer_matrices, randomize_
from mmdet_posmlp.models.posmlp import GQPE, PosMLPClassifier
from test_mixed_precision import BOUND, autocast_errors, spread_gaussians_

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')

SIZE = (800, 1216)
CASES = [  # (mixer, shift, with_cp): see the module docstring
    ('gqpe', False, False),
    ('gqpe', True, True),
    ('lrpe', True, False),
    ('sgu', False, True),
]
DTYPES = [torch.float16, torch.bfloat16]
FUSED_FLOAT32_RTOL = 1e-4


def _id(case):
    mixer, shift, with_cp = case
    return f"{mixer}{'-shift' if shift else ''}{'-cp' if with_cp else ''}"


@pytest.fixture
def exact_float32():
    """float32 products in float32 (no TF32) inside the test, the previous settings after it."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def relative_errors(outs, refs):
    return [float((a.float() - b.float()).norm() / b.float().norm()) for a, b in zip(outs, refs)]


def build(mixer, shift, with_cp, seed=0):
    """Random init, then non-trivial positional parameters (as tests/test_mixed_precision.py
    does for every mixer): randomize_ moves every mixer's positional parameters, norms and
    biases off their initial values (LRPE's table and SGU's weights start at zero, which makes
    every gradient inside the blocks exactly zero at init), spread_gaussians_ gives GQPE the
    broad, off-centre Gaussians of a trained model."""
    torch.manual_seed(seed)
    model = PosMLPClassifier('tiny', num_classes=10, mixer=mixer, shift=shift, with_cp=with_cp,
                             drop_path_rate=0.0)
    return spread_gaussians_(randomize_(model, seed=seed), seed=seed).cuda()


@pytest.mark.parametrize('dtype', DTYPES, ids=['float16', 'bfloat16'])
@pytest.mark.parametrize('case', CASES, ids=_id)
def test_cuda_training_step_autocast_and_fuse(case, dtype, exact_float32):
    mixer, shift, with_cp = case
    model = build(mixer, shift, with_cp)
    x = torch.randn(2, 3, *SIZE, device='cuda', generator=torch.Generator('cuda').manual_seed(1))

    # 1. every stage under autocast close to float32, in training and evaluation mode
    for training in (True, False):
        errors = autocast_errors(model, x, dtype, training)
        assert max(errors) < BOUND[dtype], (training, errors)

    # 2. the deployment step against the plain model, in evaluation mode: float32 tight, and
    #    under autocast as close to the plain model's float32 outputs as plain autocast is
    model.eval()
    fused = copy.deepcopy(model).fuse()
    with torch.no_grad():
        plain32 = model.forward_stages(x[:1])
        fused32 = fused.forward_stages(x[:1])
        with torch.autocast('cuda', dtype=dtype):
            plain_low = model.forward_stages(x[:1])
            fused_low = fused.forward_stages(x[:1])
            logits_plain, logits_fused = model(x[:1]), fused(x[:1])
    errors = relative_errors(fused32, plain32)
    assert max(errors) < FUSED_FLOAT32_RTOL, errors
    assert max(relative_errors(fused_low, plain32)) < BOUND[dtype]
    assert max(relative_errors(fused_low, plain_low)) < 2 * BOUND[dtype]
    assert torch.isfinite(logits_fused).all()
    assert relative_errors([logits_fused], [logits_plain])[0] < 2 * BOUND[dtype]
    del fused

    # 3. one training step: AdamW, GradScaler for float16; the step must really happen
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=True)
    # init_scale 1024, not the default 65536: the default is meant to back off over the first
    # steps, since the head's gradient of this O(1) loss times 65536 overflows float16 in the
    # head's own Linear backward (seen: entries near 2e4 and inf), a skipped step that would say
    # nothing about PosMLP. 1024 leaves room for gradients up to 64 and still catches
    # overflows (inf/nan) inside the blocks' float16 backward.
    scaler = torch.amp.GradScaler('cuda', init_scale=1024.0, enabled=dtype == torch.float16)
    initial_scale = scaler.get_scale()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.autocast('cuda', dtype=dtype):
        loss = model(x).float().logsumexp(1).mean()
    assert torch.isfinite(loss), loss
    scaler.scale(loss).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.dtype == torch.float32, (name, p.grad.dtype)
        assert p.grad.any(), f'{name}: gradient exactly zero'
        assert torch.isfinite(p.grad).all(), name  # (scaled) gradients: no overflow either
    scaler.step(opt)
    scaler.update()
    if scaler.is_enabled():  # a skipped step (inf/nan found) would have halved the scale
        assert scaler.get_scale() >= initial_scale, (scaler.get_scale(), initial_scale)
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged, f'the optimizer step did not change {unchanged[:5]}'
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_cuda_gqpe_matrices_exact_under_tf32():
    """With TF32 allowed for float32 matmuls (~1e-3 relative error per product), GQPE's mixing
    matrices must still equal the float64 ones computed on the CPU to 1e-6: a score's error
    moves a probability by as much."""
    model = spread_gaussians_(PosMLPClassifier('tiny', num_classes=0))
    cpu64 = copy.deepcopy(model.levels[2].encoder[0].gate_unit.pos).double()
    assert isinstance(cpu64, GQPE)
    ref = mixer_matrices(cpu64)
    assert ref.dtype == torch.float64
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        gqpe = model.cuda().levels[2].encoder[0].gate_unit.pos
        with torch.no_grad():
            P = mixer_matrices(gqpe)
            with torch.autocast('cuda', dtype=torch.bfloat16):
                P_autocast = mixer_matrices(gqpe)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    assert P.shape == ref.shape
    err = float((P.double().cpu() - ref).abs().max())
    assert err < 1e-6, f'max |P_cuda_tf32 - P_cpu_float64| = {err:.2e}'
    err = float((P_autocast.double().cpu() - ref).abs().max())
    assert err < 1e-6, f'under autocast: max |P - P_cpu_float64| = {err:.2e}'
