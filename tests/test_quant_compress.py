"""``equivcheck compress`` of statically quantized models (issue 12): dead units removed with a
structural proof, the result written as a QDQ model that onnxruntime runs and the importer
reads back exactly (:mod:`equivcheck.compress.quantized`, :mod:`equivcheck.io.onnx_qexport`)."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from equivcheck.compress.quantized import (
    compress_quantized,
    remove_dead,
    unit_value_range,
)
from equivcheck.core.network import Affine, Layer, Network
from equivcheck.core.quantized import QuantizedNetwork, Quantizer
from equivcheck.core.result import Verdict
from equivcheck.io.onnx_import import load_network
from equivcheck.io.onnx_qexport import same_quantized, to_qonnx

from .helpers import REPO, cli, external_path
from .quant_models import quantize, small_conv

MNIST = REPO / "models" / "mnist_2x25_l1.onnx"
BOX = "0.3:0.35"


@pytest.fixture(scope="module")
def int8_mlps(tmp_path_factory) -> dict[str, Path]:
    from onnxruntime.quantization import QuantType

    folder = tmp_path_factory.mktemp("qcompress")
    models = {fmt: quantize(MNIST, folder / f"mnist_{fmt}.onnx", (1, 784), fmt)
              for fmt in ("qdq", "qop", "dynamic")}
    models["qdq_per_channel_uint8"] = quantize(  # uint8 activations, per-channel weights
        MNIST, folder / "mnist_qdq_pc.onnx", (1, 784), "qdq", per_channel=True,
        activation_type=QuantType.QUInt8)
    return models


def ort_run(model, xs: np.ndarray, shape) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.stack([sess.run(None, {name: x.reshape(shape).astype(np.float32)})[0].ravel() for x in xs])


def check_compressed(path: Path, out: Path, domain: str, shape, lo: float, hi: float, points: int = 25):
    """Compress ``path`` on ``domain`` and check the result every way: the written file reads
    back exactly, removed units are 0 at random points, exact outputs are equal, onnxruntime
    agrees on both files. Returns the result."""
    net = load_network(path, quantized_ok=True)
    res = compress_quantized(net, domain, original=path, output=out)
    assert res.proof is not None and res.proof.verdict is Verdict.PROVED
    assert res.proof.spec.mode.value == "strict"
    written = load_network(out, quantized_ok=True)
    assert isinstance(written, QuantizedNetwork)
    assert same_quantized(written, res.compressed) is None
    dead = [np.isin(np.arange(layer.out_dim), r) for layer, r in zip(net.network.layers, res.removed)]
    assert same_quantized(written, remove_dead(net, dead)) is None
    assert [r.units_after for r in res.table] == [layer.out_dim for layer in written.network.layers]
    rng = np.random.default_rng(1)
    xs = rng.uniform(lo, hi, (points, net.in_dim)).astype(np.float32).astype(np.float64)
    # every removed unit is 0 at the points (float evaluation of the original, layer by layer)
    h = net.input_quant.apply_float(xs) if net.input_quant is not None else xs
    for layer, q, r in zip(net.network.layers, net.quant, res.removed):
        h = h @ np.asarray(layer.weight.todense() if layer.affine.is_sparse else layer.weight).T + layer.bias
        h = np.maximum(h, 0.0) if layer.relu else h
        h = q.apply_float(h) if q is not None else h
        assert np.all(h[:, list(r)] == 0.0)
    for x in xs:
        assert net.evaluate_exact(x) == written.evaluate_exact(x)
    ya, yb = ort_run(path, xs, shape), ort_run(out, xs, shape)
    # the two files round alike (QDQ of the same values); float32 summation order at most
    assert np.max(np.abs(ya - yb)) <= 1e-5 * (1.0 + np.max(np.abs(ya)))
    assert res.ort_max_difference is not None and res.ort_max_difference <= 1e-5 * (1.0 + np.max(np.abs(ya)))
    return res


@pytest.mark.parametrize("fmt", ["qdq", "qop", "qdq_per_channel_uint8"])
def test_int8_mlp_loses_its_dead_units(int8_mlps, tmp_path, fmt):
    res = check_compressed(int8_mlps[fmt], tmp_path / "small.onnx", BOX, (1, 784), 0.3, 0.35)
    removed = [len(r) for r in res.removed]
    assert removed[0] > 0 and removed[1] > 0 and removed[-1] == 0  # outputs are never removed
    assert res.hidden_after < res.hidden_before and res.params_after < res.params_before
    assert sum(res.active) > 0 and any("stably active" in n for n in res.notes)


def hand_network(relu: bool) -> QuantizedNetwork:
    """One input in [0, 1]; hidden units quantized with scale 1/4 (s/2 = 1/8); the output sums
    them. Unit values: 0: x/8 (reaches s/2 exactly: the tie rounds to 0), 1: (1/8 + 2^-30) x
    (just over: Q = 1/4), 2: (1/8 - 2^-30) x (just under), 3: x/8 - 7/8 (negative; zero point
    qmin, so QDQ's clip is its ReLU), 4: -x (zero point 0: Q(-x) < 0 without a ReLU), 5: x
    (zero point qmax: every v >= 0 gives 0)."""
    eps = 2.0 ** -30
    w = np.array([[0.125], [0.125 + eps], [0.125 - eps], [0.125], [-1.0], [1.0]])
    b = np.array([0.0, 0.0, 0.0, -0.875, 0.0, 0.0])
    zp = [0, 0, 0, -128, 0, 127] if not relu else [0, 0, 0, 0, 0, 127]
    q = Quantizer(np.full(6, Fraction(1, 4), dtype=object), np.array(zp), -128, 127, "q")
    layers = (Layer(Affine(w, b), relu, "hidden"), Layer(Affine(np.ones((1, 6)), np.zeros(1)), False, "out"))
    return QuantizedNetwork(Network(layers, input_shape=(1, 1), output_shape=(1, 1)), (q, None))


@pytest.mark.parametrize("relu", [False, True])
def test_threshold_half_a_step_exactly(relu):
    net = hand_network(relu)
    res = compress_quantized(net, "0:1")
    dead_expected = [0, 2, 3, 5] if not relu else [0, 2, 3, 4, 5]
    assert list(res.removed[0]) == dead_expected
    # the kept unit 1 matters: at x = 1 it is 1/4, so removing it changes the output
    mask = np.isin(np.arange(6), [*dead_expected, 1])
    assert net.evaluate_exact([1])[0] - remove_dead(net, [mask, np.zeros(1, bool)]).evaluate_exact([1])[0] == Fraction(1, 4)
    assert net.evaluate_exact([1]) == res.compressed.evaluate_exact([1])
    # and the exact rule: f(s/2) = 0, f(s/2 + 2^-60) = s for zero point 0
    one = Quantizer.uniform(1, Fraction(1, 4), 0, -128, 127)
    layer = net.network.layers[0]
    assert unit_value_range(layer, one, Fraction(0), Fraction(1, 8))[1] == 0
    assert unit_value_range(layer, one, Fraction(0), Fraction(1, 8) + Fraction(1, 2**60))[1] == Fraction(1, 4)


def test_cli_compress_int8_model(int8_mlps, tmp_path):
    out = tmp_path / "small.onnx"
    r = cli("compress", int8_mlps["qdq"], "--domain", BOX, "-o", out, "-q")
    assert r.exit_code == 0, r.output
    assert "dead removed" in r.stdout and "active (kept)" in r.stdout
    assert "only loses dead units" in r.stdout
    assert "PROVED" in r.stdout and f"wrote {out}" in r.stdout
    assert isinstance(load_network(out, quantized_ok=True), QuantizedNetwork)
    r = cli("compress", int8_mlps["qdq"], "--domain", BOX, "-o", tmp_path / "again.onnx", "--json", "-q")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["quantized"] is True and data["proof"]["verdict"] == "proved"
    assert data["hidden_units_after"] < data["hidden_units_before"]


def test_dynamic_model_refused_in_one_line(int8_mlps, tmp_path):
    r = cli("compress", int8_mlps["dynamic"], "--domain", BOX, "-o", tmp_path / "d.onnx", "-q")
    assert r.exit_code == 4, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "dynamically quantized" in lines[0], r.stderr
    assert "DynamicQuantizeLinear" in lines[0] and "only `prove`, `audit` and the pytest plugin" in lines[0]
    assert "Traceback" not in r.output and not (tmp_path / "d.onnx").exists()


def test_float_models_still_take_the_float_pipeline():
    from equivcheck.compress import compress
    from equivcheck.compress.result import CompressionResult

    res = compress(MNIST, BOX, verify=False)
    assert isinstance(res, CompressionResult)


def test_small_int8_cnn(tmp_path):
    src = small_conv(tmp_path / "conv.onnx", seed=3)
    path = quantize(src, tmp_path / "conv_qdq.onnx", (1, 1, 6, 6), "qdq")
    res = check_compressed(path, tmp_path / "conv_small.onnx", "0:0.3", (1, 1, 6, 6), 0.0, 0.3)
    assert len(res.removed[0]) > 0


def test_sparse_layer_written_sparse_and_exact():
    from equivcheck.core import matrix

    rng = np.random.default_rng(5)
    dense = rng.integers(-127, 128, (40, 30)) * (rng.uniform(0, 1, (40, 30)) < 0.1)
    w = matrix.csr(dense * 2.0 ** -9)  # dyadic weights, one scale per row found by the gcd
    b = rng.integers(-1000, 1000, 40) * 2.0 ** -12
    layers = (Layer(Affine(w, b), True, "conv"), Layer(Affine(rng.normal(0, 1, (3, 40)).astype(np.float32).astype(np.float64), np.zeros(3)),
                                    False, "out"))  # float32 weights: written as they are
    q = Quantizer.uniform(40, Fraction(1, 64), -128, -128, 127, "q")
    net = QuantizedNetwork(Network(layers, input_shape=(1, 30), output_shape=(1, 3)), (q, None))
    model = to_qonnx(net)
    ops = {n.op_type for n in model.graph.node}
    assert {"Gather", "ReduceSum"} <= ops and "Gemm" in ops  # the sparse layer, then a dense one
    back = load_network(model, quantized_ok=True)
    assert same_quantized(net, back) is None
    xs = rng.uniform(-1, 1, (20, 30)).astype(np.float32).astype(np.float64)
    exact = np.array([[float(v) for v in net.evaluate_exact(x)] for x in xs])
    assert np.max(np.abs(ort_run(model, xs, (1, 30)) - exact)) <= 1e-5 * (1.0 + np.max(np.abs(exact)))


def test_exported_model_round_trips_before_compression(int8_mlps):
    for fmt in ("qdq", "qop"):
        net = load_network(int8_mlps[fmt], quantized_ok=True)
        assert same_quantized(net, load_network(to_qonnx(net), quantized_ok=True)) is None


def test_external_int8_convnet(tmp_path):
    src = external_path("cnn/Convnet_maxpool.onnx")
    box = external_path("cnn/maxpool_prop_0_0.004.vnnlib")
    path = quantize(src, tmp_path / "convnet_qdq.onnx", (1, 1, 28, 28), "qdq")
    net = load_network(path, quantized_ok=True)
    res = compress_quantized(net, str(box), original=path, output=tmp_path / "convnet_small.onnx")
    assert res.proof is not None and res.proof.verdict is Verdict.PROVED and res.exact_points >= 2
    assert sum(len(r) for r in res.removed) > 0
    # onnxruntime sums the Gather/Mul/ReduceSum rows in another order than the Conv: at most a
    # flipped rounding of the output quantizer (0 in practice)
    step = float(net.quant[-1].scale_float.max()) if net.quant[-1] is not None else 1e-4
    assert res.ort_max_difference is not None and res.ort_max_difference <= step * 1.0001
    written = load_network(tmp_path / "convnet_small.onnx", quantized_ok=True)
    assert same_quantized(written, res.compressed) is None
    assert any(layer.affine.is_sparse for layer in written.network.layers)  # written sparse


def test_a_layer_with_every_unit_dead_keeps_one():
    net = hand_network(relu=True)
    w = np.array([[-1.0], [-0.5], [0.125], [0.0], [-2.0], [1.0]])  # all dead on [0, 1]
    layers = (Layer(Affine(w, np.zeros(6)), True, "hidden"), net.network.layers[1])
    net = QuantizedNetwork(net.network.with_layers(layers), net.quant)
    res = compress_quantized(net, "0:1")
    assert res.compressed.network.layers[0].out_dim == 1 and len(res.removed[0]) == 5
    for x in (0, Fraction(1, 3), 1):
        assert res.compressed.evaluate_exact([x]) == net.evaluate_exact([x]) == [0]


def test_export_refuses_integer_ranges_it_cannot_write():
    from equivcheck.errors import UnsupportedModelError

    net = hand_network(relu=True)
    q16 = Quantizer(np.full(6, Fraction(1, 4), dtype=object), np.zeros(6, dtype=int), -32768, 32767, "q16")
    with pytest.raises(UnsupportedModelError, match="only int8 and uint8"):
        to_qonnx(QuantizedNetwork(net.network, (q16, None)))
