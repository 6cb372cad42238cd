"""Adversarial ONNX import and export (issue 8): constant subgraphs mean what onnxruntime
computes, bad attributes and values are refused by name, gigantic shapes and huge weights are
refused before anything dense is allocated, only regular files are opened, external data is
confined to the model's folder, and exported names never clash."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import equivcheck
from equivcheck.core.network import MAX_ABS_WEIGHT, Affine, Layer, Network
from equivcheck.errors import (
    InputError,
    ModelFileError,
    ModelValueError,
    ShapeMismatchError,
    UnsupportedModelError,
)
from equivcheck.io.onnx_export import to_onnx
from equivcheck.io.onnx_import import load_network

from .helpers import gemm_weights, make_model, mlp, ort_session, relu_tail

rng0 = np.random.default_rng(8)
W1, B1, W2, B2 = gemm_weights(rng0)


# ---- 1. constant subgraphs mean what onnxruntime computes --------------------------------------


def _exp_models():
    """(model with W = Exp(C), C, B): a single Gemm whose weight is a constant subgraph."""
    rng = np.random.default_rng(0)
    c = rng.uniform(-3, 3, (4, 3)).astype(np.float32)
    b = rng.normal(0, 1, 4).astype(np.float32)
    nodes = [helper.make_node("Exp", ["C"], ["W"], name="Exp_3"),
             helper.make_node("Gemm", ["x", "W", "B"], ["y"], transB=1)]
    return make_model(nodes, {"C": c, "B": b}, [1, 3], [1, 4]), c, b


def _gemm_model(w, b):
    return make_model([helper.make_node("Gemm", ["x", "W", "B"], ["y"], transB=1)], {"W": w, "B": b}, [1, 3], [1, 4])


def test_exp_constant_is_folded_as_onnxruntime_computes_it():
    model, c, b = _exp_models()
    w_ort = ort_session(make_model([helper.make_node("Exp", ["C"], ["y"])], {"C": c}, [1], [4, 3])).run(
        None, {"x": np.zeros(1, np.float32)})[0]
    w_numpy = ReferenceEvaluator(make_model([helper.make_node("Exp", ["C"], ["y"])], {"C": c}, [1], [4, 3])).run(
        None, {"x": np.zeros(1, np.float32)})[0]
    if np.array_equal(w_ort, w_numpy):
        pytest.skip("numpy and onnxruntime compute the same float32 exp on this machine")
    ort_copy, numpy_copy = _gemm_model(w_ort, b), _gemm_model(w_numpy, b)
    # the premise: onnxruntime runs the Exp model and its onnxruntime-folded copy bit-identically
    x = np.random.default_rng(1).uniform(0, 1, (16, 3)).astype(np.float32)
    for row in x:
        assert np.array_equal(ort_session(model).run(None, {"x": row[None]})[0],
                              ort_session(ort_copy).run(None, {"x": row[None]})[0])
    net = load_network(model)
    assert np.array_equal(net.layers[0].weight, w_ort.astype(np.float64))
    assert net.notes == ("constant subgraph Exp_3 folded as onnxruntime computes it (float32)",)
    proved = equivcheck.prove(model, ort_copy, domain="0:1", mode="strict", timeout=30)
    assert proved.verdict == equivcheck.Verdict.PROVED
    refuted = equivcheck.prove(model, numpy_copy, domain="0:1", mode="strict", timeout=30)
    assert refuted.verdict == equivcheck.Verdict.REFUTED


def _diag_model(const_nodes, inits, n=6, dtype=np.float32):
    """y = x * K where K (shape (1, n)) is computed by ``const_nodes`` into tensor 'K'."""
    nodes = const_nodes + [helper.make_node("Mul", ["x", "K"], ["y"], name="scale")]
    return make_model(nodes, inits, [1, n], [1, n], dtype=dtype)


C6 = np.array([[0.1, 0.7, 1.3, 2.9, -0.4, 3.7]])
CONSTANT_SUBGRAPHS = {
    # name: (nodes computing K, initializers, folded by onnxruntime?)
    "exp": ([helper.make_node("Exp", ["C"], ["K"], name="e")], {"C": C6}, True),
    "sqrt_div": ([helper.make_node("Sqrt", ["C2"], ["s"], name="sq"),
                  helper.make_node("Div", ["s", "three"], ["K"], name="dv")],
                 {"C2": np.abs(C6), "three": np.array(3.0)}, True),
    "pow_add": ([helper.make_node("Pow", ["C2", "half"], ["p"], name="pw"),
                 helper.make_node("Add", ["p", "C"], ["K"], name="ad")],
                {"C2": np.abs(C6), "half": np.array(0.37), "C": C6}, True),
    "value_floats_exp": ([helper.make_node("Constant", [], ["c"], value_floats=[0.1, 0.7, 1.3, 2.9, -0.4, 3.7]),
                          helper.make_node("Exp", ["c"], ["K"], name="e2")], {}, True),
    "transpose_concat_neg": ([helper.make_node("Transpose", ["Ct"], ["t"], perm=[1, 0]),
                              helper.make_node("Neg", ["t"], ["n"]),
                              helper.make_node("Concat", ["n", "n"], ["K"], axis=1)],
                             {"Ct": -C6[:, :3].T}, False),
    "reshape_gather_slice": ([helper.make_node("Reshape", ["C", "s16"], ["r"]),
                              helper.make_node("Slice", ["r", "st", "en", "ax"], ["sl"]),
                              helper.make_node("Gather", ["sl", "idx"], ["K"], axis=1)],
                             {"C": C6.ravel(), "s16": np.array([1, 6]), "st": np.array([1]), "en": np.array([6]),
                              "ax": np.array([1]), "idx": np.array([0, 1, 2, 3, 4, 0])}, False),
}


@pytest.mark.parametrize("name", sorted(CONSTANT_SUBGRAPHS))
def test_constant_subgraph_matches_onnxruntime_bit_for_bit(name):
    """x * K at x = 1 is K exactly in float32, so onnxruntime's output is its folded K."""
    nodes, inits, by_ort = CONSTANT_SUBGRAPHS[name]
    model = _diag_model(nodes, inits)
    k_ort = ort_session(model).run(None, {"x": np.ones((1, 6), np.float32)})[0].ravel()
    net = load_network(model)
    assert np.array_equal(np.diag(net.layers[0].weight), k_ort.astype(np.float64))
    noted = any("onnxruntime computes" in n for n in net.notes)
    assert noted == by_ort


