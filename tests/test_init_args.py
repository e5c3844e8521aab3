"""Backbone init arguments: invalid ``pretrained`` / ``init_cfg`` raise when the backbone is built,
naming the argument (PosMLP and the family backbones, through models/init_args.py); list
init_cfgs work with 'Pretrained' applied last; the family loader uses the package's one
allowlist and leaves torch's process-wide list as it found it; a dense 'sgu' checkpoint of
another window is refused naming the key and saying why (GQPE/LRPE are resized).
"""
import argparse

import pytest
import torch
import torch.nn as nn

import mmdet_posmlp  # noqa: F401
from mmdet_posmlp.models import PosMLP
from mmdet_posmlp.models.backbones import HireMLP, S2MLP, ViP
from mmdet_posmlp.models.common import CheckpointError

SMALL = dict(embed_dims=(16, 32, 64, 128), depths=(1, 1, 1, 1), windows=(4, 4, 4, 2),
             groups=(2, 2, 4, 4), mlp_ratios=(2, 2, 2, 2))
FAMILY = {
    HireMLP: dict(embed_dims=(16, 32, 32, 64), depths=(1, 2, 1, 1)),
    ViP: dict(depths=(1, 2, 1, 1), embed_dims=(32, 64, 64, 64), segment_dim=(8, 4, 4, 4),
              transitions=(True, False, False, False)),
    S2MLP: dict(patch_size=16, embed_dim=32, depth=3, mlp_ratio=2.),
}
S2MLP_OUT = dict(out_indices=(1, 2))

BAD_INIT_ARGS = [
    (dict(pretrained=3), TypeError, r'pretrained must be a checkpoint path \(str\) or None'),
    (dict(pretrained=['a.pth']), TypeError, 'pretrained'),
    (dict(pretrained=''), ValueError, 'pretrained is an empty string'),
    (dict(init_cfg='a.pth'), TypeError, 'init_cfg must be a dict, a list of dicts or None'),
    (dict(init_cfg=('a',)), TypeError, 'init_cfg must be'),
    (dict(init_cfg=dict(type='Pretrained')), ValueError,
     r"init_cfg of type 'Pretrained' needs checkpoint="),
    (dict(init_cfg=dict(type='Pretrained', checkpoint=None)), TypeError,
     r"init_cfg\['checkpoint'\] must be a path or URL \(str\), got NoneType"),
    (dict(init_cfg=dict(type='Pretrained', checkpoint=7)), TypeError,
     r"init_cfg\['checkpoint'\] must be a path"),
    (dict(init_cfg=dict(type='Pretrianed', checkpoint='a.pth')), ValueError,
     "init_cfg has an unknown type 'Pretrianed'"),
    (dict(init_cfg=dict(checkpoint='a.pth')), ValueError, "init_cfg has no 'type'"),
    (dict(pretrained='a.pth', init_cfg=dict(type='Pretrained', checkpoint='b.pth')),
     ValueError, 'pretrained and init_cfg cannot both be set'),
    (dict(init_cfg=[dict(type='Kaiming', layer='Conv2d'), 'a.pth']), TypeError,
     r'init_cfg\[1\] must be a dict'),
    (dict(init_cfg=[dict(type='Kaiming', layer='Conv2d'), dict(type='Kaimnig')]), ValueError,
     r"init_cfg\[1\] has an unknown type 'Kaimnig'"),
    (dict(init_cfg=[dict(type='Pretrained', checkpoint='a.pth'),
                    dict(type='Pretrained', checkpoint='b.pth')]), ValueError,
     "more than one 'Pretrained'"),
]


@pytest.mark.parametrize('kwargs,error,match', BAD_INIT_ARGS)
def test_posmlp_bad_init_args_raise_at_build(kwargs, error, match):
    with pytest.raises(error, match=r'^PosMLP: .*' + match):
        PosMLP(SMALL, **kwargs)


@pytest.mark.parametrize('kwargs,error,match', BAD_INIT_ARGS)
@pytest.mark.parametrize('cls', list(FAMILY), ids=lambda c: c.__name__)
def test_family_bad_init_args_raise_at_build(cls, kwargs, error, match):
    with pytest.raises(error, match=rf'^{cls.__name__}: .*' + match):
        cls(FAMILY[cls], **kwargs)


def test_good_init_cfgs_build_and_initialise():
    for init_cfg in (None, dict(type='Kaiming', layer='Conv2d'), []):
        PosMLP(SMALL, init_cfg=init_cfg).init_weights()
    model = PosMLP(SMALL, init_cfg=[dict(type='Constant', layer='LayerNorm', val=0.5)])
    model.init_weights()
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert norms and all(torch.all(m.weight == 0.5) for m in norms)
    hire = HireMLP(FAMILY[HireMLP], init_cfg=[dict(type='Constant', layer='Conv2d', val=0.25,
                                                   bias=0.0)])
    hire.init_weights()
    convs = [m for m in hire.modules() if isinstance(m, nn.Conv2d)]  # Hire-MLP's FCs are 1x1
    assert convs and all(torch.all(m.weight == 0.25) for m in convs)
    # a registered initializer class is a valid type too
    from mmengine.model.weight_init import KaimingInit
    PosMLP(SMALL, init_cfg=dict(type=KaimingInit, layer='Conv2d')).init_weights()


