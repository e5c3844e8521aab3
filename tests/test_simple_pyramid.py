"""SimpleFeaturePyramid: shapes for odd sizes, outputs, strides, registry build, gradients."""
import math

import pytest
import torch

from mmdet.registry import MODELS

from mmdet_posmlp.models.simple_pyramid import LayerNorm2d, SimpleFeaturePyramid


def expected_size(n, factor):
    return int(n * factor) if factor >= 1 else math.ceil(n * factor - 1e-9)


@pytest.mark.parametrize('size', [(7, 11), (5, 3), (1, 1), (16, 12)])
@pytest.mark.parametrize('factors', [(2.0, 1.0, 0.5, 0.25), (4.0, 2.0, 1.0, 0.5)])
def test_shapes_for_odd_sizes(size, factors):
    neck = SimpleFeaturePyramid(in_channels=[32, 64], out_channels=16, scale_factors=factors)
    x = torch.randn(2, 64, *size)
    outs = neck([torch.randn(2, 32, 3, 3), x])  # only the last map is used
    assert isinstance(outs, tuple) and len(outs) == 4
    for out, f in zip(outs, factors):
        assert out.shape == (2, 16, expected_size(size[0], f), expected_size(size[1], f))
        assert torch.isfinite(out).all()


def test_extra_outputs_and_strides():
    neck = SimpleFeaturePyramid(in_channels=384, out_channels=8, num_outs=5)
    outs = neck(torch.randn(1, 384, 9, 13))
    sizes = [tuple(o.shape[2:]) for o in outs]
    assert sizes == [(18, 26), (9, 13), (5, 7), (3, 4), (2, 2)]
    # the P6 level is a stride-2 subsampling of the previous output
    torch.testing.assert_close(outs[4], outs[3][:, :, ::2, ::2])
    assert neck.strides(14) == [7, 14, 28, 56, 112]
    assert SimpleFeaturePyramid(768, 8, (4.0, 2.0, 1.0, 0.5)).strides(16) == [4, 8, 16, 32]


def test_x1_branch_is_convs_on_the_input_and_x05_is_maxpool():
    torch.manual_seed(0)
    neck = SimpleFeaturePyramid(in_channels=8, out_channels=4, scale_factors=(1.0, 0.5)).eval()
    x = torch.randn(1, 8, 5, 7)
    b = neck.branches[0]
    ref = b.output_norm(b.output_conv(b.lateral_norm(b.lateral_conv(x))))
    torch.testing.assert_close(neck(x)[0], ref)
    pooled = torch.nn.functional.max_pool2d(x, 2, 2, ceil_mode=True)
    b = neck.branches[1]
    torch.testing.assert_close(
        neck(x)[1], b.output_norm(b.output_conv(b.lateral_norm(b.lateral_conv(pooled)))))
    assert pooled.shape[2:] == (3, 4)
    assert pooled[0, :, 2, 3].equal(x[0, :, 4, 6])  # the odd last row/column survives


def test_layernorm2d_normalizes_channels():
    norm = LayerNorm2d(6)
    assert isinstance(norm, torch.nn.LayerNorm)  # what optimizer rules by type recognise
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64)
    ref = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (6,), norm.weight.double(),
                                         norm.bias.double(), 1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm.double()(x), ref)


def test_registry_build_from_config():
    cfg = dict(type='SimpleFeaturePyramid', in_channels=[192, 384, 384, 384], out_channels=32,
               scale_factors=(2, 1, 0.5, 0.25), num_outs=5,
               norm_cfg=dict(type='GN', num_groups=8, requires_grad=True))
    neck = MODELS.build(cfg)
    assert isinstance(neck, SimpleFeaturePyramid)
    assert isinstance(neck.branches[0].lateral_norm, torch.nn.GroupNorm)
    neck.init_weights()
    outs = neck((torch.randn(1, 384, 6, 10),))
    assert len(outs) == 5 and outs[0].shape == (1, 32, 12, 20)
    default = MODELS.build(dict(type='SimpleFeaturePyramid', in_channels=64, out_channels=16))
    assert isinstance(default.branches[0].lateral_norm, LayerNorm2d)


def test_bad_arguments():
    with pytest.raises(ValueError, match='scale factor'):
        SimpleFeaturePyramid(64, 16, scale_factors=(3.0,))
    with pytest.raises(ValueError, match='num_outs'):
        SimpleFeaturePyramid(64, 16, scale_factors=(1.0, 0.5), num_outs=1)
    neck = SimpleFeaturePyramid(64, 16)
    with pytest.raises(ValueError, match='channels'):
        neck(torch.randn(1, 32, 4, 4))


def test_gradients_flow_to_every_parameter_and_the_input():
    neck = SimpleFeaturePyramid(in_channels=32, out_channels=8,
                                scale_factors=(4.0, 2.0, 1.0, 0.5, 0.25), num_outs=6)
    x = torch.randn(2, 32, 7, 9, requires_grad=True)
    outs = neck(x)
    sum(o.square().mean() for o in outs).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in neck.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
