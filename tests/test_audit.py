"""equivcheck audit: certified / witnessed deviation bounds, unit classification, data, CLI."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from equivcheck.audit import audit
from equivcheck.audit.changes import unit_changes
from equivcheck.audit.deviation import (
    DIFFERENCE_STREAM,
    EACH_NETWORK,
    engine_model,
    engine_pair,
    exact_deviation,
    whole_box_bounds,
)
from equivcheck.audit.report import (
    summary_lines,
    terminal_lines,
    to_html,
    to_markdown,
    write_report,
)
from equivcheck.cli import app
from equivcheck.core.domain import Box, Domain
from equivcheck.core.network import Affine, Layer, Network
from equivcheck.core.result import Verdict
from equivcheck.errors import InputError
from equivcheck.io.domains import parse_domain
from equivcheck.io.onnx_export import export_network

from .helpers import external_path
from .helpers import net as mlp  # float32 weights: every network here is exactly representable

runner = CliRunner()


def random_net(seed: int, dims=(3, 8, 8, 2)) -> Network:
    rng = np.random.default_rng(seed)
    ws = [rng.normal(size=(dims[k + 1], dims[k])).astype(np.float32).astype(float)
          for k in range(len(dims) - 1)]
    bs = [rng.normal(size=dims[k + 1]).astype(np.float32).astype(float) * 0.5
          for k in range(len(dims) - 1)]
    return mlp(ws, bs)


def magnitude_prune(network: Network, fraction: float) -> Network:
    """Zero the smallest-magnitude ``fraction`` of each layer's weights."""
    layers = []
    for layer in network.layers:
        w = layer.weight.copy()
        k = int(round(fraction * w.size))
        w.ravel()[np.argsort(np.abs(w), axis=None)[:k]] = 0.0
        layers.append(Layer(Affine(w, layer.bias.copy()), layer.relu, layer.name))
    return network.with_layers(layers)


# --------------------------------------------------------------------------------------------
# hand-made: unit 1 is stably inactive on [0, 1]^2 (weights <= 0, bias -1), unit 0 is live

W1 = np.array([[1.0, 1.0], [-1.0, -0.5], [0.5, -1.0]])
B1 = np.array([0.25, -1.0, 0.25])
W2 = np.array([[1.0, 2.0, -1.0], [0.5, -1.0, 1.0]])
B2 = np.array([0.0, 0.5])


def hand_pair(remove: list[int], change: list[int] = ()) -> tuple[Network, Network]:
    w1 = W1.copy()
    w1[remove] = 0.0
    for i in change:
        w1[i, 0] += 0.25
    return mlp([W1, W2], [B1, B2]), mlp([w1, W2], [B1, B2])


def test_removed_units_are_classified_harmless_or_live():
    f, g = hand_pair(remove=[1])
    layers, units, note = unit_changes(f, g, parse_domain("0:1", 2))
    assert note is None
    assert [(u.layer, u.unit, u.kind, u.original, u.harmless) for u in units] == [
        (0, 1, "removed", "inactive", True)
    ]
    assert layers[0].weights_zeroed == 2 and layers[0].units_removed_harmless == 1
    f, g = hand_pair(remove=[0, 1], change=[2])
    _, units, _ = unit_changes(f, g, parse_domain("0:1", 2))
    got = {(u.unit, u.kind): (u.original, u.harmless) for u in units}
    assert got == {(0, "removed"): ("active", False), (1, "removed"): ("inactive", True),
                   (2, "changed"): ("unstable", False)}


def test_a_removed_unit_whose_bias_fires_is_not_harmless():
    # incoming weights of the inactive unit gone, but its bias made positive: it now outputs 1
    f = mlp([W1, W2], [B1, B2])
    w1, b1 = W1.copy(), B1.copy()
    w1[1] = 0.0
    b1[1] = 1.0
    _, units, _ = unit_changes(f, mlp([w1, W2], [b1, B2]), parse_domain("0:1", 2))
    assert [(u.unit, u.original, u.harmless) for u in units] == [(1, "inactive", False)]


