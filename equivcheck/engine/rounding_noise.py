"""The rounding of a quantized layer's output, as the next layer's interval bias, per node.

A layer that reads quantized values ``h = Q(v)`` (see :mod:`equivcheck.core.quantized`) is,
exactly, ``z = W clip(v) + b + W e`` with the rounding error ``e = Q(v) - clip(v)``
(:mod:`equivcheck.bounds.bias_enclosure` writes ``clip`` into the layers). On a node where ``v``
lies in ``[l, u]``, ``Q`` and ``clip`` are monotone, so

    max(-s/2, Q(l) - clip(u)) <= e <= min(s/2, Q(u) - clip(l)):

half a step at most, and exactly 0 wide once the node keeps ``v`` inside one rounding cell
(``Q`` constant there, the error then moves with ``v`` only: ``Q(l) - clip(u)`` to
``Q(u) - clip(l)`` is ``u - l`` wide). The engine adds ``W e`` to the layer's bias as
``W c +- |W| r`` (``c``, ``r`` the centre and radius of ``e``'s interval), so the bounds tighten as
the search splits, the way ReLU relaxations do.

A *dynamic* quantizer (:class:`~equivcheck.core.quantized.DynamicQuantizer`: one scale ``s``
computed from the whole vector) is never clipped (its range holds the vector) and its error is
``|D(v)_i - v_i| <= s / 2`` with ``s <= S = (max(0, max_i u_i) - min(0, min_i l_i)) / 255`` on a
node (rounded up); a unit with ``v_i = 0`` exactly is rounded to 0 exactly, and ``D(v)_i`` has
the sign of ``v_i``, so ``e_i >= -u_i`` where ``l_i >= 0`` and ``e_i <= -l_i`` where ``u_i <= 0``.
So each unit's error interval is ``[-S/2, S/2]`` intersected with those, per node. And with
``s >= S_lo = (max(0, max_i l_i) - min(0, min_i u_i)) / 255``: a unit whose ``v_i / s`` stays
between two ties for every ``s`` in ``[S_lo, S]`` has the one level ``k`` (no clip can bind
there), so its error is ``s k - v_i``, within ``[S_lo k - u_i, S k - l_i]`` (``k >= 0``): as for
static grids, the interval narrows to the width of ``v`` as the search splits.

Rigour: ``Q(l)`` is taken from ``l / s`` one float below (``Q`` of a smaller value is not larger),
``Q(u)`` one float above; ``(q - zp) * s`` is exact (an integer of at most 17 bits times a
float32); the centre's product ``W c`` carries the layer's relative allowance, the radius is
rounded up.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from equivcheck.core import matrix
from equivcheck.core.quantized import is_dynamic
from equivcheck.engine.rounding import TINY, sub_down, sub_up


@dataclass(frozen=True, eq=False)
class Rounding:
    """The quantizer of the first ``n`` values a layer reads (float arrays of width ``n``),
    whether those values come after a ReLU of the previous layer's pre-activations, and the
    layer's weights on them (``w``: ``[m, n]``, dense or sparse; ``aw``: ``|w|``)."""

    scale: np.ndarray
    zero_point: np.ndarray
    qmin: float
    qmax: float
    lowest: np.ndarray  # s (qmin - zp), exact floats
    highest: np.ndarray  # s (qmax - zp)
    relu: bool
    w: object
    aw: object
    dynamic: bool = False  # a DynamicQuantizer: scale/zero_point/lowest/highest are unused

    @property
    def n(self) -> int:
        return len(self.scale)

    def rows(self, j: int) -> "Rounding":
        """The same rounding read by row ``j`` of the layer only."""
        w = matrix.as_csr(self.w[[j]]) if matrix.is_sparse(self.w) else self.w[j:j + 1]
        aw = matrix.as_csr(self.aw[[j]]) if matrix.is_sparse(self.aw) else self.aw[j:j + 1]
        return dataclasses.replace(self, w=w, aw=aw)


def make_rounding(quantizer, relu: bool, weight) -> Rounding:
    """The :class:`Rounding` of a :class:`~equivcheck.core.quantized.Quantizer` read by a
    layer of weight ``weight`` (its first ``quantizer.n`` columns)."""
    n = quantizer.n
    w = matrix.as_csr(weight)[:, :n] if matrix.is_sparse(weight) else np.asarray(weight)[:, :n]
    if matrix.is_sparse(w):
        w = matrix.as_csr(w)
    if is_dynamic(quantizer):
        none = np.full(n, np.nan)
        return Rounding(none, none, float(quantizer.qmin), float(quantizer.qmax), none, none, relu,
                        w, matrix.absolute(w), dynamic=True)
    s = quantizer.scale_float
    zp = quantizer.zero_point.astype(np.float64)
    return Rounding(s, zp, float(quantizer.qmin), float(quantizer.qmax),
                    (quantizer.qmin - zp) * s, (quantizer.qmax - zp) * s, relu, w,
                    matrix.absolute(w))


def _quantize(r: Rounding, v: np.ndarray, direction: float) -> np.ndarray:
    """``Q`` of a value one float below (``direction`` -inf) or above (+inf) ``v / s``: a
    bound of ``Q(v)`` on that side (``v``: ``[n, B]``)."""
    s, zp = r.scale[:, None], r.zero_point[:, None]
    t = np.nextafter(v / s, direction)
    q = np.clip(np.rint(t) + zp, r.qmin, r.qmax)
    return (q - zp) * s


