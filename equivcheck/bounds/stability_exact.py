"""The exact stages of the stability analysis: units the cheap bounds left open are proved stable
or given witnesses (internal to :mod:`equivcheck.bounds.stability`).

* first hidden layer: the exact max / min of an affine unit over a box is at a vertex, evaluated
  in rational (or integer) arithmetic;
* branch and bound (many inputs): over the phases of earlier unstable units, each node closed by
  an LP bound certified from its dual.

Each works on an :class:`~equivcheck.bounds.stability_state.AnalysisState` and only through it:
a proof clips the state's own bounds (:meth:`AnalysisState.proved_stable`).
"""

from __future__ import annotations

import math
import time
from fractions import Fraction

import numpy as np

from equivcheck.bounds.interval import LayerBounds, intersect
from equivcheck.bounds.lp import LinearRelaxation, LPSolver
from equivcheck.bounds.stability_report import Stage
from equivcheck.bounds.stability_state import AnalysisState
from equivcheck.bounds.symbolic import back_substitute, symbolic_layer
from equivcheck.core import matrix
from equivcheck.core.domain import Box
from equivcheck.core.exact import row_sums
from equivcheck.core.options import UnitStability

MAX_NODES_PER_QUESTION = 2000
QUESTION_SECONDS = 5.0
FIRST_LAYER_CHUNK = 32  # first-layer units decided exactly between two looks at the clock


def first_layer_exact(st: AnalysisState) -> None:
    """Layer 0 is affine in the input: its exact max / min over the box is at a vertex.

    Evaluated exactly: with float weights ``W = M 2^e`` (integers M) and the box's bounds over a
    common denominator, in Python integers; else in ``Fraction`` s. Units are done in chunks
    between which the deadline is checked (units left are simply not decided here)."""
    layer = st.net.layers[0]
    todo = [i for i, s in enumerate(st.status[0]) if s is UnitStability.UNDECIDED]
    if not todo or st.time_left() <= 0:
        return
    b = layer.affine.rational_bias()
    dyadic = layer.affine.dyadic_weight
    for start in range(0, len(todo), FIRST_LAYER_CHUNK):
        if st.time_left() <= 0:
            return
        rows = todo[start:start + FIRST_LAYER_CHUNK]
        if layer.affine.is_sparse:
            tops, bots = sparse_vertex_extremes(layer.affine, rows, st.box)
        elif dyadic is not None:
            tops, bots = vertex_extremes_dyadic(dyadic, rows, st.box)
        else:
            tops, bots = vertex_extremes(layer.affine.rational_weight(), rows, st.box)
        for i, top, bot in zip(rows, tops, bots):
            if top + b[i] <= 0:
                st.status[0][i], st.stage[0][i] = UnitStability.INACTIVE, Stage.EXACT
            elif bot + b[i] >= 0:
                st.status[0][i], st.stage[0][i] = UnitStability.ACTIVE, Stage.EXACT


def vertex_extremes(w: np.ndarray, rows: list[int], box: Box) -> tuple[list, list]:
    """Exact max and min of ``w[i] . x`` over the box for each row i (rational weights)."""
    tops, bots = [], []
    for i in rows:
        row = w[i]
        tops.append(sum((r * (hi if r > 0 else lo) for r, lo, hi in zip(row, box.lower, box.upper)
                         if r != 0), Fraction(0)))
        bots.append(sum((r * (lo if r > 0 else hi) for r, lo, hi in zip(row, box.lower, box.upper)
                         if r != 0), Fraction(0)))
    return tops, bots


