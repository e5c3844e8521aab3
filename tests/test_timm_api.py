"""timm's model API for posmlp_t / posmlp_s / posmlp_b (mmdet_posmlp/models/posmlp.py): the
checks timm's own tests/test_models.py applies to every model (default cfg and head_hidden_size,
forward / backward, features_only, forward_intermediates, grad checkpointing), plus the parts
of the API those tests leave to each model: prune_intermediate_layers, group_matcher,
no_weight_decay with timm's optimizer factory, reset_classifier / global_pool, img_size, and
what torchscript and FX do."""
import copy
import math
import os.path as osp
import runpy
import warnings

import pytest
import torch
import torch.nn as nn

timm = pytest.importorskip('timm')

from timm.models import create_feature_extractor, group_parameters  # noqa: E402
from timm.models._features import FeatureGetterNet  # noqa: E402
from timm.optim import create_optimizer_v2  # noqa: E402

from mmdet_posmlp.models import PosMLP  # noqa: E402  (importing the package registers posmlp_*)
from mmdet_posmlp.models.posmlp import ARCH_SETTINGS, PosMLPClassifier  # noqa: E402
from conftest import REPO, randomize_  # noqa: E402

NAMES = {'posmlp_t': 'tiny', 'posmlp_s': 'small', 'posmlp_b': 'base'}
SMALL = dict(embed_dims=(16, 32, 64, 128), depths=(1, 1, 2, 1), windows=(4, 4, 4, 2),
             groups=(2, 4, 8, 8), mlp_ratios=(4, 4, 4, 2))
POSITIONAL = ('attention_centers', 'attention_spreads', 'token_proj_n_bias',
              'window_relative_position_bias_table', 'token_proj_n_weight')

_built = {}


def fresh(name: str, **kwargs) -> nn.Module:
    """timm.create_model(name); without kwargs built once and deep-copied (posmlp_b: seconds)."""
    if kwargs:
        return timm.create_model(name, **kwargs)
    if name not in _built:
        _built[name] = timm.create_model(name)
    return copy.deepcopy(_built[name])


@pytest.fixture(scope='module')
def tiny():
    """posmlp_t with non-trivial weights, eval mode."""
    torch.manual_seed(0)
    return randomize_(timm.create_model('posmlp_t')).eval()


def _map_size(n: int, stage: int) -> int:
    for _ in range(stage + 2):
        n = (n + 1) // 2
    return n


# ---- registration and default cfg (timm: test_model_default_cfgs) ---------------------------

@pytest.mark.parametrize('name', NAMES)
def test_default_cfg_and_head_hidden_size(name):
    model = fresh(name).eval()
    widths = ARCH_SETTINGS[NAMES[name]]['embed_dims']
    assert model.num_classes == 1000
    assert model.num_features == model.head_hidden_size == widths[-1]
    cfg = model.pretrained_cfg
    for key in ('url', 'num_classes', 'input_size', 'pool_size', 'crop_pct', 'interpolation',
                'mean', 'std', 'first_conv', 'classifier', 'fixed_input_size'):
        assert key in cfg, key
    state_dict = model.state_dict()
    assert cfg['classifier'] + '.weight' in state_dict
    assert cfg['first_conv'] + '.weight' in state_dict
    modules = dict(model.named_modules())
    assert modules[cfg['classifier']] is model.get_classifier()
    assert modules[cfg['first_conv']].in_channels == cfg['input_size'][0]
    assert [(f['num_chs'], f['reduction'], f['module']) for f in model.feature_info] == [
        (w, 4 * 2 ** i, f'levels.{i}') for i, w in enumerate(widths)]

    x = torch.randn(1, *cfg['input_size'])
    small = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        feats = model.forward_features(x)  # unpooled, pool_size at the default input size
        pre = model.forward_head(feats, pre_logits=True)
        assert feats.shape[1] == model.num_features and tuple(feats.shape[2:]) == cfg['pool_size']
        assert pre.shape == (1, model.head_hidden_size)

        model.reset_classifier(0)
        assert model.num_classes == 0 and isinstance(model.get_classifier(), nn.Identity)
        out = model(small)
        assert out.shape == pre.shape == (1, model.head_hidden_size)
        torch.testing.assert_close(out, model.forward_features(small).mean((2, 3)))

        model.reset_classifier(0, '')
        assert model(small).shape == (1, model.num_features, 2, 3)
        if name == 'posmlp_t':  # the same constructor for all three: built once
            direct = timm.create_model(name, num_classes=0, global_pool='').eval()
            assert direct(small).shape == (1, model.num_features, 2, 3)


# ---- forward and backward (timm: test_model_forward / test_model_backward) ------------------

@pytest.mark.parametrize('name,size', [('posmlp_t', (224, 224)), ('posmlp_t', (96, 128)),
                                       ('posmlp_s', (64, 96)), ('posmlp_b', (64, 96))])
