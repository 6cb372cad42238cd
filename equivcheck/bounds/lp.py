"""Linear programs: the project's one HiGHS wrapper, the triangle LP relaxation of a network and
LP bounds certified from the dual solution.

**The wrapper** (:class:`HighsLP`) is what every LP in equivcheck goes through (the bounds here,
the stability analysis, the region counter)::

    lp = HighsLP()                                # quiet, one thread; HiGHS options by name
    lp.load(a, row_lo, row_hi, col_lo, col_hi)    # row_lo <= a @ x <= row_hi, col_lo <= x <= col_hi
    lp.set_cost(c)                                # minimise c . x (may change between solves)
    sol = lp.solve(deadline)                      # an LPSolution: status, x, row_dual, objective

``a`` may be a dense array or a scipy sparse matrix; infinite sides mean "no bound". A later
:meth:`HighsLP.load` replaces the model. HiGHS' own answers are floats: a bound that a proof relies
on must be certified, as :meth:`LinearRelaxation.certified_min` does from the duals.

**Certified LP bounds.** The relaxation's constraints are valid inequalities for the exact network
(see :class:`LinearRelaxation`). For *any* row multipliers y, every feasible v satisfies
(Neumaier & Shcherbina 2004)::

    c.v = y.(A v) + (c - A^T y).v >= sum_r y_r side_r + sum_i min(d_i l_i, d_i u_i)

with side_r the row's lower (y_r > 0) or upper (y_r < 0) bound and d = c - A^T y. We compute d
and the sums in float64 and subtract gamma(N) times their magnitudes, so the bound holds for the
exact LP whatever HiGHS returned; HiGHS only has to give good multipliers.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from equivcheck.bounds.interval import (
    TINY,
    UNIT_ROUNDOFF,
    LayerBounds,
    gamma,
    intersect,
    interval_step,
)
from equivcheck.bounds.symbolic import symbolic_layer
from equivcheck.core import matrix
from equivcheck.core.deadline import Deadline
from equivcheck.core.network import Network

MIN_TIME_LIMIT = 0.01  # seconds: HiGHS gets at least this, even when the deadline has passed

_HIGHS_STARTED = False


def _new_highs():
    """A ``highspy.Highs``. The first one in a process prints a banner on file descriptor 1,
    which would corrupt ``--json`` output, so stdout points at /dev/null while it is created."""
    import os
    import sys

    import highspy

    global _HIGHS_STARTED
    if _HIGHS_STARTED:
        return highspy.Highs()
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no file descriptor 1: nothing to protect
        saved = None
    if saved is None:
        h = highspy.Highs()
    else:
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


class LPStatus(enum.Enum):
    """How HiGHS ended one solve."""

    OPTIMAL = "optimal"
    INFEASIBLE = "infeasible"
    UNBOUNDED = "unbounded"  # or infeasible: HiGHS could not tell which
    TIME_LIMIT = "time limit"
    OTHER = "other"


@dataclass(frozen=True, eq=False)
class LPSolution:
    """What one :meth:`HighsLP.solve` gave: floats from HiGHS, not certified.

    ``x`` (column values) is None when HiGHS has no primal point; ``row_dual`` (one multiplier
    per row) is None unless the LP was solved to optimality or HiGHS reports valid duals anyway
    (any multipliers give a valid certified bound, see :meth:`LinearRelaxation.certified_min`);
    ``objective`` is HiGHS' objective value (meaningful when OPTIMAL).
    """

    status: LPStatus
    x: np.ndarray | None
    row_dual: np.ndarray | None
    objective: float

    @property
    def optimal(self) -> bool:
        return self.status is LPStatus.OPTIMAL


class HighsLP:
    """One quiet HiGHS model ``min cost . x`` s.t. ``row_lo <= A x <= row_hi``,
    ``col_lo <= x <= col_hi`` (see the module docstring for the calling pattern).

    ``options`` are HiGHS options by name (e.g. ``primal_feasibility_tolerance=1e-10``), set
    once; output is always off. Every model runs on one thread: HiGHS' thread pool is global to
    the process and fixed by the first model that runs, so a model asking for another count
    later fails to solve (a regions count followed by a stability analysis left units undecided).
    """

    def __init__(self, **options: object) -> None:
        import highspy

        self._hs = highspy
        self.highs = _new_highs()
        self.highs.setOptionValue("output_flag", False)
        self.highs.setOptionValue("threads", 1)
        for name, value in options.items():
            self.highs.setOptionValue(name, value)
        self.num_col = 0
        self.num_row = 0
        self._loaded = False

    def load(self, a, row_lo: np.ndarray, row_hi: np.ndarray, col_lo: np.ndarray,
             col_hi: np.ndarray, cost: np.ndarray | None = None) -> None:
        """Replace the model. ``a``: dense (rows x cols) array or scipy sparse matrix; ``+-inf``
        sides are free; ``cost`` defaults to zero."""
        from scipy import sparse

        hs = self._hs
        m = sparse.csc_matrix(a) if not sparse.issparse(a) else a.tocsc()
        n_row, n_col = m.shape
        inf = hs.kHighsInf
        row_lo = np.asarray(row_lo, dtype=np.float64)
        row_hi = np.asarray(row_hi, dtype=np.float64)
        col_lo = np.asarray(col_lo, dtype=np.float64)
        col_hi = np.asarray(col_hi, dtype=np.float64)
        lp = hs.HighsLp()
        lp.num_col_ = n_col
        lp.num_row_ = n_row
        lp.col_cost_ = np.zeros(n_col) if cost is None else np.asarray(cost, dtype=np.float64)
        lp.col_lower_ = np.where(np.isfinite(col_lo), col_lo, -inf)
        lp.col_upper_ = np.where(np.isfinite(col_hi), col_hi, inf)
        lp.row_lower_ = np.where(np.isfinite(row_lo), row_lo, -inf)
        lp.row_upper_ = np.where(np.isfinite(row_hi), row_hi, inf)
        lp.a_matrix_.format_ = hs.MatrixFormat.kColwise
        lp.a_matrix_.start_ = m.indptr
        lp.a_matrix_.index_ = m.indices
        lp.a_matrix_.value_ = m.data
        lp.a_matrix_.num_col_ = n_col
        lp.a_matrix_.num_row_ = n_row
        if self._loaded:
            self.highs.clearModel()
        self.highs.passModel(lp)
        self._loaded = True
        self.num_col, self.num_row = n_col, n_row

    def set_cost(self, cost: np.ndarray) -> None:
        """The objective ``min cost . x`` of the next solves (the model is kept)."""
        self.highs.changeColsCost(self.num_col, np.arange(self.num_col, dtype=np.int32),
                                  np.asarray(cost, dtype=np.float64))

    def solve(self, deadline: Deadline | None = None) -> LPSolution:
        """Run HiGHS with its time limit set to what is left of ``deadline`` (at least
        ``MIN_TIME_LIMIT``; no limit without a deadline)."""
        hs, h = self._hs, self.highs
        limit = hs.kHighsInf if deadline is None else max(deadline.remaining(), MIN_TIME_LIMIT)
        h.setOptionValue("time_limit", float(limit))
        h.run()
        status = _STATUS.get(h.getModelStatus().name, LPStatus.OTHER)
        sol = h.getSolution()
        x = np.asarray(sol.col_value, dtype=np.float64) if sol.value_valid else None
        dual_ok = status is LPStatus.OPTIMAL or sol.dual_valid
        y = np.asarray(sol.row_dual, dtype=np.float64) if dual_ok else None
        return LPSolution(status, x, y, float(h.getInfo().objective_function_value))


_STATUS = {
    "kOptimal": LPStatus.OPTIMAL,
    "kInfeasible": LPStatus.INFEASIBLE,
    "kUnbounded": LPStatus.UNBOUNDED,
    "kUnboundedOrInfeasible": LPStatus.UNBOUNDED,
    "kTimeLimit": LPStatus.TIME_LIMIT,
}


# ---------------------------------------------------------------------------------------------
# The triangle relaxation of a network and its certified LP bounds


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
    def build(net: Network, k: int, bounds: Sequence[LayerBounds], lo: np.ndarray, hi: np.ndarray,
              phase: dict[tuple[int, int], int] | None = None) -> LinearRelaxation:
        """The relaxation of layers ``< k`` from their sound ``bounds`` over ``[lo, hi]``."""
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
            if matrix.is_sparse(w):  # the stored entries (explicit zeros are harmless)
                nz = (np.repeat(np.arange(n), np.diff(w.indptr)), w.indices)
                w_nz = w.data
            else:
                nz = np.nonzero(w)
                w_nz = w[nz]
            r_idx = nrow + np.arange(n)
            rows += [r_idx, nrow + nz[0]]
            cols += [zc, prev[nz[1]]]
            vals += [np.ones(n), -w_nz]
            if layer.affine.is_exact_float:
                delta = np.zeros(n)
            else:
                delta = 4.0 * UNIT_ROUNDOFF * (matrix.apply(matrix.absolute(w), prev_max)
                                               + np.abs(layer.bias)) + TINY
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


class LPSolver:
    """One HiGHS model of a :class:`LinearRelaxation`; only the objective changes between LPs."""

    def __init__(self, relax: LinearRelaxation) -> None:
        self.relax = relax
        self.lp = HighsLP()
        self.lp.load(relax.a, relax.row_lo, relax.row_hi, relax.col_lo, relax.col_hi)

    def minimize(self, cost: np.ndarray, deadline: Deadline | None = None
                 ) -> tuple[float | None, np.ndarray | None]:
        """(certified lower bound or None, HiGHS' primal point or None) of ``min cost . v``,
        with HiGHS stopped at ``deadline`` (see :meth:`HighsLP.solve`)."""
        self.lp.set_cost(cost)
        sol = self.lp.solve(deadline)
        if sol.row_dual is None:
            return None, None
        return self.relax.certified_min(cost, sol.row_dual), sol.x


def lp_tighten_layer(net: Network, k: int, bounds: Sequence[LayerBounds], lo, hi,
                     units=None, deadline: Deadline | None = None,
                     points: list[np.ndarray] | None = None) -> LayerBounds:
    """LP-tightened rigorous bounds of layer ``k`` (only ``units``; default the unstable ones).

    Each LP bound is certified from HiGHS' dual solution (see :meth:`certified_min`). Input parts
    of the LP solutions are appended to ``points`` (useful witness candidates). Every LP gets
    HiGHS' time limit set to what is left of ``deadline``; once it has passed, the units not yet
    tightened keep their bounds. ``bounds`` is not changed.
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
            if deadline is not None and deadline.remaining() <= 0:
                return LayerBounds(lower, upper)
            if sign > 0 and upper[i] <= 0.0 or sign < 0 and lower[i] >= 0.0:
                continue
            w = matrix.rows_of(layer.weight, [i])[0]
            cost = np.zeros(relax.a.shape[1])
            cost[relax.out_cols] = sign * w  # minimise sign * (w.h)
            got, x = solver.minimize(cost, deadline)
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
        b = interval_step(net, k, bounds, lo, hi)
        if k > 0 and not (deadline is not None and deadline.expired()):
            b = intersect(b, symbolic_layer(net, k, bounds, lo, hi, deadline))
        bounds.append(b)
        if k > 0 and net.layers[k].relu:
            bounds[k] = intersect(b, lp_tighten_layer(net, k, bounds, lo, hi, deadline=deadline))
    return bounds
