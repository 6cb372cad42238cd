"""The shared table of canonical ReLU units: every unit of both networks, hash-consed.

A *source* is an input (ids ``0 .. n_inputs - 1``) or a canonical unit (ids from ``n_inputs``
on). An affine expression over sources is a :class:`Lin`: exact rational coefficients (no zero
ones) and a constant, stored as integers over one denominator in lowest terms (so equality and
hashing are on integers, and a key is one gcd away). A canonical unit is ``relu(m)`` for a
*primitive* expression ``m``: integer coefficients and constant whose greatest common divisor
is 1 (:func:`primitive`); the table holds each such ``m`` once, so two units of either network
whose pre-activations are equal up to a positive factor are the same unit.

:meth:`UnitTable.relu` turns ``relu(z)`` for any expression ``z`` into an exact expression over
canonical units by ``relu(a m) = a relu(m)`` for ``a > 0``: positively rescaled units, split units
(``relu(c1 z) + relu(c2 z)``) and duplicates become one unit. :meth:`UnitTable.cancel_twins`
rewrites an expression that reads ``relu(-p)``, when ``relu(p)`` is a unit too, by
``relu(-p) = relu(p) - p``, so pairs such as ``relu(z) - relu(-z)`` (which is ``z``) become
linear. Stability facts proved on the domain (``m >= 0`` or ``m <= 0`` everywhere) are kept per
expression and folded the same way for every origin (an always-active unit of more than
``FOLD_TERMS`` terms stays a unit, the same way for every origin too).
"""

from __future__ import annotations

import bisect
import enum
import math
import operator
from dataclasses import dataclass
from fractions import Fraction

ZERO = Fraction(0)
ONE = Fraction(1)


