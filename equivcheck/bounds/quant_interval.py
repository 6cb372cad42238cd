"""Interval bounds through a quantized network (:class:`~equivcheck.core.quantized.QuantizedNetwork`).

A quantizer ``Q(v) = s * (clip(round_half_even(v / s) + zp, qmin, qmax) - zp)`` is monotone
(non-decreasing) in ``v``, so for ``v`` in ``[l, u]`` its value lies in ``[Q(l), Q(u)]`` and its
integer level ``round_half_even(v / s)`` (before clipping) in ``[round(l / s), round(u / s)]``.
Both ends are computed here in exact rational arithmetic on the float bounds (each float is an
exact rational), ties included, and the values are then rounded outward to float64; the affine
maps go through :func:`~equivcheck.bounds.interval.affine_interval`, which carries its own
rounding allowance. So every bound below encloses the exact values of the stored network.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from equivcheck.bounds.interval import LayerBounds, affine_interval, interval_bounds
from equivcheck.bounds.symbolic import symbolic_bounds
from equivcheck.core.deadline import Deadline
from equivcheck.core.network import Network
from equivcheck.core.quantized import DynamicQuantizer, QuantizedNetwork, Quantizer, is_dynamic
from equivcheck.core.rational import float_down, float_up


def level_range(q: Quantizer, lo: np.ndarray, hi: np.ndarray) -> tuple[list[int | None], list[int | None]]:
    """Per unit, exact integers ``(nl, nu)`` with ``nl <= round_half_even(v / s) <= nu`` for
    every ``v`` in ``[lo, hi]`` (the level before the zero point and clipping); None for an
    infinite end (no bound on that side)."""
    nl: list[int | None] = []
    nu: list[int | None] = []
    for low, high, s in zip(lo, hi, q.scale):
        nl.append(None if math.isinf(low) else round(Fraction(float(low)) / s))
        nu.append(None if math.isinf(high) else round(Fraction(float(high)) / s))
    return nl, nu


def dynamic_interval(q: DynamicQuantizer, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sound float bounds of ``D(v)`` for every vector ``v`` in ``[lo, hi]``: within ``S/2`` of
    ``v`` (``S`` :meth:`~equivcheck.core.quantized.DynamicQuantizer.scale_bound`, rounded up)
    and of the sign of ``v`` unit by unit (both proved in :class:`DynamicQuantizer`)."""
    half = q.half_bound(lo, hi)
    low = np.nextafter(lo - half, -np.inf)
    high = np.nextafter(hi + half, np.inf)
    return np.where(lo >= 0, np.maximum(low, 0.0), low), np.where(hi <= 0, np.minimum(high, 0.0), high)


