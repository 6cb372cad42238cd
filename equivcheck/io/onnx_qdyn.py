"""Dynamically quantized ONNX models (``onnxruntime.quantization.quantize_dynamic``).

``quantize_dynamic`` writes, for each MatMul (Conv) with a constant weight::

    y, y_scale, y_zp = DynamicQuantizeLinear(x)          # x: the whole float32 tensor
    p = Mul(y_scale, C)                                  # C: the weight's scale (constant)
    r = MatMulInteger(y, Wq, y_zp, w_zp)                 # (y - y_zp) @ (Wq - w_zp), int32
    out = Mul(Cast(r, to=float), p)                      # then usually Add(out, bias)

(``ConvInteger`` in place of ``MatMulInteger`` for a convolution). In exact arithmetic
``out = ((y - y_zp) * y_scale) @ (Wq - w_zp) * C = D(x) @ (Wq - w_zp) * C`` with ``D`` the
:class:`~equivcheck.core.quantized.DynamicQuantizer` of ``x``, so the import keeps the real
value ``D(x)`` on the data path: ``D`` becomes the quantizer of the layer ``x`` comes from (or
of the input), ``MatMulInteger``/``ConvInteger`` the float MatMul/Conv with the exact integer
weights ``Wq - w_zp``, the ``Cast`` the identity, and the ``Mul`` by ``p`` a Mul by ``C``
(``y_scale`` already multiplies the data). That is the exact semantics of the graph with ``s``
an exact rational; onnxruntime computes ``s``, ``y_scale * C``, the Cast (exact below
``2**24``) and the final Mul in float32, so its outputs may differ from these by float32
rounding (a counterexample's onnxruntime margin shows by how much).

Before anything is lowered, the whole pattern is checked at the DynamicQuantizeLinear: ``y``
feeds only MatMulInteger/ConvInteger nodes as their first input with ``y_zp`` as their third;
each product feeds one Cast to float, which feeds one Mul by a product ``Mul(y_scale, C)`` of a
constant that nothing else reads; ``y_scale`` and ``y_zp`` feed nothing else. Then (and only
then) ``y_scale`` and ``y_zp`` are recorded as the placeholder constants 1 and 0, so that
``Mul(y_scale, C)`` folds to ``C``. Anything else is refused with one line naming the node, and
so are onnxruntime's fused forms (MatMulIntegerToFloat, DynamicQuantizeMatMul, ...).
"""

from __future__ import annotations

import math

import numpy as np

from equivcheck.core.quantized import DynamicQuantizer, is_dynamic
from equivcheck.errors import ModelValueError, ShapeMismatchError, UnsupportedModelError
from equivcheck.io.onnx_affine import DataPath, MapKind
from equivcheck.io.onnx_qgrid import refuse_quantized

PRODUCT_OPS = frozenset({"MatMulInteger", "ConvInteger"})
FUSED_OPS = frozenset({"MatMulIntegerToFloat", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM",
                       "QAttention", "DynamicQuantizeConv"})
FLOAT_CODE = 1  # TensorProto.FLOAT
INT32_MAX = 2**31 - 1
NOTE = ("dynamic quantization (DynamicQuantizeLinear): checked in its exact semantics, the scale "
        "s = (max(0, max x) - min(0, min x)) / 255 of the whole tensor an exact rational and a "
        "batch of one input; onnxruntime computes s, the scale products, the int32 -> float Cast "
        "and the Mul in float32, so its outputs may differ from the exact ones by float32 rounding "
        "(each scale product Mul(y_scale, C) is read as C: the data carries y_scale)")


def refuse_fused(path: DataPath, node) -> None:
    """onnxruntime's fused dynamic operators are refused in one line."""
    raise UnsupportedModelError(
        f"{path.where(node)}: {node.op_type} (a fused dynamic quantization operator, written by "
        "onnxruntime's graph optimizer) is not supported; verify the model quantize_dynamic wrote, "
        "before optimization (DynamicQuantizeLinear, MatMulInteger/ConvInteger, Cast, Mul)")


def _readers(graph, name: str) -> list:
    return [n for n in graph.node if name in n.input]


def _graph_outputs(graph) -> set[str]:
    return {o.name for o in graph.output}


def _producer(graph, name: str):
    return next((n for n in graph.node if name in n.output), None)