def test_removing_only_inactive_units_is_proved_lossless():
    f, g = hand_pair(remove=[1])
    r = audit(f, g, "0:1", timeout=30, samples=200)
    assert r.check("strict").verdict is Verdict.PROVED
    assert r.check("argmax").verdict is Verdict.PROVED
    assert all(c.verdict is Verdict.PROVED for c in r.checks)
    assert r.deviation.upper == 0 and r.deviation.lower == 0 and r.converged
    assert r.samples.deviation_max == 0.0 and r.samples.top1_agreement == 100.0


def test_removing_a_live_unit_is_refuted_with_exact_witness():
    f, g = hand_pair(remove=[0])
    r = audit(f, g, "0:1", timeout=30, samples=500)
    strict = r.check("strict")
    assert strict.verdict is Verdict.REFUTED and strict.counterexample is not None
    assert strict.counterexample.exact.violated
    d = r.deviation
    # unit 0 is relu(x0 + x1 + 1/4), pruned to the constant 1/4; with outgoing weights 1 and
    # 0.5 the worst deviation is 2 (output 0) at (1, 1)
    assert d.lower == 2 and d.witness == (1.0, 1.0)
    assert d.upper - 2 < Fraction(1, 10**9)  # the certified bound is tight here
    assert max(exact_deviation(f, g, d.witness)) == d.lower
    assert d.lower <= d.upper
    assert r.check("epsilon 10").verdict is Verdict.PROVED
    assert r.check("epsilon 1").verdict is Verdict.REFUTED
    assert [u.harmless for u in r.units] == [False]


@pytest.mark.parametrize("seed", range(4))
def test_certified_upper_bound_is_never_below_a_seen_deviation(seed):
    f = random_net(seed)
    g = magnitude_prune(f, 0.3)
    r = audit(f, g, "-1:1", timeout=5, samples=3000, seed=seed)
    d = r.deviation
    assert d.lower <= d.upper
    # in 3 dimensions, the engine's input splitting brings the bounds within the 5% target
    assert r.converged and "branch and bound" in d.upper_method
    # the witness attains the lower bound exactly
    if d.witness is not None:
        assert max(exact_deviation(f, g, d.witness)) == d.lower
    # no random point deviates more than the certified bound (the largest checked exactly)
    x = np.random.default_rng(100 + seed).uniform(-1, 1, (20000, 3))
    dev = np.max(np.abs(f.evaluate(x) - g.evaluate(x)), axis=1)
    worst = x[np.argmax(dev)]
    assert max(exact_deviation(f, g, worst)) <= d.upper
    assert float(r.samples.deviation_max) <= float(d.upper)
    for o in r.per_output:
        assert o.lower <= o.upper
        assert float(np.max(np.abs(f.evaluate(x)[:, o.output] - g.evaluate(x)[:, o.output]))) \
            <= float(o.upper) * (1 + 1e-12)
        if o.witness is not None:
            assert exact_deviation(f, g, o.witness)[o.output] == o.lower
    # every verdict agrees with the bounds
    for c in r.checks:
        if c.mode == "epsilon" and c.verdict is Verdict.PROVED:
            assert c.tolerance >= d.lower
        if c.mode == "epsilon" and c.verdict is Verdict.REFUTED:
            assert c.tolerance < d.upper
            assert c.counterexample.exact.exact_margin > 0


def _extremes_within(f, g, x, bound):
    """Exact check at the sampled points of largest deviation, per output: none exceeds
    ``bound`` ([outputs] floats, or one Fraction for all)."""
    diff = np.abs(f.evaluate(x) - g.evaluate(x))
    for j in range(diff.shape[1]):
        limit = bound if isinstance(bound, Fraction) else Fraction(float(bound[j]))
        assert exact_deviation(f, g, x[np.argmax(diff[:, j])])[j] <= limit


