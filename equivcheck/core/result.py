"""Verdicts and results: the objects every front end (CLI, pytest plugin, reports) renders.

JSON. Every ``to_dict`` here returns strict JSON values (``json.dumps(..., allow_nan=False)``
accepts them), by these rules, which :func:`json_safe` applies to any object:

* a float that is not finite is written as the *string* ``"inf"``, ``"-inf"`` or ``"nan"``
  (JSON has no such numbers; a string keeps the fact visible, ``null`` would hide it);
* an exact rational is a string, ``"p/q"`` or ``"p"``, exact up to :data:`MAX_EXACT_DIGITS`
  decimal digits in numerator and denominator, written without Python's 4,300-digit
  int-to-text limit; a longer one is written ``"~"`` followed by 9 significant digits (the
  only inexact case, marked so that it cannot be read back as exact);
* an integer of more than :data:`MAX_JSON_INT_DIGITS` digits (which Python's own ``json.loads``
  would refuse to read) is written as a string by the rule for rationals.
"""

from __future__ import annotations

import contextlib
import enum
import math
import sys
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from equivcheck.core.domain import Domain
from equivcheck.core.options import BoundMethod, ProverOptions
from equivcheck.core.spec import Spec

MAX_EXACT_DIGITS = 100_000  # longest integer written exactly (int -> text is quadratic)
MAX_JSON_INT_DIGITS = 4_000  # longest integer written as a JSON number (readers refuse 4,300+)
_LOG10_2 = math.log10(2)


def _digits_at_most(n: int) -> int:
    """An upper bound on the number of decimal digits of ``n`` (exact to within one)."""
    return int(abs(n).bit_length() * _LOG10_2) + 1


def int_text(n: int) -> str:
    """The exact decimal text of ``n`` for any size up to :data:`MAX_EXACT_DIGITS` digits,
    whatever ``sys.get_int_max_str_digits()`` says; beyond that ``"~"`` and 9 significant
    digits."""
    from decimal import Decimal

    n = int(n)
    if _digits_at_most(n) <= 4000:
        return str(n)
    if _digits_at_most(n) <= MAX_EXACT_DIGITS:
        return str(Decimal(n))  # libmpdec: no int-to-str limit
    return _approx_text(n, 1)


def _approx_text(num: int, den: int) -> str:
    """``"~"`` and ``num/den`` to 9 significant digits, from logarithms (cheap for any size)."""
    if num == 0:
        return "0"
    lg = math.log10(abs(num)) - math.log10(den)  # math.log10 takes ints of any size
    exp = math.floor(lg)
    mant = round(10 ** (lg - exp), 8)
    if mant >= 10:
        mant, exp = mant / 10, exp + 1
    return f"~{'-' if num < 0 else ''}{mant:.8f}e{exp:+d}"


def fraction_text(q: Fraction) -> str:
    """An exact rational as ``"p/q"`` (``"p"`` for an integer), by the module's JSON rules."""
    q = Fraction(q)
    if max(_digits_at_most(q.numerator), _digits_at_most(q.denominator)) > MAX_EXACT_DIGITS:
        return _approx_text(q.numerator, q.denominator)
    if q.denominator == 1:
        return int_text(q.numerator)
    return f"{int_text(q.numerator)}/{int_text(q.denominator)}"


def json_number(x: float) -> float | str:
    """A float as strict JSON allows it: finite floats unchanged; inf, -inf and NaN as the
    strings ``"inf"``, ``"-inf"`` and ``"nan"``."""
    x = float(x)
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


