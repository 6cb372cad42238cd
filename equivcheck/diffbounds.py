"""Rigorous bounds on the *difference* of two networks of the same shape (ReluDiff-style).

When ``a`` and ``b`` have the same layer widths (a pruned, quantized or fine-tuned copy), unit i
of layer l in ``b`` is compared with unit i of layer l in ``a``. Propagating an interval for
``z_b - z_a`` directly, rather than subtracting two independent intervals, keeps the correlation
between the networks: two nearly equal networks get nearly zero difference bounds.

Affine step, with ``D = W_b - W_a``::

    z_b - z_a = W_b (h_b - h_a) + D h_a + (b_b - b_a)

ReLU step (relu is monotone and 1-Lipschitz)::

    relu(z_b) - relu(z_a) lies between min(0, dz) and max(0, dz), and in
    [relu(lo_b) - relu(up_a), relu(up_b) - relu(lo_a)],

with exact cases when both units are stable. Every float computation carries the same explicit
rounding allowance as :mod:`equivcheck.bounds`, so the bounds enclose the exact differences of
the stored weights over the exact box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bounds import TINY, LayerBounds, gamma
from .network import Network


@dataclass(frozen=True, eq=False)
class DiffBounds:
    """Bounds of ``z_b - z_a`` (pre-activation) and ``h_b - h_a`` (after the activation)."""

    pre_lower: np.ndarray
    pre_upper: np.ndarray
    post_lower: np.ndarray
    post_upper: np.ndarray


def same_shape(a: Network, b: Network) -> bool:
    """True when unit i of every layer of ``b`` can be compared with unit i of ``a``."""
    return len(a.layers) == len(b.layers) and all(
        la.weight.shape == lb.weight.shape and la.relu == lb.relu for la, lb in zip(a.layers, b.layers)
    )


def difference_bounds(
    a: Network,
    b: Network,
    lo: np.ndarray,
    hi: np.ndarray,
    bounds_a: list[LayerBounds],
    bounds_b: list[LayerBounds],
) -> list[DiffBounds] | None:
    """Sound bounds of the unit-wise difference of ``b`` and ``a`` on every layer, or None.

    ``lo``/``hi`` enclose the input box and ``bounds_a``/``bounds_b`` are sound pre-activation
    bounds over it. Returns None when the networks do not have the same shape.
    """
    if not same_shape(a, b):
        return None
    out: list[DiffBounds] = []
    dh_lo, dh_hi = np.zeros(a.in_dim), np.zeros(a.in_dim)  # both networks read the same input
    ha_lo, ha_hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    for la, lb, za, zb in zip(a.layers, b.layers, bounds_a, bounds_b):
        wa, wb = la.weight, lb.weight
        d = wb - wa  # rounding here is covered by the (|W_a| + |W_b|) |h_a| term below
        db = lb.bias - la.bias
        z_lo = (np.maximum(wb, 0) @ dh_lo + np.minimum(wb, 0) @ dh_hi
                + np.maximum(d, 0) @ ha_lo + np.minimum(d, 0) @ ha_hi + db)
        z_hi = (np.maximum(wb, 0) @ dh_hi + np.minimum(wb, 0) @ dh_lo
                + np.maximum(d, 0) @ ha_hi + np.minimum(d, 0) @ ha_lo + db)
        mag = (np.abs(wb) @ np.maximum(np.abs(dh_lo), np.abs(dh_hi))
               + (np.abs(wa) + np.abs(wb)) @ np.maximum(np.abs(ha_lo), np.abs(ha_hi))
               + np.abs(la.bias) + np.abs(lb.bias))
        allowance = 2.0 * gamma(2 * wa.shape[1] + 8) * mag + TINY
        # the two networks' own bounds give another enclosure: intersect
        z_lo = np.maximum(z_lo - allowance, _sub_down(zb.lower, za.upper))
        z_hi = np.minimum(z_hi + allowance, _sub_up(zb.upper, za.lower))
        if la.relu:
            p_lo, p_hi = _relu_difference(z_lo, z_hi, za, zb)
        else:
            p_lo, p_hi = z_lo, z_hi
        out.append(DiffBounds(z_lo, z_hi, p_lo, p_hi))
        dh_lo, dh_hi = p_lo, p_hi
        ha_lo, ha_hi = (np.maximum(za.lower, 0.0), np.maximum(za.upper, 0.0)) if la.relu else (za.lower, za.upper)
    return out


def _sub_down(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A float <= x - y exactly (one rounded subtraction, stepped one ulp down)."""
    return np.nextafter(x - y, -np.inf)


def _sub_up(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A float >= x - y exactly."""
    return np.nextafter(x - y, np.inf)


def _relu_difference(z_lo, z_hi, za: LayerBounds, zb: LayerBounds) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of relu(z_b) - relu(z_a) from bounds of z_b - z_a, z_a and z_b (no rounding)."""
    p_lo = np.maximum(np.minimum(z_lo, 0.0), _sub_down(np.maximum(zb.lower, 0), np.maximum(za.upper, 0)))
    p_hi = np.minimum(np.maximum(z_hi, 0.0), _sub_up(np.maximum(zb.upper, 0), np.maximum(za.lower, 0)))
    a_off, b_off = za.upper <= 0, zb.upper <= 0
    a_on, b_on = za.lower >= 0, zb.lower >= 0
    cases = [
        (a_off & b_off, 0.0, 0.0),
        (a_on & b_on, z_lo, z_hi),
        (a_off & b_on, zb.lower, zb.upper),
        (a_on & b_off, -za.upper, -za.lower),
    ]
    for mask, lo, hi in cases:
        p_lo = np.where(mask, lo, p_lo)
        p_hi = np.where(mask, hi, p_hi)
    return p_lo, p_hi
