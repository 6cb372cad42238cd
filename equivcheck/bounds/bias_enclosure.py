"""Quantized pairs as float layers with interval biases: what the engine proves them with.

Rounding moves a value by at most half a step, and clipping is monotone and 1-Lipschitz, so a
quantizer's output is ``Q(v) = clip(v) + e`` with ``|e| <= s/2``, and the next layer's
pre-activation is ``W clip(v) + b + W e`` with ``|W e| <= |W| s/2``. So the float layers, with
``clip`` written into them and a *radius* ``|W| s/2`` on the next layer's bias (rounded up),
enclose the quantized network: for every input, its exact values lie within the bounds the
engine computes for the layers with biases ``b +- radius``
(:meth:`equivcheck.engine.PairModel.build`). Unlike :mod:`equivcheck.bounds.enclosure`, no input
is added, so the engine's cost stays that of the float pair, and a pair with the same layer
widths keeps its shape (the engine's difference stream, which carries the correlation between a
model and its quantized copy, needs that).

``clip`` is written with ReLUs only where sound interval bounds say it might bind:

* after a ReLU (``lowest <= 0``) only the top can clip: ``min(relu(z), hi) = relu(z) -
  relu(z - hi)``, one more unit ``z - hi`` (a *twin*) in the same layer, read with the weight
  ``-W`` by the next layer;
* a quantized value without a ReLU that might clip (the input too, when the quantizer's range
  does not hold the box) gets a layer of its own after it:
  ``clip(z) = c + relu(z - c) - relu(z - hi)`` with ``c = lo`` where the bottom might clip, else a
  sound lower bound of ``z`` (then ``c + relu(z - c) = z``).

A dynamic quantizer (:class:`~equivcheck.core.quantized.DynamicQuantizer`) never clips (its
range holds the vector it rounds), and its error is at most ``S/2`` with ``S`` a bound of its
scale: per node from the node's bounds (:mod:`equivcheck.engine.rounding_noise`), or, where a
constant radius is used (the input), from interval bounds over the box.

Both networks get the same units in the same places: where one does not round or clip a value,
its twin is read with the weight 0 and its clip unit passes the value through. Every weight is a
stored weight, its negation, 0 or 1, and every bias is computed in exact rationals, so the layers
are exactly the maps described.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from equivcheck.bounds.enclosure import (
    Rep,
    assemble,
    make_affine,
    quantized_interval,
    rep_entries,
    weight_entries,
    zeros,
)
from equivcheck.bounds.interval import TINY, affine_interval, gamma
from equivcheck.core import matrix
from equivcheck.core.domain import Box
from equivcheck.core.exact import affine_exact
from equivcheck.core.network import Layer, Network
from equivcheck.core.quantized import QuantizedNetwork, Quantizer, float_layers, is_dynamic

INPUT = -1  # the index that stands for the network's input (its quantizer, its box)


@dataclass(frozen=True, eq=False)
class BiasEnclosure:
    """The two networks' float layers with the clips written in, and per layer the radius of
    each bias (None: exact) that the rounding of the layer before adds."""

    f: Network
    g: Network
    radius: tuple  # (per layer of f, per layer of g): None or a float vector, rounded up
    rounding: tuple  # (per layer of f, per layer of g): None or (Quantizer, after a ReLU)
    clip_units: int  # ReLU units added for clipping, in each network

    @property
    def rounded_layers(self) -> int:
        return sum(r is not None for rs in self.radius + self.rounding for r in rs)


def bias_enclosure(a, b, box: Box) -> BiasEnclosure:
    """The :class:`BiasEnclosure` of ``a`` and ``b`` (a :class:`Network` or
    :class:`QuantizedNetwork` each) on ``box``. Networks with the same depth, widths and ReLU
    placement get the same units in the same places (the engine's difference stream then
    applies); others are each enclosed on their own."""
    specs = [_Spec(n, box) for n in (a, b)]
    la, lb = specs[0].layers, specs[1].layers
    same = (len(la) == len(lb) and all(x.out_dim == y.out_dim for x, y in zip(la, lb))
            and specs[0].relu == specs[1].relu)
    if same:
        (fa, ra, qa), (fb, rb, qb), clips = _build(specs)
    else:
        ((fa, ra, qa),), clips_a = _build(specs[:1])
        ((fb, rb, qb),), clips_b = _build(specs[1:])
        clips = clips_a + clips_b
    return BiasEnclosure(fa, fb, (ra, rb), (qa, qb), clips)


def _build(specs: list) -> tuple:
    """The enclosures of the networks of ``specs`` (one, or two of the same shape built in
    step), and the number of clipping units (per network)."""
    builders = [_Builder(s) for s in specs]
    n = len(specs[0].layers)

    def either(method, k):
        return np.logical_or.reduce([getattr(s, method)(k) for s in specs])

    clip_units = 0
    top, bottom = either("may_clip_top", INPUT), either("may_clip_bottom", INPUT)
    if top.any() or bottom.any():  # the input quantizer's range does not hold the box
        for bld in builders:
            bld.clip_layer(INPUT, top, bottom, _shift(specs, INPUT, np.flatnonzero(top)))
        clip_units += len(top) + int(top.sum())
    for k in range(n):
        relu = specs[0].relu[k]
        top, bottom = either("may_clip_top", k), either("may_clip_bottom", k)
        quantized = any(s.quant[k] is not None for s in specs)
        twins = np.flatnonzero(top) if relu else np.zeros(0, dtype=np.int64)
        for bld in builders:
            bld.layer(k, twins, _shift(specs, k, twins))
        clip_units += len(twins)
        if quantized and not relu and (top.any() or bottom.any()):
            for bld in builders:
                bld.clip_layer(k, top, bottom, _shift(specs, k, np.flatnonzero(top)))
            clip_units += len(top) + int(top.sum())
    if any(s.quant[n - 1] is not None for s in specs) or not all(b.is_identity() for b in builders):
        for bld in builders:
            bld.output_layer()
    results = tuple(bld.result() for bld in builders)
    return (*results, clip_units) if len(specs) == 2 else (results, clip_units)


def _shift(specs, k: int, units: np.ndarray) -> np.ndarray:
    """The clip value ``hi`` of the listed units at quantizer ``k``: that of the first network
    that rounds there (the other network's twin then shifts by the same, so the two twins stay
    close and their difference small)."""
    for s in specs:
        if s.quant[k] is not None and not is_dynamic(s.quant[k]):
            return s.quant[k].highest()[units]
    return zeros(len(units))


class _Spec:
    """One network's layers, quantizers and interval bounds (of the network with its rounding)."""

    def __init__(self, net, box: Box) -> None:
        plain = float_layers(net)
        self.plain = plain
        self.layers = list(plain.layers)
        n = len(self.layers)
        self.input_quant = net.input_quant if isinstance(net, QuantizedNetwork) else None
        # by layer index, INPUT (-1) standing for the input: the quantizers and the bounds of
        # the values they round (pre-activations; the box for the input)
        self.quant = dict(enumerate(net.quant if isinstance(net, QuantizedNetwork) else [None] * n))
        self.quant[INPUT] = self.input_quant
        self.relu = [la.relu for la in self.layers]
        for k, q in enumerate(net.quant if isinstance(net, QuantizedNetwork) else ()):
            if q is not None and not is_dynamic(q) and not self.relu[k] and all(v == 0 for v in q.lowest()):
                self.relu[k] = True  # Q(z) with lowest 0 is Q(relu(z)): a ReLU layer
        v_lo, v_hi = box.lower_float(), box.upper_float()
        self.z_lo, self.z_hi = {INPUT: v_lo}, {INPUT: v_hi}
        # per quantizer (by identity): the bound of its rounding error over the box
        self.halves: list[tuple[object, np.ndarray]] = []
        if self.input_quant is not None:
            self._half(self.input_quant, v_lo, v_hi)
            v_lo, v_hi = quantized_interval(self.input_quant, v_lo, v_hi)
        for k, layer in enumerate(self.layers):
            z_lo, z_hi = affine_interval(layer.weight, layer.bias, v_lo, v_hi,
                                         exact_weights=layer.affine.is_exact_float)
            self.z_lo[k], self.z_hi[k] = z_lo, z_hi
            v_lo, v_hi = (np.maximum(z_lo, 0.0), np.maximum(z_hi, 0.0)) if self.relu[k] else (z_lo, z_hi)
            if self.quant[k] is not None:
                self._half(self.quant[k], v_lo, v_hi)
                v_lo, v_hi = quantized_interval(self.quant[k], v_lo, v_hi)

    def _half(self, q, v_lo: np.ndarray, v_hi: np.ndarray) -> None:
        """Record ``q``'s error bound: ``s/2`` per unit (exact), or for a dynamic quantizer
        ``S/2`` with ``S`` a bound of its scale over the values ``[v_lo, v_hi]`` it rounds."""
        if is_dynamic(q):
            half = np.full(q.n, q.half_bound(v_lo, v_hi))
        else:
            half = q.scale_float / 2
        self.halves.append((q, half))

    def half_of(self, q) -> np.ndarray:
        """The error bound recorded for quantizer ``q`` (see :meth:`_half`)."""
        return next(h for p, h in self.halves if p is q)

    def may_clip_top(self, k: int) -> np.ndarray:
        """Per unit: might the value of layer ``k`` pass the top of its quantizer's range?"""
        q = self.quant[k]
        if q is None or is_dynamic(q):  # a dynamic range holds the whole vector
            return np.zeros(len(self.z_hi[k]), dtype=bool)
        return _beyond(self.z_hi[k], q.highest(), 1)

    def may_clip_bottom(self, k: int) -> np.ndarray:
        """Per unit: might the value of layer ``k`` (not after a ReLU) pass the bottom?"""
        q = self.quant[k]
        if q is None or is_dynamic(q) or (k != INPUT and self.relu[k]):
            return np.zeros(len(self.z_lo[k]), dtype=bool)
        return _beyond(self.z_lo[k], q.lowest(), -1)


