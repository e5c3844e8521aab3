"""torch.compile: the backbone traces as one graph (no graph break inside it) in training and
evaluation, and the traced training step gives eager's loss and gradients. Inductor's own
code generation is exercised by benchmarks/benchmark_backbones.py (the `compiled` variant;
minutes of C++ compilation on 2 cores), not here: aot_eager runs the same captured forward and backward
graphs through autograd without generating code."""
import pytest
import torch

from mmdet_posmlp.models.posmlp import PosMLPClassifier

SMALL = dict(embed_dims=(16, 32, 64, 128), depths=(2, 1, 2, 1), windows=(4, 4, 3, 2),
             groups=(2, 4, 4, 8), mlp_ratios=(4, 4, 4, 2))


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize('mixer,training,shift', [
    ('gqpe', True, False), ('gqpe', False, False), ('lrpe', True, False), ('sgu', True, False),
    ('gqpe', True, True)])
def test_backbone_traces_without_graph_breaks(mixer, training, shift):
    torch.manual_seed(0)
    model = PosMLPClassifier(SMALL, mixer=mixer, num_classes=0, shift=shift).train(training)
    x = torch.randn(2, 3, 50, 38)  # clipped windows in every stage

    def step(x):
        return sum(o.mean() for o in model.forward_stages(x))

    explanation = torch._dynamo.explain(step)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.parametrize('shift', [False, True])
def test_inference_under_no_grad_traces_as_one_graph(shift):
    """eval + no_grad, as a user compiles a model for inference (it broke once per block)."""
    model = PosMLPClassifier(SMALL, num_classes=3, shift=shift).eval()
    with torch.no_grad():
        explanation = torch._dynamo.explain(model)(torch.randn(1, 3, 50, 38))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_compiled_training_step_gives_eager_loss_and_gradients():
    torch.manual_seed(1)
    model = PosMLPClassifier(SMALL, num_classes=0, drop_path_rate=0.0).train()
    x = torch.randn(2, 3, 50, 38)

    def step(x):
        return sum(o.float().mean() for o in model.forward_stages(x))

    eager = step(x)
    eager.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert len(expected) == len(list(model.levels.parameters())) + len(list(model.patch_embed.parameters()))
    model.zero_grad(set_to_none=True)
    compiled = torch.compile(step, backend='aot_eager', fullgraph=True)(x)
    compiled.backward()
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    # atol: the stem's last conv bias feeds a training-mode BatchNorm, so its gradient is zero
    # up to rounding (1e-7 here, against 6e-2 for the largest gradient)
    for n, p in model.named_parameters():
        if n in expected:
            torch.testing.assert_close(p.grad, expected[n], rtol=1e-4, atol=1e-6, msg=n)
