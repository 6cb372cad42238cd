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

DEFAULT_DOMAIN_TEXT = "0:1"


def _float_down(q: Fraction) -> float:
    f = float(q)
    return f if Fraction(f) <= q else math.nextafter(f, -math.inf)


def _float_up(q: Fraction) -> float:
    f = float(q)
    return f if Fraction(f) >= q else math.nextafter(f, math.inf)


def _f32_inward_up(q: Fraction) -> float:
    """Smallest float32 >= q, as a Python float."""
    f = np.float32(float(q))
    if Fraction(float(f)) < q:
        f = np.nextafter(f, np.float32(np.inf))
    return float(f)


def _f32_inward_down(q: Fraction) -> float:
    """Largest float32 <= q, as a Python float."""
    f = np.float32(float(q))
    if Fraction(float(f)) > q:
        f = np.nextafter(f, np.float32(-np.inf))
    return float(f)


@dataclass(frozen=True)
class Box:
    """An axis-aligned box ``lower <= x <= upper`` with exact rational bounds."""

    lower: tuple[Fraction, ...]
    upper: tuple[Fraction, ...]

    def __post_init__(self) -> None:
        if len(self.lower) != len(self.upper):
            raise DomainError(
                f"domain has {len(self.lower)} lower and {len(self.upper)} upper bounds"
            )
        if not self.lower:
            raise DomainError("domain is empty (no inputs)")
        for i, (lo, hi) in enumerate(zip(self.lower, self.upper)):
            if lo > hi:
                raise DomainError(f"domain is inverted at input {i}: lower {lo} > upper {hi}")

    @property
    def dim(self) -> int:
        return len(self.lower)

    def lower_float(self) -> np.ndarray:
        """Float64 lower bounds rounded down (the float box encloses the exact box)."""
        return np.array([_float_down(v) for v in self.lower])

    def upper_float(self) -> np.ndarray:
        """Float64 upper bounds rounded up."""
        return np.array([_float_up(v) for v in self.upper])

    def float32_box(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The float32 points inside the exact box, as (lower, upper), or None if there are none."""
        lo = np.array([_f32_inward_up(v) for v in self.lower])
        hi = np.array([_f32_inward_down(v) for v in self.upper])
        if np.any(lo > hi):
            return None
        return lo, hi

    def contains(self, x) -> bool:
        """Exact membership test for a point given as floats or Fractions."""
        return all(lo <= Fraction(v) <= hi for v, lo, hi in zip(x, self.lower, self.upper))

    def describe(self) -> str:
        if len(set(self.lower)) == 1 and len(set(self.upper)) == 1:
            return f"[{_fmt(self.lower[0])}, {_fmt(self.upper[0])}]^{self.dim}"
        return " x ".join(f"[{_fmt(lo)}, {_fmt(hi)}]" for lo, hi in zip(self.lower, self.upper))


def _fmt(q: Fraction) -> str:
    if q.denominator == 1:
        return str(q.numerator)
    return f"{float(q):.9g}"


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
            "boxes": [
                {"lower": [float(v) for v in b.lower], "upper": [float(v) for v in b.upper]}
                for b in self.boxes
            ],
        }


def box_domain(lower, upper, source: str = "<api>") -> Domain:
    """A one-box domain from sequences (floats, ints, Fractions or decimal strings)."""
    return Domain((Box(tuple(_exact(v) for v in lower), tuple(_exact(v) for v in upper)),), source)


def _exact(value) -> Fraction:
    """Exact rational of a number; decimal strings are read exactly, floats bit-exactly."""
    try:
        if isinstance(value, Fraction):
            q = value
        elif isinstance(value, str):
            text = value.strip()
            if text.lower() in ("nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "-infinity"):
                raise DomainError(f"domain bound {value!r} is not a finite number")
            q = Fraction(text)
        elif isinstance(value, (int, np.integer)):
            q = Fraction(int(value))
        else:
            f = float(value)
            if not math.isfinite(f):
                raise DomainError(f"domain bound {value!r} is not a finite number")
            q = Fraction(f)
    except (ValueError, ZeroDivisionError, TypeError):
        raise DomainError(f"domain bound {value!r} is not a number") from None
    return q


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
            dom = read_vnnlib_domain(path)
        elif lowered.endswith(".json"):
            dom = _json_domain(path, n_inputs)
        elif ":" in text and not path.exists():
            dom = _interval_domain(text, n_inputs, text)
        else:
            raise DomainError(
                f"domain {text!r} is neither LO:HI nor a .vnnlib or .json file"
                + ("" if path.exists() else " (no such file)")
            )
    if dom.dim != n_inputs:
        raise ShapeMismatchError(
            f"domain {dom.source} has {dom.dim} inputs but the networks take {n_inputs}"
        )
    return dom


def _interval_domain(text: str, n: int, source: str) -> Domain:
    parts = text.split(":")
    if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
        raise DomainError(f"domain {text!r} is not of the form LO:HI")
    lo, hi = _exact(parts[0]), _exact(parts[1])
    if lo > hi:
        raise DomainError(f"domain {text!r} is inverted: {parts[0]} > {parts[1]}")
    return Domain((Box((lo,) * n, (hi,) * n),), source)


def _json_domain(path: Path, n: int) -> Domain:
    if not path.is_file():
        raise DomainError(f"{path}: no such domain file")
    try:
        data = json.loads(path.read_text(), parse_float=Fraction, parse_constant=_reject_constant)
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


def _atom_bounds(expr, path: Path) -> list[tuple[int, str, Fraction]]:
    """Input bounds of an ``and`` of comparisons: (index, 'lo'|'hi'|'eq', value)."""
    if isinstance(expr, list) and expr and expr[0] == "and":
        out = []
        for e in expr[1:]:
            out.extend(_atom_bounds(e, path))
        return out
    if not (isinstance(expr, list) and len(expr) == 3 and expr[0] in ("<=", ">=", "=", "<", ">")):
        raise DomainError(f"{path}: unsupported input constraint {_show(expr)}")
    op, a, b = expr
    if isinstance(a, str) and a.startswith("X_") and not _is_var(b):
        var, value, flipped = a, b, False
    elif isinstance(b, str) and b.startswith("X_") and not _is_var(a):
        var, value, flipped = b, a, True
    else:
        raise DomainError(f"{path}: unsupported input constraint {_show(expr)}")
    try:
        index = int(var[2:])
    except ValueError:
        raise DomainError(f"{path}: bad variable name {var}") from None
    q = _exact(value if isinstance(value, str) else _show(value))
    if op == "=":
        return [(index, "eq", q)]
    upper = op in ("<=", "<")
    if flipped:
        upper = not upper
    return [(index, "hi" if upper else "lo", q)]


def _is_var(x) -> bool:
    return isinstance(x, str) and (x.startswith("X_") or x.startswith("Y_"))


def _show(expr) -> str:
    if isinstance(expr, str):
        return expr
    return "(" + " ".join(_show(e) for e in expr) + ")"


def read_vnnlib_domain(path: Path) -> Domain:
    """The input region of a VNN-LIB file: its box, or a union of boxes.

    Output constraints (on ``Y_*``) describe a property, not the domain, and are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise DomainError(f"{path}: no such VNN-LIB file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DomainError(f"{path}: cannot read ({exc})") from None
    exprs = _parse_sexprs(_tokenize(text), path)
    n = 0
    common: list[tuple[int, str, Fraction]] = []
    disjunctions: list[list[list[tuple[int, str, Fraction]]]] = []
    for e in exprs:
        if not isinstance(e, list) or not e:
            raise DomainError(f"{path}: unexpected token {_show(e)}")
        if e[0] == "declare-const" and len(e) >= 2 and str(e[1]).startswith("X_"):
            try:
                n = max(n, int(e[1][2:]) + 1)
            except ValueError:
                raise DomainError(f"{path}: bad variable name {e[1]}") from None
        elif e[0] == "assert" and len(e) == 2:
            body = e[1]
            if not _mentions(body, "X_"):
                continue  # output property
            if _mentions(body, "Y_"):
                raise DomainError(f"{path}: constraint mixes inputs and outputs: {_show(body)[:80]}")
            if isinstance(body, list) and body and body[0] == "or":
                disjunctions.append([_atom_bounds(c, path) for c in body[1:]])
            else:
                common.extend(_atom_bounds(body, path))
    if n == 0:
        raise DomainError(f"{path}: declares no input variables X_i")
    if len(disjunctions) > 1:
        raise DomainError(f"{path}: more than one disjunction over the inputs is not supported")
    alternatives = disjunctions[0] if disjunctions else [[]]
    boxes = []
    for alt in alternatives:
        lo: list[Fraction | None] = [None] * n
        hi: list[Fraction | None] = [None] * n
        for index, kind, q in common + alt:
            if index >= n:
                raise DomainError(f"{path}: X_{index} is used but not declared")
            if kind in ("lo", "eq"):
                lo[index] = q if lo[index] is None else max(lo[index], q)
            if kind in ("hi", "eq"):
                hi[index] = q if hi[index] is None else min(hi[index], q)
        for i in range(n):
            if lo[i] is None or hi[i] is None:
                side = "lower" if lo[i] is None else "upper"
                raise DomainError(f"{path}: X_{i} has no {side} bound")
            if lo[i] > hi[i]:
                raise DomainError(f"{path}: X_{i} has an empty range [{lo[i]}, {hi[i]}]")
        boxes.append(Box(tuple(lo), tuple(hi)))
    return Domain(tuple(boxes), str(path))
