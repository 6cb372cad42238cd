"""Writing a statically quantized network (:class:`~equivcheck.core.quantized.QuantizedNetwork`)
as a QDQ ONNX model that onnxruntime runs and :func:`~equivcheck.io.onnx_import.load_network`
(with ``quantized_ok``) reads back to exactly the same layers and quantizers.

The encoding, layer by layer (opset 17, per-axis ``DequantizeLinear`` needs 13):

* weights: ``W = diag(c) M`` with an integer matrix ``M`` (int8 when every entry fits, else int32)
  and one float32 scale ``c_j`` per output unit, written as ``DequantizeLinear(M, c, axis=0)``
  feeding ``Gemm(h, ., transB=1)`` (a sparse layer, a convolution say, as Gather/Mul/ReduceSum
  nodes whose Mul reads the dequantized stored entries, as :mod:`equivcheck.io.onnx_export`
  writes float ones: memory linear in the stored entries). ``c_j`` is the greatest common
  divisor of row ``j``'s exact weights (dyadic rationals), divided by the smallest integer that
  makes it a float32; so ``c_j * M_ji`` is the stored weight exactly (in integers);
* biases: ``DequantizeLinear`` of int32 integers with one float32 scale for the vector (its gcd,
  as above), else cut into 30-bit digits with power-of-two scales, each added by an ``Add``
  after the product (onnxruntime's QGemm fusion would read a ``Gemm`` bias's integers with the
  scale ``x_scale * w_scale``, which is not this one's);
* weights that are float32 but no int32 multiples of one float32 scale (a layer the
  quantization left in float32) are written as float32 initializers, as they are;
* ReLU: a ``Relu`` node after the ``Gemm``;
* activations (and the input): ``QuantizeLinear`` then ``DequantizeLinear`` with the quantizer's
  own float32 scales and integer zero points (a scalar for a per-tensor quantizer, else per axis
  on the ``(1, n)`` tensor), int8 or uint8 by its integer range.

Refused with one line (:class:`~equivcheck.errors.UnsupportedModelError`): dynamic quantizers,
integer ranges other than int8/uint8, scales that are not float32, and weights that are not
dyadic, need more than int32 or are not exact in float64 (the importer holds a dequantized
constant in float64).
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np

from equivcheck.core.network import MAX_WIDTH, Layer
from equivcheck.core.quantized import QuantizedNetwork, Quantizer, is_dynamic
from equivcheck.errors import UnsupportedModelError
from equivcheck.io.onnx_export import _NameAllocator, _node, assemble
from equivcheck.io.onnx_proto import pb2

MAX_SCALE_DIVISOR = 1 << 12  # how far a gcd is divided to find a float32 scale
INT8, INT32 = (-128, 127), (-(1 << 31), (1 << 31) - 1)
# TensorProto element types
_ELEM = {np.dtype(np.float32): 1, np.dtype(np.uint8): 2, np.dtype(np.int8): 3,
         np.dtype(np.int32): 6, np.dtype(np.int64): 7}
_INT_TYPES = {(-128, 127): np.int8, (0, 255): np.uint8}


def _is_float32(x: Fraction) -> bool:
    """True when the rational ``x`` is exactly a finite float32."""
    f = np.float32(float(x))
    return bool(np.isfinite(f)) and Fraction(float(f)) == x


def _ratios(values) -> list[tuple[int, int]]:
    """``(numerator, denominator)`` of each exact value (floats and Fractions alike)."""
    return [Fraction(v).as_integer_ratio() if not isinstance(v, float) else v.as_integer_ratio()
            for v in values]


def integer_scale(values, where: str, limits: tuple[int, int] = INT32) -> tuple[Fraction, list[int]] | None:
    """``(c, m)`` with ``c`` a positive float32 and integers ``m`` within ``limits`` such that
    ``c * m_i == values_i`` exactly for every ``i``; None when no such pair is found (the values
    are dyadic and ``c`` divides their gcd by at most ``MAX_SCALE_DIVISOR``). Raises
    :class:`UnsupportedModelError` for a value that is not dyadic (``where`` names it)."""
    ratios = _ratios(values)
    if any(d & (d - 1) for _, d in ratios):
        raise UnsupportedModelError(f"{where}: a weight is not a dyadic rational; it cannot be "
                                    "stored exactly as an integer times a float32 scale")
    den = max((d for _, d in ratios), default=1)
    ints = [n * (den // d) for n, d in ratios]
    g = math.gcd(*ints) if ints else 0
    if g == 0:  # all zeros
        return Fraction(1), [0] * len(ints)
    for t in range(1, MAX_SCALE_DIVISOR + 1):
        if g % t:
            continue
        c = Fraction(g // t, den)
        if not _is_float32(c):
            continue
        m = [(x // g) * t for x in ints]
        if all(limits[0] <= v <= limits[1] for v in m):
            return c, m
        return None  # a larger divisor only makes the integers larger
    return None


def _row_ints(layer: Layer, k: int, where: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """(c, rows): per-row float32 scales and per row the integers ``M_j`` with ``c_j * M_j``
    exactly the stored weights of row ``j`` (every column of a dense layer; the stored entries,
    aligned with ``weight.indices``, of a sparse one)."""
    aff = layer.affine
    w, rows = aff.weight, aff.weight.shape[0]
    exact = aff.rational_weight() if not aff.is_exact_float else None
    scales, ints = np.empty(rows, dtype=np.float32), []
    for j in range(rows):
        if aff.is_sparse:
            a, z = w.indptr[j], w.indptr[j + 1]
            vals = list(exact[a:z]) if exact is not None else w.data[a:z].tolist()
        else:
            vals = list(exact[j]) if exact is not None else w[j].tolist()
        got = integer_scale(vals, f"{where}: layer {k} ({layer.name}) row {j}")
        if got is None or (exact is not None and not all(Fraction(float(v)) == v for v in vals)):
            raise UnsupportedModelError(
                f"{where}: layer {k} ({layer.name}) row {j}: its exact weights are no int32 "
                "multiples of one float32 scale held exactly in float64")
        scales[j] = float(got[0])
        ints.append(np.array(got[1], dtype=np.int64))
    return scales, ints


def _int_array(values: np.ndarray) -> np.ndarray:
    """``values`` as int8 when every one fits, else int32 (they fit int32: checked before)."""
    small = values.size == 0 or (values.min() >= INT8[0] and values.max() <= INT8[1])
    return values.astype(np.int8 if small else np.int32)


def _dense_weight(layer: Layer, k: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(M, c): the layer's weight as a dense integer matrix (int8 or int32) and per-row float32
    scales with ``c_j * M_ji`` exactly the stored weight."""
    scales, ints = _row_ints(layer, k, where)
    cols = layer.in_dim
    full = np.zeros((layer.out_dim, cols), dtype=np.int64)
    for j, m in enumerate(ints):
        if layer.affine.is_sparse:
            w = layer.weight
            full[j, w.indices[w.indptr[j]:w.indptr[j + 1]]] = m
        else:
            full[j] = m
    return _int_array(full), scales


