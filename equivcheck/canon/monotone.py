"""Argmax mode: outputs passed through one strictly increasing piecewise-linear map, peeled off.

When every output of a network is ``y_i = psi(F_i)`` for one function ``psi`` that is strictly
increasing on the whole real line and affine expressions ``F_i``, then ``argmax(y) = argmax(F)``
(ties included: a strictly increasing map keeps every ``<`` and every ``=``), so in argmax mode
``F`` may stand for ``y``. :func:`peel` finds such a ``psi`` in a canonical form, exactly: each
output must read, besides a linear part, only units no other output reads, all of them of the
form ``relu(lam * D_i + k)`` for one direction ``D_i`` per output, and the maps of all outputs
must be the same ``psi`` after scaling each ``D_i`` by a positive factor, on the range each
``D_i`` takes on the box.
"""

from __future__ import annotations

from collections import Counter
from fractions import Fraction

from equivcheck.canon.table import ZERO, Lin, UnitTable

Phi = tuple[Fraction, Fraction, tuple[tuple[Fraction, Fraction], ...]]  # slope, value at 0, knots


def _ratio(p: Lin, d: Lin) -> Fraction | None:
    """``lam`` with ``p == lam * d`` term by term (constants ignored), else None."""
    if p.srcs != d.srcs:
        return None
    if not p.nums:
        return ZERO
    lam = p.coef(0) / d.coef(0)
    return lam if p.linear() == d.linear().scaled(lam) else None


def _one_output(y: Lin, local: list[int], table: UnitTable) -> tuple[Lin, Phi] | None:
    """``(D, phi)`` with ``y == phi(D)`` (``phi`` as slope left of all knots, value at 0 and
    knots ``(tau, c)`` meaning ``c relu(t - tau)``), or None. The map's units are the local
    units of one direction ``D``; the other local units must be part of ``D`` itself."""
    n = table.n_inputs
    tried: set = set()
    for s0 in local:
        d = table.defs[s0 - n].linear()
        if d in tried:
            continue
        tried.add(d)
        group = [(s, lam) for s in local
                 if (lam := _ratio(table.defs[s - n].linear(), d)) is not None]
        got = _with_units(y, d, group, table)
        if got is not None:
            return d, got
    return None


def _with_units(y: Lin, d: Lin, group, table: UnitTable) -> Phi | None:
    """``phi`` with ``y == phi(D)``, the units of ``group`` (``(unit, lam)``: its expression is
    ``lam D + k``) the map's knots, or None."""
    n = table.n_inputs
    coefs = dict(y.terms)
    slope, value = ZERO, y.const
    knots: Counter[Fraction] = Counter()
    for s, lam in group:
        k = table.defs[s - n].const
        c = coefs.pop(s)  # c relu(lam t + k); with lam < 0: relu(-v) = relu(v) - v
        tau = -k / lam
        if lam > 0:
            cc = c * lam
        else:
            cc = -c * lam
            slope += c * lam  # - c * v = c * (lam t + k)
            value += c * k
        knots[tau] += cc
        value += cc * max(-tau, ZERO)  # c' relu(0 - tau)
    alpha = _ratio(Lin.of(coefs), d)
    if alpha is None:
        return None
    kept = tuple(sorted((t, c) for t, c in knots.items() if c != 0))
    return slope + alpha, value, kept


def _increasing(phi: Phi) -> bool:
    """True when ``phi`` is strictly increasing on the whole real line (every slope > 0)."""
    run, _, knots = phi
    if run <= 0:
        return False
    for _, c in knots:
        run += c
        if run <= 0:
            return False
    return True


def _at(phi: Phi, t: Fraction) -> Fraction:
    slope, value, knots = phi
    return slope * t + value + sum((c * (max(t - tau, ZERO) - max(-tau, ZERO)) for tau, c in knots),
                                   ZERO)


def _slope_right_of(phi: Phi, t: Fraction) -> Fraction:
    slope, _, knots = phi
    return slope + sum((c for tau, c in knots if tau <= t), ZERO)


def _same_on(phi: Phi, psi: Phi, r: Fraction, e: Fraction, lo: Fraction, hi: Fraction) -> bool:
    """``phi(t) == psi(r t + e)`` for every ``t`` in ``[lo, hi]``: two piecewise-linear
    functions agree on an interval iff they agree at its ends and at every break point in it."""
    points = {lo, hi} | {t for t, _ in phi[2] if lo < t < hi} | {
        (t - e) / r for t, _ in psi[2] if lo < (t - e) / r < hi}
    return all(_at(phi, t) == _at(psi, r * t + e) for t in points)


def peel(outputs: tuple[Lin, ...], table: UnitTable) -> tuple[Lin, ...] | None:
    """The expressions ``F_i`` with ``y_i = psi(F_i)`` on the box for one piecewise-linear
    ``psi`` strictly increasing on the whole line (see the module docstring), or None when the
    outputs are not of that form, or ``psi`` would be affine (nothing to peel).

    ``psi`` is one output's own map; each other output's map must be ``psi(r t)`` for some
    ``r > 0`` on the exact range of its ``D_i`` over the box (units folded on the domain may have
    removed the knots an output never reaches)."""
    n = table.n_inputs
    uses = Counter(s for y in outputs for s in y.srcs if s >= n)
    found = []
    for y in outputs:
        local = [s for s in y.srcs if s >= n and uses[s] == 1]
        got = _one_output(y, local, table) if local else None
        found.append(got)
    ranges = [table.interval(got[0]) if got is not None else None for got in found]
    for got in found:
        if got is None or not got[1][2] or not _increasing(got[1]):
            continue
        out = _scaled_outputs(outputs, found, ranges, got[1], table)
        if out is not None:
            return out
    return None


def _pieces(psi: Phi) -> list[tuple[Fraction, Fraction]]:
    """``(slope, intercept)`` of each linear piece of ``psi``, left to right."""
    slope, _, knots = psi
    anchors = [knots[0][0]] + [t for t, _ in knots]  # a point on each piece (its ends count)
    out = []
    for k, u in enumerate(anchors):
        out.append((slope, _at(psi, u) - slope * u))
        if k < len(knots):
            slope += knots[k][1]
    return out


def _scaled_outputs(outputs, found, ranges, psi: Phi, table) -> tuple[Lin, ...] | None:
    """``F_i = r_i D_i + e_i`` (``r_i > 0``) with ``y_i = psi(F_i)`` on the range of ``D_i``,
    for every output (None if one fails); an output with no local unit is affine, ``D_i`` its
    non-constant part (one linear piece of ``psi``)."""
    out = []
    pieces = _pieces(psi)
    for y, got, rng in zip(outputs, found, ranges):
        if got is None:
            d = y.linear()
            if not d.terms:
                return None
            phi: Phi = (Fraction(1), y.const, ())
            rng = table.interval(d)
        else:
            d, phi = got
        lo, hi = rng
        s_lo, v_lo = _slope_right_of(phi, lo), _at(phi, lo)
        for sigma, beta in pieces:
            if sigma <= 0 or s_lo <= 0:
                continue
            r = s_lo / sigma
            e = (v_lo - beta) / sigma - r * lo  # psi(r lo + e) = phi(lo) on this piece
            if _same_on(phi, psi, r, e, lo, hi):
                out.append(d.scaled(r).with_const(e))
                break
        else:
            return None
    return tuple(out)
