"""mmengine's FLOP counter, and mmdet's own get_flops.py through it, count PosMLP fully.

``import mmdet_posmlp`` adds handles for the operators of PosMLP that mmengine lacks (the custom
autograd Functions, opaque ``prim::PythonOp`` nodes in a jit trace) to mmengine's default tables
(mmdet_posmlp/analysis/flop_handles.py). Checked here against an
independent count: torch's FlopCounterMode, which sees every product inside the Functions (it
counts 2 FLOPs per multiply-add, mmengine 1), plus the normalisation layers counted by
mmengine's rule from forward hooks (torch does not count them). Without the handles mmengine's
count of the small backbone below is about 20% short.
"""
import logging
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

import mmdet_posmlp  # noqa: F401  (registers the handles)
from mmdet_posmlp.models.backbones import PosMLP
from conftest import REPO, TINY_RETINANET_CONFIG, write_tiny_coco

pytestmark = pytest.mark.filterwarnings('ignore:pkg_resources is deprecated:UserWarning')

ARCH = dict(embed_dims=(16, 32, 64, 128), depths=(1, 1, 2, 1), windows=(7, 7, 7, 7),
            groups=(2, 4, 4, 8), mlp_ratios=(4, 4, 4, 2))
# 120x100: maps of 30x25, 15x13, 8x7, 4x4 tokens: whole, edge and corner windows of 7
IMAGE = (1, 3, 120, 100)
PRODUCT_OPS = ('mm', 'conv', 'einsum', 'matmul', 'linear', 'PythonOp')


class _Log(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def mmengine_complexity(model, x):
    """get_model_complexity_info as mmdet's get_flops.py calls it; with the log it wrote."""
    from mmengine.analysis import get_model_complexity_info
    from mmengine.logging import MMLogger
    logger, log = MMLogger.get_current_instance(), _Log()
    logger.addHandler(log)
    try:
        with torch.no_grad():
            info = get_model_complexity_info(model, None, inputs=(x,), show_table=False,
                                             show_arch=False)
    finally:
        logger.removeHandler(log)
    return info, log.messages


def independent_flops(model, x) -> int:
    """torch's FlopCounterMode (products, 2 per multiply-add) halved, plus the norm layers by
    mmengine's rule: LayerNorm 5 (4 without affine) per element, BatchNorm in eval 2 (1)."""
    norms = []

    def hook(module, inputs, output):
        n = inputs[0].numel()
        if isinstance(module, nn.LayerNorm):
            norms.append(n * (5 if module.elementwise_affine else 4))
        else:
            assert not module.training
            norms.append(n * (2 if module.affine else 1))

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.LayerNorm, nn.BatchNorm2d))]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for h in handles:
            h.remove()
    total = counter.get_total_flops()
    assert total % 2 == 0
    return total // 2 + sum(norms)


def test_torch_counts_two_flops_per_multiply_add_mmengine_one():
    from mmengine.analysis import FlopAnalyzer
    layer, x = nn.Linear(8, 4), torch.randn(3, 8)
    with FlopCounterMode(display=False) as counter:
        layer(x)
    assert counter.get_total_flops() == 2 * 3 * 8 * 4
    assert FlopAnalyzer(layer, (x,)).total() == 3 * 8 * 4


def test_handles_registered_on_import():
    from mmengine.analysis import complexity_analysis as ca
    from mmdet_posmlp.analysis.flop_handles import POSMLP_FLOP_HANDLES
    for name in ('prim::PythonOp._GeluGatedTokenMix', 'prim::PythonOp._QuadraticSoftmax'):
        assert ca._DEFAULT_SUPPORTED_FLOP_OPS[name] is POSMLP_FLOP_HANDLES[name]
        assert name in ca._DEFAULT_SUPPORTED_ACT_OPS
    assert set(POSMLP_FLOP_HANDLES) == {'prim::PythonOp._GeluGatedTokenMix',
                                        'prim::PythonOp._QuadraticSoftmax'}
    # mmengine's own handles are kept
    from mmengine.analysis.jit_handles import addmm_flop_jit, matmul_flop_jit
    assert ca._DEFAULT_SUPPORTED_FLOP_OPS['aten::addmm'] is addmm_flop_jit
    assert ca._DEFAULT_SUPPORTED_FLOP_OPS['aten::mm'] is matmul_flop_jit