def _bias_terms(layer: Layer, k: int, where: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(m, c), ...]``: int32 integers and float32 scales (one, or one per entry) whose terms
    ``c * m`` add up to the bias exactly, each term exact in float64 (as the importer holds a
    dequantized constant). One term when the bias is float64 values with a common float32
    scale; else each entry ``N / 2**E`` is cut into 30-bit digits with power-of-two scales (a
    QOperator bias, an int32 times the exact product of two float32 scales, needs up to three)."""
    vals = [Fraction(v) for v in layer.affine.rational_bias()]
    if all(Fraction(float(v)) == v for v in vals):
        got = integer_scale(vals, f"{where}: layer {k} ({layer.name}) bias")
        if got is not None:
            return [(np.array(got[1], dtype=np.int32), np.array(float(got[0]), dtype=np.float32))]
    digits: list[list[tuple[int, int]]] = []
    for i, v in enumerate(vals):
        n, d = v.as_integer_ratio()
        if d & (d - 1):
            raise UnsupportedModelError(f"{where}: layer {k} ({layer.name}) bias {i} is not a "
                                        "dyadic rational; it cannot be stored exactly")
        e, sign, rest, parts = d.bit_length() - 1, -1 if n < 0 else 1, abs(n), []
        while rest:
            parts.append((sign * (rest & ((1 << 30) - 1)), len(parts) * 30 - e))
            rest >>= 30
        digits.append(parts)
    terms = []
    for t in range(max((len(p) for p in digits), default=0) or 1):
        m = np.array([p[t][0] if t < len(p) else 0 for p in digits], dtype=np.int32)
        c = [Fraction(2) ** p[t][1] if t < len(p) else Fraction(1) for p in digits]
        if not all(_is_float32(x) for x in c):
            raise UnsupportedModelError(f"{where}: layer {k} ({layer.name}): a bias is too small or "
                                        "large for power-of-two float32 scales")
        terms.append((m, np.array([float(x) for x in c], dtype=np.float32)))
    return terms


def _grid(q: Quantizer, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(scales, zero points) of a static quantizer as the float32 and integer arrays
    QuantizeLinear takes (scalars for a per-tensor quantizer)."""
    if is_dynamic(q):
        raise UnsupportedModelError(f"{where}: a dynamic quantizer ({q.name}) cannot be exported "
                                    "(only static quantization is written)")
    int_type = _INT_TYPES.get((q.qmin, q.qmax))
    if int_type is None:
        raise UnsupportedModelError(f"{where}: quantizer {q.name!r} has the integer range "
                                    f"[{q.qmin}, {q.qmax}]; only int8 and uint8 are written")
    if not all(_is_float32(s) for s in q.scale):
        raise UnsupportedModelError(f"{where}: quantizer {q.name!r} has a scale that is not a float32")
    scales = q.scale_float.astype(np.float32)
    zps = q.zero_point.astype(int_type)
    if q.n and np.all(scales == scales[0]) and np.all(zps == zps[0]):
        return np.array(scales[0], dtype=np.float32), np.array(zps[0], dtype=int_type)
    return scales, zps