def test_forward_backward(name, size):
    model = fresh(name, num_classes=42).train()
    params = dict(model.named_parameters())
    outputs = model(torch.randn(2, 3, *size))
    assert outputs.shape == (2, 42) and torch.isfinite(outputs).all()
    outputs.mean().backward()
    for n, p in params.items():
        assert p.grad is not None, f'no gradient for {n}'
        assert torch.isfinite(p.grad).all(), n
    with torch.no_grad():
        assert torch.isfinite(model.eval()(torch.randn(1, 3, *size))).all()


# ---- features_only (timm: test_model_forward_features / ..._intermediates_features) ---------

@pytest.mark.parametrize('name', NAMES)
def test_features_only_getter(name):
    model = fresh(name, features_only=True, out_indices=(1, 3)).eval()
    widths = ARCH_SETTINGS[NAMES[name]]['embed_dims']
    assert isinstance(model, FeatureGetterNet)
    assert model.feature_info.channels() == [widths[1], widths[3]]
    assert model.feature_info.reduction() == [8, 32]
    h, w = 70, 45
    with torch.no_grad():
        outs = model(torch.randn(1, 3, h, w))
    assert len(outs) == 2
    for o, c, r, stage in zip(outs, (widths[1], widths[3]), (8, 32), (1, 3)):
        assert o.shape == (1, c, _map_size(h, stage), _map_size(w, stage))
        assert o.shape[2] <= math.ceil(h / r) + 1 and o.shape[3] <= math.ceil(w / r) + 1
        assert torch.isfinite(o).all()


def test_features_only_equals_the_mmdet_backbone(tiny):
    """Feature maps against the independent mmdet backbone loaded with the same weights; stages
    after the last index are pruned, the norm and head are gone, the names are kept."""
    weights = tiny.state_dict()
    backbone = PosMLP('tiny', out_indices=(0, 1, 2, 3), out_norm=False).eval()
    result = backbone.model.load_state_dict(weights, strict=False)
    assert not result.missing_keys
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ref = backbone(x)
    for out_indices in [(0, 1), (1, 3), (-1,)]:
        model = timm.create_model('posmlp_t', features_only=True, out_indices=out_indices).eval()
        result = model.model.load_state_dict(weights, strict=False)
        kept = [i % 4 for i in out_indices]
        assert not result.missing_keys
        dropped = {'.'.join(k.split('.')[:2 if k.startswith('levels.') else 1])
                   for k in result.unexpected_keys}
        assert dropped == {'head', 'norm'} | {f'levels.{i}' for i in range(max(kept) + 1, 4)}
        assert len(model.model.levels) == max(kept) + 1
        assert isinstance(model.model.norm, nn.Identity)
        with torch.no_grad():
            outs = model(x)
        assert len(outs) == len(kept)
        for o, i in zip(outs, kept):
            torch.testing.assert_close(o, ref[i])


# ---- forward_intermediates (timm: test_model_forward_intermediates) -------------------------

def test_forward_intermediates(tiny):
    weights = tiny.state_dict()
    backbone = PosMLP('tiny', out_indices=(0, 1, 2, 3), out_norm=False).eval()
    backbone.model.load_state_dict(weights, strict=False)
    x = torch.randn(2, 3, 70, 45)
    with torch.no_grad():
        ref = backbone(x)
        final, inter = tiny.forward_intermediates(x)
        feats = tiny.forward_features(x)
        assert torch.equal(final, feats)
        assert len(inter) == 4
        for o, r, info in zip(inter, ref, tiny.feature_info):
            assert o.shape[1] == info['num_chs']
            torch.testing.assert_close(o, r)
        stages = tiny.forward_stages(x)
        assert all(torch.equal(a, b) for a, b in zip(stages, inter))
        normed_last = tiny.norm(inter[3])  # LayerNorm2d: over the channels of the NCHW map
        torch.testing.assert_close(feats, normed_last)

        last2 = tiny.forward_intermediates(x, indices=2, intermediates_only=True)
        assert isinstance(last2, list) and len(last2) == 2
        assert torch.equal(last2[0], inter[2]) and torch.equal(last2[1], inter[3])
        picked = tiny.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
        assert torch.equal(picked[0], inter[0]) and torch.equal(picked[1], inter[3])

        # norm: only the last stage's output is normalised (the norm is sized for it)
        normed = tiny.forward_intermediates(x, indices=[1, 3], norm=True, intermediates_only=True)
        assert torch.equal(normed[0], inter[1]) and torch.equal(normed[1], final)

        # NHWC, contiguous; with norm the last is forward_features's map, channels last
        nhwc = tiny.forward_intermediates(x, indices=[0, 3], output_fmt='NHWC', norm=True,
                                          intermediates_only=True)
        assert nhwc[0].is_contiguous()
        assert torch.equal(nhwc[0], inter[0].permute(0, 2, 3, 1))
        torch.testing.assert_close(nhwc[1], final.permute(0, 2, 3, 1))

        # stop_early: the stages after the last index do not run; the output is that stage's
        calls = []
        hooks = [s.register_forward_hook(lambda m, i, o, k=k: calls.append(k))
                 for k, s in enumerate(tiny.levels)]
        try:
            early, sel = tiny.forward_intermediates(x, indices=[1], stop_early=True)
            assert calls == [0, 1]
            calls.clear()
            tiny.forward_intermediates(x, indices=[1])
            assert calls == [0, 1, 2, 3]
        finally:
            for h in hooks:
                h.remove()
        assert torch.equal(early, inter[1]) and len(sel) == 1 and torch.equal(sel[0], inter[1])

    with pytest.raises(ValueError, match='output_fmt'):
        tiny.forward_intermediates(x, output_fmt='NLC')
    with pytest.raises(AssertionError):
        tiny.forward_intermediates(x, indices=[4])
    with pytest.raises(AssertionError):
        tiny.forward_intermediates(x, indices=5)


