"""The mmdet backbone: registry, config build, outputs, frozen stages, norm_eval, with_cp, timm."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from mmdet_posmlp.models import PosMLP
from mmdet_posmlp.analysis.complexity import count_parameters
from mmdet_posmlp.models.posmlp import PosMLPClassifier
from conftest import REPO, randomize_

SMALL = dict(embed_dims=(16, 32, 64, 128), depths=(1, 1, 2, 1), windows=(4, 4, 4, 2),
             groups=(2, 4, 8, 8), mlp_ratios=(4, 4, 4, 2))


def test_registered_in_mmdet_and_built_from_config_with_custom_imports(tmp_path):
    """A fresh interpreter: only the config's custom_imports brings the plugin in."""
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(textwrap.dedent("""
        custom_imports = dict(imports=['mmdet_posmlp'], allow_failed_imports=False)
        backbone = dict(type='PosMLP', arch='tiny', out_indices=(1, 2, 3))
    """))
    code = textwrap.dedent(f"""
        import sys, torch
        from mmengine.config import Config
        from mmdet.registry import MODELS
        assert 'mmdet_posmlp' not in sys.modules
        cfg = Config.fromfile({str(cfg)!r})
        m = MODELS.build(cfg.backbone).eval()
        outs = m(torch.randn(1, 3, 64, 96))
        print(type(m).__module__, [tuple(o.shape) for o in outs])
    """)
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, 'PYTHONPATH': REPO})
    assert r.returncode == 0, r.stderr
    assert 'mmdet_posmlp.models.backbones' in r.stdout
    assert '[(1, 192, 8, 12), (1, 384, 4, 6), (1, 768, 2, 3)]' in r.stdout


@pytest.mark.parametrize('arch,params', [('tiny', 20_155_002), ('small', 35_789_402)])
def test_backbone_parameters_are_the_classifier_minus_head_and_norm(arch, params):
    backbone = PosMLP(arch, out_norm=False)
    clf = PosMLPClassifier(arch)
    assert count_parameters(backbone) == params
    assert count_parameters(clf) - count_parameters(clf.head) - count_parameters(clf.norm) == params


@pytest.mark.parametrize('size', [(224, 224), (97, 131), (32, 32), (64, 2048), (2048, 64)])
def test_outputs_are_nchw_at_strides_4_to_32(size):
    m = PosMLP(SMALL).eval()
    with torch.no_grad():
        outs = m(torch.randn(2, 3, *size))
    h, w = size
    for i, o in enumerate(outs):
        for _ in range(i + 2):
            h, w = (h + 1) // 2, (w + 1) // 2
        assert o.shape == (2, SMALL['embed_dims'][i], h, w)
        assert torch.isfinite(o).all()
        h, w = size


