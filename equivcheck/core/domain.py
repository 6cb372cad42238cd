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
    float32 range, so every point of a box can be handed to float code. Bounds given as ints,
    floats or decimal text are stored as the exact Fractions they denote (:func:`exact_bound`).
    """

    lower: tuple[Fraction, ...]
    upper: tuple[Fraction, ...]
    lower_strict: tuple[bool, ...] = ()
    upper_strict: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "lower", _exact_tuple(self.lower))
        object.__setattr__(self, "upper", _exact_tuple(self.upper))
        if len(self.lower) != len(self.upper):
            raise DomainError(
                f"domain has {len(self.lower)} lower and {len(self.upper)} upper bounds"
            )
        if not self.lower:
            raise DomainError("domain is empty (no inputs)")
        n = len(self.lower)
        for name in ("lower_strict", "upper_strict"):
            flags = getattr(self, name)
            if len(flags) not in (0, n):
                raise DomainError(f"domain has {n} bounds but {len(flags)} {name} flags")
            object.__setattr__(self, name, tuple(bool(f) for f in flags) if flags else (False,) * n)
        for i, (lo, hi) in enumerate(zip(self.lower, self.upper)):
            strict = self.lower_strict[i] or self.upper_strict[i]
            if not (_FLOAT32_MIN <= lo <= hi <= FLOAT32_MAX) or (strict and lo == hi):
                self._refuse_interval(i)

    def _refuse_interval(self, i: int) -> None:
        """Raise the :class:`DomainError` saying why input ``i``'s interval is refused (a bound
        beyond the float32 range, inverted, or empty because of a strict bound)."""
        lo, hi = self.lower[i], self.upper[i]
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
        raise DomainError(
            f"domain is empty at input {i}: a strict bound excludes its only value "
            f"{format_rational(lo)}"
        )

    @property
    def dim(self) -> int:
        """The number of (flat) inputs."""
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
        return self._inner_box(f32_up, f32_down)

    def float64_box(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The float64 points inside the exact box, as (lower, upper), or None if there are none."""
        return self._inner_box(f64_up, f64_down)

    def _inner_box(self, up, down) -> tuple[np.ndarray, np.ndarray] | None:
        """Each bound rounded inward (``up(q, strict)`` for lower bounds, ``down`` for upper
        ones), or None when that leaves no point on some input."""
        lo = np.array([up(v, s) for v, s in zip(self.lower, self.lower_strict)])
        hi = np.array([down(v, s) for v, s in zip(self.upper, self.upper_strict)])
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

    def describe(self, limit: int | None = None) -> str:
        """The box as interval text, ``[lo, hi]^n`` when every input has the same interval.

        With ``limit``, stops (and ends the text with "...") once the text passes ``limit``
        characters, so a box of many inputs costs no more than the part that is shown."""

        def one(i: int) -> str:
            left = "(" if self.lower_strict[i] else "["
            right = ")" if self.upper_strict[i] else "]"
            return f"{left}{format_rational(self.lower[i])}, {format_rational(self.upper[i])}{right}"

        if (len(set(self.lower)) == 1 and len(set(self.upper)) == 1
                and len(set(self.lower_strict)) == 1 and len(set(self.upper_strict)) == 1):
            return f"{one(0)}^{self.dim}"
        parts, size = [], 0
        for i in range(self.dim):
            parts.append(one(i))
            size += len(parts[-1]) + 3
            if limit is not None and size > limit and i + 1 < self.dim:
                return " x ".join(parts) + " x ..."
        return " x ".join(parts)


@dataclass(frozen=True)
class Domain:
    """A union of boxes over the flat input; ``source`` says where it came from.

    There is at least one box, and every box has the same number of inputs.
    """

    boxes: tuple[Box, ...]
    source: str
    is_default: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "boxes", tuple(self.boxes))
        if not self.boxes:
            raise DomainError(f"domain {self.source} has no boxes")
        dims = {b.dim for b in self.boxes}
        if len(dims) != 1:
            raise DomainError(f"domain {self.source} has boxes over {sorted(dims)} inputs (one count for all)")

    @property
    def dim(self) -> int:
        """The number of (flat) inputs."""
        return self.boxes[0].dim

    def describe(self) -> str:
        """One line: the boxes (or their count, when long) and where the domain came from."""
        limit = 160
        parts, size = [], 0
        for b in self.boxes:  # stops building text as soon as it is too long to show
            parts.append(b.describe(limit - size))
            size += len(parts[-1]) + 3
            if size > limit:
                break
        text = " ∪ ".join(parts)
        if size > limit:
            text = f"{len(self.boxes)} box(es) over {self.dim} inputs"
        origin = "default " if self.is_default else ""
        return f"{origin}{text} (from {self.source})"

    def to_dict(self) -> dict:
        """JSON-ready: the source, whether it is the default, and each box (:func:`_box_dict`)."""
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


_FLOAT32_MIN = -FLOAT32_MAX


def _exact_tuple(values) -> tuple[Fraction, ...]:
    """The bounds as a tuple of exact Fractions (:func:`exact_bound`; Fractions kept as they are)."""
    return tuple(v if type(v) is Fraction else exact_bound(v) for v in values)


def box_domain(lower, upper, source: str = "<api>") -> Domain:
    """A one-box domain from sequences (floats, ints, Fractions or decimal strings), read exactly."""
    return Domain((Box(tuple(lower), tuple(upper)),), source)


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
