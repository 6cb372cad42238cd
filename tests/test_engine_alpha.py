"""Optimised relaxation slopes (equivcheck.engine.alpha): soundness checks that can fail.

* bounds with optimised slopes, and with *any* slopes in [0, 1], enclose the exact (rational)
  pre-activations and outputs at sampled points;
* the optimisation never ends above CROWN's bound it starts from, and tightens it somewhere;
* the slope gradient is the derivative of the bound (checked against finite differences);
* verdicts with optimised slopes agree with the plain engine's and with Z3 where both decide.
"""

from __future__ import annotations

import zlib
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Domain
from equivcheck.core.spec import Spec
from equivcheck.engine import Boxes, EngineOptions, Outcome, PairModel, check_box, pair_bounds
from equivcheck.engine.alpha import _slope_gradient, initial_slopes, optimise_rows
from equivcheck.engine.backward import back_factor, back_network, concretize, underflow_allowance
from equivcheck.engine.bounds import _selector
from tests.test_engine import (
    assert_bounds_enclose,
    assert_sound,
    random_box,
    random_pair,
    sample_points,
)


def exact_pre(net, x, k: int) -> list[Fraction]:
    """Layer ``k``'s pre-activation at ``x`` in exact arithmetic."""
    h = [Fraction(float(v)) for v in x]
    for j, layer in enumerate(net.layers[: k + 1]):
        w, b = layer.affine.rational_weight(), layer.affine.rational_bias()
        z = [sum((w[i][t] * h[t] for t in range(len(h))), b[i]) for i in range(len(b))]
        h = [max(v, Fraction(0)) for v in z] if j < k and layer.relu else z
    return z


def _setup(seed: int, kind: str = "noise", widths=(3, 9, 8, 7, 2), count: int = 5):
    rng = np.random.default_rng(seed)
    f, g = random_pair(rng, list(widths), kind)
    model = PairModel.build(f, g)
    boxes = [random_box(rng, widths[0]) for _ in range(count)]
    lo = np.array([b.lower_float() for b in boxes])
    hi = np.array([b.upper_float() for b in boxes])
    bx = Boxes(lo, hi, model.width)
    pb = pair_bounds(model, bx, "all", hidden_diff=True)
    return rng, f, g, model, boxes, bx, pb


def _rows(model, pb, bx, k: int, alpha=None, steps=0):
    h = pb.hist
    m = model.f[k].out_dim
    c = _selector(np.arange(m), m)
    fac, tiny = back_factor(model), underflow_allowance(h, bx.xmax)
    if steps:
        return optimise_rows(model.f, h.f_lo, h.f_hi, h.f_pm, k, c, bx, fac, tiny, steps, alpha)[0]
    p = back_network(model.f, h.f_lo, h.f_hi, h.f_pm, k, c, bx.xmax, bx.count, alpha)
    return concretize(p, bx, fac, tiny)


@pytest.mark.parametrize("seed", range(4))
def test_optimised_and_random_slopes_enclose_exact_preactivations(seed):
    rng, f, g, model, boxes, bx, pb = _setup(zlib.crc32(f"alpha {seed}".encode()))
    h = pb.hist
    for k in (2, 3):
        m = model.f[k].out_dim
        opt = _rows(model, pb, bx, k, steps=4)
        plain = _rows(model, pb, bx, k)
        slopes = {j: rng.random(a.shape) for j, a in initial_slopes(h.f_lo, h.f_hi, model.f, k, 2 * m).items()}
        rand = _rows(model, pb, bx, k, alpha=slopes)
        # never above CROWN's bound (up to the float order of the sums), tighter somewhere
        assert np.all(opt <= plain + 1e-9 * (1.0 + np.abs(plain)))
        assert np.any(opt < plain - 1e-6)
        for i, box in enumerate(boxes):
            for x in sample_points(rng, box, 12):
                z = exact_pre(f, x, k)
                for u in range(m):
                    for ub in (opt, rand):
                        assert z[u] <= Fraction(ub[i, u]) and -z[u] <= Fraction(ub[i, m + u])


@pytest.mark.parametrize("kind", ["noise", "prune", "rational", "shape"])
def test_pair_bounds_with_optimised_slopes_enclose_exact_outputs(kind):
    rng = np.random.default_rng(zlib.crc32(f"alpha pair {kind}".encode()))
    f, g = random_pair(rng, [3, 8, 7, 6, 3], kind)
    model = PairModel.build(f, g)
    boxes = [random_box(rng, 3) for _ in range(6)]
    lo = np.array([b.lower_float() for b in boxes])
    hi = np.array([b.upper_float() for b in boxes])
    for interval in (False, True):
        pb = pair_bounds(model, Boxes(lo, hi, model.width), "all", hidden_diff=True,
                         symbolic=not interval, alpha_steps=3)
        assert_bounds_enclose(pb, f, g, boxes, rng, 20)


