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
