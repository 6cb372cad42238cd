"""QOperator nodes (QLinearConv, QLinearMatMul, QGemm, QLinearAdd, QLinearAveragePool, ...):
each is lowered as DequantizeLinear of its operands -> the float operator -> QuantizeLinear of
its output, in the exact semantics of :mod:`equivcheck.io.onnx_qgrid`.

Integer data operands are read back with the node's own ``(scale, zero point)``
(:func:`~equivcheck.io.onnx_quant.dequantize`); integer constants (weights) are dequantized
exactly, per output channel when their scale is a vector. The int32 bias of QLinearConv and
QGemm has, as the spec says, zero point 0 and scale ``x_scale * w_scale`` (per output channel;
QGemm: ``alpha * a_scale * b_scale``): it is added as the exact rational product (onnxruntime
rounds that product to float32; the spec's value is the exact one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from equivcheck.errors import ShapeMismatchError, UnsupportedModelError
from equivcheck.io.onnx_affine import DataPath
from equivcheck.io.onnx_qgrid import fold_dequantize, grid_of, refuse_quantized


@dataclass(frozen=True)
class QOp:
    """How one QOperator lowers: the float operator; its operands as (value, scale, zero point)
    input indices (``None``: the node's inputs from index 2 on, in threes: QLinearConcat); the
    output's (scale, zero point) indices (None: a float output); the int32 bias input; the
    axis of a constant operand's per-channel scale (by operand); the inputs of the float
    operator past the operands."""

    float_op: str
    operands: tuple[tuple[int, int, int], ...] | None
    out: tuple[int, int] | None
    bias: int | None = None
    axes: tuple[int, ...] = ()


QOPS: dict[str, QOp] = {
    "QLinearConv": QOp("Conv", ((0, 1, 2), (3, 4, 5)), (6, 7), bias=8, axes=(0, 0)),
    "QLinearMatMul": QOp("MatMul", ((0, 1, 2), (3, 4, 5)), (6, 7), axes=(-1, -1)),
    "QGemm": QOp("Gemm", ((0, 1, 2), (3, 4, 5)), (7, 8), bias=6),
    "QLinearAdd": QOp("Add", ((0, 1, 2), (3, 4, 5)), (6, 7)),
    "QLinearMul": QOp("Mul", ((0, 1, 2), (3, 4, 5)), (6, 7)),
    "QLinearAveragePool": QOp("AveragePool", ((0, 1, 2),), (3, 4)),
    "QLinearGlobalAveragePool": QOp("GlobalAveragePool", ((0, 1, 2),), (3, 4)),
    "QLinearLeakyRelu": QOp("LeakyRelu", ((0, 1, 2),), (3, 4)),
    "QLinearConcat": QOp("Concat", None, (0, 1)),
}


def _input(node, k: int) -> str | None:
    return node.input[k] if len(node.input) > k and node.input[k] else None


def visit_qop(path: DataPath, node) -> bool:
    """Lower ``node`` when it is a QOperator node (refused without ``quantized_ok``); returns
    False for any other node."""
    if node.op_type not in QOPS or node.domain not in ("", "ai.onnx", "com.microsoft"):
        return False
    refuse_quantized(path, node)
    lower_qop(path, node)
    return True


def lower_qop(path: DataPath, node) -> None:
    """Apply the QOperator ``node`` to the data (see the module doc); the data then holds the
    output integers (or, for a QGemm without an output scale, the real result)."""
    from onnx import helper

    from equivcheck.io.onnx_ops import apply_op
    from equivcheck.io.onnx_ops_dag import MULTI_DATA_OPS
    from equivcheck.io.onnx_quant import dequantize, quantize

    spec, ctx, where = QOPS[node.op_type], path.ctx, path.where(node)
    if ctx.attr(node, "channels_last", 0):
        raise UnsupportedModelError(f"{where}: channels_last is not supported")
    operands = spec.operands or tuple((k, k + 1, k + 2) for k in range(2, len(node.input), 3))
    names, data, scales = [], [], []
    for j, (xi, si, zi) in enumerate(operands):
        x = _input(node, xi)
        if x is None or _input(node, si) is None:
            raise ShapeMismatchError(f"{where}: input {xi} or its scale is missing")
        syn = f"{x}#dq{path.index}"
        if x in path.live:
            path.load(x)
            if not path.integer:
                raise UnsupportedModelError(f"{where}: input '{x}' is not integer data")
            dequantize(path, node, grid_of(ctx, node, path.shape, node.input[si], _input(node, zi),
                                           default_type=np.dtype(path.grid.int_type), axis=1))
            path.store(syn)
            path.last_use[syn] = path.index
            data.append(syn)
        else:
            axis = spec.axes[j] if j < len(spec.axes) else 1
            if spec.float_op == "Gemm" and j == 1:
                axis = 0 if ctx.attr(node, "transB", 0) else 1
            fake = helper.make_node("DequantizeLinear", [x, node.input[si]] + ([_input(node, zi)] if _input(node, zi) else []),
                                    [syn], name=node.name or node.output[0], axis=axis)
            value, ftype, exact = fold_dequantize(ctx, fake, axis_opset=0)  # the QOperator's rule
            ctx.consts[syn], ctx.dequantized[syn] = value, (ftype, exact)
        names.append(syn)
        scales.append(ctx.const(node, node.input[si]))
    attrs = [a for a in node.attribute if a.name != "channels_last"]
    fake = helper.make_node(spec.float_op, names, [node.output[0]], name=node.name or node.output[0])
    fake.attribute.extend(attrs)
    if spec.float_op == "Concat" or len(data) > 1:
        if spec.float_op not in MULTI_DATA_OPS:
            raise UnsupportedModelError(f"{where}: {node.op_type} of two data tensors is not supported")
        MULTI_DATA_OPS[spec.float_op](path, fake)
    else:
        path.load(data[0])
        apply_op(path, fake)
    path.nonneg, path.grid, path.integer = False, None, False
    if spec.bias is not None and _input(node, spec.bias):
        _add_bias(path, node, spec, scales)
    if spec.out is not None and _input(node, spec.out[0]):
        si, zi = spec.out
        quantize(path, node, grid_of(ctx, node, path.shape, node.input[si], _input(node, zi), axis=1))


def _add_bias(path: DataPath, node, spec: QOp, scales: list[np.ndarray]) -> None:
    """Add the int32 bias ``B * x_scale * w_scale`` (per output channel), exactly."""
    ctx, where = path.ctx, path.where(node)
    b = ctx.const(node, node.input[spec.bias])
    channels = path.shape[1] if len(path.shape) > 1 else path.shape[0]
    if b.dtype.name != "int32" or b.ndim != 1 or b.size != channels:
        raise ShapeMismatchError(f"{where}: bias of type {b.dtype} and shape {b.shape} for {channels} channels")
    x_s, w_s = scales[0], scales[1]
    if x_s.size != 1 or w_s.size not in (1, channels):
        raise ShapeMismatchError(f"{where}: scales of shapes {x_s.shape} and {w_s.shape}")
    alpha = Fraction(float(ctx.attr(node, "alpha", 1.0))) if spec.float_op == "Gemm" else Fraction(1)
    sx = Fraction(float(x_s.ravel()[0]))
    ws = np.broadcast_to(w_s.astype(np.float64).ravel(), (channels,))
    per_channel = [int(v) * alpha * sx * Fraction(float(s)) for v, s in zip(b, ws)]
    inner = math.prod(path.shape) // channels
    shift = np.empty(channels * inner, dtype=object)
    shift[:] = [v for v in per_channel for _ in range(inner)]
    path.apply_elementwise(None, shift)