def error_interval(r: Rounding, pre_lo: np.ndarray, pre_hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[n, B]`` bounds of the rounding error ``Q(v) - clip(v)`` of values whose (previous
    layer's) pre-activations lie in ``[pre_lo, pre_hi]`` (first ``n`` rows are used)."""
    lo, hi = pre_lo[:r.n], pre_hi[:r.n]
    if r.relu:
        lo, hi = np.maximum(lo, 0.0), np.maximum(hi, 0.0)
    if r.dynamic:
        return _dynamic_interval(r, lo, hi)
    low, high = r.lowest[:, None], r.highest[:, None]
    half = (r.scale / 2)[:, None]  # exact
    e_lo = np.maximum(-half, sub_down(_quantize(r, lo, -np.inf), np.clip(hi, low, high)))
    e_hi = np.minimum(half, sub_up(_quantize(r, hi, np.inf), np.clip(lo, low, high)))
    return e_lo, np.maximum(e_hi, e_lo)


def _dynamic_interval(r: Rounding, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The error interval of a dynamic quantizer over values in ``[lo, hi]`` (``[n, B]``, every
    unit of the vector; see the module doc), narrowed on units whose level is fixed."""
    steps = r.qmax - r.qmin
    top = np.maximum(hi.max(axis=0), 0.0)
    bottom = np.minimum(lo.min(axis=0), 0.0)
    s_hi = np.nextafter(sub_up(top, bottom) / steps, np.inf)[None, :]
    # s >= (max(0, max_i l_i) - min(0, min_i u_i)) / steps: the extremes cannot come closer
    s_lo = np.maximum(np.nextafter(sub_down(np.maximum(lo.max(axis=0), 0.0),
                                            np.minimum(hi.min(axis=0), 0.0)) / steps, -np.inf), 0.0)[None, :]
    half = np.nextafter(s_hi / 2, np.inf)
    e_lo = np.where(lo >= 0, np.maximum(-half, -hi), -half)
    e_hi = np.where(hi <= 0, np.minimum(half, -lo), half)
    lvl_lo, lvl_hi, k = _fixed_level(lo, hi, s_lo, s_hi)
    fixed = np.isfinite(lvl_lo) & np.isfinite(lvl_hi)
    if fixed.any():  # D(v)_i = s k exactly: e = s k - v with s in [s_lo, s_hi], v in [l, u]
        with np.errstate(invalid="ignore", over="ignore"):
            a = np.nextafter(np.where(k >= 0, s_lo, s_hi) * k, -np.inf)
            b = np.nextafter(np.where(k >= 0, s_hi, s_lo) * k, np.inf)
            e_lo = np.where(fixed, np.maximum(e_lo, sub_down(a, hi)), e_lo)
            e_hi = np.where(fixed, np.minimum(e_hi, sub_up(b, lo)), e_hi)
    return e_lo, np.maximum(e_hi, e_lo)


def _fixed_level(lo, hi, s_lo, s_hi):
    """Per unit, bounds ``[t_lo, t_hi]`` of ``v / s`` over ``v`` in ``[lo, hi]`` and ``s`` in
    ``[s_lo, s_hi]`` (widened outward; -inf/inf where ``s_lo`` is 0 or the interval holds a
    half-integer), and the one level ``k = round(v / s)`` where it holds none. Without a tie in
    reach no clip can bind either: ``D`` clips only the extreme value of the vector, and only
    at an exact tie (:class:`~equivcheck.core.quantized.DynamicQuantizer`), so ``D(v) = s k``."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        q = np.stack([lo / s_lo, lo / s_hi, hi / s_lo, hi / s_hi])
        t_lo, t_hi = q.min(axis=0), q.max(axis=0)
        slack = (np.abs(t_lo) + np.abs(t_hi)) * 2.0**-40 + 2.0**-40
        t_lo, t_hi = t_lo - slack, t_hi + slack
        k = np.ceil(t_lo - 0.5)
        ok = (s_lo > 0) & np.isfinite(t_lo) & np.isfinite(t_hi) & (k > np.floor(t_hi - 0.5)) & (np.abs(k) < 2.0**30)
    k = np.where(ok, k, 0.0)
    return np.where(ok, t_lo, -np.inf), np.where(ok, t_hi, np.inf), k


def bias_interval(r: Rounding, pre_lo: np.ndarray, pre_hi: np.ndarray, fac: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``[m, B]`` ``(shift, radius)`` with ``W e`` in ``shift +- radius`` for every rounding
    error allowed by :func:`error_interval` (the product's rounding included)."""
    e_lo, e_hi = error_interval(r, pre_lo, pre_hi)
    c = 0.5 * e_lo + 0.5 * e_hi
    rad = np.nextafter(np.maximum(sub_up(e_hi, c), sub_up(c, e_lo)), np.inf)
    shift = matrix.apply(r.w, c)
    size = matrix.apply(r.aw, np.abs(c))
    spread = matrix.apply(r.aw, rad)
    radius = (spread + fac * (size + spread)) * (1.0 + 2.0**-50) + TINY * ((size + spread) > 0)
    return shift, radius