def test_posmlp_list_init_cfg_applies_pretrained_last(tmp_path):
    """[Constant on LayerNorm, Pretrained]: the checkpoint's values win where it has them,
    the Constant initializer ran (the output norms the checkpoint lacks keep it)."""
    torch.manual_seed(0)
    source = PosMLP(SMALL, out_indices=(0, 1, 2, 3))
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    path = str(tmp_path / 'backbone.pth')
    sd = {k: v for k, v in source.state_dict().items() if not k.startswith('norm0.')}
    torch.save({'state_dict': sd}, path)
    model = PosMLP(SMALL, init_cfg=[dict(type='Constant', layer='LayerNorm', val=0.5, bias=0.0),
                                    dict(type='Pretrained', checkpoint=path)])
    model.init_weights()
    got = model.state_dict()
    for key, value in sd.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)
    assert torch.all(model.norm0.weight == 0.5) and torch.all(model.norm0.bias == 0)


def test_pretrained_string_is_an_init_cfg(tmp_path):
    path = str(tmp_path / 'x.pth')
    assert PosMLP(SMALL, pretrained=path).init_cfg == dict(type='Pretrained', checkpoint=path)
    assert S2MLP(FAMILY[S2MLP], pretrained=path, **S2MLP_OUT).init_cfg == \
        dict(type='Pretrained', checkpoint=path)


# ----------------------------------------------------------------- family: one allowlist

def test_family_loader_uses_the_one_allowlist_and_keeps_torch_list(tmp_path):
    """An official checkpoint with its argparse.Namespace 'args' loads under weights_only, and
    a plain argparse.Namespace entry that someone else put on torch's process-wide allowlist
    is still there afterwards (torch's safe_globals context removes on exit what it was given:
    the family loader's own [argparse.Namespace] list took it away)."""
    classifier = HireMLP.classifier_cls(num_classes=3, **FAMILY[HireMLP])
    path = str(tmp_path / 'official.pth')
    torch.save({'model': classifier.state_dict(), 'epoch': 299,
                'args': argparse.Namespace(model='hire_mlp_tiny')}, path)
    saved = torch.serialization.get_safe_globals()
    torch.serialization.add_safe_globals([argparse.Namespace])
    try:
        before = torch.serialization.get_safe_globals()
        model = HireMLP(FAMILY[HireMLP], init_cfg=dict(type='Pretrained', checkpoint=path))
        model.init_weights()
        assert model.is_init
        after = torch.serialization.get_safe_globals()
        assert argparse.Namespace in after
        assert set(map(repr, after)) == set(map(repr, before))
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(saved)
    # mmdet_posmlp's own registration is untouched
    assert (argparse.Namespace, 'argparse.Namespace') in torch.serialization.get_safe_globals()



def test_family_loader_still_refuses_other_globals(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ('unpickled',))

    path = str(tmp_path / 'evil.pth')
    torch.save({'model': {}, 'x': Payload()}, path)
    with pytest.raises(CheckpointError, match="HireMLP: .*evil.pth' holds objects that safe"):
        HireMLP(FAMILY[HireMLP], init_cfg=dict(type='Pretrained', checkpoint=path)).init_weights()


# ----------------------------------------------------------------- windows of another size

def _checkpoint(mixer, windows, path):
    torch.manual_seed(0)
    model = PosMLP(dict(SMALL, windows=windows), mixer=mixer)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    torch.save({'state_dict': model.state_dict()}, path)
    return model


def test_sgu_checkpoint_of_another_window_names_the_key_and_why(tmp_path):
    path = str(tmp_path / 'sgu_w4.pth')
    _checkpoint('sgu', (4, 4, 4, 2), path)
    model = PosMLP(SMALL, mixer='sgu', windows=(4, 3, 4, 2),
                   init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(CheckpointError) as info:
        model.init_weights()
    message = str(info.value)
    assert path in message
    assert ('levels.1.encoder.0.gate_unit.pos.token_proj_n_weight: checkpoint (2, 16, 16) '
            '(4x4 windows) vs model (2, 9, 9) (3x3 windows)') in message
    assert 'levels.0.' not in message and 'levels.2.' not in message  # only the stage that differs
    assert 'cannot be resized' in message and 'absolute positions' in message
    assert 'windows=' in message  # what to do instead
    assert 'different PosMLP variant' not in message

    # the same window loads, every tensor as saved
    model = PosMLP(SMALL, mixer='sgu', init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    saved = torch.load(path, weights_only=True)['state_dict']
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0, msg=key)


def test_sgu_window_error_does_not_hide_another_variant(tmp_path):
    """A checkpoint that differs in width as well is reported as another variant, counting the
    sgu matrices among the tensors that disagree."""
    path = str(tmp_path / 'sgu_wide.pth')
    model = PosMLP(dict(SMALL, embed_dims=(16, 32, 64, 256), windows=(4, 4, 4, 3)), mixer='sgu')
    torch.save({'state_dict': model.state_dict()}, path)
    with pytest.raises(CheckpointError, match='different PosMLP variant') as info:
        PosMLP(SMALL, mixer='sgu', init_cfg=dict(type='Pretrained', checkpoint=path)) \
            .init_weights()
    # stage 3's 10 width-dependent tensors and its sgu matrix (the classifier's final norm,
    # which the backbone's last output norm takes, is compared after the filter)
    assert '11 tensors disagree' in str(info.value) and 'cannot be resized' not in str(info.value)


@pytest.mark.parametrize('mixer', ['gqpe', 'lrpe'])
def test_positional_mixers_resize_to_another_window(mixer, tmp_path):
    path = str(tmp_path / f'{mixer}.pth')
    _checkpoint(mixer, (4, 4, 4, 2), path)
    model = PosMLP(SMALL, mixer=mixer, windows=(4, 3, 4, 2),
                   init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    assert model.model.levels[1].encoder[0].gate_unit.pos.token_proj_n_bias.shape == (1, 9, 1)
    with torch.no_grad():
        outs = model.eval()(torch.randn(1, 3, 64, 48))
    assert all(torch.isfinite(o).all() for o in outs)