@contextlib.contextmanager
def long_int_text():
    """Let ``str(int)`` write integers of up to :data:`MAX_EXACT_DIGITS` digits inside the block
    (Python refuses more than 4,300 by default), then restore the limit.

    For ``to_dict`` methods that write exact rationals with ``str``: exact rationals are
    certificates (a certified bound, an exact margin), so JSON keeps them exact rather than
    rounded; the cap keeps the quadratic int-to-text cost bounded (0.2 s at the cap).
    """
    get = getattr(sys, "get_int_max_str_digits", None)
    old = get() if get is not None else 0
    if old == 0 or old >= MAX_EXACT_DIGITS:
        yield
        return
    sys.set_int_max_str_digits(MAX_EXACT_DIGITS)
    try:
        yield
    finally:
        sys.set_int_max_str_digits(old)


def json_safe(obj: Any) -> Any:
    """``obj`` turned into plain JSON values by the module's rules: dicts (keys as strings),
    lists, strings, bools, None, finite floats and short ints; Fractions, long ints and
    non-finite floats become strings; numpy scalars and arrays, enums and paths are converted.
    Raises ``TypeError`` for anything else (a bug: every result has a ``to_dict``)."""
    import numpy as np

    if obj is None or isinstance(obj, (str, bool)):
        return obj
    if isinstance(obj, enum.Enum):
        return json_safe(obj.value)
    if isinstance(obj, (int, np.integer)):
        n = int(obj)
        return n if _digits_at_most(n) <= MAX_JSON_INT_DIGITS else int_text(n)
    if isinstance(obj, (float, np.floating)):
        return json_number(obj)
    if isinstance(obj, Fraction):
        return fraction_text(obj)
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    import os

    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class Verdict(str, enum.Enum):
    """Three-valued verdict: a string enum (``str(v) == v.value == "proved"``, so it compares
    equal to its label and JSON writes it as one), ordered REFUTED < UNKNOWN < PROVED so that
    the weakest of several is ``min``. It has no truth value: ``assert result.verdict`` would
    pass on UNKNOWN; use ``result.proved`` or compare with ``Verdict.PROVED``."""

    REFUTED = "refuted"
    UNKNOWN = "unknown"
    PROVED = "proved"

    @property
    def label(self) -> str:
        """The lower-case name: ``"proved"``, ``"refuted"`` or ``"unknown"``."""
        return self.value

    @property
    def rank(self) -> int:
        """0 for REFUTED, 1 for UNKNOWN, 2 for PROVED: the order ``min`` and ``<`` use."""
        return _VERDICT_RANK[self.value]

    def __str__(self) -> str:  # print(result.verdict) shows "proved"
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    def __bool__(self) -> bool:
        raise TypeError("a Verdict has no truth value: compare it with Verdict.PROVED, or use "
                        "result.proved")

    def _rank_of(self, other: object) -> int:
        if not isinstance(other, Verdict):
            raise TypeError(f"cannot order a Verdict and a {type(other).__name__}")
        return other.rank

    def __lt__(self, other: object) -> bool:
        return self.rank < self._rank_of(other)

    def __le__(self, other: object) -> bool:
        return self.rank <= self._rank_of(other)

    def __gt__(self, other: object) -> bool:
        return self.rank > self._rank_of(other)

    def __ge__(self, other: object) -> bool:
        return self.rank >= self._rank_of(other)

    __hash__ = str.__hash__


_VERDICT_RANK = {"refuted": 0, "unknown": 1, "proved": 2}


EXIT_CODES = {Verdict.PROVED: 0, Verdict.REFUTED: 1, Verdict.UNKNOWN: 3}


class FoundBy(str, enum.Enum):
    """Which search found a counterexample."""

    FALSIFIER = "falsifier"  # sampling and local search before the solver
    SOLVER = "solver"  # a model of the exact query (or a float point near it)
    AUDIT = "audit witness search"  # the audit's search for the worst deviation

    def __str__(self) -> str:
        return self.value


def _q(v: Fraction) -> str:
    return fraction_text(v) if isinstance(v, Fraction) else repr(v)