# ---- grad checkpointing ---------------------------------------------------------------------

def grad_checkpointing_check(model, x, block, index):
    """The same outputs, intermediates (stage `index`) and gradients without and with grad
    checkpointing, from the same state; with it `block` runs again during backward."""
    state = copy.deepcopy(model.state_dict())
    runs = []
    for enable in (False, True):
        model.load_state_dict(state)  # BatchNorm statistics as before the other run
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        calls = []
        # a pre-hook: the recomputation stops once it has what backward needs (torch's early
        # stop), before a forward hook would fire
        hook = model.get_submodule(block).register_forward_pre_hook(lambda *a: calls.append(1))
        out = model(x)
        out.square().sum().backward()
        inter = model.forward_intermediates(x, indices=[index], intermediates_only=True)[0]
        inter.sum().backward()
        hook.remove()
        runs.append((out.detach(), inter.detach(),
                     {n: p.grad.clone() for n, p in model.named_parameters()}, len(calls)))
    (o0, i0, g0, c0), (o1, i1, g1, c1) = runs
    assert (c0, c1) == (2, 4)  # forward and intermediates, each recomputed once in backward
    torch.testing.assert_close(o1, o0, rtol=0, atol=0)
    torch.testing.assert_close(i1, i0, rtol=0, atol=0)
    assert g0.keys() == g1.keys()
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-5, atol=1e-6, msg=n)


def test_set_grad_checkpointing_same_outputs_and_gradients():
    torch.manual_seed(1)
    model = randomize_(timm.create_model('posmlp_t', num_classes=5, drop_path_rate=0.0)).train()
    x = torch.randn(2, 3, 64, 80)
    grad_checkpointing_check(model, x, 'levels.2.encoder.0', 2)
    assert model.grad_checkpointing and all(stage.with_cp for stage in model.levels)
    model.set_grad_checkpointing(False)
    assert not model.grad_checkpointing and not any(stage.with_cp for stage in model.levels)
    # timm: forward_intermediates with checkpointing gives the same features
    model.eval()
    with torch.no_grad():
        final, _ = model.forward_intermediates(x)
        model.set_grad_checkpointing(True)
        final_cp, _ = model.forward_intermediates(x)
    torch.testing.assert_close(final_cp, final)


# ---- group_matcher --------------------------------------------------------------------------

def group_matcher_check(model, stages: str):
    """Coarse and fine, group_matcher's groups hold every parameter once, from the stem (first)
    through the stages `stages`.0, .1, ... in order to the head (last)."""
    names = [n for n, _ in model.named_parameters()]
    for coarse in (False, True):
        groups = group_parameters(model, model.group_matcher(coarse=coarse))
        order = [n for g in groups.values() for n in g]
        assert sorted(order) == sorted(names)  # every parameter, once
        assert all(n.startswith('patch_embed.') for n in groups[0])
        first = [min(order.index(n) for n in names if n.startswith(f'{stages}.{i}.'))
                 for i in range(len(model.get_submodule(stages)))]
        assert first == sorted(first)
        assert set(groups[len(groups) - 1]) >= {'head.weight', 'head.bias'}


def test_group_matcher_of_the_published_arch():
    """The sweep checks every family's small model; here posmlp_t: a stage's downsampling
    joins its first block, the final norm the last block; coarse: stem, stages, head."""
    model = fresh('posmlp_t')
    fine = group_parameters(model, model.group_matcher())
    assert len(fine) == 1 + sum(ARCH_SETTINGS['tiny']['depths']) + 1  # stem, blocks, head
    by_name = {n: gid for gid, g in fine.items() for n in g}
    assert by_name['levels.1.pool.conv.weight'] == by_name['levels.1.encoder.0.norm.weight']
    assert by_name['norm.weight'] == by_name['levels.3.encoder.1.norm.weight']
    assert len(group_parameters(model, model.group_matcher(coarse=True))) == 1 + 4 + 1


# ---- no_weight_decay and timm's optimizer factory -------------------------------------------

