"""Outward rounding for the engine's float64 bounds.

Every bound the engine computes must enclose the exact (real-arithmetic) value of the stored
weights over the exact box, although it is computed in float64. The argument is the one of
:mod:`equivcheck.bounds.symbolic`: a float dot product of ``n`` terms is within
``gamma(n) * sum |a_i b_i|`` of the exact one (Higham, Theorem 3.5: any summation order, BLAS
blocking and FMA included), elementwise products within ``u |a b|``. So each step computes its
result in float64, then moves it outward by ``FACTOR`` times a *magnitude* (a float upper bound
of the sum of the absolute values of the terms), plus ``TINY`` wherever some term is nonzero
(products that underflow lose at most 2**-1075 each; far fewer than 2**53 of them fit in
TINY). ``FACTOR`` is four gamma's of a generous length: one gamma for the computed coefficients,
one for the constants, the rest covering the rounding of the magnitude and of the allowance
itself. Where every term is exactly zero nothing is added, so an exactly-zero difference (the
strict mode's "same function") survives the propagation.

Weights that are not exact floats (``Affine.is_exact_float`` False: the float64 array is the
nearest float of a rational) contribute the extra half-ulp ``u |W|`` (plus an absolute 2**-1074
for subnormals), as in the propagation module; the engine adds ``WEIGHT_ULP`` to the factor and
``TINY`` for those layers.
"""

from __future__ import annotations

import numpy as np

from equivcheck.core.rational import two_diff

UNIT_ROUNDOFF = 2.0**-53
TINY = float(np.finfo(np.float64).tiny)
WEIGHT_ULP = 4.0 * UNIT_ROUNDOFF  # |W_exact - W_float| <= u |W| (doubled twice for safety)
SLOPE_INFLATE = 1.0 + 2.0**-48  # relaxation slopes computed in float, moved to the safe side


def gamma(n: int) -> float:
    """Higham's gamma_n = n u / (1 - n u)."""
    nu = n * UNIT_ROUNDOFF
    return nu / (1.0 - nu)


def factor(length: int) -> float:
    """The relative allowance for one propagation step whose dot products have at most
    ``length`` terms."""
    return 4.0 * gamma(int(length) + 32)


def push_down(value: np.ndarray, allowance: np.ndarray) -> np.ndarray:
    """``value - allowance`` rounded down, left alone where the allowance is 0 (exact step)."""
    return np.where(allowance > 0.0, np.nextafter(value - allowance, -np.inf), value)


def push_up(value: np.ndarray, allowance: np.ndarray) -> np.ndarray:
    """``value + allowance`` rounded up, left alone where the allowance is 0 (exact step)."""
    return np.where(allowance > 0.0, np.nextafter(value + allowance, np.inf), value)


def sub_down(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The largest float <= the exact ``a - b`` (TwoSum tells whether rounding went up)."""
    s, err = two_diff(a, b)
    return np.where(err < 0.0, np.nextafter(s, -np.inf), s)


def sub_up(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest float >= the exact ``a - b``."""
    s, err = two_diff(a, b)
    return np.where(err > 0.0, np.nextafter(s, np.inf), s)
