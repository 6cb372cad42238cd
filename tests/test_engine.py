"""The differential branch-and-bound engine (equivcheck.engine): soundness checks that can fail.

* the batched bounds of f, g and f - g enclose the exact (rational) outputs at random points and
  corners of every box of a batch, for same-shaped and differently shaped pairs, weights that are
  not exact floats, and every bound mode;
* a PROVED box shows no violation at 10,000 random points (float candidates confirmed exactly);
* a REFUTED point lies in the exact box and violates the spec in exact arithmetic;
* verdicts agree with ``equivcheck.prove`` (Z3) wherever both decide (hypothesis, tiny pairs);
* boxes with rational (non-float) bounds, strict and argmax mode, the deadline.
"""

from __future__ import annotations

import zlib
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Box, Domain
from equivcheck.core.network import Affine, Layer, Network
from equivcheck.core.rational import fraction_array, nearest_float_array
from equivcheck.core.spec import Spec
from equivcheck.engine import Boxes, EngineOptions, Outcome, PairModel, check_box, pair_bounds

# ---- builders ------------------------------------------------------------------------------------


def _f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def make_net(weights, biases, rational_layer: int | None = None) -> Network:
    """A chain with ReLU after every layer but the last. ``rational_layer``: that layer's
    weights are divided by 3 exactly (not floats: float64 arrays hold the nearest floats)."""
    layers = []
    for k, (w, b) in enumerate(zip(weights, biases)):
        w, b = _f32(w), _f32(b)
        aff = Affine(w, b)
        if k == rational_layer:
            wq, bq = fraction_array(w) / 3, fraction_array(b) / 3
            aff = Affine(nearest_float_array(wq), nearest_float_array(bq), wq, bq)
        layers.append(Layer(aff, relu=k < len(weights) - 1, name=f"l{k}"))
    return Network(tuple(layers))


def random_params(rng, widths):
    ws = [rng.normal(0, 1.0 / np.sqrt(widths[k]), (widths[k + 1], widths[k])) for k in range(len(widths) - 1)]
    bs = [rng.normal(0, 0.3, widths[k + 1]) for k in range(len(widths) - 1)]
    return ws, bs


def random_pair(rng, widths, kind: str):
    """f and a modified copy g: "noise" (small perturbation), "prune" (20% smallest zeroed),
    "same" (identical), "rational" (g's middle layer has rational weights), "shape" (g has
    other hidden widths)."""
    ws, bs = random_params(rng, widths)
    f = make_net(ws, bs)
    if kind == "same":
        return f, make_net(ws, bs)
    if kind == "shape":
        wider = [widths[0]] + [w + 2 for w in widths[1:-1]] + [widths[-1]]
        ws2, bs2 = random_params(rng, wider)
        # g: f's units plus two extra ones per layer whose effect is small
        for k in range(len(ws)):
            ws2[k][: ws[k].shape[0], : ws[k].shape[1]] = ws[k]
            ws2[k][ws[k].shape[0]:] *= 0.05
            ws2[k][:, ws[k].shape[1]:] *= 0.05
            bs2[k][: len(bs[k])] = bs[k]
        return f, make_net(ws2, bs2)
    if kind == "rational":
        ws3 = [w.copy() for w in ws]
        bs3 = [b.copy() for b in bs]
        ws3[1] = ws3[1] * 3.0  # divided by 3 exactly in make_net: close to f, not equal
        bs3[1] = bs3[1] * 3.0
        return f, make_net(ws3, bs3, rational_layer=1)
    ws2 = [w.copy() for w in ws]
    for w in ws2:
        if kind == "prune":
            cut = np.quantile(np.abs(w), 0.2)
            w[np.abs(w) <= cut] = 0.0
        else:
            w += rng.normal(0, 0.01, w.shape)
    return f, make_net(ws2, bs)


def exact_out(net: Network, x) -> list[Fraction]:
    return net.evaluate_exact([Fraction(float(v)) for v in x])


def random_box(rng, n, rational: bool = False) -> Box:
    lo = rng.uniform(-1.0, 0.2, n)
    hi = lo + rng.uniform(0.05, 1.0, n)
    if rational:
        return Box(tuple(Fraction(int(round(v * 300)), 301) for v in lo),
                   tuple(Fraction(int(round(v * 300)) + 1, 301) + Fraction(1, 7) for v in hi))
    return Box(tuple(Fraction(float(_f32(v))) for v in lo), tuple(Fraction(float(_f32(v))) for v in hi))


