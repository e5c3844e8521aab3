"""The PosMLP classifiers as timm models: timm.create_model('posmlp_t' | 'posmlp_s' | 'posmlp_b').

Parameter names are the reference implementation's, so its ImageNet checkpoints load with
`pretrained_cfg_overlay=dict(file=PATH)` (the filter below picks 'state_dict_ema' and drops
the window-derived buffers the reference stored).
"""
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from .weights import DERIVED_BUFFERS, extract_state_dict
from .posmlp import PosMLPClassifier


def checkpoint_filter_fn(state_dict, model):
    state_dict, _ = extract_state_dict(state_dict)
    return {k: v for k, v in state_dict.items() if not k.endswith(DERIVED_BUFFERS)}


def _cfg(**kwargs):
    return {
        'url': '', 'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.9, 'interpolation': 'bicubic', 'fixed_input_size': False,
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'patch_embed.projs.0', 'classifier': 'head', 'license': 'apache-2.0',
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    'posmlp_t.in1k': _cfg(),
    'posmlp_s.in1k': _cfg(),
    'posmlp_b.untrained': _cfg(),
})


def _create(variant: str, arch: str, pretrained: bool = False, **kwargs) -> PosMLPClassifier:
    return build_model_with_cfg(
        PosMLPClassifier, variant, pretrained, arch=arch,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3)),
        **kwargs)


@register_model
def posmlp_t(pretrained: bool = False, **kwargs) -> PosMLPClassifier:
    """PosMLP-T: 20.9M parameters, 82.1% ImageNet top-1 in the paper."""
    return _create('posmlp_t', 'tiny', pretrained, **kwargs)


@register_model
def posmlp_s(pretrained: bool = False, **kwargs) -> PosMLPClassifier:
    """PosMLP-S: 36.8M parameters, 83.0% ImageNet top-1 in the paper."""
    return _create('posmlp_s', 'small', pretrained, **kwargs)


@register_model
def posmlp_b(pretrained: bool = False, **kwargs) -> PosMLPClassifier:
    """PosMLP-B: about 82M parameters, 83.6% ImageNet top-1 in the paper (no reference code)."""
    return _create('posmlp_b', 'base', pretrained, **kwargs)