def check_pattern(path: DataPath, node) -> None:
    """Refuse (one line naming the node) a DynamicQuantizeLinear whose outputs are used in any
    way other than the pattern of the module doc."""
    where, graph, ctx = path.where(node), path.ctx.graph, path.ctx
    if len(node.output) != 3 or not all(node.output):
        raise UnsupportedModelError(f"{where}: the scale or zero point output is unused (not supported)")
    y, ys, yz = node.output
    if {y, ys, yz} & _graph_outputs(graph):
        raise UnsupportedModelError(f"{where}: a quantized value, scale or zero point is a graph output")
    products = _readers(graph, y)
    if not products:
        raise UnsupportedModelError(f"{where}: the quantized values are not used")
    scale_readers: dict[str, object] = {}
    for m in products:
        mw = path.ctx.where(m)
        if m.op_type not in PRODUCT_OPS or m.domain not in ("", "ai.onnx"):
            raise UnsupportedModelError(
                f"{mw}: reads dynamically quantized values; only MatMulInteger and ConvInteger "
                "(as quantize_dynamic writes them) are supported there")
        if list(m.input).count(y) != 1 or m.input[0] != y or len(m.input) < 3 or m.input[2] != yz:
            raise UnsupportedModelError(f"{mw}: the quantized values must be input 0 and their zero "
                                        "point input 2 (not supported otherwise)")
        for k in (1, 3):
            if len(m.input) > k and m.input[k] and m.input[k] not in ctx.consts:
                raise UnsupportedModelError(f"{mw}: input {k} is not a constant (not supported)")
        after = _readers(graph, m.output[0])
        if len(after) != 1 or after[0].op_type != "Cast" or m.output[0] in _graph_outputs(graph):
            raise UnsupportedModelError(f"{mw}: its int32 result must feed exactly one Cast to float")
        cast = after[0]
        if ctx.attr(cast, "to", 0) != FLOAT_CODE:
            raise UnsupportedModelError(f"{ctx.where(cast)}: Cast of an integer product to a type other "
                                        "than float32 (not supported)")
        scaled = _readers(graph, cast.output[0])
        if (len(scaled) != 1 or scaled[0].op_type != "Mul" or len(scaled[0].input) != 2
                or cast.output[0] in _graph_outputs(graph)):
            raise UnsupportedModelError(f"{ctx.where(cast)}: the converted product must feed exactly one "
                                        "Mul by the scale product")
        mul = scaled[0]
        other = [t for t in mul.input if t != cast.output[0]]
        if len(other) != 1:
            raise UnsupportedModelError(f"{ctx.where(mul)}: multiplies the product by itself")
        scale_readers[other[0]] = mul
    for r in _readers(graph, yz):
        if r not in products or list(r.input).count(yz) != 1:
            raise UnsupportedModelError(f"{ctx.where(r)}: uses the dynamic zero point (only as the "
                                        "zero point of MatMulInteger/ConvInteger)")
    seen = set()
    for r in _readers(graph, ys):
        rw = ctx.where(r)
        if r.op_type != "Mul" or len(r.input) != 2 or list(r.input).count(ys) != 1:
            raise UnsupportedModelError(f"{rw}: uses the dynamic scale (only a Mul by the weight's "
                                        "scale is supported)")
        c = next(t for t in r.input if t != ys)
        p = r.output[0]
        if c not in ctx.consts or c == ys:
            raise UnsupportedModelError(f"{rw}: multiplies the dynamic scale by a non-constant")
        if p not in scale_readers or _readers(graph, p) != [scale_readers[p]] or p in _graph_outputs(graph):
            raise UnsupportedModelError(f"{rw}: the scale product must be read by exactly one Mul "
                                        "of a converted integer product")
        seen.add(p)
    missing = set(scale_readers) - seen
    if missing:
        mul = scale_readers[sorted(missing)[0]]
        raise UnsupportedModelError(f"{ctx.where(mul)}: multiplies the integer product by something other "
                                    "than the dynamic scale times a constant (not supported)")


def dynamic_quantize(path: DataPath, node) -> None:
    """A DynamicQuantizeLinear on the (real) data: checked (:func:`check_pattern`), then the
    data's values become ``D(data)`` (a quantizer on the layer they come from, on the input,
    or on a layer closed here from the pending map)."""
    refuse_quantized(path, node)
    where = path.where(node)
    path.load(node.input[0])
    if path.integer:
        raise UnsupportedModelError(f"{where}: DynamicQuantizeLinear of integer data is not supported")
    if path.dtype != "float32":
        raise ModelValueError(f"{where}: DynamicQuantizeLinear of {path.dtype} data (float32 required)")
    check_pattern(path, node)
    name = node.name or node.output[0]
    n = math.prod(path.shape)
    p, last = path.pending, len(path.layers) - 1
    others = [t for t in path.live if path.last_use.get(t, -1) > path.index]
    if others:
        raise UnsupportedModelError(
            f"{where}: DynamicQuantizeLinear while '{others[0]}' is still needed (the scale is one "
            "for the whole tensor; a branch beside it is not supported)")
    identity = p.kind is MapKind.IDENTITY and p.b is None
    if identity and last < 0 and path.input_quant is None and n == path.pending.n:
        path.input_quant = DynamicQuantizer(n, name=name)
    elif identity and last >= 0 and last not in path.quant and path.layers[last].out_dim == n:
        path.quant[last] = DynamicQuantizer(n, name=name)
    elif not identity:
        path.close_layer(relu=False, name=name)
        path.quant[len(path.layers) - 1] = DynamicQuantizer(n, name=name)
    else:
        raise UnsupportedModelError(f"{where}: these values are quantized already (not supported)")
    y, ys, yz = node.output
    path.ctx.consts[ys] = np.array(1.0, dtype=np.float32)  # placeholders: see the module doc
    path.ctx.consts[yz] = np.array(0, dtype=np.uint8)
    if NOTE not in path.notes:
        path.notes.append(NOTE)
    path.grid, path.integer, path.dtype, path.nonneg = None, True, "uint8", False


