"""Input domains: boxes with exact rational bounds (reading them from text and files is
:mod:`equivcheck.io.domains`).

A :class:`Domain` is a union of :class:`Box` es over the flat input vector. Bounds are kept as
exact ``Fraction`` s (decimal text is parsed exactly), and float enclosures are derived from them
with outward rounding, so float computations over a box never miss a point of the exact box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from equivcheck.core.rational import (
    FLOAT32_MAX,
    f32_down,
    f32_up,
    f64_down,
    f64_up,
    float_down,
    float_up,
    format_rational,
    parse_decimal,
    to_fraction,
)
from equivcheck.errors import DomainError


@dataclass(frozen=True)
class Box:
    """An axis-aligned box of exact rational bounds: ``lower <= x <= upper`` per input.

    A bound may be strict (``lower_strict[i]``: ``lower < x``), as VNN-LIB's ``<`` and ``>`` say.
    Strictness is honoured exactly wherever a point is judged (:meth:`contains`, the solver's
    encoding, the float points the falsifier samples); float *enclosures* (:meth:`lower_float`,
    :meth:`upper_float`) cover the closure, which is sound for bounds. Bounds must lie within the
    float32 range, so every point of a box can be handed to float code.
    """

    lower: tuple[Fraction, ...]
    upper: tuple[Fraction, ...]
    lower_strict: tuple[bool, ...] = ()
    upper_strict: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        if len(self.lower) != len(self.upper):
            raise DomainError(
                f"domain has {len(self.lower)} lower and {len(self.upper)} upper bounds"
            )
        if not self.lower:
            raise DomainError("domain is empty (no inputs)")
        n = len(self.lower)
        for name in ("lower_strict", "upper_strict"):
            flags = getattr(self, name)
            if not flags:
                object.__setattr__(self, name, (False,) * n)
            elif len(flags) != n:
                raise DomainError(f"domain has {n} bounds but {len(flags)} {name} flags")
        for i, (lo, hi) in enumerate(zip(self.lower, self.upper)):
            for q in (lo, hi):
                if abs(q) > FLOAT32_MAX:
                    raise DomainError(
                        f"domain bound {format_rational(q)} at input {i} lies beyond the float32 "
                        f"range (|x| <= {float(FLOAT32_MAX):.4g})"
                    )
            if lo > hi:
                raise DomainError(
                    f"domain is inverted at input {i}: lower {format_rational(lo)} > "
                    f"upper {format_rational(hi)}"
                )
            if lo == hi and (self.lower_strict[i] or self.upper_strict[i]):
                raise DomainError(
                    f"domain is empty at input {i}: a strict bound excludes its only value "
                    f"{format_rational(lo)}"
                )

    @property
    def dim(self) -> int:
        return len(self.lower)

    @property
    def is_closed(self) -> bool:
        """True when no bound is strict."""
        return not (any(self.lower_strict) or any(self.upper_strict))

    def lower_float(self) -> np.ndarray:
        """Float64 lower bounds rounded down (the float box encloses the exact box)."""
        return np.array([float_down(v) for v in self.lower])

    def upper_float(self) -> np.ndarray:
        """Float64 upper bounds rounded up."""
        return np.array([float_up(v) for v in self.upper])

    def float32_box(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The float32 points inside the exact box, as (lower, upper), or None if there are none."""
        lo = np.array([f32_up(v, s) for v, s in zip(self.lower, self.lower_strict)])
        hi = np.array([f32_down(v, s) for v, s in zip(self.upper, self.upper_strict)])
        if np.any(lo > hi):
            return None
        return lo, hi

    def float64_box(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The float64 points inside the exact box, as (lower, upper), or None if there are none."""
        lo = np.array([f64_up(v, s) for v, s in zip(self.lower, self.lower_strict)])
        hi = np.array([f64_down(v, s) for v, s in zip(self.upper, self.upper_strict)])
        if np.any(lo > hi):
            return None
        return lo, hi

    def sample_box(self) -> tuple[tuple[np.ndarray, np.ndarray], str] | None:
        """The float box to sample points from: float32 points if the box holds any, else float64
        points, with the precision's name; None when the box holds no float64 point at all (then
        only exact rational points lie in it). Every float point of the returned box lies in the
        exact box."""
        got = self.float32_box()
        if got is not None:
            return got, "float32"
        got = self.float64_box()
        if got is not None:
            return got, "float64"
        return None

    def contains(self, x) -> bool:
        """Exact membership test (strict bounds honoured) for a point of floats or Fractions."""
        if len(x) != self.dim:
            return False
        for v, lo, hi, ls, us in zip(x, self.lower, self.upper, self.lower_strict, self.upper_strict):
            q = to_fraction(v)
            if q < lo or q > hi or (ls and q == lo) or (us and q == hi):
                return False
        return True

    def midpoint(self) -> tuple[Fraction, ...]:
        """The exact centre of the box (inside it, strict bounds included)."""
        return tuple((lo + hi) / 2 for lo, hi in zip(self.lower, self.upper))

    def halves(self, dim: int) -> tuple["Box", "Box"]:
        """The two halves of the box split at the midpoint of input ``dim``; both keep the
        box's strict faces and share the (closed) cut, so their union is exactly the box."""
        mid = (self.lower[dim] + self.upper[dim]) / 2

        def put(t, v):
            return t[:dim] + (v,) + t[dim + 1:]

        left = Box(self.lower, put(self.upper, mid), self.lower_strict, put(self.upper_strict, False))
        right = Box(put(self.lower, mid), self.upper, put(self.lower_strict, False), self.upper_strict)
        return left, right

    def describe(self) -> str:
        def one(i: int) -> str:
            left = "(" if self.lower_strict[i] else "["
            right = ")" if self.upper_strict[i] else "]"
            return f"{left}{_fmt(self.lower[i])}, {_fmt(self.upper[i])}{right}"

        if (len(set(self.lower)) == 1 and len(set(self.upper)) == 1
                and len(set(self.lower_strict)) == 1 and len(set(self.upper_strict)) == 1):
            return f"{one(0)}^{self.dim}"
        return " x ".join(one(i) for i in range(self.dim))


