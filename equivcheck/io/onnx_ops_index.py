"""Importer handlers that select or sum values of the data: Gather and Slice by constant
indices, ReduceSum and ReduceMean over constant axes. Each is an exact sparse linear map
(a selection, or sums with weights 1 or 1/count) composed into the pending map.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from equivcheck.errors import ModelValueError, ShapeMismatchError, UnsupportedModelError
from equivcheck.io.onnx_affine import DataPath
from equivcheck.io.onnx_ops import _op
from equivcheck.io.onnx_ops_cnn import check_width
from equivcheck.io.onnx_sparse import csr_from_coo

# these keep a non-negative input non-negative
INDEX_OPS = frozenset({"Gather", "Slice", "ReduceSum", "ReduceMean"})


def _int_const(path: DataPath, node, k: int, what: str) -> list[int] | None:
    """The constant integer input ``k`` of ``node`` as a list, None when absent."""
    if len(node.input) <= k or not node.input[k]:
        return None
    value = path.ctx.const(node, node.input[k])
    if value.dtype.kind not in "iu":
        raise ModelValueError(f"{path.where(node)}: {what} have dtype {value.dtype}, not int64")
    return [int(v) for v in value.ravel()]


def _axes(path: DataPath, node, names: list[int] | None) -> list[int]:
    rank = len(path.shape)
    if any(not -rank <= a < rank for a in names) or len({a % rank for a in names}) != len(names):
        raise ShapeMismatchError(
            f"{path.where(node)}: axes {names} are out of range or repeated for data of shape {path.shape}"
        )
    return sorted(a % rank for a in names)


@_op("Gather", min_inputs=2)
def gather(path: DataPath, node) -> None:
    where, s = path.where(node), path.shape
    value = path.ctx.const(node, node.input[1])
    if value.dtype.kind not in "iu":
        raise ModelValueError(f"{where}: indices have dtype {value.dtype}, not int64")
    axis = path.ctx.attr(node, "axis", 0)
    if not -len(s) <= axis < len(s):
        raise ShapeMismatchError(f"{where}: axis {axis} out of range for data of shape {s}")
    axis %= len(s)
    idx = value.astype(np.int64)
    if np.any((idx < -s[axis]) | (idx >= s[axis])):
        raise ShapeMismatchError(f"{where}: an index is out of range for axis {axis} of size {s[axis]}")
    out = s[:axis] + idx.shape + s[axis + 1:]
    check_width(path, node, math.prod(out), out)
    src = np.take(np.arange(math.prod(s)).reshape(s), idx % s[axis], axis=axis)
    path.select(node, src.ravel())
    path.shape = tuple(src.shape)


@_op("Slice")
def slice_(path: DataPath, node) -> None:
    where, s = path.where(node), path.shape
    if len(node.input) > 1:  # opset 10 on: starts, ends, axes, steps as inputs
        starts, ends = _int_const(path, node, 1, "starts"), _int_const(path, node, 2, "ends")
        axes, steps = _int_const(path, node, 3, "axes"), _int_const(path, node, 4, "steps")
    else:
        starts, ends = path.ctx.attr(node, "starts", None, "ints"), path.ctx.attr(node, "ends", None, "ints")
        axes, steps = path.ctx.attr(node, "axes", None, "ints"), None
    if starts is None or ends is None or len(starts) != len(ends):
        raise ShapeMismatchError(f"{where}: Slice needs starts and ends of one length")
    axes = _axes(path, node, axes if axes is not None else list(range(len(starts))))
    steps = steps if steps is not None else [1] * len(starts)
    if len(axes) != len(starts) or len(steps) != len(starts) or 0 in steps:
        raise ShapeMismatchError(f"{where}: starts {starts}, ends {ends}, axes {axes}, steps {steps} disagree")
    src = np.arange(math.prod(s)).reshape(s)
    for a, b, e, st in zip(axes, starts, ends, steps):
        src = np.take(src, np.arange(*slice(b, e, st).indices(s[a])), axis=a)  # ONNX clamps like Python
    path.select(node, src.ravel())
    path.shape = tuple(src.shape)


@_op("ReduceSum", "ReduceMean")
def reduce_sum_mean(path: DataPath, node) -> None:
    where, s = path.where(node), path.shape
    opset = next((o.version for o in path.ctx.proto.opset_import if o.domain in ("", "ai.onnx")), 18)
    from_input = opset >= (13 if node.op_type == "ReduceSum" else 18)
    axes = _int_const(path, node, 1, "axes") if from_input else path.ctx.attr(node, "axes", None, "ints")
    if axes is None or not axes:
        if from_input and path.ctx.attr(node, "noop_with_empty_axes", 0):
            return
        axes = list(range(len(s)))
    axes = _axes(path, node, list(axes))
    keep = path.ctx.attr(node, "keepdims", 1)
    kept = tuple(1 if i in axes else d for i, d in enumerate(s))
    count = math.prod(s[a] for a in axes)
    if count == 0:
        raise UnsupportedModelError(f"{where}: {node.op_type} over an empty axis")
    rows = np.broadcast_to(np.arange(math.prod(kept)).reshape(kept), s).ravel()
    n = math.prod(s)
    q = None
    if node.op_type == "ReduceMean" and count & (count - 1):  # 1/count is not a float
        q = np.full(n, Fraction(1, count), dtype=object)
    lin, lin_q = csr_from_coo(rows, np.arange(n), np.full(n, 1.0 if node.op_type == "ReduceSum" else 1.0 / count),
                              (math.prod(kept), n), q=q)
    path.apply_sparse(node, lin, lin_q, None)
    path.shape = kept if keep else tuple(d for i, d in enumerate(s) if i not in axes)