def test_narrowing_cast_is_noted_and_exact_cast_is_not():
    inexact = np.array([[0.1, 0.2, 0.3]])  # float64 values no float32 holds
    exact = np.array([[0.5, 0.25, -3.0]])
    for value, noted in ((inexact, True), (exact, False)):
        nodes = [helper.make_node("Cast", ["C"], ["K"], to=TensorProto.FLOAT, name="narrow")]
        tensors = [numpy_helper.from_array(value, "C")]
        graph = helper.make_graph(
            nodes + [helper.make_node("Mul", ["x", "K"], ["y"])], "t",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], initializer=tensors)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        net = load_network(model)
        assert np.array_equal(np.diag(net.layers[0].weight), value.astype(np.float32).astype(np.float64).ravel())
        assert any("narrow" in n for n in net.notes) == noted


def test_random_constant_is_refused():
    nodes = [helper.make_node("RandomNormal", [], ["K"], shape=[1, 3], name="rnd"),
             helper.make_node("Mul", ["x", "K"], ["y"])]
    with pytest.raises(UnsupportedModelError, match="rnd.*random"):
        load_network(make_model(nodes, {}, [1, 3], [1, 3]))


# ---- 2. attribute and value validation ------------------------------------------------------


def _gemm(**attrs):
    return [helper.make_node("Gemm", ["x", "W1", "B1"], ["g"], name="fc", transB=1, **attrs)]