def sample_points(rng, box: Box, count: int) -> np.ndarray:
    (lo, hi), _ = box.sample_box()
    pts = lo + rng.random((count, len(lo))) * (hi - lo)
    corners = np.where(rng.random((max(count // 10, 1), len(lo))) < 0.5, lo, hi)
    return np.vstack([pts, corners])


def sampled_deviation(f, g, box, rng, n: int = 5000) -> float:
    """The largest ``||f(x) - g(x)||_inf`` at ``n`` random points of the box (float64)."""
    pts = sample_points(rng, box, n)
    return float(np.abs(f.evaluate(pts) - g.evaluate(pts)).max())


# ---- bounds ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["noise", "prune", "same", "rational", "shape"])
@pytest.mark.parametrize("refine", ["none", "output", "all", "all+hidden", "all+hidden+interval"])
def test_batched_bounds_enclose_exact_outputs(kind, refine):
    rng = np.random.default_rng(zlib.crc32(f"{kind} {refine}".encode()))  # the same every run
    f, g = random_pair(rng, [3, 8, 7, 6, 3], kind)
    model = PairModel.build(f, g)
    assert model.same_shape == (kind != "shape")
    boxes = [random_box(rng, 3) for _ in range(6)]
    lo = np.array([b.lower_float() for b in boxes])
    hi = np.array([b.upper_float() for b in boxes])
    mode, hidden, interval = refine.split("+")[0], "hidden" in refine, refine.endswith("interval")
    pb = pair_bounds(model, Boxes(lo, hi, model.width), mode, hidden_diff=hidden, symbolic=not interval)
    assert_bounds_enclose(pb, f, g, boxes, rng, 30)


def assert_bounds_enclose(pb, f: Network, g: Network, boxes, rng, count: int) -> None:
    """The batched bounds ``pb`` of f, g and f - g contain the exact outputs at ``count`` random
    points of each box (and its corners: see :func:`sample_points`)."""
    for i, box in enumerate(boxes):
        for x in sample_points(rng, box, count):
            yf, yg = exact_out(f, x), exact_out(g, x)
            for j in range(len(yf)):
                assert Fraction(pb.f_lo[i, j]) <= yf[j] <= Fraction(pb.f_hi[i, j])
                assert Fraction(pb.g_lo[i, j]) <= yg[j] <= Fraction(pb.g_hi[i, j])
                assert Fraction(pb.d_lo[i, j]) <= yf[j] - yg[j] <= Fraction(pb.d_hi[i, j])


def test_identical_networks_have_exactly_zero_difference_bounds():
    """Only an exact zero closes a strict-mode box: the allowances must keep it."""
    rng = np.random.default_rng(5)
    f, g = random_pair(rng, [3, 8, 8, 2], "same")
    model = PairModel.build(f, g)
    lo = rng.uniform(-1, 0, (5, 3))
    pb = pair_bounds(model, Boxes(lo, lo + 0.5, model.width), "all")
    assert np.all(pb.d_lo == 0.0) and np.all(pb.d_hi == 0.0)


def test_bounds_are_tight_on_small_boxes():
    """Not only sound: on tiny boxes the difference bound is close to the sampled range."""
    rng = np.random.default_rng(9)
    f, g = random_pair(rng, [3, 10, 10, 2], "noise")
    model = PairModel.build(f, g)
    c = rng.uniform(-0.5, 0.5, (16, 3))
    pb = pair_bounds(model, Boxes(c - 1e-4, c + 1e-4, model.width), "all")
    pts = c[:, None, :] + rng.uniform(-1e-4, 1e-4, (16, 200, 3))
    d = f.evaluate(pts.reshape(-1, 3)).reshape(16, 200, 2) - g.evaluate(pts.reshape(-1, 3)).reshape(16, 200, 2)
    width_bound = (pb.d_hi - pb.d_lo).max(axis=1)
    width_seen = (d.max(axis=1) - d.min(axis=1)).max(axis=1)
    assert np.all(width_bound <= 4 * width_seen + 1e-9)


# ---- the search -----------------------------------------------------------------------------------


def assert_sound(res, f, g, spec, box, rng, samples=10_000):
    """PROVED: no violation among ``samples`` random points (float candidates confirmed exactly).
    REFUTED: the point is in the box and violates the spec exactly."""
    if res.outcome is Outcome.REFUTED:
        x = res.point
        assert box.contains(x)
        ya, yb = exact_out(f, x), exact_out(g, x)
        assert not spec.holds(ya, yb)
        assert res.exact_margin is not None
    elif res.outcome is Outcome.PROVED:
        pts = sample_points(rng, box, samples)
        yf, yg = f.evaluate(pts), g.evaluate(pts)
        d = yf - yg
        if spec.mode.value == "epsilon":
            norm = np.abs(d).max(1) if spec.norm.value == "linf" else np.abs(d).sum(1)
            suspects = np.flatnonzero(norm > float(spec.tolerance) - 1e-9)
        elif spec.mode.value == "strict":
            suspects = np.flatnonzero(np.abs(d).max(1) > 0)
        else:
            suspects = np.flatnonzero(yf.argmax(1) != yg.argmax(1))
        for i in suspects[:20]:
            assert spec.holds(exact_out(f, pts[i]), exact_out(g, pts[i])), pts[i]
        assert len(suspects) == 0 or spec.mode.value != "argmax"
        assert res.stats.open_nodes == 0


SPECS = [Spec.make("epsilon", "0.05"), Spec.make("epsilon", "0.2", "l1"), Spec.make("argmax"),
         Spec.make("strict")]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("spec", SPECS, ids=["linf", "l1", "argmax", "strict"])
def test_verdicts_are_sound_on_random_pairs(seed, spec):
    rng = np.random.default_rng(seed)
    kind = ["noise", "prune", "same", "rational", "shape", "noise"][seed]
    f, g = random_pair(rng, [2, 6, 6, 3], kind)
    box = random_box(rng, 2, rational=seed % 2 == 1)
    exact_modes = spec.mode.value in ("strict", "argmax")  # may hinge on a rational point
    res = check_box(f, g, spec, box, Deadline.start(3.0 if exact_modes else 20.0), EngineOptions(batch=64))
    assert res.outcome is not Outcome.UNKNOWN or exact_modes, res.reason
    assert_sound(res, f, g, spec, box, rng)
    if kind == "same":
        assert res.outcome is Outcome.PROVED


def test_refutes_a_real_violation_and_proves_a_larger_tolerance():
    rng = np.random.default_rng(3)
    f, g = random_pair(rng, [2, 6, 6, 2], "prune")
    box = random_box(rng, 2)
    seen = sampled_deviation(f, g, box, rng)
    assert seen > 1e-3
    low = check_box(f, g, Spec.make("epsilon", Fraction(seen) / 2), box)
    assert low.outcome is Outcome.REFUTED
    assert_sound(low, f, g, Spec.make("epsilon", Fraction(seen) / 2), box, rng)
    assert low.exact_margin > 0
    high = check_box(f, g, Spec.make("epsilon", Fraction(seen) * 3), box)
    assert high.outcome is Outcome.PROVED
    assert high.stats.best_bound <= seen * 3
    assert high.stats.best_bound >= seen * 0.999  # a bound of the max deviation, witnessed


def test_rational_box_bounds_are_honoured():
    """A box with bounds 1/3 and 2/3 (not floats, one strict) works in both directions."""
    f = make_net([[[1.0]], [[1.0]]], [[0.0], [0.0]])
    g = make_net([[[1.0]], [[1.0]]], [[0.0], [-0.5]])  # g = relu(x) - 0.5
    box = Box((Fraction(1, 3),), (Fraction(2, 3),), (True,), (False,))
    # |f - g| = 0.5 everywhere on the box: 0.5001 is proved; at exactly 0.5 float bounds cannot
    # decide (they miss by rounding only), so the box is handed back quickly as a residue
    assert check_box(f, g, Spec.make("epsilon", "0.5001"), box).outcome is Outcome.PROVED
    tie = check_box(f, g, Spec.make("epsilon", "0.5"), box, Deadline.start(10.0))
    assert tie.outcome is Outcome.UNKNOWN and tie.stats.nodes < 100 and tie.extra["residue"]
    res = check_box(f, g, Spec.make("epsilon", "0.4999"), box)
    assert res.outcome is Outcome.REFUTED and box.contains(res.point)
    # g2 differs from f only above 1/2: refuted, the point must be above 1/2 and in the box
    g2 = make_net([[[1.0], [1.0]], [[1.0, 1.0]]], [[0.0, -0.5], [0.0]])
    res = check_box(f, g2, Spec.make("epsilon", "0.1"), box)
    assert res.outcome is Outcome.REFUTED
    assert Fraction(res.point[0]) > Fraction(1, 2) + Fraction(1, 10) and box.contains(res.point)
    # below 1/2 they agree, but they differ in shape: float bounds cannot give an exact zero,
    # the box goes back as a residue for the exact solver (never a wrong REFUTED)
    below = Box((Fraction(1, 3),), (Fraction(1, 2),))
    res = check_box(f, g2, Spec.make("strict"), below)
    assert res.outcome is Outcome.UNKNOWN and res.extra["residue"]


def test_strict_mode_proves_a_dead_unit_difference():
    """g differs from f only in the incoming weights of a unit that is off on the whole box."""
    w1 = np.array([[1.0, 0.5], [-1.0, -1.0], [0.3, 0.2]])
    b1 = np.array([0.1, -5.0, 0.0])
    w2 = np.array([[1.0, 2.0, -1.0]])
    f = make_net([w1, w2], [b1, [0.0]])
    w1g = w1.copy()
    w1g[1] = [-2.0, -3.0]  # the dead unit (pre-activation < -3 on [0, 1]^2)
    g = make_net([w1g, w2], [b1, [0.0]])
    box = Box((Fraction(0), Fraction(0)), (Fraction(1), Fraction(1)))
    assert check_box(f, g, Spec.make("strict"), box).outcome is Outcome.PROVED


def test_argmax_mode():
    rng = np.random.default_rng(11)
    f, g = random_pair(rng, [2, 8, 4], "noise")
    box = random_box(rng, 2)
    res = check_box(f, g, Spec.make("argmax"), box, Deadline.start(20.0))
    assert res.outcome is not Outcome.UNKNOWN
    assert_sound(res, f, g, Spec.make("argmax"), box, rng)


def test_deadline_and_node_limit_give_unknown():
    rng = np.random.default_rng(2)
    f, g = random_pair(rng, [3, 50, 50, 50, 50, 3], "noise")
    box = Box((Fraction(-50),) * 3, (Fraction(50),) * 3)
    pts = sample_points(rng, box, 20_000)
    seen = np.abs(f.evaluate(pts) - g.evaluate(pts)).max()
    spec = Spec.make("epsilon", Fraction(1.5 * seen))  # probably true, and far from easy
    res = check_box(f, g, spec, box, Deadline.start(0.2), EngineOptions(root_samples=0, root_steps=0, falsify_boxes=0))
    assert res.outcome is Outcome.UNKNOWN and res.reason.startswith("timeout")
    assert res.stats.seconds < 2.0
    res = check_box(f, g, spec, box, options=EngineOptions(max_nodes=10, root_samples=0, root_steps=0, falsify_boxes=0))
    assert res.outcome is Outcome.UNKNOWN and res.reason.startswith("node limit")


# ---- agreement with the exact prover ----------------------------------------------------------------


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(["noise", "prune", "shape", "rational"]),
       tol=st.sampled_from(["0.001", "0.02", "0.1", "0.5"]), norm=st.sampled_from(["linf", "l1"]))
def test_engine_agrees_with_prove(seed, kind, tol, norm):
    import equivcheck
    from equivcheck.core.result import Verdict

    rng = np.random.default_rng(seed)
    f, g = random_pair(rng, [2, 4, 3, 2], kind)
    box = random_box(rng, 2, rational=seed % 3 == 0)
    spec = Spec.make("epsilon", tol, norm)
    res = check_box(f, g, spec, box, Deadline.start(20.0))
    ref = equivcheck.prove(f, g, Domain((box,), "<test>"), mode="epsilon", tolerance=tol, norm=norm,
                           timeout=20.0)
    if res.outcome is Outcome.UNKNOWN or ref.verdict is Verdict.UNKNOWN:
        return
    assert (res.outcome is Outcome.PROVED) == (ref.verdict is Verdict.PROVED), (res, ref.reason)
