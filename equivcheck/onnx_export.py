"""Writing a :class:`Network` as an ONNX model that onnxruntime runs.

The model keeps the interface of the network's source: the same input and output names, shapes
and element type. Weights are stored in that element type; when a weight is not representable
(a float64 value in a float32 model), it is rounded, and :func:`export_network` says so — the
exported file, re-imported, is what any proof about it must be run on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .network import Network

OPSET = 17


def to_onnx(net: Network, graph_name: str = "equivcheck") -> tuple["onnx.ModelProto", bool]:  # noqa: F821
    """(model, exact): the network as ONNX; ``exact`` is False when weights had to be rounded."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dtype = np.float64 if net.input_dtype == "float64" else np.float32
    elem = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    in_shape = [d if d > 0 else "N" for d in net.input_shape] or [net.in_dim]
    out_shape = [d if d > 0 else "N" for d in net.output_shape] or [net.out_dim]
    nodes, inits = [], []
    exact = True
    cur = net.input_name
    flat = "flat_input"
    nodes.append(helper.make_node("Reshape", [cur, "flat_shape"], [flat], name="flatten_input"))
    inits.append(numpy_helper.from_array(np.array([1, net.in_dim], dtype=np.int64), "flat_shape"))
    cur = flat
    for k, layer in enumerate(net.layers):
        w = layer.weight.astype(dtype)
        b = layer.bias.astype(dtype)
        if not layer.affine.is_exact_float or not (
            np.array_equal(w.astype(np.float64), layer.weight) and np.array_equal(b.astype(np.float64), layer.bias)
        ):
            exact = False
        inits.append(numpy_helper.from_array(w, f"W{k}"))
        inits.append(numpy_helper.from_array(b, f"B{k}"))
        out = f"gemm{k}"
        nodes.append(helper.make_node("Gemm", [cur, f"W{k}", f"B{k}"], [out], name=f"gemm_{k}", transB=1))
        cur = out
        if layer.relu:
            nodes.append(helper.make_node("Relu", [cur], [f"relu{k}"], name=f"relu_{k}"))
            cur = f"relu{k}"
    out_dims = [d if isinstance(d, int) else 1 for d in out_shape]
    inits.append(numpy_helper.from_array(np.array(out_dims, dtype=np.int64), "out_shape"))
    nodes.append(helper.make_node("Reshape", [cur, "out_shape"], [net.output_name], name="reshape_output"))
    graph = helper.make_graph(
        nodes,
        graph_name,
        [helper.make_tensor_value_info(net.input_name, elem, in_shape)],
        [helper.make_tensor_value_info(net.output_name, elem, out_shape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="equivcheck")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, exact


def export_network(net: Network, path: str | Path, graph_name: str = "equivcheck") -> bool:
    """Write ``net`` to ``path``; returns True when the stored weights are exactly the network's."""
    import onnx

    model, exact = to_onnx(net, graph_name)
    onnx.save(model, str(path))
    return exact
