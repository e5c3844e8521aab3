"""FLOP (and activation) counting of PosMLP by mmengine's jit analyzers, mmdet's get_flops included.

mmengine's ``FlopAnalyzer`` (fvcore's rules, used by ``get_model_complexity_info`` and so by
MMDetection's ``tools/analysis_tools/get_flops.py``) traces the model with ``torch.jit`` and
counts the operators of its handle table. The Linear layers, norms and convolutions of PosMLP
are operators it knows (``aten::addmm``, ``aten::linear``, ``aten::layer_norm``, ...); the
custom autograd Functions of posmlp.py are not: each is one opaque ``prim::PythonOp.<class
name>`` node of the trace, whose inner products the analyzer never sees. Left alone it misses
the token mixing:

- ``_GeluGatedTokenMix`` (GELU, token mixing, gate) holds the mixing products: one batched
  product per region of same-shaped windows;
- ``_QuadraticSoftmax`` (GQPE's scores and softmax, element-wise by design) does no
  multiply-add.

:func:`register_flop_handles` adds a handle for each of them to mmengine's default handle
tables, the ones every ``FlopAnalyzer`` / ``ActivationAnalyzer`` starts from. ``import
mmdet_posmlp`` calls it, because mmdet's own get_flops.py never calls code of ours: the only
thing of ours it runs is the import that the config's ``custom_imports`` asks for. Only names
that the tables lack are added (a handle mmengine or the user set is kept); they are
``prim::PythonOp`` names of our own classes, so the counts of other models do not change.

The counts follow mmengine's convention: one multiply-add is one FLOP (torch's own
``FlopCounterMode`` counts two); the handles of the PythonOps count the products inside them,
computed from their input shapes, and element-wise work (GELU, gating, softmax) is not
counted, as mmengine counts no activation or softmax. A PythonOp of the same class name that is
not one of ours is left uncounted, with mmengine's usual warning.
"""
import math
from typing import Any, Callable, Dict, List

from mmengine.analysis.complexity_analysis import (_DEFAULT_SUPPORTED_ACT_OPS,
                                                   _DEFAULT_SUPPORTED_FLOP_OPS)
from mmengine.analysis.jit_handles import get_shape
from mmengine.logging import print_log

from ..models import posmlp

__all__ = ['register_flop_handles', 'POSMLP_FLOP_HANDLES', 'POSMLP_ACTIVATION_HANDLES']


def _shape(value) -> List[int]:
    return list(get_shape(value) or [])


def _python_op(function: type, count: Callable[[List[Any], List[Any]], int]):
    """A handle for ``prim::PythonOp.<function's name>`` that counts only our own Function."""
    cls_name = function.__name__

    def handle(inputs: List[Any], outputs: List[Any]) -> int:
        fn = getattr(outputs[0].node().pyobj(), '__self__', None)
        if fn is not function:
            print_log(f'Unsupported operator prim::PythonOp.{cls_name} ({fn!r}, not '
                      'mmdet_posmlp\'s) encountered: not counted', 'current', 30)
            return 0
        return count(inputs, outputs)

    handle.__name__ = f'{cls_name.strip("_").lower()}_jit'
    handle.__doc__ = count.__doc__
    return handle


def _gated_token_mix_flops(inputs: List[Any], outputs: List[Any]) -> int:
    """_GeluGatedTokenMix(h, starts, starts_t, P_0, bias_0, P_1, bias_1, ...): h is (2C', rows), channel
    groups contiguous, tokens in window order; region i is its columns starts[i]:starts[i + 1]
    (T_i tokens, windows of n_i tokens), mixed by P_i (groups, n_i, n_i): baddbmm(bias_i, u as
    (groups, C'/groups x T_i/n_i, n_i), P_i^T), C' x T_i x n_i multiply-adds. The tensors are
    the node's inputs (h, starts_t, then the mixing); `starts`, a tuple of ints, is one of its
    scalar arguments."""
    starts = outputs[0].node().scalar_args()[0]
    gated = _shape(inputs[0])[0] // 2
    sizes = [_shape(P)[-1] for P in inputs[2::2]]
    return sum(gated * (end - start) * n
               for start, end, n in zip(starts[:-1], starts[1:], sizes))


def _no_flops(inputs: List[Any], outputs: List[Any]) -> int:
    """No multiply-adds: element-wise work (GQPE's scores and softmax)."""
    return 0


def _output_size(inputs: List[Any], outputs: List[Any]) -> int:
    """Activations: the elements of the output, as mmengine's generic_activation_jit."""
    return math.prod(_shape(outputs[0]))


POSMLP_FLOP_HANDLES: Dict[str, Callable] = {
    'prim::PythonOp._GeluGatedTokenMix': _python_op(posmlp._GeluGatedTokenMix, _gated_token_mix_flops),
    'prim::PythonOp._QuadraticSoftmax': _python_op(posmlp._QuadraticSoftmax, _no_flops),
}

# mmengine counts the outputs of convolutions and matrix products as activations
POSMLP_ACTIVATION_HANDLES: Dict[str, Callable] = {
    **POSMLP_FLOP_HANDLES,
    'prim::PythonOp._GeluGatedTokenMix': _python_op(posmlp._GeluGatedTokenMix, _output_size),
}


def register_flop_handles() -> None:
    """Add the handles above to mmengine's default FLOP and activation handle tables, so that
    every FlopAnalyzer / ActivationAnalyzer created afterwards (get_model_complexity_info,
    mmdet's get_flops.py) counts PosMLP fully. Keeps handles already in the tables, so it is
    idempotent and leaves a handle that mmengine or the user set."""
    for table, handles in ((_DEFAULT_SUPPORTED_FLOP_OPS, POSMLP_FLOP_HANDLES),
                           (_DEFAULT_SUPPORTED_ACT_OPS, POSMLP_ACTIVATION_HANDLES)):
        for name, handle in handles.items():
            table.setdefault(name, handle)