def _fmt(q: Fraction) -> str:
    return format_rational(q)


@dataclass(frozen=True)
class Domain:
    """A union of boxes over the flat input; ``source`` says where it came from."""

    boxes: tuple[Box, ...]
    source: str
    is_default: bool = False

    @property
    def dim(self) -> int:
        return self.boxes[0].dim

    def describe(self) -> str:
        text = " ∪ ".join(b.describe() for b in self.boxes)
        if len(text) > 160:
            text = f"{len(self.boxes)} box(es) over {self.dim} inputs"
        origin = "default " if self.is_default else ""
        return f"{origin}{text} (from {self.source})"

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "default": self.is_default,
            "boxes": [_box_dict(b) for b in self.boxes],
        }


def _box_dict(b: Box) -> dict:
    """Floats (nearest) for reading; exact rationals as text where a bound is not a float, and
    the strict flags where any bound is strict."""
    d: dict = {"lower": [float(v) for v in b.lower], "upper": [float(v) for v in b.upper]}
    if any(Fraction(float(v)) != v for v in b.lower + b.upper):
        d["lower_exact"] = [str(v) for v in b.lower]
        d["upper_exact"] = [str(v) for v in b.upper]
    if not b.is_closed:
        d["lower_strict"] = list(b.lower_strict)
        d["upper_strict"] = list(b.upper_strict)
    return d


def box_domain(lower, upper, source: str = "<api>") -> Domain:
    """A one-box domain from sequences (floats, ints, Fractions or decimal strings)."""
    return Domain((Box(tuple(exact_bound(v) for v in lower), tuple(exact_bound(v) for v in upper)),), source)


def exact_bound(value) -> Fraction:
    """Exact rational of a number; decimal strings are read exactly, floats bit-exactly."""
    if isinstance(value, Fraction):
        return value
    if isinstance(value, bool) or value is None:
        raise DomainError(f"domain bound {value!r} is not a number")
    if isinstance(value, (int, np.integer)):
        return Fraction(int(value))
    if isinstance(value, str):
        try:
            return parse_decimal(value)
        except ValueError as exc:
            raise DomainError(f"domain bound {value[:40]!r} {exc}") from None
    try:
        f = float(value)
    except (ValueError, TypeError, OverflowError):
        raise DomainError(f"domain bound {value!r} is not a number") from None
    if not math.isfinite(f):
        raise DomainError(f"domain bound {value!r} is not a finite number")
    return Fraction(f)