def _bn(var, **attrs):
    nodes = [helper.make_node("Gemm", ["x", "W1", "B1"], ["g"], transB=1),
             helper.make_node("BatchNormalization", ["g", "sc", "bb", "mu", "var"], ["bn"], name="bn1", **attrs)]
    inits = {"W1": W1, "B1": B1, "sc": np.ones(4), "bb": np.zeros(4), "mu": np.zeros(4), "var": np.asarray(var)}
    return make_model(nodes + relu_tail("bn"), inits | {"W2": W2, "B2": B2}, [1, 3], [1, 2])


def _inits(**extra):
    return {"W1": W1, "B1": B1, "W2": W2, "B2": B2} | extra


def _dropout(flag):
    nodes = [helper.make_node("Gemm", ["x", "W1", "B1"], ["g"], transB=1),
             helper.make_node("Dropout", ["g", "ratio", "train"], ["d"], name="drop")]
    return make_model(nodes + relu_tail("d"), _inits(ratio=np.array(0.5), train=np.array(flag)), [1, 3], [1, 2])


BAD_MODELS = {
    "gemm_alpha_nan": (lambda: make_model(_gemm(alpha=float("nan")) + relu_tail("g"), _inits(), [1, 3], [1, 2]),
                       ModelValueError, "fc.*alpha is nan"),
    "gemm_beta_inf": (lambda: make_model(_gemm(beta=float("inf")) + relu_tail("g"), _inits(), [1, 3], [1, 2]),
                      ModelValueError, "fc.*beta is inf"),
    "gemm_c_wrong_shape": (lambda: make_model(_gemm() + relu_tail("g"), _inits(B1=np.ones(3)), [1, 3], [1, 2]),
                           ShapeMismatchError, r"fc.*C of shape \(3,\) does not broadcast"),
    "gemm_c_wrong_shape_beta_0": (lambda: make_model(_gemm(beta=0.0) + relu_tail("g"), _inits(B1=np.ones(3)), [1, 3],
                                                     [1, 2]), ShapeMismatchError, r"fc.*C of shape \(3,\)"),
    "transpose_short_perm": (lambda: make_model(
        [helper.make_node("Transpose", ["x"], ["t"], perm=[0], name="tp"),
         helper.make_node("Gemm", ["t", "W1", "B1"], ["g"], transB=1)] + relu_tail("g"), _inits(), [1, 3], [1, 2]),
        ModelValueError, r"tp.*perm \[0\] is not a permutation"),
    "transpose_repeated_perm": (lambda: make_model(
        [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 1], name="tp"),
         helper.make_node("Gemm", ["t", "W1", "B1"], ["g"], transB=1)] + relu_tail("g"), _inits(), [1, 3], [1, 2]),
        ModelValueError, r"tp.*perm \[1, 1\] is not a permutation"),
    "bn_negative_variance": (lambda: _bn([0.5, -0.25, 1.0, 1.0]), ModelValueError, "bn1.*negative variance -0.25"),
    "bn_epsilon_inf": (lambda: _bn([0.5, 0.25, 1.0, 1.0], epsilon=float("inf")), ModelValueError, "bn1.*epsilon is inf"),
    "bn_training_mode": (lambda: _bn([0.5, 0.25, 1.0, 1.0], training_mode=1), UnsupportedModelError,
                         "bn1.*training mode"),
    "bn_wrong_param_shape": (lambda: _bn([0.5, 0.25, 1.0]), ShapeMismatchError, r"bn1.*input_var has shape \(3,\)"),
    "dropout_training_true": (lambda: _dropout(True), UnsupportedModelError, "drop.*training_mode true"),
    "dropout_data_as_ratio": (lambda: make_model(
        [helper.make_node("Dropout", ["K", "x"], ["y"], name="drop")], {"K": np.ones((1, 1))}, [], [1, 1]),
        UnsupportedModelError, "drop.*enters as input 1"),
    "squeeze_non_unit_axis": (lambda: make_model(
        [helper.make_node("Squeeze", ["x", "ax"], ["s"], name="sq"), helper.make_node("Relu", ["s"], ["y"])],
        {"ax": np.array([1])}, [1, 3], [1]), ShapeMismatchError, "sq.*cannot squeeze"),
    # models onnxruntime refuses to load are refused too, by name
    "mixed_float_types": (lambda: _typed_model([helper.make_node("Add", ["x", "K"], ["y"], name="add")],
                                               {"K": np.ones(3)}, TensorProto.FLOAT, TensorProto.FLOAT),
                          ModelValueError, "add.*'K' has type float64 but the data is float32"),
    "output_type_differs": (lambda: _typed_model([helper.make_node("Add", ["x", "K"], ["y"])],
                                                 {"K": np.ones(3, np.float32)}, TensorProto.FLOAT, TensorProto.DOUBLE),
                            ModelValueError, "output 'y' is declared with element type 11"),
    "tensor_defined_twice": (lambda: make_model(
        [helper.make_node("Gemm", ["x", "W1", "B1"], ["g"], transB=1),
         helper.make_node("Relu", ["g"], ["g"], name="again")] + relu_tail("g"), _inits(), [1, 3], [1, 2]),
        UnsupportedModelError, "again.*output 'g' redefines"),
    "gather_float_indices": (lambda: make_model(
        [helper.make_node("Gather", ["W1", "idx"], ["Wg"], name="pick", axis=0),
         helper.make_node("Gemm", ["x", "Wg", "B1"], ["g"], transB=1)] + relu_tail("g"),
        _inits(idx=np.array([0.0, 1.0, 2.0, 3.0])), [1, 3], [1, 2]),
        ModelValueError, "pick.*'idx' has type tensor.float.*Gather does not accept"),
    "tile_negative_repeats": (lambda: make_model(
        [helper.make_node("Tile", ["W1", "rep"], ["Wt"], name="tl"),
         helper.make_node("Gemm", ["x", "W1", "B1"], ["g"], transB=1)] + relu_tail("g"),
        _inits(rep=np.array([1, -2])), [1, 3], [1, 2]), ModelValueError, r"tl.*negative size \[1, -2\]"),
    "reshape_below_minus_one": (lambda: make_model(
        [helper.make_node("Reshape", ["x", "s"], ["xr"], name="rs"),
         helper.make_node("Gemm", ["xr", "W1", "B1"], ["g"], transB=1)] + relu_tail("g"),
        _inits(s=np.array([-2, 3])), [1, 3], [1, 2]), ShapeMismatchError, "rs.*below -1"),
}


