"""The rounding of recomputed weights to the stored floats, bounded rigorously.

Folding recomputes weights as exact rationals, which the ONNX file stores rounded to its element
type. :func:`deviation_bound` gives, per layer, a rigorous upper bound of how far the stored
network's pre-activations can be from the exact ones on a box; the bound of the output layer,
rounded up to a short decimal (:func:`round_up_decimal`), is the epsilon that ``compress`` then
proves.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import scipy.sparse as sp

from equivcheck.compress import sparse_weights as spw
from equivcheck.compress.passes import WorkingLayer
from equivcheck.core import matrix
from equivcheck.core.network import Network
from equivcheck.core.rational import as_fraction_array, fraction_array, nearest_float_array


def deviation_bound(layers: list[WorkingLayer], stored: Network, lo: np.ndarray,
                    hi: np.ndarray) -> list[np.ndarray]:
    """Per layer, rigorous upper bounds of |stored pre-activation - exact pre-activation|.

    ``exact`` is the compressed network with its exact rational weights (equal to the original
    on the domain), ``stored`` the same structure with the weights as stored in the ONNX file.
    Recursion: |z' - z| <= |W'| d_prev + |W' - W| max|h_prev| + |b' - b|, ReLU is 1-Lipschitz.
    Float sums are inflated by a relative 1e-9 and an absolute 1e-300, far above their error.
    """
    d = np.zeros(len(lo))
    hmax = np.maximum(np.abs(lo), np.abs(hi))
    out = []
    for lay, st in zip(layers, stored.layers):
        dw, db = _weight_error(lay, st.weight), _stored_error(lay.b, st.bias)
        d = (matrix.apply(matrix.absolute(st.weight), d) + matrix.apply(dw, hmax) + db) * (1 + 1e-9) + 1e-300
        out.append(d)
        hmax = np.maximum(np.abs(lay.lower), np.abs(lay.upper))
        if lay.relu:
            hmax = np.maximum(lay.upper, 0.0)
        hmax = hmax + d  # the stored network's values may exceed the exact bounds by d
    return out


def _weight_error(lay: WorkingLayer, stored) -> np.ndarray:
    """Upper bounds of ``|exact - stored|`` for a layer's weight, sparse when either is
    (on the union of the stored patterns; elsewhere both are 0)."""
    if not (spw.is_sparse(lay.w) or matrix.is_sparse(stored)):
        return _stored_error(lay.w, stored)
    if spw.is_sparse(lay.w) and lay.exact is None and matrix.is_sparse(stored) \
            and matrix.same_entries(lay.w, stored):
        return sp.csr_array(stored.shape)  # the stored floats are the exact weights
    exact = spw.dense_exact(lay.w, lay.exact) if not spw.is_sparse(lay.w) else None
    if exact is not None:  # a dense exact layer stored sparse: compare entry by entry
        return _stored_error(exact, matrix.dense(stored, "the rounding bound"))
    # exact sparse values minus the stored ones, entry by entry on the union of the patterns
    a = matrix.as_csr(lay.w)
    ea = lay.exact if lay.exact is not None else fraction_array(a.data)
    b = matrix.as_csr(stored)
    cols = a.shape[1]
    ka = np.repeat(np.arange(a.shape[0], dtype=np.int64), np.diff(a.indptr)) * cols + a.indices
    kb = np.repeat(np.arange(b.shape[0], dtype=np.int64), np.diff(b.indptr)) * cols + b.indices
    keys = np.union1d(ka, kb)
    va = np.full(len(keys), Fraction(0), dtype=object)
    vb = va.copy()
    va[np.searchsorted(keys, ka)] = ea
    vb[np.searchsorted(keys, kb)] = fraction_array(b.data)
    err = np.abs(nearest_float_array(va - vb)) * (1 + 2**-50)
    return sp.csr_array((err, (keys // cols, keys % cols)), shape=a.shape)


def _stored_error(exact: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """Upper bounds of ``|exact - stored|`` elementwise (zero where the stored floats are the
    exact values)."""
    if exact.dtype != object and np.array_equal(exact, stored):
        return np.zeros(stored.shape)
    return np.abs(nearest_float_array(as_fraction_array(exact) - fraction_array(stored))) * (1 + 2**-50)


def round_up_decimal(x: float) -> Fraction:
    """A short decimal >= x (two significant digits), as an exact Fraction."""
    if x <= 0:
        return Fraction(0)
    e = math.floor(math.log10(x)) - 1
    q = Fraction(math.ceil(Fraction(x) / Fraction(10) ** e)) * Fraction(10) ** e
    while q < Fraction(x):
        q += Fraction(10) ** e
    return q
