"""ImageNet weights into the backbone: reference checkpoints, timm state dicts, converted
backbone checkpoints, window resizing, safe unpickling, and clear errors."""
import argparse
import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

from mmdet_posmlp.models.common import CheckpointError
from mmdet_posmlp.safe_load import load_checkpoint_file
from mmdet_posmlp.models import PosMLP
from mmdet_posmlp.models.posmlp import PosMLPClassifier
from conftest import REPO, randomize_, reference_checkpoint


@pytest.fixture(scope='module')
def tiny_weights(tmp_path_factory):
    """A PosMLP-T classifier with non-trivial weights, and its reference-layout checkpoint."""
    torch.manual_seed(0)
    clf = randomize_(PosMLPClassifier('tiny')).eval()
    ckpt = reference_checkpoint(clf)
    path = tmp_path_factory.mktemp('ckpt') / 'posmlp_t_reference.pth.tar'
    torch.save(ckpt, path)
    return clf, str(path)


def _pretrained(path, **kwargs):
    m = PosMLP('tiny', init_cfg=dict(type='Pretrained', checkpoint=path), **kwargs)
    m.init_weights()
    return m.eval()


def test_reference_checkpoint_has_the_reference_layout(tiny_weights):
    _, path = tiny_weights
    ckpt = load_checkpoint_file(path)  # weights_only loading, Namespace allowed
    assert len(ckpt['state_dict_ema']) == 277
    assert isinstance(ckpt['args'], argparse.Namespace)


def test_reference_checkpoint_loads_with_no_missing_key_and_same_features(tiny_weights):
    clf, path = tiny_weights
    bb = PosMLP('tiny', out_norm=False, init_cfg=dict(type='Pretrained', checkpoint=path))
    report = bb.load_pretrained(path)
    assert report['missing'] == [] and report['unexpected'] == []
    assert report['source'] == ['state_dict_ema']
    bb.eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        for a, b in zip(bb(x), clf.forward_stages(x)):
            assert torch.equal(a, b)


def test_final_norm_becomes_the_last_output_norm(tiny_weights):
    clf, path = tiny_weights
    bb = _pretrained(path)
    assert torch.equal(bb.norm3.weight, clf.norm.weight)
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        assert torch.allclose(bb(x)[3], clf.forward_features(x), atol=1e-6)


def test_timm_state_dict_and_converted_checkpoint_load_the_same(tiny_weights, tmp_path):
    import timm
    clf, path = tiny_weights
    timm_path = tmp_path / 'timm.pth'
    model = timm.create_model('posmlp_t', pretrained=True, pretrained_cfg_overlay=dict(file=path))
    torch.save(model.state_dict(), timm_path)
    converted = tmp_path / 'backbone.pth'
    r = subprocess.run([sys.executable, os.path.join(REPO, 'tools/model_converters/convert_posmlp_checkpoint.py'),
                        path, str(converted)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout[r.stdout.index('{\n'):r.stdout.rindex('}') + 1])
    assert sorted(report['missing']) == [f'norm{i}.{p}' for i in range(3) for p in ('bias', 'weight')]
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        outs = [_pretrained(p)(x) for p in (path, str(timm_path), str(converted))]
    for variant in outs[1:]:
        for a, b in zip(outs[0], variant):
            assert torch.equal(a, b)


def test_other_window_resizes_window_dependent_parameters(tiny_weights):
    clf, path = tiny_weights
    bb = _pretrained(path, windows=(7, 7, 7, 7))
    bias = bb.model.levels[0].encoder[0].gate_unit.pos.token_proj_n_bias
    assert bias.shape == (1, 49, 1)
    src = clf.levels[0].encoder[0].gate_unit.pos.token_proj_n_bias.view(1, 1, 14, 14)
    expected = torch.nn.functional.interpolate(src, size=(7, 7), mode='bicubic').view(1, 49, 1)
    torch.testing.assert_close(bias, expected)
    centers = bb.model.levels[2].encoder[5].gate_unit.pos.attention_centers
    assert torch.equal(centers, clf.levels[2].encoder[5].gate_unit.pos.attention_centers)
    with torch.no_grad():
        assert all(torch.isfinite(o).all() for o in bb(torch.randn(1, 3, 100, 100)))


def test_lrpe_table_is_resized_bicubically(tmp_path):
    torch.manual_seed(1)
    clf = randomize_(PosMLPClassifier('tiny', mixer='lrpe'))
    path = tmp_path / 'lrpe.pth'
    torch.save(reference_checkpoint(clf), path)
    bb = PosMLP('tiny', mixer='lrpe', windows=(7, 7, 7, 7),
                init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    bb.init_weights()
    table = bb.model.levels[1].encoder[1].gate_unit.pos.window_relative_position_bias_table
    src = clf.levels[1].encoder[1].gate_unit.pos.window_relative_position_bias_table
    assert table.shape == (13 * 13, 16)
    grid = src.t().reshape(1, 16, 27, 27)
    expected = torch.nn.functional.interpolate(grid, size=(13, 13), mode='bicubic')
    torch.testing.assert_close(table, expected.reshape(16, 169).t())


def test_missing_file_is_a_clear_error():
    with pytest.raises(CheckpointError, match=r"not found: 'checkpoints/nope\.pth'"):
        _pretrained('checkpoints/nope.pth')


def test_truncated_file_is_a_clear_error(tiny_weights, tmp_path):
    _, path = tiny_weights
    cut = tmp_path / 'cut.pth'
    data = open(path, 'rb').read()
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint '{cut}'.*truncated"):
        _pretrained(str(cut))


def test_other_variant_names_keys_and_shapes(tmp_path):
    path = tmp_path / 'small.pth'
    torch.save(reference_checkpoint(PosMLPClassifier('small')), path)
    with pytest.raises(CheckpointError) as e:
        _pretrained(str(path))
    msg = str(e.value)
    assert 'different PosMLP variant' in msg and 'embed_dims (128, 256, 512, 1024)' in msg
    assert 'patch_embed.projs.0.weight: checkpoint (64, 3, 3, 3) vs model (48, 3, 3, 3)' in msg


def test_other_model_is_a_clear_error(tmp_path):
    path = tmp_path / 'resnet.pth'
    torch.save({'state_dict': torch.nn.Conv2d(3, 8, 3).state_dict()}, path)
    with pytest.raises(CheckpointError, match='not a PosMLP checkpoint'):
        _pretrained(str(path))


class _Payload:
    def __reduce__(self):
        return (os.system, ('echo pwned',))


def test_safe_loading_still_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'args': _Payload()}, path)
    with pytest.raises(CheckpointError, match='safe loading refuses'):
        load_checkpoint_file(str(path))
    # one allowlist (mmdet_posmlp/safe_load.py, applied on import): the reference checkpoints'
    # Namespace loads with plain torch.load too (timm's and mmengine's loaders), nothing more
    ns = tmp_path / 'ns.pth'
    torch.save({'args': argparse.Namespace(a=1)}, ns)
    assert torch.load(ns, weights_only=True)['args'] == argparse.Namespace(a=1)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
