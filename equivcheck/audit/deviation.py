"""Certified bounds on the deviation ``f(x) - g(x)`` of two networks over a box, and the exact
deviation at a point.

:func:`certified_difference` takes the smallest of several rigorous bounds: the bounds of each
model, :func:`equivcheck.bounds.methods.sound_bounds` on the :func:`difference_network`
(both networks side by side, the output layer computing ``f - g`` exactly) and the
differential propagation of :mod:`equivcheck.bounds.difference` (:func:`differential_interval`,
for equal architectures).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from equivcheck.bounds.difference import difference_bounds, same_shape
from equivcheck.bounds.methods import sound_bounds
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Box
from equivcheck.core.network import Affine, Layer, Network
from equivcheck.core.options import BoundMethod
from equivcheck.core.rational import fraction_array

DEFAULT_METHOD = BoundMethod.SYMBOLIC  # the audit's bound method unless one is given


def _up(x: np.ndarray) -> np.ndarray:
    return np.nextafter(x, np.inf)


def difference_network(f: Network, g: Network) -> Network | None:
    """A network computing ``f(x) - g(x)`` exactly: both networks side by side (block-diagonal
    hidden layers) and an output layer ``[W_f, -W_g]`` with bias ``b_f - b_g`` (kept as exact
    rationals when the float difference rounds). None when the depths differ."""
    if len(f.layers) != len(g.layers) or any(
        lf.relu != lg.relu for lf, lg in zip(f.layers, g.layers)
    ):
        return None
    layers = []
    last = len(f.layers) - 1
    for k, (lf, lg) in enumerate(zip(f.layers, g.layers)):
        af, ag = lf.affine, lg.affine
        if k == 0:
            w = np.vstack([af.weight, ag.weight])
            ew = None if af.is_exact_float and ag.is_exact_float else np.vstack(
                [af.rational_weight(), ag.rational_weight()])
        elif k < last:
            w = _block(af.weight, ag.weight, 0.0)
            ew = None if af.is_exact_float and ag.is_exact_float else _block(
                af.rational_weight(), ag.rational_weight(), Fraction(0))
        else:
            w = np.hstack([af.weight, -ag.weight])
            ew = None if af.is_exact_float and ag.is_exact_float else np.hstack(
                [af.rational_weight(), -ag.rational_weight()])
        if k < last:
            b = np.concatenate([af.bias, ag.bias])
            eb = None if af.is_exact_float and ag.is_exact_float else np.concatenate(
                [af.rational_bias(), ag.rational_bias()])
        else:
            b = af.bias - ag.bias
            exact_b = af.rational_bias() - ag.rational_bias()
            eb = None if np.all(fraction_array(b) == exact_b) and ew is None else exact_b
            if eb is not None and ew is None:
                ew = fraction_array(w)
        if ew is not None and eb is None:
            eb = fraction_array(b)
        layers.append(Layer(Affine(w, b, ew, eb), relu=lf.relu, name=f"diff{k}"))
    return Network(tuple(layers), source=f"{f.source} - {g.source}")


def _block(a: np.ndarray, b: np.ndarray, zero) -> np.ndarray:
    dtype = object if isinstance(zero, Fraction) else np.float64
    out = np.full((a.shape[0] + b.shape[0], a.shape[1] + b.shape[1]), zero, dtype=dtype)
    out[: a.shape[0], : a.shape[1]] = a
    out[a.shape[0]:, a.shape[1]:] = b
    return out


def differential_interval(f: Network, g: Network, lo: np.ndarray, hi: np.ndarray,
                          method: BoundMethod | str = BoundMethod.INTERVAL, symbolic: bool = False,
                          deadline: Deadline | None = None
                          ) -> tuple[np.ndarray, np.ndarray] | None:
    """Rigorous bounds ``(dlo, dhi)`` on ``f(x) - g(x)`` for ``x`` in the float box ``[lo, hi]``
    (see :func:`equivcheck.bounds.difference.difference_bounds`); None when the shapes differ."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    if not same_shape(f, g):
        return None
    method = BoundMethod.parse(method)
    bf = sound_bounds(f, lo, hi, method, deadline)
    bg = sound_bounds(g, lo, hi, method, deadline)
    out = difference_bounds(f, g, lo, hi, bf, bg, symbolic=symbolic, deadline=deadline)[-1]
    return out.post_lower, out.post_upper


def certified_difference(f: Network, g: Network, box: Box,
                         method: BoundMethod | str = DEFAULT_METHOD,
                         deadline: Deadline | None = None) -> tuple[np.ndarray, str]:
    """Per output j, a certified upper bound of ``|f_j(x) - g_j(x)|`` over ``box``, and the
    name of the method that gave the smallest total. Past ``deadline`` the costlier candidates
    are skipped or computed with cheaper (still rigorous) bounds."""
    method = BoundMethod.parse(method)
    lo, hi = box.lower_float(), box.upper_float()
    candidates: list[tuple[np.ndarray, str]] = []
    bf = sound_bounds(f, lo, hi, method, deadline)
    bg = sound_bounds(g, lo, hi, method, deadline)
    naive = np.maximum(_up(bf[-1].upper - bg[-1].lower), _up(bg[-1].upper - bf[-1].lower))
    candidates.append((naive, f"{method} bounds of each model"))
    late = deadline is not None and deadline.expired()
    diff = None if late else difference_network(f, g)
    if diff is not None:
        out = sound_bounds(diff, lo, hi, method, deadline)[-1]
        candidates.append((np.maximum(np.abs(out.lower), np.abs(out.upper)),
                           f"{method} bounds of the difference network"))
    dint = differential_interval(f, g, lo, hi, method, deadline=deadline)
    if dint is not None:
        candidates.append((np.maximum(np.abs(dint[0]), np.abs(dint[1])), "differential interval"))
        if not (deadline is not None and deadline.expired()):
            dsym = differential_interval(f, g, lo, hi, method, symbolic=True, deadline=deadline)
            candidates.append((np.maximum(np.abs(dsym[0]), np.abs(dsym[1])),
                               "differential symbolic bounds"))
    best = np.min(np.vstack([c for c, _ in candidates]), axis=0)
    name = min(candidates, key=lambda c: float(np.max(c[0])))[1]
    return best, name


def exact_deviation(f: Network, g: Network, x) -> list[Fraction]:
    """``|f_j(x) - g_j(x)|`` for every output j, in exact rational arithmetic (``x`` of floats
    or exact Fractions)."""
    q = [v if isinstance(v, Fraction) else Fraction(float(v)) for v in x]
    return [abs(a - b) for a, b in zip(f.evaluate_exact(q), g.evaluate_exact(q))]
