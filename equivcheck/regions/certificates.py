"""The exact checks behind the region count: every decision the float LP suggests is confirmed
here in integer (or rational) arithmetic before the counter acts on it.

A partial activation pattern is a list of :class:`Row` s, strict inequalities
``sign * (a . x + c) > 0`` over the free (non-degenerate) coordinates of a box. An
:class:`OpenBox` holds the box exactly and answers

* :meth:`OpenBox.strictly_inside` and :meth:`OpenBox.satisfies`: a witness point lies strictly
  inside the box and strictly on the side of every row (exact);
* :meth:`OpenBox.excludes`: one row alone is impossible on the whole box (exact, no LP);
* :meth:`OpenBox.certified_empty`: an exact Farkas certificate, built from the LP's duals, that
  no point of the open box satisfies all the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from equivcheck.core.domain import Box
from equivcheck.core.exact import common_scale, nullspace, scaled_integers

# A point of the search: (floats, ints, k) with the point exactly ints / k.
Point = tuple[np.ndarray, np.ndarray, int]


@dataclass(frozen=True, eq=False)
class Row:
    """A decided unit: ``sign * (a . X + c * K) > 0`` exactly, for a point X/K (den > 0)."""

    sign: int
    a: np.ndarray  # object ints (d,)
    c: int
    den: int
    af: np.ndarray  # float a/den * sign
    cf: float  # float c/den * sign
    norm: float


def row_sign(a: np.ndarray, c: int, xs: np.ndarray, k: int) -> int:
    """The sign of ``a . (xs / k) + c`` (exact integers: ``a . xs + c k``)."""
    v = (a.dot(xs) if len(xs) else 0) + c * k
    return (v > 0) - (v < 0)


def float_point(x: np.ndarray) -> Point:
    """A search point for a float vector: ``(floats, ints, k)`` with the point ``ints / k``."""
    xs, k = scaled_integers(x)
    return (x, xs, k)


def exact_point(q: list[Fraction]) -> Point:
    """A search point for an exact rational vector (its floats are only approximations)."""
    xs, k = scaled_integers(q)
    return (np.array([float(v) for v in q], dtype=np.float64), xs, k)


@dataclass(frozen=True, eq=False)
class OpenBox:
    """The free coordinates of a box, exactly (``lo_q``/``hi_q``), as integers over ``k``
    (``lo_int``/``hi_int``) and as floats (``lo``/``hi``, for the LP only)."""

    box: Box
    free: tuple[int, ...]
    fixed: tuple[int, ...]
    lo_q: tuple[Fraction, ...]
    hi_q: tuple[Fraction, ...]
    k: int
    lo_int: np.ndarray
    hi_int: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def of(cls, box: Box) -> OpenBox:
        free = tuple(i for i in range(box.dim) if box.lower[i] < box.upper[i])
        fixed = tuple(i for i in range(box.dim) if box.lower[i] == box.upper[i])
        lo_q = tuple(box.lower[i] for i in free)
        hi_q = tuple(box.upper[i] for i in free)
        (lo_int, hi_int), k = common_scale(lo_q, hi_q)
        return cls(
            box, free, fixed, lo_q, hi_q, k, lo_int, hi_int,
            np.array([float(v) for v in lo_q]), np.array([float(v) for v in hi_q]),
        )

    def strictly_inside(self, x: np.ndarray) -> bool:
        """Every free coordinate of the float point ``x`` lies strictly between the faces."""
        return all(lo < Fraction(float(v)) < hi for v, lo, hi in zip(x, self.lo_q, self.hi_q))

    def satisfies(self, rows, x: np.ndarray) -> bool:
        """The float point ``x`` is strictly on the side of every row (exact)."""
        xs, k = scaled_integers(x)
        return all(row_sign(r.a, r.c, xs, k) == r.sign for r in rows)

    def excludes(self, a: np.ndarray, c: int, sign: int) -> bool:
        """Exact: ``sign * (a . x + c) <= 0`` on the whole box, so no point of a region inside
        the box is strictly on the ``sign`` side. Costs no LP."""
        if not len(a):
            return sign * c <= 0
        positive = np.array([v > 0 for v in a], dtype=bool)
        if sign > 0:
            corner = np.where(positive, self.hi_int, self.lo_int)
        else:
            corner = np.where(positive, self.lo_int, self.hi_int)
        return sign * (a.dot(corner) + c * self.k) <= 0

    def certified_empty(self, rows: list[Row], y: np.ndarray) -> bool:
        """Exact Farkas check of the LP duals ``y``: some multipliers ``q >= 0``, not all 0, with
        ``sum_r q_r g_r(x) <= 0`` on the whole box prove that no point of the open box satisfies
        every ``g_r(x) > 0``. The float duals are tried as they are (as exact rationals), then
        rounded to nearby simple fractions, which repairs the exact certificates of degenerate
        cases (an optimum of exactly 0) that float duals miss by a rounding error."""
        y = np.maximum(np.nan_to_num(y, nan=0.0, posinf=0.0), 0.0)
        if not np.any(y > 0):
            return False
        y = y / float(np.max(y))
        y = np.where(y > 1e-12, y, 0.0)
        if self._farkas_holds(rows, [Fraction(float(v)) for v in y]):
            return True
        for den in (10**6, 10**4, 1000, 100, 12, 4, 1):
            q = [Fraction(float(v)).limit_denominator(den) for v in y]
            if any(q) and self._farkas_holds(rows, q):
                return True
        return self._nullspace_certificate(rows, y)

    def _nullspace_certificate(self, rows: list[Row], y: np.ndarray) -> bool:
        """Exact multipliers for a degenerate optimum (the LP's best slack is exactly 0, e.g. two
        coincident hyperplanes with opposite sides, as a dead unit ``w * z`` with ``w < 0`` gives):
        on the rows the float duals use, plus the box faces, find exactly ``q >= 0`` with
        ``sum_r q_r grad g_r = 0``; then ``sum_r q_r g_r`` is a constant, checked to be <= 0."""
        d = len(self.free)
        n = len(rows)
        support = [k for k in range(len(y)) if y[k] > 0]
        if not support or len(support) > d + 2:
            return False
        cols = []
        for k in support:
            if k < n:
                r = rows[k]
                cols.append([Fraction(int(v) * r.sign, r.den) for v in r.a])
            elif k < n + d:
                cols.append([Fraction(int(i == k - n)) for i in range(d)])
            else:
                cols.append([Fraction(-int(i == k - n - d)) for i in range(d)])
        for v in nullspace([[cols[j][i] for j in range(len(cols))] for i in range(d)], len(cols)):
            if all(x <= 0 for x in v):
                v = [-x for x in v]
            if any(x < 0 for x in v) or not any(v):
                continue
            q = [Fraction(0)] * len(y)
            for k, x in zip(support, v):
                q[k] = x
            if self._farkas_holds(rows, q):
                return True
        return False

    def _farkas_holds(self, rows: list[Row], y: list[Fraction]) -> bool:
        d = len(self.free)
        coef = [Fraction(0)] * d
        const = Fraction(0)
        for r, yr in zip(rows, y[: len(rows)]):
            if not yr:
                continue
            q = yr * r.sign / r.den
            for i in range(d):
                if r.a[i]:
                    coef[i] += q * r.a[i]
            const += q * r.c
        ylo = y[len(rows) : len(rows) + d]
        yhi = y[len(rows) + d :]
        for i in range(d):
            if ylo[i]:
                coef[i] += ylo[i]
                const -= ylo[i] * self.lo_q[i]
            if yhi[i]:
                coef[i] -= yhi[i]
                const += yhi[i] * self.hi_q[i]
        top = const + sum(c * (self.hi_q[i] if c > 0 else self.lo_q[i]) for i, c in enumerate(coef))
        return top <= 0