def test_out_indices_and_out_norm():
    m = PosMLP(SMALL, out_indices=(1, 3)).eval()
    assert hasattr(m, 'norm1') and hasattr(m, 'norm3') and not hasattr(m, 'norm0')
    outs = m(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [32, 128]
    # the output norm normalises over channels
    with torch.no_grad():
        m.norm1.weight.fill_(1), m.norm1.bias.fill_(0)
        out = m(torch.randn(1, 3, 64, 64))[0]
    torch.testing.assert_close(out.mean(1), torch.zeros_like(out.mean(1)), atol=1e-5, rtol=0)


def test_backbone_features_equal_classifier_stage_features():
    torch.manual_seed(0)
    clf = randomize_(PosMLPClassifier(SMALL)).eval()
    bb = PosMLP(SMALL, out_norm=False).eval()
    missing = bb.model.load_state_dict(clf.state_dict(), strict=False)
    assert missing.missing_keys == [] and set(missing.unexpected_keys) == {
        'norm.weight', 'norm.bias', 'head.weight', 'head.bias'}
    x = torch.randn(1, 3, 80, 72)
    with torch.no_grad():
        for a, b in zip(bb(x), clf.forward_stages(x)):
            assert torch.equal(a, b)


def test_frozen_stages_have_no_gradients_and_stay_in_eval_mode():
    m = PosMLP(SMALL, frozen_stages=2, drop_path_rate=0.0)
    m.train()
    assert not m.model.patch_embed.training and not m.model.levels[0].training and not m.model.levels[1].training
    assert m.model.levels[2].training and m.model.levels[3].training
    stem_bn = m.model.patch_embed.norms[0]
    before = stem_bn.running_mean.clone()
    sum(o.sum() for o in m(torch.randn(2, 3, 64, 64))).backward()
    frozen = [p for mod in (m.model.patch_embed, m.model.levels[0], m.model.levels[1], m.norm0, m.norm1)
              for p in mod.parameters()]
    assert frozen and all(not p.requires_grad and p.grad is None for p in frozen)
    assert all(p.grad is not None for p in m.model.levels[2].parameters())
    assert torch.equal(stem_bn.running_mean, before)  # BN statistics untouched


def test_norm_eval_keeps_batchnorm_in_eval():
    m = PosMLP(SMALL, norm_eval=True)
    m.train()
    assert all(not bn.training for bn in m.model.patch_embed.norms)
    assert m.model.levels[0].training


def test_with_cp_gives_same_outputs_and_gradients():
    torch.manual_seed(1)
    ref = randomize_(PosMLP(SMALL, drop_path_rate=0.0)).double().train()
    cp = PosMLP(SMALL, drop_path_rate=0.0, with_cp=True).double().train()
    cp.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 70, 45, dtype=torch.float64)
    outs_ref, outs_cp = ref(x), cp(x)
    for a, b in zip(outs_ref, outs_cp):
        assert torch.equal(a, b)
    sum((o * o).sum() for o in outs_ref).backward()
    sum((o * o).sum() for o in outs_cp).backward()
    for (name, a), b in zip(ref.named_parameters(), cp.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12, msg=name)


def test_drop_path_ramps_linearly_and_trains():
    m = PosMLP('tiny', drop_path_rate=0.1)
    rates = [b.drop_path.drop_prob for s in m.model.levels for b in s.encoder]
    assert len(rates) == 24 and rates[0] == 0.0 and abs(rates[-1] - 0.1) < 1e-7
    assert all(b > a for a, b in zip(rates, rates[1:]))


@pytest.mark.parametrize('kwargs,match', [
    (dict(arch='huge'), "unknown arch 'huge'"),
    (dict(arch='tiny', out_indices=(0, 4)), 'out_indices'),
    (dict(arch='tiny', groups=7), 'groups=7'),
    (dict(arch='tiny', windows=(7, 7)), 'windows needs one value per stage'),
    (dict(arch='tiny', mixer='attention'), "unknown mixer 'attention'"),
    (dict(arch=dict(embed_dims=(8, 16)), ), 'missing keys'),
])
def test_bad_configuration_is_a_clear_error(kwargs, match):
    with pytest.raises((KeyError, ValueError), match=match):
        PosMLP(**kwargs)


@pytest.mark.parametrize('mixer', ['lrpe', 'sgu'])
@pytest.mark.parametrize('groups', [None, 1])
def test_other_mixers_and_ungrouped(mixer, groups):
    m = PosMLP(SMALL, mixer=mixer, groups=groups).eval()
    outs = m(torch.randn(1, 3, 50, 60))
    assert len(outs) == 4 and all(torch.isfinite(o).all() for o in outs)
    G = m.model.levels[2].encoder[0].gate_unit.groups
    assert G == (groups or SMALL['groups'][2])


def test_timm_models_have_the_reference_parameter_counts():
    import timm
    assert count_parameters(timm.create_model('posmlp_t')) == 20_925_538
    assert count_parameters(timm.create_model('posmlp_s')) == 36_816_450
    m = timm.create_model('posmlp_t', features_only=True, out_indices=(1, 3))
    outs = m(torch.randn(1, 3, 224, 224))
    assert [tuple(o.shape) for o in outs] == [(1, 192, 28, 28), (1, 768, 7, 7)]
    assert timm.create_model('posmlp_t', num_classes=10)(torch.randn(2, 3, 224, 224)).shape == (2, 10)
