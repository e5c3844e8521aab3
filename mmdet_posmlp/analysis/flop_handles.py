"""FLOP (and activation) counting of PosMLP by mmengine's jit analyzers, mmdet's get_flops too.

mmengine's ``FlopAnalyzer`` (fvcore's rules; behind ``get_model_complexity_info`` and mmdet's
``tools/analysis_tools/get_flops.py``) counts the operators of its handle table in a ``torch.jit``
trace. PosMLP's custom autograd Functions are opaque ``prim::PythonOp.<class name>`` nodes not in
it (``_GeluGatedTokenMix``: the token mixing, a batched product per region of same-shaped windows;
``_QuadraticSoftmax``, GQPE's scores and softmax: element-wise, no multiply-add).

:func:`register_flop_handles` adds their handles to mmengine's default tables, which every
``FlopAnalyzer`` / ``ActivationAnalyzer`` starts from; ``import mmdet_posmlp`` calls it, as mmdet's
get_flops.py runs no code of ours but the config's ``custom_imports``. Only names the tables lack
are added (a handle mmengine or the user set is kept); a foreign PythonOp of the same name stays
uncounted, with mmengine's usual warning. The handles count as mmengine does (complexity.py): a
multiply-add is one FLOP (torch's ``FlopCounterMode`` counts two), element-wise work is not counted.
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
    """_GeluGatedTokenMix(h, starts, starts_t, P_0, bias_0, P_1, bias_1, ...), as
    ``posmlp.gated_token_mix``: region i, columns starts[i]:starts[i + 1] of h (2C', rows), is T_i
    tokens in windows of n_i, mixed by P_i (groups, n_i, n_i): C' x T_i x n_i multiply-adds. The
    tensors are the node's inputs (h, starts_t, then the mixing); `starts`, a tuple of ints, is its
    first scalar argument."""
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
    """Add the handles above to mmengine's default tables, keeping those there (idempotent)."""
    for table, handles in ((_DEFAULT_SUPPORTED_FLOP_OPS, POSMLP_FLOP_HANDLES),
                           (_DEFAULT_SUPPORTED_ACT_OPS, POSMLP_ACTIVATION_HANDLES)):
        for name, handle in handles.items():
            table.setdefault(name, handle)