def _typed_model(nodes, inits, in_type, out_type):
    """A one-input model with initializers stored exactly as given (no cast to the model type)."""
    graph = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("x", in_type, [1, 3])],
        [helper.make_tensor_value_info("y", out_type, [1, 3])],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("name", sorted(BAD_MODELS))
def test_bad_attribute_or_value_refused_by_name(name):
    build, error, pattern = BAD_MODELS[name]
    with pytest.raises(error, match=pattern):
        load_network(build())


def test_dropout_inference_mode_is_identity():
    model = _dropout(False)
    net = load_network(model)
    x = np.array([[0.3, -0.7, 1.1]], np.float32)
    np.testing.assert_allclose(net.evaluate(x.ravel()), ort_session(model).run(None, {"x": x})[0].ravel(),
                               rtol=1e-5, atol=1e-6)


# ---- 3. gigantic shapes, 4. huge weights ---------------------------------------------------


def test_gigantic_input_refused_before_allocating():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {}, [1, 10**12], [1, 10**12])
    with pytest.raises(UnsupportedModelError, match=r"input 'x'.*1,000,000,000,000 values"):
        load_network(model)


def test_identity_into_relu_too_wide_for_a_dense_layer():
    # 100,000 inputs straight into a ReLU: the identity layer would be 10^10 weights
    model = make_model([helper.make_node("Relu", ["x"], ["r"], name="act"),
                        helper.make_node("ReduceSum", ["r"], ["y"])], {}, [1, 100_000], [1, 1])
    with pytest.raises(UnsupportedModelError, match=r"layer 'act'.*100,000 x 100,000"):
        load_network(model)