def quantize_interval(q: Quantizer | DynamicQuantizer, lo: np.ndarray, hi: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Sound float64 bounds of ``Q(v)`` for ``v`` in ``[lo, hi]`` unit by unit: ``Q(lo)``
    rounded down and ``Q(hi)`` rounded up (both computed exactly; ``Q`` is monotone). An
    infinite end gives the quantizer's lowest / highest value. A dynamic quantizer ``D`` (not
    monotone unit by unit: its scale depends on the whole vector): ``v +- S/2`` with ``S`` a
    bound of its scale over the box, and the sign of ``v``."""
    if is_dynamic(q):
        return dynamic_interval(q, np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64))
    nl, nu = level_range(q, lo, hi)
    out_lo = np.empty(q.n, dtype=np.float64)
    out_hi = np.empty(q.n, dtype=np.float64)
    for i, (s, zp) in enumerate(zip(q.scale, q.zero_point)):
        lo_m, hi_m = q.qmin - int(zp), q.qmax - int(zp)
        a = lo_m if nl[i] is None else min(max(nl[i], lo_m), hi_m)
        b = hi_m if nu[i] is None else min(max(nu[i], lo_m), hi_m)
        out_lo[i] = float_down(s * a)
        out_hi[i] = float_up(s * b)
    return out_lo, out_hi


def quantized_interval_bounds(net: QuantizedNetwork | Network, lo: np.ndarray, hi: np.ndarray,
                              symbolic: bool = False, deadline: Deadline | None = None
                              ) -> list[LayerBounds]:
    """Sound float64 bounds of every layer's pre-activation ``W h + b`` (before the ReLU and
    the quantizer) of ``net`` for inputs in ``[lo, hi]`` (which must already enclose the exact
    box, see :meth:`~equivcheck.core.domain.Box.lower_float`), through the input quantizer and
    every layer's quantizer. A plain :class:`Network` gets its ordinary interval bounds.

    With ``symbolic``, each run of layers between two quantizers (a plain chain on a box of
    its input values) gets CROWN-style bounds, intersected with intervals (see
    :func:`~equivcheck.bounds.symbolic.symbolic_bounds`; ``deadline`` stops that work early,
    the bounds stay sound); a network quantized after every layer gains nothing from it.
    """
    h_lo, h_hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    if not isinstance(net, QuantizedNetwork):
        return symbolic_bounds(net, h_lo, h_hi, deadline=deadline) if symbolic else interval_bounds(net, h_lo, h_hi)
    if net.input_quant is not None:
        h_lo, h_hi = quantize_interval(net.input_quant, h_lo, h_hi)
    layers, quant = net.network.layers, net.quant
    out: list[LayerBounds] = []
    start = 0
    while start < len(layers):
        stop = start  # the run start..stop ends at a quantized layer or the last one
        while quant[stop] is None and stop + 1 < len(layers):
            stop += 1
        run = Network(tuple(layers[start:stop + 1]), source=net.source)
        got = (symbolic_bounds(run, h_lo, h_hi, deadline=deadline) if symbolic and stop > start
               else interval_bounds(run, h_lo, h_hi))
        out.extend(got)
        h_lo, h_hi = got[-1].lower, got[-1].upper
        if layers[stop].relu:
            h_lo, h_hi = np.maximum(h_lo, 0.0), np.maximum(h_hi, 0.0)
        if quant[stop] is not None:
            h_lo, h_hi = quantize_interval(quant[stop], h_lo, h_hi)
        start = stop + 1
    return out


def post_bounds(net: QuantizedNetwork | Network, k: int, bounds: list[LayerBounds]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Sound bounds of layer ``k``'s value after its ReLU, before its quantizer (if any)."""
    b = bounds[k]
    layers = net.network.layers if isinstance(net, QuantizedNetwork) else net.layers
    if layers[k].relu:
        return np.maximum(b.lower, 0.0), np.maximum(b.upper, 0.0)
    return b.lower, b.upper


def _rounding_error(q: Quantizer | None, v_lo: np.ndarray, v_hi: np.ndarray
                    ) -> tuple[list[Fraction], list[Fraction]]:
    """Exact bounds of ``Q(v) - v`` for ``v`` in ``[v_lo, v_hi]`` unit by unit (0 without a
    quantizer): within ``[-s/2, s/2]`` where no clip can bind, and always within
    ``[Q(v_lo) - v_hi, Q(v_hi) - v_lo]`` (``Q`` is monotone)."""
    n = len(v_lo)
    if q is None:
        return [Fraction(0)] * n, [Fraction(0)] * n
    if is_dynamic(q):  # |D(v) - v| <= S/2, D(v) of the sign of v (see DynamicQuantizer)
        half = Fraction(q.half_bound(v_lo, v_hi))
        lows = [max(-half, -Fraction(float(h))) if lo >= 0 else -half for lo, h in zip(v_lo, v_hi)]
        highs = [min(half, -Fraction(float(lo))) if h <= 0 else half for lo, h in zip(v_lo, v_hi)]
        return lows, highs
    nl, nu = level_range(q, v_lo, v_hi)
    lows, highs = [], []
    for i, (s, zp) in enumerate(zip(q.scale, q.zero_point)):
        lo_m, hi_m = q.qmin - int(zp), q.qmax - int(zp)
        vl, vh = Fraction(float(v_lo[i])), Fraction(float(v_hi[i]))
        e_lo = s * min(max(nl[i], lo_m), hi_m) - vh
        e_hi = s * min(max(nu[i], lo_m), hi_m) - vl
        if lo_m <= nl[i] and nu[i] <= hi_m:
            e_lo, e_hi = max(e_lo, -s / 2), min(e_hi, s / 2)
        lows.append(e_lo)
        highs.append(e_hi)
    return lows, highs


