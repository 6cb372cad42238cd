"""Input domains: boxes with exact rational bounds, read from ``LO:HI``, VNN-LIB or JSON.

A :class:`Domain` is a union of :class:`Box` es over the flat input vector. Bounds are kept as
exact ``Fraction`` s (decimal text is parsed exactly), and float enclosures are derived from them
with outward rounding, so float computations over a box never miss a point of the exact box.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import DomainError, ShapeMismatchError
from .rational import (
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

DEFAULT_DOMAIN_TEXT = "0:1"


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
    return Domain((Box(tuple(_exact(v) for v in lower), tuple(_exact(v) for v in upper)),), source)


def _exact(value) -> Fraction:
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


def parse_domain(spec: "str | Domain | None", n_inputs: int) -> Domain:
    """Read a domain for a network with ``n_inputs`` flat inputs.

    ``spec`` is ``None`` (the default [0, 1] on every input), ``"LO:HI"`` (the same interval on
    every input), a ``.vnnlib`` file (its input constraints: a box or a union of boxes), or a
    ``.json`` file ``{"lower": [...], "upper": [...]}`` (lists, or one number for all inputs).
    Raises :class:`DomainError` for anything malformed, empty, inverted or not finite, and
    :class:`ShapeMismatchError` when the domain's dimension differs from ``n_inputs``.
    """
    if isinstance(spec, Domain):
        dom = spec
    elif spec is None:
        dom = _interval_domain(DEFAULT_DOMAIN_TEXT, n_inputs, "default")
        dom = Domain(dom.boxes, "default", is_default=True)
    else:
        text = str(spec).strip()
        path = Path(text)
        lowered = text.lower()
        if lowered.endswith(".vnnlib"):
            dom = read_vnnlib_domain(path, n_inputs)
        elif lowered.endswith(".json"):
            dom = _json_domain(path, n_inputs)
        elif ":" in text and not _exists(path):
            dom = _interval_domain(text, n_inputs, text)
        else:
            raise DomainError(
                f"domain {text!r} is neither LO:HI nor a .vnnlib or .json file"
                + ("" if _exists(path) else " (no such file)")
            )
    if dom.dim != n_inputs:
        raise ShapeMismatchError(
            f"domain {dom.source} has {dom.dim} inputs but the networks take {n_inputs}"
        )
    return dom


def _exists(path: Path) -> bool:
    """``path.exists()`` that says False for a text no file system accepts as a path (too long,
    a NUL byte) instead of raising."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _interval_domain(text: str, n: int, source: str) -> Domain:
    parts = text.split(":")
    if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
        raise DomainError(f"domain {text!r} is not of the form LO:HI")
    lo, hi = _exact(parts[0]), _exact(parts[1])
    if lo > hi:
        raise DomainError(f"domain {text!r} is inverted: {parts[0]} > {parts[1]}")
    return Domain((Box((lo,) * n, (hi,) * n),), source)


def _json_domain(path: Path, n: int) -> Domain:
    if not _is_file(path):
        raise DomainError(f"{path}: no such domain file")
    try:
        data = json.loads(path.read_text(), parse_float=_exact, parse_int=_exact, parse_constant=_reject_constant)
    except DomainError:
        raise
    except (ValueError, OSError) as exc:
        raise DomainError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or "lower" not in data or "upper" not in data:
        raise DomainError(f'{path}: expected an object with "lower" and "upper"')

    def vec(key):
        v = data[key]
        if isinstance(v, list):
            if not v:
                raise DomainError(f'{path}: "{key}" is empty')
            return tuple(_exact(x) for x in _flatten(v))
        return (_exact(v),) * n

    return Domain((Box(vec("lower"), vec("upper")),), str(path))


def _reject_constant(name: str):
    raise DomainError(f"domain bound {name} is not a finite number")


def _flatten(v):
    for x in v:
        if isinstance(x, list):
            yield from _flatten(x)
        else:
            if isinstance(x, bool) or x is None:
                raise DomainError(f"domain bound {x!r} is not a number")
            yield x


# ---------------------------------------------------------------------------------------------
# VNN-LIB


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    for line in text.splitlines():
        line = line.split(";", 1)[0]
        tokens.extend(line.replace("(", " ( ").replace(")", " ) ").split())
    return tokens


def _parse_sexprs(tokens: list[str], path: Path) -> list:
    stack: list[list] = [[]]
    for tok in tokens:
        if tok == "(":
            stack.append([])
        elif tok == ")":
            if len(stack) == 1:
                raise DomainError(f"{path}: unbalanced ')' in VNN-LIB")
            done = stack.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(tok)
    if len(stack) != 1:
        raise DomainError(f"{path}: unbalanced '(' in VNN-LIB")
    return stack[0]


def _mentions(expr, prefix: str) -> bool:
    if isinstance(expr, str):
        return expr.startswith(prefix)
    return any(_mentions(e, prefix) for e in expr)


def _atom_bounds(expr, path: Path, n_max: int) -> list[tuple[int, str, Fraction, bool]]:
    """Input bounds of an ``and`` of comparisons: (index, 'lo'|'hi'|'eq', value, strict)."""
    if isinstance(expr, list) and expr and expr[0] == "and":
        out = []
        for e in expr[1:]:
            out.extend(_atom_bounds(e, path, n_max))
        return out
    if not (isinstance(expr, list) and len(expr) == 3 and expr[0] in ("<=", ">=", "=", "<", ">")):
        raise DomainError(f"{path}: unsupported input constraint {_show(expr)[:80]}")
    op, a, b = expr
    if isinstance(a, str) and a.startswith("X_") and not _is_var(b):
        var, value, flipped = a, b, False
    elif isinstance(b, str) and b.startswith("X_") and not _is_var(a):
        var, value, flipped = b, a, True
    else:
        raise DomainError(f"{path}: unsupported input constraint {_show(expr)[:80]}")
    index = _var_index(var, path, n_max)
    q = _vnnlib_number(value, path)
    if op == "=":
        return [(index, "eq", q, False)]
    upper = op in ("<=", "<")
    if flipped:
        upper = not upper
    return [(index, "hi" if upper else "lo", q, op in ("<", ">"))]


