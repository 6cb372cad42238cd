"""The importer's operator handlers: one small function per ONNX operator family on the data path,
and ``OP_RULES``, the registry from operator name to handler.

Every handler is affine in the data (MatMul, Gemm, Add/Sub/Mul/Div by a constant,
BatchNormalization, reshapes, Transpose, Identity, Dropout in inference mode, Cast to float) or
closes a layer (Relu); convolution, pooling and the other piecewise linear activations are in
:mod:`equivcheck.io.onnx_ops_cnn`, nodes reading several data tensors in
:mod:`equivcheck.io.onnx_ops_dag`. A handler checks its operands and attributes, updates the data's shape and
type, and composes its map into the :class:`~equivcheck.io.onnx_affine.DataPath`. The one map
that is not exact is BatchNormalization's (``1/sqrt(var+eps)`` is irrational): it is folded in
float64 and the network carries a note saying so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import numpy as np

from equivcheck.core.network import MAX_WIDTH, check_dense_size
from equivcheck.core.rational import fraction_array
from equivcheck.errors import ModelValueError, ShapeMismatchError, UnsupportedModelError
from equivcheck.io.onnx_affine import DataPath
from equivcheck.io.onnx_graph import FLOAT_TYPES
from equivcheck.io.onnx_sparse import MAX_PRODUCT_TERMS, csr_from_coo

NON_RELU_ACTIVATIONS = frozenset({
    "Sigmoid", "Tanh", "Elu", "Selu", "Celu", "Gelu", "HardSigmoid",
    "HardSwish", "Softplus", "Softsign", "Softmax", "LogSoftmax", "ThresholdedRelu",
    "Mish", "Swish", "Sin", "Cos", "Exp", "Log", "Abs", "Sqrt", "Erf",
})

Handler = Callable[[DataPath, object], None]


@dataclass(frozen=True)
class OpRule:
    """How the data path goes through one operator: its handler, whether the data may be any
    operand (binary operators; otherwise only the first), and the number of inputs allowed."""

    handle: Handler
    data_anywhere: bool = False
    min_inputs: int = 1
    max_inputs: int | None = None

    def accepts_inputs(self, count: int) -> bool:
        return self.min_inputs <= count and (self.max_inputs is None or count <= self.max_inputs)


OP_RULES: dict[str, OpRule] = {}


def _op(*names: str, binary: bool = False, min_inputs: int = 1) -> Callable[[Handler], Handler]:
    """Register the decorated handler for ``names`` (``binary``: exactly two inputs, the data
    either one of them)."""

    def register(fn: Handler) -> Handler:
        rule = OpRule(fn, data_anywhere=binary, min_inputs=2 if binary else min_inputs,
                      max_inputs=2 if binary else None)
        for name in names:
            OP_RULES[name] = rule
        return fn

    return register


def apply_op(path: DataPath, node) -> None:
    """Run the handler of ``node`` (which has the data as exactly one input) on ``path``;
    refuses an operator with no handler, the wrong number of inputs, or the data in a position
    the operator does not take it."""
    op = node.op_type
    where = path.where(node)
    rule = OP_RULES.get(op)
    if rule is None:
        if op in ("Softmax", "LogSoftmax"):
            raise UnsupportedModelError(
                f"{where}: {op} is supported only as the output head (the last node, computing "
                "the graph's output over all its values)"
            )
        if op in NON_RELU_ACTIVATIONS:
            raise UnsupportedModelError(
                f"{where}: activation {op} is not supported (only the piecewise linear Relu, "
                "LeakyRelu, PRelu and Clip)"
            )
        raise UnsupportedModelError(f"{where}: operator {op} is not supported")
    if not rule.accepts_inputs(len(node.input)):
        raise UnsupportedModelError(f"{where}: {op} with {len(node.input)} inputs")
    if not rule.data_anywhere and node.input[0] != path.tensor:
        raise UnsupportedModelError(
            f"{where}: the data path enters as input {list(node.input).index(path.tensor)} "
            "(only as the first input of this operator)"
        )
    rule.handle(path, node)


# -- layers and pass-through ---------------------------------------------------------------------
@_op("Relu")
def relu(path: DataPath, node) -> None:
    path.close_layer(relu=True, name=node.name or node.output[0])
    path.nonneg = True


@_op("Identity")
def identity(path: DataPath, node) -> None:
    pass


@_op("Dropout")
def dropout(path: DataPath, node) -> None:
    if path.ctx.dropout_training(node):
        raise UnsupportedModelError(
            f"{path.where(node)}: Dropout with training_mode true is random; only inference "
            "(training_mode false or absent) is supported"
        )


@_op("Cast")
def cast(path: DataPath, node) -> None:
    to = path.ctx.attr(node, "to", 1)
    if to not in FLOAT_TYPES:
        raise UnsupportedModelError(f"{path.where(node)}: Cast to element type {to} on the data path")
    path.dtype = FLOAT_TYPES[to]


# -- shape changes -------------------------------------------------------------------------------
@_op("Flatten")
def flatten(path: DataPath, node) -> None:
    axis = path.ctx.attr(node, "axis", 1)
    s = path.shape
    if not -len(s) <= axis <= len(s):
        raise ShapeMismatchError(f"{path.where(node)}: axis {axis} out of range for data of shape {s}")
    axis = axis + len(s) if axis < 0 else axis
    path.shape = (int(np.prod(s[:axis])), int(np.prod(s[axis:])))


@_op("Reshape")
def reshape(path: DataPath, node) -> None:
    where = path.where(node)
    if len(node.input) < 2 or not node.input[1]:
        raise ShapeMismatchError(f"{where}: Reshape without a target shape")
    value = path.ctx.const(node, node.input[1])
    if value.dtype.kind not in "iu":
        raise ModelValueError(f"{where}: target shape has dtype {value.dtype}, not int64")
    target = [int(v) for v in value.ravel()]
    if not path.ctx.attr(node, "allowzero", 0):
        if any(v == 0 and i >= len(path.shape) for i, v in enumerate(target)):
            raise ShapeMismatchError(
                f"{where}: target {target} copies a dimension (0) that data of "
                f"shape {path.shape} does not have"
            )
        target = [path.shape[i] if v == 0 else v for i, v in enumerate(target)]
    if any(v < -1 for v in target):
        raise ShapeMismatchError(f"{where}: target shape {target} has a dimension below -1")
    try:
        path.shape = np.empty(path.shape, dtype=np.uint8).reshape(target).shape
    except ValueError as exc:
        raise ShapeMismatchError(f"{where}: cannot reshape {path.shape} to {target} ({exc})") from None


def _axes(path: DataPath, node) -> list[int] | None:
    """The axes of Squeeze/Unsqueeze: the constant second input (opset 13) or the attribute."""
    if len(node.input) > 1 and node.input[1]:
        value = path.ctx.const(node, node.input[1])
        if value.dtype.kind not in "iu":
            raise ModelValueError(f"{path.where(node)}: axes have dtype {value.dtype}, not int64")
        return [int(a) for a in value.ravel()]
    axes = path.ctx.attr(node, "axes", None, "ints")
    return None if axes is None else [int(a) for a in axes]


@_op("Squeeze")
def squeeze(path: DataPath, node) -> None:
    axes = _axes(path, node)
    s = list(path.shape)
    if axes is None:
        path.shape = tuple(d for d in s if d != 1)
        return
    if any(not -len(s) <= a < len(s) for a in axes):
        raise ShapeMismatchError(f"{path.where(node)}: axes {axes} out of range for data of shape {tuple(s)}")
    axes = sorted(a + len(s) if a < 0 else a for a in axes)
    if any(s[a] != 1 for a in axes):
        raise ShapeMismatchError(
            f"{path.where(node)}: cannot squeeze axes {axes} of data of shape {tuple(s)} "
            "(only axes of size 1)"
        )
    path.shape = tuple(d for i, d in enumerate(s) if i not in axes)


@_op("Unsqueeze")
def unsqueeze(path: DataPath, node) -> None:
    axes = _axes(path, node) or []
    rank = len(path.shape) + len(axes)
    if any(not -rank <= a < rank for a in axes) or len({a % rank for a in axes}) != len(axes):
        raise ShapeMismatchError(
            f"{path.where(node)}: axes {axes} are out of range or repeated for data of shape {path.shape}"
        )
    s = list(path.shape)
    for a in sorted(a + rank if a < 0 else a for a in axes):
        s.insert(a, 1)
    path.shape = tuple(s)


@_op("Transpose")
def transpose(path: DataPath, node) -> None:
    perm = path.ctx.attr(node, "perm", None, "ints")
    if perm is not None and sorted(perm) != list(range(len(path.shape))):
        raise ModelValueError(
            f"{path.where(node)}: perm {list(perm)} is not a permutation of the "
            f"{len(path.shape)} axes of data of shape {path.shape}"
        )
    idx = np.arange(math.prod(path.shape)).reshape(path.shape)
    idx = idx.transpose(perm) if perm is not None else idx.T
    path.shape = idx.shape
    path.select(node, idx.ravel())


# -- elementwise arithmetic with a constant ------------------------------------------------------
def _broadcast_const(path: DataPath, node, c: np.ndarray) -> np.ndarray:
    """``c`` broadcast to the data's shape, flat; refuses a constant that does not broadcast or
    that would enlarge the data."""
    try:
        out_shape = np.broadcast_shapes(path.shape, c.shape)
    except ValueError:
        raise ShapeMismatchError(
            f"{path.where(node)}: constant of shape {c.shape} does not broadcast to data shape {path.shape}"
        ) from None
    if int(np.prod(out_shape)) != int(np.prod(path.shape)):
        raise ShapeMismatchError(
            f"{path.where(node)}: constant of shape {c.shape} enlarges the data shape {path.shape}"
        )
    path.shape = tuple(out_shape)
    return np.broadcast_to(c, out_shape).ravel()


def _const_operand(path: DataPath, node) -> tuple[np.ndarray, bool]:
    """The constant operand of a binary op (float64) and whether the data is the first operand."""
    data_first = node.input[0] == path.tensor
    other = node.input[1] if data_first else node.input[0]
    return np.asarray(path.typed_const(node, other), dtype=np.float64), data_first


@_op("Add", binary=True)
def add(path: DataPath, node) -> None:
    c, _ = _const_operand(path, node)
    path.apply_elementwise(None, _broadcast_const(path, node, c))


@_op("Sub", binary=True)
def sub(path: DataPath, node) -> None:
    c, data_first = _const_operand(path, node)
    c = _broadcast_const(path, node, c)
    if data_first:
        path.apply_elementwise(None, -c)
    else:
        path.apply_elementwise(-np.ones_like(c), c)


@_op("Mul", binary=True)
def mul(path: DataPath, node) -> None:
    c, _ = _const_operand(path, node)
    path.apply_elementwise(_broadcast_const(path, node, c), None)


@_op("Div", binary=True)
def div(path: DataPath, node) -> None:
    c, data_first = _const_operand(path, node)
    if not data_first:
        raise UnsupportedModelError(f"{path.where(node)}: division by the data is not affine")
    c = _broadcast_const(path, node, c)
    if np.any(c == 0):
        raise ModelValueError(f"{path.where(node)}: division by zero constant")
    inv = np.empty(c.size, dtype=object)
    inv[:] = [1 / Fraction(float(v)) for v in c]
    path.apply_elementwise(inv, None)


# -- dense maps ----------------------------------------------------------------------------------
@_op("MatMul", binary=True)
def matmul(path: DataPath, node) -> None:
    where = path.where(node)
    data_first = node.input[0] == path.tensor
    w = np.asarray(path.typed_const(node, node.input[1] if data_first else node.input[0]), dtype=np.float64)
    s = path.shape
    if w.ndim != 2:
        raise UnsupportedModelError(f"{where}: MatMul with a rank-{w.ndim} constant")
    if data_first:
        # data (..., k) @ w (k, n)
        if len(s) == 0 or s[-1] != w.shape[0]:
            raise ShapeMismatchError(f"{where}: data shape {s} @ weight shape {w.shape}")
        rows = math.prod(s[:-1]) if len(s) > 1 else 1
        path.shape = tuple(s[:-1]) + (w.shape[1],)
        if rows > 1:  # the same map on each row: block diagonal, sparse
            _block_sparse(path, node, rows, w.T, 1)
            return
        check_dense_size(w.shape[1], w.shape[0], where)
        flat = w.T
    elif len(s) <= 1:
        # w (m, k) @ data (k,)
        if s != (w.shape[1],):
            raise ShapeMismatchError(f"{where}: weight shape {w.shape} @ data shape {s}")
        flat = w
        path.shape = (w.shape[0],)
    else:
        # w (m, k) @ data (..., k, c)
        if s[-2] != w.shape[1]:
            raise ShapeMismatchError(f"{where}: weight shape {w.shape} @ data shape {s}")
        batch = math.prod(s[:-2]) if len(s) > 2 else 1
        path.shape = tuple(s[:-2]) + (w.shape[0], s[-1])
        if batch * s[-1] > 1:  # w on each column of each batch: kron(I, w, I), sparse
            _block_sparse(path, node, batch, w, s[-1])
            return
        check_dense_size(w.shape[0], w.shape[1], where)
        flat = w
    path.apply_dense(node, flat, None)


def _block_sparse(path: DataPath, node, outer: int, w: np.ndarray, inner: int) -> None:
    """data <- kron(I_outer, w, I_inner) @ data, as a sparse map; refuses it past ``MAX_WIDTH``
    values or ``MAX_PRODUCT_TERMS`` weights before building it."""
    m, k = w.shape
    count = outer * inner
    for n in (count * m, count * k):
        if n > MAX_WIDTH:
            raise UnsupportedModelError(
                f"{path.where(node)}: the data would have {n:,} values; equivcheck handles "
                f"widths up to {MAX_WIDTH:,}"
            )
    if count * m * k > MAX_PRODUCT_TERMS:
        raise UnsupportedModelError(
            f"{path.where(node)}: the map has {count * m * k:,} weights once unrolled "
            f"(equivcheck handles up to {MAX_PRODUCT_TERMS:,} per layer)"
        )
    import scipy.sparse as sp

    big = sp.kron(sp.kron(sp.identity(outer), sp.coo_array(w)), sp.identity(inner), format="coo")
    lin, _ = csr_from_coo(big.row, big.col, big.data, big.shape)
    path.apply_sparse(node, lin, None, None)


@_op("Gemm", min_inputs=2)
def gemm(path: DataPath, node) -> None:
    where, attr = path.where(node), path.ctx.attr
    alpha = float(attr(node, "alpha", 1.0))
    beta = float(attr(node, "beta", 1.0))
    trans_a = attr(node, "transA", 0)
    trans_b = attr(node, "transB", 0)
    b = np.asarray(path.typed_const(node, node.input[1]), dtype=np.float64)
    if b.ndim != 2:
        raise ShapeMismatchError(f"{where}: Gemm weight has shape {b.shape}")
    bt = b.T if trans_b else b  # (k, n)
    s = path.shape
    if len(s) != 2:
        raise ShapeMismatchError(f"{where}: Gemm needs rank-2 data, got shape {s}")
    rows, k = (s[1], s[0]) if trans_a else (s[0], s[1])
    if rows != 1:
        raise UnsupportedModelError(f"{where}: Gemm on {rows} rows of data (only one)")
    if k != bt.shape[0]:
        raise ShapeMismatchError(f"{where}: data shape {s} does not fit weight {b.shape}")
    path.shape = (1, bt.shape[1])
    c = None
    if len(node.input) > 2 and node.input[2]:  # C's shape is checked even when beta is 0
        c_value = np.asarray(path.typed_const(node, node.input[2]), np.float64)
        try:
            c = np.broadcast_to(c_value, (1, bt.shape[1])).ravel()
        except ValueError:
            raise ShapeMismatchError(
                f"{where}: C of shape {c_value.shape} does not broadcast to the "
                f"output shape {(1, bt.shape[1])}"
            ) from None
        if beta == 0.0:
            c = None
    if alpha == 1.0 and beta == 1.0:
        path.apply_dense(node, bt.T.copy(), c)
        return
    path.apply_dense(node, bt.T.copy(), None)
    if alpha != 1.0:
        path.apply_elementwise(np.full(bt.shape[1], alpha), None)
    if c is not None:
        shift = fraction_array(c) * Fraction(beta) if beta != 1.0 else c
        path.apply_elementwise(None, shift)


@_op("BatchNormalization")
def batch_normalization(path: DataPath, node) -> None:
    where, attr = path.where(node), path.ctx.attr
    if attr(node, "training_mode", 0) or attr(node, "is_test", 1) == 0 or any(node.output[1:]):
        raise UnsupportedModelError(
            f"{where}: BatchNormalization in training mode is not supported "
            "(only inference: training_mode 0 and no running-statistics outputs)"
        )
    if len(node.input) != 5:
        raise ShapeMismatchError(f"{where}: BatchNormalization needs 5 inputs, has {len(node.input)}")
    eps = float(attr(node, "epsilon", 1e-5))
    # onnxruntime has kernels only for parameters of the data's type
    scale, bias, mean, var = (np.asarray(path.typed_const(node, n), np.float64) for n in node.input[1:5])
    if len(path.shape) < 2:
        raise ShapeMismatchError(f"{where}: BatchNormalization on data of shape {path.shape}")
    channels = path.shape[1]
    for pname, value in zip(("scale", "B", "input_mean", "input_var"), (scale, bias, mean, var)):
        if value.shape != (channels,):
            raise ShapeMismatchError(
                f"{where}: {pname} has shape {value.shape}, expected ({channels},) "
                f"for data of shape {path.shape}"
            )
    if np.any(var < 0):
        raise ModelValueError(
            f"{where}: input_var '{node.input[4]}' contains the negative variance "
            f"{float(var[var < 0][0]):g}"
        )
    if np.any(var + eps <= 0):
        raise ModelValueError(f"{where}: var + epsilon ({eps:g}) is not positive")
    mult = scale / np.sqrt(var + eps)
    shift = bias - mean * mult
    view = (1, -1) + (1,) * (len(path.shape) - 2)
    s = _broadcast_const(path, node, mult.reshape(view))
    t = _broadcast_const(path, node, shift.reshape(view))
    path.notes.append(
        f"BatchNormalization '{node.name or node.output[0]}' was folded in float64 "
        "(1/sqrt(var+eps) is irrational); proofs hold for the folded weights"
    )
    path.apply_elementwise(s, None)
    path.apply_elementwise(None, t)
