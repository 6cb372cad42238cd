"""The four CNNs of ../shared/models/external/cnn (AveragePool, MaxPool, strided convolutions,
a residual net) import to sparse layers that agree with onnxruntime on 1,000 random points of
each one's VNN-LIB box, and with exact evaluation; a re-encoded copy imports to the same
layers. Skipped when ../shared is absent."""

from __future__ import annotations

import time
from fractions import Fraction

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from equivcheck.core import matrix
from equivcheck.core.network import MAX_WIDTH
from equivcheck.io.domains import read_vnnlib_domain
from equivcheck.io.onnx_import import load_network

from .helpers import external_path, ort_session

NETS = {
    "Convnet_avgpool": "avgpool_prop_0_0.02.vnnlib",
    "Convnet_maxpool": "maxpool_prop_0_0.004.vnnlib",
    "cifar_base_kw": "cifar_base_kw-img1598-eps0.0026143790849673205.vnnlib",
    "resnet_2b": "resnet_2b_prop_0_eps_0.008.vnnlib",
}


def _box_points(box, count, rng) -> np.ndarray:
    lo = np.array([float(v) for v in box.lower], dtype=np.float64)
    hi = np.array([float(v) for v in box.upper], dtype=np.float64)
    pts = rng.uniform(lo, hi, (count, len(lo))).astype(np.float32).astype(np.float64)
    return np.clip(pts, lo, hi)


@pytest.mark.parametrize("name", sorted(NETS))
def test_cnn_agrees_with_onnxruntime_on_its_box(name):
    path = external_path(f"cnn/{name}.onnx")
    start = time.perf_counter()
    net = load_network(path)
    assert time.perf_counter() - start < 20
    big = [layer for layer in net.layers if layer.in_dim * layer.out_dim > 1_000_000]
    assert big and all(layer.affine.is_sparse for layer in big)  # convolutions stay sparse
    assert all(layer.out_dim <= MAX_WIDTH for layer in net.layers)
    assert net.num_parameters < 2_000_000  # linear in the model's parameters
    box = read_vnnlib_domain(external_path(f"cnn/{NETS[name]}"), net.in_dim).boxes[0]
    x = _box_points(box, 1000, np.random.default_rng(11))
    sess = ort_session(onnx.load(str(path)))
    inp = sess.get_inputs()[0]
    ref = np.array([sess.run(None, {inp.name: row.astype(np.float32).reshape(inp.shape)})[0].ravel()
                    for row in x], dtype=np.float64)
    ours = net.evaluate(x)
    scale = max(1.0, float(np.max(np.abs(ref))))
    assert np.max(np.abs(ours - ref)) <= 1e-4 * scale, name
    for row in x[:2]:
        exact = np.array([float(v) for v in net.evaluate_exact([Fraction(float(v)) for v in row])])
        np.testing.assert_allclose(exact, net.evaluate(row), rtol=1e-9, atol=1e-9)