def _box_integers(box: Box) -> tuple[np.ndarray, np.ndarray, int]:
    """``(lo, hi, den)``: the box's bounds as integer object vectors over their least common
    denominator ``den`` (``box.lower == lo / den`` exactly)."""
    den = math.lcm(*(q.denominator for q in box.lower + box.upper))
    lo = np.empty(box.dim, dtype=object)
    hi = np.empty(box.dim, dtype=object)
    lo[:] = [q.numerator * (den // q.denominator) for q in box.lower]
    hi[:] = [q.numerator * (den // q.denominator) for q in box.upper]
    return lo, hi, den


def vertex_extremes_dyadic(dyadic: tuple[np.ndarray, int], rows: list[int], box: Box
                           ) -> tuple[list, list]:
    """:func:`vertex_extremes` for float weights ``M 2^e``, in Python integers."""
    m, e = dyadic
    lo, hi, den = _box_integers(box)
    sub = m[rows]
    pos = np.where(sub > 0, sub, 0)
    neg = np.where(sub < 0, sub, 0)
    top = pos.dot(hi) + neg.dot(lo)
    bot = pos.dot(lo) + neg.dot(hi)
    scale = Fraction(2) ** e / den
    return [int(t) * scale for t in top], [int(v) * scale for v in bot]


def sparse_vertex_extremes(affine, rows: list[int], box: Box) -> tuple[list, list]:
    """:func:`vertex_extremes` of a sparse weight's rows, over their stored entries only (in
    Python integers for float weights ``M 2^e``, else in ``Fraction`` s)."""
    w = affine.weight
    dyadic = affine.dyadic_weight
    if dyadic is not None:
        m, e = dyadic
        lo, hi, den = _box_integers(box)
        scale = Fraction(2) ** e / den
    else:
        m, scale = affine.rational_weight(), Fraction(1)
        lo = np.empty(box.dim, dtype=object)
        hi = np.empty(box.dim, dtype=object)
        lo[:], hi[:] = list(box.lower), list(box.upper)
    rows = np.asarray(rows, dtype=np.int64)
    starts, stops = w.indptr[rows], w.indptr[rows + 1]
    idx = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops)]) if len(rows) else []
    idx = np.asarray(idx, dtype=np.int64)
    vals, cols = m[idx], w.indices[idx]
    pos = np.array([v > 0 for v in vals], dtype=bool)
    top = np.where(pos, vals * hi[cols], vals * lo[cols])  # entries 0 add 0 either way
    bot = np.where(pos, vals * lo[cols], vals * hi[cols])
    ptr = np.concatenate([[0], np.cumsum(stops - starts)])
    return ([Fraction(t) * scale for t in row_sums(top, ptr)],
            [Fraction(v) * scale for v in row_sums(bot, ptr)])


def branch_and_bound(st: AnalysisState, k: int, i: int, sign: int) -> None:
    """Decide whether ``sign * z_{k,i} > 0`` somewhere in the box.

    Depth-first over the phases of earlier unstable units. A node is closed when the LP bound of
    ``sign * z`` (certified from its dual) is ``<= 0``; if every node closes the unit is proved
    stable (INACTIVE for sign +1, ACTIVE for -1). LP points are tried as exact witnesses. Gives
    up (the unit stays undecided) after ``MAX_NODES_PER_QUESTION`` nodes or ``QUESTION_SECONDS``.
    """
    net = st.net
    layer = net.layers[k]
    bounds = st.bounds
    stack: list[dict] = [{}]
    nodes = 0
    stop = time.monotonic() + QUESTION_SECONDS
    while stack:
        if st.time_left() <= 0 or nodes >= MAX_NODES_PER_QUESTION or time.monotonic() > stop:
            return
        phase = stack.pop()
        nodes += 1
        nb = phase_bounds(net, bounds, phase, k, st.lo, st.hi)
        if nb is None:
            continue  # the rigorous bounds show no input of the box has these phases
        unit = np.zeros((1, layer.out_dim))
        unit[0, i] = sign
        top_sym = back_substitute(net, k, unit, nb, st.lo, st.hi)[0][0]
        if top_sym <= 0.0:
            continue
        relax = LinearRelaxation.build(net, k, nb, st.lo, st.hi, phase)
        solver = LPSolver(relax)
        cost = np.zeros(relax.a.shape[1])
        w_i = matrix.rows_of(layer.weight, [i])[0]
        cost[relax.out_cols] = -sign * w_i  # minimise -sign*(w.h): max of sign*z
        got, v = solver.minimize(cost, st.deadline)
        if got is not None:
            hmax = np.maximum(np.abs(relax.col_lo[relax.out_cols]), np.abs(relax.col_hi[relax.out_cols]))
            extra = 4.0 * 2.0**-53 * (np.abs(w_i) @ hmax + abs(layer.bias[i]) + abs(got)) + 1e-300
            if not layer.affine.is_exact_float:
                extra *= 2.0
            top = -got + sign * float(layer.bias[i]) + extra  # rigorous max of sign * z
            if top <= 0.0:
                continue
        if v is None:
            return  # LP failed: leave undecided
        x = v[: relax.n_inputs]
        st.try_witnesses(x[None, :], Stage.EXACT)
        if st.status[k][i] is not UnitStability.UNDECIDED:
            return
        have = st.w_pos[k][i] if sign > 0 else st.w_neg[k][i]
        if have is not None:
            return
        # branch on the unstable unit whose relaxation gap at the LP point, weighted by how much
        # the unit can move the objective (|w| propagated back through |W|), is largest
        best, best_viol = None, 0.0
        influence = np.abs(w_i)
        for j in range(k - 1, -1, -1):
            if net.layers[j].relu:
                lj, uj = nb[j].lower, nb[j].upper
                zc = relax.z_cols[j]
                hc = zc + net.layers[j].out_dim
                viol = (v[hc] - np.maximum(v[zc], 0.0)) * influence
                for u in np.flatnonzero((lj < 0) & (uj > 0)):
                    if (j, int(u)) in phase:
                        continue
                    score = viol[u] + 1e-12 * min(-lj[u], uj[u])
                    if score > best_viol:
                        best, best_viol = (j, int(u)), score
            influence = matrix.left_multiply(influence, matrix.absolute(net.layers[j].weight))
        if best is None:
            return  # nothing left to split: the point did not check exactly; leave undecided
        for ph in (-1, 1):
            child = dict(phase)
            child[best] = ph
            stack.append(child)
    st.proved_stable(k, i, sign)


def phase_bounds(net, bounds, phase, k, lo, hi) -> list[LayerBounds] | None:
    """Rigorous bounds of layers < k over the inputs of the box whose units have ``phase``.

    Fixing a phase clips that unit's bounds at 0; later layers are then recomputed with the
    symbolic bounds. None when some unit's bounds become empty (no such input exists). A new
    list: ``bounds`` is not changed.
    """
    out = list(bounds)
    first = min((j for j, _ in phase), default=k)
    for j in range(first, k):
        b = out[j]
        if j > first:
            b = intersect(b, symbolic_layer(net, j, out, lo, hi))
        fixed = [(u, ph) for (jj, u), ph in phase.items() if jj == j]
        if fixed:
            lower, upper = b.lower.copy(), b.upper.copy()
            for u, ph in fixed:
                if ph > 0:
                    lower[u] = max(lower[u], 0.0)
                else:
                    upper[u] = min(upper[u], 0.0)
            b = LayerBounds(lower, upper)
        if np.any(b.lower > b.upper):
            return None
        out[j] = b
    return out
