"""Dynamically quantized models (``quantize_dynamic``: DynamicQuantizeLinear -> MatMulInteger /
ConvInteger -> Cast -> Mul): the exact semantics against onnxruntime, the bounds' soundness,
hand-checkable verdicts, the SMT encoding declining them, and the CLI."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from equivcheck.bounds.enclosure import enclose_pair
from equivcheck.bounds.quant_interval import quantized_interval_bounds
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Box, box_domain
from equivcheck.core.exact import affine_exact, relu_exact
from equivcheck.core.network import Affine, Layer, Network
from equivcheck.core.options import ProverOptions, SearchOutcome
from equivcheck.core.quantized import DynamicQuantizer, QuantizedNetwork, Quantizer, is_dynamic
from equivcheck.core.result import Verdict
from equivcheck.core.spec import Spec
from equivcheck.errors import UnsupportedModelError
from equivcheck.io.onnx_import import load_network
from equivcheck.solve.prover import prove_networks
from equivcheck.solve.quant_encode import DYNAMIC_DECLINED, decide_quantized, encode_quantized
from equivcheck.testing import assert_equivalent

from .helpers import MODELS, assert_one_line_error, cli, net, random_net, random_weights, save_onnx
from .quant_models import dynamic_matmul, float_matmul, quantize, small_conv

F = Fraction
U = 2.0**-24  # float32's unit roundoff
MNIST = MODELS / "mnist_2x25_l1.onnx"


# ---- the quantizer ------------------------------------------------------------------------------
def _dql_session(n: int):
    import onnxruntime as ort
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
                          [helper.make_tensor_value_info("y", TensorProto.UINT8, [n]),
                           helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
                           helper.make_tensor_value_info("z", TensorProto.UINT8, [])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])


def _near_tie(t: Fraction, rel: float) -> bool:
    """True when ``t`` lies within ``rel * |t|`` (plus a little) of a half-integer."""
    frac = t - (t.numerator // t.denominator)
    return abs(float(frac) - 0.5) <= rel * abs(float(t)) + 1e-12


def test_levels_and_zero_point_are_onnxruntimes():
    """On 400 random float32 vectors (all signs, all magnitudes), the exact levels and zero
    point are onnxruntime's, except where ``x / s`` lies within float32 rounding of a tie."""
    n = 9
    sess, dq = _dql_session(n), DynamicQuantizer(n)
    rng = np.random.default_rng(0)
    checked = 0
    for t in range(400):
        x = (rng.normal(size=n) * [0.01, 1.0, 300.0][t % 3]).astype(np.float32)
        x = np.abs(x) if t % 4 == 1 else (-np.abs(x) if t % 4 == 2 else x)
        y, s32, z = sess.run(None, {"x": x})
        xs = [F(float(v)) for v in x]
        s = dq.scale_exact(xs)
        assert abs(float(s32) - float(s)) <= 2 * U * float(s)  # two float32 roundings
        zp = dq.zero_point_exact(xs)
        lo = min(F(0), *xs)
        if _near_tie(-lo / s, 8 * U) or any(_near_tie(v / s, 8 * U) for v in xs):
            continue
        checked += 1
        assert int(z) == zp and list(map(int, y)) == dq.levels_exact(xs)
    assert checked >= 380
    y, _, z = sess.run(None, {"x": np.zeros(n, np.float32)})  # all zeros: onnxruntime gives 0
    assert not y.any() and int(z) == 0
    assert list(dq.apply_exact([0] * n)) == [0] * n


@settings(max_examples=60, deadline=None)
@given(st.lists(st.fractions(F(-50), F(50), max_denominator=1000), min_size=1, max_size=8))
def test_rounding_error_is_at_most_half_a_step_and_keeps_the_sign(v):
    dq = DynamicQuantizer(len(v))
    s = dq.scale_exact(v)
    out = dq.apply_exact(v)
    for x, d in zip(v, out):
        assert abs(d - x) <= s / 2
        assert (d >= 0) if x >= 0 else (d <= 0)
        if x == 0:
            assert d == 0
    f = dq.apply_float(np.array([float(x) for x in v]))
    assert np.all(np.abs(f - np.array([float(d) for d in out])) <= 1e-9 + 2 * float(s))
    lo = np.array([float(x) for x in v]) - 0.25
    hi = lo + 0.5
    assert F(dq.scale_bound(lo, hi)) >= s  # v lies in [lo, hi]