@dataclass(frozen=True)
class Evaluation:
    """Both networks' outputs at one input on one backend, and the spec's margin there."""

    backend: str  # "exact", "float64", "onnxruntime"
    output_a: tuple[float, ...]
    output_b: tuple[float, ...]
    margin: float
    violated: bool
    exact_margin: Fraction | None = None  # only for the exact backend
    error: str | None = None  # backend could not run, or its outputs could not be judged

    @property
    def finite(self) -> bool:
        """True when the backend ran and every output and the margin are finite numbers; an
        evaluation with an inf or NaN output shows nothing, whatever ``violated`` says."""
        values = (*self.output_a, *self.output_b, self.margin)
        return bool(self.output_a) and all(math.isfinite(float(v)) for v in values)

    def to_dict(self) -> dict:
        d: dict[str, Any] = {
            "backend": self.backend,
            "output_a": [json_number(v) for v in self.output_a],
            "output_b": [json_number(v) for v in self.output_b],
            "margin": json_number(self.margin),
            "violated": self.violated,
            "finite": self.finite,
        }
        if self.exact_margin is not None:
            d["margin_exact"] = _q(self.exact_margin)
        if self.error:
            d["error"] = self.error
        return d


@dataclass(frozen=True)
class Counterexample:
    """An input in the domain where the two networks disagree, re-evaluated on every backend.

    ``input`` is the point as floats (float32-representable when possible, so onnxruntime runs
    exactly this point); ``exact`` is the evaluation in rational arithmetic on the stored weights
    at that point, ``float64`` our numpy evaluation and ``onnxruntime`` the original files.
    """

    input: tuple[float, ...]
    box_index: int
    found_by: FoundBy
    exact: Evaluation
    float64: Evaluation
    onnxruntime: Evaluation | None
    note: str = ""
    exact_input: tuple[Fraction, ...] = ()  # the point the exact evaluation is at (in the domain)
    float_input_in_domain: bool = True  # the float point(s) run in float64/onnxruntime lie in the domain

    def __post_init__(self) -> None:
        object.__setattr__(self, "found_by", FoundBy(self.found_by))

    @property
    def reproduces(self) -> bool:
        """True when the violation is seen in float64 and in onnxruntime (float32) too, at points
        that lie in the domain, with finite outputs (inf or NaN outputs never reproduce)."""
        ort = self.onnxruntime
        ort_ok = ort is not None and ort.violated and ort.finite
        f64_ok = self.float64.violated and self.float64.finite
        return self.exact.violated and f64_ok and ort_ok and self.float_input_in_domain

    def to_dict(self) -> dict:
        return {
            "input": [json_number(v) for v in self.input],
            "input_exact": [_q(v) for v in self.exact_input],
            "float_input_in_domain": self.float_input_in_domain,
            "box_index": self.box_index,
            "found_by": self.found_by.value,
            "reproduces": self.reproduces,
            "exact": self.exact.to_dict(),
            "float64": self.float64.to_dict(),
            "onnxruntime": self.onnxruntime.to_dict() if self.onnxruntime else None,
            "note": self.note,
        }


@dataclass(frozen=True)
class LayerStability:
    """How the check's rigorous bounds (its bound method) classified the ReLUs of one hidden
    layer of one network over one box."""

    network: str  # "a" or "b"
    layer: int
    width: int
    active: int
    inactive: int
    unstable: int
    shared: bool = False  # identical to the other network's layer and encoded once

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class BoxResult:
    """The outcome on one box of the domain."""

    index: int
    verdict: Verdict
    reason: str
    stability: tuple[LayerStability, ...] = ()
    unstable_encoded: int = 0
    shared_layers: int = 0
    shared_units: int = 0
    parts: int = 0  # sub-boxes examined by the exact search (0: none needed, 1: no splitting)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "verdict": self.verdict.label,
            "reason": self.reason,
            "stability": [s.to_dict() for s in self.stability],
            "unstable_encoded": self.unstable_encoded,
            "shared_layers": self.shared_layers,
            "shared_units": self.shared_units,
            "parts": self.parts,
            "seconds": round(self.seconds, 4),
        }