@pytest.mark.parametrize("seed", range(6))
def test_whole_box_bounds_of_both_streams_enclose_the_deviation(seed):
    rng = np.random.default_rng(seed)
    f = random_net(seed, dims=(4, 10, 6, 3))
    g = magnitude_prune(f, 0.2 + 0.1 * (seed % 3))
    if seed % 2:  # weights that differ everywhere (a retrained net, not a pruned copy)
        g = random_net(50 + seed, dims=(4, 10, 6, 3))
    boxes = []
    for _ in range(3):
        lo = rng.uniform(-1, 0, 4)
        boxes.append(Box(tuple(Fraction(v) for v in lo),
                         tuple(Fraction(v) for v in lo + rng.uniform(0, 1.5, 4))))
    model, bound, stream = engine_pair(f, g, tuple(boxes))
    assert bound.shape == (3, 3) and stream in (DIFFERENCE_STREAM, EACH_NETWORK)
    per_stream = [whole_box_bounds(engine_model(f, g, s), tuple(boxes))
                  for s in (DIFFERENCE_STREAM, EACH_NETWORK)]
    # the pair keeps the stream with the smaller worst bound; the bounds are the smaller of both
    assert np.array_equal(bound, np.minimum(*per_stream))
    assert model.same_shape == (stream == DIFFERENCE_STREAM)
    assert float(np.max(per_stream[stream != DIFFERENCE_STREAM])) == float(
        min(np.max(p) for p in per_stream))
    for bi, box in enumerate(boxes):
        lo, hi = box.lower_float(), box.upper_float()
        x = np.vstack([lo + rng.random((4000, 4)) * (hi - lo),
                       np.where(rng.random((500, 4)) < 0.5, lo, hi)])
        for b in (bound[bi], *(p[bi] for p in per_stream)):
            _extremes_within(f, g, x, b)


def _thirds(net: Network) -> Network:
    """``net`` with every weight and bias divided by 3 exactly: the exact rationals are not
    floats, the float arrays are their nearest floats (as import composes affine maps)."""
    layers = []
    for lay in net.layers:
        ew = np.vectorize(lambda v: Fraction(float(v)) / 3, otypes=[object])(lay.weight)
        eb = np.vectorize(lambda v: Fraction(float(v)) / 3, otypes=[object])(lay.bias)
        layers.append(Layer(Affine(lay.weight / 3, lay.bias / 3, ew, eb), lay.relu, lay.name))
    return net.with_layers(layers)


@pytest.mark.parametrize("seed", range(3))
def test_unrelated_and_rational_pairs_stay_under_the_certified_bound(seed):
    """Pairs whose weights differ throughout (each network bounded on its own) and networks
    whose exact weights are rationals, not floats: the bound holds in exact arithmetic."""
    f = random_net(20 + seed, dims=(2, 6, 6, 3))
    g = random_net(40 + seed, dims=(2, 6, 6, 3))
    if seed == 2:
        f, g = _thirds(f), _thirds(magnitude_prune(f, 0.3))
    r = audit(f, g, "-1:1", timeout=4, samples=200, seed=seed)
    d = r.deviation
    assert 0 < d.lower <= d.upper
    assert max(exact_deviation(f, g, d.witness)) == d.lower
    x = np.random.default_rng(seed).uniform(-1, 1, (5000, 2))
    _extremes_within(f, g, x, np.array([float(o.upper) for o in r.per_output]))
    _extremes_within(f, g, x, d.upper)


def test_identical_networks_audit_to_exactly_zero():
    f = random_net(11, dims=(3, 8, 8, 2))
    g = f.with_layers(f.layers)  # the same weights, another object
    r = audit(f, g, "-1:1", timeout=20, samples=200)
    assert r.deviation.upper == 0 and r.deviation.lower == 0 and r.converged
    assert all(o.upper == 0 for o in r.per_output)
    assert r.check("strict").verdict is Verdict.PROVED
    assert all(c.verdict is Verdict.PROVED for c in r.checks)


