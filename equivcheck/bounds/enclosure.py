"""Plain ReLU networks that enclose quantized ones: what the engine proves quantized pairs with.

A quantizer maps ``v`` to ``Q(v) = clip(s * round(v / s), lo, hi)`` (``lo = s (qmin - zp)``,
``hi = s (qmax - zp)``, see :mod:`equivcheck.core.quantized`). Since
``s * round(v / s) = v + e(v)`` with ``|e(v)| <= s / 2``, ``Q(v) = clip(v + e(v), lo, hi)``.
Replacing each rounding error ``e(v)`` by a free *noise input* ``e`` in ``[-s/2, s/2]`` gives a
float network ``N(x, e)`` with one extra input per rounded value and this promise:

    for every input x, the quantized network's exact output equals N(x, e*) for the rounding
    errors e* of its own evaluation at x, and e* lies in the noise box.

A dynamic quantizer ``D`` (one scale ``s`` for the whole vector, computed from it) is never
clipped and moves each value by at most ``s / 2 <= S / 2``, ``S`` a bound of ``s`` over the box
(:func:`noise_halves`): its noise inputs lie in ``[-S/2, S/2]`` and the promise below holds the
same way.

So a property that holds for ``N`` on ``box x noise box`` holds for the quantized network on the
box: a proof on the enclosure is a proof. A violation of ``N`` at ``(x, e)`` is a counterexample
of the quantized network only if exact evaluation at ``x`` says so (``e`` may be no rounding
error the network makes).

The clip is written with ReLUs (``max(w, lo) = lo + relu(w - lo)``,
``min(w, hi) = hi - relu(hi - w)``); a side is left out when sound interval bounds of ``v`` over
the box show it cannot bind (``v >= lo``: then ``round(v / s) >= lo / s``, an integer, so the
rounded value is never below ``lo``; likewise ``v <= hi``). When no unit of a quantizer needs a
clip, no layer is added: the noise enters the next layer's affine map. Values that must cross a
ReLU layer unchanged (the noise inputs on their way to the layer that uses them, unclipped units
beside clipped ones) pass as ``relu(t - L) + L`` with ``L`` a sound lower bound of ``t``: exact.

Every weight of ``N`` is a stored weight, its negation, or +-1, and every bias is computed in
exact rational arithmetic (kept as the layer's exact values when its nearest float is not
exact), so ``N`` is exactly the map described above, not a float approximation of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from equivcheck.bounds.interval import affine_interval
from equivcheck.bounds.quant_interval import dynamic_interval, quantized_interval_bounds
from equivcheck.bounds.symbolic import symbolic_bounds
from equivcheck.core import matrix
from equivcheck.core.domain import Box
from equivcheck.core.exact import affine_exact
from equivcheck.core.network import Affine, Layer, Network
from equivcheck.core.quantized import QuantizedNetwork, Quantizer, float_layers, is_dynamic
from equivcheck.core.rational import float_down, float_up

SPARSE_ENTRIES = 2_000_000  # an enclosure layer past this many (rows x cols) is built sparse


@dataclass(frozen=True, eq=False)
class EnclosedPair:
    """Both networks of a pair as plain networks on the extended input ``(x, noise)``.

    ``a``/``b`` take ``in_dim + noise`` inputs: first the ``in_dim`` inputs of the pair, then
    the noise inputs of ``a``'s quantizers, then ``b``'s. A network that is not quantized reads
    only the first ``in_dim``. ``noise_half`` is each noise input's half-width ``s / 2`` (a
    dynamic quantizer: ``S / 2``, see :func:`noise_halves`).
    """

    a: Network
    b: Network
    in_dim: int
    noise_half: tuple[Fraction, ...]
    clip_units: int  # ReLU units the clips added, in both networks

    @property
    def noise(self) -> int:
        return len(self.noise_half)

    def extend(self, box: Box) -> Box:
        """``box x [-s/2, s/2]^noise``: the domain of the enclosures for one box."""
        return Box(box.lower + tuple(-h for h in self.noise_half), box.upper + self.noise_half,
                   box.lower_strict + (False,) * self.noise, box.upper_strict + (False,) * self.noise)


def enclose_pair(a, b, lo: np.ndarray, hi: np.ndarray) -> EnclosedPair:
    """The enclosures of ``a`` and ``b`` (each a :class:`Network` or :class:`QuantizedNetwork`)
    for inputs in the float box ``[lo, hi]``, which must contain the domain (clip sides that
    cannot bind on it are left out, so the promise of the module holds for inputs in it)."""
    na = a.quantized_units if isinstance(a, QuantizedNetwork) else 0
    halves_a, halves_b = noise_halves(a, lo, hi), noise_halves(b, lo, hi)
    half = tuple(h for hs in halves_a + halves_b for h in hs)
    half_f = np.array([float(h) for h in half])  # exact: halves of float32 scales, or floats
    ext_lo = np.concatenate([np.asarray(lo, dtype=np.float64), -half_f])
    ext_hi = np.concatenate([np.asarray(hi, dtype=np.float64), half_f])
    ea, clips_a = _Builder(a, a.in_dim, ext_lo, ext_hi, halves_a).build()
    eb, clips_b = _Builder(b, a.in_dim + na, ext_lo, ext_hi, halves_b).build()
    return EnclosedPair(ea, eb, a.in_dim, half, clips_a + clips_b)


def noise_halves(net, lo: np.ndarray, hi: np.ndarray) -> list[np.ndarray]:
    """Per quantizer of ``net`` (input first), the half-width of each of its noise inputs
    (object arrays of Fractions): ``s / 2`` for a static quantizer; for a dynamic one ``S / 2``
    with ``S`` a bound of its scale over the box ``[lo, hi]`` (from interval bounds of the
    values it rounds), since ``|D(v)_i - v_i| <= s / 2 <= S / 2``."""
    qs = _quantizers(net)
    if not any(is_dynamic(q) for q in qs):
        return [q.scale / 2 for q in qs]
    bounds = quantized_interval_bounds(net, lo, hi)
    values = [(np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64))] if net.input_quant is not None else []
    for layer, q, b in zip(net.network.layers, net.quant, bounds):
        if q is not None:
            values.append((np.maximum(b.lower, 0.0), np.maximum(b.upper, 0.0)) if layer.relu else (b.lower, b.upper))
    out = []
    for q, (v_lo, v_hi) in zip(qs, values):
        if is_dynamic(q):
            h = np.empty(q.n, dtype=object)
            h[:] = [Fraction(q.half_bound(v_lo, v_hi))] * q.n
            out.append(h)
        else:
            out.append(q.scale / 2)
    return out


def _quantizers(net) -> list[Quantizer]:
    return net.quantizers() if isinstance(net, QuantizedNetwork) else []


@dataclass
class Rep:
    """A vector of the chain as an affine function of the current enclosure layer's outputs
    ``y``: ``value[i] = const[i] + sum_t sign_t[i] * y[col_t[i]]`` (``col_t[i] = -1``: no
    term). Every column of ``y`` appears in at most one term of one unit, so the weights of a
    map applied to it are stored weights or their negations (nothing is summed)."""

    terms: list[tuple[np.ndarray, np.ndarray]]
    const: np.ndarray  # object array of Fraction

    @classmethod
    def identity(cls, n: int) -> Rep:
        return cls([(np.arange(n), np.ones(n))], zeros(n))


class _Builder:
    """Builds one network's enclosure layer by layer (see the module doc)."""

    def __init__(self, net, noise_offset: int, ext_lo: np.ndarray, ext_hi: np.ndarray,
                 halves: list[np.ndarray]) -> None:
        self.net = net
        self.plain = float_layers(net)
        self.width = len(ext_lo)
        self.ext_lo, self.ext_hi = ext_lo, ext_hi
        self.layers: list[Layer] = []
        self.clips = 0
        # the noise blocks not used yet: (columns of y, shift) with noise = y[cols] - shift
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.halves = list(halves)  # of the pending noise blocks, in order
        offset = noise_offset
        for q in _quantizers(net):
            self.pending.append((np.arange(offset, offset + q.n), zeros(q.n)))
            offset += q.n
        self.rep = Rep.identity(net.in_dim)
        self.lo, self.hi = ext_lo[:net.in_dim], ext_hi[:net.in_dim]

    def build(self) -> tuple[Network, int]:
        net = self.net
        quant = net.quant if isinstance(net, QuantizedNetwork) else (None,) * len(self.plain.layers)
        if isinstance(net, QuantizedNetwork) and net.input_quant is not None:
            self._quantize(net.input_quant, self.lo, self.hi)
        v_lo, v_hi = self.lo, self.hi
        if isinstance(net, QuantizedNetwork) and net.input_quant is not None:
            v_lo, v_hi = quantized_interval(net.input_quant, v_lo, v_hi)
        for layer, q in zip(self.plain.layers, quant):
            z_lo, z_hi = affine_interval(layer.weight, layer.bias, v_lo, v_hi,
                                         exact_weights=layer.affine.is_exact_float)
            v_lo, v_hi = (np.maximum(z_lo, 0.0), np.maximum(z_hi, 0.0)) if layer.relu else (z_lo, z_hi)
            self._layer(layer)
            if q is not None:
                v_lo, v_hi = self._tighter(q, layer.relu, v_lo, v_hi)
                self._quantize(q, v_lo, v_hi)
                v_lo, v_hi = quantized_interval(q, v_lo, v_hi)
        if not self._is_identity():
            n = len(self.rep.const)
            rows, cols, signs, units = rep_entries(self.rep, np.arange(n))
            w, ex = assemble(rows, cols, signs, None, n, self.width)
            self.layers.append(Layer(make_affine(w, ex, self.rep.const), False, "enclosure output"))
        return self.plain.with_layers(self.layers, note=None), self.clips

    def _tighter(self, q: Quantizer, relu: bool, v_lo: np.ndarray, v_hi: np.ndarray):
        """The bounds of the value about to be quantized, tightened by CROWN-style bounds of
        the enclosure built so far (sound: the enclosure holds the true value) when the
        interval bounds say a clip might bind."""
        if is_dynamic(q):
            return v_lo, v_hi
        lo, hi = q.lowest(), q.highest()
        if all(Fraction(float(a)) >= b for a, b in zip(v_lo, lo)) and all(
                Fraction(float(a)) <= b for a, b in zip(v_hi, hi)):
            return v_lo, v_hi
        prefix = Network(tuple(self.layers), source="enclosure prefix")
        last = symbolic_bounds(prefix, self.ext_lo, self.ext_hi)[-1]
        n = len(v_lo)
        z_lo, z_hi = last.lower[:n], last.upper[:n]
        if relu:
            z_lo, z_hi = np.maximum(z_lo, 0.0), np.maximum(z_hi, 0.0)
        return np.maximum(v_lo, z_lo), np.minimum(v_hi, z_hi)

    # -- steps -----------------------------------------------------------------------------
    def _layer(self, layer: Layer) -> None:
        """Layer ``z = W h + b`` (then its ReLU) on the current representation of ``h``, with
        the pending noise passed beside it."""
        aff = layer.affine
        rows, cols, vals, exact = weight_entries(aff, self.rep)
        bias = affine_exact(aff, self.rep.const)
        self._emit(rows, cols, vals, exact, bias, layer.out_dim, layer.relu, layer.name)
        self.rep = Rep.identity(layer.out_dim)

    def _quantize(self, q: Quantizer, v_lo: np.ndarray, v_hi: np.ndarray) -> None:
        """``h = clip(v + e, lo, hi)`` for the current value ``v`` and the next noise block."""
        cols_e, shift = self.pending.pop(0)
        self.halves.pop(0)
        if is_dynamic(q):  # never clipped: the noise enters the next map
            self.rep = Rep(self.rep.terms + [(cols_e, np.ones(q.n))], self.rep.const - shift)
            return
        lo, hi = q.lowest(), q.highest()
        need_lo = np.array([Fraction(float(a)) < b for a, b in zip(v_lo, lo)])
        need_hi = np.array([Fraction(float(a)) > b for a, b in zip(v_hi, hi)])
        w = Rep(self.rep.terms + [(cols_e, np.ones(q.n))], self.rep.const - shift)
        if not (need_lo.any() or need_hi.any()):
            self.rep = w  # no clip can bind: the noise enters the next map
            return
        n = q.n
        both = need_lo & need_hi
        # units: first one per value (w - lo, hi - w, or w - L), then the second side of `both`
        first_sign = np.where(need_lo | ~need_hi, 1.0, -1.0)
        low_w = np.array([Fraction(float(a)) for a in v_lo], dtype=object) - q.scale / 2
        first_const = np.where(need_lo, -lo, np.where(need_hi, hi, -low_w))
        second = np.flatnonzero(both)
        rows, cols, signs, units = rep_entries(w, np.arange(n), first_sign)
        r2, c2, s2, _ = rep_entries(w, second, np.ones(len(second)))
        rows = np.concatenate([rows, r2 + n])
        cols, signs = np.concatenate([cols, c2]), np.concatenate([signs, s2])
        bias = np.empty(n + len(second), dtype=object)
        bias[:n] = first_sign.astype(np.int64).astype(object) * w.const + first_const
        bias[n:] = w.const[second] - hi[second]
        self._emit(rows, cols, signs, None, bias, n + len(second), True, q.name or "quantize")
        self.clips += int(need_lo.sum() + need_hi.sum())
        # h = lo + u1 (- u2), hi - u, or u + L
        const = np.where(need_lo, lo, np.where(need_hi, hi, low_w))
        sign1 = np.where(need_lo | ~need_hi, 1.0, -1.0)
        col2 = np.full(n, -1)
        col2[second] = n + np.arange(len(second))
        self.rep = Rep([(np.arange(n), sign1), (col2, -np.ones(n))], const)

    # -- building blocks --------------------------------------------------------------------
    def _emit(self, rows, cols, vals, exact, bias, n_out: int, relu: bool, name: str) -> None:
        """Append a layer whose first ``n_out`` units are the given entries and bias, followed by
        one unit per pending noise value (shifted by ``s/2`` through a ReLU)."""
        extra_rows, extra_cols, extra_bias, new_pending = [], [], [], []
        at = n_out
        for (cols_e, shift), half in zip(self.pending, self.halves):
            k = len(cols_e)
            new_shift = half if relu else zeros(k)
            extra_rows.append(np.arange(at, at + k))
            extra_cols.append(cols_e)
            extra_bias.append(new_shift - shift)  # unit = noise + new_shift >= 0
            new_pending.append((np.arange(at, at + k), new_shift))
            at += k
        if extra_rows:
            er, ec = np.concatenate(extra_rows), np.concatenate(extra_cols)
            rows, cols = np.concatenate([rows, er]), np.concatenate([cols, ec])
            vals = np.concatenate([vals, np.ones(len(er))])
            if exact is not None:
                exact = np.concatenate([exact, np.full(len(er), Fraction(1), dtype=object)])
            bias = np.concatenate([np.asarray(bias, dtype=object)] + extra_bias)
        w, ex = assemble(rows, cols, vals, exact, at, self.width)
        self.layers.append(Layer(make_affine(w, ex, bias), relu, name))
        self.width = at
        self.pending = new_pending

    def _is_identity(self) -> bool:
        rep = self.rep
        n = len(rep.const)
        if len(rep.terms) != 1 or self.width != n or any(c != 0 for c in rep.const):
            return False
        col, sign = rep.terms[0]
        return bool(np.array_equal(col, np.arange(n)) and np.all(sign == 1.0))


