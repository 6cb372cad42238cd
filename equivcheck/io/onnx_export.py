"""Writing a :class:`Network` as an ONNX model that onnxruntime runs.

The model keeps the interface of the network's source: the same input and output names, shapes
and element type. Weights are stored in that element type; when a weight is not representable
(a float64 value in a float32 model), it is rounded, and :func:`export_network` says so — the
exported file, re-imported, is what any proof about it must be run on.

The model is built from the protobuf classes alone (no ``import onnx``, see
:mod:`equivcheck.io.onnx_proto`), field for field as ``onnx.helper`` builds it; the tests hold it
to ``onnx.checker`` and to onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from equivcheck.core import matrix
from equivcheck.core.network import MAX_WIDTH, Network
from equivcheck.errors import ModelValueError
from equivcheck.io.onnx_proto import pb2

OPSET = 17
IR_VERSION = 8


def to_onnx(net: Network, graph_name: str = "equivcheck") -> tuple["onnx.ModelProto", bool]:  # noqa: F821
    """(model, exact): the network as ONNX; ``exact`` is False when weights had to be rounded.

    The graph's input and output keep the network's names; every internal tensor and node name
    (``W0``, ``B0``, ``relu0``, ...) is made unique against them, so any names export.
    """
    proto = pb2()
    TensorProto = proto.TensorProto

    if net.input_name == net.output_name:
        raise ModelValueError(
            f"{net.source}: input and output are both named '{net.input_name}'; an ONNX graph "
            "cannot compute one from the other under the same name"
        )
    fresh = _NameAllocator({net.input_name, net.output_name})
    dtype = np.float64 if net.input_dtype == "float64" else np.float32
    elem = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    in_shape = [d if d > 0 else "N" for d in net.input_shape] or [net.in_dim]
    out_shape = [d if d > 0 else "N" for d in net.output_shape] or [net.out_dim]
    nodes, inits = [], []
    exact = True
    flat, flat_shape = fresh("flat_input"), fresh("flat_shape")
    nodes.append(_node(proto, "Reshape", [net.input_name, flat_shape], [flat], fresh("flatten_input")))
    inits.append(_tensor(proto, np.array([1, net.in_dim], dtype=np.int64), flat_shape))
    cur = flat
    for k, layer in enumerate(net.layers):
        stored = matrix.values(layer.weight)
        with np.errstate(over="ignore"):
            w = stored.astype(dtype)
            b = layer.bias.astype(dtype)
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
            raise ModelValueError(
                f"{net.source}: layer {k} ({layer.name}) has weights beyond the range of "
                f"{np.dtype(dtype).name}; it cannot be stored in this model's element type"
            )
        if not layer.affine.is_exact_float or not (
            np.array_equal(w.astype(np.float64), stored) and np.array_equal(b.astype(np.float64), layer.bias)
        ):
            exact = False
        w_name, b_name, out = fresh(f"W{k}"), fresh(f"B{k}"), fresh(f"gemm{k}")
        if layer.affine.is_sparse:
            inits.append(_tensor(proto, b, b_name))
            nodes.extend(_sparse_nodes(proto, layer.weight, w, cur, b_name, out, k, fresh, inits))
        else:
            inits.append(_tensor(proto, w.reshape(layer.weight.shape), w_name))
            inits.append(_tensor(proto, b, b_name))
            nodes.append(_node(proto, "Gemm", [cur, w_name, b_name], [out], fresh(f"gemm_{k}"), transB=1))
        cur = out
        if layer.relu:
            relu_out = fresh(f"relu{k}")
            nodes.append(_node(proto, "Relu", [cur], [relu_out], fresh(f"relu_{k}")))
            cur = relu_out
    out_dims = [d if isinstance(d, int) else 1 for d in out_shape]
    out_shape_name = fresh("out_shape")
    inits.append(_tensor(proto, np.array(out_dims, dtype=np.int64), out_shape_name))
    nodes.append(_node(proto, "Reshape", [cur, out_shape_name], [net.output_name], fresh("reshape_output")))
    return assemble(proto, graph_name, nodes, inits, (net.input_name, elem, in_shape),
                    (net.output_name, elem, out_shape)), exact


def assemble(proto, graph_name: str, nodes: list, inits: list, inp: tuple, out: tuple):
    """The ModelProto (opset :data:`OPSET`) of a graph of ``nodes`` and initializers ``inits``
    with one input and one output, each given as ``(name, element type, shape)``."""
    model = proto.ModelProto(ir_version=IR_VERSION, producer_name="equivcheck")
    model.opset_import.add(domain="", version=OPSET)
    graph = model.graph
    graph.name = graph_name
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    _value_info(graph.input.add(), *inp)
    _value_info(graph.output.add(), *out)
    return model


def _sparse_nodes(proto, weight, values: np.ndarray, cur: str, b_name: str, out: str, k: int, fresh,
                  inits: list) -> list:
    """Nodes computing ``weight @ cur + bias`` for a sparse ``weight`` (stored ``values`` in the
    model's type) without a dense matrix: per chunk of rows, Gather the columns each row reads
    (padded to the chunk's longest row), Mul by the weights, ReduceSum; then Concat and Add.
    The importer reads this back to the same sparse layer; each chunk's gathered tensor stays
    within ``MAX_WIDTH`` values."""
    rows, _ = weight.shape
    counts = np.diff(weight.indptr)
    starts, nodes, parts = [0], [], []
    width = max(int(counts.max(initial=0)), 1)
    while starts[-1] < rows:
        starts.append(min(rows, starts[-1] + max(1, MAX_WIDTH // width)))
    for c, (lo, hi) in enumerate(zip(starts, starts[1:])):
        kmax = max(int(counts[lo:hi].max(initial=0)), 1)
        idx = np.zeros((hi - lo, kmax), dtype=np.int64)
        vals = np.zeros((hi - lo, kmax), dtype=values.dtype)
        for r in range(lo, hi):
            a, z = weight.indptr[r], weight.indptr[r + 1]
            idx[r - lo, :z - a] = weight.indices[a:z]
            vals[r - lo, :z - a] = values[a:z]
        i_name, v_name, ax_name = fresh(f"W{k}_cols{c}"), fresh(f"W{k}_vals{c}"), fresh(f"W{k}_axis{c}")
        g, m, s = fresh(f"gather{k}_{c}"), fresh(f"mul{k}_{c}"), fresh(f"sum{k}_{c}")
        inits += [_tensor(proto, idx, i_name), _tensor(proto, vals, v_name),
                  _tensor(proto, np.array([2], dtype=np.int64), ax_name)]
        nodes += [_node(proto, "Gather", [cur, i_name], [g], fresh(f"gather_{k}_{c}"), axis=1),
                  _node(proto, "Mul", [g, v_name], [m], fresh(f"mul_{k}_{c}")),
                  _node(proto, "ReduceSum", [m, ax_name], [s], fresh(f"sum_{k}_{c}"), keepdims=0)]
        parts.append(s)
    joined = parts[0]
    if len(parts) > 1:
        joined = fresh(f"rows{k}")
        nodes.append(_node(proto, "Concat", parts, [joined], fresh(f"concat_{k}"), axis=1))
    nodes.append(_node(proto, "Add", [joined, b_name], [out], fresh(f"add_{k}")))
    return nodes


def _node(proto, op_type: str, inputs: list[str], outputs: list[str], name: str, **ints: int):
    """A ``NodeProto`` of the default domain with integer attributes (``onnx.helper.make_node``)."""
    node = proto.NodeProto(op_type=op_type, input=inputs, output=outputs, name=name)
    for key, value in sorted(ints.items()):
        node.attribute.add(name=key, type=proto.AttributeProto.INT, i=value)
    return node


_ELEM_TYPES = {np.dtype(np.float32): 1, np.dtype(np.float64): 11, np.dtype(np.int64): 7}


def _tensor(proto, array: np.ndarray, name: str):
    """An initializer holding ``array`` as little-endian raw data (``numpy_helper.from_array``)."""
    array = np.asarray(array)
    dtype = array.dtype.newbyteorder("<")
    return proto.TensorProto(name=name, data_type=_ELEM_TYPES[array.dtype], dims=array.shape,
                             raw_data=np.ascontiguousarray(array, dtype=dtype).tobytes())


def _value_info(info, name: str, elem: int, shape: list) -> None:
    """Fill a graph input or output: a tensor of element type ``elem``; an int dimension is a
    fixed size, a string one a symbolic name (``helper.make_tensor_value_info``)."""
    info.name = name
    tensor_type = info.type.tensor_type
    tensor_type.elem_type = elem
    tensor_type.shape.SetInParent()
    for d in shape:
        dim = tensor_type.shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = d


class _NameAllocator:
    """Hands out names not used before: ``base``, else ``base_1``, ``base_2``, ..."""

    def __init__(self, reserved: set[str]) -> None:
        self.used = set(reserved)

    def __call__(self, base: str) -> str:
        name, k = base, 0
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name


def export_network(net: Network, path: str | Path, graph_name: str = "equivcheck") -> bool:
    """Write ``net`` to ``path``; returns True when the stored weights are exactly the network's."""
    model, exact = to_onnx(net, graph_name)
    Path(path).write_bytes(model.SerializeToString())
    return exact
