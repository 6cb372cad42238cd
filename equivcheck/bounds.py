"""Sound bounds on every pre-activation over a box, and the stability of every ReLU.

All bounds here are *rigorous*: they enclose the exact (real-arithmetic) pre-activation values
of the stored weights over the exact box, although they are computed in float64. Every float
computation is followed by an explicit rounding-error allowance (Higham's gamma_n bound on dot
products, doubled), and box bounds are rounded outward. The proof relies on this: a unit classified
stable here is encoded without a disjunction.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from .network import Network

UNIT_ROUNDOFF = 2.0**-53
TINY = np.finfo(np.float64).tiny


class Stability(enum.IntEnum):
    INACTIVE = -1  # pre-activation <= 0 on the whole domain: the ReLU outputs 0
    UNSTABLE = 0
    ACTIVE = 1  # pre-activation >= 0 on the whole domain: the ReLU is the identity


@dataclass(frozen=True, eq=False)
class LayerBounds:
    """Sound lower/upper bounds of one layer's pre-activations."""

    lower: np.ndarray
    upper: np.ndarray

    def stability(self) -> np.ndarray:
        """Per unit: ``Stability`` as ints (-1 inactive, 0 unstable, 1 active)."""
        out = np.zeros(len(self.lower), dtype=np.int8)
        out[self.lower >= 0.0] = Stability.ACTIVE
        out[self.upper <= 0.0] = Stability.INACTIVE  # a unit that is exactly 0 is called inactive
        return out


def gamma(n: int) -> float:
    """Higham's gamma_n = n u / (1 - n u): relative error bound of an n-term float dot product."""
    nu = n * UNIT_ROUNDOFF
    return nu / (1.0 - nu)


def affine_interval(weight: np.ndarray, bias: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                    exact_weights: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Sound enclosure of ``W h + b`` for ``h`` in the box ``[lo, hi]`` (float64 arrays).

    ``exact_weights`` False means ``weight``/``bias`` are nearest floats of exact rationals;
    the allowance then covers that extra half-ulp as well.
    """
    wp = np.maximum(weight, 0.0)
    wn = np.minimum(weight, 0.0)
    lower = wp @ lo + wn @ hi + bias
    upper = wp @ hi + wn @ lo + bias
    mag = np.abs(weight) @ np.maximum(np.abs(lo), np.abs(hi)) + np.abs(bias)
    n = weight.shape[1] + (3 if exact_weights else 5)
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


BOUND_METHODS = ("interval",)


def sound_bounds(net: Network, lo: np.ndarray, hi: np.ndarray, method: str = "interval") -> list[LayerBounds]:
    """Rigorous pre-activation bounds of every layer over the float box ``[lo, hi]``.

    ``method`` names how hard to work ("interval" is the cheapest). Every method returns bounds
    that enclose the exact values, so the prover may rely on them.
    """
    if method == "interval":
        return interval_bounds(net, lo, hi)
    raise ValueError(f"unknown bound method {method!r} (one of {', '.join(BOUND_METHODS)})")