def test_dynamic_quantizer_is_not_a_static_one():
    dq = DynamicQuantizer(3)
    static = Quantizer.uniform(3, F(1, 4), 0, 0, 255)
    assert is_dynamic(dq) and not is_dynamic(static)
    assert not static.same_as(dq) and not dq.same_as(static)
    assert dq.same_as(DynamicQuantizer(3, name="other")) and not dq.same_as(DynamicQuantizer(4))
    for attr in ("scale", "zero_point", "lowest", "highest"):
        assert not hasattr(dq, attr)


# ---- import: the differential test against onnxruntime -----------------------------------------
def _trace_tolerance(qnet: QuantizedNetwork, x: np.ndarray) -> tuple[np.ndarray, list[Fraction], bool]:
    """Exact outputs of ``qnet`` at ``x``, and per output a bound of onnxruntime's deviation from
    them, derived by forward error analysis of what it computes in float32 (levels equal):
    ``s`` (a subtraction and a division: relative ``2u`` plus the relative error of the extreme
    values it is computed from), ``y_scale * C``, the Cast, the Mul and the Add (``u`` each), so
    a layer's error is at most ``(rho + 6u) (|W| |D(h)| + |b|)`` with ``rho`` the relative error
    of its ``D(h)``. Also whether some level of the run is within rounding of a tie (then
    onnxruntime may round it the other way: such points are left out, and counted)."""
    h = [F(float(v)) for v in x]
    rho, err_prev, near = 2 * U, np.zeros(len(h)), False

    def quantize(q, h, err):
        nonlocal rho, near
        if q is None:
            return h, err
        lo, hi = min(F(0), *h), max(F(0), *h)
        s = q.scale_exact(h)
        if s > 0:
            ilo, ihi = int(np.argmin([float(v) for v in h])), int(np.argmax([float(v) for v in h]))
            extreme = (err[ihi] if hi > 0 else 0.0) + (err[ilo] if lo < 0 else 0.0)
            rho = 2 * U + extreme / float(hi - lo)
            window = 4 * (rho + 4 * U)
            near = near or _near_tie(-lo / s, window) or any(_near_tie(v / s, window) for v in h)
        return list(q.apply_exact(h)), np.abs(np.array([float(v) for v in h])) * rho

    h, err = quantize(qnet.input_quant, h, err_prev)
    for layer, q in zip(qnet.network.layers, qnet.quant):
        hv = np.array([float(v) for v in h])
        w = layer.weight.toarray() if sp.issparse(layer.weight) else layer.weight
        mag = np.abs(w) @ np.abs(hv) + np.abs(layer.bias)
        err = mag * (rho + 6 * U) * (1 + 1e-9) + np.abs(w) @ err
        arr = np.empty(len(h), dtype=object)
        arr[:] = h
        h = list(affine_exact(layer.affine, arr))
        if layer.relu:
            h = list(relu_exact(np.array(h, dtype=object)))
        h, err = quantize(q, h, err) if q is not None else (h, err)
    return np.array([float(v) for v in h]), err, near


@pytest.fixture(scope="module")
def dynamic_models(tmp_path_factory) -> dict[str, tuple[Path, Path, tuple]]:
    from onnxruntime.quantization import QuantType

    d = tmp_path_factory.mktemp("dyn")
    conv = small_conv(d / "conv.onnx")
    small = save_onnx(random_net(np.random.default_rng(7), [20, 16, 16, 5]), d / "mlp.onnx")
    return {
        "mnist": (MNIST, quantize(MNIST, d / "mnist.onnx", (1, 784), "dynamic"), (1, 784)),
        "mlp": (small, quantize(small, d / "mlp_dyn.onnx", (1, 20), "dynamic"), (1, 20)),
        "mlp_per_channel_uint8": (small, quantize(small, d / "mlp_pc.onnx", (1, 20), "dynamic",
                                                  per_channel=True, weight_type=QuantType.QUInt8), (1, 20)),
        "conv_per_channel": (conv, quantize(conv, d / "conv_dyn.onnx", (1, 1, 6, 6), "dynamic",
                                            per_channel=True), (1, 1, 6, 6)),
    }


