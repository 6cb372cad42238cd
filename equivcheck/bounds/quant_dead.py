"""Dead units of a quantized network on a domain: units whose value after their activation and
quantizer is exactly 0 everywhere (what ``compress`` removes from a quantized model, and what the
prover's structural check of a model against such a copy relies on).

A unit's value is ``f(z) = Q(relu(z))`` (or ``Q(z)`` without a ReLU, where a zero point at the
bottom of the integer range makes the clip a ReLU), monotone in its pre-activation ``z``, so it is
0 on the whole domain when it is 0 at both ends of rigorous bounds of ``z``
(:func:`unit_value_range`, exact). Units the float bounds leave just above the threshold (their
rounding allowance) get exact rational interval bounds from the exact bounds of their inputs.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from equivcheck.bounds.interval import LayerBounds
from equivcheck.bounds.quant_interval import quantized_interval_bounds
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Domain
from equivcheck.core.network import Layer
from equivcheck.core.quantized import QuantizedNetwork, Quantizer


def unit_value_range(layer: Layer, q: Quantizer | None, lower, upper, j: int = 0) -> tuple[Fraction, Fraction]:
    """Exact ``(f(l), f(u))`` for ``f = Q o relu`` of unit ``j`` (``q`` the layer's quantizer or
    None) and pre-activation bounds ``l <= z <= u`` (floats, possibly infinite, or Fractions):
    every value the unit takes lies between them (``f`` is monotone)."""
    ends = []
    for v in (lower, upper):
        x = v if isinstance(v, Fraction) else Fraction(float(v)) if np.isfinite(v) else None
        if x is not None and layer.relu:
            x = max(x, Fraction(0))
        if q is None:
            ends.append(x if x is not None else Fraction(-1 if v < 0 else 1))  # (not 0)
        elif x is None:
            ends.append(q.lowest()[j] if v < 0 else q.highest()[j])
        else:
            s, zp = q.scale[j], int(q.zero_point[j])
            ends.append(s * (min(max(round(x / s) + zp, q.qmin), q.qmax) - zp))
    return ends[0], ends[1]


def _exact_inputs(net: QuantizedNetwork, dom: Domain, bounds: list[LayerBounds], k: int
                  ) -> tuple[list[Fraction], list[Fraction]]:
    """Exact rational bounds of layer ``k``'s input over the domain: the boxes' own bounds
    (through the input quantizer, which is monotone) for ``k = 0``, else ``f(l)`` and ``f(u)``
    of layer ``k - 1`` (``f`` = its ReLU and quantizer, monotone; ``l``, ``u`` from
    ``bounds``)."""
    if k == 0:
        lo = [min(v) for v in zip(*(box.lower for box in dom.boxes))]
        hi = [max(v) for v in zip(*(box.upper for box in dom.boxes))]
        q = net.input_quant
        return (lo, hi) if q is None else (list(q.apply_exact(lo)), list(q.apply_exact(hi)))
    layer, q, b = net.network.layers[k - 1], net.quant[k - 1], bounds[k - 1]
    ends = []
    for v in (b.lower, b.upper):
        x = [Fraction(float(t)) if np.isfinite(t) else None for t in v]
        if any(t is None for t in x):
            return None
        if layer.relu:
            x = [max(t, Fraction(0)) for t in x]
        ends.append(x if q is None else list(q.apply_exact(x)))
    return ends[0], ends[1]


def _exact_upper(layer: Layer, j: int, lo: list[Fraction], hi: list[Fraction]) -> tuple[Fraction, Fraction]:
    """Exact interval ``(l, u)`` of unit ``j``'s pre-activation for inputs in ``[lo, hi]``
    (interval arithmetic in rationals: no rounding allowance needed)."""
    aff = layer.affine
    w = aff.weight
    if aff.is_sparse:
        a, z = w.indptr[j], w.indptr[j + 1]
        cols, vals = w.indices[a:z], aff.rational_weight()[a:z]
    else:
        cols, vals = range(w.shape[1]), aff.rational_weight()[j]
    bias = aff.rational_bias()[j]
    low = high = bias
    for c, v in zip(cols, vals):
        if v > 0:
            low, high = low + v * lo[c], high + v * hi[c]
        elif v < 0:
            low, high = low + v * hi[c], high + v * lo[c]
    return low, high


def dead_units(net: QuantizedNetwork, bounds: list[LayerBounds], dom: Domain | None = None
               ) -> tuple[list[np.ndarray], list[int]]:
    """Per layer, the boolean mask of units proved dead (value 0 on the whole domain, given
    ``bounds`` sound over it) and the count of stably active ones (``l > 0``); the output layer
    has no dead units (network outputs are never removed). With ``dom``, a unit the float
    bounds leave just above the threshold (their rounding allowance) gets the exact interval of
    its pre-activation (:func:`_exact_upper`) from exact bounds of its inputs."""
    layers, last = net.network.layers, len(net.network.layers) - 1
    dead, active = [], []
    for k, (layer, q, b) in enumerate(zip(layers, net.quant, bounds)):
        mask = np.zeros(layer.out_dim, dtype=bool)
        if k < last and (layer.relu or q is not None):
            # certainly dead (float comparisons of the bounds, exact): u <= 0 after a ReLU,
            # or without one when the quantizer clips every v <= 0 to 0 (zero point qmin)
            sure = b.upper <= 0.0
            if not layer.relu:
                sure &= np.zeros_like(sure) if q is None else (q.zero_point == q.qmin)
            mask |= sure
            # candidates for the exact test: u up to s/2 (0 without a quantizer) plus a margin,
            # or any u when the zero point is qmax
            thr = np.zeros(layer.out_dim) if q is None else q.scale_float * 0.5
            # (a generous margin: the float bounds carry a rounding allowance, and the exact
            # interval of the inputs' exact quantized values may be tighter)
            maybe = ~sure & (b.upper <= thr * (1 + 1e-6) + 1e-6 * (np.abs(b.lower) + np.abs(b.upper)) + 1e-300)
            if q is not None:
                maybe |= ~sure & (q.zero_point == q.qmax)
            exact_in = None
            for j in np.flatnonzero(maybe):
                lo_v, hi_v = unit_value_range(layer, q, b.lower[j], b.upper[j], j)
                mask[j] = lo_v == 0 and hi_v == 0
                if not mask[j] and dom is not None and exact_in is not False:
                    # exact interval arithmetic: no rounding allowance, and the inputs' exact
                    # quantized values
                    if exact_in is None:
                        exact_in = _exact_inputs(net, dom, bounds, k) or False
                    if exact_in:
                        lo_z, hi_z = _exact_upper(layer, j, *exact_in)
                        lo_v, hi_v = unit_value_range(layer, q, lo_z, hi_z, j)
                        mask[j] = lo_v == 0 and hi_v == 0
        if mask.size and mask.all():
            mask[0] = False  # never an empty layer: one (dead) unit is kept
        dead.append(mask)
        active.append(int(np.sum(b.lower > 0)) if k < last else 0)
    return dead, active


def domain_bounds(net: QuantizedNetwork, dom: Domain, deadline: Deadline | None = None) -> tuple[list[LayerBounds], str]:
    """Sound pre-activation bounds of every layer over the whole domain (the union over its
    boxes) and the method's name: interval bounds through every quantizer, intersected with the
    symbolic ones where a run of layers has no quantizer between them."""
    out = None
    symbolic = any(q is None for q in net.quant[:-1])
    for box in dom.boxes:
        lo, hi = box.lower_float(), box.upper_float()
        got = quantized_interval_bounds(net, lo, hi)
        if symbolic:
            sym = quantized_interval_bounds(net, lo, hi, symbolic=True, deadline=deadline)
            got = [LayerBounds(np.maximum(a.lower, b.lower), np.minimum(a.upper, b.upper)) for a, b in zip(got, sym)]
        out = got if out is None else [LayerBounds(np.minimum(a.lower, b.lower), np.maximum(a.upper, b.upper))
                                       for a, b in zip(out, got)]
    return out, "interval+symbolic" if symbolic else "interval"