def test_audit_of_a_union_of_boxes_and_different_shapes():
    """Two boxes, and a pruned copy whose dead hidden unit is removed (different layer widths):
    the engine bounds each box; the certified bound covers the sampled deviation of both."""
    f = random_net(4, dims=(3, 6, 5, 2))
    w0, w1 = f.layers[0].weight, f.layers[1].weight
    g = mlp([np.delete(w0, 2, axis=0), np.delete(w1, 2, axis=1), f.layers[2].weight],
            [np.delete(f.layers[0].bias, 2), f.layers[1].bias, f.layers[2].bias])
    boxes = (Box((Fraction(-1),) * 3, (Fraction(0),) * 3),
             Box((Fraction(1, 4),) * 3, (Fraction(1),) * 3))
    r = audit(f, g, Domain(boxes, "two boxes"), timeout=10, samples=500)
    d = r.deviation
    assert 0 < d.lower <= d.upper and r.converged
    assert max(exact_deviation(f, g, d.witness)) == d.lower
    assert any(b.contains(tuple(Fraction(v) for v in d.witness)) for b in boxes)
    rng = np.random.default_rng(3)
    for box in boxes:
        lo, hi = box.lower_float(), box.upper_float()
        _extremes_within(f, g, lo + rng.random((5000, 3)) * (hi - lo), d.upper)
    for o in r.per_output:
        assert o.lower <= o.upper <= d.upper


def test_progress_reports_each_refinement_step():
    f = random_net(2)
    g = magnitude_prune(f, 0.3)
    seen = []
    r = audit(f, g, "-1:1", timeout=4, samples=100, progress=seen.append)
    assert len(seen) >= 2 and {p.stage for p in seen} == {"audit"}
    bounds = [p.bound for p in seen]
    assert all(b2 <= b1 for b1, b2 in zip(bounds, bounds[1:]))  # the certified bound only falls
    assert bounds[-1] >= float(r.deviation.upper)
    assert seen[-1].detail.startswith("lower ")
    assert float(seen[-1].detail.split()[1].rstrip(";")) <= float(r.deviation.lower) * (1 + 1e-5)
    assert [p.done for p in seen] == sorted(p.done for p in seen)


def test_data_agreement_and_distribution(tmp_path):
    f, g = hand_pair(remove=[0])
    x = np.random.default_rng(0).uniform(0, 1, (400, 2))
    x[:10] += 5  # outside the domain
    np.save(tmp_path / "samples.npy", x.astype(np.float32))
    r = audit(f, g, "0:1", data=tmp_path / "samples.npy", timeout=20, samples=100)
    xs = np.load(tmp_path / "samples.npy").astype(float)
    ya, yb = f.evaluate(xs), g.evaluate(xs)
    agree = 100 * np.mean(np.argmax(ya, 1) == np.argmax(yb, 1))
    assert r.data.count == 400 and r.data.inside_domain == 390
    assert r.data.top1_agreement == pytest.approx(agree)
    assert r.data.deviation_max == pytest.approx(np.max(np.abs(ya - yb)))
    assert sum(r.data.histogram_counts) == 400
    # inside the domain, no data point beats the certified bound
    assert np.max(r.data.deviations_inside) <= float(r.deviation.upper)


def test_bad_data_and_arguments(tmp_path):
    f, g = hand_pair(remove=[0])
    np.save(tmp_path / "bad.npy", np.zeros((4, 3)))
    with pytest.raises(InputError, match="cannot be split into inputs of 2"):
        audit(f, g, "0:1", data=tmp_path / "bad.npy", timeout=5)
    np.save(tmp_path / "nan.npy", np.array([[0.5, np.nan]]))
    with pytest.raises(InputError, match="NaN"):
        audit(f, g, "0:1", data=tmp_path / "nan.npy", timeout=5)
    with pytest.raises(InputError, match="epsilon"):
        audit(f, g, "0:1", epsilons=("-1",), timeout=5)
    with pytest.raises(InputError, match="no such data file"):
        audit(f, g, "0:1", data=tmp_path / "missing.npy", timeout=5)
    with pytest.raises(InputError, match="unknown bound method 'magic'"):
        audit(f, g, "0:1", bounds="magic", timeout=5)