def _recipe_exempt(model: nn.Module) -> set:
    """The parameters the mmdet recipe exempts by custom key (mmengine matches substrings)."""
    recipe = runpy.run_path(osp.join(REPO, 'configs', '_posmlp_det_recipe.py'))
    keys = [k for k, v in recipe['optim_wrapper']['paramwise_cfg']['custom_keys'].items()
            if v.get('decay_mult') == 0.0]
    return {n for n, _ in model.named_parameters() if any(k in n for k in keys)}


@pytest.mark.parametrize('mixer', ['gqpe', 'lrpe', 'sgu'])
def test_no_weight_decay_names_the_positional_parameters(mixer):
    model = fresh('posmlp_t') if mixer == 'gqpe' else PosMLPClassifier(SMALL, mixer=mixer)
    params = dict(model.named_parameters())
    nwd = model.no_weight_decay()
    assert nwd and nwd <= set(params)
    assert nwd == {n for n in params if n.rsplit('.', 1)[-1] in POSITIONAL}
    assert nwd == _recipe_exempt(model)
    if mixer == 'gqpe':
        assert len(nwd) == 3 * sum(ARCH_SETTINGS['tiny']['depths']) == 72


def test_create_optimizer_v2_decays_exactly_the_rest():
    model = fresh('posmlp_t')
    params = dict(model.named_parameters())
    opt = create_optimizer_v2(model, 'adamw', lr=1e-3, weight_decay=0.05)
    by_id = {id(p): n for n, p in params.items()}
    groups = {g['weight_decay']: {by_id[id(p)] for p in g['params']} for g in opt.param_groups}
    assert set(groups) == {0.0, 0.05}
    nwd = model.no_weight_decay()
    plain = {n for n, p in params.items() if p.ndim <= 1 or n.endswith('.bias')}
    assert groups[0.0] == nwd | plain
    assert groups[0.05] == set(params) - nwd - plain
    assert not groups[0.05] & nwd and 'levels.2.encoder.5.gate_unit.pos.attention_spreads' in nwd
    assert 'levels.0.encoder.0.proj_c_e.weight' in groups[0.05]
    # norms and biases go to no-decay by timm's own rule, as the recipe's norm/bias multipliers
    assert {'norm.weight', 'levels.1.pool.norm.weight', 'head.bias'} <= groups[0.0]


# ---- classifier, pooling, img_size ----------------------------------------------------------

def test_reset_classifier_and_global_pool(tiny):
    x = torch.randn(1, 3, 64, 96)
    for bad in ('token', 'avgmax', 'catavgmax', 'fast'):
        with pytest.raises(ValueError, match='global_pool'):
            timm.create_model('posmlp_t', global_pool=bad)
    with pytest.raises(ValueError, match='num_classes=0'):
        PosMLPClassifier(SMALL, global_pool='')

    model = timm.create_model('posmlp_t', global_pool='max', num_classes=3).eval()
    model.load_state_dict({k: v for k, v in tiny.state_dict().items() if not k.startswith('head')},
                          strict=False)
    with torch.no_grad():
        feats = model.forward_features(x)
        torch.testing.assert_close(model.forward_head(feats, pre_logits=True), feats.amax((2, 3)))
        assert model(x).shape == (1, 3)
        model.reset_classifier(10)
        assert model.global_pool.pool_type == 'max' and model(x).shape == (1, 10)
        assert model.get_classifier().out_features == 10
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), feats.amax((2, 3)))
        model.reset_classifier(0, '')
        torch.testing.assert_close(model(x), feats)
        model.reset_classifier(4, 'avg')
        assert model(x).shape == (1, 4)
    with pytest.raises(ValueError, match='global_pool'):
        model.reset_classifier(5, 'catavgmax')
    with pytest.raises(ValueError, match='num_classes=0'):
        model.reset_classifier(5, '')
    assert model.global_pool.pool_type == 'avg' and model.num_classes == 4  # refusals: unchanged


def test_img_size_is_accepted_and_changes_nothing():
    torch.manual_seed(3)
    a = timm.create_model('posmlp_t', img_size=96).eval()
    torch.manual_seed(3)
    b = timm.create_model('posmlp_t', img_size=(96, 128)).eval()
    torch.manual_seed(3)
    c = timm.create_model('posmlp_t').eval()
    sd = c.state_dict()
    assert all(torch.equal(v, sd[k]) for m in (a, b) for k, v in m.state_dict().items())
    with torch.no_grad():
        x = torch.randn(1, 3, 96, 128)
        assert torch.equal(a(x), c(x)) and torch.equal(b(x), c(x))
    for bad in (0, (96,), (96, 128, 3), (96.0, 128)):
        with pytest.raises(ValueError, match='img_size'):
            PosMLPClassifier(SMALL, img_size=bad)
    with pytest.raises(TypeError, match='unexpected'):
        timm.create_model('posmlp_t', patch_size=4)


# ---- torchscript and FX ---------------------------------------------------------------------

