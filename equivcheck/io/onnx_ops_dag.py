"""Importer handlers for nodes reading several data tensors: Add and Sub of two branches (a
residual block's skip connection), Concat of branches and constants; and Shape of a data
tensor, whose value is a constant (exporters write ``x.view(x.size(0), -1)`` this way).

All live data tensors are affine maps of the same anchor (the last layer's outputs, see
:class:`~equivcheck.io.onnx_affine.DataPath`), so the operands' maps are stacked and combined
exactly; a constant operand is a map with no weights.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from equivcheck.errors import ModelValueError, ShapeMismatchError, UnsupportedModelError
from equivcheck.io.onnx_affine import DataPath, MapKind, PendingMap
from equivcheck.io.onnx_ops_cnn import check_width, sparse_eye, sparse_hstack
from equivcheck.io.onnx_sparse import csr_from_coo, exact_vstack


def _operand(path: DataPath, node, name: str, dtype: str | None):
    """``(shape, map, nonneg, dtype)`` of an operand: a live data tensor (its map copied) or a
    constant (a map with no weights)."""
    n = next(path.live[i].pending.n for i in node.input if i in path.live)
    if name in path.live:
        t = path.live[name]
        return t.shape, dataclasses.replace(t.pending), t.nonneg, t.dtype
    c = path.ctx.const(node, name)
    ctype = c.dtype.name
    mark = path.ctx.dequantized.get(name)
    if mark is not None:  # a dequantized constant, held exactly in float64
        if not mark[1]:
            raise ModelValueError(
                f"{path.where(node)}: constant '{name}' is dequantized to values float64 cannot "
                "hold exactly; not supported")
        ctype = mark[0]
    if dtype is not None and ctype != dtype:
        raise ModelValueError(
            f"{path.where(node)}: constant '{name}' has type {c.dtype} but the data is {dtype} "
            "(all operands must have one type)"
        )
    flat = np.asarray(c, dtype=np.float64).ravel()
    k = flat.size
    w = csr_from_coo(np.arange(k), np.full(k, n), flat, (k, n + 1))[0]
    return c.shape, PendingMap(n=n, kind=MapKind.SPARSE, w=w), bool(np.all(flat >= 0)), ctype


def _data_dtype(path: DataPath, node) -> str:
    types = {path.live[i].dtype for i in node.input if i in path.live}
    if len(types) > 1:
        raise ModelValueError(f"{path.where(node)}: data operands of types {sorted(types)}")
    return types.pop()


def _stack(maps) -> PendingMap:
    w, q = exact_vstack([m.augmented() for m in maps])
    return PendingMap(n=maps[0].n, kind=MapKind.SPARSE, w=w, q=q)


def add_sub(path: DataPath, node) -> None:
    """Add or Sub of two operands, at least one a data tensor (broadcasting)."""
    where = path.where(node)
    if len(node.input) != 2:
        raise UnsupportedModelError(f"{where}: {node.op_type} with {len(node.input)} inputs")
    dtype = _data_dtype(path, node)
    ops = [_operand(path, node, name, dtype) for name in node.input]
    try:
        shape = tuple(np.broadcast_shapes(ops[0][0], ops[1][0]))
    except ValueError:
        raise ShapeMismatchError(f"{where}: operands of shapes {ops[0][0]} and {ops[1][0]} do not broadcast") from None
    size = math.prod(shape)
    check_width(path, node, size, shape)
    for s, pm, _, _ in ops:
        pm.select(np.broadcast_to(np.arange(math.prod(s)).reshape(s), shape).ravel(), None, where)
    sign = 1.0 if node.op_type == "Add" else -1.0
    combine = sparse_hstack(sparse_eye(size), sparse_eye(size, sign))
    path.pending = _stack([ops[0][1], ops[1][1]])
    path.apply_sparse(node, combine, None, None)
    path.shape, path.dtype = shape, dtype
    path.nonneg = node.op_type == "Add" and ops[0][2] and ops[1][2]


def concat(path: DataPath, node) -> None:
    """Concat of data tensors and constants along one axis."""
    where = path.where(node)
    dtype = _data_dtype(path, node)
    ops = [_operand(path, node, name, dtype) for name in node.input if name]
    rank = len(ops[0][0])
    axis = path.ctx.attr(node, "axis", None)
    if axis is None or not -rank <= axis < rank:
        raise ShapeMismatchError(f"{where}: axis {axis} out of range for rank {rank}")
    axis %= rank
    shapes = [s for s, _, _, _ in ops]
    if any(len(s) != rank or s[:axis] + s[axis + 1:] != shapes[0][:axis] + shapes[0][axis + 1:] for s in shapes):
        raise ShapeMismatchError(f"{where}: shapes {shapes} do not concatenate along axis {axis}")
    offsets = np.cumsum([0] + [math.prod(s) for s in shapes])
    index = np.concatenate([off + np.arange(math.prod(s)).reshape(s) for off, s in zip(offsets, shapes)], axis)
    check_width(path, node, index.size, index.shape)
    path.pending = _stack([pm for _, pm, _, _ in ops])
    path.select(node, index.ravel())
    path.shape, path.dtype = index.shape, dtype
    path.nonneg = all(nn for _, _, nn, _ in ops)


# operators reading several data tensors (or one twice), or data and constants in any position
MULTI_DATA_OPS = {"Add": add_sub, "Sub": add_sub, "Concat": concat}


def shape_of(path: DataPath, node) -> None:
    """Shape of a data tensor: the constant shape the importer walks with (symbolic dimensions
    as 1, the batch the network computes), sliced by ``start``/``end`` (opset 15)."""
    if len(node.input) != 1:
        raise UnsupportedModelError(f"{path.where(node)}: Shape with {len(node.input)} inputs")
    shape = path.live[node.input[0]].shape
    start = path.ctx.attr(node, "start", 0)
    end = path.ctx.attr(node, "end", None)
    path.ctx.consts[node.output[0]] = np.array(shape[slice(start, end)], dtype=np.int64)