def test_reports_carry_the_same_content(tmp_path):
    f, g = hand_pair(remove=[0, 1])
    r = audit(f, g, "0:1", timeout=20, samples=300)
    html = to_html(r)
    assert "<svg" in html and "<figcaption>" in html and "<table>" in html
    md = to_markdown(r)
    lines = terminal_lines(r)
    assert lines[0].startswith("audit ") and lines[-1].startswith("  time: ")
    assert lines[2:-1] == summary_lines(r)
    for text in (html, md):
        assert "certified" in text and "witnessed" in text
        for c in r.checks:
            assert c.name in text and c.verdict.label.upper() in text
        assert "stably inactive" in text or "harmless" in text
    path = write_report(r, tmp_path / "a.json")
    data = json.loads(path.read_text())
    assert data["deviation"]["upper_exact"] == str(r.deviation.upper)
    # the result carries the domain and the prover options it ran with
    assert data["domain"] == r.domain.to_dict() and data["domain_text"] == r.domain.describe()
    assert data["options"]["bound_method"] == "symbolic" and data["options"]["seed"] == 0
    assert {u["kind"] for u in data["units"]} == {"removed"}
    with pytest.raises(InputError, match="use a .html"):
        write_report(r, tmp_path / "a.pdf")


# --------------------------------------------------------------------------------------------
# the command line


@pytest.fixture
def files(tmp_path):
    f, g = hand_pair(remove=[0, 1])
    export_network(f, tmp_path / "orig.onnx")
    export_network(g, tmp_path / "pruned.onnx")
    np.save(tmp_path / "samples.npy", np.random.default_rng(1).uniform(0, 1, (50, 1, 2)))
    return tmp_path


def test_cli_json_and_html_report(files):
    res = runner.invoke(app, ["audit", str(files / "orig.onnx"), str(files / "pruned.onnx"),
                              "--domain", "0:1", "--data", str(files / "samples.npy"),
                              "--report", str(files / "audit.html"), "--json", "-t", "20"])
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)  # exactly one JSON object on stdout
    assert {c["name"] for c in data["checks"]} >= {"strict", "argmax", "epsilon 0.01"}
    assert data["data"]["count"] == 50
    assert float(Fraction(data["deviation"]["lower_exact"])) == data["deviation"]["lower"]
    # the witness deviates by exactly the lower bound, re-checked in onnxruntime-free exact math
    assert data["deviation"]["lower"] > 0
    assert (files / "audit.html").read_text().count("<figure id='fig-bounds'>") == 1
    assert "report written to" in res.stderr


def test_cli_human_output_and_markdown(files):
    res = runner.invoke(app, ["audit", str(files / "orig.onnx"), str(files / "pruned.onnx"),
                              "-d", "0:1", "--report", str(files / "audit.md"), "-t", "20",
                              "--epsilons", "0.5,3"])
    assert res.exit_code == 0, res.stderr
    assert "worst-case deviation" in res.stdout and "certified upper bound by" in res.stdout
    assert "epsilon 0.5" in res.stdout and "epsilon 3" in res.stdout
    assert "report written to" in res.stdout
    assert "| notion | verdict |" in (files / "audit.md").read_text()


def test_cli_bad_report_suffix_is_a_usage_error(files):
    res = runner.invoke(app, ["audit", str(files / "orig.onnx"), str(files / "pruned.onnx"),
                              "--report", "x.pdf", "-t", "5"])
    assert res.exit_code == 2
    assert "use a .html" in res.stderr and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["missing.onnx", "pruned.onnx"], "no such file"),
    (["orig.onnx", "pruned.onnx", "--domain", "1:0"], "inverted"),
    (["orig.onnx", "pruned.onnx", "--data", "nothing.npy"], "no such data file"),
])
def test_cli_bad_input_exits_4_with_one_line(files, args, message):
    args = [str(files / a) if a.endswith((".onnx", ".npy")) else a for a in args]
    res = runner.invoke(app, ["audit", *args, "-t", "5"])
    assert res.exit_code == 4
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------------------------
# a real model