@pytest.mark.parametrize("name", ["mlp", "mlp_per_channel_uint8", "conv_per_channel"])
def test_exact_evaluation_agrees_with_onnxruntime(dynamic_models, name):
    import onnxruntime as ort

    _, path, shape = dynamic_models[name]
    qnet = load_network(path, quantized_ok=True)
    assert isinstance(qnet, QuantizedNetwork) and qnet.dynamic
    assert any("dynamic quantization" in n for n in qnet.notes)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(300):
        if checked == 200:
            break
        x = rng.random(shape).astype(np.float32) * (1.0 if name != "conv_per_channel" else 2.0)
        y_ort = sess.run(None, {sess.get_inputs()[0].name: x})[0].ravel().astype(np.float64)
        exact, tol, near = _trace_tolerance(qnet, x.ravel())
        if near:
            continue
        checked += 1
        assert np.all(np.abs(y_ort - exact) <= tol), (np.abs(y_ort - exact) / tol).max()
        assert np.allclose(qnet.evaluate(x.ravel().astype(np.float64)), exact, rtol=0, atol=1e-9)
    assert checked >= 200


# ---- import: what is refused ------------------------------------------------------------------
@pytest.mark.parametrize("extra, needle", [
    ("scale_out", "node 'again' (Mul): multiplies the dynamic scale by a non-constant"),
    ("zero_point", "node 'mmi' (MatMulInteger): the quantized values must be input 0 and their zero point input 2"),
])
def test_graphs_off_the_pattern_are_refused_in_one_line(tmp_path, extra, needle):
    path = dynamic_matmul(tmp_path / "m.onnx", np.array([[64], [0]]), 1 / 64, extra=extra)
    with pytest.raises(UnsupportedModelError) as exc:
        load_network(path, quantized_ok=True)
    msg = str(exc.value)
    assert "\n" not in msg and needle in msg and str(path) in msg