def test_wide_layer_refused_by_name_and_width():
    w = np.zeros((200_000, 3))
    nodes = [helper.make_node("Gemm", ["x", "W", "B"], ["g"], name="wide", transB=1),
             helper.make_node("Relu", ["g"], ["r"]), helper.make_node("ReduceSum", ["r"], ["y"])]
    model = make_model(nodes, {"W": w, "B": np.zeros(200_000)}, [1, 3], [1, 1])
    with pytest.raises(UnsupportedModelError, match=r"wide.*200,000 values"):
        load_network(model)


def test_gigantic_constant_refused_before_it_is_computed():
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["K"], name="fill",
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
             helper.make_node("MatMul", ["x", "K"], ["y"])]
    model = make_model(nodes, {"shape": np.array([10**5, 10**5])}, [1, 10**5], [1, 10**5])
    with pytest.raises(UnsupportedModelError, match=r"fill.*10,000,000,000 entries"):
        load_network(model)


def test_gigantic_declared_output_refused():
    model = mlp([W1, W2], [B1, B2])
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 10**12
    with pytest.raises(UnsupportedModelError, match=r"output 'y' is declared.*1,000,000,000,000 values"):
        load_network(model)


def test_huge_weight_refused_by_tensor_and_value():
    w = W1.copy()
    w[2, 1] = -1e200
    with pytest.raises(ModelValueError, match=r"W0.*-1e\+200.*limit 1e\+30"):
        load_network(mlp([w, W2], [B1, B2], dtype=np.float64))


def test_huge_weight_after_folding_refused_by_layer():
    # x / 1e-20 then a Gemm with weights ~1e15: each constant is moderate, the folded layer is not
    nodes = [helper.make_node("Div", ["x", "tiny"], ["d"]),
             helper.make_node("Gemm", ["d", "W1", "B1"], ["g"], transB=1, name="fc1")]
    model = make_model(nodes + relu_tail("g"), _inits(W1=W1 * 1e15, tiny=np.array(1e-20)), [1, 3], [1, 2],
                       dtype=np.float64)
    with pytest.raises(ModelValueError, match=r"layer 'r'.*weight of magnitude .*e\+3\d after folding"):
        load_network(model)


def test_weight_at_the_limit_is_accepted():
    w = W1.copy()
    w[0, 0] = MAX_ABS_WEIGHT
    net = load_network(mlp([w, W2], [B1, B2], dtype=np.float64))
    assert net.layers[0].weight[0, 0] == MAX_ABS_WEIGHT


# ---- 5. only regular files; 6. external data -------------------------------------------------


def _run_guarded(code: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that is killed after ``timeout`` seconds."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, cwd=Path(__file__).resolve().parents[1])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")
def test_fifo_model_path_refused_without_blocking(tmp_path):
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    # the external data of a valid model may be a FIFO too
    model = mlp([W1, W2], [B1, B2])
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="pipe.bin")
    os.mkfifo(tmp_path / "pipe.bin")
    onnx.save(model, tmp_path / "ext.onnx")
    code = f"""
        from equivcheck.errors import ModelFileError
        from equivcheck.io.onnx_import import load_network
        for path in [{str(fifo)!r}, {str(tmp_path / "ext.onnx")!r}]:
            try:
                load_network(path)
            except ModelFileError as exc:
                print(exc)
    """
    try:
        done = _run_guarded(code)
    except subprocess.TimeoutExpired:
        pytest.fail("load_network blocked on a named pipe")
    lines = done.stdout.splitlines()
    assert len(lines) == 2, done.stderr
    assert lines[0] == f"{fifo}: is a named pipe (FIFO), not a regular file; an ONNX model must be a regular file"
    assert "external data file 'pipe.bin' of initializer 'W0'" in lines[1] and "named pipe" in lines[1]


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null on this platform")
def test_device_and_directory_refused(tmp_path):
    with pytest.raises(ModelFileError, match="is a device, not a regular file"):
        load_network("/dev/null")
    with pytest.raises(ModelFileError, match="is a directory, not a regular file"):
        load_network(tmp_path)


