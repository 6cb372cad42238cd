"""Input domains with exact bounds (strict or not), their texts (``LO:HI``, JSON, VNN-LIB), and
mangled texts that the tool must refuse.

A :class:`DomainSpec` is the ground truth: every bound is a decimal string read exactly with
``Fraction``, and a bound may be strict (only VNN-LIB can say so). Rendering never rounds: the
decimal text goes into the file as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np

FLOAT_MAX = Fraction(float(np.finfo(np.float64).max))
FLOAT32_MAX = Fraction(float(np.finfo(np.float32).max))
FLOAT32_TINY = Fraction(float(np.finfo(np.float32).tiny))


@dataclass(frozen=True)
class Interval:
    """``lo <= x <= hi`` (``<`` on a side marked strict); bounds are decimal strings."""

    lo: str
    hi: str
    lo_strict: bool = False
    hi_strict: bool = False

    @property
    def lo_q(self) -> Fraction:
        return Fraction(self.lo)

    @property
    def hi_q(self) -> Fraction:
        return Fraction(self.hi)

    def contains(self, v: Fraction) -> bool:
        lo, hi = self.lo_q, self.hi_q
        above = v > lo if self.lo_strict else v >= lo
        below = v < hi if self.hi_strict else v <= hi
        return above and below

    def is_empty(self) -> bool:
        lo, hi = self.lo_q, self.hi_q
        return lo > hi or (lo == hi and (self.lo_strict or self.hi_strict))

    def float_range(self) -> tuple[float, float] | None:
        """The smallest and largest float64 inside the interval, or None if it holds none."""
        lo = _float_up(self.lo_q, self.lo_strict)
        hi = _float_down(self.hi_q, self.hi_strict)
        return (lo, hi) if lo <= hi else None

    def exact_inside(self) -> Fraction:
        """A rational point inside the (non-empty) interval: the midpoint."""
        return (self.lo_q + self.hi_q) / 2


def _clamp(q: Fraction) -> Fraction:
    return max(-FLOAT_MAX, min(FLOAT_MAX, q))


def _float_up(q: Fraction, strict: bool) -> float:
    f = float(_clamp(q))
    while Fraction(f) < q or (strict and Fraction(f) == q):
        f = math.nextafter(f, math.inf)
        if math.isinf(f):
            return f
    return f


def _float_down(q: Fraction, strict: bool) -> float:
    f = float(_clamp(q))
    while Fraction(f) > q or (strict and Fraction(f) == q):
        f = math.nextafter(f, -math.inf)
        if math.isinf(f):
            return f
    return f


@dataclass(frozen=True)
class DomainSpec:
    """A union of boxes; each box is one :class:`Interval` per input."""

    boxes: tuple[tuple[Interval, ...], ...]

    @property
    def dim(self) -> int:
        return len(self.boxes[0])

    @property
    def has_strict(self) -> bool:
        return any(iv.lo_strict or iv.hi_strict for box in self.boxes for iv in box)

    def contains(self, x: Sequence[Fraction]) -> bool:
        """Exact membership (strict bounds honoured)."""
        return len(x) == self.dim and any(
            all(iv.contains(Fraction(v)) for iv, v in zip(box, x)) for box in self.boxes)

    def is_empty(self) -> bool:
        return all(any(iv.is_empty() for iv in box) for box in self.boxes)

    def is_exotic(self) -> bool:
        """True when refusing the domain (exit 4) is acceptable: a bound beyond the float32
        range or below its smallest normal number, or an interval holding no float32 number."""
        for box in self.boxes:
            for iv in box:
                for q in (iv.lo_q, iv.hi_q):
                    if abs(q) > FLOAT32_MAX or (q and abs(q) < FLOAT32_TINY):
                        return True
                if _float_down(iv.hi_q, iv.hi_strict) < _float_up(iv.lo_q, iv.lo_strict):
                    return True
                lo32 = np.float32(_float_up(iv.lo_q, iv.lo_strict))
                while not iv.contains(Fraction(float(lo32))) and Fraction(float(lo32)) <= iv.lo_q:
                    lo32 = np.nextafter(lo32, np.float32(np.inf))
                if not iv.contains(Fraction(float(lo32))):
                    return True
        return False

    def sample_points(self, n: int, rng: np.random.Generator):
        """About ``n`` points of the domain: ``(x, exact)`` with ``x`` a float64 array (rows)
        and ``exact(i)`` the exact coordinates of row ``i`` (``Fraction`` s).

        A coordinate is a float inside its interval when the interval holds one (its ends,
        centre, then uniform draws), otherwise the interval's rational midpoint (then ``x``
        holds its nearest float, for screening only). Rows lie in the domain by construction.
        """
        boxes = [box for box in self.boxes if not any(iv.is_empty() for iv in box)]
        if not boxes:
            return np.zeros((0, self.dim)), lambda i: []
        per = max(1, n // len(boxes))
        blocks, rationals = [], []  # rationals[b][j]: the midpoint, or None for float columns
        for box in boxes:
            cols, rats = [], []
            for iv in box:
                rg = iv.float_range()
                if rg is None:
                    q = iv.exact_inside()
                    cols.append(np.full(per, float(_clamp(q))))
                    rats.append(q)
                    continue
                lo, hi = rg
                with np.errstate(all="ignore"):
                    u = rng.uniform(0.0, 1.0, per)
                    span = hi - lo
                    vals = lo + span * u if math.isfinite(span) else lo + (hi / 2 - lo / 2) * 2 * u
                vals = np.clip(np.nan_to_num(vals, nan=lo), lo, hi)
                head = [lo, hi, lo / 2 + hi / 2][:per]
                vals[: len(head)] = rng.permutation(head)
                cols.append(np.clip(vals, lo, hi))
                rats.append(None)
            blocks.append(np.column_stack(cols))
            rationals.append(rats)
        x = np.vstack(blocks)

        def exact(i: int) -> list[Fraction]:
            rats = rationals[i // per]
            return [Fraction(float(v)) if q is None else q for v, q in zip(x[i], rats)]

        return x, exact

    def samples(self, n: int, rng: np.random.Generator) -> list[tuple[list[Fraction], np.ndarray]]:
        """``n`` points as (exact coordinates, float64 approximation); see :meth:`sample_points`."""
        x, exact = self.sample_points(n, rng)
        return [(exact(i), x[i]) for i in range(len(x))]

    # -- texts ---------------------------------------------------------------------------------
    def interval_text(self) -> str | None:
        """``LO:HI`` when the domain is one box with the same closed interval on every input."""
        if len(self.boxes) != 1 or len(set(self.boxes[0])) != 1:
            return None
        iv = self.boxes[0][0]
        if iv.lo_strict or iv.hi_strict:
            return None
        return f"{iv.lo}:{iv.hi}"

    def json_text(self, scalar: bool = False) -> str | None:
        """``{"lower": [...], "upper": [...]}`` with the decimal texts verbatim (closed boxes)."""
        if len(self.boxes) != 1 or self.has_strict:
            return None
        box = self.boxes[0]
        if scalar and len(set(box)) == 1:
            return f'{{"lower": {box[0].lo}, "upper": {box[0].hi}}}'
        lo = ", ".join(iv.lo for iv in box)
        hi = ", ".join(iv.hi for iv in box)
        return f'{{"lower": [{lo}], "upper": [{hi}]}}'

    def vnnlib_text(self, flip: int = 0, use_eq: bool = True, outputs: int = 0) -> str:
        """VNN-LIB: ``declare-const`` for every X_i (and ``outputs`` Y_j with a property on
        them), one assert per bound (or one ``or`` of ``and`` boxes); ``flip`` varies how
        comparisons are written."""
        lines = ["; generated by tests/fuzz"]
        lines += [f"(declare-const X_{i} Real)" for i in range(self.dim)]
        lines += [f"(declare-const Y_{j} Real)" for j in range(outputs)]

        def atoms(box, k):
            res = []
            for i, iv in enumerate(box):
                if use_eq and iv.lo == iv.hi and not (iv.lo_strict or iv.hi_strict):
                    res.append(f"(= X_{i} {iv.lo})")
                    continue
                f = (flip >> ((i + k) % 8)) & 1
                lo_op = ">" if iv.lo_strict else ">="
                hi_op = "<" if iv.hi_strict else "<="
                flipped = {">": "<", ">=": "<=", "<": ">", "<=": ">="}
                if f:
                    res.append(f"({flipped[lo_op]} {iv.lo} X_{i})")
                    res.append(f"({flipped[hi_op]} {iv.hi} X_{i})")
                else:
                    res.append(f"({lo_op} X_{i} {iv.lo})")
                    res.append(f"({hi_op} X_{i} {iv.hi})")
            return res

        if len(self.boxes) == 1:
            lines += [f"(assert {a})" for a in atoms(self.boxes[0], 0)]
        else:
            alts = " ".join("(and " + " ".join(atoms(box, k)) + ")"
                            for k, box in enumerate(self.boxes))
            lines.append(f"(assert (or {alts}))")
        if outputs:
            lines.append("(assert (<= Y_0 0.0))" if outputs == 1 else "(assert (>= Y_0 Y_1))")
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# mangled texts: each must be refused with exit 4

VNNLIB_MANGLES = ("drop_bound", "huge_index", "unbalanced", "garbage", "nan_bound", "inverted",
                  "empty_strict", "unknown_op", "no_inputs", "dim_mismatch",
                  "non_utf8", "var_var", "hex_number", "empty_file", "inf_bound")
JSON_MANGLES = ("not_object", "missing_upper", "nan_literal", "infinity_literal", "bool", "null",
                "wrong_length", "empty_list", "inverted", "trailing_garbage", "dict_bound",
                "nan_string", "not_json")


def mangle_vnnlib(dom: DomainSpec, kind: str) -> bytes:
    """A VNN-LIB file for ``dom`` broken by ``kind`` (see VNNLIB_MANGLES)."""
    text = dom.vnnlib_text(use_eq=False)
    lines = text.splitlines()
    asserts = [i for i, line in enumerate(lines) if line.startswith("(assert")]
    if kind == "drop_bound":
        if len(dom.boxes) > 1:
            return (text.replace("(<= X_0", "(<= Y_0", 1) if "(<= X_0" in text
                    else text.replace("X_0", "X_00", 1)).encode()
        del lines[asserts[-1]]
    elif kind == "huge_index":
        lines.insert(1, "(declare-const X_99999999999 Real)")
    elif kind == "unbalanced":
        lines[asserts[0]] = lines[asserts[0]][:-1]
    elif kind == "garbage":
        return b"hello (world\n"
    elif kind == "nan_bound":
        lines[asserts[0]] = _replace_last_number(lines[asserts[0]], "nan")
    elif kind == "inf_bound":
        lines[asserts[0]] = _replace_last_number(lines[asserts[0]], "inf")
    elif kind == "inverted":
        n = dom.dim
        lines = ["(declare-const X_%d Real)" % i for i in range(n)]
        lines += [f"(assert (>= X_{i} 1))" for i in range(n)]
        lines += [f"(assert (<= X_{i} 0.5))" for i in range(n)]
    elif kind == "empty_strict":
        n = dom.dim
        lines = ["(declare-const X_%d Real)" % i for i in range(n)]
        lines += [f"(assert (> X_{i} 0.5))" for i in range(n)]
        lines += [f"(assert (< X_{i} 0.5))" for i in range(n)]
    elif kind == "unknown_op":
        lines.append("(assert (distinct X_0 0.5))")
    elif kind == "no_inputs":
        return b"(declare-const Y_0 Real)\n(assert (<= Y_0 1))\n"
    elif kind == "dim_mismatch":
        n = dom.dim
        lines.insert(1, f"(declare-const X_{n} Real)")
        lines += [f"(assert (>= X_{n} 0))", f"(assert (<= X_{n} 1))"]
    elif kind == "non_utf8":
        return text.encode() + b"\xff\xfe; \xc3\x28\n"
    elif kind == "var_var":
        lines.append("(assert (<= X_0 X_0))")
    elif kind == "hex_number":
        lines[asserts[0]] = _replace_last_number(lines[asserts[0]], "#x1F")
    elif kind == "empty_file":
        return b""
    return ("\n".join(lines) + "\n").encode()


def _replace_last_number(line: str, new: str) -> str:
    head, _, tail = line.rstrip(")").rpartition(" ")
    closing = len(line) - len(line.rstrip(")"))
    return f"{head} {new}" + ")" * closing


def mangle_json(dom: DomainSpec, kind: str) -> bytes:
    """A JSON domain file for ``dom`` broken by ``kind`` (see JSON_MANGLES)."""
    n = dom.dim
    lo = [iv.lo for iv in dom.boxes[0]]
    hi = [iv.hi for iv in dom.boxes[0]]
    good = f'{{"lower": [{", ".join(lo)}], "upper": [{", ".join(hi)}]}}'
    texts = {
        "not_object": f"[{', '.join(lo)}]",
        "missing_upper": f'{{"lower": [{", ".join(lo)}]}}',
        "nan_literal": good.replace(lo[0], "NaN", 1),
        "infinity_literal": f'{{"lower": [{", ".join(lo)}], "upper": '
                            f'[{", ".join(["Infinity"] * n)}]}}',
        "bool": f'{{"lower": [{", ".join(["true"] * n)}], "upper": [{", ".join(hi)}]}}',
        "null": f'{{"lower": null, "upper": [{", ".join(hi)}]}}',
        "wrong_length": f'{{"lower": [{", ".join(lo + ["0"])}], "upper": [{", ".join(hi + ["1"])}]}}',
        "empty_list": '{"lower": [], "upper": []}',
        "inverted": f'{{"lower": [{", ".join(["2"] * n)}], "upper": [{", ".join(["1"] * n)}]}}',
        "trailing_garbage": good + " }",
        "dict_bound": f'{{"lower": {{"a": 0}}, "upper": [{", ".join(hi)}]}}',
        "nan_string": f'{{"lower": [{", ".join(chr(34) + "nan" + chr(34) for _ in lo)}], '
                      f'"upper": [{", ".join(hi)}]}}',
        "not_json": "lower: 0\nupper: 1\n",
    }
    return texts[kind].encode()
