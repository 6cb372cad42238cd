"""Exact sparse algebra for the ONNX importer: products of sparse matrices whose values are
exact rationals, float64 wherever float64 is exact.

An *exact sparse matrix* is a canonical ``scipy.sparse.csr_array`` of float64 (sorted column
indices, no duplicates, no stored zeros) plus ``q``: ``None`` when the float64 values are the
exact ones, else an object array of ``Fraction`` aligned with ``data`` (``data`` then holds their
nearest floats). Convolutions, pooling, padding, transposes and skip connections are all such
matrices; composing them is one function, :func:`exact_product`.

The product is computed in float64 and kept when it is provably exact: every term ``a*b`` is an
integer multiple of ``2**g`` (``g`` the sum of the operands' lowest set bits), so a sum of terms
whose magnitudes add up to less than ``2**(53+g)`` is exact in any order. Entries that fail this
test (and every entry once an operand carries exact rationals) are recomputed in rational
arithmetic. Time and memory are linear in the number of products ``a*b`` of stored entries.
"""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from equivcheck.core.rational import fraction_array, nearest_float_array
from equivcheck.errors import UnsupportedModelError

if TYPE_CHECKING:
    import scipy.sparse as sp

# past this many products of stored entries one composition is refused (memory and time)
MAX_PRODUCT_TERMS = 20_000_000
_NO_BITS = 1 << 20  # the "lowest set bit" of zero: never limits exactness


def _sp():
    """``scipy.sparse``, imported when first needed (a dense model never loads scipy here)."""
    import scipy.sparse

    return scipy.sparse


