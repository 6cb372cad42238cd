"""Quantized ONNX models on the importer's data path: ``QuantizeLinear``, ``DequantizeLinear``,
integer data moved between them, and (through :mod:`equivcheck.io.onnx_qops`) the QOperator
forms, all in the exact semantics of :mod:`equivcheck.io.onnx_qgrid`.

The data path keeps holding *real* values: a tensor of integers ``q`` (the output of a
QuantizeLinear) is held as its real value ``s * (q - zp)`` with its grid
(``DataPath.integer``), so a DequantizeLinear with the same ``(s, zp)`` changes nothing.

* A QuantizeLinear on the data rounds it: the pending affine map is closed into a layer
  (``relu`` False) whose output carries a :class:`~equivcheck.core.quantized.Quantizer`; on the
  input (identity map) it becomes the network's input quantizer; after a layer just closed
  (identity map), that layer's quantizer. Each value is then known to lie on the grid
  (``DataPath.grid``), and so does its copy moved by Reshape/Flatten/Transpose/Slice/Pad(0)/
  MaxPool/Relu.
* Grid identity: a QuantizeLinear of values already on its own grid is the identity (no layer):
  a value ``s * (k - zp)`` with ``qmin <= k <= qmax`` gives ``round(v / s) + zp = k`` exactly,
  which the clip keeps.
* A Relu right after a quantized layer (identity map, nothing else reading it) sets that layer's
  ``relu``: ``relu(Q(z)) = Q(relu(z))`` because ``Q`` is monotone and ``Q(0) = 0`` (the zero
  point lies in ``[qmin, qmax]``).
* A layer closed by a QuantizeLinear (no ReLU) carries the other live tensors through it (a
  residual branch), one unit per value; they must lie on a grid of the same integer range (their
  quantizer then leaves them unchanged), or be read only by a QuantizeLinear still to come (a
  parallel branch: rounded in this layer with that node's grid; that node is then the identity).

Dynamic quantization (DynamicQuantizeLinear -> MatMulInteger/ConvInteger -> Cast -> Mul) is
lowered by :mod:`equivcheck.io.onnx_qdyn`. Refused with one line: MatMulInteger/ConvInteger
outside that pattern, onnxruntime's fused dynamic operators, float8 and 4-bit types, an integer
graph output, and (without ``quantized_ok``) any quantized model.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from equivcheck.errors import ModelValueError, UnsupportedModelError
from equivcheck.io.onnx_affine import DataPath, MapKind
from equivcheck.io.onnx_ops import apply_op
from equivcheck.io.onnx_ops_cnn import _str_attr
from equivcheck.io.onnx_qdyn import (
    FUSED_OPS,
    PRODUCT_OPS,
    dynamic_last,
    dynamic_quantize,
    integer_cast,
    integer_product,
    refuse_fused,
)
from equivcheck.io.onnx_qgrid import QGrid, concat_grids, grid_of, refuse_quantized

# moves that keep every value (and its flat position, so even a per-unit grid holds)
FLAT_MOVES = frozenset({"Identity", "Dropout", "Reshape", "Flatten", "Squeeze", "Unsqueeze"})
# moves and selections of values: a per-tensor grid holds on their output
GRID_MOVES = FLAT_MOVES | {"Transpose", "Slice", "Gather", "Pad", "MaxPool", "GlobalMaxPool",
                           "SpaceToDepth", "DepthToSpace"}
INTEGER_OPS = PRODUCT_OPS


def quant_visit(path: DataPath, node, data_inputs: list[str]) -> bool:
    """Handle ``node`` when it is a quantization operator (QOperator nodes go
    to :func:`equivcheck.io.onnx_qops.visit_qop` first), reads integer data, or is a Relu on a quantized layer; the data's grid
    is updated. Returns False for any other node (then the
    caller applies it as usual and calls :func:`grid_after`)."""
    op = node.op_type
    where = path.where(node)
    if op in FUSED_OPS:
        refuse_quantized(path, node)
        refuse_fused(path, node)
    if op == "DynamicQuantizeLinear" and node.domain in ("", "ai.onnx"):
        dynamic_quantize(path, node)
        return True
    if op in INTEGER_OPS and node.domain in ("", "ai.onnx"):
        integer_product(path, node)
        return True
    if node.domain not in ("", "ai.onnx"):
        return False
    if integer_cast(path, node):
        return True
    if op == "QuantizeLinear":
        path.load(data_inputs[0])
        if node.input[0] != path.tensor:
            raise UnsupportedModelError(f"{where}: the data enters as the scale or zero point")
        quantize_node(path, node)
        return True
    if op == "DequantizeLinear":
        path.load(data_inputs[0])
        if node.input[0] != path.tensor:
            raise UnsupportedModelError(f"{where}: the data enters as the scale or zero point")
        if not path.integer:
            raise ModelValueError(f"{where}: DequantizeLinear of {path.dtype} data (integers expected)")
        zp = node.input[2] if len(node.input) > 2 and node.input[2] else None
        dequantize(path, node, grid_of(path.ctx, node, path.shape, node.input[1], zp,
                                       default_type=np.dtype(path.grid.int_type)))
        return True
    integer = [t for t in data_inputs if path.live[t].integer]
    if integer:
        if len(data_inputs) != 1 or op not in GRID_MOVES:
            raise UnsupportedModelError(
                f"{where}: operator {op} on integer data (a QuantizeLinear output) is not supported")
        path.load(data_inputs[0])
        move_integers(path, node)
        return True
    if op == "Relu" and len(data_inputs) == 1:
        path.load(data_inputs[0])
        return relu_on_quantized(path, node)
    return False


def grid_after(path: DataPath, node, grid: QGrid | None, n_before: int) -> None:
    """Set the grid of real data after an ordinary operator (the grid held before: ``grid``
    on ``n_before`` values): kept by moves (a per-unit grid only by moves keeping the flat
    order; Pad only with the fill 0 = s * (zp - zp)), by Relu, else unknown."""
    path.integer = False
    if grid is None:
        path.grid = None
        return
    op, n = node.op_type, math.prod(path.shape)
    if op in FLAT_MOVES and n == n_before:
        path.grid = grid
    elif op == "Relu" and n == n_before:
        path.grid = grid  # relu(s (k - zp)) = s (max(k, zp) - zp), in range
    elif op in GRID_MOVES and grid.uniform() and (op != "Pad" or _pad_fill(path, node) == 0.0):
        path.grid = grid.resized(n)
    else:
        path.grid = None


def _pad_fill(path: DataPath, node) -> float:
    """The constant a Pad fills with (0 for the copying modes, whose values stay on the grid)."""
    if _str_attr(path, node, "mode", "constant") != "constant":
        return 0.0
    value = float(path.ctx.attr(node, "value", 0.0))
    if len(node.input) > 2 and node.input[2]:
        cv = path.ctx.const(node, node.input[2])
        value = float(cv.ravel()[0]) if cv.size else 0.0
    return value


# -- QuantizeLinear / DequantizeLinear ---------------------------------------------------------
def quantize_node(path: DataPath, node) -> None:
    """A QuantizeLinear on the (real) data."""
    where = path.where(node)
    if path.integer:
        raise UnsupportedModelError(f"{where}: QuantizeLinear of integer data is not supported")
    if path.ctx.attr(node, "saturate", 1) != 1:
        raise UnsupportedModelError(f"{where}: QuantizeLinear with saturate 0 (float8) is not supported")
    zp = node.input[2] if len(node.input) > 2 and node.input[2] else None
    quantize(path, node, grid_of(path.ctx, node, path.shape, node.input[1], zp))


def quantize(path: DataPath, node, grid: QGrid) -> None:
    """Round the real data to ``grid`` (see the module doc); the data then holds the integers
    (as their real values)."""
    refuse_quantized(path, node)
    if grid.float_type != path.dtype:
        raise ModelValueError(
            f"{path.where(node)}: the scale has type {grid.float_type} but the data is {path.dtype}")
    name = node.name or node.output[0]
    if path.grid is not None and path.grid.same(grid):
        pass  # already on this grid: Q is the identity (module doc)
    else:
        p = path.pending
        others = [t for t in path.live if path.last_use.get(t, -1) > path.index]
        identity = p.kind is MapKind.IDENTITY and p.b is None and not others
        last = len(path.layers) - 1
        if identity and last < 0 and path.input_quant is None:
            path.input_quant = grid.quantizer(name)
        elif identity and last >= 0 and last not in path.quant:
            path.quant[last] = grid.quantizer(name)
        else:
            _close_quantized(path, node, grid, name)
    path.grid, path.integer, path.dtype = grid, True, grid.int_type
    path.nonneg = path.nonneg or grid.nonneg()


def _close_quantized(path: DataPath, node, grid: QGrid, name: str) -> None:
    """Close the pending map into a layer (no ReLU) whose outputs ``grid`` rounds. Each tensor
    carried through it is one unit per value, and its quantizer must leave it unchanged: it
    lies on a grid of the same integer range, or its one remaining reader is a QuantizeLinear
    (a parallel branch): then it is rounded here with that node's grid, and that node, finding
    it on its grid, is the identity."""
    parts = [grid]
    for t, v in path.live.items():
        if path.last_use.get(t, -1) <= path.index:
            continue
        g = v.grid
        if g is None:
            g = _sole_quantizer(path, t, v.shape)
            if g is not None and g.float_type == v.dtype:
                v.grid = g
            else:
                g = None
        if g is None or (g.qmin, g.qmax) != (grid.qmin, grid.qmax):
            raise UnsupportedModelError(
                f"{path.where(node)}: this QuantizeLinear closes a layer while '{t}', which is not "
                "on a quantization grid of the same integer type, is still needed (not supported)")
        parts.append(g)
    path.close_layer(relu=False, name=name)
    path.quant[len(path.layers) - 1] = concat_grids(parts).quantizer(name)


def _sole_quantizer(path: DataPath, tensor: str, shape) -> QGrid | None:
    """The grid of the QuantizeLinear that is the one node still to read ``tensor`` (None when
    there is no such node)."""
    readers = [n for n in path.ctx.graph.node[path.index + 1:] if tensor in n.input]
    if len(readers) != 1 or tensor in {o.name for o in path.ctx.graph.output}:
        return None
    q = readers[0]
    if q.op_type != "QuantizeLinear" or q.domain not in ("", "ai.onnx") or q.input[0] != tensor:
        return None
    zp = q.input[2] if len(q.input) > 2 and q.input[2] else None
    return grid_of(path.ctx, q, tuple(shape), q.input[1], zp)


def dequantize(path: DataPath, node, grid: QGrid) -> None:
    """The integers on ``path.grid`` read back with ``grid``: unchanged when both are the same,
    else the exact affine map ``s2 / s1 * v + s2 * (zp1 - zp2)``."""
    g = path.grid
    if (g.qmin, g.qmax) != (grid.qmin, grid.qmax) or g.int_type != grid.int_type:
        raise ModelValueError(f"{path.where(node)}: the zero point has type {grid.int_type}, the data {g.int_type}")
    if not g.same(grid):
        ratio = grid.scale / g.scale
        shift = grid.scale * (g.zero_point - grid.zero_point).astype(object)
        path.apply_elementwise(ratio, shift)
        path.nonneg = grid.nonneg()
    path.grid, path.integer, path.dtype = grid, False, grid.float_type


def move_integers(path: DataPath, node) -> None:
    """A move or selection of integer data: applied to the real values (the dequantization is
    affine, increasing and the same for every unit, so it commutes with moves and MaxPool); a
    Pad fills with the real value ``s * (c - zp)`` of its integer constant ``c``."""
    g = path.grid
    n_before = math.prod(path.shape)
    if not g.uniform() and node.op_type not in FLAT_MOVES:
        raise UnsupportedModelError(
            f"{path.where(node)}: {node.op_type} on integer data quantized per axis is not supported")
    if node.op_type == "Pad" and len(node.input) > 2 and node.input[2]:
        c = path.ctx.const(node, node.input[2])
        level = int(c.ravel()[0]) if c.size else int(g.zero_point[0])
        if c.dtype.name != g.int_type or not g.qmin <= level <= g.qmax:
            raise ModelValueError(f"{path.where(node)}: pad value of type {c.dtype} for {g.int_type} data")
        name = f"{node.input[2]}#real"
        path.ctx.consts[name] = np.array(float(g.scale[0] * (level - int(g.zero_point[0]))))
        path.ctx.dequantized[name] = (g.float_type, True)  # s * (small integer): exact in float64
        node = _renamed(node, {2: name})
    elif node.op_type == "Pad":
        node = _with_zero_point_fill(path, node, g)
    path.dtype = g.float_type
    apply_op(path, node)
    n = math.prod(path.shape)
    path.grid = g if n == n_before and node.op_type in FLAT_MOVES else g.resized(n)
    path.integer, path.dtype = True, g.int_type


def _with_zero_point_fill(path: DataPath, node, g: QGrid):
    """A Pad of integers without a value input fills with the integer 0, real ``-s * zp``."""
    if int(g.zero_point[0]) == 0:
        return node
    name = f"{node.name or node.output[0]}#fill"
    path.ctx.consts[name] = np.array(float(g.scale[0] * (0 - int(g.zero_point[0]))))
    path.ctx.dequantized[name] = (g.float_type, True)
    ins = list(node.input) + [""] * (3 - len(node.input))
    ins[2] = name
    return _renamed(node, dict(enumerate(ins)))


def _renamed(node, inputs: dict[int, str]):
    """A copy of ``node`` with some inputs renamed."""
    new = type(node)()
    new.CopyFrom(node)
    while len(new.input) < max(inputs) + 1:
        new.input.append("")
    for k, name in inputs.items():
        new.input[k] = name
    return new


def relu_on_quantized(path: DataPath, node) -> bool:
    """A Relu right after a quantized layer that nothing else reads becomes that layer's ReLU
    (``relu(Q(z)) = Q(relu(z))``); returns False for any other Relu."""
    p, last = path.pending, len(path.layers) - 1
    others = [t for t in path.live if path.last_use.get(t, -1) > path.index]
    if (path.integer or p.kind is not MapKind.IDENTITY or p.b is not None or others or last < 0
            or last not in path.quant or path.layers[last].relu or dynamic_last(path)):
        return False
    path.layers[last] = dataclasses.replace(path.layers[last], relu=True)
    path.nonneg = True  # the grid holds: relu keeps values on it
    return True
