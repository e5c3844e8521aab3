"""The distribution: the wheel that pip builds from pyproject.toml holds the library and its configs
and nothing else, carries ``__version__``, and once installed (not editable) reads its configs by
``mmdet_posmlp::`` name from any directory and builds what they name.

The wheel is built from a copy of the working tree (the whole tree, tests/tools/benchmarks
included, so that leaving them out is the configuration's doing; a copy, so that no stale
``build/`` folder can add files), with the set-up's setuptools (no build isolation), then
installed with ``pip install --no-deps --target`` and used from a subprocess in another
directory with only that target put first on ``sys.path``. About 30 s on 2 cores.
"""
import email.parser
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import textwrap
import zipfile

import pytest

import mmdet_posmlp

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# Not part of the source tree a build sees: VCS data, build outputs, local data and results.
NOT_SOURCE = {'.git', 'build', 'dist', 'data', 'work_dirs', 'checkpoints', '.pytest_cache',
              '.benchmarks'}


def _ignore(folder, names):
    skip = {n for n in names if n == '__pycache__' or n.endswith('.egg-info')}
    if osp.samefile(folder, REPO):
        skip |= NOT_SOURCE & set(names)
    return skip


def _run(args, cwd, timeout=300):
    """``sys.executable args`` in ``cwd``; without PYTHONPATH, so the checkout cannot leak in."""
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env['PYTHONWARNINGS'] = 'ignore'
    proc = subprocess.run([sys.executable] + args, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f'{args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    return proc


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """(source copy, wheel path, names in the wheel)."""
    tmp = tmp_path_factory.mktemp('packaging')
    src = tmp / 'src'
    shutil.copytree(REPO, src, symlinks=True, ignore=_ignore)
    _run(['-m', 'pip', 'wheel', '.', '--no-deps', '--no-build-isolation', '-q',
          '--disable-pip-version-check', '-w', str(tmp / 'dist')], cwd=src)
    wheels = list((tmp / 'dist').glob('mmdet_posmlp-*.whl'))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as z:
        names = z.namelist()
    return src, wheels[0], names


def _source_files(root, suffix='.py'):
    """Files under ``root`` (relative, '/'-separated), without caches."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != '__pycache__']
        found += [osp.relpath(osp.join(folder, f), root).replace(os.sep, '/')
                  for f in files if f.endswith(suffix)]
    return sorted(found)


def test_wheel_holds_every_module_and_config_and_nothing_else(built):
    src, wheel, names = built
    package = osp.join(src, 'mmdet_posmlp')
    in_wheel = {n for n in names if not n.startswith('mmdet_posmlp-')}

    modules = [f'mmdet_posmlp/{f}' for f in _source_files(package) if not f.startswith('.mim/')]
    assert 'mmdet_posmlp/models/common.py' in modules and 'mmdet_posmlp/mim.py' in modules
    assert not set(modules) - in_wheel, f'modules missing from the wheel: {set(modules) - in_wheel}'

    configs = [f'mmdet_posmlp/.mim/configs/{f}' for f in _source_files(osp.join(package, '.mim',
                                                                                 'configs'))]
    for expected in ('retinanet_posmlp_t_1x.py', 'mask_rcnn_posmlp_t_1x.py',
                     '_posmlp_det_recipe.py', 'demo/retinanet_posmlp_t_demo.py',
                     'demo/_shapes_data.py'):
        assert f'mmdet_posmlp/.mim/configs/{expected}' in configs
    assert not set(configs) - in_wheel, f'configs missing from the wheel: {set(configs) - in_wheel}'

    # the library, its configs and the metadata: no tests, tools, benchmarks, root configs link
    assert in_wheel == set(modules) | set(configs), sorted(in_wheel - set(modules) - set(configs))
    assert {n.split('/')[0] for n in names} == {'mmdet_posmlp',
                                                f'mmdet_posmlp-{mmdet_posmlp.__version__}.dist-info'}
    assert not [n for n in names if n.endswith('entry_points.txt')]  # none declared, none empty


def test_wheel_metadata(built):
    _, wheel, names = built
    with zipfile.ZipFile(wheel) as z:
        meta_name = next(n for n in names if n.endswith('.dist-info/METADATA'))
        meta = email.parser.Parser().parsestr(z.read(meta_name).decode())
    assert meta['Name'] == 'mmdet_posmlp'
    assert meta['Version'] == mmdet_posmlp.__version__  # the one version source
    assert wheel.name.startswith(f'mmdet_posmlp-{mmdet_posmlp.__version__}-')
    requires = meta.get_all('Requires-Dist')
    bare = {r.split(';')[0].split('<')[0].split('>')[0].split('=')[0].strip().lower()
            for r in requires if 'extra ==' not in r}
    assert {'torch', 'torchvision', 'mmdet', 'mmengine', 'timm', 'numpy', 'pycocotools'} <= bare
    assert 'mmcv' not in bare  # deliberately undeclared: see pyproject.toml
    assert set(meta.get_all('Provides-Extra')) == {'onnx', 'tests'}
    assert {'onnx; extra == "onnx"', 'onnxruntime; extra == "onnx"',
            'onnxscript; extra == "onnx"', 'pytest; extra == "tests"'} <= set(requires)


def test_installed_wheel_reads_its_configs_by_name_from_anywhere(built, tmp_path):
    _, wheel, _ = built
    target = tmp_path / 'site'
    _run(['-m', 'pip', 'install', '--no-deps', '--no-compile', '-q', '--disable-pip-version-check',
          '--target', str(target), str(wheel)], cwd=tmp_path)
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    (elsewhere / 'my_detector.py').write_text(textwrap.dedent("""\
        _base_ = 'mmdet_posmlp::retinanet_posmlp_t_1x.py'
        model = dict(backbone=dict(arch='small', init_cfg=None), neck=dict(in_channels=[256, 512, 1024]))
        """))
    script = textwrap.dedent(f"""\
        import json, sys
        sys.path.insert(0, {str(target)!r})
        import mmdet_posmlp
        from mmengine import Config
        from mmdet.registry import MODELS

        cfg = Config.fromfile('mmdet_posmlp::retinanet_posmlp_t_1x.py')
        demo = Config.fromfile('mmdet_posmlp::demo/retinanet_posmlp_t_demo.py')
        child = Config.fromfile('my_detector.py')
        backbone = MODELS.build(child.model.backbone)
        print(json.dumps(dict(
            package=mmdet_posmlp.__file__, config=cfg.filename, backbone=cfg.model.backbone.type,
            demo_windows=list(demo.model.backbone.windows), child_arch=child.model.backbone.arch,
            child_scope=child.model.get('_scope_'), built=type(backbone).__name__,
            dims=list(backbone.num_features), hook=child.default_hooks.checkpoint.type)))
        """)
    # -I: no PYTHONPATH, no user site, no script folder: only the target and site-packages
    proc = _run(['-I', '-c', script], cwd=elsewhere)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out['package'].startswith(str(target)), out  # the installed copy, not the checkout
    assert out['config'].startswith(str(target / 'mmdet_posmlp' / '.mim' / 'configs')), out
    assert out['backbone'] == 'PosMLP' and out['demo_windows'] == [8, 8, 8, 4]
    assert out['child_arch'] == 'small' and out['child_scope'] == 'mmdet'
    assert out['built'] == 'PosMLP' and out['dims'] == [128, 256, 512, 1024]
    assert out['hook'] == 'CrashSafeCheckpointHook'  # the recipe came along with the base
