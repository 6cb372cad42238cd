"""What the test files share: network and ONNX builders, exact and onnxruntime checks, the command
line, and where the bundled and third-party models are.

Builders make small, exactly representable networks (float32 weights held in float64 arrays),
so a test can state what a pair computes and derive the expected verdict by hand.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from equivcheck.core.network import Affine, Layer, Network
from equivcheck.core.spec import Spec

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"  # the bundled example models
EXTERNAL = REPO.parent / "shared" / "models" / "external"  # third-party models, when present


def external_path(relative: str) -> Path:
    """Path of a third-party model under ../shared/models/external, or skip the test."""
    path = EXTERNAL / relative
    if not path.exists():
        pytest.skip(f"third-party model {relative} not found: ../shared/models/external is absent")
    return path


# ---- networks (equivcheck.core.network.Network) ---------------------------------------------------


def f32(values) -> np.ndarray:
    """``values`` rounded to float32, as a float64 array (every float32 is a float64 exactly)."""
    return np.asarray(values, dtype=np.float32).astype(np.float64)


def net(weights, biases, relu_last: bool = False, name: str = "net", snap: bool = True) -> Network:
    """A chain of affine layers (weights of shape (out, in)) with a ReLU after each but the last
    (and after the last too with ``relu_last``). With ``snap`` the weights are rounded to float32
    first, so the network is exactly what its float32 ONNX export stores. Input ``x`` of shape
    (1, n), output ``y``; layers are named ``l0``, ``l1``, ..."""
    cast = f32 if snap else (lambda v: np.asarray(v, dtype=np.float64))
    layers = []
    for k, (w, b) in enumerate(zip(weights, biases)):
        last = k == len(weights) - 1
        affine = Affine(cast(np.atleast_2d(w)), cast(np.atleast_1d(b)).ravel())
        layers.append(Layer(affine, relu=(not last) or relu_last, name=f"l{k}"))
    return Network(tuple(layers), input_name="x", input_shape=(1, layers[0].in_dim),
                   output_name="y", output_shape=(1, layers[-1].out_dim), source=name)


def random_weights(rng: np.random.Generator, widths: Sequence[int], scale: float = 1.0):
    """(weights, biases) for layer widths [n0, n1, ..., nL]: weights N(0, scale/sqrt(fan-in)),
    biases N(0, 0.3 scale)."""
    ws = [rng.normal(0, scale / np.sqrt(widths[i]), (widths[i + 1], widths[i]))
          for i in range(len(widths) - 1)]
    bs = [rng.normal(0, 0.3 * scale, widths[i + 1]) for i in range(len(widths) - 1)]
    return ws, bs


def random_net(rng: np.random.Generator, widths: Sequence[int]) -> Network:
    """A random float32 network with layer widths [n0, n1, ..., nL] (see :func:`random_weights`)."""
    return net(*random_weights(rng, widths))


def permute_hidden(n: Network, layer: int, perm) -> Network:
    """The same function with the units of hidden layer ``layer`` listed in the order ``perm``."""
    layers = list(n.layers)
    a, b = layers[layer], layers[layer + 1]
    layers[layer] = Layer(Affine(a.weight[perm], a.bias[perm]), a.relu, a.name)
    layers[layer + 1] = Layer(Affine(b.weight[:, perm], b.bias), b.relu, b.name)
    return n.with_layers(layers)


def with_extra_unit(n: Network, layer: int) -> Network:
    """The same function with one more hidden unit in ``layer`` whose outgoing weights are 0.

    Changes the shape, so unit-by-unit difference bounds do not apply.
    """
    layers = list(n.layers)
    cur, nxt = layers[layer], layers[layer + 1]
    w = np.vstack([cur.weight, np.full((1, cur.in_dim), 0.5)])
    layers[layer] = Layer(Affine(w, np.append(cur.bias, 0.25)), cur.relu, cur.name)
    extra = np.hstack([nxt.weight, np.zeros((nxt.out_dim, 1))])
    layers[layer + 1] = Layer(Affine(extra, nxt.bias), nxt.relu, nxt.name)
    return n.with_layers(layers)


def onnx_of(n: Network) -> onnx.ModelProto:
    """The ONNX model of ``n``; fails the test unless the export is exact."""
    from equivcheck.io.onnx_export import to_onnx

    model, exact = to_onnx(n)
    assert exact, f"{n.source} does not export exactly"
    return model


def save_onnx(n: Network, path: Path) -> Path:
    """Write ``n`` exactly as an ONNX file at ``path``; returns ``path``."""
    onnx.save(onnx_of(n), path)
    return path


# ---- hand-made ONNX graphs (onnx.ModelProto) ------------------------------------------------------

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
    """Gemm(transB=1)+Relu chain for weights of shape (out, in), as an ONNX model."""
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


def gemm_weights(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(W1, B1, W2, B2) of a random 3-4-2 network (weights N(0, 1/2), biases N(0, 0.3)), drawn
    from ``rng`` in that order, for graphs that end in :func:`relu_tail`."""
    return (rng.normal(0, 0.5, (4, 3)), rng.normal(0, 0.3, 4), rng.normal(0, 0.5, (2, 4)),
            rng.normal(0, 0.3, 2))


