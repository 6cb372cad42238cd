"""Symbolic (CROWN / DeepPoly style) bounds with an explicit rounding allowance.

The back-substitution below computes, for a matrix C of rows c, an upper bound of c . z_k over
the box. It is a chain of inequalities that hold for *any* float coefficients we choose::

  c.z_k = (cW_k).h_{k-1} + c.b_k                            (an identity in exact arithmetic)
  nu_i relu(z_i) <= rho_i z_i + r_i  for z_i in [l_i, u_i]  (r_i is the exact max of the
                                     piecewise-linear left minus right side, taken at l, u, 0)
  nu.x <= sum max(nu_i lo_i, nu_i hi_i)                     (over the input box)

Computing cW_k, rho W_j, the r_i and the sums in float64 makes errors; each is at most gamma(N)
times a magnitude (|c||W_k| . max|h_{k-1}| for a product, and so on) that we add up in ``mag``.
The bound returned is ``value + 3 gamma(N) mag``: rigorous for every float result.

Sparse layers (see :mod:`equivcheck.core.matrix`) keep the coefficients sparse: a layer whose
weight is sparse is bounded with a sparse C (rows of +-I, a chunk of rows at a time), and every
coefficient matrix ``nu``/``rho`` holds only the entries its rows reach, so memory follows the
receptive fields, never ``width x width``. N is taken from the layer widths (at least as many
terms as any float sum here adds), so the allowance is the same for both kinds.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import numpy as np

from equivcheck.bounds.interval import TINY, LayerBounds, gamma, intersect, interval_step
from equivcheck.core import matrix
from equivcheck.core.deadline import Deadline
from equivcheck.core.matrix import csr, is_sparse
from equivcheck.core.network import Network

SPARSE_CHUNK_ENTRIES = 4_000_000  # a sparse layer's +-I rows go back in chunks of about this
# many (rows x widest layer below) coefficients, so memory stays bounded whatever the width


def _allowance_factor(net: Network) -> float:
    n = max(max(layer.in_dim, layer.out_dim) for layer in net.layers) + 10 * len(net.layers) + 20
    return 3.0 * gamma(n)


def _post_max(bounds: Sequence[LayerBounds], net: Network, j: int, xmax: np.ndarray) -> np.ndarray:
    """Upper bound of |h_j| (the output of layer j; j = -1 is the input)."""
    if j < 0:
        return xmax
    lb = bounds[j]
    if net.layers[j].relu:
        return np.maximum(lb.upper, 0.0)
    return np.maximum(np.abs(lb.lower), np.abs(lb.upper))


def relu_relaxation(nu: np.ndarray, lower: np.ndarray, upper: np.ndarray):
    """Coefficients rho and constants r with nu_i relu(z) <= rho_i z + r_i on [l_i, u_i].

    rho is CROWN's adaptive choice (any choice would be valid); r is the maximum of the
    difference over the interval, attained at l, u or 0. Returns (rho, r_sum, magnitude).
    """
    rho, r = _relax_entries(nu, lower, upper)
    zmax = np.maximum(np.abs(lower), np.abs(upper))
    mag = (np.abs(nu) + np.abs(rho)) @ zmax
    return rho, r.sum(axis=1), mag


def _relax_entries(nu: np.ndarray, lower: np.ndarray, upper: np.ndarray):
    """Entrywise ``(rho, r)`` of :func:`relu_relaxation` (``lower``/``upper`` broadcast to
    ``nu``'s shape)."""
    act = lower >= 0.0
    inact = upper <= 0.0
    unst = ~(act | inact)
    den = np.where(unst, upper - lower, 1.0)
    s = np.where(unst, upper / den, 0.0) * (1.0 + 2.0**-48)
    alpha = (upper > -lower).astype(np.float64)
    rho = np.where(act, nu, np.where(inact, 0.0, np.where(nu > 0.0, nu * s, nu * alpha)))
    r = None
    for z in (lower, upper, np.clip(0.0, lower, upper)):
        cand = nu * np.maximum(z, 0.0) - rho * z
        r = cand if r is None else np.maximum(r, cand)
    return rho, r


def sparse_relaxation(nu, lower: np.ndarray, upper: np.ndarray):
    """:func:`relu_relaxation` for a sparse ``nu``, on its stored entries only (an entry that is
    not stored has nu = 0, hence rho = 0 and r = 0 in every case)."""
    return relax_entries(nu, _relax_entries, lower, upper)


def relax_entries(nu, entries, lower: np.ndarray, upper: np.ndarray, *more):
    """``(rho, r_sum, mag)`` of a relaxation given entrywise by
    ``entries(nu, lower, upper, *more) -> (rho, r)``, on the stored entries of a sparse ``nu``
    (the per-unit vectors gathered at each entry's column): ``rho`` sparse with ``nu``'s
    pattern, per row the sum of ``r`` and of ``(|nu| + |rho|) max(|lower|, |upper|)``."""
    cols = nu.indices
    lo_c, hi_c = lower[cols], upper[cols]
    rho, r = entries(nu.data, lo_c, hi_c, *(v[cols] for v in more))
    rho_m = csr((rho, cols, nu.indptr), shape=nu.shape)
    rows = np.repeat(np.arange(nu.shape[0]), np.diff(nu.indptr))
    r_sum = np.bincount(rows, weights=r, minlength=nu.shape[0])
    zmax = np.maximum(np.abs(lo_c), np.abs(hi_c))
    mag = np.bincount(rows, weights=(np.abs(nu.data) + np.abs(rho)) * zmax, minlength=nu.shape[0])
    return rho_m, r_sum, mag


def unit_rows(n: int, start: int, stop: int):
    """Rows ``e_start .. e_{stop-1}`` then ``-e_start .. -e_{stop-1}`` of size ``n``, sparse."""
    m = stop - start
    idx = np.arange(start, stop)
    return csr((np.r_[np.ones(m), -np.ones(m)], (np.arange(2 * m), np.r_[idx, idx])),
                        shape=(2 * m, n))


def chunk_rows(net: Network, k: int) -> int:
    """How many units of layer ``k`` go back together (sparse coefficients): about
    ``SPARSE_CHUNK_ENTRIES`` coefficients over the widest layer below."""
    widest = max(layer.in_dim for layer in net.layers[:k + 1])
    return max(1, SPARSE_CHUNK_ENTRIES // (2 * widest))


def times(c, w):
    """``c @ w`` for a dense or sparse ``c`` and ``w``: sparse only when both are."""
    if is_sparse(c) and is_sparse(w):
        return csr(c @ w)
    if is_sparse(c):
        return np.asarray(c @ w)
    return matrix.left_multiply(c, w)


_ABS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def abs_weight(layer):
    """``|W|`` of a layer's weight; for a sparse weight computed once per layer object (the
    chunks of a wide layer all read it)."""
    w = layer.weight
    if not is_sparse(w):
        return np.abs(w)
    got = _ABS.get(layer.affine)
    if got is None:
        got = _ABS[layer.affine] = abs(w)
    return got


def absolute(c):
    """``|c|`` entrywise, dense or sparse."""
    return abs(c) if is_sparse(c) else np.abs(c)


def box_max(nu, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per row of ``nu``: ``sum_i max(nu_i lo_i, nu_i hi_i)`` (the max of ``nu . x`` over the box)."""
    if not is_sparse(nu):
        return np.maximum(nu * lo, nu * hi).sum(axis=1)
    cols = nu.indices
    rows = np.repeat(np.arange(nu.shape[0]), np.diff(nu.indptr))
    return np.bincount(rows, weights=np.maximum(nu.data * lo[cols], nu.data * hi[cols]),
                       minlength=nu.shape[0])


def back_substitute(net: Network, k: int, c: np.ndarray, bounds: Sequence[LayerBounds],
                    lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ub, nu): rigorous upper bounds of ``c @ z_k`` (one per row of ``c``) over ``[lo, hi]``.

    ``bounds`` must be rigorous bounds of layers ``< k``. ``nu`` are the input coefficients of
    the linear upper bound (``argmax`` vertex ``where(nu > 0, hi, lo)`` is a good point to try).
    ``c`` may be a sparse ``csr_array`` (the coefficients then stay sparse while the weights
    they meet are sparse; ``nu`` is then sparse too).
    """
    xmax = np.maximum(np.abs(lo), np.abs(hi))
    layer = net.layers[k]
    c = csr(c, dtype=np.float64) if is_sparse(c) else np.atleast_2d(np.asarray(c, dtype=np.float64))
    val = np.asarray(c @ layer.bias)
    mag = np.asarray(absolute(c) @ np.abs(layer.bias))
    nu = times(c, layer.weight)
    mag += times(absolute(c), abs_weight(layer)) @ _post_max(bounds, net, k - 1, xmax)
    ops = matrix.stored_entries(layer.weight)
    for j in range(k - 1, -1, -1):
        lj = net.layers[j]
        if lj.relu:
            relax = sparse_relaxation if is_sparse(nu) else relu_relaxation
            rho, rsum, rmag = relax(nu, bounds[j].lower, bounds[j].upper)
            val += rsum
            mag += rmag
        else:
            rho = nu
        val += rho @ lj.bias
        mag += absolute(rho) @ np.abs(lj.bias)
        nu = times(rho, lj.weight)
        mag += times(absolute(rho), abs_weight(lj)) @ _post_max(bounds, net, j - 1, xmax)
        ops += matrix.stored_entries(lj.weight) + 4 * lj.out_dim
    val += box_max(nu, lo, hi)
    mag += absolute(nu) @ xmax
    ub = val + _allowance_factor(net) * mag + 4.0 * (ops + len(lo)) * TINY
    return ub, nu


def symbolic_layer(net: Network, k: int, bounds: Sequence[LayerBounds], lo, hi,
                   deadline: Deadline | None = None) -> LayerBounds:
    """Back-substitution bounds of layer ``k`` from sound bounds of the earlier layers.

    A layer with a sparse weight goes back in chunks of units with sparse coefficients (see the
    module docstring); a dense one in one dense pass, as always. Once ``deadline`` has passed
    between two chunks, the units left get infinite bounds (the caller intersects them with
    its interval bounds: still sound)."""
    n = net.layers[k].out_dim
    if not net.layers[k].affine.is_sparse:
        eye = np.eye(n)
        ub, _ = back_substitute(net, k, np.vstack([eye, -eye]), bounds, lo, hi)
        return LayerBounds(-ub[n:], ub[:n])
    step = chunk_rows(net, k)
    upper, lower = np.full(n, np.inf), np.full(n, -np.inf)
    for s0 in range(0, n, step):
        if s0 and deadline is not None and deadline.expired():
            break
        m = min(step, n - s0)
        ub, _ = back_substitute(net, k, unit_rows(n, s0, s0 + m), bounds, lo, hi)
        upper[s0:s0 + m], lower[s0:s0 + m] = ub[:m], -ub[m:]
    return LayerBounds(lower, upper)


def symbolic_bounds(net: Network, lo: np.ndarray, hi: np.ndarray, upto: int | None = None,
                    base: Sequence[LayerBounds] | None = None,
                    deadline: Deadline | None = None) -> list[LayerBounds]:
    """CROWN-style bounds of every layer (or of layers ``0..upto``), intersected with interval
    bounds (rigorous). ``base``: sound bounds already known for a superset of the box (e.g. the
    whole domain); each layer is intersected with them before the next layer uses it. Once
    ``deadline`` has passed, the remaining layers get interval bounds only (still rigorous)."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    bounds: list[LayerBounds] = []
    last = len(net.layers) if upto is None else min(upto + 1, len(net.layers))
    for k in range(last):
        b = interval_step(net, k, bounds, lo, hi)
        if base is not None:
            b = intersect(b, base[k])
        if k > 0 and not (deadline is not None and deadline.expired()):
            b = intersect(b, symbolic_layer(net, k, bounds, lo, hi, deadline))
        bounds.append(b)
    return bounds
