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

from equivcheck.compress.passes import WorkingLayer
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
        dw, db = _stored_error(lay.w, st.weight), _stored_error(lay.b, st.bias)
        d = (np.abs(st.weight) @ d + dw @ hmax + db) * (1 + 1e-9) + 1e-300
        out.append(d)
        hmax = np.maximum(np.abs(lay.lower), np.abs(lay.upper))
        if lay.relu:
            hmax = np.maximum(lay.upper, 0.0)
        hmax = hmax + d  # the stored network's values may exceed the exact bounds by d
    return out


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