def float_parts(net) -> tuple[Network, Quantizer | None, tuple]:
    """The float network, the input quantizer and the per-layer quantizers (None where a layer
    is not quantized) of a Network or a QuantizedNetwork."""
    if isinstance(net, QuantizedNetwork):
        return net.network, net.input_quant, net.quant
    return net, None, (None,) * len(net.layers)


def difference_intervals(a, b, lo: np.ndarray, hi: np.ndarray, bounds_a: list[LayerBounds],
                         bounds_b: list[LayerBounds]) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """For two networks (each a Network or a QuantizedNetwork) with exactly the same affine
    layers and ReLUs, differing only in their quantizers (a float network and its quantized
    copy, or two quantizations of it): per layer, sound float64 bounds of ``h_a - h_b``, the
    difference of the layer's values after the ReLU and the quantizer, for inputs in
    ``[lo, hi]``. None for any other pair. ``bounds_a``/``bounds_b`` are sound pre-activation
    bounds of both over the box (:func:`quantized_interval_bounds`).

    Since both layers share ``W`` and ``b``, ``z_a - z_b = W (h_a - h_b)`` exactly (interval
    arithmetic with its allowance); a ReLU keeps the sign and does not grow a difference (the
    difference itself where both units are stably active, 0 where both are stably inactive); a
    quantizer adds its rounding error ``Q(v) - v`` (:func:`_rounding_error`). The sums are
    exact and rounded outward.
    """
    fa, qa_in, qa = float_parts(a)
    fb, qb_in, qb = float_parts(b)
    if len(fa.layers) != len(fb.layers) or any(
            la.relu != lb.relu or not la.affine.same_as(lb.affine) for la, lb in zip(fa.layers, fb.layers)):
        return None
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        return None
    ea, eb = _rounding_error(qa_in, lo, hi), _rounding_error(qb_in, lo, hi)
    d_lo = np.array([float_down(x - y) for x, y in zip(ea[0], eb[1])])
    d_hi = np.array([float_up(x - y) for x, y in zip(ea[1], eb[0])])
    out = []
    for k, layer in enumerate(fa.layers):
        z_lo, z_hi = affine_interval(layer.weight, np.zeros(layer.out_dim), d_lo, d_hi,
                                     exact_weights=layer.affine.is_exact_float)
        if layer.relu:
            sa, sb = bounds_a[k].stability(), bounds_b[k].stability()
            both_active, both_inactive = (sa == 1) & (sb == 1), (sa == -1) & (sb == -1)
            z_lo = np.where(both_active, z_lo, np.where(both_inactive, 0.0, np.minimum(z_lo, 0.0)))
            z_hi = np.where(both_active, z_hi, np.where(both_inactive, 0.0, np.maximum(z_hi, 0.0)))
        ea = _rounding_error(qa[k], *post_bounds(a, k, bounds_a))
        eb = _rounding_error(qb[k], *post_bounds(b, k, bounds_b))
        d_lo = np.array([float_down(Fraction(float(z)) + x - y) for z, x, y in zip(z_lo, ea[0], eb[1])])
        d_hi = np.array([float_up(Fraction(float(z)) + x - y) for z, x, y in zip(z_hi, ea[1], eb[0])])
        if not (np.all(np.isfinite(d_lo)) and np.all(np.isfinite(d_hi))):
            return None
        out.append((d_lo, d_hi))
    return out
