"""Networks equal up to an order of their hidden units, recognised entry by entry.

The canonical form (:mod:`equivcheck.canon.build`) works on dense integer layers, so it
declines networks with wide sparse layers (convolutions). The commonest rewrite of such a
network, the same layers with the hidden units listed in another order (channels or spatial
positions laid out differently), is recognised here in time and memory linear in the stored
entries: layer by layer, each unit of ``b`` is matched with a unit of ``a`` whose bias and
nonzero weights, read through the matching of the layer before, are exactly the same values.

Soundness: when every unit of ``b`` is matched (a bijection per hidden layer, the identity on
the inputs and on the outputs), ``b`` computes exactly ``a``'s function: unit ``i`` of ``b``
has the same affine map as unit ``sigma(i)`` of ``a`` over units that equal each other by
induction, and the same activation. Equality is exact: float weights compare as floats (exact
values), rational ones as ``Fraction`` s (a float equals a Fraction only when the values are
equal).
"""

from __future__ import annotations

import numpy as np

from equivcheck.core.deadline import Deadline
from equivcheck.core.network import Affine, Network


def _entries(affine: Affine):
    """Per row: ``(columns, exact values)`` of its stored entries (floats when exact)."""
    w = affine.weight
    exact = affine.is_exact_float
    if affine.is_sparse:
        vals = w.data if exact else affine.rational_weight()
        indptr, indices = w.indptr, w.indices
        for i in range(w.shape[0]):
            yield indices[indptr[i]:indptr[i + 1]], vals[indptr[i]:indptr[i + 1]]
    else:
        vals = w if exact else affine.rational_weight()
        cols = np.arange(w.shape[1])
        for i in range(w.shape[0]):
            yield cols, vals[i]


def _keys(affine: Affine, sigma: np.ndarray) -> list[tuple]:
    """Each unit's exact affine map with its inputs renamed by ``sigma``: ``(bias, ((input,
    value), ...))`` over the nonzero weights, sorted by input."""
    bias = affine.bias if affine.is_exact_float else affine.rational_bias()
    out = []
    for i, (cols, vals) in enumerate(_entries(affine)):
        nz = [(int(sigma[c]), v.item() if hasattr(v, "item") else v)
              for c, v in zip(cols, vals) if v != 0]
        nz.sort(key=lambda t: t[0])
        b = bias[i]
        out.append((b.item() if hasattr(b, "item") else b, tuple(nz)))
    return out


def _float_keys(affine: Affine, sigma: np.ndarray) -> list[bytes]:
    """:func:`_keys` of a layer whose floats are its exact weights, vectorised: each unit's key
    is the bytes of its bias, then of its renamed inputs and weights (nonzero, sorted by input);
    equal bytes iff equal values (no NaN; zeros are dropped, a -0.0 bias made 0.0)."""
    w = affine.weight if affine.is_sparse else None
    if w is None:
        rows, cols = np.nonzero(affine.weight)
        vals = affine.weight[rows, cols]
    else:
        rows = np.repeat(np.arange(w.shape[0]), np.diff(w.indptr))
        keep = w.data != 0
        rows, cols, vals = rows[keep], w.indices[keep], w.data[keep]
    named = sigma[cols].astype(np.int64)
    order = np.lexsort((named, rows))
    named, vals = named[order], vals[order].astype(np.float64)
    bounds = np.searchsorted(rows[order], np.arange(affine.out_dim + 1))
    bias = affine.bias.astype(np.float64) + 0.0
    return [bias[i:i + 1].tobytes() + named[lo:hi].tobytes() + vals[lo:hi].tobytes()
            for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]))]


def permuted_match(a: Network, b: Network, deadline: Deadline | None = None) -> int | None:
    """The number of hidden layers whose units ``b`` lists in another order than ``a``, when
    ``b`` is ``a`` up to the order of its hidden units (exactly: see the module docstring);
    None when it is not, or when ``deadline`` passes first (nothing is then known)."""
    if (len(a.layers) != len(b.layers) or a.in_dim != b.in_dim or a.out_dim != b.out_dim
            or any(la.relu != lb.relu or la.weight.shape != lb.weight.shape
                   for la, lb in zip(a.layers, b.layers))):
        return None
    sigma_a = sigma_b = np.arange(a.in_dim)  # both read the same inputs
    permuted = 0
    for k, (la, lb) in enumerate(zip(a.layers, b.layers)):
        if deadline is not None and deadline.expired():
            return None
        floats = la.affine.is_exact_float and lb.affine.is_exact_float
        keys = _float_keys if floats else _keys
        where: dict = {}
        for i, key in enumerate(keys(la.affine, sigma_a)):
            where.setdefault(key, []).append(i)
        sigma = np.empty(lb.out_dim, dtype=np.int64)
        for i, key in enumerate(keys(lb.affine, sigma_b)):
            units = where.get(key)
            if not units:
                return None
            sigma[i] = units.pop()  # equal keys: equal units, any of them will do
        last = k == len(a.layers) - 1
        same_order = bool(np.array_equal(sigma, np.arange(lb.out_dim)))
        if last and not same_order:
            return None  # the outputs must be the same, in the same order
        permuted += not same_order
        sigma_a, sigma_b = np.arange(la.out_dim), sigma
    return permuted