def _var_index(var: str, path: Path, n_max: int) -> int:
    digits = var[2:]
    if not digits.isdigit() or len(digits) > 9:
        raise DomainError(f"{path}: bad variable name {var[:40]}")
    index = int(digits)
    if index >= n_max:
        raise DomainError(f"{path}: {var} is out of range: the networks take {n_max} inputs")
    return index


def _vnnlib_number(value, path: Path) -> Fraction:
    if isinstance(value, list):
        # (- 0.5) is how SMT-LIB writes a negative constant
        if len(value) == 2 and value[0] == "-" and isinstance(value[1], str):
            return -_vnnlib_number(value[1], path)
        raise DomainError(f"{path}: unsupported bound {_show(value)[:80]}")
    try:
        return parse_decimal(value)
    except ValueError as exc:
        raise DomainError(f"{path}: bound {value[:40]!r} {exc}") from None


def _is_var(x) -> bool:
    return isinstance(x, str) and (x.startswith("X_") or x.startswith("Y_"))


def _show(expr) -> str:
    if isinstance(expr, str):
        return expr
    return "(" + " ".join(_show(e) for e in expr) + ")"


MAX_INPUTS = 10**7  # a VNN-LIB file may not declare more inputs than this (memory guard)


def read_vnnlib_domain(path: Path, n_inputs: int | None = None) -> Domain:
    """The input region of a VNN-LIB file: its box, or a union of boxes.

    Output constraints (on ``Y_*``) describe a property, not the domain, and are ignored. Strict
    comparisons (``<``, ``>``) give strict bounds, honoured exactly. With ``n_inputs``, a
    variable ``X_i`` with ``i >= n_inputs`` is refused before anything is allocated for it.
    """
    path = Path(path)
    if not _is_file(path):
        what = "no such VNN-LIB file" if not _exists(path) else "not a regular file"
        raise DomainError(f"{path}: {what}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DomainError(f"{path}: cannot read ({exc})") from None
    n_max = MAX_INPUTS if n_inputs is None else n_inputs
    exprs = _parse_sexprs(_tokenize(text), path)
    n = 0
    common: list[tuple[int, str, Fraction, bool]] = []
    disjunctions: list[list[list[tuple[int, str, Fraction, bool]]]] = []
    for e in exprs:
        if not isinstance(e, list) or not e:
            raise DomainError(f"{path}: unexpected token {_show(e)[:80]}")
        if e[0] == "declare-const" and len(e) >= 2 and str(e[1]).startswith("X_"):
            n = max(n, _var_index(str(e[1]), path, n_max) + 1)
        elif e[0] == "assert" and len(e) == 2:
            body = e[1]
            if not _mentions(body, "X_"):
                continue  # output property
            if _mentions(body, "Y_"):
                raise DomainError(f"{path}: constraint mixes inputs and outputs: {_show(body)[:80]}")
            if isinstance(body, list) and body and body[0] == "or":
                disjunctions.append([_atom_bounds(c, path, n_max) for c in body[1:]])
            else:
                common.extend(_atom_bounds(body, path, n_max))
    if n == 0:
        raise DomainError(f"{path}: declares no input variables X_i")
    if len(disjunctions) > 1:
        raise DomainError(f"{path}: more than one disjunction over the inputs is not supported")
    alternatives = disjunctions[0] if disjunctions else [[]]
    boxes = []
    for alt in alternatives:
        lo: list[Fraction | None] = [None] * n
        hi: list[Fraction | None] = [None] * n
        lo_strict = [False] * n
        hi_strict = [False] * n
        for index, kind, q, strict in common + alt:
            if index >= n:
                raise DomainError(f"{path}: X_{index} is used but not declared")
            if kind in ("lo", "eq"):
                if lo[index] is None or q > lo[index]:
                    lo[index], lo_strict[index] = q, strict
                elif q == lo[index]:
                    lo_strict[index] = lo_strict[index] or strict
            if kind in ("hi", "eq"):
                if hi[index] is None or q < hi[index]:
                    hi[index], hi_strict[index] = q, strict
                elif q == hi[index]:
                    hi_strict[index] = hi_strict[index] or strict
        for i in range(n):
            if lo[i] is None or hi[i] is None:
                side = "lower" if lo[i] is None else "upper"
                raise DomainError(f"{path}: X_{i} has no {side} bound")
            if lo[i] > hi[i] or (lo[i] == hi[i] and (lo_strict[i] or hi_strict[i])):
                raise DomainError(
                    f"{path}: X_{i} has an empty range "
                    f"{'(' if lo_strict[i] else '['}{format_rational(lo[i])}, "
                    f"{format_rational(hi[i])}{')' if hi_strict[i] else ']'}"
                )
        try:
            boxes.append(Box(tuple(lo), tuple(hi), tuple(lo_strict), tuple(hi_strict)))
        except DomainError as exc:
            raise DomainError(f"{path}: {exc}") from None
    return Domain(tuple(boxes), str(path))
