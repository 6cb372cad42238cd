"""Equivalence notions: what "f and g agree at x" means.

A :class:`Spec` is one concrete relation between two output vectors. The same object decides,
for concrete outputs, whether the relation holds (:meth:`Spec.holds`) and by how much it is
violated (:meth:`Spec.margin`), in exact rationals or in floats, and it is what the solver
encoding negates. So a counterexample is always judged by the very relation that was proved.

Modes
-----
``strict``  f(x) = g(x) in every output (the default: the strongest claim, no parameter to pick).
``epsilon`` ||f(x) - g(x)|| <= eps in the L-infinity (default) or L1 norm.
``argmax``  the top-1 class is the same. Ties are broken as ``numpy.argmax`` does: the lowest
            index among the maximal outputs is *the* top-1 class. So at an exact tie a counterexample
            is possible (f ties classes 0 and 1 and picks 0, g prefers 1); such points are reported
            with a margin of 0 and, typically, do not reproduce in float.
``top1``    confidence-based top-1 (VeryDiff's delta-top-1): wherever f's softmax confidence (its
            largest softmax output, the outputs read as logits) is at least ``confidence`` DELTA,
            g picks the same top-1 class. Judged with the real softmax: exactly on rationals
            (:func:`confidence_gap`, rigorous decimal intervals around ``exp``), in float64 on
            floats. The solver proves it through the necessary condition
            z_i - z_j >= ln(DELTA / (1 - DELTA)) for every j (:meth:`Spec.logit_margin`, rounded
            down to a rational), so "proved" stays sound.

Output heads
------------
A model whose output goes through a trailing Softmax or LogSoftmax is imported without it (see
:mod:`equivcheck.io.onnx_head`). Argmax and top1 are about the logits anyway (a softmax keeps the
top class; top1 applies its own softmax), so they accept such a model. Strict and epsilon would
compare probabilities, which are not piecewise linear: they refuse it unless ``logits`` is set,
and then the relation is stated about the outputs before the head (:attr:`Spec.accepts_head`).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal
from fractions import Fraction
from typing import Sequence

import numpy as np

from equivcheck.core.rational import FLOAT64_MAX, format_rational, parse_decimal
from equivcheck.errors import InputError


class Mode(str, enum.Enum):
    STRICT = "strict"
    EPSILON = "epsilon"
    ARGMAX = "argmax"
    TOP1 = "top1"


class Norm(str, enum.Enum):
    LINF = "linf"
    L1 = "l1"


DEFAULT_EPSILON = Fraction(1, 10**6)


@dataclass(frozen=True)
class Spec:
    """An equivalence relation between two output vectors.

    ``tolerance`` is exact; it is only used in ``epsilon`` mode. ``confidence`` (exact, strictly
    between 0 and 1) is only used in ``top1`` mode. ``logits``: the relation is about the outputs
    before a Softmax/LogSoftmax head the import set aside (see the module doc).
    """

    mode: Mode = Mode.STRICT
    tolerance: Fraction = Fraction(0)
    norm: Norm = Norm.LINF
    confidence: Fraction = Fraction(0)
    logits: bool = False

    @staticmethod
    def make(mode: "Mode | str" = Mode.STRICT, tolerance=None, norm: "Norm | str" = Norm.LINF,
             confidence=None, logits: bool = False) -> "Spec":
        """Build a spec from user values; raises :class:`InputError` for bad ones (an unknown
        mode or norm, a negative tolerance, a confidence outside (0, 1), a tolerance or a
        confidence given to a mode that does not use it)."""
        try:
            mode = Mode(mode)
        except ValueError:
            raise InputError(f"unknown mode {mode!r} (strict, epsilon, argmax, top1)") from None
        try:
            norm = Norm(norm)
        except ValueError:
            raise InputError(f"unknown norm {norm!r} (linf, l1)") from None
        logits = bool(logits)
        if mode is Mode.TOP1:
            if tolerance not in (None, 0, "0"):
                raise InputError("--tolerance only applies to --mode epsilon (mode is top1)")
            if confidence is None:
                raise InputError("--mode top1 needs --confidence DELTA (a number with 0 < DELTA < 1)")
            delta = _read_number(confidence, "confidence")
            if not 0 < delta < 1:
                raise InputError(f"confidence {confidence} is not strictly between 0 and 1")
            return Spec(mode, Fraction(0), norm, delta, logits)
        if confidence is not None:
            raise InputError(f"--confidence only applies to --mode top1 (mode is {mode.value})")
        if mode is Mode.EPSILON:
            if tolerance is None:
                tol = DEFAULT_EPSILON
            else:
                tol = _read_tolerance(tolerance)
            if tol < 0:
                raise InputError(f"tolerance {tolerance} is negative")
            if tol > FLOAT64_MAX:
                raise InputError(
                    f"tolerance {format_rational(tol)} lies beyond the float64 range "
                    "(every output difference is below it: nothing to check)"
                )
            return Spec(mode, tol, norm, logits=logits)
        if tolerance not in (None, 0, "0"):
            raise InputError(f"--tolerance only applies to --mode epsilon (mode is {mode.value})")
        return Spec(mode, Fraction(0), norm, logits=logits)

    @property
    def accepts_head(self) -> bool:
        """True when a model with a trailing Softmax/LogSoftmax head may be checked under this
        spec with the head set aside: argmax and top1 (a softmax keeps the top class; top1
        applies its own), or any mode with ``logits`` (the relation is then about the logits)."""
        return self.mode in (Mode.ARGMAX, Mode.TOP1) or self.logits

    def logit_margin(self) -> Fraction:
        """top1: a rational L <= ln(DELTA / (1 - DELTA)). Wherever f's softmax confidence in its
        top class i is at least DELTA, f_i - f_j >= L for every other output j (a necessary
        condition, so a proof under it is sound). Exactly 0 for DELTA = 1/2."""
        ratio = self.confidence / (1 - self.confidence)
        if ratio == 1:
            return Fraction(0)
        ctx = _context(40, ROUND_FLOOR)
        low = ctx.divide(Decimal(ratio.numerator), Decimal(ratio.denominator))
        return Fraction(ctx.next_minus(ctx.next_minus(_context(40).ln(low))))

    def to_dict(self) -> dict:
        d = {"mode": self.mode.value}
        if self.mode is Mode.EPSILON:
            d.update(tolerance=float(self.tolerance), norm=self.norm.value)
            if Fraction(float(self.tolerance)) != self.tolerance:
                d["tolerance_exact"] = str(self.tolerance)
        if self.mode is Mode.TOP1:
            d["confidence"] = float(self.confidence)
            if Fraction(float(self.confidence)) != self.confidence:
                d["confidence_exact"] = str(self.confidence)
        if self.logits:
            d["outputs"] = "logits (before any Softmax/LogSoftmax head)"
        return d

    # ------------------------------------------------------------------------------------------
    def margin(self, ya: Sequence, yb: Sequence):
        """How far the relation is violated at outputs ``ya``, ``yb``: > 0 means violated.

        Works on exact ``Fraction`` s (exact answer) or floats. strict: max |ya - yb|;
        epsilon: ||ya - yb|| - eps; argmax: for differing top-1 classes i (of ya) and k (of yb),
        min(ya_i - ya_k, yb_k - yb_i) >= 0, else minus the smaller top-1 gap. top1: as argmax
        when the classes are the same; when they differ, the smaller of that argmax margin and
        f's confidence minus DELTA (on Fractions, a rational with the exact sign of the
        confidence gap: see :func:`confidence_gap`).
        """
        if self.mode is Mode.STRICT:
            return max(abs(a - b) for a, b in zip(ya, yb))
        if self.mode is Mode.EPSILON:
            diffs = [abs(a - b) for a, b in zip(ya, yb)]
            total = max(diffs) if self.norm is Norm.LINF else sum(diffs)
            tol = self.tolerance if _is_exact(total) else float(self.tolerance)
            return total - tol
        i, k = _argmax(ya), _argmax(yb)
        if i != k:
            differ = min(ya[i] - ya[k], yb[k] - yb[i])
            if self.mode is Mode.TOP1:
                return min(differ, confidence_gap(ya, self.confidence))
            return differ
        return -min(_gap(ya, i), _gap(yb, k))

    def holds(self, ya: Sequence, yb: Sequence) -> bool:
        """True when the relation holds at these outputs (exact for Fractions; top1 with the
        real softmax)."""
        if self.mode is Mode.ARGMAX:
            return _argmax(ya) == _argmax(yb)
        if self.mode is Mode.TOP1:
            return _argmax(ya) == _argmax(yb) or confidence_gap(ya, self.confidence) < 0
        return self.margin(ya, yb) <= 0


def _read_tolerance(value) -> Fraction:
    """The exact tolerance: Fractions and ints as they are, floats bit-exactly, text as decimal."""
    return _read_number(value, "tolerance")


def _read_number(value, what: str) -> Fraction:
    """The exact value of a user number: Fractions and ints as they are, floats bit-exactly,
    text as decimal; an :class:`InputError` naming ``what`` for anything else."""
    if isinstance(value, Fraction):
        return value
    if isinstance(value, bool):
        raise InputError(f"{what} {value!r} is not a number")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(f"{what} {value!r} is not a finite number")
        return Fraction(value)
    try:
        return parse_decimal(str(value))
    except ValueError as exc:
        raise InputError(f"{what} {str(value)[:40]!r} {exc}") from None


# -- the real softmax, exactly and in float ------------------------------------------------------
_MAX_DIGITS = 4000  # precision cap of the exact confidence comparison (never reached in practice)


def _context(prec: int, rounding=None) -> Context:
    """A decimal context of ``prec`` digits with an exponent range no float or weight leaves."""
    ctx = Context(prec=prec, Emin=-(10**15), Emax=10**15, traps=[])
    if rounding is not None:
        ctx.rounding = rounding
    return ctx


def _decimal_interval(q: Fraction, prec: int) -> tuple[Decimal, Decimal]:
    """Decimals ``lo <= q <= hi`` of ``prec`` digits."""
    num, den = Decimal(q.numerator), Decimal(q.denominator)
    return (_context(prec, ROUND_FLOOR).divide(num, den),
            _context(prec, ROUND_CEILING).divide(num, den))


def _exp_sum(ds: list[Fraction], prec: int) -> tuple[Fraction, Fraction]:
    """Rationals ``lo <= sum(exp(d) for d in ds) <= hi``. ``Decimal.exp`` is correctly rounded
    (half even, so within half a unit in the last place); each result is widened by two units."""
    down, up, near = _context(prec, ROUND_FLOOR), _context(prec, ROUND_CEILING), _context(prec)
    lo = hi = Decimal(0)
    for d in ds:
        d_lo, d_hi = _decimal_interval(d, prec)
        e_lo = down.next_minus(down.next_minus(near.exp(d_lo)))
        e_hi = up.next_plus(up.next_plus(near.exp(d_hi)))
        lo, hi = down.add(lo, max(e_lo, Decimal(0))), up.add(hi, e_hi)
    return Fraction(lo), Fraction(hi)


def confidence_gap(y: Sequence, delta: Fraction):
    """softmax(y)_i - DELTA for the top class i of ``y`` (the first maximal output), judged with
    the real softmax.

    On floats, a float64 value. On Fractions, a Fraction with the exact sign of the true
    (generally irrational) gap, and close to it: softmax_i = 1 / (1 + S) with
    S = sum_{j != i} exp(y_j - y_i), enclosed by rigorous decimal intervals at growing precision
    until the sign is certain. S is rational only when every y_j - y_i is 0 (Lindemann-
    Weierstrass), and then the gap is computed exactly. Should the precision cap ever be
    reached, the gap is reported as negative (confidence below DELTA): never a false violation.
    """
    i = _argmax(y)
    if not all(isinstance(v, (Fraction, int)) for v in y):
        z = np.asarray([float(v) for v in y], dtype=np.float64)
        return float(1.0 / np.sum(np.exp(z - z[i])) - float(delta))
    ds = [Fraction(y[j]) - Fraction(y[i]) for j in range(len(y)) if j != i]
    ties = sum(1 for d in ds if d == 0)
    rest = [d for d in ds if d != 0]
    if not rest:
        return Fraction(1, 1 + ties) - delta
    prec = 30
    while prec <= _MAX_DIGITS:
        s_lo, s_hi = _exp_sum(rest, prec)
        hi_gap = 1 / (1 + ties + s_lo) - delta
        lo_gap = 1 / (1 + ties + s_hi) - delta
        if lo_gap > 0:
            return lo_gap
        if hi_gap < 0:
            return hi_gap
        prec *= 2
    return min(lo_gap, Fraction(-1, 10**_MAX_DIGITS))


def exp_lower(t: Fraction) -> Fraction:
    """A rational at most ``exp(t)``, within about 1e-28 relative of it."""
    return _exp_sum([Fraction(t)], 30)[0]


def tangent_points(r: Fraction, n: int) -> list[Fraction]:
    """Rational points (multiples of 1/64) where the top1 encoding puts tangents of ``exp``
    under each rival's exp(y_j - y_i): near ln r (one rival takes all of the room r) and near
    ln(r / (n - 1)) (every rival takes an even share), and some below them."""
    points = set()
    for centre in {r, r / max(n - 1, 1)}:
        c = Fraction(round((math.log(centre.numerator) - math.log(centre.denominator)) * 64), 64)
        points.update(c + Fraction(k, 8) for k in (-32, -16, -8, -4, -2, -1, 0, 1, 2))
    return sorted(points)


def batch_confidence(y: np.ndarray) -> np.ndarray:
    """float64 softmax confidence (largest softmax output) of each row of ``y``."""
    z = y - np.max(y, axis=1, keepdims=True)
    with np.errstate(under="ignore"):
        return 1.0 / np.sum(np.exp(z), axis=1)


def _is_exact(v) -> bool:
    return isinstance(v, (Fraction, int))


def _argmax(y: Sequence) -> int:
    best = 0
    for j in range(1, len(y)):
        if y[j] > y[best]:
            best = j
    return best


def _gap(y: Sequence, i: int):
    others = [y[j] for j in range(len(y)) if j != i]
    if not others:
        return y[i] - y[i] + 1  # a single output: the class never changes
    return y[i] - max(others)


def batch_margin(spec: Spec, ya: np.ndarray, yb: np.ndarray) -> np.ndarray:
    """Float64 :meth:`Spec.margin` for batches of outputs (one row per point; > 0: violated).
    The one batched margin of the falsifier, the search, the prover and the engine."""
    d = ya - yb
    if spec.mode is Mode.STRICT:
        return np.max(np.abs(d), axis=1)
    if spec.mode is Mode.EPSILON:
        norm = np.max(np.abs(d), axis=1) if spec.norm is Norm.LINF else np.sum(np.abs(d), axis=1)
        return norm - float(spec.tolerance)
    if ya.shape[1] == 1:
        return np.full(len(ya), -1.0)  # a single output: the class never changes
    rows = np.arange(len(ya))
    i, k = np.argmax(ya, axis=1), np.argmax(yb, axis=1)
    differ = np.minimum(ya[rows, i] - ya[rows, k], yb[rows, k] - yb[rows, i])
    if spec.mode is Mode.TOP1:
        differ = np.minimum(differ, batch_confidence(ya) - float(spec.confidence))
    sa, sb = np.sort(ya, axis=1), np.sort(yb, axis=1)
    same = -np.minimum(sa[:, -1] - sa[:, -2], sb[:, -1] - sb[:, -2])
    return np.where(i != k, differ, same)


def objective_weights(spec: Spec, ya: np.ndarray, yb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, ``(ca, cb)`` such that ``ca . ya + cb . yb`` grows with the violation locally (the
    direction a signed-gradient ascent on the inputs climbs)."""
    n, m = ya.shape
    ca = np.zeros((n, m))
    rows = np.arange(n)
    d = ya - yb
    if spec.mode in (Mode.ARGMAX, Mode.TOP1):
        i = np.argmax(ya, axis=1)
        gain = yb - yb[rows, i][:, None]
        gain[rows, i] = -np.inf
        k = np.argmax(gain, axis=1)
        ca[rows, i] += 1.0
        ca[rows, k] -= 1.0
        cb = -ca
        if spec.mode is Mode.TOP1 and m > 1:  # below the confidence: raise f's top class first
            low = batch_confidence(ya) < float(spec.confidence)
            rival = ya.copy()
            rival[rows, i] = -np.inf
            j = np.argmax(rival, axis=1)
            ca[low] = 0.0
            ca[rows[low], i[low]] = 1.0
            ca[rows[low], j[low]] -= 1.0
        return ca, cb
    if spec.mode is Mode.EPSILON and spec.norm is Norm.L1:
        ca = np.sign(d)
        ca[ca == 0] = 1.0
        return ca, -ca
    j = np.argmax(np.abs(d), axis=1)
    s = np.sign(d[rows, j])
    s[s == 0] = 1.0
    ca[rows, j] = s
    return ca, -ca
