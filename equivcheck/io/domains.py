"""Reading input domains: ``LO:HI`` text, JSON files and VNN-LIB files, into exact
:class:`~equivcheck.core.domain.Domain` s.

Decimal text is read exactly (never through a float); strict VNN-LIB comparisons give strict
bounds; sizes are checked against the networks' input count before anything is allocated.
"""

from __future__ import annotations

import json
import warnings
from fractions import Fraction
from pathlib import Path

from equivcheck.core.domain import Box, Domain, exact_bound
from equivcheck.core.rational import format_rational, parse_decimal
from equivcheck.errors import DomainError, ShapeMismatchError

DEFAULT_DOMAIN_TEXT = "0:1"
MAX_INPUTS = 10**7  # a VNN-LIB file may not declare more inputs than this (memory guard)
# one input bound from VNN-LIB: (input index, "lo" | "hi" | "eq", value, strict)
Atom = tuple[int, str, Fraction, bool]


class IgnoredConstraintWarning(UserWarning):
    """A VNN-LIB constraint on the outputs (``Y_*``), or mixing inputs and outputs, was left out
    of the domain: the domain is the input region alone. The command line prints it as a note."""


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
    """``path.is_file()``, False for a text that is no valid path."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _interval_domain(text: str, n: int, source: str) -> Domain:
    """The box ``[LO, HI]^n`` of an ``LO:HI`` text (both read exactly)."""
    parts = text.split(":")
    if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
        raise DomainError(f"domain {text!r} is not of the form LO:HI")
    lo, hi = exact_bound(parts[0]), exact_bound(parts[1])
    if lo > hi:
        raise DomainError(f"domain {text!r} is inverted: {parts[0]} > {parts[1]}")
    return Domain((Box((lo,) * n, (hi,) * n),), source)


def _json_domain(path: Path, n: int) -> Domain:
    """The box of a JSON file ``{"lower": ..., "upper": ...}``, every number read exactly from
    its text (NaN and Infinity refused)."""
    if not _is_file(path):
        raise DomainError(f"{path}: no such domain file")
    try:
        data = json.loads(path.read_text(), parse_float=exact_bound, parse_int=exact_bound, parse_constant=_reject_constant)
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
            return tuple(exact_bound(x) for x in _flatten(v))
        return (exact_bound(v),) * n

    return Domain((Box(vec("lower"), vec("upper")),), str(path))


def _reject_constant(name: str):
    raise DomainError(f"domain bound {name} is not a finite number")


def _flatten(v):
    """The numbers of nested lists, in order; refuses booleans and nulls."""
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
    """The tokens of SMT-LIB text: parentheses and atoms, comments (``;``) dropped."""
    tokens: list[str] = []
    for line in text.splitlines():
        line = line.split(";", 1)[0]
        tokens.extend(line.replace("(", " ( ").replace(")", " ) ").split())
    return tokens


def _parse_sexprs(tokens: list[str], path: Path) -> list:
    """The top-level s-expressions (nested lists of atoms); refuses unbalanced parentheses."""
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
    """True when some atom of ``expr`` starts with ``prefix``."""
    if isinstance(expr, str):
        return expr.startswith(prefix)
    return any(_mentions(e, prefix) for e in expr)


def _atom_bounds(expr, path: Path, n_max: int, ignored: list | None = None) -> list[Atom]:
    """Input bounds of an ``and`` of comparisons: (index, 'lo'|'hi'|'eq', value, strict).
    With ``ignored`` (a list), a comparison that mentions an output (``Y_*``) is appended to it
    instead of being refused: it constrains the property, not the input region."""
    if isinstance(expr, list) and expr and expr[0] == "and":
        out = []
        for e in expr[1:]:
            out.extend(_atom_bounds(e, path, n_max, ignored))
        return out
    if ignored is not None and _mentions(expr, "Y_"):
        ignored.append(expr)
        return []
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
    """The index ``i`` of ``X_i``, below ``n_max``."""
    digits = var[2:]
    if not digits.isdigit() or len(digits) > 9:
        raise DomainError(f"{path}: bad variable name {var[:40]}")
    index = int(digits)
    if index >= n_max:
        raise DomainError(f"{path}: {var} is out of range: the networks take {n_max} inputs")
    return index


def _vnnlib_number(value, path: Path) -> Fraction:
    """A constant (``0.5``, ``(- 0.5)``), read exactly."""
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
    """True for an input or output variable name."""
    return isinstance(x, str) and (x.startswith("X_") or x.startswith("Y_"))


def _show(expr) -> str:
    """An s-expression as text again (for messages)."""
    if isinstance(expr, str):
        return expr
    return "(" + " ".join(_show(e) for e in expr) + ")"


def read_vnnlib_domain(path: Path, n_inputs: int | None = None) -> Domain:
    """The input region of a VNN-LIB file: its box, or a union of boxes.

    The domain is the input region: the comparisons on inputs alone (``X_i`` against a
    constant). Output constraints (on ``Y_*``), and comparisons that mix inputs and outputs,
    describe a property, not the domain: they are left out, with one
    :class:`IgnoredConstraintWarning` saying how many and showing the first (an assertion on
    outputs alone is left out silently, as it always was). In a disjunction, each branch's input
    comparisons give one box (equal boxes once). Strict comparisons (``<``, ``>``) give strict
    bounds, honoured exactly. With ``n_inputs``, a variable ``X_i`` with ``i >= n_inputs`` is
    refused before anything is allocated for it.
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
    common: list[Atom] = []
    disjunctions: list[list[list[Atom]]] = []
    ignored: list = []
    for e in exprs:
        if not isinstance(e, list) or not e:
            raise DomainError(f"{path}: unexpected token {_show(e)[:80]}")
        if e[0] == "declare-const" and len(e) >= 2 and str(e[1]).startswith("X_"):
            n = max(n, _var_index(str(e[1]), path, n_max) + 1)
        elif e[0] == "assert" and len(e) == 2:
            body = e[1]
            if not _mentions(body, "X_"):
                continue  # output property
            if isinstance(body, list) and body and body[0] == "or":
                disjunctions.append([_atom_bounds(c, path, n_max, ignored) for c in body[1:]])
            else:
                common.extend(_atom_bounds(body, path, n_max, ignored))
    if n == 0:
        raise DomainError(f"{path}: declares no input variables X_i")
    if len(disjunctions) > 1:
        raise DomainError(f"{path}: more than one disjunction over the inputs is not supported")
    alternatives = disjunctions[0] if disjunctions else [[]]
    boxes = tuple(dict.fromkeys(_box_of(common + alt, n, path) for alt in alternatives))
    if ignored:
        more = f" and {len(ignored) - 1} more" if len(ignored) > 1 else ""
        warnings.warn(IgnoredConstraintWarning(
            f"{path}: {len(ignored)} constraint(s) on the outputs ignored, e.g. "
            f"{_show(ignored[0])[:80]}{more}: the domain is the input region alone"),
            stacklevel=2)
    return Domain(boxes, str(path))


def _box_of(atoms: list[Atom], n: int, path: Path) -> Box:
    """The box over ``n`` inputs the bounds ``atoms`` state together: the tightest bound on each
    side wins (strict when a strict bound ties it); every input needs both sides."""
    lo: list[Fraction | None] = [None] * n
    hi: list[Fraction | None] = [None] * n
    lo_strict = [False] * n
    hi_strict = [False] * n
    for index, kind, q, strict in atoms:
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
        return Box(tuple(lo), tuple(hi), tuple(lo_strict), tuple(hi_strict))
    except DomainError as exc:
        raise DomainError(f"{path}: {exc}") from None
