"""FLOP (and activation) counting of PosMLP by mmengine's jit analyzers, mmdet's get_flops included.

mmengine's ``FlopAnalyzer`` (fvcore's rules, used by ``get_model_complexity_info`` and so by
MMDetection's ``tools/analysis_tools/get_flops.py``) traces the model with ``torch.jit`` and
counts the operators of its handle table. Left alone it misses PosMLP's token mixing and
channel norms:

- ``aten::baddbmm`` (the token mixing of the deployed blocks, fused.py) and ``aten::addmm_``
  (their output projection added into the residual in place) have no handle;
- the custom autograd Functions of posmlp.py are opaque in a jit trace: each is one
  ``prim::PythonOp.<class name>`` node, whose inner products the analyzer never sees.
  ``_GeluGatedTokenMix`` holds the token mixing (one batched product per block),
  ``_ChannelNorm`` the normalisation before the expansion (two products with a row of 1/C);
  ``FlushedSoftmax`` (GQPE's softmax) and ``_Permute`` (a gather of weight rows) do no
  multiply-adds.

:func:`register_flop_handles` adds a handle for each of them to mmengine's default handle
tables, the ones every ``FlopAnalyzer`` / ``ActivationAnalyzer`` starts from. ``import
mmdet_posmlp`` calls it, because mmdet's own get_flops.py never calls code of ours: the only
thing of ours it runs is the import that the config's ``custom_imports`` asks for. Only names
that the tables lack are added (a handle mmengine or the user set is kept), so the counts of
other models change only where they use ``baddbmm`` / ``addmm_`` (which mmengine leaves uncounted), and in
the activation count where they use ``aten::mm`` (counted as mmengine counts ``aten::matmul``).

The counts follow mmengine's convention: one multiply-add is one FLOP (torch's own
``FlopCounterMode`` counts two); the handles of the PythonOps count the products inside them,
computed from their input shapes, and element-wise work (GELU, gating, softmax, the
normalisation's subtractions and scalings) is not counted, as mmengine counts no activation or
softmax. A PythonOp of the same class name that is not one of ours is left uncounted, with
mmengine's usual warning.
"""
from typing import Any, Callable, Dict, List

__all__ = ['register_flop_handles', 'POSMLP_FLOP_HANDLES', 'POSMLP_ACTIVATION_HANDLES']

_registered = False


def _shape(value) -> List[int]:
    from mmengine.analysis.jit_handles import get_shape
    return list(get_shape(value) or [])


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def baddbmm_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``baddbmm(input, batch1, batch2)``: the batched product b x n x k x m (the addition is
    free, as for mmengine's addmm)."""
    b, n, k = _shape(inputs[1])
    return b * n * k * _shape(inputs[2])[-1]


def addmm_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``addmm_(input, mat1, mat2)``: as mmengine's ``aten::addmm``."""
    from mmengine.analysis.jit_handles import addmm_flop_jit as handle
    return handle(inputs, outputs)


def _python_op(cls_name: str, count: Callable[[List[Any], List[Any]], int]):
    """A handle for ``prim::PythonOp.<cls_name>`` that counts only our own Function."""

    def handle(inputs: List[Any], outputs: List[Any]) -> int:
        from mmdet_posmlp.models import posmlp
        fn = getattr(outputs[0].node().pyobj(), '__self__', None)
        if fn is not getattr(posmlp, cls_name):
            from mmengine.logging import print_log
            print_log(f'Unsupported operator prim::PythonOp.{cls_name} ({fn!r}, not '
                      'mmdet_posmlp\'s) encountered: not counted', 'current', 30)
            return 0
        return count(inputs, outputs)

    handle.__name__ = f'{cls_name.strip("_").lower()}_jit'
    handle.__doc__ = count.__doc__
    return handle


def _gated_token_mix_flops(inputs: List[Any], outputs: List[Any]) -> int:
    """_GeluGatedTokenMix(h, P, bias): u (the first half of h's rows, C/2 x T) mixed by the
    (groups, n, n) matrices P, i.e. baddbmm(bias, u as (groups, C/2/groups x T/n, n), P^T):
    C/2 x T x n multiply-adds."""
    channels, columns = _shape(inputs[0])
    return channels // 2 * columns * _shape(inputs[1])[-1]


def _channel_norm_flops(inputs: List[Any], outputs: List[Any]) -> int:
    """_ChannelNorm(x) for x (C, T): the mean and the variance are products with a (1, C) row
    of 1/C: 2 x C x T multiply-adds (the subtraction and scaling are element-wise)."""
    return 2 * _prod(_shape(inputs[0]))


def _no_flops(inputs: List[Any], outputs: List[Any]) -> int:
    """No multiply-adds: element-wise (softmax) or a gather (permutation of weight rows)."""
    return 0


def _output_size(inputs: List[Any], outputs: List[Any]) -> int:
    """Activations: the elements of the output, as mmengine's generic_activation_jit."""
    return _prod(_shape(outputs[0]))


POSMLP_FLOP_HANDLES: Dict[str, Callable] = {
    'aten::baddbmm': baddbmm_flop_jit,
    'aten::addmm_': addmm_flop_jit,
    'prim::PythonOp._GeluGatedTokenMix': _python_op('_GeluGatedTokenMix', _gated_token_mix_flops),
    'prim::PythonOp._ChannelNorm': _python_op('_ChannelNorm', _channel_norm_flops),
    'prim::PythonOp.FlushedSoftmax': _python_op('FlushedSoftmax', _no_flops),
    'prim::PythonOp._Permute': _python_op('_Permute', _no_flops),
}

# mmengine counts the outputs of convolutions and matrix products as activations
POSMLP_ACTIVATION_HANDLES: Dict[str, Callable] = {
    'aten::baddbmm': _output_size,
    'aten::addmm_': _output_size,
    'aten::mm': _output_size,
    'prim::PythonOp._GeluGatedTokenMix': _python_op('_GeluGatedTokenMix', _output_size),
    'prim::PythonOp._ChannelNorm': _python_op('_ChannelNorm', _no_flops),
    'prim::PythonOp.FlushedSoftmax': _python_op('FlushedSoftmax', _no_flops),
    'prim::PythonOp._Permute': _python_op('_Permute', _no_flops),
}


def register_flop_handles() -> None:
    """Add the handles above to mmengine's default FLOP and activation handle tables, so that
    every FlopAnalyzer / ActivationAnalyzer created afterwards (get_model_complexity_info,
    mmdet's get_flops.py) counts PosMLP fully. Keeps handles already in the tables; idempotent.
    """
    global _registered
    if _registered:
        return
    from mmengine.analysis import complexity_analysis as ca
    for table, handles in ((ca._DEFAULT_SUPPORTED_FLOP_OPS, POSMLP_FLOP_HANDLES),
                           (ca._DEFAULT_SUPPORTED_ACT_OPS, POSMLP_ACTIVATION_HANDLES)):
        for name, handle in handles.items():
            table.setdefault(name, handle)
    _registered = True
