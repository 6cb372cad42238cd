"""Small ONNX graphs built by hand for the tests (each construct an exporter emits)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ELEM = {np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE}


def make_model(nodes, inits, in_shape, out_shape, dtype=np.float32, opset=17, in_name="x",
               out_name="y", inits_as_inputs=False) -> onnx.ModelProto:
    """A single-input single-output model; ``inits`` is {name: array} (cast to ``dtype`` if float)."""
    tensors = []
    for name, value in inits.items():
        value = np.asarray(value)
        if value.dtype.kind == "f":
            value = value.astype(dtype)
        tensors.append(numpy_helper.from_array(value, name))
    inputs = [helper.make_tensor_value_info(in_name, ELEM[dtype], in_shape)]
    if inits_as_inputs:
        inputs += [
            helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in tensors
        ]
    graph = helper.make_graph(
        nodes, "test", inputs, [helper.make_tensor_value_info(out_name, ELEM[dtype], out_shape)],
        initializer=tensors,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset >= 13 else 4
    return model


def mlp(weights, biases, dtype=np.float32, final_relu=False, in_shape=None) -> onnx.ModelProto:
    """Gemm(transB=1)+Relu chain for weights of shape (out, in)."""
    nodes, inits = [], {}
    cur = "x"
    n_in = np.asarray(weights[0]).shape[1]
    for k, (w, b) in enumerate(zip(weights, biases)):
        inits[f"W{k}"] = np.asarray(w)
        inits[f"B{k}"] = np.asarray(b)
        last = k == len(weights) - 1
        out = "y" if last and not final_relu else f"g{k}"
        nodes.append(helper.make_node("Gemm", [cur, f"W{k}", f"B{k}"], [out], transB=1))
        cur = out
        if not last or final_relu:
            relu_out = "y" if last else f"r{k}"
            nodes.append(helper.make_node("Relu", [cur], [relu_out]))
            cur = relu_out
    n_out = np.asarray(weights[-1]).shape[0]
    return make_model(nodes, inits, in_shape or [1, n_in], [1, n_out], dtype)


def random_mlp_weights(rng, widths, scale=1.0):
    """Random weights/biases for layer widths [n0, n1, ..., nL]."""
    ws = [rng.normal(0, scale / np.sqrt(widths[i]), (widths[i + 1], widths[i])) for i in range(len(widths) - 1)]
    bs = [rng.normal(0, 0.3 * scale, widths[i + 1]) for i in range(len(widths) - 1)]
    return ws, bs
