"""Start-up cost: what a command imports before it needs it (issue 10, item 8).

Each check runs in a fresh interpreter (``sys.modules`` of this test process is full of onnx and
onnxruntime) and asserts which heavy modules are loaded at the end. Wall times are measured by
``benchmarks/startup.py``, not here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from .helpers import mlp

HEAVY = ("z3", "onnxruntime", "matplotlib", "scipy", "highspy")


def fresh_python(code: str) -> str:
    """Run ``code`` in a new interpreter; its stdout (the last line must be the answer)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def loaded(names) -> str:
    """Code printing which of ``names`` are in ``sys.modules``, as JSON."""
    return f"import json; print(json.dumps(sorted(m for m in {tuple(names)!r} if m in sys.modules)))"


@pytest.fixture
def small_pair(tmp_path):
    """Two files holding the same small ReLU network (a 3-4-2 MLP)."""
    rng = np.random.default_rng(7)
    model = mlp([rng.normal(size=(4, 3)), rng.normal(size=(2, 4))], [rng.normal(size=4), rng.normal(size=2)])
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(model, a)
    onnx.save(model, b)
    return a, b


def test_cli_import_loads_no_heavy_module():
    out = fresh_python("import sys; import equivcheck.cli; " + loaded(HEAVY))
    assert json.loads(out) == []


def test_library_proof_of_identical_pair_loads_no_solver_and_no_onnx(small_pair):
    a, b = small_pair
    code = (
        "import sys, equivcheck\n"
        f"r = equivcheck.prove({str(a)!r}, {str(b)!r}, domain='-1:1')\n"
        "assert r.verdict is equivcheck.Verdict.PROVED, r.reason\n"
        + loaded(HEAVY + ("onnx", "ml_dtypes"))
    )
    assert json.loads(fresh_python(code)) == []


def test_cli_proof_of_identical_pair_loads_no_solver_no_onnx_no_rich(small_pair):
    a, b = small_pair
    code = (
        "import sys\n"
        f"sys.argv = ['equivcheck', 'prove', {str(a)!r}, {str(b)!r}, '--domain', '-1:1']\n"
        "from equivcheck.cli import app\n"
        "try:\n    app()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        + loaded(HEAVY + ("onnx", "ml_dtypes", "rich", "pydantic"))  # stderr is a pipe: plain
    )  # text, no rich; pydantic: typer >= 0.29 coerces every parameter through it (pyproject.toml)
    assert json.loads(fresh_python(code)) == []


def test_onnx_imported_after_the_lone_protobuf_module_shares_it(small_pair):
    """A model read before ``import onnx`` is an ``onnx.ModelProto`` once onnx is imported, and
    onnx's own API (checker, numpy_helper, save) works on it."""
    a, _ = small_pair
    code = (
        "import sys\n"
        "from equivcheck.io.onnx_import import load_model, load_network\n"
        f"m = load_model({str(a)!r})\n"
        f"n = load_network({str(a)!r})\n"
        "assert 'onnx' not in sys.modules\n"
        "import onnx\n"
        "from onnx import checker, numpy_helper\n"
        "assert isinstance(m, onnx.ModelProto)\n"
        "checker.check_model(m)\n"
        "w = numpy_helper.to_array(m.graph.initializer[0])\n"
        f"assert onnx.load({str(a)!r}) == m\n"
        "print(repr([(str(l.affine.rational_weight().tolist()), str(l.affine.rational_bias().tolist()), l.relu)\n"
        "            for l in n.layers] + [n.input_shape, n.input_dtype, n.notes]))\n"
    )
    first = fresh_python(code)
    # the same network when onnx is imported first
    second = fresh_python(
        "import onnx\n" + code.replace("assert 'onnx' not in sys.modules\n", "")
    )
    assert first == second


def _tensors():
    rng = np.random.default_rng(1)
    f32 = rng.normal(size=(3, 4)).astype(np.float32)
    f64 = rng.normal(size=(2, 2))
    i64 = np.array([1, -2, 3], dtype=np.int64)
    i32 = np.array([[7, -8]], dtype=np.int32)
    yield numpy_helper.from_array(f32, "raw_f32")
    yield numpy_helper.from_array(f64, "raw_f64")
    yield numpy_helper.from_array(i64, "raw_i64")
    yield numpy_helper.from_array(i32, "raw_i32")
    yield numpy_helper.from_array(np.float32(2.5), "scalar")
    yield helper.make_tensor("typed_f32", TensorProto.FLOAT, [2, 2], [1.0, -2.0, 3.5, 0.0])
    yield helper.make_tensor("typed_f64", TensorProto.DOUBLE, [3], [0.1, 0.2, 0.3])
    yield helper.make_tensor("typed_i64", TensorProto.INT64, [2], [5, -6])
    yield helper.make_tensor("typed_i32", TensorProto.INT32, [1, 2], [9, -10])
    yield helper.make_tensor("typed_f16", TensorProto.FLOAT16, [2], np.array([1.5, -2], np.float16))
    yield helper.make_tensor("typed_bool", TensorProto.BOOL, [2], [True, False])