def weight_entries(aff: Affine, rep: Rep):
    """The entries of ``W P`` (``P`` the selection of ``rep``): rows, columns, float
    values and exact values (None when the floats are exact)."""
    w = aff.weight
    if aff.is_sparse:
        r = np.repeat(np.arange(w.shape[0]), np.diff(w.indptr))
        c, v = w.indices, w.data
        ex = None if aff.is_exact_float else aff.rational_weight()
    else:
        r, c = np.divmod(np.arange(w.size), w.shape[1])
        v = w.ravel()
        ex = None if aff.is_exact_float else np.asarray(aff.rational_weight()).ravel()
    rows, cols, vals, exact = [], [], [], []
    for col_t, sign_t in rep.terms:
        keep = col_t[c] >= 0
        rows.append(r[keep])
        cols.append(col_t[c[keep]])
        vals.append(sign_t[c[keep]] * v[keep])
        if ex is not None:
            exact.append(sign_t[c[keep]].astype(np.int64).astype(object) * ex[keep])
    return (np.concatenate(rows), np.concatenate(cols), np.concatenate(vals),
            np.concatenate(exact) if ex is not None else None)


def rep_entries(rep: Rep, units: np.ndarray, sign: np.ndarray | None = None):
    """Rows (0.. per listed unit), columns and signs of ``sign * (value - const)`` for the
    listed units of ``rep``."""
    sign = np.ones(len(units)) if sign is None else sign
    rows, cols, signs = [], [], []
    for col_t, sign_t in rep.terms:
        c = col_t[units]
        keep = c >= 0
        rows.append(np.flatnonzero(keep))
        cols.append(c[keep])
        signs.append(sign_t[units][keep] * sign[keep])
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(signs), units


