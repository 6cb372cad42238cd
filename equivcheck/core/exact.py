"""Exact arithmetic shared by the whole pipeline: one home for each routine.

* **integers over a common denominator** (:func:`common_scale`, :func:`scaled_integers`): exact
  rationals (floats, ``Fraction`` s, ints) as Python integers times ``1/den``, so that sums of
  products run in integer arithmetic;
* **the exact ReLU forward pass** (:func:`affine_exact`, :func:`relu_exact`,
  :func:`pre_activations_exact`): rational arithmetic on the stored weights, integers where the
  weights and the input are dyadic;
* **the float snap** (:func:`round_to`, :func:`snap`): points moved onto the float32 (or float64)
  grid of a box, so that onnxruntime runs exactly the point that is checked;
* **linear algebra over the rationals and modulo a prime**: :func:`echelon_mod_p` (rank and
  independent rows modulo ``PRIME``, a certified *lower* bound of the rational rank and a
  certificate of independence) and :func:`row_echelon` (exact Gaussian elimination on
  ``Fraction`` s) with :func:`rank_exact`, :func:`nullspace`, :func:`solve_exact` and
  :func:`exact_matmul`.

Nothing here imports the network types: the forward pass takes any layers with ``.affine`` and
``.relu`` (an affine with ``rational_weight()``, ``rational_bias()`` and ``dyadic_weight``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from fractions import Fraction

import numpy as np

from equivcheck.core import matrix

PRIME = 2_147_483_647  # 2^31 - 1: products of two residues fit in int64

# ---------------------------------------------------------------------------------------------
# integers over a common denominator


def _ratio(v) -> tuple[int, int]:
    """``(numerator, denominator)`` of an exact value: a Fraction, an int or a float."""
    if isinstance(v, Fraction):
        return v.numerator, v.denominator
    if isinstance(v, (int, np.integer)):
        return int(v), 1
    return float(v).as_integer_ratio()


def common_denominator(values: Iterable) -> int:
    """The least common multiple of the denominators of ``values`` (1 for none)."""
    return math.lcm(*(_ratio(v)[1] for v in values))


def common_scale(*arrays) -> tuple[list[np.ndarray], int]:
    """``([ints_1, ...], den)`` with ``arrays[i] == ints_i / den`` exactly, elementwise.

    ``den > 0`` is the least common denominator of all the values; each ``ints_i`` is an object
    array of Python integers with the shape of ``arrays[i]``.
    """
    pairs = [[_ratio(v) for v in np.asarray(a, dtype=object).ravel()] for a in arrays]
    den = math.lcm(*(d for ps in pairs for _, d in ps))
    out = []
    for a, ps in zip(arrays, pairs):
        ints = np.empty(len(ps), dtype=object)
        ints[:] = [n * (den // d) for n, d in ps]
        out.append(ints.reshape(np.shape(a)))
    return out, den


def scaled_integers(values) -> tuple[np.ndarray, int]:
    """``(ints, den)`` with ``values == ints / den`` exactly (see :func:`common_scale`)."""
    (ints,), den = common_scale(values)
    return ints, den


def integer_affine(affine) -> tuple[np.ndarray, np.ndarray, int]:
    """``(W, b, den)``: the exact weights and bias of an
    :class:`~equivcheck.core.network.Affine` as integer object arrays over one common
    denominator ``den > 0`` (``weight == W / den``, ``bias == b / den`` exactly).

    ``W`` is the dense ``(out, in)`` matrix, also for a sparse weight (built entry by entry;
    refused with an ``UnsupportedModelError`` past ``matrix.MAX_DENSE_ENTRIES``, see
    :func:`integer_entries` for the stored entries alone)."""
    if not getattr(affine, "is_sparse", False):
        if affine.is_exact_float:
            w, b = affine.weight, affine.bias
        else:
            w, b = affine.rational_weight(), affine.rational_bias()
        (wi, bi), den = common_scale(w, b)
        return wi, bi, den
    vals, bi, den = integer_entries(affine)
    w = affine.weight
    if w.shape[0] * w.shape[1] > matrix.MAX_DENSE_ENTRIES:
        matrix.dense(w, "exact integer weights")  # raises, naming the size
    wi = np.zeros(w.shape, dtype=object)
    wi[entry_rows(w), w.indices] = vals
    return wi, bi, den


def integer_entries(affine) -> tuple[np.ndarray, np.ndarray, int]:
    """``(V, b, den)``: as :func:`integer_affine`, but ``V`` holds one integer per *stored*
    entry of the weight (aligned with ``weight.data`` for a sparse weight, the flattened
    matrix for a dense one), so memory stays linear in the stored entries."""
    if affine.is_exact_float:
        w, b = matrix.values(affine.weight), affine.bias
    else:
        w, b = np.asarray(affine.rational_weight(), dtype=object).ravel(), affine.rational_bias()
    (wi, bi), den = common_scale(w, b)
    return wi, bi, den


def entry_rows(w) -> np.ndarray:
    """The row index of each stored entry of a ``csr_array`` (aligned with ``w.data``)."""
    return np.repeat(np.arange(w.shape[0], dtype=np.int64), np.diff(w.indptr))


def row_sums(products: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """Exact per-row sums of a CSR-aligned object array of exact values (Python ints or
    Fractions): ``out[i] = sum(products[indptr[i]:indptr[i+1]])``; empty rows give 0."""
    out = np.empty(len(indptr) - 1, dtype=object)
    if len(products) == 0:
        out[:] = [0] * len(out)
        return out
    cs = np.empty(len(products) + 1, dtype=object)
    cs[0] = 0
    cs[1:] = np.cumsum(products)
    out[:] = cs[indptr[1:]] - cs[indptr[:-1]]
    return out


def pow2_common_denominator(values: Iterable) -> int:
    """The common denominator of rationals whose denominators are all powers of two, else 0."""
    den = 1
    for v in values:
        d = v.denominator
        if d & (d - 1):
            return 0
        den = max(den, d)
    return den


def dyadic_matrix(weight: np.ndarray) -> tuple[np.ndarray, int]:
    """``(M, e)`` with an integer object matrix ``M`` and ``weight == M * 2**e`` exactly (every
    float64 is a dyadic rational with a 53-bit mantissa)."""
    mant, exp = np.frexp(weight)
    ints = (mant * 2.0**53).astype(np.int64)  # exact: a float64 has 53 mantissa bits
    exps = exp.astype(np.int64) - 53
    nonzero = ints != 0
    if not np.any(nonzero):
        return np.zeros(weight.shape, dtype=object), 0
    emin = int(exps[nonzero].min())
    shifts = np.where(nonzero, exps - emin, 0)
    flat = [int(m) << int(sh) for m, sh in zip(ints.ravel(), shifts.ravel())]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(weight.shape), emin


# ---------------------------------------------------------------------------------------------
# the exact ReLU forward pass


def relu_exact(z: np.ndarray) -> np.ndarray:
    """``max(z, 0)`` elementwise on exact values, as an object array (0 as ``Fraction(0)``)."""
    out = np.empty(len(z), dtype=object)
    out[:] = [v if v > 0 else Fraction(0) for v in z]
    return out


def affine_exact(affine, h: np.ndarray) -> np.ndarray:
    """Exact ``W h + b`` of an :class:`~equivcheck.core.network.Affine` at the exact vector ``h``.

    Float weights are dyadic rationals. When the input is dyadic too, the product is computed
    with Python's exact integers (``W = M 2^e``, ``h = H / D``), much faster than summing
    ``Fraction`` objects; otherwise with ``Fraction`` s. A sparse weight is summed over each
    row's stored entries only (time and memory linear in the stored entries).
    """
    b_exact = affine.rational_bias()
    dyadic = affine.dyadic_weight
    h_den = pow2_common_denominator(h)
    w = affine.weight
    sparse = matrix.is_sparse(w)
    if dyadic is not None and h_den:
        m, e = dyadic
        h_int = np.empty(len(h), dtype=object)
        h_int[:] = [int(v * h_den) for v in h]
        if sparse:
            acc = row_sums(m * h_int[w.indices], w.indptr)
        else:
            acc = m.dot(h_int) if len(h) else np.zeros(m.shape[0], dtype=object)
        num_scale, den = (1 << e, h_den) if e >= 0 else (1, h_den << -e)
        out = np.empty(len(b_exact), dtype=object)
        out[:] = [Fraction(int(a) * num_scale, den) + bb for a, bb in zip(acc, b_exact)]
        return out
    if sparse:
        h = np.asarray(h, dtype=object)
        return row_sums(affine.rational_weight() * h[w.indices], w.indptr) + b_exact
    return affine.rational_weight().dot(h) + b_exact


def pre_activations_exact(layers: Sequence, x: Iterable) -> list[np.ndarray]:
    """The pre-activations of every layer at input ``x``, in exact rational arithmetic on the
    stored weights. ``layers`` are :class:`~equivcheck.core.network.Layer` s (anything with
    ``.affine`` and ``.relu``); ``x`` holds Fractions, ints or floats (taken exactly)."""
    values = [Fraction(v) for v in x]
    h = np.empty(len(values), dtype=object)
    h[:] = values
    out = []
    for layer in layers:
        z = affine_exact(layer.affine, h)
        out.append(z)
        h = relu_exact(z) if layer.relu else z
    return out


# ---------------------------------------------------------------------------------------------
# the float snap


def round_to(x, precision: str = "float32") -> np.ndarray:
    """``x`` rounded to the nearest ``precision`` floats ("float32" or "float64"), as float64."""
    dtype = np.dtype(precision)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"precision {precision!r}: float32 or float64")
    return np.asarray(x, dtype=np.float64).astype(dtype).astype(np.float64)


def snap(x, lo: np.ndarray, hi: np.ndarray, precision: str = "float32") -> np.ndarray:
    """``x`` rounded to ``precision`` floats, then clamped into ``[lo, hi]``.

    When ``lo``/``hi`` are themselves ``precision`` floats (as the boxes of
    :meth:`~equivcheck.core.domain.Box.sample_box` are) every result is a ``precision`` float
    inside the box, which onnxruntime then runs exactly.
    """
    return np.clip(round_to(x, precision), lo, hi)


# ---------------------------------------------------------------------------------------------
# linear algebra modulo a prime


def echelon_mod_p(m: np.ndarray) -> list[int]:
    """The pivot columns of the row echelon form of the integer matrix ``m`` modulo ``PRIME``.

    Column ``c`` is a pivot iff it is linearly independent, modulo ``PRIME``, of the columns
    before it. Independence modulo a prime implies independence over the rationals, so the
    number of pivots is a certified *lower* bound of the rational rank, and the pivot columns are
    rationally independent.
    """
    a = np.array([int(v) % PRIME for v in np.asarray(m).ravel()], dtype=np.int64).reshape(
        np.shape(m)
    )
    if a.ndim != 2:
        raise ValueError(f"echelon_mod_p needs a matrix, got shape {a.shape}")
    rows, cols = a.shape
    pivots: list[int] = []
    for col in range(cols):
        rank = len(pivots)
        if rank == rows:
            break
        nz = np.nonzero(a[rank:, col])[0]
        if len(nz) == 0:
            continue
        piv = rank + int(nz[0])
        if piv != rank:
            a[[rank, piv]] = a[[piv, rank]]
        inv = pow(int(a[rank, col]), PRIME - 2, PRIME)
        a[rank] = (a[rank] * inv) % PRIME
        below = a[rank + 1 :, col].copy()
        if np.any(below):
            a[rank + 1 :] = (a[rank + 1 :] - (below[:, None] * a[rank]) % PRIME) % PRIME
        pivots.append(col)
    return pivots


def rank_mod_p(m: np.ndarray) -> int:
    """Rank of an integer matrix modulo ``PRIME``: a certified lower bound of its rational rank."""
    return len(echelon_mod_p(m)) if np.size(m) else 0


def independent_rows_mod_p(m: np.ndarray) -> list[int]:
    """The rows of the integer matrix ``m`` independent, modulo ``PRIME``, of the rows before them
    (so rationally independent); every other row depends modulo ``PRIME`` on earlier rows."""
    m = np.asarray(m, dtype=object)
    if m.size == 0:
        return []
    return echelon_mod_p(m.T)


# ---------------------------------------------------------------------------------------------
# linear algebra over the rationals


def row_echelon(
    m: Sequence[Sequence], ncols: int | None = None, reduced: bool = True
) -> tuple[list[list[Fraction]], list[int]]:
    """Exact Gaussian elimination on ``Fraction`` s: ``(rows, pivot_columns)``.

    Sweeps the first ``ncols`` columns (all by default); the rows may be longer (an augmented
    matrix), every row operation applies to the whole row. With ``reduced`` the result is the
    reduced row echelon form (pivots 1, zero above and below them); else only the entries below
    the pivots are eliminated (enough for the rank).
    """
    a = [[Fraction(v) for v in row] for row in m]
    ncols = (len(a[0]) if a else 0) if ncols is None else ncols
    pivots: list[int] = []
    for c in range(ncols):
        r = len(pivots)
        if r == len(a):
            break
        piv = next((i for i in range(r, len(a)) if a[i][c] != 0), None)
        if piv is None:
            continue
        a[r], a[piv] = a[piv], a[r]
        if reduced:
            p = a[r][c]
            a[r] = [x / p for x in a[r]]
            targets: Iterable[int] = (i for i in range(len(a)) if i != r)
        else:
            targets = range(r + 1, len(a))
        for i in targets:
            if a[i][c] != 0:
                f = a[i][c] / a[r][c]
                a[i] = [x - f * y for x, y in zip(a[i], a[r])]
        pivots.append(c)
    return a, pivots


def rank_exact(m: Sequence[Sequence]) -> int:
    """Rank over the rationals (exact elimination: for small matrices)."""
    return len(row_echelon(m, reduced=False)[1])


def nullspace(m: Sequence[Sequence], ncols: int) -> list[list[Fraction]]:
    """A basis of the null space of the rational matrix ``m`` (rows of length ``ncols``)."""
    a, pivots = row_echelon(m, ncols)
    basis = []
    for free in (c for c in range(ncols) if c not in pivots):
        v = [Fraction(0)] * ncols
        v[free] = Fraction(1)
        for i, pc in enumerate(pivots):
            v[pc] = -a[i][free]
        basis.append(v)
    return basis


def solve_exact(m: Sequence[Sequence], rhs: Sequence) -> list[Fraction] | None:
    """The solution ``a`` of the square system ``m a = rhs``, exactly; None if ``m`` is singular."""
    n = len(m)
    a, pivots = row_echelon([list(m[i]) + [rhs[i]] for i in range(n)], ncols=n)
    if len(pivots) < n:
        return None
    return [a[i][n] for i in range(n)]


def exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The exact product of two matrices of exact values (object arrays of Fractions, or floats),
    computed in integers over common denominators; an object array of Fractions."""
    if a.size == 0 or b.size == 0:
        out = np.empty((a.shape[0], b.shape[1] if b.ndim == 2 else 0), dtype=object)
        out.fill(Fraction(0))
        return out
    ai, da = scaled_integers(a)
    bi, db = scaled_integers(b)
    prod = ai.dot(bi)
    den = da * db
    out = np.empty(prod.shape, dtype=object)
    out.ravel()[:] = [Fraction(int(v), den) for v in prod.ravel()]
    return out