def _reencoded(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same network written differently: Gemm(transB=1) as MatMul by the transposed weight
    plus Add, Flatten as Reshape."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    nodes, extra = [], {}
    for node in model.graph.node:
        if node.op_type == "Gemm":
            w, b = node.input[1], node.input[2]
            extra[w + "_t"] = np.ascontiguousarray(inits[w].T)
            nodes.append(helper.make_node("MatMul", [node.input[0], w + "_t"], [node.output[0] + "_mm"]))
            nodes.append(helper.make_node("Add", [node.output[0] + "_mm", b], [node.output[0]]))
        elif node.op_type == "Flatten":
            extra["flat_shape"] = np.array([1, -1], dtype=np.int64)
            nodes.append(helper.make_node("Reshape", [node.input[0], "flat_shape"], list(node.output)))
        else:
            nodes.append(node)
    inits.update(extra)
    graph = helper.make_graph(nodes, "re", list(model.graph.input), list(model.graph.output),
                              initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    out = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    out.ir_version = 7
    return out


def test_reencoded_maxpool_net_imports_to_identical_layers():
    path = external_path("cnn/Convnet_maxpool.onnx")
    model = onnx.load(str(path))
    a, b = load_network(model), load_network(_reencoded(model))
    assert [n.op_type for n in _reencoded(model).graph.node].count("MatMul") == 1
    assert len(a.layers) == len(b.layers) == 6  # conv, four max levels, output
    for la, lb in zip(a.layers, b.layers):
        assert la.relu == lb.relu and la.affine.same_as(lb.affine)
    assert matrix.stored_entries(a.layers[0].weight) == 32 * 4 * 27 * 27


def _rewritten(model: onnx.ModelProto) -> onnx.ModelProto:
    """Each net written as another exporter might: the input goes through an NHWC Transpose
    and back, every Conv's padding is a separate Pad and its bias a separate Add, Gemm is MatMul
    plus Add and Flatten a Reshape (:func:`_reencoded`). The same function, exactly."""
    base = _reencoded(model)
    inits = {t.name: numpy_helper.to_array(t) for t in base.graph.initializer}
    x = base.graph.input[0].name
    nodes = [helper.make_node("Transpose", [x], ["x_nhwc"], perm=[0, 2, 3, 1]),
             helper.make_node("Transpose", ["x_nhwc"], ["x_nchw"], perm=[0, 3, 1, 2])]
    for k, node in enumerate(base.graph.node):
        node = onnx.NodeProto.FromString(node.SerializeToString())
        node.input[:] = ["x_nchw" if i == x else i for i in node.input]
        if node.op_type == "Pad" and len(node.input) == 1:  # opset < 11: pads as an attribute
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            inits[f"pads{k}"] = np.array(attrs["pads"], np.int64)
            nodes.append(helper.make_node("Pad", [node.input[0], f"pads{k}"], list(node.output),
                                          mode=attrs.get("mode", b"constant").decode()))
            continue
        if node.op_type != "Conv":
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        data, out = node.input[0], node.output[0]
        pads = list(attrs.pop("pads", [0, 0, 0, 0]))
        if any(pads):
            inits[f"pads{k}"] = np.array([0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]], np.int64)
            nodes.append(helper.make_node("Pad", [data, f"pads{k}"], [f"padded{k}"], mode="constant"))
            data = f"padded{k}"
        bias = inits[node.input[2]].reshape(-1, 1, 1)
        inits[f"bias{k}"] = bias
        nodes.append(helper.make_node("Conv", [data, node.input[1]], [f"conv{k}"], **attrs))
        nodes.append(helper.make_node("Add", [f"conv{k}", f"bias{k}"], [out]))
    graph = helper.make_graph(nodes, "rewritten", list(base.graph.input), list(base.graph.output),
                              initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    out = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    out.ir_version = 7
    return out


@pytest.mark.parametrize("name", sorted(NETS))
def test_rewritten_cnn_is_proved_equal_strictly_on_its_box(name):
    import equivcheck

    path = external_path(f"cnn/{name}.onnx")
    model = onnx.load(str(path))
    other = _rewritten(model)
    ops = [n.op_type for n in other.graph.node]
    assert ops.count("Transpose") == 2 and "Gemm" not in ops and "MatMul" in ops
    padded = sum(1 for n in model.graph.node if n.op_type == "Conv" for a in n.attribute
                 if a.name == "pads" and any(helper.get_attribute_value(a)))
    assert ops.count("Pad") == padded + [n.op_type for n in model.graph.node].count("Pad")
    assert ops.count("Add") >= ops.count("Conv")  # every bias a separate Add
    # the rewritten copy computes the same outputs in onnxruntime ...
    sess_a, sess_b = ort_session(model), ort_session(other)
    inp = sess_a.get_inputs()[0]
    x = np.random.default_rng(3).random(inp.shape, dtype=np.float32)
    np.testing.assert_allclose(sess_b.run(None, {inp.name: x})[0], sess_a.run(None, {inp.name: x})[0],
                               rtol=1e-5, atol=1e-5)
    # ... and is proved equal, strictly, on the property box
    r = equivcheck.prove(str(path), other, domain=str(external_path(f"cnn/{NETS[name]}")),
                         mode="strict", timeout=60)
    assert r.verdict is equivcheck.Verdict.PROVED, r.reason