def test_torchscript_is_refused_with_the_documented_error():
    model = PosMLPClassifier(SMALL).eval()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # torch.jit.script's deprecation warning
        with pytest.raises(RuntimeError) as info:
            torch.jit.script(model)
    # the blocks' WindowLayout argument: a NamedTuple with a Tuple[RegionIndex, ...] field
    assert 'Can not create tuple with None type' in str(info.value), str(info.value)[:500]
    doc = ' '.join(PosMLPClassifier.__doc__.split())
    assert '"Can not create tuple with None type"' in doc


def test_fx_feature_extraction(tiny):
    x = torch.randn(1, 3, 64, 80)
    extractor = create_feature_extractor(
        tiny, return_nodes={'levels.1': 'c3', 'levels.3': 'c5', 'head': 'logits'})
    with torch.no_grad():
        got = extractor(x)
        inter = tiny.forward_intermediates(x, intermediates_only=True)
        torch.testing.assert_close(got['c3'], inter[1])
        torch.testing.assert_close(got['c5'], inter[3])
        torch.testing.assert_close(got['logits'], tiny(x))
    # the stages are leaves of the graph: one call each
    calls = [n.target for n in extractor.graph.nodes if n.op == 'call_module']
    assert [t for t in calls if t.startswith('levels.')] == ['levels.0', 'levels.1', 'levels.2',
                                                             'levels.3']

    fx_model = timm.create_model('posmlp_t', features_only=True, feature_cls='fx').eval()
    assert fx_model.feature_info.channels() == [96, 192, 384, 768]
    wanted = fx_model.state_dict().keys()
    fx_model.load_state_dict({f'graph_module.{k}': v for k, v in tiny.state_dict().items()
                              if f'graph_module.{k}' in wanted})
    with torch.no_grad():
        for a, b in zip(fx_model(x), inter):
            torch.testing.assert_close(a, b)

    # timm: test_model_backward_fx, a traced training graph gives every parameter a gradient
    train = timm.create_model('posmlp_t', num_classes=7).train()
    traced = create_feature_extractor(train, return_nodes=['head'])
    traced(torch.randn(2, 3, 64, 64))['head'].mean().backward()
    for n, p in traced.named_parameters():
        assert p.grad is not None, n


# ==== every family: timm's checks, on S2-MLP, ViP, CycleMLP, Hire-MLP and PosMLP =================
# (each family's own file keeps its formula, official counts and checkpoints, and its quirks)

from conftest import family_classifier, hire_tiny  # noqa: E402
from mmdet_posmlp.models import cycle_mlp, hire_mlp, s2mlp, vip  # noqa: E402,F401  (register)


def _nhwc(t):
    return t.permute(0, 2, 3, 1)


class Family:
    """What the shared checks need to know of a family: its variants, the default cfg of one, a
    small model with its maps at one input size, where its stages are, and its layout."""

    def __init__(self, name, variants, cfg_variant, num_features, feature_info, size, maps,
                 stages, hooked, fine_groups, nhwc=True, isotropic=False, dtype=torch.float32,
                 positional=(), dropouts=('drop_rate', 'proj_drop_rate'), transitions=True):
        self.name, self.variants, self.cfg_variant = name, variants, cfg_variant
        self.num_features, self.feature_info = num_features, feature_info
        self.size, self.maps, self.stages = size, maps, stages
        self.hooked = hooked  # (a block, the index of the map it is in) for grad checkpointing
        self.fine_groups = fine_groups  # group_matcher's fine groups of small()
        self.nhwc, self.isotropic, self.dtype = nhwc, isotropic, dtype
        self.positional = positional  # the parameters exempt from weight decay, by last name
        self.dropouts = dropouts  # the classifier's dropout arguments
        # downsamples between the stages as modules of their own in the container (PosMLP's
        # are inside its stages)
        self.transitions = transitions and not isotropic

    def small(self):
        return hire_tiny() if self.name == 'hire_mlp' else family_classifier(self.name, self.dtype)

    def no_weight_decay(self, model):
        return {n for n, _ in model.named_parameters() if n.rsplit('.', 1)[-1] in self.positional}

    def features(self, model, stage_map):
        """forward_features's layout of a stage map: NHWC or not, and an isotropic model's norm
        (it normalises every block's output)."""
        if self.isotropic:
            return model.norm(_nhwc(stage_map))
        return _nhwc(stage_map) if self.nhwc else stage_map


def _stages(widths):
    return [(c, 4 * 2 ** i, f'network.{2 * i}') for i, c in enumerate(widths)]