def relu_tail(cur: str) -> list:
    """ONNX nodes: Relu of tensor ``cur``, then a final Gemm with initializers W2, B2 giving y."""
    return [
        helper.make_node("Relu", [cur], ["r"]),
        helper.make_node("Gemm", ["r", "W2", "B2"], ["y"], transB=1),
    ]


# The 2-3-1 pair of the command-line tests: PAIR_A, the same function with its hidden units
# permuted, and one whose output weights are scaled by 1.5 (a different function).
PAIR_W1 = np.array([[1.0, -1.0], [0.5, 0.25], [-1.0, 2.0]])
PAIR_B1 = np.array([0.0, -0.5, 0.25])
PAIR_W2 = np.array([[1.0, 0.5, -0.25]])
PAIR_B2 = np.array([0.125])


def pair_model() -> onnx.ModelProto:
    """The first model of :func:`write_pair` (2 inputs, 3 hidden units, 1 output)."""
    return mlp([PAIR_W1, PAIR_W2], [PAIR_B1, PAIR_B2])


def write_pair(folder: Path) -> tuple[Path, Path, Path]:
    """(a, the same function, a different one) as ONNX files a.onnx, same.onnx, other.onnx."""
    a, same, other = folder / "a.onnx", folder / "same.onnx", folder / "other.onnx"
    onnx.save(pair_model(), a)
    perm = [2, 0, 1]
    onnx.save(mlp([PAIR_W1[perm], PAIR_W2[:, perm]], [PAIR_B1[perm], PAIR_B2]), same)
    onnx.save(mlp([PAIR_W1, PAIR_W2 * 1.5], [PAIR_B1, PAIR_B2]), other)
    return a, same, other


# ---- points and checks ---------------------------------------------------------------------------


def box_points(rng: np.random.Generator, lo, hi, n: int, snap: bool = True) -> np.ndarray:
    """``n`` uniform points of the box [lo, hi] and ``n`` random corners of it (rows); rounded
    to float32 (and clamped into the box) with ``snap``."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    pts = lo + rng.random((n, len(lo))) * (hi - lo)
    corners = np.where(rng.random((n, len(lo))) < 0.5, lo, hi)
    out = np.vstack([pts, corners])
    return np.clip(f32(out), lo, hi) if snap else out


def exact_sample_check(a: Network, b: Network, spec: Spec, lo, hi, n: int = 30, seed: int = 0) -> bool:
    """True when no float32 point sampled in [lo, hi] violates ``spec`` in exact arithmetic."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        x = [Fraction(float(v)) for v in rng.uniform(lo, hi, a.in_dim).astype(np.float32)]
        if not spec.holds(a.evaluate_exact(x), b.evaluate_exact(x)):
            return False
    return True


def assert_exact_agree(a: Network, b: Network, points, tol=Fraction(0)) -> None:
    """Fail unless the outputs of ``a`` and ``b`` differ by at most ``tol`` (L-inf) in exact
    arithmetic at every point (rows of floats)."""
    for x in points:
        ya = a.evaluate_exact([Fraction(float(v)) for v in x])
        yb = b.evaluate_exact([Fraction(float(v)) for v in x])
        gap = max(abs(p - q) for p, q in zip(ya, yb))
        assert gap <= tol, f"outputs differ by {gap} > {tol} at {list(x)}"


def ort_session(model: onnx.ModelProto):
    """An onnxruntime CPU session of ``model``, its warnings silenced."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def ort_outputs(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """onnxruntime's outputs (float64, flat) for one point (shape (n,)) or each row of a batch,
    the input cast to the model's input type (float32 or float64) and shape."""
    sess = ort_session(model)
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    dtype = np.float64 if "double" in inp.type else np.float32

    def one(row):
        return sess.run(None, {inp.name: np.asarray(row).astype(dtype).reshape(shape)})[0]

    x = np.asarray(x)
    if x.ndim == 1:
        return one(x).astype(np.float64).ravel()
    return np.array([one(row).astype(np.float64).ravel() for row in x])


# ---- the command line ----------------------------------------------------------------------------


def cli(*args):
    """Run ``equivcheck ARGS...`` in-process (typer's CliRunner); returns its Result."""
    from typer.testing import CliRunner

    from equivcheck.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(r, *needles) -> None:
    """The bad-input promise: exit 4, no stdout, one stderr line ``equivcheck: error: ...``
    holding every needle, no traceback."""
    assert r.exit_code == 4, (r.exit_code, r.output)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("equivcheck: error:"), lines[0]
    assert "Traceback" not in r.output
    assert r.stdout == ""
    for n in needles:
        assert n in lines[0], lines[0]


def strict_json(text: str, long_ints: bool = False):
    """``text`` parsed as strict JSON: ValueError for NaN / Infinity / -Infinity. An integer too
    long for Python's int-from-text limit raises ValueError too, unless ``long_ints`` (it is valid
    JSON all the same): then it is kept as its digit string."""

    def reject(name):
        raise ValueError(f"non-standard JSON constant {name}")

    def integer(digits: str):
        try:
            return int(digits)
        except ValueError:
            if long_ints:
                return digits
            raise

    return json.loads(text, parse_constant=reject, parse_int=integer)
