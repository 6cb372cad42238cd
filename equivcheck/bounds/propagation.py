"""Sound bounds on every pre-activation over a box, and the stability of every ReLU.

All bounds here are *rigorous*: they enclose the exact (real-arithmetic) pre-activation values
of the stored weights over the exact box, although they are computed in float64. Every float
computation is followed by an explicit rounding-error allowance (Higham's gamma_n bound on dot
products, doubled), and box bounds are rounded outward. The proof relies on this: a unit classified
stable here is encoded without a disjunction.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from equivcheck.core.deadline import Deadline
from equivcheck.core.network import Network

UNIT_ROUNDOFF = 2.0**-53
TINY = np.finfo(np.float64).tiny


class Stability(enum.IntEnum):
    INACTIVE = -1  # pre-activation <= 0 on the whole domain: the ReLU outputs 0
    UNSTABLE = 0
    ACTIVE = 1  # pre-activation >= 0 on the whole domain: the ReLU is the identity


@dataclass(frozen=True, eq=False)
class LayerBounds:
    """Sound lower/upper bounds of one layer's pre-activations."""

    lower: np.ndarray
    upper: np.ndarray

    def stability(self) -> np.ndarray:
        """Per unit: ``Stability`` as ints (-1 inactive, 0 unstable, 1 active)."""
        out = np.zeros(len(self.lower), dtype=np.int8)
        out[self.lower >= 0.0] = Stability.ACTIVE
        out[self.upper <= 0.0] = Stability.INACTIVE  # a unit that is exactly 0 is called inactive
        return out


def gamma(n: int) -> float:
    """Higham's gamma_n = n u / (1 - n u): relative error bound of an n-term float dot product."""
    nu = n * UNIT_ROUNDOFF
    return nu / (1.0 - nu)