@dataclass(frozen=True)
class ProofResult:
    """The answer of :func:`equivcheck.prove` (and of
    :func:`equivcheck.solve.prover.prove_networks`): the verdict, the spec and the domain it is
    about, and the options it was reached with."""

    verdict: Verdict
    reason: str
    model_a: str
    model_b: str
    spec: Spec
    domain: Domain
    counterexample: Counterexample | None
    boxes: tuple[BoxResult, ...]
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)
    options: ProverOptions = field(default_factory=ProverOptions)  # as asked for
    bounds: BoundMethod | None = None  # the bound method the boxes ran (AUTO resolved; None:
    # the options')

    @property
    def proved(self) -> bool:
        """True only when the verdict is PROVED (``assert result.proved`` is the safe test: a
        :class:`Verdict` itself has no truth value)."""
        return self.verdict is Verdict.PROVED

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    @property
    def domain_text(self) -> str:
        """The domain in words (:meth:`Domain.describe`)."""
        return self.domain.describe()

    @property
    def stability(self) -> tuple[LayerStability, ...]:
        return tuple(s for b in self.boxes for s in b.stability)

    def _repr_html_(self) -> str:
        """The result as a small HTML table, for notebooks (Jupyter calls this to display it)."""
        return result_html(self)

    def to_dict(self) -> dict:
        return {
            "verdict": self.verdict.label,
            "reason": self.reason,
            "model_a": self.model_a,
            "model_b": self.model_b,
            "spec": json_safe(self.spec.to_dict()),
            "domain": json_safe(self.domain.to_dict()),
            "counterexample": self.counterexample.to_dict() if self.counterexample else None,
            "boxes": [b.to_dict() for b in self.boxes],
            "seconds": round(self.seconds, 4),
            "notes": list(self.notes),
            "options": self.options.to_dict(),
            "bounds": (self.bounds or self.options.bound_method).value,
        }


def json_text(obj: Any, indent: int | None = None) -> str:
    """``obj`` (a result with ``to_dict`` or plain data) as strict JSON: no NaN or Infinity
    (non-finite floats become the strings "inf", "-inf", "nan"), exact rationals as strings,
    by the rules of this module's docstring."""
    import json

    with long_int_text():
        data = obj.to_dict() if hasattr(obj, "to_dict") else obj
        return json.dumps(json_safe(data), indent=indent, allow_nan=False)


_VERDICT_COLOURS = {"proved": "#1a7f37", "refuted": "#cf222e", "unknown": "#9a6700"}


def result_html(result: ProofResult) -> str:
    """``result`` as one self-contained HTML table (escaped): the verdict in colour, the reason,
    the models, the relation, the domain, the counterexample (when there is one), the notes."""
    from html import escape

    spec = result.spec.to_dict()
    relation = ", ".join(f"{k} {v}" for k, v in json_safe(spec).items())
    rows = [("models", f"{result.model_a} vs {result.model_b}"), ("relation", relation),
            ("domain", result.domain_text), ("time", f"{result.seconds:.2f} s")]
    cex = result.counterexample
    if cex is not None:
        shown = ", ".join(f"{v:.6g}" for v in cex.input[:8])
        more = f", ... ({len(cex.input)} values)" if len(cex.input) > 8 else ""
        rows.append(("counterexample", f"x = [{shown}{more}]; margin {cex.exact.margin:.6g}; "
                                       f"reproduces in float: {'yes' if cex.reproduces else 'no'}"))
    rows.extend(("note", note) for note in result.notes)
    colour = _VERDICT_COLOURS[result.verdict.value]
    body = "".join(f"<tr><th style='text-align:left'>{escape(k)}</th>"
                   f"<td style='text-align:left'>{escape(str(v))}</td></tr>" for k, v in rows)
    return (f"<table><caption style='text-align:left'><b style='color:{colour}'>"
            f"{result.verdict.value.upper()}</b> {escape(result.reason)}</caption>{body}</table>")
