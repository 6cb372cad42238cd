"""Weight matrices, dense or sparse: the few operations the pipeline needs on both kinds.

An :class:`~equivcheck.core.network.Affine` holds its weight either as a dense float64
``numpy`` array or, for layers lowered from convolutions, pooling and skip connections, as a
``scipy.sparse.csr_array`` of float64 in canonical form (sorted column indices, no duplicate
entries; explicit zeros are kept, so that exact values stored alongside ``data`` stay aligned).
A sparse layer's memory is linear in its number of stored entries, never ``rows x cols``.

Everything here promises the same result, entry for entry, for a dense matrix and for the
sparse matrix with the same values (tests check this), so a caller written against these
functions works on both kinds. Code that needs a dense matrix calls :func:`dense`, which refuses
(``UnsupportedModelError``) a matrix past ``MAX_DENSE_ENTRIES`` rather than filling memory.
"""

from __future__ import annotations

import sys

import numpy as np

from equivcheck.errors import UnsupportedModelError

MAX_DENSE_ENTRIES = 10_000_000  # the dense-layer limit of equivcheck.core.network


def is_sparse(w) -> bool:
    """True for a scipy sparse matrix or array (scipy is not imported for this: with
    ``scipy.sparse`` never imported, no sparse matrix exists; start-up stays light)."""
    sparse = sys.modules.get("scipy.sparse")
    return sparse is not None and sparse.issparse(w)


def csr(*args, **kwargs):
    """``scipy.sparse.csr_array(*args, **kwargs)``, scipy imported on first use."""
    return _sparse().csr_array(*args, **kwargs)


def _sparse():
    import scipy.sparse

    return scipy.sparse


def as_csr(w):
    """``w`` as a canonical float64 ``csr_array`` (sorted indices, duplicates summed; explicit
    zeros kept). A dense array is converted entry for entry (its zeros are not stored)."""
    if is_sparse(w):
        out = _sparse().csr_array(w, dtype=np.float64, copy=True)
        out.sum_duplicates()  # also sorts the indices
        return out
    return _sparse().csr_array(np.asarray(w, dtype=np.float64))


def dense(w, where: str = "a layer") -> np.ndarray:
    """``w`` as a dense float64 array; a sparse matrix past ``MAX_DENSE_ENTRIES`` entries is
    refused with an :class:`UnsupportedModelError` naming ``where``."""
    if not is_sparse(w):
        return np.asarray(w, dtype=np.float64)
    rows, cols = w.shape
    if rows * cols > MAX_DENSE_ENTRIES:
        raise UnsupportedModelError(
            f"{where}: this step needs the {rows:,} x {cols:,} weight matrix dense "
            f"({rows * cols:,} entries; the limit is {MAX_DENSE_ENTRIES:,})"
        )
    return w.toarray()


def stored_entries(w) -> int:
    """Number of stored entries: ``rows * cols`` for a dense matrix, ``nnz`` for a sparse one."""
    return int(w.nnz) if is_sparse(w) else int(np.size(w))


def row_counts(w) -> np.ndarray:
    """Per row, the number of stored entries (int64): ``cols`` for every row of a dense
    matrix, ``diff(indptr)`` for a sparse one. A float dot product of a row with a vector sums
    at most this many terms (the count rounding-error allowances are taken from)."""
    if is_sparse(w):
        return np.diff(as_csr(w).indptr).astype(np.int64)
    return np.full(np.shape(w)[0], np.shape(w)[1], dtype=np.int64)


def values(w) -> np.ndarray:
    """The stored values (a view for sparse: ``w.data``; all entries, flattened, for dense)."""
    return w.data if is_sparse(w) else np.asarray(w).ravel()


def all_finite(w) -> bool:
    """True when every stored value is finite."""
    return bool(np.all(np.isfinite(values(w))))


def absolute(w):
    """``|w|`` entrywise, of the same kind as ``w``."""
    return abs(w) if is_sparse(w) else np.abs(w)


def positive_part(w):
    """``max(w, 0)`` entrywise, of the same kind as ``w``."""
    return w.maximum(0.0) if is_sparse(w) else np.maximum(w, 0.0)


def negative_part(w):
    """``min(w, 0)`` entrywise, of the same kind as ``w``."""
    return w.minimum(0.0) if is_sparse(w) else np.minimum(w, 0.0)


def left_multiply(x: np.ndarray, w) -> np.ndarray:
    """``x @ w`` for a dense ``x`` of shape ``[..., rows]`` (any number of leading axes):
    a dense ``[..., cols]`` array."""
    if not is_sparse(w):
        return x @ w
    lead = x.shape[:-1]
    out = np.asarray(x.reshape(-1, x.shape[-1]) @ w)
    return out.reshape(*lead, w.shape[1])


def apply(w, h: np.ndarray) -> np.ndarray:
    """``w @ h`` for a dense ``h`` of shape ``[cols]`` or ``[cols, k]``: a dense array."""
    return np.asarray(w @ h)


def rows_of(w, idx) -> np.ndarray:
    """The rows ``idx`` (an index array or list) as a dense ``[len(idx), cols]`` array."""
    if is_sparse(w):
        return w[np.asarray(idx, dtype=np.int64)].toarray()
    return np.asarray(w)[idx]



def same_entries(a, b) -> bool:
    """True when ``a`` and ``b`` have the same shape and the same value at every position
    (whatever their kinds)."""
    if a.shape != b.shape:
        return False
    if not is_sparse(a) and not is_sparse(b):
        return bool(np.array_equal(a, b))
    diff = as_csr(a) - as_csr(b)
    return bool(diff.nnz == 0 or not np.any(diff.data))


def transpose(w):
    """``w.T``; a sparse result is again a canonical ``csr_array``."""
    return as_csr(w.T) if is_sparse(w) else np.asarray(w).T