def _beyond(bound: np.ndarray, limit: np.ndarray, side: int) -> np.ndarray:
    """Per unit: ``bound > limit`` (``side`` 1) or ``bound < limit`` (-1), exactly. The limits
    ``s (q - zp)`` are float32 scales times small integers, float64 values exactly (checked;
    any that is not is compared as a rational)."""
    lim = np.array([float(v) for v in limit])
    exact = np.array([Fraction(f) == v for f, v in zip(lim, limit)])
    out = bound > lim if side > 0 else bound < lim
    for i in np.flatnonzero(~exact):
        b = Fraction(float(bound[i]))
        out[i] = b > limit[i] if side > 0 else b < limit[i]
    return out


class _Builder:
    """One network's enclosure, built in step with the other's (same units, same places)."""

    def __init__(self, spec: _Spec) -> None:
        self.s = spec
        self.out: list[Layer] = []
        self.radius: list = []
        self.rounding: list = []
        self.rep = Rep.identity(spec.plain.in_dim)
        self.width = spec.plain.in_dim
        self.noise: Quantizer | None = spec.input_quant  # the rounding the next layer reads
        # (quantizer, relu) when the next layer reads the rounded layer's own units (the engine
        # then bounds the rounding per node), else None (a constant radius of s/2 per value)
        self.node_noise: tuple | None = None

    def _emit(self, rows, cols, vals, exact, bias, n_rows, relu, name, radius) -> None:
        w, ex = assemble(rows, cols, vals, exact, n_rows, self.width)
        self.out.append(Layer(make_affine(w, ex, bias), relu, name))
        self.radius.append(radius)
        self.rounding.append(None)
        self.width = n_rows

    def _read_noise(self) -> None:
        """The layer just emitted reads the pending rounding per node."""
        self.rounding[-1], self.radius[-1] = self.node_noise, None
        self.noise = self.node_noise = None

    def _radius(self, layer: Layer, extra_rows: np.ndarray) -> np.ndarray | None:
        """``|W| s/2`` of the rounding read by this layer (rows, then the repeated rows)."""
        q, self.noise = self.noise, None
        if q is None or self.node_noise is not None:
            return None
        half = self.s.half_of(q)  # s/2 exact; a dynamic bound rounded up
        n = matrix.row_counts(layer.weight) + 2
        r = matrix.apply(matrix.absolute(layer.weight), half) * (1.0 + 2.0 * gamma(n) + 2.0**-50) + TINY
        return np.concatenate([r, r[extra_rows]])

    def layer(self, k: int, twins: np.ndarray, shift: np.ndarray) -> None:
        """Layer ``k`` on the current value, with the twins ``z - shift`` of ``twins``."""
        layer = self.s.layers[k]
        aff = layer.affine
        rows, cols, vals, exact = weight_entries(aff, self.rep)
        bias = (affine_exact(aff, self.rep.const) if any(v != 0 for v in self.rep.const)
                else aff.rational_bias().copy())  # W 0 + b
        n = layer.out_dim
        if len(twins):  # the same rows again, shifted
            pick = np.isin(rows, twins)
            where = np.searchsorted(twins, rows[pick])
            rows = np.concatenate([rows, n + where])
            cols, vals = np.concatenate([cols, cols[pick]]), np.concatenate([vals, vals[pick]])
            exact = None if exact is None else np.concatenate([exact, exact[pick]])
            bias = np.concatenate([bias, bias[twins] - shift])
        node = self.node_noise
        radius = self._radius(layer, twins)
        self._emit(rows, cols, vals, exact, bias, n + len(twins), self.s.relu[k], layer.name, radius)
        if node is not None:
            self.node_noise = node
            self._read_noise()
        q = self.s.quant[k]
        sign = np.zeros(n)
        if len(twins) and q is not None:  # min(relu(z), hi) = relu(z) - relu(z - hi)
            sign[twins] = -1.0 * self.s.may_clip_top(k)[twins]
        col2 = np.full(n, -1)
        col2[twins] = n + np.arange(len(twins))
        self.rep = Rep([(np.arange(n), np.ones(n)), (col2, sign)], zeros(n))
        self.noise = q
        self.node_noise = (q, self.s.relu[k]) if q is not None else None

    def clip_layer(self, k: int, top: np.ndarray, bottom: np.ndarray, shift: np.ndarray) -> None:
        """After quantized layer ``k`` without a ReLU (or on the input, ``k`` = INPUT): ``c + relu(z - c) - relu(z - hi)`` per
        value (``c = lo`` where this network's bottom clip might bind, else a sound lower bound
        of z; the second unit only where some top clip might bind)."""
        n = len(top)
        q = self.s.quant[k]
        low = np.array([Fraction(float(v)) for v in self.s.z_lo[k]], dtype=object)
        mine_bottom = self.s.may_clip_bottom(k)
        c = np.where(mine_bottom, q.lowest(), low) if q is not None and not is_dynamic(q) else low
        second = np.flatnonzero(top)
        r1, c1, s1, _ = rep_entries(self.rep, np.arange(n))
        r2, c2, s2, _ = rep_entries(self.rep, second)
        rows = np.concatenate([r1, n + r2])
        cols, vals = np.concatenate([c1, c2]), np.concatenate([s1, s2])
        bias = np.concatenate([self.rep.const - c, self.rep.const[second] - shift])
        noise, self.noise = self.noise, None  # the rounding passes this layer: still pending
        self._emit(rows, cols, vals, None, bias, n + len(second), True, "clip", None)
        self.noise, self.node_noise = noise, None  # (read as a constant radius after the clip)
        sign = np.zeros(n)
        if q is not None:
            sign[second] = -1.0 * self.s.may_clip_top(k)[second]
        col2 = np.full(n, -1)
        col2[second] = n + np.arange(len(second))
        self.rep = Rep([(np.arange(n), np.ones(n)), (col2, sign)], c)

    def output_layer(self) -> None:
        """A linear layer giving the output from the last layer's units (and its rounding)."""
        n = len(self.rep.const)
        rows, cols, signs, _ = rep_entries(self.rep, np.arange(n))
        radius, node = None, self.node_noise
        if self.noise is not None and node is None:
            radius = self.s.half_of(self.noise) * (1.0 + 2.0**-52)
            self.noise = None
        self._emit(rows, cols, signs, None, self.rep.const, n, False, "output", radius)
        if node is not None:
            self._read_noise()
        self.rep = Rep.identity(n)

    def is_identity(self) -> bool:
        """True when the last layer's units are the value itself (no twin, no constant)."""
        rep, n = self.rep, len(self.rep.const)
        first, rest = rep.terms[0], rep.terms[1:]
        return (self.width == n and all(v == 0 for v in rep.const)
                and np.array_equal(first[0], np.arange(n)) and bool(np.all(first[1] == 1.0))
                and all(bool(np.all(c == -1)) for c, _ in rest))

    def result(self) -> tuple[Network, tuple, tuple]:
        return self.s.plain.with_layers(self.out), tuple(self.radius), tuple(self.rounding)
