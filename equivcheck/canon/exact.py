"""Exact integer arithmetic on whole layers, fast: the canonical form's arithmetic without a
``Fraction`` per weight.

A float64 weight is a dyadic rational ``m * 2**e``, so a layer's ``[W | b]`` is an integer
matrix over one power of two (:func:`integer_layer`, computed once per layer, vectorised with
``np.frexp``; layers whose exact weights are not their floats use the lcm of their
denominators). Products of such integer matrices are exact: :func:`int_matmul` splits the
integers into signed limbs small enough that every float64 partial sum of a BLAS product is an
integer below 2**53 (so exact), and recombines the limb products in Python integers.
Everything here is exact; floats only ever hold integers they represent exactly.
"""

from __future__ import annotations

import math
import weakref

import numpy as np

from equivcheck.core.network import Affine

_LAYERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
MAX_LIMB_PAIRS = 36  # beyond this many limb products, an object-array product is as fast


class IntLayer:
    """``W = N / den`` and ``b = nb / den`` exactly: ``N`` (out, in) and ``nb`` (out,) object
    arrays of Python ints, ``den`` a positive int; ``limbs`` of ``N`` built on demand."""

    def __init__(self, n: np.ndarray, nb: np.ndarray, den: int) -> None:
        self.n, self.nb, self.den = n, nb, den
        self._limbs: dict[int, list[np.ndarray]] = {}

    def limbs(self, bits: int) -> list[np.ndarray]:
        """``N`` as float64 arrays ``L_t`` with ``N == sum(L_t * 2**(bits * t))`` exactly, each
        entry an integer of magnitude below ``2**bits``."""
        if bits not in self._limbs:
            self._limbs[bits] = _limbs(self.n, bits)
        return self._limbs[bits]


def integer_layer(affine: Affine) -> IntLayer:
    """The exact integer form of ``affine`` (cached per layer object)."""
    got = _LAYERS.get(affine)
    if got is None:
        if affine.is_exact_float:
            ints, den = dyadic_ints(np.hstack([affine.weight, affine.bias[:, None]]))
        else:
            wb = np.hstack([affine.rational_weight(), affine.rational_bias()[:, None]])
            ints, den = fraction_ints(wb)
        got = IntLayer(ints[:, :-1], ints[:, -1], den)
        _LAYERS[affine] = got
    return got


def dyadic_ints(x: np.ndarray) -> tuple[np.ndarray, int]:
    """``(N, den)`` with ``x == N / den`` exactly for finite float64 ``x``: ``N`` an object array
    of Python ints, ``den`` a power of two (the smallest that makes every entry an integer)."""
    x = np.asarray(x, dtype=np.float64)
    mant, exp = np.frexp(x)
    m = (mant * float(2**53)).astype(np.int64)  # exact: |mant| < 1 has 53 bits
    e = exp.astype(np.int64) - 53
    nz = m != 0
    low = np.where(nz, m & -m, 1)  # lowest set bit (two's complement: also for m < 0)
    tz = np.round(np.log2(low.astype(np.float64))).astype(np.int64)
    m = m >> tz  # exact: those bits are zero
    e = e + tz
    if not nz.any():
        return np.zeros(x.shape, dtype=np.int64).astype(object), 1
    top = int(e[nz].max())
    big = max(0, -int(e[nz].min()))
    shift = np.where(nz, e + big, 0)
    if top + big + int(np.abs(m).max()).bit_length() <= 62:  # every entry fits in int64
        return (m << shift).astype(object), 1 << big
    return m.astype(object) << shift.astype(object), 1 << big


def fraction_ints(x: np.ndarray) -> tuple[np.ndarray, int]:
    """``(N, den)`` with ``x == N / den`` for an object array of Fractions (``den`` the lcm)."""
    flat = list(x.ravel())
    den = math.lcm(1, *(f.denominator for f in flat))
    out = np.empty(len(flat), dtype=object)
    out[:] = [f.numerator * (den // f.denominator) for f in flat]
    return out.reshape(x.shape), den


def _limbs(a: np.ndarray, bits: int) -> list[np.ndarray]:
    """Signed limbs of the integer object array ``a`` (see :meth:`IntLayer.limbs`)."""
    if a.size == 0:
        return [np.zeros(a.shape)]
    mag = np.abs(a)
    top = int(mag.max()).bit_length()
    neg = a < 0
    mask = (1 << bits) - 1
    out = []
    for t in range(max(1, -(-top // bits))):
        limb = ((mag >> (bits * t)) & mask).astype(np.float64)
        out.append(np.where(neg, -limb, limb))
    return out


def limb_bits(k: int) -> int:
    """Limb size for products with inner dimension ``k``: ``k * 4**bits < 2**52``."""
    return max(1, (52 - max(k, 1).bit_length()) // 2)


def int_matmul(a: np.ndarray | IntLayer, b: np.ndarray) -> np.ndarray:
    """``a @ b`` exactly for integer object arrays (``a`` may be an :class:`IntLayer`: its
    ``N``, with cached limbs), as an object array of Python ints."""
    left = a.n if isinstance(a, IntLayer) else a
    k = left.shape[1]
    if k == 0 or b.shape[1] == 0:
        return np.zeros((left.shape[0], b.shape[1]), dtype=np.int64).astype(object)
    bits = limb_bits(k)
    la = a.limbs(bits) if isinstance(a, IntLayer) else _limbs(a, bits)
    lb = _limbs(b, bits)
    if len(la) * len(lb) > MAX_LIMB_PAIRS:
        return left.dot(b)
    out = None
    for i, x in enumerate(la):
        for j, y in enumerate(lb):
            p = (x @ y).astype(np.int64).astype(object)  # each entry exact, below 2**52
            if i + j:
                p = p << (bits * (i + j))
            out = p if out is None else out + p
    return out
