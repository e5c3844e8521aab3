"""The package without the OpenMMLab stack: torch and timm alone are enough for the timm half.

Each test runs a fresh interpreter (sys.executable) whose ``sys.meta_path`` starts with a finder
that refuses some top-level names and their submodules, as on a machine where they are not
installed; the modules already imported by this pytest process do not leak into it.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MM = ('mmcv', 'mmdet', 'mmengine', 'pycocotools')

BLOCKER = textwrap.dedent("""\
    import json, sys
    sys.path.insert(0, {repo!r})
    BLOCKED = {blocked!r}

    class Blocker:
        \"\"\"Refuse BLOCKED names and their submodules, as if they were not installed.\"\"\"
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in BLOCKED:
                raise ModuleNotFoundError(f'No module named {{name!r}} (blocked)', name=name)
            return None

    sys.meta_path.insert(0, Blocker())
    assert not [m for m in sys.modules if m.split('.')[0] in BLOCKED]
    """)


def run_blocked(blocked, body: str) -> dict:
    """Run ``body`` under the blocker; it prints one JSON line last, which is returned."""
    script = BLOCKER.format(repo=REPO, blocked=tuple(blocked)) + textwrap.dedent(body)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env.pop('PYTHONPATH', None)
    proc = subprocess.run([sys.executable, '-c', script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_timm_half_imports_and_runs_without_mmcv_mmdet_mmengine_pycocotools():
    out = run_blocked(MM, """\
        import torch
        import timm
        import mmdet_posmlp
        from mmdet_posmlp.models.posmlp import PosMLPClassifier

        torch.manual_seed(0)
        shapes = {}
        with torch.no_grad():
            feats = timm.create_model('posmlp_t', features_only=True, out_indices=(1, 2, 3)).eval()
            shapes['posmlp_t'] = [list(f.shape) for f in feats(torch.randn(1, 3, 96, 128))]
            for name, size in (('hire_mlp_tiny', 64), ('vip_s7', 56), ('s2mlp_deep', 64),
                               ('cycle_mlp_b1', 61)):
                model = timm.create_model(name, num_classes=7).eval()
                y = model(torch.randn(2, 3, size, size))
                assert torch.isfinite(y).all(), name
                shapes[name] = list(y.shape)
            y = PosMLPClassifier('tiny', num_classes=5, mixer='lrpe').eval()(torch.randn(1, 3, 64, 64))
            shapes['PosMLPClassifier'] = list(y.shape)

        errors = {}
        try:
            mmdet_posmlp.PosMLP
        except ImportError as e:
            errors['package'] = str(e)
        try:
            from mmdet_posmlp.models import HireMLP  # noqa: F401
        except ImportError as e:
            errors['models'] = str(e)
        errors['hasattr_other'] = hasattr(mmdet_posmlp, 'no_such_name')
        loaded = sorted({m.split('.')[0] for m in sys.modules} & set(BLOCKED))
        print(json.dumps(dict(shapes=shapes, errors=errors, loaded=loaded,
                              available=mmdet_posmlp.MMDET_AVAILABLE,
                              registered=sorted(timm.list_models('posmlp_*')))))
        """)
    assert out['loaded'] == [], out['loaded']
    assert out['available'] is False
    assert out['registered'] == ['posmlp_b', 'posmlp_s', 'posmlp_t']
    # posmlp_t: strides 8, 16, 32 (out_indices 1-3), channels 192 / 384 / 768 (tiny)
    assert out['shapes']['posmlp_t'] == [[1, 192, 12, 16], [1, 384, 6, 8], [1, 768, 3, 4]]
    for name in ('hire_mlp_tiny', 'vip_s7', 's2mlp_deep', 'cycle_mlp_b1'):
        assert out['shapes'][name] == [2, 7], name
    assert out['shapes']['PosMLPClassifier'] == [1, 5]
    for where in ('package', 'models'):  # a clear message naming what to install
        msg = out['errors'][where]
        assert 'mmdet' in msg and 'mmcv' in msg and 'mmengine' in msg, msg
        assert 'setup_env.sh' in msg, msg
    assert out['errors']['hasattr_other'] is False  # other names stay plain AttributeErrors


def _mmdet_installed() -> bool:
    import importlib.util
    return importlib.util.find_spec('mmdet') is not None


@pytest.mark.skipif(not _mmdet_installed(), reason='needs mmdet installed (mmcv blocked only)')
def test_mmdet_installed_without_mmcv_says_how_to_get_mmcv():
    out = run_blocked(('mmcv',), """\
        try:
            import mmdet_posmlp  # noqa: F401
            print(json.dumps(dict(error=None)))
        except ImportError as e:
            print(json.dumps(dict(error=str(e), type=type(e).__name__,
                                  mmdet_loaded='mmdet' in sys.modules)))
        """)
    assert out['error'] is not None, 'import mmdet_posmlp succeeded with mmcv blocked'
    assert 'mmcv' in out['error'] and 'tools/setup_env.sh' in out['error'], out['error']
    assert out['mmdet_loaded'] is False  # checked before anything imported mmdet
