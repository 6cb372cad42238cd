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
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np

from equivcheck.core.rational import FLOAT64_MAX, format_rational, parse_decimal
from equivcheck.errors import InputError


class Mode(str, enum.Enum):
    STRICT = "strict"
    EPSILON = "epsilon"
    ARGMAX = "argmax"


class Norm(str, enum.Enum):
    LINF = "linf"
    L1 = "l1"


DEFAULT_EPSILON = Fraction(1, 10**6)


@dataclass(frozen=True)
class Spec:
    """An equivalence relation between two output vectors.

    ``tolerance`` is exact; it is only used in ``epsilon`` mode.
    """

    mode: Mode = Mode.STRICT
    tolerance: Fraction = Fraction(0)
    norm: Norm = Norm.LINF

    @staticmethod
    def make(mode: "Mode | str" = Mode.STRICT, tolerance=None, norm: "Norm | str" = Norm.LINF) -> "Spec":
        """Build a spec from user values; raises :class:`InputError` for bad ones."""
        try:
            mode = Mode(mode)
        except ValueError:
            raise InputError(f"unknown mode {mode!r} (strict, epsilon, argmax)") from None
        try:
            norm = Norm(norm)
        except ValueError:
            raise InputError(f"unknown norm {norm!r} (linf, l1)") from None
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
            return Spec(mode, tol, norm)
        if tolerance not in (None, 0, "0"):
            raise InputError(f"--tolerance only applies to --mode epsilon (mode is {mode.value})")
        return Spec(mode, Fraction(0), norm)

    def to_dict(self) -> dict:
        d = {"mode": self.mode.value}
        if self.mode is Mode.EPSILON:
            d.update(tolerance=float(self.tolerance), norm=self.norm.value)
            if Fraction(float(self.tolerance)) != self.tolerance:
                d["tolerance_exact"] = str(self.tolerance)
        return d

    # ------------------------------------------------------------------------------------------
    def margin(self, ya: Sequence, yb: Sequence):
        """How far the relation is violated at outputs ``ya``, ``yb``: > 0 means violated.

        Works on exact ``Fraction`` s (exact answer) or floats. strict: max |ya - yb|;
        epsilon: ||ya - yb|| - eps; argmax: for differing top-1 classes i (of ya) and k (of yb),
        min(ya_i - ya_k, yb_k - yb_i) >= 0, else minus the smaller top-1 gap.
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
            return min(ya[i] - ya[k], yb[k] - yb[i])
        return -min(_gap(ya, i), _gap(yb, k))

    def holds(self, ya: Sequence, yb: Sequence) -> bool:
        """True when the relation holds at these outputs (exact for Fractions)."""
        if self.mode is Mode.ARGMAX:
            return _argmax(ya) == _argmax(yb)
        return self.margin(ya, yb) <= 0


def _read_tolerance(value) -> Fraction:
    """The exact tolerance: Fractions and ints as they are, floats bit-exactly, text as decimal."""
    if isinstance(value, Fraction):
        return value
    if isinstance(value, bool):
        raise InputError(f"tolerance {value!r} is not a number")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(f"tolerance {value!r} is not a finite number")
        return Fraction(value)
    try:
        return parse_decimal(str(value))
    except ValueError as exc:
        raise InputError(f"tolerance {str(value)[:40]!r} {exc}") from None


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
    if spec.mode is Mode.ARGMAX:
        i = np.argmax(ya, axis=1)
        gain = yb - yb[rows, i][:, None]
        gain[rows, i] = -np.inf
        k = np.argmax(gain, axis=1)
        ca[rows, i] += 1.0
        ca[rows, k] -= 1.0
        return ca, -ca
    if spec.mode is Mode.EPSILON and spec.norm is Norm.L1:
        ca = np.sign(d)
        ca[ca == 0] = 1.0
        return ca, -ca
    j = np.argmax(np.abs(d), axis=1)
    s = np.sign(d[rows, j])
    s[s == 0] = 1.0
    ca[rows, j] = s
    return ca, -ca
