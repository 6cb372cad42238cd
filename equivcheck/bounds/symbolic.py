"""Symbolic (CROWN / DeepPoly style) bounds with an explicit rounding allowance.

The back-substitution below computes, for a matrix C of rows c, an upper bound of c . z_k over
the box. It is a chain of inequalities that hold for *any* float coefficients we choose::

  c.z_k = (cW_k).h_{k-1} + c.b_k                            (an identity in exact arithmetic)
  nu_i relu(z_i) <= rho_i z_i + r_i  for z_i in [l_i, u_i]  (r_i is the exact max of the
                                     piecewise-linear left minus right side, taken at l, u, 0)
  nu.x <= sum max(nu_i lo_i, nu_i hi_i)                     (over the input box)

Computing cW_k, rho W_j, the r_i and the sums in float64 makes errors; each is at most gamma(N)
times a magnitude (|c||W_k| . max|h_{k-1}| for a product, and so on) that we add up in ``mag``.
The bound returned is ``value + 3 gamma(N) mag``: rigorous for every float result.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from equivcheck.bounds.interval import TINY, LayerBounds, gamma, intersect, interval_step
from equivcheck.core.deadline import Deadline
from equivcheck.core.network import Network


def _allowance_factor(net: Network) -> float:
    n = max(max(layer.in_dim, layer.out_dim) for layer in net.layers) + 10 * len(net.layers) + 20
    return 3.0 * gamma(n)


def _post_max(bounds: Sequence[LayerBounds], net: Network, j: int, xmax: np.ndarray) -> np.ndarray:
    """Upper bound of |h_j| (the output of layer j; j = -1 is the input)."""
    if j < 0:
        return xmax
    lb = bounds[j]
    if net.layers[j].relu:
        return np.maximum(lb.upper, 0.0)
    return np.maximum(np.abs(lb.lower), np.abs(lb.upper))


def relu_relaxation(nu: np.ndarray, lower: np.ndarray, upper: np.ndarray):
    """Coefficients rho and constants r with nu_i relu(z) <= rho_i z + r_i on [l_i, u_i].

    rho is CROWN's adaptive choice (any choice would be valid); r is the maximum of the
    difference over the interval, attained at l, u or 0. Returns (rho, r_sum, magnitude).
    """
    act = lower >= 0.0
    inact = upper <= 0.0
    unst = ~(act | inact)
    den = np.where(unst, upper - lower, 1.0)
    s = np.where(unst, upper / den, 0.0) * (1.0 + 2.0**-48)
    alpha = (upper > -lower).astype(np.float64)
    rho = np.where(act, nu, np.where(inact, 0.0, np.where(nu > 0.0, nu * s, nu * alpha)))
    r = None
    for z in (lower, upper, np.clip(0.0, lower, upper)):
        cand = nu * np.maximum(z, 0.0) - rho * z
        r = cand if r is None else np.maximum(r, cand)
    zmax = np.maximum(np.abs(lower), np.abs(upper))
    mag = (np.abs(nu) + np.abs(rho)) @ zmax
    return rho, r.sum(axis=1), mag


def back_substitute(net: Network, k: int, c: np.ndarray, bounds: Sequence[LayerBounds],
                    lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ub, nu): rigorous upper bounds of ``c @ z_k`` (one per row of ``c``) over ``[lo, hi]``.

    ``bounds`` must be rigorous bounds of layers ``< k``. ``nu`` are the input coefficients of
    the linear upper bound (``argmax`` vertex ``where(nu > 0, hi, lo)`` is a good point to try).
    """
    xmax = np.maximum(np.abs(lo), np.abs(hi))
    layer = net.layers[k]
    c = np.atleast_2d(np.asarray(c, dtype=np.float64))
    val = c @ layer.bias
    mag = np.abs(c) @ np.abs(layer.bias)
    nu = c @ layer.weight
    mag += (np.abs(c) @ np.abs(layer.weight)) @ _post_max(bounds, net, k - 1, xmax)
    ops = layer.weight.size
    for j in range(k - 1, -1, -1):
        lj = net.layers[j]
        if lj.relu:
            rho, rsum, rmag = relu_relaxation(nu, bounds[j].lower, bounds[j].upper)
            val += rsum
            mag += rmag
        else:
            rho = nu
        val += rho @ lj.bias
        mag += np.abs(rho) @ np.abs(lj.bias)
        nu = rho @ lj.weight
        mag += (np.abs(rho) @ np.abs(lj.weight)) @ _post_max(bounds, net, j - 1, xmax)
        ops += lj.weight.size + 4 * lj.out_dim
    val += np.maximum(nu * lo, nu * hi).sum(axis=1)
    mag += np.abs(nu) @ xmax
    ub = val + _allowance_factor(net) * mag + 4.0 * (ops + len(lo)) * TINY
    return ub, nu


def symbolic_layer(net: Network, k: int, bounds: Sequence[LayerBounds], lo, hi) -> LayerBounds:
    """Back-substitution bounds of layer ``k`` from sound bounds of the earlier layers."""
    n = net.layers[k].out_dim
    eye = np.eye(n)
    ub, _ = back_substitute(net, k, np.vstack([eye, -eye]), bounds, lo, hi)
    return LayerBounds(-ub[n:], ub[:n])


def symbolic_bounds(net: Network, lo: np.ndarray, hi: np.ndarray, upto: int | None = None,
                    base: Sequence[LayerBounds] | None = None,
                    deadline: Deadline | None = None) -> list[LayerBounds]:
    """CROWN-style bounds of every layer (or of layers ``0..upto``), intersected with interval
    bounds (rigorous). ``base``: sound bounds already known for a superset of the box (e.g. the
    whole domain); each layer is intersected with them before the next layer uses it. Once
    ``deadline`` has passed, the remaining layers get interval bounds only (still rigorous)."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    bounds: list[LayerBounds] = []
    last = len(net.layers) if upto is None else min(upto + 1, len(net.layers))
    for k in range(last):
        b = interval_step(net, k, bounds, lo, hi)
        if base is not None:
            b = intersect(b, base[k])
        if k > 0 and not (deadline is not None and deadline.expired()):
            b = intersect(b, symbolic_layer(net, k, bounds, lo, hi))
        bounds.append(b)
    return bounds