def test_slope_gradient_matches_finite_differences():
    rng, f, g, model, boxes, bx, pb = _setup(17, widths=(3, 10, 10, 10, 2), count=3)
    h = pb.hist
    k = 3
    m = model.f[k].out_dim
    c = _selector(np.arange(m), m)
    alpha = {j: rng.uniform(0.2, 0.8, a.shape)
             for j, a in initial_slopes(h.f_lo, h.f_hi, model.f, k, 2 * m).items()}

    def raw(a):  # the bound without its rounding allowance (what the gradient differentiates)
        tr: dict = {}
        p = back_network(model.f, h.f_lo, h.f_hi, h.f_pm, k, c, bx.xmax, bx.count, a, tr)
        nu = np.asarray(p.nu)
        val = p.val + np.einsum("brn,nb->br", nu, bx.mid) + np.einsum("brn,nb->br", np.abs(nu), bx.rad)
        return val, tr, nu

    val, tr, nu = raw(alpha)
    grads = _slope_gradient(model.f, tr, k, nu, bx)
    checked = 0
    for j, gr in grads.items():
        for b, r, u in zip(*np.nonzero(gr)):
            if checked >= 40:
                break
            step = 1e-6
            a2 = {i: v.copy() for i, v in alpha.items()}
            a2[j][b, r, u] += step
            v2 = raw(a2)[0]
            fd = (v2[b, r] - val[b, r]) / step
            assert abs(fd - gr[b, r, u]) <= 1e-4 * (1.0 + abs(gr[b, r, u])), (j, b, r, u, fd, gr[b, r, u])
            checked += 1
    assert checked > 5


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("spec", [Spec.make("epsilon", "0.05"), Spec.make("epsilon", "0.2")],
                         ids=["linf-0.05", "linf-0.2"])  # the optimised stage runs in epsilon mode
def test_verdicts_with_optimised_slopes_agree_with_plain_ones(seed, spec):
    rng = np.random.default_rng(100 + seed)
    f, g = random_pair(rng, [2, 8, 8, 8, 3], ["noise", "prune", "rational", "shape", "noise"][seed])
    box = random_box(rng, 2)
    with_alpha = check_box(f, g, spec, box, Deadline.start(8.0), EngineOptions(alpha_steps=4))
    plain = check_box(f, g, spec, box, Deadline.start(8.0), EngineOptions(alpha_steps=0))
    assert_sound(with_alpha, f, g, spec, box, rng)
    if Outcome.UNKNOWN not in (with_alpha.outcome, plain.outcome):
        assert with_alpha.outcome is plain.outcome


def test_relu_splitting_with_optimised_slopes_is_sound():
    """Many inputs (ReLU splitting, interval forward pass): the optimised stage must keep the
    phases fixed by the node's inherited bounds."""
    rng = np.random.default_rng(41)
    f, g = random_pair(rng, [30, 12, 12, 3], "prune")
    box = random_box(rng, 30)
    seen = float(np.abs(f.evaluate(sample_points(rng, box, 4000)) - g.evaluate(sample_points(rng, box, 4000))).max())
    for tol in (seen * 0.5, seen * 1.5, seen * 4):
        spec = Spec.make("epsilon", Fraction(tol))
        res = check_box(f, g, spec, box, Deadline.start(6.0), EngineOptions(branch="relu"))
        assert_sound(res, f, g, spec, box, rng)
        if tol < seen:
            assert res.outcome is not Outcome.PROVED


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(["noise", "prune", "shape"]),
       tol=st.sampled_from(["0.005", "0.05", "0.3"]))
def test_optimised_engine_agrees_with_prove(seed, kind, tol):
    import equivcheck
    from equivcheck.core.result import Verdict

    rng = np.random.default_rng(seed)
    f, g = random_pair(rng, [2, 5, 4, 2], kind)
    box = random_box(rng, 2)
    spec = Spec.make("epsilon", tol)
    res = check_box(f, g, spec, box, Deadline.start(20.0), EngineOptions(alpha_steps=4))
    ref = equivcheck.prove(f, g, Domain((box,), "<test>"), mode="epsilon", tolerance=tol, timeout=20.0)
    if res.outcome is Outcome.UNKNOWN or ref.verdict is Verdict.UNKNOWN:
        return
    assert (res.outcome is Outcome.PROVED) == (ref.verdict is Verdict.PROVED), (res, ref.reason)