@pytest.mark.slow
def test_pruned_acas_xu_on_prop_3(tmp_path):
    src = external_path("acasxu/ACASXU_run2a_1_1_batch_2000.onnx")
    prop = external_path("acasxu/prop_3.vnnlib")
    model = onnx.load(str(src))
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.ndim == 2:
            w = w.copy()
            w.ravel()[np.argsort(np.abs(w), axis=None)[: int(0.3 * w.size)]] = 0
            init.CopyFrom(numpy_helper.from_array(w, init.name))
    pruned = tmp_path / "pruned.onnx"
    onnx.save(model, str(pruned))
    r = audit(src, pruned, str(prop), timeout=15, samples=2000)
    d = r.deviation
    assert 0 < d.lower <= d.upper
    assert r.check("strict").verdict is Verdict.REFUTED
    assert r.check("strict").counterexample.reproduces
    dom = parse_domain(str(prop), 5)
    assert dom.boxes[0].contains(d.witness)
    assert r.samples.deviation_max <= float(d.upper)
    assert sum(lc.weights_zeroed for lc in r.layers) > 0.29 * sum(lc.weights for lc in r.layers)


@pytest.mark.slow
def test_certified_bound_on_pruned_mnist_covers_10000_random_points():
    """The Done-when check on the real MNIST net, without the (slow) solver steps: the certified
    bound of a 30%-magnitude-pruned mnist-net_256x2 over prop_0_0.03's box is never below the
    deviation at 10,000 random points of the box (the largest one checked exactly)."""
    from equivcheck import load_network

    f = load_network(external_path("mnistfc/mnist-net_256x2.onnx"))
    g = magnitude_prune(f, 0.3)
    box = parse_domain(str(external_path("mnistfc/prop_0_0.03.vnnlib")), 784).boxes[0]
    _, bound, _ = engine_pair(f, g, (box,))
    ub = bound[0]
    lo, hi = box.float32_box()
    rng = np.random.default_rng(2026)
    x = np.clip((lo + rng.random((10000, 784)) * (hi - lo)).astype(np.float32).astype(float), lo, hi)
    dev = np.abs(f.evaluate(x) - g.evaluate(x))
    assert np.all(dev <= ub)
    worst = x[np.argmax(np.max(dev, axis=1))]
    assert max(exact_deviation(f, g, worst)) <= Fraction(float(np.max(ub)))
    assert float(np.max(ub)) < 1.0  # and it is informative (the interval bound alone is ~4.5)


# --------------------------------------------------------------------------------------------
# the shared signed-gradient ascent (core.ascent: the falsifier, the audit's witness search and
# the stability analysis climb with it)


def test_vjp_is_the_gradient_inside_a_linear_region():
    from equivcheck.core.ascent import vjp

    f = random_net(7, dims=(4, 9, 7, 3))
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (5, 4))
    c = rng.normal(size=(5, 3))
    h = 1e-7
    for k in (None, 0, 1, 2):
        # y = the output, or the pre-activation of layer k
        def y(p, k=k):
            return f.evaluate(p) if k is None else f.pre_activations(p)[k]

        cc = c if k is None or k == 2 else rng.normal(size=(5, f.layers[k].out_dim))
        g = vjp(f, x, cc, layer=k)
        for d in range(4):
            e = np.zeros(4)
            e[d] = h
            fd = np.sum(cc * (y(x + e) - y(x - e)), axis=1) / (2 * h)
            assert np.allclose(g[:, d], fd, rtol=1e-5, atol=1e-6)


