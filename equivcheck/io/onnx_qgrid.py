"""Quantization grids of the ONNX importer: the ``(scale, zero point, integer range)`` of a
``QuantizeLinear``/``DequantizeLinear`` node read from its constant operands, and the exact
folding of those two operators when their input is a constant.

The semantics are the ONNX spec's read in exact rational arithmetic:

* ``DequantizeLinear(x, s, zp) = (x - zp) * s``;
* ``QuantizeLinear(v, s, zp) = clip(round_half_even(v / s) + zp, qmin, qmax)`` with
  ``[qmin, qmax]`` the range of the zero point's integer type.

A scale is stored as a float, so ``Fraction(s)`` is exact. ``(x - zp) * s`` is exact in float64
whenever ``|x - zp| * s`` needs at most 53 significant bits (always for 8- and 16-bit integers
and float32 scales); a dequantized constant that float64 cannot hold exactly is marked so and
refused where it is used (:meth:`~equivcheck.io.onnx_affine.DataPath.typed_const`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from equivcheck.core.quantized import Quantizer
from equivcheck.errors import ModelValueError, ShapeMismatchError, UnsupportedModelError

# integer types a quantized value may have, with their ranges
INT_RANGES = {
    "int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767), "uint16": (0, 65535),
}
# TensorProto codes of the integer types above (QuantizeLinear's ``output_dtype``)
INT_CODES = {3: "int8", 2: "uint8", 5: "int16", 4: "uint16"}
FLOAT_SCALE_TYPES = {"float32": "float32", "float64": "float64", "float16": "float16"}


@dataclass(frozen=True, eq=False)
class QGrid:
    """Per unit (flat C order) the scale (exact ``Fraction`` s, object array) and the integer
    zero point, the integer type's range, the integer type and the float type dequantizing
    gives. A tensor *on* this grid holds only values ``s_i * (k - zp_i)``, ``k`` an integer in
    ``[qmin, qmax]``: ``Q`` with the same grid leaves such a value unchanged."""

    scale: np.ndarray
    zero_point: np.ndarray
    qmin: int
    qmax: int
    int_type: str
    float_type: str

    @property
    def n(self) -> int:
        return len(self.scale)

    def same(self, other: QGrid) -> bool:
        """True when both grids round every unit to the same values and range."""
        return (self.n == other.n and (self.qmin, self.qmax) == (other.qmin, other.qmax)
                and np.array_equal(self.zero_point, other.zero_point)
                and bool(np.all(self.scale == other.scale)))

    def uniform(self) -> bool:
        """One ``(s, zp)`` for every unit (a per-tensor quantization)."""
        return self.n == 0 or (bool(np.all(self.scale == self.scale[0]))
                               and bool(np.all(self.zero_point == self.zero_point[0])))

    def resized(self, n: int) -> QGrid:
        """The uniform grid on ``n`` units (the grid of moved or selected values)."""
        return QGrid(np.full(n, self.scale[0], dtype=object), np.full(n, int(self.zero_point[0])),
                     self.qmin, self.qmax, self.int_type, self.float_type)

    def nonneg(self) -> bool:
        """True when every value on the grid is >= 0 (``zp == qmin``: a ReLU folded into the range)."""
        return bool(np.all(self.zero_point == self.qmin))

    def quantizer(self, name: str) -> Quantizer:
        return Quantizer(self.scale, self.zero_point, self.qmin, self.qmax, name)


def refuse_quantized(path, node) -> None:
    """Without ``quantized_ok`` (a DataPath's), the first quantizing node refuses the model."""
    if not path.quantized_ok:
        raise UnsupportedModelError(
            f"{path.where(node)}: a quantized model ({node.op_type}): only `prove`, `audit`, "
            "`compress` and the pytest plugin take quantized models")


def concat_grids(grids: list[QGrid]) -> QGrid:
    """The grids of consecutive units, one after the other (one integer range)."""
    g0 = grids[0]
    return QGrid(np.concatenate([g.scale for g in grids]), np.concatenate([g.zero_point for g in grids]),
                 g0.qmin, g0.qmax, g0.int_type, g0.float_type)


def int_range(dtype: np.dtype, where: str) -> tuple[int, int]:
    """``[qmin, qmax]`` of a quantized integer type; refuses float8, 4-bit and other types."""
    name = np.dtype(dtype).name
    if name in INT_RANGES:
        return INT_RANGES[name]
    if "float8" in name or "float4" in name or "e4m3" in name or "e5m2" in name:
        raise UnsupportedModelError(f"{where}: float8 quantization ({name}) is not supported (only integer types)")
    raise UnsupportedModelError(
        f"{where}: quantized type {name} is not supported (only int8, uint8, int16, uint16)")


def _fractions(values: np.ndarray) -> np.ndarray:
    """Exact ``Fraction`` s of float values, one object per distinct value."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    uniq, inv = np.unique(flat, return_inverse=True)
    fr = np.empty(len(uniq), dtype=object)
    fr[:] = [Fraction(float(v)) for v in uniq]
    return fr[inv.reshape(-1)]


def broadcast_params(ctx, node, shape: tuple[int, ...], axis: int, scale_name: str,
                     zp_name: str | None, axis_opset: int = 13) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str]:
    """Scale (float64) and zero point (int64, None when absent) broadcast to ``shape`` (per
    tensor, or per axis along ``axis``), the zero point's dtype name (None when absent) and
    the scale's float type. Refuses blocked quantization, shapes that do not fit, and per-axis
    scales before opset ``axis_opset`` (13 for QuantizeLinear/DequantizeLinear)."""
    where = ctx.where(node)
    if ctx.attr(node, "block_size", 0):
        raise UnsupportedModelError(f"{where}: blocked quantization (block_size) is not supported")
    s = ctx.const(node, scale_name)
    if s.dtype.name not in FLOAT_SCALE_TYPES:
        raise ModelValueError(f"{where}: scale '{scale_name}' has type {s.dtype} (a float type is required)")
    zp = ctx.const(node, zp_name) if zp_name else None
    if zp is not None and zp.size != s.size:
        raise ShapeMismatchError(f"{where}: {s.size} scales but {zp.size} zero points")
    if s.size == 1:
        sv = np.full(shape, float(s.ravel()[0]))
        zv = None if zp is None else np.full(shape, int(zp.ravel()[0]), dtype=np.int64)
    else:
        opset = next((o.version for o in ctx.proto.opset_import if o.domain in ("", "ai.onnx")), 0)
        if opset < axis_opset:
            raise ModelValueError(f"{where}: per-axis scales need opset {axis_opset} (the model has opset "
                                  f"{opset}; onnxruntime refuses it too)")
        rank = len(shape)
        ax = axis + rank if axis < 0 else axis
        if s.ndim != 1 or not 0 <= ax < rank or shape[ax] != s.size:
            raise ShapeMismatchError(
                f"{where}: scale of shape {s.shape} does not fit axis {axis} of data of shape {shape}")
        view = [1] * rank
        view[ax] = -1
        sv = np.broadcast_to(s.astype(np.float64).reshape(view), shape)
        zv = None if zp is None else np.broadcast_to(zp.astype(np.int64).reshape(view), shape)
    if not np.all(np.isfinite(sv)) or np.any(sv <= 0):
        raise ModelValueError(f"{where}: scale '{scale_name}' is not a positive finite number")
    return sv, zv, (None if zp is None else zp.dtype), s.dtype.name


def grid_of(ctx, node, shape: tuple[int, ...], scale_name: str, zp_name: str | None,
            default_type: np.dtype | None = None, axis: int | None = None) -> QGrid:
    """The grid of a QuantizeLinear/DequantizeLinear (or a QOperator's operand) on data of
    ``shape``: the zero point's type gives the range (absent: ``default_type``, else the
    ``output_dtype`` attribute, else uint8, as ONNX says)."""
    where = ctx.where(node)
    ax = ctx.attr(node, "axis", 1) if axis is None else axis
    sv, zv, ztype, ftype = broadcast_params(ctx, node, tuple(shape), ax, scale_name, zp_name)
    if ztype is None:
        code = ctx.attr(node, "output_dtype", 0) if node.op_type == "QuantizeLinear" else 0
        if default_type is not None:
            ztype = np.dtype(default_type)
        elif code:
            if code not in INT_CODES:
                int_range(np.dtype("float32") if code > 16 else np.dtype("int32"), where)
            ztype = np.dtype(INT_CODES[code])
        else:
            ztype = np.dtype("uint8")
        zv = np.zeros(sv.shape, dtype=np.int64)
    qmin, qmax = int_range(ztype, where)
    n = math.prod(shape)
    return QGrid(_fractions(sv).reshape(n), np.asarray(zv, dtype=np.int64).reshape(n), qmin, qmax,
                 np.dtype(ztype).name, FLOAT_SCALE_TYPES[ftype])


# -- constant folding --------------------------------------------------------------------------
def fold_dequantize(ctx, node, axis_opset: int = 13) -> tuple[np.ndarray, str, bool]:
    """``(x - zp) * s`` of constant operands: float64 values, the float type ONNX gives the
    result, and whether the float64 values are exact (always for 8/16-bit integers and float32
    scales; entry by entry for int32)."""
    where = ctx.where(node)
    x = ctx.const(node, node.input[0])
    if x.dtype.name != "int32":
        int_range(x.dtype, where)
    zp_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
    sv, zv, ztype, ftype = broadcast_params(ctx, node, x.shape, ctx.attr(node, "axis", 1),
                                            node.input[1], zp_name, axis_opset)
    if ztype is not None and ztype != x.dtype:
        raise ModelValueError(f"{where}: x has type {x.dtype} but the zero point {ztype}")
    d = x.astype(np.int64) - (0 if zv is None else zv)
    out = d.astype(np.float64) * sv
    exact = True
    big = float(np.max(np.abs(d))) if d.size else 0.0
    if big >= 2 ** 29 or ftype == "float64":
        exact = all(Fraction(float(v)) == int(a) * Fraction(float(s))
                    for v, a, s in zip(out.ravel(), d.ravel(), np.asarray(sv).ravel()))
    return out, ftype, exact


def fold_quantize(ctx, node) -> np.ndarray:
    """``clip(round_half_even(v / s) + zp, qmin, qmax)`` of constant operands, exactly."""
    v = ctx.const(node, node.input[0])
    if v.dtype.kind != "f":
        raise UnsupportedModelError(f"{ctx.where(node)}: QuantizeLinear of a {v.dtype} constant")
    zp_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
    g = grid_of(ctx, node, v.shape, node.input[1], zp_name)
    levels = [min(max(round(Fraction(float(x)) / s) + int(z), g.qmin), g.qmax)
              for x, s, z in zip(v.astype(np.float64).ravel(), g.scale, g.zero_point)]
    return np.array(levels, dtype=g.int_type).reshape(v.shape)
