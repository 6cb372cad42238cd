"""The shared table of canonical ReLU units: every unit of both networks, hash-consed.

A *source* is an input (ids ``0 .. n_inputs - 1``) or a canonical unit (ids from ``n_inputs``
on). An affine expression over sources is a :class:`Lin`: exact rational coefficients (no zero
ones) and a constant. A canonical unit is ``relu(m)`` for a *primitive* expression ``m``: integer
coefficients and constant whose greatest common divisor is 1 (:func:`primitive`); the table holds
each such ``m`` once, so two units of
either network whose pre-activations are equal up to a positive factor are the same unit.

:meth:`UnitTable.relu` turns ``relu(z)`` for any expression ``z`` into an exact expression over
canonical units by ``relu(a m) = a relu(m)`` for ``a > 0``: positively rescaled units, split units
(``relu(c1 z) + relu(c2 z)``) and duplicates become one unit. :meth:`UnitTable.cancel_twins`
rewrites an expression that reads ``relu(-p)``, when ``relu(p)`` is a unit too, by
``relu(-p) = relu(p) - p``, so pairs such as ``relu(z) - relu(-z)`` (which is ``z``) become linear. Stability facts proved on
the domain (``m >= 0`` or ``m <= 0`` everywhere) are kept per expression and folded the same way
for every origin (an always-active unit of more than ``FOLD_TERMS`` terms stays a unit, the
same way for every origin too).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from fractions import Fraction

ZERO = Fraction(0)
ONE = Fraction(1)


@dataclass(frozen=True)
class Lin:
    """``sum(c * source) + const`` with exact rational coefficients; ``terms`` holds no zero."""

    terms: tuple[tuple[int, Fraction], ...]  # sorted by source id
    const: Fraction = ZERO
    _hash: int | None = field(default=None, compare=False, repr=False)

    def __hash__(self) -> int:  # computed once, when first needed (hashing Fractions is slow)
        if self._hash is None:
            object.__setattr__(self, "_hash", hash((self.terms, self.const)))
        return self._hash

    @staticmethod
    def of(terms: dict[int, Fraction], const: Fraction = ZERO) -> Lin:
        """The expression of a dict of coefficients (zero ones dropped)."""
        return Lin(tuple(sorted((s, c) for s, c in terms.items() if c != 0)), Fraction(const))

    @staticmethod
    def source(s: int, coef: Fraction = ONE) -> Lin:
        return Lin(((s, Fraction(coef)),) if coef != 0 else ())

    @staticmethod
    def constant(c: Fraction) -> Lin:
        return Lin((), Fraction(c))

    def scaled(self, k: Fraction) -> Lin:
        """``k`` times this expression (exact)."""
        if k == 0:
            return Lin(())
        if k == 1:
            return self
        return Lin(tuple((s, c * k) for s, c in self.terms), self.const * k)

    def negated(self) -> Lin:
        return Lin(tuple((s, -c) for s, c in self.terms), -self.const)

    def minus(self, other: Lin) -> Lin:
        """``self - other`` (exact)."""
        acc = dict(self.terms)
        for s, c in other.terms:
            acc[s] = acc.get(s, ZERO) - c
        return Lin.of(acc, self.const - other.const)


NEAR = Fraction(1, 10**6)
FOLD_TERMS = 64  # always-active units with more terms stay units (folding them all in a wide,
# deep network makes every expression dense over all earlier layers: 256x6 MNIST took minutes)


def _near(lo: Fraction | None, hi: Fraction | None) -> bool:
    """True when an exact interval is worth computing: a bound is unknown, or the bounds
    straddle 0 by no more than ``NEAR`` times their larger magnitude on one side (bounds that
    show a sign, or straddle 0 clearly, settle it without one)."""
    if lo is None or hi is None:
        return True
    if hi <= 0 or lo >= 0:
        return False
    scale = max(-lo, hi)
    return -lo <= NEAR * scale or hi <= NEAR * scale


class Sign(enum.Enum):
    """What is proved about a canonical expression ``m`` on the domain."""

    NONNEGATIVE = "m >= 0"  # relu(m) = m
    NONPOSITIVE = "m <= 0"  # relu(m) = 0


@dataclass(frozen=True)
class Relu:
    """How :meth:`UnitTable.relu` rewrote one unit: its value, and which rewrites it took."""

    value: Lin
    kind: str  # "unit", "active", "dead", "constant"
    unit: int | None  # the canonical unit id (None when folded)
    scale: Fraction  # a > 0 with z = +-a m
    negated: bool  # z leads with a negative coefficient (its unit is relu(-p) for some p)


Key = tuple  # (source ids, primitive integer coefficients, integer constant)


def primitive(z: Lin) -> tuple[Key, Fraction]:
    """``(key, s)`` with ``z == s * m``, ``s > 0`` and ``m`` the primitive integer expression
    ``key`` (integer coefficients and constant with greatest common divisor 1): the one
    representative of ``z`` up to a positive factor, computed in integers."""
    terms = z.terms
    den = math.lcm(z.const.denominator, *(c.denominator for _, c in terms))
    ints = [c.numerator * (den // c.denominator) for _, c in terms]
    const = z.const.numerator * (den // z.const.denominator)
    g = math.gcd(const, *ints)
    return (tuple(s for s, _ in terms), tuple(i // g for i in ints), const // g), Fraction(g, den)


def key_lin(key: Key) -> Lin:
    """The expression of a key."""
    srcs, ints, const = key
    return Lin(tuple((s, Fraction(i)) for s, i in zip(srcs, ints)), Fraction(const))


def negated_key(key: Key) -> Key:
    srcs, ints, const = key
    return srcs, tuple(-i for i in ints), -const


class UnitTable:
    """Canonical units of one or more networks over one box (see the module docstring).

    ``lower``/``upper`` give exact input bounds (the box); each canonical expression keeps sound
    exact bounds (the tightest of those proved for it from any origin). Not thread-safe; built and
    read by one comparison.
    """

    def __init__(self, lower, upper) -> None:
        self.n_inputs = len(lower)
        self.input_lower = [Fraction(v) for v in lower]
        self.input_upper = [Fraction(v) for v in upper]
        self.ids: dict[Key, int] = {}
        self.defs: list[Lin] = []  # canonical expression of unit n_inputs + k
        self.unit_bounds: list[tuple[Fraction, Fraction]] = []  # exact bounds of each def
        self.twin: dict[int, int] = {}  # unit relu(-p) -> unit relu(p) (lead < 0 -> lead > 0)
        self.bounds: dict[Key, tuple[Fraction, Fraction]] = {}  # exact bounds of expressions
        self.signs: dict[Key, Sign] = {}
        self.work = 0  # coefficient operations done (the caller's budget)
        # a fact learnt after an expression that it changes was built (a sign of a key that is a
        # unit, a twin of a unit already read): the caller runs another pass
        self.stale = False

    # -- bounds
    def source_range(self, s: int) -> tuple[Fraction, Fraction]:
        """Exact bounds of a source's value on the box (a unit's output is ``relu(m)``)."""
        if s < self.n_inputs:
            return self.input_lower[s], self.input_upper[s]
        lo, hi = self.unit_bounds[s - self.n_inputs]
        return max(lo, ZERO), max(hi, ZERO)

    def interval(self, e: Lin) -> tuple[Fraction, Fraction]:
        """Exact bounds of ``e`` on the box by interval arithmetic over the sources' bounds
        (every source bound is sound, so the result encloses ``e``'s values)."""
        lo = hi = e.const
        rng = self.source_range
        for s, c in e.terms:
            sl, sh = rng(s)
            if c > 0:
                lo += c * sl
                hi += c * sh
            else:
                lo += c * sh
                hi += c * sl
        self.work += len(e.terms)
        return lo, hi

    def _tighten(self, key: Key, z: Lin, scale: Fraction, lo: Fraction | None,
                 hi: Fraction | None, exact: bool) -> tuple[Fraction, Fraction]:
        """Intersect the bounds kept for ``key`` (``m`` with ``z = scale * m``) with
        ``[lo, hi]``; with ``exact`` (or when either is unknown) with the exact interval of
        ``z / scale`` as well."""
        old = self.bounds.get(key)
        if old is None and (exact or lo is None or hi is None):
            zl, zh = self.interval(z)
            old = (zl / scale, zh / scale)
        if old is None:
            new = (lo, hi)
        else:
            new = (old[0] if lo is None else max(old[0], lo),
                   old[1] if hi is None else min(old[1], hi))
        self.bounds[key] = new
        uid = self.ids.get(key)
        if uid is not None:
            self.unit_bounds[uid - self.n_inputs] = new
        return new

    def _record(self, key: Key, sign: Sign) -> None:
        """``m`` has ``sign`` on the whole box (and ``-m`` the opposite one)."""
        self.signs[key] = sign
        other = Sign.NONPOSITIVE if sign is Sign.NONNEGATIVE else Sign.NONNEGATIVE
        neg = negated_key(key)
        self.signs.setdefault(neg, other)
        self.stale |= key in self.ids or neg in self.ids  # an expression read it as a unit

    # -- the rewrites
    def relu(self, z: Lin, z_lower: Fraction | None = None, z_upper: Fraction | None = None) -> Relu:
        """``relu(z)`` as an exact expression over canonical units (see the module docstring).

        ``z_lower``/``z_upper`` are sound bounds of ``z`` on the box known from elsewhere (the
        float bounds of the unit ``z`` came from, taken exactly), or None. ``m >= 0`` or
        ``m <= 0`` proved by them or by exact interval arithmetic is recorded for ``m``, and the
        unit is folded: ``z`` itself, or 0.
        """
        if not z.terms:
            return Relu(Lin.constant(max(z.const, ZERO)), "constant", None, ONE, False)
        key, a = primitive(z)
        negative = z.terms[0][1] < 0
        self.work += len(z.terms)
        lo_m = None if z_lower is None else z_lower / a
        hi_m = None if z_upper is None else z_upper / a
        sign = self.signs.get(key)
        if sign is None:
            # the exact interval only where the (sound) float bounds are missing or near 0
            lo, hi = self._tighten(key, z, a, lo_m, hi_m, exact=_near(lo_m, hi_m))
            if hi <= 0:
                sign = Sign.NONPOSITIVE
            elif lo >= 0:
                sign = Sign.NONNEGATIVE
            if sign is not None:
                self._record(key, sign)
        elif lo_m is not None or hi_m is not None:
            self._tighten(key, z, a, lo_m, hi_m, exact=False)
        if sign is Sign.NONNEGATIVE and len(z.terms) <= FOLD_TERMS:
            return Relu(z, "active", None, a, negative)
        if sign is Sign.NONPOSITIVE:
            return Relu(Lin(()), "dead", None, a, negative)
        uid = self.ids.get(key)
        if uid is None:
            if key not in self.bounds:  # a sign known from its twin, no bounds yet
                self._tighten(key, z, a, lo_m, hi_m, exact=True)
            uid = self.n_inputs + len(self.defs)
            self.ids[key] = uid
            self.defs.append(key_lin(key))
            self.unit_bounds.append(self.bounds[key])
            other = self.ids.get(negated_key(key))
            if other is not None:
                neg, pos = (uid, other) if negative else (other, uid)
                self.twin[neg] = pos
                self.stale |= neg == other  # relu(-p) existed (and may have been read) before
        return Relu(Lin.source(uid, a), "unit", uid, a, negative)

    def cancel_twins(self, e: Lin) -> tuple[Lin, int]:
        """``e`` with every unit ``relu(-p)`` whose twin ``relu(p)`` is a unit of the table replaced
        by ``relu(p) - p`` (exact); and how many were replaced."""
        done = 0
        while self.twin:
            present = {s for s, _ in e.terms}
            pairs = [(neg, pos) for neg, pos in self.twin.items() if neg in present]
            if not pairs:
                break
            acc = dict(e.terms)
            const = e.const
            for neg, pos in pairs:
                c = acc.pop(neg)
                acc[pos] = acc.get(pos, ZERO) + c  # c relu(-p) = c relu(p) - c p
                p = self.defs[pos - self.n_inputs]
                for s, q in p.terms:
                    acc[s] = acc.get(s, ZERO) - c * q
                const -= c * p.const
                self.work += len(p.terms)
            e = Lin.of(acc, const)
            done += len(pairs)
        return e, done

    def used_units(self, outputs) -> set[int]:
        """The ids of the canonical units the expressions ``outputs`` depend on, directly or
        through other units."""
        seen: set[int] = set()
        stack = [s for e in outputs for s, _ in e.terms if s >= self.n_inputs]
        while stack:
            s = stack.pop()
            if s in seen:
                continue
            seen.add(s)
            stack.extend(t for t, _ in self.defs[s - self.n_inputs].terms if t >= self.n_inputs)
        return seen