FAMILIES = {f.name: f for f in [
    Family('s2mlp', ['s2mlp_deep', 's2mlp_wide'], 's2mlp_wide', 768,
           [(768, 16, f'blocks.{i}') for i in range(12)], (21, 13), [(32, 6, 4)] * 3,
           'blocks', ('blocks.1', 1), 1 + 3 + 1, isotropic=True, dtype=torch.float64),
    Family('vip', ['vip_l7', 'vip_m7', 'vip_s7'], 'vip_s7', 384,
           [(192, 7, 'network.0'), (384, 14, 'network.2'), (384, 14, 'network.3'),
            (384, 14, 'network.4')], (40, 54), [(32, 6, 8)] + [(64, 3, 4)] * 3,
           'network', ('network.2.0', 1), 1 + 5 + 1 + 1, dtype=torch.float64),
    Family('cycle_mlp', [f'cycle_mlp_b{i}' for i in range(1, 6)], 'cycle_mlp_b2', 512,
           _stages((64, 128, 320, 512)), (70, 45),
           [(16, 17, 11), (24, 9, 6), (32, 5, 3), (40, 3, 2)], 'network',
           ('network.2.1.attn', 1), 1 + 5 + 3 + 1),
    Family('hire_mlp', ['hire_mlp_base', 'hire_mlp_large', 'hire_mlp_small', 'hire_mlp_tiny'],
           'hire_mlp_tiny', 512, _stages((64, 128, 320, 512)), (70, 45),
           [(64, 17, 11), (128, 9, 6), (320, 5, 3), (512, 3, 2)], 'network',
           ('network.4.0.attn', 2), 1 + 10 + 3 + 1, nhwc=False),
    # a stage's downsampling joins its first block's group: stem, 5 blocks, head
    Family('posmlp', ['posmlp_b', 'posmlp_s', 'posmlp_t'], 'posmlp_t', 768,
           [(c, 4 * 2 ** i, f'levels.{i}') for i, c in enumerate((96, 192, 384, 768))], (70, 45),
           [(16, 18, 12), (32, 9, 6), (64, 5, 3), (128, 3, 2)], 'levels',
           ('levels.2.encoder.0', 2), 1 + 5 + 1, nhwc=False, positional=POSITIONAL,
           dropouts=('drop_rate',), transitions=False),
]}


@pytest.mark.parametrize('family', FAMILIES)
def test_family_registration_and_default_cfg(family):
    spec = FAMILIES[family]
    assert timm.list_models(f'{family}_*') == spec.variants
    with torch.device('meta'):  # names and shapes only
        model = timm.create_model(spec.cfg_variant, num_classes=7)
    assert type(model).__module__ == f'mmdet_posmlp.models.{family}' and model.num_classes == 7
    cfg = model.pretrained_cfg
    for key in ('url', 'num_classes', 'input_size', 'pool_size', 'crop_pct', 'interpolation',
                'mean', 'std', 'first_conv', 'classifier'):
        assert key in cfg, key
    first_conv = model.get_submodule(cfg['first_conv'])
    assert isinstance(first_conv, nn.Conv2d) and first_conv.in_channels == 3
    assert model.get_submodule(cfg['classifier']) is model.get_classifier()
    assert model.get_classifier().out_features == 7
    assert model.num_features == model.head_hidden_size == spec.num_features
    assert [(f['num_chs'], f['reduction'], f['module']) for f in model.feature_info] == \
        spec.feature_info
    for f in model.feature_info:
        model.get_submodule(f['module'])
    assert model.no_weight_decay() == spec.no_weight_decay(model)


@pytest.mark.parametrize('family,size', [('s2mlp', (33, 47)), ('vip', (33, 47)),
                                         ('cycle_mlp', (61, 45)), ('hire_mlp', (224, 224)),
                                         ('hire_mlp', (160, 96)), ('posmlp', (61, 45))])
def test_family_every_parameter_gets_a_finite_nonzero_gradient(family, size):
    dropouts = {name: 0.1 for name in FAMILIES[family].dropouts}
    model = family_classifier(family, num_classes=5, drop_path_rate=0.1, **dropouts).train()
    out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    loss = out.logsumexp(1).sum()
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize('variant', ['s2mlp_deep', 'vip_s7', 'cycle_mlp_b1', 'posmlp_t'])
def test_family_full_size_forward_224(variant):
    model = timm.create_model(variant).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


