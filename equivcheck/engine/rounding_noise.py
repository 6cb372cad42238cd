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

Rigour: ``Q(l)`` is taken from ``l / s`` one float below (``Q`` of a smaller value is not larger),
``Q(u)`` one float above; ``(q - zp) * s`` is exact (an integer of at most 17 bits times a
float32); the centre's product ``W c`` carries the layer's relative allowance, the radius is
rounded up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from equivcheck.core import matrix
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

    @property
    def n(self) -> int:
        return len(self.scale)

    def rows(self, j: int) -> "Rounding":
        """The same rounding read by row ``j`` of the layer only."""
        w = matrix.as_csr(self.w[[j]]) if matrix.is_sparse(self.w) else self.w[j:j + 1]
        aw = matrix.as_csr(self.aw[[j]]) if matrix.is_sparse(self.aw) else self.aw[j:j + 1]
        return Rounding(self.scale, self.zero_point, self.qmin, self.qmax, self.lowest,
                        self.highest, self.relu, w, aw)


def make_rounding(quantizer, relu: bool, weight) -> Rounding:
    """The :class:`Rounding` of a :class:`~equivcheck.core.quantized.Quantizer` read by a
    layer of weight ``weight`` (its first ``quantizer.n`` columns)."""
    n = quantizer.n
    w = matrix.as_csr(weight)[:, :n] if matrix.is_sparse(weight) else np.asarray(weight)[:, :n]
    if matrix.is_sparse(w):
        w = matrix.as_csr(w)
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
    low, high = r.lowest[:, None], r.highest[:, None]
    half = (r.scale / 2)[:, None]  # exact
    e_lo = np.maximum(-half, sub_down(_quantize(r, lo, -np.inf), np.clip(hi, low, high)))
    e_hi = np.minimum(half, sub_up(_quantize(r, hi, np.inf), np.clip(lo, low, high)))
    return e_lo, np.maximum(e_hi, e_lo)


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