@dataclass(frozen=True)
class Lin:
    """``(sum(n * source) + cnum) / den``: exact rational coefficients ``n / den``, stored as
    integers over one positive denominator in lowest terms (the gcd of ``nums``, ``cnum`` and
    ``den`` is 1), so equal expressions have equal fields and hash by their integers. ``srcs`` is
    sorted and ``nums`` holds no zero. ``terms``/``const`` give the Fractions, built on demand."""

    srcs: tuple[int, ...] = ()
    nums: tuple[int, ...] = ()
    cnum: int = 0
    den: int = 1

    @staticmethod
    def reduced(srcs, nums, cnum: int, den: int) -> Lin:
        """The expression of integer fields not yet in lowest terms (``den > 0``, no zero num)."""
        g = math.gcd(cnum, den, *nums)
        if g != 1:
            nums = tuple(n // g for n in nums)
            cnum //= g
            den //= g
        return Lin(tuple(srcs), tuple(nums), cnum, den)

    @property
    def terms(self) -> tuple[tuple[int, Fraction], ...]:
        """``(source, coefficient)`` pairs, sorted by source."""
        d = self.den
        return tuple((s, Fraction(n, d)) for s, n in zip(self.srcs, self.nums))

    @property
    def const(self) -> Fraction:
        return Fraction(self.cnum, self.den)

    def coef(self, k: int) -> Fraction:
        """The ``k``-th coefficient (in source order)."""
        return Fraction(self.nums[k], self.den)

    @staticmethod
    def of(terms: dict[int, Fraction], const: Fraction = ZERO) -> Lin:
        """The expression of a dict of coefficients (zero ones dropped)."""
        return Lin.of_terms(sorted((s, c) for s, c in terms.items() if c != 0), const)

    @staticmethod
    def of_terms(terms, const: Fraction = ZERO) -> Lin:
        """The expression of ``(source, coefficient)`` pairs sorted by source, none zero."""
        const = Fraction(const)
        den = math.lcm(const.denominator, *(Fraction(c).denominator for _, c in terms))
        nums = tuple(c.numerator * (den // c.denominator) for _, c in
                     ((s, Fraction(c)) for s, c in terms))
        return Lin.reduced(tuple(s for s, _ in terms), nums,
                           const.numerator * (den // const.denominator), den)

    @staticmethod
    def source(s: int, coef: Fraction = ONE) -> Lin:
        coef = Fraction(coef)
        if coef == 0:
            return Lin()
        return Lin((s,), (coef.numerator,), 0, coef.denominator)

    @staticmethod
    def constant(c: Fraction) -> Lin:
        c = Fraction(c)
        if c == 0:
            return Lin()
        return Lin((), (), c.numerator, c.denominator)

    def linear(self) -> Lin:
        """This expression without its constant."""
        return Lin.reduced(self.srcs, self.nums, 0, self.den) if self.cnum else self

    def with_const(self, c: Fraction) -> Lin:
        """This expression's linear part plus the constant ``c``."""
        return Lin.of_terms(self.terms, c)

    def scaled(self, k: Fraction) -> Lin:
        """``k`` times this expression (exact)."""
        k = Fraction(k)
        if k == 0:
            return Lin()
        if k == 1:
            return self
        p, q = k.numerator, k.denominator
        return Lin.reduced(self.srcs, tuple(n * p for n in self.nums), self.cnum * p,
                           self.den * q)

    def negated(self) -> Lin:
        return Lin(self.srcs, tuple(map(operator.neg, self.nums)), -self.cnum, self.den)

    def minus(self, other: Lin) -> Lin:
        """``self - other`` (exact)."""
        den = math.lcm(self.den, other.den)
        fa, fb = den // self.den, den // other.den
        acc = {s: n * fa for s, n in zip(self.srcs, self.nums)}
        for s, n in zip(other.srcs, other.nums):
            acc[s] = acc.get(s, 0) - n * fb
        return Lin.of_ints(acc, self.cnum * fa - other.cnum * fb, den)

    @staticmethod
    def of_ints(acc: dict[int, int], cnum: int, den: int) -> Lin:
        """The expression ``(sum(acc[s] * s) + cnum) / den`` (zero entries dropped)."""
        items = sorted((s, n) for s, n in acc.items() if n)
        return Lin.reduced(tuple(s for s, _ in items), tuple(n for _, n in items), cnum, den)


NEAR = Fraction(1, 10**6)
FOLD_TERMS = 64  # always-active units with more terms stay units at first (folding them all in a
# wide, deep network makes every expression dense over all earlier layers: MNIST 256x4/256x6
# rewritten copies 0.6-0.75 s -> 2.0-2.2 s of CPU); canon.compare folds them all only when the
# forms differ and some were kept (a bias moved through a wide always-active unit needs it)


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


@dataclass(frozen=True, eq=False)
class Key:
    """A primitive integer expression (integer coefficients and constant with gcd 1): the
    table's key of a canonical unit, hashed once (its tuples are as long as a layer)."""

    srcs: tuple[int, ...]
    ints: tuple[int, ...]
    const: int
    _hash: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.srcs, self.ints, self.const)))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        return (isinstance(other, Key) and self._hash == other._hash and self.const == other.const
                and self.srcs == other.srcs and self.ints == other.ints)


def primitive(z: Lin) -> tuple[Key, Fraction]:
    """``(key, s)`` with ``z == s * m``, ``s > 0`` and ``m`` the primitive integer expression
    ``key`` (integer coefficients and constant with greatest common divisor 1): the one
    representative of ``z`` up to a positive factor, computed in integers."""
    g = math.gcd(z.cnum, *z.nums)
    if g == 1:
        return Key(z.srcs, z.nums, z.cnum), Fraction(1, z.den)
    return Key(z.srcs, tuple(i // g for i in z.nums), z.cnum // g), Fraction(g, z.den)


def key_lin(key: Key) -> Lin:
    """The expression of a key."""
    return Lin(key.srcs, key.ints, key.const, 1)


def negated_key(key: Key) -> Key:
    return Key(key.srcs, tuple(map(operator.neg, key.ints)), -key.const)


class UnitTable:
    """Canonical units of one or more networks over one box (see the module docstring).

    ``lower``/``upper`` give exact input bounds (the box); each canonical expression keeps sound
    exact bounds (the tightest of those proved for it from any origin). Not thread-safe; built and
    read by one comparison.
    """

    def __init__(self, lower, upper, fold_terms: int | None = FOLD_TERMS) -> None:
        self.fold_terms = fold_terms  # always-active units with more terms stay units (None: all fold)
        self.kept_wide = 0  # always-active units kept as units because of fold_terms
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
        self.read: set[int] = set()  # units some expression was built from (build marks them)

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
        lo = hi = ZERO
        rng = self.source_range
        for s, c in zip(e.srcs, e.nums):
            sl, sh = rng(s)
            if c > 0:
                lo += c * sl
                hi += c * sh
            else:
                lo += c * sh
                hi += c * sl
        self.work += len(e.nums)
        return (lo + e.cnum) / e.den, (hi + e.cnum) / e.den

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

    def knows(self, z: Lin) -> bool:
        """True when ``relu(z)`` needs no new fact: ``z`` is a constant, or its primitive
        expression is a unit of the table or has a sign proved."""
        if not z.nums:
            return True
        key = primitive(z)[0]
        return key in self.ids or key in self.signs

    # -- the rewrites
    def relu(self, z: Lin, z_lower: Fraction | None = None,
             z_upper: Fraction | None = None) -> Relu:
        """``relu(z)`` as an exact expression over canonical units (see the module docstring).

        ``z_lower``/``z_upper`` are sound bounds of ``z`` on the box known from elsewhere (the
        float bounds of the unit ``z`` came from, taken exactly), or None. ``m >= 0`` or
        ``m <= 0`` proved by them or by exact interval arithmetic is recorded for ``m``, and the
        unit is folded: ``z`` itself, or 0.
        """
        if not z.nums:
            return Relu(Lin.constant(max(z.const, ZERO)), "constant", None, ONE, False)
        key, a = primitive(z)
        negative = z.nums[0] < 0
        self.work += len(z.nums)
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
        if sign is Sign.NONNEGATIVE:
            if self.fold_terms is None or len(z.nums) <= self.fold_terms:
                return Relu(z, "active", None, a, negative)
            self.kept_wide += 1
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
                self.stale |= neg == other and neg in self.read  # relu(-p) was read before
        return Relu(Lin.source(uid, a), "unit", uid, a, negative)

    def cancel_twins(self, e: Lin) -> tuple[Lin, int]:
        """``e`` with every unit ``relu(-p)`` whose twin ``relu(p)`` is a unit of the table replaced
        by ``relu(p) - p`` (exact); and how many were replaced."""
        done = 0
        while self.twin:
            pairs = [(neg, self.twin[neg]) for neg in e.srcs if neg in self.twin]
            if not pairs:
                break
            acc = dict(zip(e.srcs, e.nums))  # numerators over e.den (the defs are integer)
            const = e.cnum
            for neg, pos in pairs:
                c = acc.pop(neg)
                acc[pos] = acc.get(pos, 0) + c  # c relu(-p) = c relu(p) - c p
                p = self.defs[pos - self.n_inputs]
                for s, q in zip(p.srcs, p.nums):
                    acc[s] = acc.get(s, 0) - c * q
                const -= c * p.cnum
                self.work += len(p.nums)
            e = Lin.of_ints(acc, const, e.den)
            done += len(pairs)
        return e, done

    def used_units(self, outputs) -> set[int]:
        """The ids of the canonical units the expressions ``outputs`` depend on, directly or
        through other units."""
        n = self.n_inputs
        seen = {s for e in outputs for s in e.srcs if s >= n}
        for uid in range(n + len(self.defs) - 1, n - 1, -1):  # a def reads only older units
            if uid in seen:
                srcs = self.defs[uid - n].srcs
                seen.update(srcs[bisect.bisect_left(srcs, n):])
        return seen