@pytest.mark.parametrize('family', FAMILIES)
def test_family_forward_intermediates(family):
    spec = FAMILIES[family]
    model = spec.small()
    x = torch.randn(2, 3, *spec.size, dtype=spec.dtype)
    n = len(spec.maps)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        assert [tuple(f.shape) for f in inter] == [(2, *m) for m in spec.maps]

        last2 = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert len(last2) == 2 and torch.equal(last2[0], inter[-2])
        assert torch.equal(last2[1], inter[-1])
        picked = model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
        assert torch.equal(picked[0], inter[0]) and torch.equal(picked[1], inter[-1])
        nhwc = model.forward_intermediates(x, indices=[0, -1], output_fmt='NHWC',
                                           intermediates_only=True)
        assert torch.equal(nhwc[0], _nhwc(inter[0])) and torch.equal(nhwc[1], _nhwc(inter[-1]))

        # norm=True: the final norm on the last map (an isotropic model's on every map)
        normed = model.forward_intermediates(x, indices=[0, -1], norm=True,
                                             intermediates_only=True)
        assert torch.equal(normed[1], final.permute(0, 3, 1, 2) if spec.nhwc else final)
        if spec.isotropic:
            assert torch.equal(_nhwc(normed[0]), spec.features(model, inter[0]))
        else:
            assert torch.equal(normed[0], inter[0])

        # stop_early: the stages after the last index do not run; the output is that stage's
        calls = []
        after = model.get_submodule(model.feature_info[2]['module'])
        hook = after.register_forward_pre_hook(lambda *a: calls.append(1))
        try:
            early, sel = model.forward_intermediates(x, indices=[1], stop_early=True)
            assert not calls
            model.forward_intermediates(x, indices=[1])
            assert calls == [1]
        finally:
            hook.remove()
        assert len(sel) == 1 and torch.equal(sel[0], inter[1])
        assert torch.equal(early, spec.features(model, inter[1]))
    with pytest.raises(ValueError, match='output_fmt'):
        model.forward_intermediates(x, output_fmt='NLC')
    with pytest.raises(AssertionError):
        model.forward_intermediates(x, indices=[n])
    with pytest.raises(AssertionError):
        model.forward_intermediates(x, indices=n + 1)


@pytest.mark.parametrize('family,size', [('s2mlp', (16, 16)), ('vip', (56, 56)),
                                         ('cycle_mlp', (64, 64)), ('hire_mlp', (64, 64)),
                                         ('posmlp', (64, 64))])
def test_family_prune_intermediate_layers(family, size):
    spec = FAMILIES[family]
    model = spec.small()
    n = len(spec.maps)
    x = torch.randn(1, 3, *size, dtype=spec.dtype)
    with torch.no_grad():
        want = model.forward_intermediates(x, intermediates_only=True)
        logits = model(x)

        pruned = copy.deepcopy(model)
        assert pruned.prune_intermediate_layers([0, 1]) == [0, 1]
        assert set(pruned.state_dict()) < set(model.state_dict())  # kept names kept
        # the stages after stage 1 are gone (ViP, CycleMLP, Hire-MLP: their downsamples too)
        assert len(pruned.get_submodule(spec.stages)) == (3 if spec.transitions else 2)
        assert pruned.num_classes == 0 and isinstance(pruned.head, nn.Identity)
        assert pruned.get_classifier() is pruned.head and pruned.num_features == spec.maps[1][0]
        # an isotropic model's norm fits every block: it stays
        assert isinstance(pruned.norm, nn.LayerNorm if spec.isotropic else nn.Identity)
        got = pruned.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert torch.equal(pruned(x), spec.features(pruned, want[1]))  # no head, no pooling
        # negative indices now count from the last stage kept, as in timm
        assert torch.equal(pruned.forward_intermediates(x, indices=[-1],
                                                        intermediates_only=True)[0], want[1])

        full = copy.deepcopy(model)
        norm_type = type(model.norm)
        assert full.prune_intermediate_layers(1, prune_norm=False, prune_head=False) == [n - 1]
        assert len(full.get_submodule(spec.stages)) == len(model.get_submodule(spec.stages))
        assert type(full.norm) is norm_type and full.num_classes == model.num_classes
        assert torch.equal(full(x), logits)
        assert full.prune_intermediate_layers(2, prune_norm=True) == [n - 2, n - 1]
        assert isinstance(full.norm, nn.Identity) and full.num_classes == 0
        assert torch.equal(full(x), spec.features(full, want[n - 1]))  # the last map as it is

        # dropping the last stage drops the norm and head sized for it even when asked to keep
        # them; an isotropic model keeps both
        cut = copy.deepcopy(model)
        assert cut.prune_intermediate_layers([n - 2], prune_norm=False, prune_head=False) == \
            [n - 2]
        if spec.isotropic:
            assert type(cut.norm) is norm_type and cut.num_classes == model.num_classes
        else:
            assert isinstance(cut.norm, nn.Identity) and cut.num_classes == 0
            assert cut.num_features == spec.maps[n - 2][0]
            assert torch.equal(cut(x), spec.features(cut, want[n - 2]))  # that map, as it is
        last = cut.forward_intermediates(x, indices=1, intermediates_only=True)
        assert len(last) == 1 and torch.equal(last[0], want[n - 2])


@pytest.mark.parametrize('family,size', [('s2mlp', (16, 16)), ('vip', (56, 56)),
                                         ('cycle_mlp', (48, 40)), ('hire_mlp', (48, 40)),
                                         ('posmlp', (64, 96))])