def _tensor(proto, array: np.ndarray, name: str):
    array = np.asarray(array)
    return proto.TensorProto(name=name, data_type=_ELEM[array.dtype], dims=array.shape,
                             raw_data=np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes())


def _float32_weights(layer: Layer) -> np.ndarray | None:
    """The stored weights (``weight.data`` of a sparse layer) as float32 when every one is
    exactly a float32 and some row has no int32 multiple of a float32 scale (a layer the
    quantization left in float32); None otherwise (the integer encoding is used)."""
    aff = layer.affine
    if not aff.is_exact_float:
        return None
    values = aff.weight.data if aff.is_sparse else np.asarray(aff.weight).ravel()
    as32 = values.astype(np.float32)
    if not np.array_equal(as32.astype(np.float64), values):
        return None
    try:
        _row_ints(layer, 0, "")
    except UnsupportedModelError:
        return as32
    return None


def _sparse_product(proto, layer: Layer, k: int, where: str, cur: str, fresh, const, nodes: list,
                    plain: np.ndarray | None = None) -> str:
    """Nodes computing ``W h`` for a sparse ``W`` without a dense matrix (as
    :func:`equivcheck.io.onnx_export._sparse_nodes` does, with the weights dequantized from
    integers): per chunk of rows, Gather the columns each row reads (padded with weight 0 to the
    chunk's longest row), Mul by ``DequantizeLinear(M, c, axis=0)``, ReduceSum; then Concat.
    Returns the name of the product."""
    w = layer.weight
    rows = w.shape[0]
    if plain is None:
        scales, ints = _row_ints(layer, k, where)
    else:  # float32 values, read by the Mul as they are
        scales, ints = None, [plain[w.indptr[r]:w.indptr[r + 1]] for r in range(rows)]
    counts = np.diff(w.indptr)
    width = max(int(counts.max(initial=0)), 1)
    starts, parts = [0], []
    while starts[-1] < rows:
        starts.append(min(rows, starts[-1] + max(1, MAX_WIDTH // width)))
    for c, (lo, hi) in enumerate(zip(starts, starts[1:])):
        kmax = max(int(counts[lo:hi].max(initial=0)), 1)
        idx = np.zeros((hi - lo, kmax), dtype=np.int64)
        vals = np.zeros((hi - lo, kmax), dtype=np.int64 if plain is None else np.float32)
        for r in range(lo, hi):
            a, z = w.indptr[r], w.indptr[r + 1]
            idx[r - lo, :z - a] = w.indices[a:z]
            vals[r - lo, :z - a] = ints[r]
        if plain is not None:
            v = const(vals, f"W{k}_vals{c}")
        else:
            vals = _int_array(vals)
            v = fresh(f"W{k}_vals{c}")
            nodes.append(_node(proto, "DequantizeLinear", [const(vals, f"W{k}_ints{c}"), const(scales[lo:hi], f"W{k}_scale{c}"),
                                                           const(np.zeros(hi - lo, vals.dtype), f"W{k}_zero_point{c}")],
                               [v], fresh(f"W{k}_DequantizeLinear{c}"), axis=0))
        g, m, s = fresh(f"gather{k}_{c}"), fresh(f"mul{k}_{c}"), fresh(f"sum{k}_{c}")
        nodes.extend([_node(proto, "Gather", [cur, const(idx, f"W{k}_cols{c}")], [g], fresh(f"gather_{k}_{c}"), axis=1),
                      _node(proto, "Mul", [g, v], [m], fresh(f"mul_{k}_{c}")),
                      _node(proto, "ReduceSum", [m, const(np.array([2], np.int64), f"W{k}_axis{c}")], [s],
                            fresh(f"sum_{k}_{c}"), keepdims=0)])
        parts.append(s)
    if len(parts) == 1:
        return parts[0]
    joined = fresh(f"rows{k}")
    nodes.append(_node(proto, "Concat", parts, [joined], fresh(f"concat_{k}"), axis=1))
    return joined


def to_qonnx(net: QuantizedNetwork, graph_name: str = "equivcheck_quantized"):
    """The quantized network as a QDQ ONNX model (see the module doc); every stored weight,
    bias, scale and zero point is the network's exactly."""
    proto = pb2()
    where = str(net.source)
    if net.input_name == net.output_name:
        raise UnsupportedModelError(f"{where}: input and output are both named '{net.input_name}'")
    if net.input_dtype != "float32":
        raise UnsupportedModelError(f"{where}: a quantized export writes float32 models, the input is {net.input_dtype}")
    fresh = _NameAllocator({net.input_name, net.output_name})
    nodes, inits = [], []

    def const(array: np.ndarray, base: str) -> str:
        name = fresh(base)
        inits.append(_tensor(proto, array, name))
        return name

    def qdq(cur: str, q: Quantizer, base: str) -> str:
        s, zp = _grid(q, where)
        s_name, z_name = const(s, f"{base}_scale"), const(zp, f"{base}_zero_point")
        axis = {} if s.ndim == 0 else {"axis": 1}
        qn, dn = fresh(f"{base}_q"), fresh(f"{base}_dq")
        nodes.append(_node(proto, "QuantizeLinear", [cur, s_name, z_name], [qn], fresh(f"{base}_QuantizeLinear"), **axis))
        nodes.append(_node(proto, "DequantizeLinear", [qn, s_name, z_name], [dn], fresh(f"{base}_DequantizeLinear"), **axis))
        return dn

    flat = fresh("flat_input")
    nodes.append(_node(proto, "Reshape", [net.input_name, const(np.array([1, net.in_dim], np.int64), "flat_shape")],
                       [flat], fresh("flatten_input")))
    cur = flat
    if net.input_quant is not None:
        cur = qdq(cur, net.input_quant, "input")
    for k, (layer, q) in enumerate(zip(net.network.layers, net.quant)):
        plain = _float32_weights(layer)  # float32 weights (a layer left unquantized) as they are
        if layer.affine.is_sparse:
            product = _sparse_product(proto, layer, k, where, cur, fresh, const, nodes, plain)
        else:
            if plain is not None:
                w = const(plain.reshape(layer.weight.shape), f"W{k}")
            else:
                m, c = _dense_weight(layer, k, where)
                w = fresh(f"W{k}")
                nodes.append(_node(proto, "DequantizeLinear", [const(m, f"W{k}_int"), const(c, f"W{k}_scale"),
                                                               const(np.zeros(len(c), m.dtype), f"W{k}_zero_point")],
                                   [w], fresh(f"W{k}_DequantizeLinear"), axis=0))
            product = fresh(f"gemm{k}")
            nodes.append(_node(proto, "Gemm", [cur, w], [product], fresh(f"gemm_{k}"), transB=1))
        terms = _bias_terms(layer, k, where)
        b_names = []
        for t, (bm, bc) in enumerate(terms):
            b = fresh(f"B{k}_{t}" if t else f"B{k}")
            nodes.append(_node(proto, "DequantizeLinear", [const(bm, f"B{k}_{t}_int"), const(bc, f"B{k}_{t}_scale")],
                               [b], fresh(f"B{k}_{t}_DequantizeLinear"), **({"axis": 0} if bc.ndim else {})))
            b_names.append(b)
        out = product
        for t, b in enumerate(b_names):  # (onnxruntime's QGemm fusion would read C's integers
            # with the scale x_scale * w_scale, which is not this bias's scale)
            nxt = fresh(f"gemm{k}_{t}")
            nodes.append(_node(proto, "Add", [out, b], [nxt], fresh(f"bias_{k}_{t}")))
            out = nxt
        cur = out
        if layer.relu:
            r = fresh(f"relu{k}")
            nodes.append(_node(proto, "Relu", [cur], [r], fresh(f"relu_{k}")))
            cur = r
        if q is not None:
            cur = qdq(cur, q, f"layer{k}")
    out_dims = [d if d > 0 else 1 for d in net.output_shape] or [1, net.out_dim]
    nodes.append(_node(proto, "Reshape", [cur, const(np.array(out_dims, np.int64), "out_shape")],
                       [net.output_name], fresh("reshape_output")))
    in_shape = [d if d > 0 else "N" for d in net.input_shape] or [1, net.in_dim]
    out_shape = [d if d > 0 else "N" for d in net.output_shape] or [1, net.out_dim]
    model = assemble(proto, graph_name, nodes, inits, (net.input_name, 1, in_shape),
                     (net.output_name, 1, out_shape))
    return model


def same_quantized(a: QuantizedNetwork, b: QuantizedNetwork) -> str | None:
    """None when ``a`` and ``b`` have exactly the same layers (weights and biases compared as
    rationals), ReLUs and quantizers; else what differs first."""
    if (a.input_quant is None) != (b.input_quant is None) or (
            a.input_quant is not None and not a.input_quant.same_as(b.input_quant)):
        return "the input quantizers differ"
    la, lb = a.network.layers, b.network.layers
    if len(la) != len(lb):
        return f"{len(la)} layers against {len(lb)}"
    for k, (x, y, qx, qy) in enumerate(zip(la, lb, a.quant, b.quant)):
        if x.relu != y.relu:
            return f"layer {k}: ReLU differs"
        if not x.affine.same_as(y.affine):
            return f"layer {k}: weights or biases differ"
        if (qx is None) != (qy is None) or (qx is not None and not qx.same_as(qy)):
            return f"layer {k}: quantizers differ"
    return None


def export_quantized(net: QuantizedNetwork, path: str | Path) -> None:
    """Write ``net`` to ``path`` as :func:`to_qonnx` builds it."""
    Path(path).write_bytes(to_qonnx(net).SerializeToString())