def csr_from_coo(rows, cols, vals, shape, q=None) -> tuple[sp.csr_array, np.ndarray | None]:
    """The canonical exact sparse matrix with entries ``(rows[i], cols[i]) = vals[i]`` (exact
    values ``q[i]`` when given); positions must be distinct. Zero entries are dropped."""
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    vals = np.asarray(vals, dtype=np.float64)
    keep = (q != 0) if q is not None else (vals != 0)
    if q is not None:
        keep = np.asarray(keep, dtype=bool)
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    q = q[keep] if q is not None else None
    order = np.lexsort((cols, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    indptr = np.zeros(shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=shape[0]), out=indptr[1:])
    out = _sp().csr_array((vals, cols, indptr), shape=shape)
    out.has_sorted_indices = True
    return out, (q[order] if q is not None else None)


def low_bit_exponents(values: np.ndarray) -> np.ndarray:
    """For each float64, the exponent ``g`` of its lowest set bit (``v`` is an odd multiple of
    ``2**g``); a large sentinel for zero."""
    values = np.asarray(values, dtype=np.float64)
    mant, exp = np.frexp(values)
    ints = np.abs((mant * 2.0**53).astype(np.int64))  # exact: 53 mantissa bits
    low = ints & -ints
    tz = np.frexp(low.astype(np.float64))[1] - 1  # log2 of the lowest set bit
    out = exp.astype(np.int64) - 53 + tz
    out[ints == 0] = _NO_BITS
    return out


def exact_values(m: sp.csr_array, q: np.ndarray | None) -> np.ndarray:
    """The exact values of the stored entries, as Fractions."""
    return q if q is not None else fraction_array(m.data)


def exact_product(a: sp.csr_array, aq, b: sp.csr_array, bq, where: str):
    """``(c, cq)``: the exact product ``a @ b`` of two exact sparse matrices (see the module
    docstring), canonical, with ``cq`` None exactly when every float64 entry is exact.
    Refuses (``UnsupportedModelError`` naming ``where``) a product of more than
    ``MAX_PRODUCT_TERMS`` terms."""
    m, k = a.shape
    n = b.shape[1]
    a_rows = np.repeat(np.arange(m, dtype=np.int64), np.diff(a.indptr))
    a_cols = a.indices.astype(np.int64)
    counts = np.diff(b.indptr)[a_cols].astype(np.int64)
    total = int(counts.sum())
    if total > MAX_PRODUCT_TERMS:
        raise UnsupportedModelError(
            f"{where}: composing two linear maps takes {total:,} products "
            f"(equivcheck composes up to {MAX_PRODUCT_TERMS:,} exactly)"
        )
    if total == 0:
        return _sp().csr_array((m, n), dtype=np.float64), None
    ta = np.repeat(np.arange(a.nnz, dtype=np.int64), counts)
    offsets = np.cumsum(counts) - counts
    tb = np.repeat(b.indptr[a_cols].astype(np.int64) - offsets, counts) + np.arange(total, dtype=np.int64)
    key = a_rows[ta] * n + b.indices[tb].astype(np.int64)
    order = np.argsort(key, kind="stable")
    key, ta, tb = key[order], ta[order], tb[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    rows, cols = key[starts] // n, key[starts] % n
    prod = a.data[ta] * b.data[tb]
    sums = np.add.reduceat(prod, starts)
    if aq is None and bq is None:
        g = low_bit_exponents(a.data)[ta] + low_bit_exponents(b.data)[tb]
        gmin = np.minimum.reduceat(g, starts)
        mag = np.add.reduceat(np.abs(prod), starts)
        with np.errstate(over="ignore", under="ignore"):
            limit = np.ldexp(1.0, np.clip(gmin + 53, -2000, 2000).astype(np.int64))
        no_terms = gmin > _NO_BITS // 2  # every product has a zero factor
        ok = no_terms | ((gmin >= -1074) & (mag * (1 + 2.0**-30) < limit))
        if np.all(ok):
            return csr_from_coo(rows, cols, sums, (m, n))
        exact = fraction_array(sums)
        bad_groups = np.flatnonzero(~ok)
        aq_all, bq_all = fraction_array(a.data), fraction_array(b.data)
        bounds = np.r_[starts, len(key)]
        for grp in bad_groups:
            lo, hi = bounds[grp], bounds[grp + 1]
            exact[grp] = sum((aq_all[i] * bq_all[j] for i, j in zip(ta[lo:hi], tb[lo:hi])), Fraction(0))
    else:
        aq = exact_values(a, aq)
        bq = exact_values(b, bq)
        exact = np.add.reduceat(aq[ta] * bq[tb], starts) if total else np.empty(0, dtype=object)
    return csr_from_coo(rows, cols, nearest_float_array(exact), (m, n), q=exact)


def exact_vstack(parts) -> tuple[sp.csr_array, np.ndarray | None]:
    """Exact sparse matrices (``(m, q)`` pairs with one column count) stacked row-wise."""
    mats = [p[0] for p in parts]
    sp = _sp()
    out = sp.csr_array(sp.vstack(mats, format="csr"))
    out.has_sorted_indices = True
    if all(p[1] is None for p in parts):
        return out, None
    q = np.concatenate([exact_values(m, pq) for m, pq in parts]) if parts else np.empty(0, object)
    return out, q


def exact_column(values: np.ndarray) -> tuple[sp.csr_array, np.ndarray | None]:
    """A vector (float64, or object of Fractions) as an exact sparse one-column matrix."""
    n = len(values)
    if values.dtype == object:
        return csr_from_coo(np.arange(n), np.zeros(n), nearest_float_array(values), (n, 1), q=values)
    return csr_from_coo(np.arange(n), np.zeros(n), values, (n, 1))


def to_dense(m: sp.csr_array, q) -> np.ndarray:
    """The matrix as a dense float64 array (``q`` None) or a dense object array of Fractions."""
    if q is None:
        return m.toarray()
    out = np.full(m.shape, Fraction(0), dtype=object)
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    out[rows, m.indices] = q
    return out


def from_dense(w: np.ndarray) -> tuple[sp.csr_array, np.ndarray | None]:
    """A dense float64 or object (Fraction) matrix as an exact sparse matrix."""
    if w.dtype != object:
        out = _sp().csr_array(np.asarray(w, dtype=np.float64))
        out.eliminate_zeros()
        out.sort_indices()
        return out, None
    rows, cols = np.nonzero(w != 0)
    q = w[rows, cols]
    return csr_from_coo(rows, cols, nearest_float_array(q), w.shape, q=q)


def split_last_column(m: sp.csr_array, q):
    """``(w, wq, b)`` of an augmented matrix ``[W | b]``: ``W`` exact sparse, ``b`` a dense
    float64 or object vector (object when ``q`` is given)."""
    n = m.shape[1] - 1
    is_b = m.indices == n
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    if q is None:
        b = np.zeros(m.shape[0])
        b[rows[is_b]] = m.data[is_b]
    else:
        b = np.full(m.shape[0], Fraction(0), dtype=object)
        b[rows[is_b]] = q[is_b]
    keep = ~is_b
    w, wq = csr_from_coo(rows[keep], m.indices[keep], m.data[keep], (m.shape[0], n),
                         q=q[keep] if q is not None else None)
    return w, wq, b