def affine_interval(weight: np.ndarray, bias: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                    exact_weights: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Sound enclosure of ``W h + b`` for ``h`` in the box ``[lo, hi]`` (float64 arrays).

    ``exact_weights`` False means ``weight``/``bias`` are nearest floats of exact rationals;
    the allowance then covers that extra half-ulp as well.
    """
    wp = np.maximum(weight, 0.0)
    wn = np.minimum(weight, 0.0)
    lower = wp @ lo + wn @ hi + bias
    upper = wp @ hi + wn @ lo + bias
    mag = np.abs(weight) @ np.maximum(np.abs(lo), np.abs(hi)) + np.abs(bias)
    n = weight.shape[1] + (3 if exact_weights else 5)
    allowance = 2.0 * gamma(n) * mag + TINY
    return lower - allowance, upper + allowance


def interval_bounds(net: Network, lo: np.ndarray, hi: np.ndarray) -> list[LayerBounds]:
    """Interval bounds of every layer's pre-activation for inputs in ``[lo, hi]``.

    ``lo``/``hi`` must already enclose the exact box (see :meth:`Box.lower_float`).
    """
    out: list[LayerBounds] = []
    h_lo, h_hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    for layer in net.layers:
        z_lo, z_hi = affine_interval(
            layer.weight, layer.bias, h_lo, h_hi, exact_weights=layer.affine.is_exact_float
        )
        out.append(LayerBounds(z_lo, z_hi))
        if layer.relu:
            h_lo, h_hi = np.maximum(z_lo, 0.0), np.maximum(z_hi, 0.0)
        else:
            h_lo, h_hi = z_lo, z_hi
    return out


# ---------------------------------------------------------------------------------------------
# Symbolic (CROWN / DeepPoly style) bounds with an explicit rounding allowance
#
# The back-substitution below computes, for a matrix C of rows c, an upper bound of c . z_k over
# the box. It is a chain of inequalities that hold for *any* float coefficients we choose:
#   c.z_k = (cW_k).h_{k-1} + c.b_k                       (an identity in exact arithmetic)
#   nu_i relu(z_i) <= rho_i z_i + r_i  for z_i in [l_i, u_i]  (r_i is the exact max of the
#                                      piecewise-linear left minus right side, taken at l, u, 0)
#   nu.x <= sum max(nu_i lo_i, nu_i hi_i)                (over the input box)
# Computing cW_k, rho W_j, the r_i and the sums in float64 makes errors; each is at most
# gamma(N) times a magnitude (|c||W_k| . max|h_{k-1}| for a product, and so on) that we add up in
# ``mag``. The bound returned is ``value + 3 gamma(N) mag``: rigorous for every float result.


def _allowance_factor(net: Network) -> float:
    n = max(max(layer.in_dim, layer.out_dim) for layer in net.layers) + 10 * len(net.layers) + 20
    return 3.0 * gamma(n)


def _post_max(bounds: list[LayerBounds], net: Network, j: int, xmax: np.ndarray) -> np.ndarray:
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


def back_substitute(net: Network, k: int, c: np.ndarray, bounds: list[LayerBounds],
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


def _interval_step(net: Network, k: int, bounds: list[LayerBounds], lo, hi) -> LayerBounds:
    if k == 0:
        h_lo, h_hi = lo, hi
    else:
        prev = bounds[k - 1]
        relu = net.layers[k - 1].relu
        h_lo = np.maximum(prev.lower, 0.0) if relu else prev.lower
        h_hi = np.maximum(prev.upper, 0.0) if relu else prev.upper
    layer = net.layers[k]
    z_lo, z_hi = affine_interval(layer.weight, layer.bias, h_lo, h_hi, layer.affine.is_exact_float)
    return LayerBounds(z_lo, z_hi)


def intersect(a: LayerBounds, b: LayerBounds) -> LayerBounds:
    """The intersection of two sound enclosures (also sound)."""
    return LayerBounds(np.maximum(a.lower, b.lower), np.minimum(a.upper, b.upper))


def symbolic_layer(net: Network, k: int, bounds: list[LayerBounds], lo, hi) -> LayerBounds:
    """Back-substitution bounds of layer ``k`` from sound bounds of the earlier layers."""
    n = net.layers[k].out_dim
    eye = np.eye(n)
    ub, _ = back_substitute(net, k, np.vstack([eye, -eye]), bounds, lo, hi)
    return LayerBounds(-ub[n:], ub[:n])


def symbolic_bounds(net: Network, lo: np.ndarray, hi: np.ndarray, upto: int | None = None,
                    base: list[LayerBounds] | None = None,
                    deadline: Deadline | None = None) -> list[LayerBounds]:
    """CROWN-style bounds of every layer (or of layers ``0..upto``), intersected with interval
    bounds (rigorous). ``base``: sound bounds already known for a superset of the box (e.g. the
    whole domain); each layer is intersected with them before the next layer uses it. Once
    ``deadline`` has passed, the remaining layers get interval bounds only (still rigorous)."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    bounds: list[LayerBounds] = []
    last = len(net.layers) if upto is None else min(upto + 1, len(net.layers))
    for k in range(last):
        b = _interval_step(net, k, bounds, lo, hi)
        if base is not None:
            b = intersect(b, base[k])
        if k > 0 and not (deadline is not None and deadline.expired()):
            b = intersect(b, symbolic_layer(net, k, bounds, lo, hi))
        bounds.append(b)
    return bounds


# ---------------------------------------------------------------------------------------------
# LP bounds (triangle relaxation solved by HiGHS) certified from the dual solution
#
# The LP's constraints are valid inequalities for the exact network (see LinearRelaxation). For
# *any* row multipliers y, every feasible v satisfies (Neumaier & Shcherbina 2004)
#   c.v = y.(A v) + (c - A^T y).v >= sum_r y_r side_r + sum_i min(d_i l_i, d_i u_i)
# with side_r the row's lower (y_r > 0) or upper (y_r < 0) bound and d = c - A^T y. We compute d
# and the sums in float64 and subtract gamma(N) times their magnitudes, so the bound holds for
# the exact LP whatever HiGHS returned; HiGHS only has to give good multipliers.


@dataclass(frozen=True, eq=False)
class LinearRelaxation:
    """The triangle LP relaxation of layers ``0..k-1`` of a network over a box.

    Columns: the inputs, then per layer ``z_j`` and (for ReLU layers) ``h_j``. Rows: the affine
    maps (``z_j - W_j h_{j-1}`` within ``b_j`` +/- a rounding allowance when the float weights are
    not exact), ``h = z`` for stably active units, ``h >= z`` and ``h <= s (z - l)`` for unstable
    units (``s >= u / (u - l)`` checked in float with a margin, the constant rounded up).
    ``phase`` may fix the phase of some units (+1 active, -1 inactive) for branch and bound.
    """

    a: object  # scipy.sparse.csr_matrix
    row_lo: np.ndarray
    row_hi: np.ndarray
    col_lo: np.ndarray
    col_hi: np.ndarray
    out_cols: np.ndarray  # columns of h_{k-1} (the input of layer k)
    z_cols: tuple[np.ndarray, ...]  # columns of z_j, j < k
    n_inputs: int

    @staticmethod
    def build(net: Network, k: int, bounds: list[LayerBounds], lo: np.ndarray, hi: np.ndarray,
              phase: dict[tuple[int, int], int] | None = None) -> LinearRelaxation:
        from scipy import sparse

        phase = phase or {}
        rows, cols, vals = [], [], []
        rlo: list[np.ndarray] = []
        rhi: list[np.ndarray] = []
        clo = [np.asarray(lo, dtype=np.float64)]
        chi = [np.asarray(hi, dtype=np.float64)]
        ncol = len(lo)
        nrow = 0
        prev = np.arange(len(lo))
        prev_max = np.maximum(np.abs(lo), np.abs(hi))
        z_cols = []
        for j in range(k):
            layer = net.layers[j]
            n = layer.out_dim
            lj, uj = bounds[j].lower.copy(), bounds[j].upper.copy()
            for (lay, i), ph in phase.items():
                if lay == j:
                    if ph > 0:
                        lj[i] = max(lj[i], 0.0)
                    else:
                        uj[i] = min(uj[i], 0.0)
            zc = ncol + np.arange(n)
            ncol += n
            clo.append(lj)
            chi.append(uj)
            z_cols.append(zc)
            # z - W h_prev in [b - delta, b + delta]
            w = layer.weight
            nz = np.nonzero(w)
            r_idx = nrow + np.arange(n)
            rows += [r_idx, nrow + nz[0]]
            cols += [zc, prev[nz[1]]]
            vals += [np.ones(n), -w[nz]]
            if layer.affine.is_exact_float:
                delta = np.zeros(n)
            else:
                delta = 4.0 * UNIT_ROUNDOFF * (np.abs(w) @ prev_max + np.abs(layer.bias)) + TINY
            rlo.append(layer.bias - delta)
            rhi.append(layer.bias + delta)
            nrow += n
            if not layer.relu:
                prev = zc
                prev_max = np.maximum(np.abs(lj), np.abs(uj))
                continue
            hc = ncol + np.arange(n)
            ncol += n
            act = lj >= 0.0
            inact = uj <= 0.0
            unst = ~(act | inact)
            clo.append(np.where(act, lj, 0.0))
            chi.append(np.where(inact, 0.0, np.maximum(uj, 0.0)))
            ia = np.flatnonzero(act)
            if len(ia):  # h - z = 0
                r = nrow + np.arange(len(ia))
                rows += [r, r]
                cols += [hc[ia], zc[ia]]
                vals += [np.ones(len(ia)), -np.ones(len(ia))]
                rlo.append(np.zeros(len(ia)))
                rhi.append(np.zeros(len(ia)))
                nrow += len(ia)
            iu = np.flatnonzero(unst)
            if len(iu):
                r = nrow + np.arange(len(iu))  # h - z >= 0
                rows += [r, r]
                cols += [hc[iu], zc[iu]]
                vals += [np.ones(len(iu)), -np.ones(len(iu))]
                rlo.append(np.zeros(len(iu)))
                rhi.append(np.full(len(iu), np.inf))
                nrow += len(iu)
                s = (uj[iu] / (uj[iu] - lj[iu])) * (1.0 + 2.0**-48)
                const = np.nextafter(-s * lj[iu], np.inf)  # rounded up: h <= s z - s l
                r = nrow + np.arange(len(iu))
                rows += [r, r]
                cols += [hc[iu], zc[iu]]
                vals += [np.ones(len(iu)), -s]
                rlo.append(np.full(len(iu), -np.inf))
                rhi.append(const)
                nrow += len(iu)
            prev = hc
            prev_max = np.maximum(uj, 0.0)
        a = sparse.csr_matrix(
            (np.concatenate(vals) if vals else np.zeros(0),
             (np.concatenate(rows) if rows else np.zeros(0, int),
              np.concatenate(cols) if cols else np.zeros(0, int))),
            shape=(nrow, ncol),
        )
        return LinearRelaxation(
            a, np.concatenate(rlo) if rlo else np.zeros(0), np.concatenate(rhi) if rhi else np.zeros(0),
            np.concatenate(clo), np.concatenate(chi), prev, tuple(z_cols), len(lo),
        )

    def certified_min(self, cost: np.ndarray, row_dual: np.ndarray) -> float:
        """A rigorous lower bound of ``min cost . v`` over the LP, from any row multipliers."""
        y = np.where(np.isfinite(row_dual), row_dual, 0.0)
        y = np.where((y > 0.0) & ~np.isfinite(self.row_lo), 0.0, y)
        y = np.where((y < 0.0) & ~np.isfinite(self.row_hi), 0.0, y)
        side = np.where(y > 0.0, self.row_lo, np.where(y < 0.0, self.row_hi, 0.0))
        side = np.where(np.isfinite(side), side, 0.0)
        s1 = float(y @ side)
        at = self.a.T.tocsr()
        d = cost - at @ y
        s2 = float(np.minimum(d * self.col_lo, d * self.col_hi).sum())
        vmax = np.maximum(np.abs(self.col_lo), np.abs(self.col_hi))
        dmag = np.abs(cost) + abs(at) @ np.abs(y)
        mag = float(np.abs(y) @ np.abs(side)) + float(dmag @ vmax) + float(np.abs(d) @ vmax)
        n = self.a.shape[0] + self.a.shape[1] + 20
        return s1 + s2 - 3.0 * gamma(n) * mag - 4.0 * (self.a.nnz + n) * TINY


_HIGHS_STARTED = False


def _new_highs():
    """A silent ``highspy.Highs``. The first one prints a banner on file descriptor 1, which
    would corrupt ``--json`` output, so stdout is pointed at /dev/null while it is created."""
    import os
    import sys

    import highspy

    global _HIGHS_STARTED
    if _HIGHS_STARTED:
        return highspy.Highs()
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
    _HIGHS_STARTED = True
    return h


class LPSolver:
    """One HiGHS model of a :class:`LinearRelaxation`; only the objective changes between LPs."""

    def __init__(self, relax: LinearRelaxation, integer_cols: np.ndarray | None = None) -> None:
        import highspy

        self.relax = relax
        h = _new_highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("threads", 1)
        lp = highspy.HighsLp()
        a = relax.a.tocsc()
        lp.num_col_ = a.shape[1]
        lp.num_row_ = a.shape[0]
        lp.col_cost_ = np.zeros(a.shape[1])
        lp.col_lower_ = relax.col_lo
        lp.col_upper_ = relax.col_hi
        inf = highspy.kHighsInf
        lp.row_lower_ = np.where(np.isfinite(relax.row_lo), relax.row_lo, -inf)
        lp.row_upper_ = np.where(np.isfinite(relax.row_hi), relax.row_hi, inf)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = a.indptr
        lp.a_matrix_.index_ = a.indices
        lp.a_matrix_.value_ = a.data
        lp.a_matrix_.num_col_ = a.shape[1]
        lp.a_matrix_.num_row_ = a.shape[0]
        h.passModel(lp)
        self.h = h
        self.highspy = highspy
        self.ncol = a.shape[1]

    def minimize(self, cost: np.ndarray, time_limit: float = 1e9) -> tuple[float | None, np.ndarray | None]:
        """(certified lower bound or None, primal point or None) of ``min cost . v``."""
        h = self.h
        h.setOptionValue("time_limit", max(float(time_limit), 0.01))
        h.changeColsCost(self.ncol, np.arange(self.ncol, dtype=np.int32), np.asarray(cost, dtype=np.float64))
        h.run()
        status = h.getModelStatus()
        if status != self.highspy.HighsModelStatus.kOptimal:
            sol = h.getSolution()
            if not sol.dual_valid:
                return None, None
        sol = h.getSolution()
        y = np.asarray(sol.row_dual, dtype=np.float64)
        bound = self.relax.certified_min(cost, y)
        x = np.asarray(sol.col_value, dtype=np.float64) if sol.value_valid else None
        return bound, x


def lp_tighten_layer(net: Network, k: int, bounds: list[LayerBounds], lo, hi,
                     units=None, deadline: Deadline | None = None,
                     points: list[np.ndarray] | None = None) -> LayerBounds:
    """LP-tightened rigorous bounds of layer ``k`` (only ``units``; default the unstable ones).

    Each LP bound is certified from HiGHS' dual solution (see :meth:`certified_min`). Input parts
    of the LP solutions are appended to ``points`` (useful witness candidates). Every LP gets
    HiGHS' time limit set to what is left of ``deadline``; once it has passed, the units not yet
    tightened keep their bounds.
    """
    cur = bounds[k]
    lower, upper = cur.lower.copy(), cur.upper.copy()
    if units is None:
        units = np.flatnonzero((lower < 0.0) & (upper > 0.0))
    if k == 0 or len(units) == 0 or (deadline is not None and deadline.expired()):
        return cur
    relax = LinearRelaxation.build(net, k, bounds, lo, hi)
    solver = LPSolver(relax)
    layer = net.layers[k]
    exact = layer.affine.is_exact_float
    hmax = np.maximum(np.abs(relax.col_lo[relax.out_cols]), np.abs(relax.col_hi[relax.out_cols]))
    for i in units:
        for sign in (1.0, -1.0):
            remaining = None if deadline is None else deadline.remaining()
            if remaining is not None and remaining <= 0:
                return LayerBounds(lower, upper)
            if sign > 0 and upper[i] <= 0.0 or sign < 0 and lower[i] >= 0.0:
                continue
            w = layer.weight[i]
            cost = np.zeros(relax.a.shape[1])
            cost[relax.out_cols] = sign * w  # minimise sign * (w.h)
            got, x = solver.minimize(cost, remaining if remaining is not None else 1e9)
            if x is not None and points is not None:
                points.append(x[: relax.n_inputs].copy())
            if got is None:
                continue
            extra = 0.0 if exact else 4.0 * UNIT_ROUNDOFF * (np.abs(w) @ hmax + abs(layer.bias[i]))
            b = float(layer.bias[i])
            mag = abs(got) + abs(b)
            slack = 4.0 * UNIT_ROUNDOFF * mag + extra + TINY
            if sign > 0:
                lower[i] = max(lower[i], got + b - slack)
            else:
                upper[i] = min(upper[i], -got + b + slack)
    return LayerBounds(lower, upper)


def lp_bounds(net: Network, lo: np.ndarray, hi: np.ndarray,
              deadline: Deadline | None = None) -> list[LayerBounds]:
    """Symbolic bounds, then LP tightening of every unstable ReLU unit, layer by layer.

    The result encloses the exact values: each LP bound is certified from the dual solution.
    Later layers are recomputed (interval and symbolic) from the tightened earlier layers. Once
    ``deadline`` has passed no more LPs are solved and the remaining layers get interval bounds
    (everything stays rigorous, only looser).
    """
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    bounds: list[LayerBounds] = []
    for k in range(len(net.layers)):
        b = _interval_step(net, k, bounds, lo, hi)
        if k > 0 and not (deadline is not None and deadline.expired()):
            b = intersect(b, symbolic_layer(net, k, bounds, lo, hi))
        bounds.append(b)
        if k > 0 and net.layers[k].relu:
            bounds[k] = intersect(b, lp_tighten_layer(net, k, bounds, lo, hi, deadline=deadline))
    return bounds


BOUND_METHODS = ("interval", "symbolic", "lp", "exact")


_PROVED_BOUNDS: dict[bytes, list[LayerBounds]] = {}
# sound_bounds(..., "exact") on a box nobody proved bounds for: a short stability analysis
EXACT_METHOD_SECONDS = 0.0  # 0: fall back to the LP bounds (the prover may split boxes)
_PROVED_BOUNDS_MAX = 64


def _bounds_key(net: Network, lo: np.ndarray, hi: np.ndarray) -> bytes:
    import hashlib

    h = hashlib.sha256()
    for layer in net.layers:
        h.update(b"R" if layer.relu else b"L")
        h.update(np.ascontiguousarray(layer.weight).tobytes())
        h.update(np.ascontiguousarray(layer.bias).tobytes())
        if not layer.affine.is_exact_float:
            h.update(repr(list(layer.affine.rational_weight().ravel())).encode())
            h.update(repr(list(layer.affine.rational_bias().ravel())).encode())
    h.update(np.asarray(lo, dtype=np.float64).tobytes())
    h.update(np.asarray(hi, dtype=np.float64).tobytes())
    return h.digest()


def remember_bounds(net: Network, lo: np.ndarray, hi: np.ndarray, bounds: list[LayerBounds]) -> None:
    """Record bounds already *proved* for ``net`` over ``[lo, hi]`` (e.g. by the stability
    analysis of :mod:`equivcheck.compress.pipeline`), so that ``sound_bounds(..., "exact")`` reuses them.

    Soundness contract: the caller promises every bound is a rigorous enclosure. The key is a
    digest of the weights (exact ones included) and of the box, so other networks never match.
    """
    if len(_PROVED_BOUNDS) >= _PROVED_BOUNDS_MAX:
        _PROVED_BOUNDS.pop(next(iter(_PROVED_BOUNDS)))
    _PROVED_BOUNDS[_bounds_key(net, lo, hi)] = [LayerBounds(b.lower.copy(), b.upper.copy()) for b in bounds]


def exact_stability_bounds(net: Network, lo: np.ndarray, hi: np.ndarray,
                           timeout: float | Deadline = 60.0,
                           deadline: Deadline | None = None) -> list[LayerBounds]:
    """Symbolic bounds clipped at 0 wherever the exact stability analysis proved a unit stable.

    Every clip rests on a rigorous proof (see :mod:`equivcheck.bounds.stability`), so the result is
    still an enclosure; units the analysis left undecided keep their symbolic bounds. Bounds
    recorded with :func:`remember_bounds` for this network and box are reused (intersected).
    ``timeout`` (seconds, or a :class:`Deadline`) bounds the analysis, ``deadline`` everything
    (the analysis included); with no time for an analysis the result is the "lp" bounds.
    """
    from fractions import Fraction

    analysis = Deadline.of(timeout, "the stability analysis' timeout", allow_zero=True)
    if deadline is not None:
        analysis = deadline.sub(seconds=analysis.remaining())
    known = _PROVED_BOUNDS.get(_bounds_key(net, lo, hi))
    if known is not None:
        return [intersect(a, b) for a, b in zip(symbolic_bounds(net, lo, hi, deadline=deadline), known)]
    if analysis.expired():
        return lp_bounds(net, lo, hi, deadline)

    from equivcheck.bounds.stability import analyze_stability
    from equivcheck.core.domain import Box, Domain

    box = Box(tuple(Fraction(float(v)) for v in lo), tuple(Fraction(float(v)) for v in hi))
    report = analyze_stability(net, Domain((box,), "<bounds>"), timeout=analysis)
    base = report.bounds if report.bounds is not None else symbolic_bounds(net, lo, hi, deadline=deadline)
    bounds = report.clip(list(base))
    remember_bounds(net, lo, hi, bounds)
    return bounds


def sound_bounds(net: Network, lo: np.ndarray, hi: np.ndarray, method: str = "interval",
                 deadline: Deadline | None = None) -> list[LayerBounds]:
    """Rigorous pre-activation bounds of every layer over the float box ``[lo, hi]``.

    ``method`` names how hard to work: "interval" (cheapest), "symbolic" (CROWN-style
    back-substitution, intersected with intervals), "lp" (symbolic, then every unstable unit
    tightened by an LP whose bound is certified from its dual), "exact" (the bounds an exact
    stability analysis proved for this network and box, as registered by :func:`remember_bounds`
    — ``compress`` does so before its proof — intersected with symbolic bounds; for a network
    and box nobody registered, the "lp" bounds, or a stability analysis of
    ``EXACT_METHOD_SECONDS`` when that is positive). Every method returns bounds that enclose the
    exact values, so the prover may rely on them. ``deadline`` stops the costly methods early:
    past it they finish with cheaper (still rigorous) bounds.
    """
    if method == "interval":
        return interval_bounds(net, lo, hi)
    if method == "symbolic":
        return symbolic_bounds(net, lo, hi, deadline=deadline)
    if method == "lp":
        return lp_bounds(net, lo, hi, deadline)
    if method == "exact":
        return exact_stability_bounds(net, lo, hi, EXACT_METHOD_SECONDS, deadline)
    raise ValueError(f"unknown bound method {method!r} (one of {', '.join(BOUND_METHODS)})")


# what share of the time left each network's bounds may take, per method (the rest is for the
# falsifier and the solver); cheap methods need no share
BOUND_SHARE = {"lp": 1 / 3, "exact": 1 / 6}


def bounds_pair(a: Network, b: Network, lo: np.ndarray, hi: np.ndarray, method: str,
                deadline: Deadline) -> tuple[list[LayerBounds], list[LayerBounds]]:
    """:func:`sound_bounds` of both networks over the same box; for the costly methods each
    network gets ``BOUND_SHARE[method]`` of the time then left. "exact" runs a real stability
    analysis on this box (the prover uses it for the whole box, not for its parts)."""
    share = BOUND_SHARE.get(method)
    out = []
    for net in (a, b):
        if method == "exact":
            out.append(exact_stability_bounds(net, lo, hi, deadline.sub(share), deadline))
        elif method == "lp":
            out.append(lp_bounds(net, lo, hi, deadline.sub(share)))
        else:
            out.append(sound_bounds(net, lo, hi, method, deadline))
    return out[0], out[1]
