"""Differential test of the ONNX importer: every supported construct, run on random points through
our network (float64 and exact) and through onnxruntime, must agree."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from onnx import helper

from equivcheck.errors import (
    ModelFileError,
    ModelValueError,
    ShapeMismatchError,
    UnsupportedModelError,
)
from equivcheck.io.onnx_import import load_network

from .helpers import gemm_weights, make_model, mlp, ort_outputs, relu_tail

rng0 = np.random.default_rng(1234)
W1, B1, W2, B2 = gemm_weights(rng0)


def case_gemm_attrs():
    nodes = [helper.make_node("Gemm", ["x", "W1t", "B1"], ["g"], alpha=0.5, beta=2.0, transB=0)]
    return make_model(nodes + relu_tail("g"), {"W1t": W1.T, "B1": B1, "W2": W2, "B2": B2}, [1, 3], [1, 2])


def case_gemm_transA():
    nodes = [
        helper.make_node("Reshape", ["x", "s31"], ["xt"]),
        helper.make_node("Gemm", ["xt", "W1", "B1"], ["g"], transA=1, transB=1),
    ]
    return make_model(nodes + relu_tail("g"), {"s31": np.array([3, 1]), "W1": W1, "B1": B1, "W2": W2, "B2": B2}, [1, 3], [1, 2])


def case_matmul_right_rank2():
    nodes = [
        helper.make_node("MatMul", ["x", "W1t"], ["m"]),
        helper.make_node("Add", ["m", "B1"], ["g"]),
    ]
    return make_model(nodes + relu_tail("g"), {"W1t": W1.T, "B1": B1, "W2": W2, "B2": B2}, [1, 3], [1, 2])


def case_matmul_left_rank1():
    nodes = [
        helper.make_node("MatMul", ["W1", "x"], ["m"]),
        helper.make_node("Add", ["m", "B1"], ["g"]),
        helper.make_node("Relu", ["g"], ["r"]),
        helper.make_node("MatMul", ["W2", "r"], ["m2"]),
        helper.make_node("Add", ["m2", "B2"], ["y"]),
    ]
    return make_model(nodes, {"W1": W1, "B1": B1, "W2": W2, "B2": B2}, [3], [2])


def case_matmul_rank3_data():
    # data [1, 2, 3] @ W (3, 4): each row transformed, then flattened
    nodes = [
        helper.make_node("MatMul", ["x", "W1t"], ["m"]),
        helper.make_node("Add", ["m", "B1"], ["g"]),
        helper.make_node("Relu", ["g"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "W8", "B2"], ["y"], transB=1),
    ]
    w8 = rng0.normal(0, 0.5, (2, 8))
    return make_model(nodes, {"W1t": W1.T, "B1": B1, "W8": w8, "B2": B2}, [1, 2, 3], [1, 2])


def case_matmul_left_rank2_data():
    # W (4, 3) @ data (3, 1)
    nodes = [
        helper.make_node("Reshape", ["x", "s31"], ["xc"]),
        helper.make_node("MatMul", ["W1", "xc"], ["m"]),
        helper.make_node("Add", ["m", "B1c"], ["g"]),
        helper.make_node("Relu", ["g"], ["r"]),
        helper.make_node("Reshape", ["r", "s14"], ["rf"]),
        helper.make_node("Gemm", ["rf", "W2", "B2"], ["y"], transB=1),
    ]
    inits = {"s31": np.array([3, 1]), "s14": np.array([1, 4]), "W1": W1, "B1c": B1.reshape(4, 1), "W2": W2, "B2": B2}
    return make_model(nodes, inits, [1, 3], [1, 2])


def case_normalisation():
    # (x - mean) / std, * 2, + 1, 5 - x, then Gemm: consecutive affine ops merged exactly
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["a"]),
        helper.make_node("Div", ["a", "std"], ["b"]),
        helper.make_node("Mul", ["b", "two"], ["c"]),
        helper.make_node("Add", ["c", "one"], ["d"]),
        helper.make_node("Sub", ["five", "d"], ["e"]),
        helper.make_node("Gemm", ["e", "W1", "B1"], ["g"], transB=1),
    ]
    inits = {"mean": np.array([0.1, 0.2, 0.3]), "std": np.array([0.3, 0.7, 0.11]), "two": np.array(2.0),
             "one": np.array([1.0]), "five": np.array(5.0), "W1": W1, "B1": B1, "W2": W2, "B2": B2}
    return make_model(nodes + relu_tail("g"), inits, [1, 3], [1, 2])


def case_shapes_and_passthrough():
    nodes = [
        helper.make_node("Unsqueeze", ["x", "ax0"], ["u"]),
        helper.make_node("Squeeze", ["u", "ax0"], ["s"]),
        helper.make_node("Identity", ["s"], ["i"]),
        helper.make_node("Dropout", ["i"], ["d"]),
        helper.make_node("Constant", [], ["cW"], value=helper.make_tensor("cW", 1, [4, 3], W1.astype(np.float32).ravel())),
        helper.make_node("Gemm", ["d", "cW", "B1"], ["g"], transB=1),
        helper.make_node("Relu", ["g"], ["r"]),
        helper.make_node("Reshape", ["r", "s22"], ["rr"]),
        helper.make_node("Flatten", ["rr"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "W2", "B2"], ["y"], transB=1),
    ]
    inits = {"ax0": np.array([0]), "s22": np.array([1, 2, 2]), "B1": B1, "W2": W2, "B2": B2}
    return make_model(nodes, inits, [1, 3], [1, 2])


def case_batchnorm():
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "B1"], ["g"], transB=1),
        helper.make_node("BatchNormalization", ["g", "sc", "bb", "mu", "var"], ["bn"], epsilon=1e-3),
    ]
    inits = {"W1": W1, "B1": B1, "sc": np.array([1.5, 0.5, -1.0, 2.0]), "bb": np.array([0.1, -0.2, 0.0, 0.3]),
             "mu": np.array([0.2, 0.1, -0.1, 0.0]), "var": np.array([0.5, 1.5, 2.0, 0.25]), "W2": W2, "B2": B2}
    return make_model(nodes + relu_tail("bn"), inits, [1, 3], [1, 2])


def case_consecutive_gemms():
    w_mid = rng0.normal(0, 0.5, (4, 4))
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "B1"], ["g0"], transB=1),
        helper.make_node("Gemm", ["g0", "Wm", "B1"], ["g"], transB=1),
    ]
    return make_model(nodes + relu_tail("g"), {"W1": W1, "B1": B1, "Wm": w_mid, "W2": W2, "B2": B2}, [1, 3], [1, 2])


def case_symbolic_batch_float64():
    m = mlp([W1, W2], [B1, B2], dtype=np.float64)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    m.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    return m


def case_inits_as_inputs_opset8():
    nodes = [
        helper.make_node("Sub", ["x", "zero"], ["s"]),
        helper.make_node("Flatten", ["s"], ["f"], axis=1),
        helper.make_node("MatMul", ["f", "W1t"], ["m"]),
        helper.make_node("Add", ["m", "B1"], ["g"]),
        helper.make_node("Relu", ["g"], ["r"]),
        helper.make_node("MatMul", ["r", "W2t"], ["m2"]),
        helper.make_node("Add", ["m2", "B2"], ["y"]),
    ]
    inits = {"zero": np.zeros((1, 1, 1, 3)), "W1t": W1.T, "B1": B1, "W2t": W2.T, "B2": B2}
    return make_model(nodes, inits, [1, 1, 1, 3], [1, 2], opset=8, inits_as_inputs=True)


def case_transpose():
    nodes = [
        helper.make_node("Reshape", ["x", "s"], ["x2"]),
        helper.make_node("Transpose", ["x2"], ["t"], perm=[0, 2, 1]),
        helper.make_node("Flatten", ["t"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "W6", "B1"], ["g"], transB=1),
    ]
    w6 = rng0.normal(0, 0.5, (4, 6))
    return make_model(nodes + relu_tail("g"), {"s": np.array([1, 2, 3]), "W6": w6, "B1": B1, "W2": W2, "B2": B2}, [1, 6], [1, 2])


def case_final_relu():
    return mlp([W1, W2], [B1, B2], final_relu=True)


CASES = {name[5:]: fn for name, fn in globals().items() if name.startswith("case_")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_construct_matches_onnxruntime(name):
    model = CASES[name]()
    net = load_network(model, name=name)
    rng = np.random.default_rng(7)
    for _ in range(25):
        x = rng.uniform(-2, 2, net.in_dim).astype(np.float32).astype(np.float64)
        ref = ort_outputs(model, x)
        ours = net.evaluate(x)
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5, err_msg=name)
    # exact evaluation agrees with float64 (to float64 rounding)
    exact = [float(v) for v in net.evaluate_exact([Fraction(float(v)) for v in x])]
    np.testing.assert_allclose(exact, net.evaluate(x), rtol=1e-12, atol=1e-12)


def test_consecutive_affines_are_merged_into_one_layer():
    net = load_network(case_normalisation())
    assert len(net.layers) == 2
    # division by 0.3 is not exact in float: the layer must carry exact rationals
    assert not net.layers[0].affine.is_exact_float
    w = net.layers[0].affine.rational_weight()
    # exact: W1[i,j] * (-2) / std[j]
    std = np.array([0.3, 0.7, 0.11], dtype=np.float32)
    w1 = W1.astype(np.float32)
    assert w[0, 0] == Fraction(float(w1[0, 0])) * -2 / Fraction(float(std[0]))


def test_exact_weights_kept_when_no_arithmetic():
    net = load_network(mlp([W1, W2], [B1, B2]))
    assert all(layer.affine.is_exact_float for layer in net.layers)
    assert np.array_equal(net.layers[0].weight, W1.astype(np.float32).astype(np.float64))


def test_batchnorm_is_noted():
    net = load_network(case_batchnorm())
    assert any("BatchNormalization" in n for n in net.notes)


# ---- errors ----------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="no such file"):
        load_network(tmp_path / "missing.onnx")


def test_corrupt_file(tmp_path):
    p = tmp_path / "bad.onnx"
    p.write_bytes(b"\x08\x07this is not protobuf\xff\xff")
    with pytest.raises(ModelFileError, match="bad.onnx"):
        load_network(p)


def test_unsupported_operator_names_node():
    nodes = [helper.make_node("Gemm", ["x", "W1", "B1"], ["g"], transB=1, name="fc1"),
             helper.make_node("MaxPool", ["g"], ["y"], kernel_shape=[2], name="pool7")]
    model = make_model(nodes, {"W1": W1, "B1": B1}, [1, 3], [1, 2])
    with pytest.raises(UnsupportedModelError, match="pool7.*MaxPool"):
        load_network(model)


def test_non_relu_activation():
    nodes = [helper.make_node("Gemm", ["x", "W1", "B1"], ["g"], transB=1),
             helper.make_node("Sigmoid", ["g"], ["y"], name="act")]
    model = make_model(nodes, {"W1": W1, "B1": B1}, [1, 3], [1, 4])
    with pytest.raises(UnsupportedModelError, match="activation Sigmoid"):
        load_network(model)


def test_nan_weight_names_tensor():
    w = W1.copy()
    w[1, 2] = np.nan
    with pytest.raises(ModelValueError, match="W0.*nan"):
        load_network(mlp([w, W2], [B1, B2]))


def test_branching_graph_with_a_product_of_branches_rejected():
    # a skip connection (Add of two branches) imports since issue 12; a product does not
    nodes = [helper.make_node("Gemm", ["x", "W1", "B1"], ["g"], transB=1),
             helper.make_node("Relu", ["g"], ["r"]),
             helper.make_node("Mul", ["r", "g"], ["y"], name="skip")]
    model = make_model(nodes, {"W1": W1, "B1": B1}, [1, 3], [1, 4])
    with pytest.raises(UnsupportedModelError, match="skip.*two data tensors"):
        load_network(model)


def test_shape_mismatch_in_matmul():
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    model = make_model(nodes, {"W": np.ones((4, 2))}, [1, 3], [1, 2])
    with pytest.raises(ShapeMismatchError, match="mm"):
        load_network(model)


def test_integer_input_rejected():
    from onnx import TensorProto

    model = mlp([W1, W2], [B1, B2])
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.INT64
    with pytest.raises(UnsupportedModelError, match="element type"):
        load_network(model)