def _external_model(folder: Path, location: str) -> Path:
    """mlp whose W0 lives in the external file ``location`` (relative to ``folder``)."""
    model = mlp([W1, W2], [B1, B2])
    tensor = model.graph.initializer[0]
    data = numpy_helper.to_array(tensor).tobytes()
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    tensor.external_data.add(key="length", value=str(len(data)))
    target = folder / location
    if target.parent.is_dir() and not location.startswith("missing"):
        target.write_bytes(data)
    path = folder / "m.onnx"
    onnx.save(model, path)
    return path


def test_external_data_inside_folder_loads(tmp_path):
    net = load_network(_external_model(tmp_path, "w.bin"))
    assert np.array_equal(net.layers[0].weight, W1.astype(np.float32).astype(np.float64))


def test_external_data_outside_folder_named(tmp_path):
    inner = tmp_path / "models"
    inner.mkdir()
    path = _external_model(inner, "../secret.bin")
    assert (tmp_path / "secret.bin").exists()
    with pytest.raises(ModelFileError) as info:
        load_network(path)
    assert str(info.value) == (
        f"{path}: external data file '../secret.bin' of initializer 'W0' lies outside the model's folder"
    )


def test_external_data_missing_named(tmp_path):
    path = _external_model(tmp_path, "missing.bin")
    with pytest.raises(ModelFileError) as info:
        load_network(path)
    assert str(info.value) == f"{path}: external data file 'missing.bin' of initializer 'W0': no such file"


def test_external_data_symlink_out_of_folder_refused(tmp_path):
    inner = tmp_path / "models"
    inner.mkdir()
    (tmp_path / "real.bin").write_bytes(W1.astype(np.float32).tobytes())
    (inner / "link.bin").symlink_to(tmp_path / "real.bin")
    model = mlp([W1, W2], [B1, B2])
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="link.bin")
    onnx.save(model, inner / "m.onnx")
    with pytest.raises(ModelFileError, match="'link.bin' of initializer 'W0' lies outside"):
        load_network(inner / "m.onnx")


def test_in_memory_model_with_external_data_not_read_from_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.bin").write_bytes(W1.astype(np.float32).tobytes())
    model = mlp([W1, W2], [B1, B2])
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="w.bin")
    with pytest.raises(ModelFileError, match="'W0' keeps its data in the external file 'w.bin'"):
        load_network(model)


# ---- 7. export names never clash ------------------------------------------------------------


@pytest.mark.parametrize("names", [("W0", "relu0"), ("flat_input", "gemm1"), ("B1", "out_shape"),
                                   ("flat_shape", "W1")])
def test_export_with_clashing_names_round_trips(names):
    in_name, out_name = names
    layers = (Layer(Affine(W1, B1), relu=True, name="l0"), Layer(Affine(W2, B2), relu=False, name="l1"))
    net = Network(layers, input_name=in_name, input_shape=(1, 3), input_dtype="float64",
                  output_name=out_name, output_shape=(1, 2))
    model, exact = to_onnx(net)
    assert exact
    assert [i.name for i in model.graph.input] == [in_name]
    assert [o.name for o in model.graph.output] == [out_name]
    back = load_network(model)
    for a, b in zip(back.layers, net.layers):
        assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias) and a.relu == b.relu
    x = np.random.default_rng(3).uniform(-1, 1, (8, 3))
    sess = ort_session(model)
    for row in x:
        np.testing.assert_allclose(sess.run(None, {in_name: row[None]})[0].ravel(), net.evaluate(row),
                                   rtol=1e-12, atol=1e-12)


def test_export_refuses_input_and_output_of_one_name():
    net = Network((Layer(Affine(W1, B1), relu=False),), input_name="t", output_name="t")
    with pytest.raises(InputError, match="both named 't'"):
        to_onnx(net)


def test_export_refuses_weights_beyond_float32():
    w = W1.copy()
    w[0, 0] = 1e39  # finite in float64, inf in float32
    net = Network((Layer(Affine(w, B1), relu=False, name="big"),), input_shape=(1, 3), input_dtype="float32")
    with pytest.raises(ModelValueError, match="layer 0 .big. has weights beyond the range of float32"):
        to_onnx(net)