def integer_product(path: DataPath, node) -> None:
    """MatMulInteger / ConvInteger of dynamically quantized data (the pattern was checked at
    its DynamicQuantizeLinear): the float MatMul / Conv with the exact weights ``Wq - w_zp``."""
    from onnx import helper

    from equivcheck.io.onnx_ops import apply_op

    where, ctx = path.where(node), path.ctx
    src = _producer(ctx.graph, node.input[0])
    if src is None or src.op_type != "DynamicQuantizeLinear" or node.input[0] not in path.live:
        raise UnsupportedModelError(
            f"{where}: {node.op_type} is supported only on the output of a DynamicQuantizeLinear "
            "(as quantize_dynamic writes it)")
    path.load(node.input[0])
    w = ctx.const(node, node.input[1])
    if w.dtype.name not in ("int8", "uint8"):
        raise ModelValueError(f"{where}: weight of type {w.dtype} (int8 or uint8 expected)")
    conv = node.op_type == "ConvInteger"
    if len(node.input) > 3 and node.input[3]:
        zp = ctx.const(node, node.input[3])
        if zp.dtype != w.dtype:
            raise ModelValueError(f"{where}: weight zero point of type {zp.dtype}, weight {w.dtype}")
        channels = w.shape[0] if conv else w.shape[-1]
        if zp.size not in (1, channels):
            raise ShapeMismatchError(f"{where}: {zp.size} weight zero points for {channels} output channels")
        zp = zp.astype(np.int64).reshape(((-1,) + (1,) * (w.ndim - 1)) if conv else (-1,))
    else:
        zp = np.zeros(1, dtype=np.int64)
    d = w.astype(np.int64) - zp
    terms = (math.prod(w.shape[1:]) if conv else w.shape[0]) if w.ndim else 1
    big = int(np.max(np.abs(d))) if d.size else 0
    if terms * 255 * big > INT32_MAX:
        raise UnsupportedModelError(f"{where}: the int32 accumulation may overflow ({terms} terms); "
                                    "not supported")
    if terms * 255 * big >= 2**24:
        msg = (f"{node.name or node.output[0]}: the int32 -> float32 Cast of onnxruntime may round "
               f"(sums up to {terms * 255 * big:,} > 2**24); the exact semantics do not round")
        path.notes.append(msg)
    syn = f"{node.input[1]}#int{path.index}"
    ctx.consts[syn] = d.astype(np.float64)  # small integers: exact
    ctx.dequantized[syn] = ("float32", True)
    fake = helper.make_node("Conv" if conv else "MatMul", [node.input[0], syn], [node.output[0]],
                            name=node.name or node.output[0])
    if conv:
        fake.attribute.extend(node.attribute)
    path.integer, path.dtype = False, "float32"
    apply_op(path, fake)
    path.grid, path.integer, path.dtype, path.nonneg = None, True, "int32", False


def integer_cast(path: DataPath, node) -> bool:
    """The Cast to float32 of an integer product (exactly its value, see the module doc);
    returns False for any other node."""
    if node.op_type != "Cast" or len(node.input) != 1 or node.input[0] not in path.live:
        return False
    src = _producer(path.ctx.graph, node.input[0])
    if src is None or src.op_type not in PRODUCT_OPS:
        return False
    path.load(node.input[0])
    if path.ctx.attr(node, "to", 0) != FLOAT_CODE:
        raise UnsupportedModelError(f"{path.where(node)}: Cast of an integer product to a type other "
                                    "than float32 (not supported)")
    path.integer, path.dtype = False, "float32"
    return True


def dynamic_last(path: DataPath) -> bool:
    """True when the last closed layer carries a dynamic quantizer (a Relu after it does not
    commute with it: the ReLU changes the scale)."""
    last = len(path.layers) - 1
    return last >= 0 and is_dynamic(path.quant.get(last))
