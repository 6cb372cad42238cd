"""Rigorous bounds: every method encloses exact (rational) pre-activations; tighter methods are
tighter; LP bounds certified from duals are valid and close to the LP optimum."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from equivcheck.bounds.interval import interval_bounds
from equivcheck.bounds.lp import HighsLP, LinearRelaxation, LPSolver, LPStatus
from equivcheck.bounds.methods import BOUND_METHODS, bounds_pair, sound_bounds
from equivcheck.bounds.stability import analyze_stability
from equivcheck.bounds.symbolic import back_substitute, symbolic_bounds
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import box_domain
from equivcheck.core.exact import pre_activations_exact
from equivcheck.core.network import Affine, Layer, Network
from equivcheck.core.options import BoundMethod, UnitStability
from equivcheck.core.rational import fraction_array, nearest_float_array
from equivcheck.errors import InputError


def random_net(rng, widths, exact_fraction_layer=False) -> Network:
    layers = []
    for k in range(len(widths) - 1):
        w = rng.normal(0, 1 / np.sqrt(widths[k]), (widths[k + 1], widths[k])).astype(np.float32)
        b = rng.normal(0, 0.3, widths[k + 1]).astype(np.float32)
        aff = Affine(w.astype(np.float64), b.astype(np.float64))
        if exact_fraction_layer and k == 1:
            # weights that are not floats: w/3 exactly
            wq = fraction_array(w) / 3
            bq = fraction_array(b) / 3
            aff = Affine(nearest_float_array(wq), nearest_float_array(bq), wq, bq)
        layers.append(Layer(aff, relu=k < len(widths) - 2))
    return Network(tuple(layers))


def corner_and_random_points(rng, lo, hi, n):
    pts = lo + rng.random((n, len(lo))) * (hi - lo)
    corners = np.where(rng.random((n, len(lo))) < 0.5, lo, hi)
    return np.vstack([pts, corners])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("method", BOUND_METHODS)
def test_bounds_enclose_exact_values(seed, method):
    rng = np.random.default_rng(seed)
    net = random_net(rng, [4, 12, 12, 10, 3], exact_fraction_layer=seed % 2 == 1)
    lo, hi = -np.ones(4) * 0.7, np.ones(4) * 0.9
    bounds = sound_bounds(net, lo, hi, method)
    for x in corner_and_random_points(rng, lo, hi, 20):
        exact = pre_activations_exact(net.layers, [Fraction(float(v)) for v in x])
        for lb, z in zip(bounds, exact):
            for i, v in enumerate(z):
                assert Fraction(float(lb.lower[i])) <= v <= Fraction(float(lb.upper[i])), (method, i)


def test_bounds_are_tight_enough_and_ordered():
    rng = np.random.default_rng(7)
    net = random_net(rng, [6, 30, 30, 30, 4])
    lo, hi = -np.ones(6), np.ones(6)
    iv = interval_bounds(net, lo, hi)
    sy = symbolic_bounds(net, lo, hi)
    lp = sound_bounds(net, lo, hi, BoundMethod.LP)
    width = [np.sum(b[3].upper - b[3].lower) for b in (iv, sy, lp)]
    assert width[1] < 0.9 * width[0]  # back-substitution beats intervals on a deep net
    assert width[2] <= width[1] + 1e-9  # LP never looser than what it starts from
    # and none is absurdly loose: within a factor 10 of the sampled range
    pts = corner_and_random_points(rng, lo, hi, 4000)
    z = net.pre_activations(pts)[3]
    sampled = np.sum(z.max(axis=0) - z.min(axis=0))
    assert width[2] < 10 * sampled


def test_first_layer_symbolic_equals_exact_box_extremes():
    rng = np.random.default_rng(3)
    net = random_net(rng, [5, 7, 2])
    lo, hi = np.zeros(5), np.ones(5)
    ub, nu = back_substitute(net, 0, np.eye(7), [], lo, hi)
    w, b = net.layers[0].weight, net.layers[0].bias
    exact_max = np.maximum(w, 0).sum(axis=1) + b
    assert np.all(ub >= exact_max)
    assert np.all(ub - exact_max < 1e-12)
    assert np.array_equal(nu, w)


def test_lp_bound_certified_from_dual_is_close_to_optimum_and_valid():
    rng = np.random.default_rng(11)
    net = random_net(rng, [5, 20, 20, 2])
    lo, hi = -np.ones(5), np.ones(5)
    b = symbolic_bounds(net, lo, hi)
    relax = LinearRelaxation.build(net, 2, b, lo, hi)
    solver = LPSolver(relax)
    for i in range(2):
        cost = np.zeros(relax.a.shape[1])
        cost[relax.out_cols] = net.layers[2].weight[i]
        got, v = solver.minimize(cost)
        opt = solver.lp.highs.getInfo().objective_function_value
        assert got <= opt + 1e-12
        assert opt - got < 1e-6 * (1 + abs(opt))
        # any multipliers give a valid bound: zero multipliers give the box bound, which is lower
        assert relax.certified_min(cost, np.zeros(relax.a.shape[0])) <= got + 1e-9
        # the bound holds at real network points
        pts = corner_and_random_points(rng, lo, hi, 500)
        vals = net.pre_activations(pts)[2][:, i] - net.layers[2].bias[i]
        assert vals.min() >= got - 1e-9


def test_garbage_duals_still_give_valid_bounds():
    rng = np.random.default_rng(5)
    net = random_net(rng, [3, 8, 2])
    lo, hi = -np.ones(3), np.ones(3)
    relax = LinearRelaxation.build(net, 1, symbolic_bounds(net, lo, hi), lo, hi)
    cost = np.zeros(relax.a.shape[1])
    cost[relax.out_cols] = net.layers[1].weight[0]
    pts = corner_and_random_points(rng, lo, hi, 2000)
    true_min = (net.pre_activations(pts)[1][:, 0] - net.layers[1].bias[0]).min()
    for _ in range(20):
        y = rng.normal(0, 3, relax.a.shape[0])
        assert relax.certified_min(cost, y) <= true_min + 1e-12


def assert_encloses(net, bounds, lo, hi, rng, n=20):
    """Every bound encloses the exact pre-activations at random points and corners of the box."""
    for x in corner_and_random_points(rng, lo, hi, n):
        exact = pre_activations_exact(net.layers, [Fraction(float(v)) for v in x])
        for lb, z in zip(bounds, exact):
            for i, v in enumerate(z):
                assert Fraction(float(lb.lower[i])) <= v <= Fraction(float(lb.upper[i]))


def test_known_bounds_are_used_sound_and_not_remembered():
    # the stability analysis proves a unit stable that even the LP bounds leave unstable; EXACT
    # on a box of its own is the LP bounds, intersected with the known bounds when given: the
    # unit is then stable, the result within both enclosures and around the exact values; a
    # later call without them must not see them (no hidden cache)
    rng = np.random.default_rng(0)
    net = random_net(rng, [2, 8, 8, 2])
    lo, hi = -np.ones(2), np.ones(2)
    report = analyze_stability(net, box_domain(lo, hi), timeout=30)
    known = report.clip(report.bounds)
    lp = sound_bounds(net, lo, hi, BoundMethod.LP)
    proved = [(r.layer, i) for r in report.layers for i, s in enumerate(r.status)
              if s.stable and lp[r.layer].unstable[i]]
    assert proved, "the test needs a unit the LP bounds leave unstable and the analysis proves"
    got = sound_bounds(net, lo, hi, BoundMethod.EXACT, known=known)
    for a, b, c in zip(got, known, lp):
        assert np.all(a.lower >= b.lower) and np.all(a.upper <= b.upper)
        assert np.all(a.lower >= c.lower) and np.all(a.upper <= c.upper)
    for k, i in proved:
        assert not got[k].unstable[i]
    assert_encloses(net, got, lo, hi, rng)
    again = sound_bounds(net, lo, hi, BoundMethod.EXACT)  # no known bounds: the LP bounds
    for a, b in zip(again, lp):
        assert np.array_equal(a.lower, b.lower) and np.array_equal(a.upper, b.upper)
    for k, i in proved:
        assert again[k].unstable[i]


def test_bounds_pair_exact_runs_the_analysis_unless_the_bounds_are_known():
    rng = np.random.default_rng(0)
    net = random_net(rng, [2, 8, 8, 2])  # unit (1, 4): LP says unstable, the analysis proves it
    lo, hi = -np.ones(2), np.ones(2)
    report = analyze_stability(net, box_domain(lo, hi), timeout=30)
    known = report.clip(report.bounds)
    assert sound_bounds(net, lo, hi, BoundMethod.LP)[1].unstable[4]
    ba, bb = bounds_pair(net, net, lo, hi, "exact", Deadline.start(30), known_a=known)
    for x, y in zip(ba, known):  # a: known bounds, no analysis
        assert np.all(x.lower >= y.lower) and np.all(x.upper <= y.upper)
    # b: its own analysis ran and proved the same verdicts
    assert [lb.unit_stability() for lb in bb[:-1]] == [
        tuple(UnitStability.UNSTABLE if s is UnitStability.UNDECIDED else s for s in r.status)
        for r in report.layers]
    assert not ba[1].unstable[4] and not bb[1].unstable[4]
    assert_encloses(net, ba, lo, hi, rng)
    assert_encloses(net, bb, lo, hi, rng)


def test_known_bounds_of_another_shape_are_refused():
    rng = np.random.default_rng(0)
    net = random_net(rng, [2, 3, 1])
    other = symbolic_bounds(random_net(rng, [2, 4, 1]), np.zeros(2), np.ones(2))
    with pytest.raises(InputError, match="known bounds"):
        sound_bounds(net, np.zeros(2), np.ones(2), BoundMethod.EXACT, known=other)


def test_method_names_and_members_give_the_same_bounds():
    rng = np.random.default_rng(4)
    net = random_net(rng, [3, 8, 8, 2])
    lo, hi = -np.ones(3), np.ones(3)
    for method in BoundMethod:
        x = sound_bounds(net, lo, hi, method)
        y = sound_bounds(net, lo, hi, method.value)
        for p, q in zip(x, y):
            assert np.array_equal(p.lower, q.lower) and np.array_equal(p.upper, q.upper)


def test_unit_stability_names_match_the_codes():
    from equivcheck.bounds.interval import LayerBounds

    lb = LayerBounds(np.array([-1.0, 0.0, 0.5, -2.0, 0.0]), np.array([1.0, 0.0, 2.0, -1.0, 3.0]))
    assert lb.unit_stability() == (UnitStability.UNSTABLE, UnitStability.INACTIVE,
                                   UnitStability.ACTIVE, UnitStability.INACTIVE,
                                   UnitStability.ACTIVE)
    assert [lb.count(s) for s in UnitStability] == [2, 2, 1, 0]
    assert list(lb.active) == [False, False, True, False, True]
    assert list(lb.inactive) == [False, True, False, True, False]
    assert list(lb.unstable) == [True, False, False, False, False]


def test_highs_wrapper_solves_a_small_lp_with_duals_and_a_deadline():
    # min -x - y  s.t.  x + 2y <= 4,  3x + y <= 6,  0 <= x, y <= 10: optimum at (8/5, 6/5)
    lp = HighsLP(threads=1)
    lp.load(np.array([[1.0, 2.0], [3.0, 1.0]]), np.full(2, -np.inf), np.array([4.0, 6.0]),
            np.zeros(2), np.full(2, 10.0), cost=np.array([-1.0, -1.0]))
    sol = lp.solve(Deadline.start(10))
    assert sol.status is LPStatus.OPTIMAL and sol.optimal
    assert np.allclose(sol.x, [1.6, 1.2]) and abs(sol.objective + 2.8) < 1e-9
    assert np.allclose(sol.row_dual, [-0.4, -0.2])  # y with c - A^T y = 0 at the optimum
    lp.set_cost(np.array([1.0, 1.0]))  # same model, new objective
    assert np.allclose(lp.solve().x, [0.0, 0.0])
    lp.load(np.array([[1.0, 1.0]]), np.array([30.0]), np.array([np.inf]), np.zeros(2),
            np.full(2, 10.0))  # x + y >= 30 with x, y <= 10: infeasible
    assert lp.solve().status is LPStatus.INFEASIBLE


def test_unknown_method_is_rejected():
    net = random_net(np.random.default_rng(0), [2, 3, 1])
    with pytest.raises(InputError, match="unknown bound method"):
        sound_bounds(net, np.zeros(2), np.ones(2), "magic")
    with pytest.raises(InputError, match="unknown bound method"):
        bounds_pair(net, net, np.zeros(2), np.ones(2), "magic", Deadline.start(5))