@pytest.mark.parametrize('mixer', ['gqpe', 'lrpe', 'sgu'])
@pytest.mark.parametrize('fused', [False, True], ids=['plain', 'fused'])
def test_mmengine_count_matches_independent_count(mixer, fused):
    torch.manual_seed(0)
    x = torch.randn(IMAGE)

    def build():
        torch.manual_seed(0)
        model = PosMLP(arch=ARCH, mixer=mixer, drop_path_rate=0.0).eval()
        return model.fuse() if fused else model  # fresh: the fused mixing cache starts empty

    info, log = mmengine_complexity(build(), x)
    expected = independent_flops(build(), x)
    assert abs(info['flops'] - expected) <= 0.01 * expected, (info['flops'], expected)
    unsupported = [m for m in log if m.startswith('Unsupported operator')]
    uncounted = [m for m in unsupported if any(op in m.split()[2] for op in PRODUCT_OPS)]
    assert not uncounted, uncounted  # element-wise ops (gelu, mul, ...) are uncounted by design
    # the mixing is in the count, by operator: the gated token mixing holds products; the
    # matrices (GQPE: element-wise) and the gathers into window order none
    from mmengine.analysis import FlopAnalyzer
    with torch.no_grad():
        by_op = FlopAnalyzer(build(), (x,)).unsupported_ops_warnings(False).by_operator()
    assert by_op['PythonOp._GeluGatedTokenMix'] > 0
    assert by_op.get('index_select', 0) == 0  # the gathers into and out of window order
    if mixer == 'gqpe' and not fused:
        assert by_op['PythonOp._QuadraticSoftmax'] == 0


def test_gated_token_mix_handle_counts_the_batched_product_per_region():
    """One block's mixing on a 4 x 9 map with windows of 4: two whole windows (32 tokens,
    n = 16) and a right-edge region of one 4 x 1 window (4 tokens, n = 4): C/2 x T_r x n_r
    multiply-adds per region, as its baddbmm's shapes give; the token matrix's rows beyond the
    regions' tokens (if the layout rounds it up) are not mixed, and not counted."""
    from mmengine.analysis import FlopAnalyzer
    from mmdet_posmlp.models.posmlp import PosSGU, stacked_mixing
    from mmdet_posmlp.models.windows import to_windows, window_layout, window_regions
    assert [(r.win_cols, r.rows, r.cols) for r in window_regions(1, 4, 9, 4)] == [(2, 4, 4),
                                                                                 (1, 4, 1)]
    layout = window_layout(1, 4, 9, 4, 0, torch.device('cpu'))
    h = to_windows(torch.randn(1, 16, 4, 9), layout).t().contiguous()  # (2C', rows), as the block

    class Mix(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate = PosSGU(dim=16, window=4, groups=2)

        def forward(self, h):
            mixing = stacked_mixing([self.gate.pos], layout, h.dtype)[0]
            return self.gate(h, layout, mixing)

    with torch.no_grad():
        by_op = FlopAnalyzer(Mix(), (h,)).by_operator()
    assert by_op['PythonOp._GeluGatedTokenMix'] == 8 * 32 * 16 + 8 * 4 * 4
    assert by_op['PythonOp._QuadraticSoftmax'] == 0
    # and what torch counts inside the Function: the same products (2 FLOPs a multiply-add)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        Mix()(h)
    assert counter.get_total_flops() == 2 * (8 * 32 * 16 + 8 * 4 * 4)


# ------------------------------------------------------------- mmdet's own get_flops.py

def _mmdet_get_flops():
    import mmdet
    path = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'analysis_tools',
                    'get_flops.py')
    if not osp.isfile(path):
        pytest.skip("mmdet's tools/analysis_tools/get_flops.py is not installed with mmdet")
    return path


def test_mmdet_get_flops_counts_the_token_mixing(tmp_path):
    """mmdet's tool, unchanged, in a fresh interpreter: it imports mmdet_posmlp only through
    the config's custom_imports. Its count is the one of our complexity code on the same
    input, and it warns about no product (the mixing included)."""
    tool = _mmdet_get_flops()
    write_tiny_coco(str(tmp_path / 'data'), num_images=1, size=96)
    config = tmp_path / 'tiny_retinanet.py'
    config.write_text(TINY_RETINANET_CONFIG.format(
        base=osp.join(REPO, 'configs', 'retinanet_posmlp_t_1x.py'), data_root=tmp_path / 'data',
        window=7, scale=96))
    env = dict(os.environ, PYTHONWARNINGS='ignore',
               PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get('PYTHONPATH')) if p))
    result = subprocess.run([sys.executable, tool, str(config), '--num-images', '1'],
                            cwd=str(tmp_path), env=env, capture_output=True, text=True,
                            timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    unsupported = re.findall(r'Unsupported operator (\S+)', out)
    assert unsupported, out[-3000:]  # the warnings are on: element-wise ops are listed
    assert not [op for op in unsupported if any(p in op for p in PRODUCT_OPS)], unsupported
    flops = re.search(r'Flops: ([\d.]+)([KMGT]?)', out)
    assert flops, out[-3000:]
    tool_flops = float(flops.group(1)) * 1000 ** ' KMGT'.index(flops.group(2) or ' ')

    from mmdet_posmlp.analysis.complexity import model_complexity
    ours = model_complexity(str(config), shape=(96, 96))
    assert ours['input_shape'] == (96, 96)
    assert ours['uncounted_ops'] and not [
        op for op in ours['uncounted_ops'] if any(p in op for p in PRODUCT_OPS)]
    assert abs(tool_flops - ours['flops']) <= 1e-3 * ours['flops'], (tool_flops, ours['flops'])