def test_ascend_climbs_stays_on_the_grid_and_never_loses_ground():
    from equivcheck.core.ascent import GREEDY, ascend, difference_objective
    from equivcheck.core.deadline import Deadline

    # f - g = 2 x0 - 3 x1 + x2 on [0, 1]^3: the maximum 3 is at the corner (1, 0, 1)
    f = mlp([[[2.0, -3.0, 1.0]]], [[0.0]])
    g = mlp([[[0.0, 0.0, 0.0]]], [[0.0]])
    lo, hi = np.zeros(3), np.ones(3)
    x0 = np.random.default_rng(1).uniform(0, 1, (6, 3)).astype(np.float32).astype(float)
    objective = difference_objective(f, g, np.ones((6, 1)))
    start = objective.value(x0)

    def project(p):
        return np.clip(p.astype(np.float32).astype(float), lo, hi)

    x, v = ascend(objective, x0, project, hi - lo, Deadline.start(10), GREEDY)
    assert np.all(v >= start) and np.allclose(v, 3.0) and np.allclose(x, [1.0, 0.0, 1.0])
    assert np.array_equal(x, project(x)) and np.array_equal(v, objective.value(x))
    # an expired deadline moves nothing
    x, v = ascend(objective, x0, project, hi - lo, Deadline.start(0, allow_zero=True), GREEDY)
    assert np.array_equal(x, x0) and np.array_equal(v, start)


def test_ascend_with_a_goal_keeps_the_first_point_past_it():
    from equivcheck.core.ascent import ANNEALED, ascend, preactivation_objective
    from equivcheck.core.deadline import Deadline

    f = random_net(3, dims=(3, 8, 6, 2))
    rng = np.random.default_rng(2)
    x0 = rng.uniform(-1, 1, (4, 3))
    layers, units, signs = np.array([0, 0, 1, 1]), np.array([0, 1, 2, 3]), np.array([1.0, -1, 1, -1])
    objective = preactivation_objective(f, layers, units, signs)
    pre = f.pre_activations(x0)
    assert np.array_equal(objective.value(x0), signs * [pre[k][r, i] for r, (k, i) in
                                                        enumerate(zip(layers, units))])
    x, v = ascend(objective, x0, lambda p: np.clip(p, -1, 1), np.full(3, 2.0), Deadline.start(10),
                  ANNEALED, start_value=np.full(4, -np.inf), goal=0.0)
    assert np.all(np.abs(x) <= 1) and np.array_equal(v, objective.value(x))
    assert np.any(v > 0)  # these targets are reachable on this box
    # the same climb without a goal keeps the best point of the same path: never worse
    _, best = ascend(objective, x0, lambda p: np.clip(p, -1, 1), np.full(3, 2.0),
                     Deadline.start(10), ANNEALED, start_value=np.full(4, -np.inf))
    assert np.all(best >= v)


def test_top1_disagreement_at_a_sampled_point_refutes_argmax_at_once():
    """When the random domain points already show the two picking different classes, the
    argmax verdict is that refutation (exact, with a reproducing counterexample), not an
    UNKNOWN beside a report of less than 100% top-1 agreement."""
    f = random_net(3, (3, 8, 8, 3))
    g = magnitude_prune(f, 0.4)
    r = audit(f, g, "-1:1", timeout=1.5, samples=500)
    assert r.samples.top1_agreement < 100.0
    c = r.check("argmax")
    assert c.verdict is Verdict.REFUTED and c.method.value == "witness", c.reason
    cex = c.counterexample  # (networks given as objects: no onnxruntime run)
    assert cex is not None and cex.exact.violated and cex.float64.violated
    x = [Fraction(v) for v in cex.input]
    assert Box((Fraction(-1),) * 3, (Fraction(1),) * 3).contains(x)
    ya, yb = f.evaluate_exact(x), g.evaluate_exact(x)
    assert max(range(3), key=lambda i: (ya[i], -i)) != max(range(3), key=lambda i: (yb[i], -i))