@pytest.mark.parametrize("tensor", list(_tensors()), ids=lambda t: t.name)
def test_tensor_to_array_matches_onnx(tensor):
    from equivcheck.io.onnx_proto import tensor_to_array

    ours, theirs = tensor_to_array(tensor), numpy_helper.to_array(tensor)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert np.array_equal(ours, theirs)


def test_tensor_to_array_refuses_a_short_buffer():
    from equivcheck.io.onnx_proto import tensor_to_array

    t = numpy_helper.from_array(np.zeros((2, 3), np.float32), "w")
    t.raw_data = t.raw_data[:-4]
    with pytest.raises(ValueError):
        tensor_to_array(t)


def _reference_onnx(net, graph_name="equivcheck"):
    """The model of ``net`` as ``onnx.helper`` builds it (what ``to_onnx`` built before it was
    written on the protobuf classes alone)."""
    from equivcheck.io.onnx_export import IR_VERSION, OPSET, _NameAllocator

    fresh = _NameAllocator({net.input_name, net.output_name})
    dtype = np.float64 if net.input_dtype == "float64" else np.float32
    elem = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    in_shape = [d if d > 0 else "N" for d in net.input_shape] or [net.in_dim]
    out_shape = [d if d > 0 else "N" for d in net.output_shape] or [net.out_dim]
    flat, flat_shape = fresh("flat_input"), fresh("flat_shape")
    nodes = [helper.make_node("Reshape", [net.input_name, flat_shape], [flat], name=fresh("flatten_input"))]
    inits = [numpy_helper.from_array(np.array([1, net.in_dim], dtype=np.int64), flat_shape)]
    cur = flat
    for k, layer in enumerate(net.layers):
        w_name, b_name, out = fresh(f"W{k}"), fresh(f"B{k}"), fresh(f"gemm{k}")
        inits.append(numpy_helper.from_array(layer.weight.astype(dtype), w_name))
        inits.append(numpy_helper.from_array(layer.bias.astype(dtype), b_name))
        nodes.append(helper.make_node("Gemm", [cur, w_name, b_name], [out], name=fresh(f"gemm_{k}"), transB=1))
        cur = out
        if layer.relu:
            relu_out = fresh(f"relu{k}")
            nodes.append(helper.make_node("Relu", [cur], [relu_out], name=fresh(f"relu_{k}")))
            cur = relu_out
    out_dims = [d if isinstance(d, int) else 1 for d in out_shape]
    out_shape_name = fresh("out_shape")
    inits.append(numpy_helper.from_array(np.array(out_dims, dtype=np.int64), out_shape_name))
    nodes.append(helper.make_node("Reshape", [cur, out_shape_name], [net.output_name], name=fresh("reshape_output")))
    graph = helper.make_graph(nodes, graph_name, [helper.make_tensor_value_info(net.input_name, elem, in_shape)],
                              [helper.make_tensor_value_info(net.output_name, elem, out_shape)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="equivcheck")
    model.ir_version = IR_VERSION
    return model


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shapes", [((1, 3), (1, 2)), ((-1, 3), (-1, 2)), ((3,), (2,)), ((), ())])
def test_export_without_onnx_builds_what_onnx_helper_builds(tmp_path, dtype, shapes):
    import dataclasses

    from equivcheck.io.onnx_export import export_network, to_onnx
    from equivcheck.io.onnx_import import load_network

    from .helpers import ort_outputs

    rng = np.random.default_rng(3)
    model = mlp([rng.normal(size=(4, 3)), rng.normal(size=(2, 4))], [rng.normal(size=4), rng.normal(size=2)],
                dtype=dtype)
    net = dataclasses.replace(load_network(model), input_shape=shapes[0], output_shape=shapes[1],
                              input_name="in", output_name="W0")  # a name the export must avoid
    ours, exact = to_onnx(net)
    assert exact
    assert ours == _reference_onnx(net)
    onnx.checker.check_model(ours, full_check=True)
    path = tmp_path / "net.onnx"
    assert export_network(net, path)
    assert onnx.load(str(path)) == ours
    x = rng.uniform(-1, 1, size=(5, 3))
    assert np.array_equal(load_network(path).evaluate(x), net.evaluate(x))
    assert np.allclose(ort_outputs(ours, x.astype(dtype)), net.evaluate(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("suffix,fmt", [(".textproto", "textproto"), (".json", "json"), (".pb", None),
                                        (".bin", None)])
def test_text_formats_go_through_onnx_and_binary_files_do_not(tmp_path, small_pair, suffix, fmt):
    from equivcheck.io.onnx_import import load_network

    a, _ = small_pair
    path = tmp_path / f"model{suffix}"
    if fmt is None:
        path.write_bytes(a.read_bytes())
    else:
        onnx.save_model(onnx.load(str(a)), str(path), format=fmt)
    x = np.random.default_rng(0).uniform(-1, 1, size=(4, 3))
    assert np.array_equal(load_network(path).evaluate(x), load_network(a).evaluate(x))
    if fmt is None:  # binary whatever the suffix: read without onnx in a fresh interpreter
        code = ("import sys\nfrom equivcheck.io.onnx_import import load_network\n"
                f"load_network({str(path)!r})\n" + loaded(("onnx", "ml_dtypes")))
        assert json.loads(fresh_python(code)) == []