def test_family_reset_classifier(family, size):
    spec = FAMILIES[family]
    model = copy.deepcopy(spec.small()).float()  # a new head is float32, as in every timm model
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert model.get_classifier() is model.head
        model.reset_classifier(3)
        assert model(x).shape == (1, 3) and model.get_classifier().out_features == 3
        model.reset_classifier(0)
        assert model.num_classes == 0 and isinstance(model.get_classifier(), nn.Identity)
        assert model(x).shape == (1, spec.maps[-1][0])
        torch.testing.assert_close(model(x), model.forward_head(feats, pre_logits=True))
        model.reset_classifier(0, '')
        torch.testing.assert_close(model(x), feats)  # no pooling: the map
        if spec.nhwc:  # without pooling the head classifies every position of the NHWC map
            model.reset_classifier(4, '')
            assert model(x).shape == (*feats.shape[:3], 4)
        else:
            with pytest.raises(ValueError, match='num_classes=0'):
                model.reset_classifier(4, '')
    with pytest.raises(ValueError, match='global_pool'):
        model.reset_classifier(5, 'catavgmax')


@pytest.mark.parametrize('family,size', [('s2mlp', (21, 13)), ('vip', (33, 47)),
                                         ('cycle_mlp', (40, 56)), ('hire_mlp', (40, 56)),
                                         ('posmlp', (64, 80))])
def test_family_grad_checkpointing_same_results_and_recomputes(family, size):
    model = family_classifier(family, num_classes=4, seed=5).train()
    grad_checkpointing_check(model, torch.randn(2, 3, *size), *FAMILIES[family].hooked)


@pytest.mark.parametrize('family', FAMILIES)
def test_family_group_matcher_covers_every_parameter_stem_to_head(family):
    spec = FAMILIES[family]
    model = spec.small()
    group_matcher_check(model, spec.stages)
    fine = group_parameters(model, model.group_matcher())
    assert len(fine) == spec.fine_groups  # the stem, each block, each downsample, the head
    # the final norm joins the last block
    by_name = {n: gid for gid, g in fine.items() for n in g}
    last = len(model.get_submodule(spec.stages)) - 1
    last_block = [n for n in by_name if n.startswith(f'{spec.stages}.{last}.')][-1]
    assert by_name['norm.weight'] == by_name[last_block]


@pytest.mark.parametrize('family,size', [('s2mlp', (21, 13)), ('vip', (33, 47)),
                                         ('cycle_mlp', (33, 47)), ('hire_mlp', (50, 70)),
                                         ('posmlp', (64, 80))])
def test_family_fx_feature_graph_is_forward_intermediates(family, size):
    from timm.models import FeatureGraphNet
    spec = FAMILIES[family]
    model = spec.small().float()
    indices = [0, 1, len(spec.maps) - 1]
    net = FeatureGraphNet(model, out_indices=indices)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        feats = net(x)
        ref = model.forward_intermediates(x, indices=indices, intermediates_only=True,
                                          output_fmt='NHWC' if spec.nhwc else 'NCHW')
    assert len(feats) == 3
    for a, b in zip(feats, ref):  # the graph returns each stage's output in its own layout
        torch.testing.assert_close(a, b)


@pytest.mark.filterwarnings('ignore:`torch.jit.script` is deprecated:FutureWarning')
@pytest.mark.parametrize('family,sizes', [('s2mlp', [(16, 16), (21, 13)]),
                                          ('vip', [(56, 56), (33, 47)]),
                                          ('hire_mlp', [(45, 38)])])
def test_family_torchscript(family, sizes):
    model = FAMILIES[family].small().float()
    scripted = torch.jit.script(model)
    for size in sizes:
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), model(x))


# ---- fine-tuning from a checkpoint file (timm's usual call), every family --------------------

@pytest.mark.parametrize('variant', ['posmlp_t', 'hire_mlp_tiny', 'vip_s7', 's2mlp_deep',
                                     'cycle_mlp_b1'])
def test_pretrained_file_with_other_num_classes_and_in_chans(variant, tmp_path):
    """timm.create_model(variant, pretrained=True, pretrained_cfg_overlay=dict(file=...)) with
    another num_classes (the head is left at its initialisation) or in_chans (timm adapts the
    first conv: summed for 1 channel); every other tensor is the checkpoint's."""
    torch.manual_seed(0)
    source = timm.create_model(variant)
    path = tmp_path / 'weights.pth'
    torch.save(source.state_dict(), path)
    expected = source.state_dict()
    first_conv = source.pretrained_cfg['first_conv'] + '.weight'
    head = source.pretrained_cfg['classifier'] + '.'
    for kwargs in (dict(num_classes=5), dict(in_chans=1), dict(num_classes=5, in_chans=1)):
        model = timm.create_model(variant, pretrained=True,
                                  pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
        got = model.state_dict()
        for key, value in expected.items():
            if key.startswith(head) and 'num_classes' in kwargs:
                assert got[key].shape[0] == 5, key
            elif key == first_conv and 'in_chans' in kwargs:
                assert got[key].shape[1] == 1
                torch.testing.assert_close(got[key], value.sum(1, keepdim=True))
            else:
                assert torch.equal(got[key], value), (kwargs, key)
        x = torch.randn(1, kwargs.get('in_chans', 3), 224, 224)
        assert model.eval()(x).shape == (1, kwargs.get('num_classes', 1000))
