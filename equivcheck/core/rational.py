"""Exact rationals at the float boundary: conversions that round in a stated direction, and text.

Every float that enters a proof is converted with ``Fraction(float)`` (bit-exact, never through a
decimal string); every rational that leaves one for float code is rounded *outward* (bounds) or
*inward* (points that must stay inside a set). Nothing here raises on huge or tiny values: a
rational beyond the float range rounds to the largest finite float in the safe direction or to
infinity, and :func:`format_rational` prints any rational without Python's 4,300-digit limit.
"""

from __future__ import annotations

import math
from decimal import Context, Decimal
from fractions import Fraction

import numpy as np

FLOAT32_MAX = Fraction(float(np.finfo(np.float32).max))
FLOAT64_MAX = Fraction(float(np.finfo(np.float64).max))


def to_fraction(v) -> Fraction:
    """The exact rational value of ``v`` (a Fraction, an int, or a float of any numpy width)."""
    if isinstance(v, Fraction):
        return v
    if isinstance(v, (int, np.integer)):
        return Fraction(int(v))
    return Fraction(float(v))


def fraction_array(values: np.ndarray) -> np.ndarray:
    """Exact rationals of float values, as an object array (``Fraction(float)`` is exact)."""
    flat = [Fraction(float(v)) for v in np.asarray(values, dtype=np.float64).ravel()]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(np.shape(values))


def as_fraction_array(values: np.ndarray) -> np.ndarray:
    """``values`` as an object array of exact rationals: object arrays are returned as they are,
    float arrays converted exactly (:func:`fraction_array`)."""
    return values if values.dtype == object else fraction_array(values)


def nearest_float_array(values: np.ndarray) -> np.ndarray:
    """The nearest float64 of each exact rational (round to nearest, ties to even)."""
    return np.array([float(v) for v in np.asarray(values).ravel()], dtype=np.float64).reshape(
        np.shape(values)
    )


def _nearest_float(q: Fraction) -> float:
    try:
        return float(q)
    except OverflowError:
        return math.inf if q > 0 else -math.inf


def float_down(q: Fraction) -> float:
    """The largest float64 <= ``q`` (``-inf`` below the float range)."""
    f = _nearest_float(q)
    if math.isinf(f):
        return f if f < 0 else float(np.finfo(np.float64).max)
    return f if Fraction(f) <= q else math.nextafter(f, -math.inf)


def float_up(q: Fraction) -> float:
    """The smallest float64 >= ``q`` (``+inf`` above the float range)."""
    f = _nearest_float(q)
    if math.isinf(f):
        return f if f > 0 else -float(np.finfo(np.float64).max)
    return f if Fraction(f) >= q else math.nextafter(f, math.inf)


def float_above(q: Fraction) -> float:
    """The smallest float64 strictly greater than ``q``."""
    f = float_up(q)
    return f if Fraction(f) > q else math.nextafter(f, math.inf)


def float_below(q: Fraction) -> float:
    """The largest float64 strictly less than ``q``."""
    f = float_down(q)
    return f if Fraction(f) < q else math.nextafter(f, -math.inf)


def f32_up(q: Fraction, strict: bool = False) -> float:
    """The smallest float32 >= ``q`` (> ``q`` when ``strict``), as a Python float; inf if none."""
    if q > FLOAT32_MAX or (strict and q == FLOAT32_MAX):
        return math.inf
    f = np.float32(max(min(_nearest_float(q), float(FLOAT32_MAX)), -float(FLOAT32_MAX)))
    while Fraction(float(f)) < q or (strict and Fraction(float(f)) == q):
        f = np.nextafter(f, np.float32(np.inf))
    return float(f)


def f32_down(q: Fraction, strict: bool = False) -> float:
    """The largest float32 <= ``q`` (< ``q`` when ``strict``), as a Python float; -inf if none."""
    return -f32_up(-q, strict)


def f64_up(q: Fraction, strict: bool = False) -> float:
    """The smallest float64 >= ``q`` (> ``q`` when ``strict``)."""
    return float_above(q) if strict else float_up(q)


def f64_down(q: Fraction, strict: bool = False) -> float:
    """The largest float64 <= ``q`` (< ``q`` when ``strict``)."""
    return float_below(q) if strict else float_down(q)


def format_rational(q: Fraction, digits: int = 9) -> str:
    """``q`` in ``%g`` style with ``digits`` significant digits, for any size of rational.

    Integers print in full (up to 30 digits); values inside the float range print exactly as
    ``f"{float(q):.{digits}g}"`` does; anything else (``1e-400``, ``1e400``) through ``decimal``,
    so a tiny tolerance never prints as 0 and a huge one never overflows.
    """
    q = Fraction(q)
    if q.denominator == 1 and abs(q.numerator).bit_length() < 100:
        return str(q.numerator)
    if q != 0 and Fraction(1, 10**300) < abs(q) < Fraction(10**300):
        return f"{float(q):.{digits}g}"
    if q == 0:
        return "0"
    ctx = Context(prec=digits)
    value = ctx.divide(Decimal(q.numerator), Decimal(q.denominator)).normalize(ctx)
    return f"{value:g}".replace("E", "e")


MAX_EXPONENT = 1000  # decimal exponents beyond this are refused before any big-int arithmetic
MAX_DIGITS = 1000


def parse_decimal(text: str) -> Fraction:
    """The exact rational value of a decimal (or ``p/q``) string.

    Raises ``ValueError`` with a short reason for anything that is not a finite number, and for
    exponents beyond +-1000 or more than 1000 digits (whose exact value would take unbounded
    time and memory to build: ``Fraction("1e999999999")`` never returns).
    """
    t = text.strip()
    low = t.lower().lstrip("+-")
    if low in ("nan", "inf", "infinity"):
        raise ValueError("is not a finite number")
    if len(t) > MAX_DIGITS:
        raise ValueError(f"has more than {MAX_DIGITS} characters")
    mantissa, sep, exponent = low.partition("e")
    if sep:
        try:
            exp = int(exponent)
        except ValueError:
            raise ValueError("is not a number") from None
        if abs(exp) > MAX_EXPONENT:
            if not any(c in "123456789" for c in mantissa):
                return Fraction(0)
            raise ValueError(f"has a decimal exponent beyond +-{MAX_EXPONENT}")
    try:
        return Fraction(t)
    except (ValueError, ZeroDivisionError):
        raise ValueError("is not a number") from None


def exact_text(q: Fraction) -> str:
    """Text that :func:`parse_decimal` reads back as exactly ``q``: a terminating decimal when
    there is one (``1/10`` -> ``0.1``), else ``p/q``."""
    q = Fraction(q)
    d = q.denominator
    twos = fives = 0
    while d % 2 == 0:
        d //= 2
        twos += 1
    while d % 5 == 0:
        d //= 5
        fives += 1
    if d != 1 or max(twos, fives) > MAX_EXPONENT:
        return str(q)
    places = max(twos, fives)
    digits = abs(q.numerator) * 10**places // q.denominator
    sign = "-" if q < 0 else ""
    if places == 0:
        return f"{sign}{digits}"
    return f"{sign}{digits}e-{places}" if places > 30 else f"{sign}{digits // 10**places}.{digits % 10**places:0{places}d}".rstrip("0").rstrip(".")


def two_diff(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knuth's TwoSum for ``a - b``: ``(s, err)`` with ``s + err == a - b`` exactly."""
    nb = -b
    s = a + nb
    bp = s - a
    ap = s - bp
    return s, (a - ap) + (nb - bp)
