"""Interval bounds: the float64 rounding allowances every bound rests on, the bounds type of one
layer, and interval arithmetic through a network.

All bounds in :mod:`equivcheck.bounds` are *rigorous*: they enclose the exact (real-arithmetic)
pre-activation values of the stored weights over the exact box, although they are computed in
float64. Every float computation is followed by an explicit rounding-error allowance (Higham's
gamma_n bound on dot products, doubled), and box bounds are rounded outward. The proof relies on
this: a unit classified stable is encoded without a disjunction.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from equivcheck.core import matrix
from equivcheck.core.network import Network
from equivcheck.core.options import UnitStability
from equivcheck.errors import InputError

UNIT_ROUNDOFF = 2.0**-53
TINY = np.finfo(np.float64).tiny


class StabilityCode(enum.IntEnum):
    """The int code of a :class:`~equivcheck.core.options.UnitStability` in the numpy arrays of
    :meth:`LayerBounds.stability` (bounds only ever say active, inactive or unstable)."""

    INACTIVE = -1
    UNSTABLE = 0
    ACTIVE = 1

    @property
    def unit(self) -> UnitStability:
        """The :class:`UnitStability` this code stands for."""
        return UnitStability[self.name]


@dataclass(frozen=True, eq=False)
class LayerBounds:
    """Sound lower/upper bounds of one layer's pre-activations (float64 arrays, never mutated)."""

    lower: np.ndarray
    upper: np.ndarray

    @property
    def inactive(self) -> np.ndarray:
        """Mask of the units with pre-activation ``<= 0`` everywhere (a unit that is exactly 0 is
        called inactive)."""
        return self.upper <= 0.0

    @property
    def active(self) -> np.ndarray:
        """Mask of the units with pre-activation ``>= 0`` everywhere that are not inactive."""
        return (self.lower >= 0.0) & ~self.inactive

    @property
    def unstable(self) -> np.ndarray:
        """Mask of the units whose bounds allow both signs."""
        return (self.lower < 0.0) & (self.upper > 0.0)

    def stability(self) -> np.ndarray:
        """Per unit: its :class:`StabilityCode` as an int8 array (-1 inactive, 0 unstable,
        1 active); :meth:`unit_stability` gives the same as names."""
        out = np.zeros(len(self.lower), dtype=np.int8)
        out[self.lower >= 0.0] = StabilityCode.ACTIVE
        out[self.upper <= 0.0] = StabilityCode.INACTIVE  # a unit that is exactly 0 is inactive
        return out

    def unit_stability(self) -> tuple[UnitStability, ...]:
        """Per unit: ACTIVE, INACTIVE or UNSTABLE as these bounds show it."""
        return tuple(StabilityCode(int(c)).unit for c in self.stability())

    def count(self, status: UnitStability) -> int:
        """How many units these bounds show as ``status`` (0 for UNDECIDED)."""
        if status is UnitStability.UNDECIDED:
            return 0
        return int(np.sum(self.stability() == StabilityCode[status.name]))


def gamma(n: int) -> float:
    """Higham's gamma_n = n u / (1 - n u): relative error bound of an n-term float dot product."""
    nu = n * UNIT_ROUNDOFF
    return nu / (1.0 - nu)


def affine_interval(weight: np.ndarray, bias: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                    exact_weights: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Sound enclosure of ``W h + b`` for ``h`` in the box ``[lo, hi]`` (float64 arrays).

    ``exact_weights`` False means ``weight``/``bias`` are nearest floats of exact rationals;
    the allowance then covers that extra half-ulp as well. ``weight`` may be sparse (see
    :mod:`equivcheck.core.matrix`): each row's allowance then counts its stored entries only
    (every product sums at most those terms), and nothing dense of the weight's shape is built.
    """
    wp = matrix.positive_part(weight)
    wn = matrix.negative_part(weight)
    lower = matrix.apply(wp, lo) + matrix.apply(wn, hi) + bias
    upper = matrix.apply(wp, hi) + matrix.apply(wn, lo) + bias
    mag = matrix.apply(matrix.absolute(weight), np.maximum(np.abs(lo), np.abs(hi))) + np.abs(bias)
    n = matrix.row_counts(weight) + (3 if exact_weights else 5)
    allowance = 2.0 * gamma(n) * mag + TINY
    return lower - allowance, upper + allowance


def interval_bounds(net: Network, lo: np.ndarray, hi: np.ndarray) -> list[LayerBounds]:
    """Interval bounds of every layer's pre-activation for inputs in ``[lo, hi]``.

    ``lo``/``hi`` must already enclose the exact box (see :meth:`Box.lower_float`).
    """
    out: list[LayerBounds] = []
    h_lo, h_hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    for layer in net.layers:
        z_lo, z_hi = affine_interval(
            layer.weight, layer.bias, h_lo, h_hi, exact_weights=layer.affine.is_exact_float
        )
        out.append(LayerBounds(z_lo, z_hi))
        if layer.relu:
            h_lo, h_hi = np.maximum(z_lo, 0.0), np.maximum(z_hi, 0.0)
        else:
            h_lo, h_hi = z_lo, z_hi
    return out


def interval_step(net: Network, k: int, bounds: Sequence[LayerBounds], lo, hi) -> LayerBounds:
    """Interval bounds of layer ``k`` from sound bounds of layer ``k - 1`` (of the box for 0)."""
    if k == 0:
        h_lo, h_hi = lo, hi
    else:
        prev = bounds[k - 1]
        relu = net.layers[k - 1].relu
        h_lo = np.maximum(prev.lower, 0.0) if relu else prev.lower
        h_hi = np.maximum(prev.upper, 0.0) if relu else prev.upper
    layer = net.layers[k]
    z_lo, z_hi = affine_interval(layer.weight, layer.bias, h_lo, h_hi, layer.affine.is_exact_float)
    return LayerBounds(z_lo, z_hi)


def intersect(a: LayerBounds, b: LayerBounds) -> LayerBounds:
    """The intersection of two sound enclosures (also sound)."""
    return LayerBounds(np.maximum(a.lower, b.lower), np.minimum(a.upper, b.upper))


def intersect_all(bounds: Sequence[LayerBounds], known: Sequence[LayerBounds]) -> list[LayerBounds]:
    """Layer by layer :func:`intersect` of two sound enclosures of the same network; an
    :class:`InputError` when they do not have the same layers and widths."""
    if len(bounds) != len(known) or any(
        np.shape(a.lower) != np.shape(b.lower) or np.shape(a.upper) != np.shape(b.upper)
        for a, b in zip(bounds, known)
    ):
        raise InputError("known bounds do not match the network's layers")
    return [intersect(a, b) for a, b in zip(bounds, known)]
