"""Rigorous bounds: every method encloses exact (rational) pre-activations; tighter methods are
tighter; LP bounds certified from duals are valid and close to the LP optimum."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from equivcheck.bounds.propagation import (
    BOUND_METHODS,
    LinearRelaxation,
    LPSolver,
    back_substitute,
    interval_bounds,
    remember_bounds,
    sound_bounds,
    symbolic_bounds,
)
from equivcheck.bounds.stability import exact_preactivations
from equivcheck.core.network import Affine, Layer, Network, fraction_array, nearest_float_array


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
        exact = exact_preactivations(net, [Fraction(float(v)) for v in x])
        for lb, z in zip(bounds, exact):
            for i, v in enumerate(z):
                assert Fraction(float(lb.lower[i])) <= v <= Fraction(float(lb.upper[i])), (method, i)


def test_bounds_are_tight_enough_and_ordered():
    rng = np.random.default_rng(7)
    net = random_net(rng, [6, 30, 30, 30, 4])
    lo, hi = -np.ones(6), np.ones(6)
    iv = interval_bounds(net, lo, hi)
    sy = symbolic_bounds(net, lo, hi)
    lp = sound_bounds(net, lo, hi, "lp")
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
        opt = solver.h.getInfo().objective_function_value
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


def test_exact_method_reuses_remembered_bounds_and_stays_sound():
    rng = np.random.default_rng(2)
    net = random_net(rng, [3, 6, 2])
    lo, hi = -np.ones(3), np.ones(3)
    base = symbolic_bounds(net, lo, hi)
    remember_bounds(net, lo, hi, base)
    got = sound_bounds(net, lo, hi, "exact")
    for a, b in zip(got, base):
        assert np.all(a.lower >= b.lower) and np.all(a.upper <= b.upper)


def test_unknown_method_is_rejected():
    net = random_net(np.random.default_rng(0), [2, 3, 1])
    with pytest.raises(ValueError, match="unknown bound method"):
        sound_bounds(net, np.zeros(2), np.ones(2), "magic")