def assemble(rows, cols, vals, exact, n_rows: int, width: int):
    """The ``(n_rows, width)`` weight with these entries (no two share a position), dense
    or sparse by size, and its exact values aligned with it (or None)."""
    if n_rows * width <= SPARSE_ENTRIES:
        w = np.zeros((n_rows, width))
        w[rows, cols] = vals
        ex = None
        if exact is not None:
            ex = np.full((n_rows, width), Fraction(0), dtype=object)
            ex[rows, cols] = exact
        return w, ex
    order = np.lexsort((cols, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_rows))])
    w = matrix.csr((vals, cols, indptr), shape=(n_rows, width))
    return w, (exact[order] if exact is not None else None)


def zeros(n: int) -> np.ndarray:
    out = np.empty(n, dtype=object)
    out[:] = [Fraction(0)] * n
    return out


def make_affine(w, exact_w, bias_exact: Sequence) -> Affine:
    """An :class:`Affine` of float weights (their exact values, or None: the floats are exact)
    and an exact bias (its nearest floats beside it when they are not exact)."""
    bias_exact = np.asarray(bias_exact, dtype=object)
    bias = np.array([float(v) for v in bias_exact], dtype=np.float64)
    bias_is_float = all(Fraction(f) == v for f, v in zip(bias, bias_exact))
    if exact_w is None and bias_is_float:
        return Affine(w, bias)
    ex_b = np.empty(len(bias_exact), dtype=object)
    ex_b[:] = [Fraction(v) for v in bias_exact]
    return Affine(w, bias, exact_w, ex_b)


def quantized_interval(q: Quantizer, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sound float bounds of ``Q(v)`` for ``v`` in ``[lo, hi]``: ``Q`` is monotone with
    ``Q(v) in [max(v - s/2, lowest), min(v + s/2, highest)]``. A dynamic quantizer ``D``: within
    ``S/2`` of ``v`` (``S`` a bound of its scale over the box) and of the sign of ``v``."""
    if is_dynamic(q):
        return dynamic_interval(q, lo, hi)
    half = q.scale_float / 2  # exact: a float32 scale halved
    low = np.nextafter(lo - half, -np.inf)
    high = np.nextafter(hi + half, np.inf)
    lowest = np.array([float_down(v) for v in q.lowest()])
    highest = np.array([float_up(v) for v in q.highest()])
    return np.clip(low, lowest, highest), np.clip(high, lowest, highest)