def test_fused_operators_of_the_optimizer_are_refused(dynamic_models, tmp_path):
    import onnxruntime as ort

    _, path, _ = dynamic_models["mnist"]
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(tmp_path / "fused.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    import onnx

    ops = {n.op_type for n in onnx.load(tmp_path / "fused.onnx").graph.node}
    fused = ops & {"MatMulIntegerToFloat", "DynamicQuantizeMatMul"}
    assert fused, ops
    with pytest.raises(UnsupportedModelError) as exc:
        load_network(tmp_path / "fused.onnx", quantized_ok=True)
    assert "a fused dynamic quantization operator" in str(exc.value)


def test_without_quantized_ok_a_dynamic_model_is_refused_as_quantized(dynamic_models):
    _, path, _ = dynamic_models["mnist"]
    with pytest.raises(UnsupportedModelError, match=r"a quantized model \(DynamicQuantizeLinear\)"):
        load_network(path)


# ---- hand-checkable verdicts -------------------------------------------------------------------
@pytest.fixture(scope="module")
def rounding_pair(tmp_path_factory):
    """f(x) = x1 and its dynamic copy g(x) = D(x)_1 on x1 in [0, 1], x2 = 1: the scale is
    1/255 and the zero point 0 everywhere, so g rounds x1 to the nearest multiple of 1/255 and
    |f - g| <= 1/510, reached at the ties (x1 = (k + 1/2) / 255)."""
    d = tmp_path_factory.mktemp("hand")
    f = float_matmul(d / "f.onnx", np.array([[1.0], [0.0]]))
    g = dynamic_matmul(d / "g.onnx", np.array([[64], [0]]), 1 / 64)
    dom = d / "box.json"
    json.dump({"lower": [0.0, 1.0], "upper": [1.0, 1.0]}, open(dom, "w"))
    return f, g, dom


def test_rounding_to_1_255_is_proved_above_its_half_step(rounding_pair):
    f, g, dom = rounding_pair
    qnet = load_network(g, quantized_ok=True)
    half = F(1, 510)
    assert qnet.evaluate_exact([F(1, 2) / 255, F(1)]) == [0]  # a tie rounds to the even level 0
    assert qnet.evaluate_exact([F(3, 2) / 255, F(1)]) == [F(2, 255)]
    assert abs(qnet.evaluate_exact([F(3, 2) / 255, F(1)])[0] - F(3, 2) / 255) == half
    r = cli("prove", str(f), str(g), "--domain", str(dom), "--mode", "epsilon", "--tolerance", "0.00197",
            "--timeout", "60", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["verdict"] == "proved"


def test_rounding_to_1_255_is_refuted_below_and_reproduces_in_onnxruntime(rounding_pair):
    f, g, dom = rounding_pair
    r = cli("prove", str(f), str(g), "--domain", str(dom), "--mode", "epsilon", "--tolerance", "0.0015",
            "--timeout", "60", "--json")
    assert r.exit_code == 1, r.output
    cex = json.loads(r.stdout)["counterexample"]
    assert cex["reproduces"] and cex["onnxruntime"]["margin"] > 0
    x1 = cex["input"][0]
    assert 0.0015 < abs(x1 - round(x1 * 255) / 255) <= 1 / 510 + 1e-12


# ---- soundness of the bounds -------------------------------------------------------------------
def _dynamic_copy(f: Network, on_input: bool, last: bool = False) -> QuantizedNetwork:
    """``f`` with every hidden layer's output (and the input, the output) quantized dynamically."""
    quants = tuple(DynamicQuantizer(la.out_dim, name=f"q{k}") if k < len(f.layers) - 1 or last else None
                   for k, la in enumerate(f.layers))
    return QuantizedNetwork(f, quants, DynamicQuantizer(f.in_dim, name="qi") if on_input else None)


def _errors(g: QuantizedNetwork, xs) -> tuple[list[Fraction], list[list[Fraction]]]:
    """The rounding errors D(v) - v of every quantizer along g's exact run (input first), and
    each layer's pre-activations."""
    errs, pre = [], []
    h = np.array(xs, dtype=object)

    def step(q, h):
        out = q.apply_exact(h)
        errs.extend(o - v for o, v in zip(out, h))
        return out

    if g.input_quant is not None:
        h = step(g.input_quant, h)
    for layer, q in zip(g.network.layers, g.quant):
        h = affine_exact(layer.affine, h)
        pre.append(list(h))
        if layer.relu:
            h = relu_exact(h)
        if q is not None:
            h = step(q, h)
    return errs, pre


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.booleans(), st.booleans(), st.sampled_from([1e-4, 0.05, 1.0]),
       st.booleans())
def test_all_bounds_hold_the_exact_outputs(seed, on_input, last, radius, sparse):
    """The engine's interval-bias bounds (per node), the noise-input enclosure and the interval
    bounds through the quantizers all hold the dynamic network's exact values at random points
    of random boxes, small ones too."""
    from equivcheck.bounds.bias_enclosure import bias_enclosure
    from equivcheck.engine import Boxes, PairModel, pair_bounds

    rng = np.random.default_rng(seed)
    w, b = random_weights(rng, [3, 5, 4, 2])
    f = net(w, b)
    if sparse:
        f = Network(tuple(Layer(Affine(sp.csr_array(la.weight), la.bias), la.relu, la.name)
                          for la in f.layers), source="sparse")
    g = _dynamic_copy(f, on_input, last)
    c = rng.uniform(-1, 1, 3)
    lo, hi = c - radius, c + radius
    box = Box(tuple(F(v) for v in lo), tuple(F(v) for v in hi))
    enc = bias_enclosure(f, g, box)
    model = PairModel.build(enc.f, enc.g, enc.radius, enc.rounding)
    pb = pair_bounds(model, Boxes(lo[None], hi[None], model.width), "all", None, True, True)
    pair = enclose_pair(f, g, lo, hi)
    ib = quantized_interval_bounds(g, lo, hi, symbolic=True)
    for x in np.vstack([rng.uniform(lo, hi, (60, 3)), lo[None], hi[None]]):
        xs = [F(v) for v in x]
        yg, yf = g.evaluate_exact(xs), f.evaluate_exact(xs)
        yg_f = np.array([float(v) for v in yg])
        assert np.all(pb.hist.g_lo[-1][:, 0] <= yg_f) and np.all(yg_f <= pb.hist.g_hi[-1][:, 0])
        d = np.array([float(u - v) for u, v in zip(yf, yg)])
        assert np.all(pb.hist.dz_lo[-1][:, 0] <= d) and np.all(d <= pb.hist.dz_hi[-1][:, 0])
        e, pre = _errors(g, xs)
        assert all(abs(err) <= h for err, h in zip(e, pair.noise_half))
        assert pair.b.evaluate_exact(xs + e) == yg
        for bounds, z in zip(ib, pre):
            zf = np.array([float(v) for v in z])
            assert np.all(bounds.lower <= zf) and np.all(zf <= bounds.upper)


# ---- the exact encoding declines; the prover still decides -------------------------------------
def test_exact_encoding_declines_dynamic_networks():
    rng = np.random.default_rng(1)
    w, b = random_weights(rng, [2, 3, 2])
    f = net(w, b)
    g = _dynamic_copy(f, True)
    box = Box((F(0), F(0)), (F(1), F(1)))
    dec = decide_quantized(f, g, Spec.make("epsilon", F(1, 100)), box, Deadline.start(10))
    assert dec.status is SearchOutcome.UNKNOWN and dec.reason == DYNAMIC_DECLINED
    enc = encode_quantized(f, g, box, [], [], Spec.make("epsilon", F(1, 100)))
    assert enc.too_large == DYNAMIC_DECLINED and enc.text == ""
    # the prover: a dynamic network against itself is proved at once; against f it decides
    assert prove_networks(g, g, Spec.make("strict"), box_domain(box.lower, box.upper), ProverOptions(timeout=10)).verdict \
        is Verdict.PROVED
    res = prove_networks(f, g, Spec.make("epsilon", F(10)), box_domain(box.lower, box.upper), ProverOptions(timeout=20))
    assert res.verdict is Verdict.PROVED


# ---- the CLI and the plugin on a quantize_dynamic copy ------------------------------------------
def test_cli_prove_gives_a_verdict_and_compress_refuses(dynamic_models, tmp_path):
    _, path, _ = dynamic_models["mnist"]
    x = np.random.default_rng(3).random(784)
    ball = tmp_path / "ball.json"
    json.dump({"lower": np.clip(x - 0.01, 0, 1).tolist(), "upper": np.clip(x + 0.01, 0, 1).tolist()},
              open(ball, "w"))
    r = cli("prove", str(MNIST), str(path), "--domain", str(ball), "--mode", "epsilon",
            "--tolerance", "0.01", "--timeout", "60", "--json")
    assert r.exit_code == 1, r.output
    cex = json.loads(r.stdout)["counterexample"]
    assert cex["reproduces"] and cex["onnxruntime"]["margin"] > 0
    res = assert_equivalent(str(MNIST), str(path), domain=str(ball), mode="argmax", timeout=60)
    assert res.verdict is Verdict.PROVED
    r = cli("compress", str(path), "--domain", str(ball), "-o", str(tmp_path / "x.onnx"))
    assert_one_line_error(r, "DynamicQuantizeLinear", "only `prove`, `audit` and the pytest plugin")


def test_audit_of_the_rounding_pair_brackets_its_half_step(rounding_pair):
    """The audit's certified upper bound and exact witness bracket the true maximum 1/510."""
    from equivcheck.audit.auditor import audit

    f, g, dom = rounding_pair
    r = audit(str(f), str(g), str(dom), epsilons=("0.0015", "0.002"), timeout=60, samples=200)
    dev = r.deviation
    assert F(15, 10_000) < dev.lower <= F(1, 510) <= dev.upper < F(2, 1000)
    x = dev.witness_exact or tuple(F(v) for v in dev.witness)
    fa, ga = load_network(f), load_network(g, quantized_ok=True)
    assert abs(fa.evaluate_exact(x)[0] - ga.evaluate_exact(x)[0]) == dev.lower
    verdicts = {c.name: c.verdict for c in r.checks}
    assert verdicts["epsilon 0.0015"] is Verdict.REFUTED and verdicts["epsilon 0.002"] is Verdict.PROVED


def test_node_error_interval_narrows_where_the_level_is_fixed():
    """On a node where v_1 / s stays inside one rounding cell for every admissible scale, the
    error of unit 0 is pinned to s k - v (width about that of the box); where a tie is in reach
    it stays +-S/2; a unit at 0 has error 0."""
    from equivcheck.engine.rounding_noise import error_interval, make_rounding

    r = make_rounding(DynamicQuantizer(3), False, np.eye(3))
    lo = np.array([[0.31], [1.0], [0.0]])
    hi = np.array([[0.31 + 1e-9], [1.0], [0.0]])
    e_lo, e_hi = error_interval(r, lo, hi)
    exact = F(79, 255) - F(0.31)  # 0.31 * 255 = 79.05: level 79, scale 1/255
    assert e_lo[0, 0] <= float(exact) <= e_hi[0, 0] and e_hi[0, 0] - e_lo[0, 0] < 1e-8
    assert e_lo[2, 0] == 0 and e_hi[2, 0] == 0
    tie = np.array([[0.3 - 1e-6], [1.0], [0.0]]), np.array([[0.3 + 1e-6], [1.0], [0.0]])  # 76.5: a tie
    t_lo, t_hi = error_interval(r, *tie)
    assert t_hi[0, 0] - t_lo[0, 0] >= 1 / 255 - 1e-12
