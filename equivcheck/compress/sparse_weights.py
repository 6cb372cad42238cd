"""Sparse weights in the compression passes: exact values kept aligned through every edit.

A working layer (:class:`~equivcheck.compress.passes.WorkingLayer`) of a network lowered from a
convolution holds its weight as a ``csr_array`` of the stored floats, and, when those floats are
not the exact weights, the exact values as an object array of ``Fraction`` aligned with the
matrix's stored entries (as :class:`~equivcheck.core.network.Affine` keeps them). Removing units
selects rows and columns; the exact values follow through an index matrix of the same pattern
(its entries are the positions ``1..nnz``, exact in float64), so memory stays linear in the
stored entries and nothing is rounded. Folds need dense exact arithmetic: :func:`dense_exact`
gives it for layers small enough (``FOLD_DENSE_ENTRIES``); larger ones are not folded.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import scipy.sparse as sp

from equivcheck.core import matrix
from equivcheck.core.network import Affine
from equivcheck.core.rational import fraction_array, nearest_float_array

FOLD_DENSE_ENTRIES = 1_000_000  # a fold that needs a sparse layer dense: at most this many entries
FOLD_PRODUCT_TERMS = 2_000_000  # an exact sparse product of two layers: at most this many products


def is_sparse(w) -> bool:
    return sp.issparse(w)


def select(w: sp.csr_array, exact: np.ndarray | None, rows=None, cols=None
           ) -> tuple[sp.csr_array, np.ndarray | None]:
    """The rows ``rows`` and columns ``cols`` (index lists; None keeps all) of ``w`` and the
    exact values of the entries kept (None stays None). Stored zeros are kept."""
    w = matrix.as_csr(w)
    # only the index matrix is sliced (its values are never 0, so no slicing drops one); the
    # weights and exact values of the entries kept are read through it
    index = sp.csr_array((np.arange(1, w.nnz + 1, dtype=np.float64), w.indices, w.indptr),
                         shape=w.shape)
    if rows is not None:
        index = index[np.asarray(rows, dtype=np.int64)]
    if cols is not None:
        index = index[:, np.asarray(cols, dtype=np.int64)]
    index = matrix.as_csr(index)
    at = index.data.astype(np.int64) - 1
    out = sp.csr_array((w.data[at], index.indices, index.indptr), shape=index.shape)
    return out, None if exact is None else exact[at]


def dense_exact(w, exact: np.ndarray | None) -> np.ndarray:
    """The exact weights as a dense object array of ``Fraction`` (``w`` dense float or object,
    or sparse with its aligned ``exact`` values or exact floats)."""
    if not sp.issparse(w):
        return w if w.dtype == object else fraction_array(w)
    w = matrix.as_csr(w)
    out = np.full(w.shape, Fraction(0), dtype=object)
    rows = np.repeat(np.arange(w.shape[0]), np.diff(w.indptr))
    out[rows, w.indices] = exact if exact is not None else fraction_array(w.data)
    return out


def from_dense_exact(w: np.ndarray) -> tuple[sp.csr_array, np.ndarray | None]:
    """A dense weight (floats, or exact Fractions) as a csr_array of its nonzero entries'
    nearest floats and their exact values (None when those floats are exact)."""
    rows, cols = np.nonzero(w != 0)
    vals = w[rows, cols]
    if w.dtype != object:
        return sp.csr_array((vals.astype(np.float64), (rows, cols)), shape=w.shape), None
    floats = nearest_float_array(vals)
    out = sp.csr_array((floats, (rows, cols)), shape=w.shape)  # C order: the csr order
    exact = all(Fraction(float(x)) == x for x in vals)
    return out, None if exact else np.asarray(vals, dtype=object)


def exact_apply(w, exact: np.ndarray | None, h: np.ndarray) -> np.ndarray:
    """``W h`` in exact arithmetic for an object vector ``h`` of ``Fraction`` (``w`` sparse with
    ``exact`` aligned, or dense): one product per stored entry."""
    if not sp.issparse(w):
        return dense_exact(w, None).dot(h) if h.size else np.array([Fraction(0)] * w.shape[0], dtype=object)
    w = matrix.as_csr(w)
    vals = exact if exact is not None else fraction_array(w.data)
    out = np.empty(w.shape[0], dtype=object)
    for i in range(w.shape[0]):
        lo, hi = w.indptr[i], w.indptr[i + 1]
        out[i] = sum((vals[t] * h[w.indices[t]] for t in range(lo, hi)), Fraction(0))
    return out


def small_enough(*shapes: tuple[int, int]) -> bool:
    """True when dense copies of matrices of these shapes fit ``FOLD_DENSE_ENTRIES`` together."""
    return sum(int(r) * int(c) for r, c in shapes) <= FOLD_DENSE_ENTRIES


def sparse_affine(w: sp.csr_array, exact: np.ndarray | None, b: np.ndarray) -> Affine:
    """The :class:`Affine` of a sparse working layer: its stored floats, and its exact values
    where they are not those floats (exact weights aligned with the stored entries)."""
    w = matrix.as_csr(w)
    if b.dtype != object and exact is None:
        return Affine(w, np.asarray(b, dtype=np.float64).copy())
    bf = nearest_float_array(b) if b.dtype == object else np.asarray(b, dtype=np.float64)
    ev = exact if exact is not None else fraction_array(w.data)
    eb = b if b.dtype == object else fraction_array(b)
    if all(Fraction(float(x)) == x for x in ev) and all(Fraction(float(x)) == x for x in eb):
        return Affine(sp.csr_array((nearest_float_array(ev), w.indices, w.indptr), shape=w.shape), bf)
    return Affine(sp.csr_array((nearest_float_array(ev), w.indices, w.indptr), shape=w.shape), bf,
                  ev, eb)


def exact_product(a: sp.csr_array, a_exact: np.ndarray | None, b: sp.csr_array,
                  b_exact: np.ndarray | None) -> tuple[sp.csr_array, np.ndarray | None] | None:
    """``A @ B`` in exact arithmetic for two sparse weights (with their aligned exact values,
    None for exact floats): the csr_array of the product's nearest floats on its pattern, and
    its exact values (None when those floats are exact). None when it needs more than
    ``FOLD_PRODUCT_TERMS`` products. Exact floats are multiplied as integers (each float is an
    integer times a power of two), otherwise as ``Fraction``."""
    a, b = matrix.as_csr(a), matrix.as_csr(b)
    counts = np.diff(b.indptr)
    ai = np.repeat(np.arange(a.shape[0]), np.diff(a.indptr))
    per = counts[a.indices]  # products contributed by each stored entry of A
    if int(per.sum()) > FOLD_PRODUCT_TERMS:
        return None
    va, scale_a = _exact_values(a.data, a_exact)
    vb, scale_b = _exact_values(b.data, b_exact)
    # every (A entry t, B entry u in row a.indices[t]) pair, as flat index arrays
    t = np.repeat(np.arange(a.nnz), per)
    base = (np.cumsum(per) - per) - b.indptr[a.indices]  # product p of entry t is B's p - base[t]
    u = (np.arange(len(t)) - base[t]).astype(np.int64)
    rows, cols = ai[t], b.indices[u].astype(np.int64)
    terms = va[t] * vb[u]  # object arrays: exact integer or Fraction products
    keys = rows * b.shape[1] + cols
    order = np.argsort(keys, kind="stable")
    keys, terms = keys[order], terms[order]
    first = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]])) if len(keys) else np.zeros(0, int)
    sums = np.add.reduceat(terms, first) if len(keys) else np.zeros(0, dtype=object)
    keys = keys[first]
    scale = scale_a * scale_b
    exact = np.array([Fraction(v) / scale for v in sums], dtype=object) if scale != 1 else \
        np.array([Fraction(v) for v in sums], dtype=object)
    floats = nearest_float_array(exact)
    out = sp.csr_array((floats, (keys // b.shape[1], keys % b.shape[1])), shape=(a.shape[0], b.shape[1]))
    same = all(Fraction(float(x)) == x for x in exact)
    return out, None if same else exact


def _exact_values(data: np.ndarray, exact: np.ndarray | None) -> tuple[np.ndarray, int]:
    """Exact values as an object array and a scale: integers ``v`` with value ``v / scale``
    for exact floats (scale a power of two), else the Fractions themselves (scale 1)."""
    if exact is not None:
        return np.asarray(exact, dtype=object), 1
    ratios = [float(x).as_integer_ratio() for x in data]
    scale = max((den for _, den in ratios), default=1)
    out = np.empty(len(ratios), dtype=object)
    out[:] = [num * (scale // den) for num, den in ratios]
    return out, scale
