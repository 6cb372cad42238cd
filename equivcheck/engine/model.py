"""The float arrays the engine's bounds work on, prepared once per pair of networks.

:class:`PairModel` holds, per layer of each network, the weight split into its positive and
negative parts, absolute values and nonzero patterns (for the rounding allowances), and, when
the two networks have the same shape (same layer widths and ReLU placement: a pruned, quantized
or fine-tuned copy), the layer-wise differences ``D = W_f - W_g`` and ``db = b_f - b_g`` in float
with their exact rounding errors (TwoSum). Weights that are not exact floats add their half-ulp
(:data:`~equivcheck.engine.rounding.WEIGHT_ULP`) to the error terms.

Sparse weights (``scipy.sparse.csr_array``, :mod:`equivcheck.core.matrix`: layers lowered from
convolutions) stay sparse: every derived matrix has the stored pattern of its weight, so memory
is linear in the stored entries. A same-shaped pair with different patterns (a pruned copy whose
zeros are not stored) gets ``D`` on the union of the two patterns: an entry present in one only is
a difference entry, exactly. The rounding allowances stay valid for sparse rows: they use the
dense row length (``factor`` of the widest layer) as the bound of the number of terms of each dot
product, and a sparse product's sum has no more terms than that, in whatever order it is added.
Non-stored entries are exact zeros of both the float and the exact weights, so their error
bounds are zero (the dense arrays' ``TINY`` per entry is kept for the stored ones).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from equivcheck.core import matrix
from equivcheck.core.network import Network
from equivcheck.engine.rounding import TINY, WEIGHT_ULP, factor, two_diff
from equivcheck.engine.rounding_noise import Rounding, make_rounding

if TYPE_CHECKING:  # scipy is imported only where a sparse matrix is built (start-up)
    import scipy.sparse as sp


@dataclass(frozen=True, eq=False)
class LayerArrays:
    """One affine layer (``z = W h + b``, then ReLU when ``relu``) of one network."""

    w: np.ndarray  # dense, or a csr_array (every matrix below then has its pattern)
    wp: np.ndarray  # max(W, 0)
    wn: np.ndarray  # min(W, 0)
    aw: np.ndarray  # |W|
    nzw: np.ndarray  # (W != 0) as 0/1 floats: counts nonzero products exactly
    b: np.ndarray
    ab: np.ndarray
    relu: bool
    exact: bool  # the float arrays are the exact weights
    fac: float  # relative allowance of one step through this layer
    wt: object = None  # sparse ``w`` only: ``W.T`` as a csr_array (back-substitution products)
    br: np.ndarray | None = None  # bias radius: z is within ``W h + b +- br`` (None: exactly W h + b)
    rounding: Rounding | None = None  # the first inputs were rounded (engine.rounding_noise)
    zero: bool = False  # no nonzero weight: z = b (+- br) exactly, nothing to back-substitute

    @property
    def out_dim(self) -> int:
        return int(self.w.shape[0])

    def forward(self, v: np.ndarray) -> np.ndarray:
        """``v @ W.T`` for a dense ``v`` of shape ``[..., in]`` (float, no allowance)."""
        return matrix.left_multiply(v, self.w.T) if matrix.is_sparse(self.w) else v @ self.w.T


@dataclass(frozen=True, eq=False)
class DiffArrays:
    """``D = W_f - W_g`` and ``db = b_f - b_g`` of one layer of a same-shaped pair.

    ``d_err``/``db_err`` bound ``|exact difference - float difference|`` elementwise (the TwoSum
    error, plus the half-ulps of weights that are not exact floats); ``g_err`` bounds
    ``|W_g exact - W_g float|`` (zero for exact floats)."""

    d: np.ndarray
    dp: np.ndarray
    dn: np.ndarray
    ad: np.ndarray
    nzd: np.ndarray
    d_err: np.ndarray
    nz_err: np.ndarray  # (d_err != 0) as 0/1 floats
    db: np.ndarray
    adb: np.ndarray
    db_err: np.ndarray
    g_err: np.ndarray
    has_err: bool
    dt: object = None  # sparse ``d`` only: ``D.T`` as a csr_array


@dataclass(frozen=True, eq=False)
class PairModel:
    """Both networks as float arrays; ``diff`` is None unless they have the same shape."""

    f: tuple[LayerArrays, ...]
    g: tuple[LayerArrays, ...]
    diff: tuple[DiffArrays, ...] | None
    n_in: int
    n_out: int
    width: int  # the widest layer of either network

    @property
    def same_shape(self) -> bool:
        return self.diff is not None

    def streams_apart(self) -> "PairModel":
        """The same pair bounded as two separate networks (no difference stream): sometimes
        tighter than the difference stream, when the networks are far apart (the audit takes
        the better of both)."""
        return replace(self, diff=None)

    def output_slice(self, j: int) -> "PairModel":
        """The same pair restricted to output ``j`` (both networks' last layers cut to row
        ``j``; every other array shared, not copied: the bounds of the sliced networks, in
        memory independent of the number of outputs)."""
        f = self.f[:-1] + (_row_of_layer(self.f[-1], j),)
        g = self.g[:-1] + (_row_of_layer(self.g[-1], j),)
        diff = None if self.diff is None else self.diff[:-1] + (_row_of_diff(self.diff[-1], j),)
        return PairModel(f, g, diff, self.n_in, 1, self.width)

    @staticmethod
    def build(f: Network, g: Network, radius: tuple | None = None,
              rounding: tuple | None = None) -> "PairModel":
        """The arrays of ``f`` and ``g``. ``radius`` (per network, per layer: None or a
        nonnegative float vector, already rounded up) widens each layer's bias to an interval:
        the bounds then hold for ``z = W h + b + d`` with any ``|d| <= radius`` (a quantized
        network's rounding errors; see :mod:`equivcheck.bounds.bias_enclosure`). ``rounding``
        (per network, per layer: None or ``(quantizer, relu)``) says that the layer's first
        inputs were rounded by ``quantizer`` (after a ReLU of the previous layer when
        ``relu``): the bounds add, per node, the rounding error's effect
        (:mod:`equivcheck.engine.rounding_noise`)."""
        if f.in_dim != g.in_dim or f.out_dim != g.out_dim:
            from equivcheck.errors import ShapeMismatchError

            raise ShapeMismatchError(
                f"{f.source} maps {f.in_dim} -> {f.out_dim} values but {g.source} maps "
                f"{g.in_dim} -> {g.out_dim}"
            )
        widest = max(max(lay.in_dim, lay.out_dim) for lay in f.layers + g.layers)
        length = 2 * widest + f.in_dim + 8
        rf, rg = radius if radius is not None else (None, None)
        rf = rf or (None,) * len(f.layers)
        rg = rg or (None,) * len(g.layers)
        qf, qg = rounding if rounding is not None else (None, None)
        qf = qf or (None,) * len(f.layers)
        qg = qg or (None,) * len(g.layers)
        fa = tuple(_layer_arrays(lay, length, r, q) for lay, r, q in zip(f.layers, rf, qf))
        ga = tuple(_layer_arrays(lay, length, r, q) for lay, r, q in zip(g.layers, rg, qg))
        diff = None
        if len(f.layers) == len(g.layers) and all(
            lf.weight.shape == lg.weight.shape and lf.relu == lg.relu
            for lf, lg in zip(f.layers, g.layers)
        ):
            diff = tuple(_diff_arrays(lf, lg, a, b) for lf, lg, a, b in zip(f.layers, g.layers, rf, rg))
        return PairModel(fa, ga, diff, f.in_dim, f.out_dim, widest)


def _layer_arrays(layer, length: int, radius: np.ndarray | None = None,
                  rounding: tuple | None = None) -> LayerArrays:
    w = layer.weight
    if matrix.is_sparse(w):
        w = matrix.as_csr(w)
    else:
        w = np.ascontiguousarray(w, dtype=np.float64)
    b = np.ascontiguousarray(layer.bias, dtype=np.float64)
    exact = layer.affine.is_exact_float
    fac = factor(length) + (0.0 if exact else WEIGHT_ULP)
    return LayerArrays(
        w, matrix.positive_part(w), matrix.negative_part(w), matrix.absolute(w), _nonzero(w),
        b, np.abs(b), bool(layer.relu), exact, fac, matrix.transpose(w) if matrix.is_sparse(w) else None,
        None if radius is None else np.asarray(radius, dtype=np.float64),
        None if rounding is None else make_rounding(rounding[0], rounding[1], w),
        not bool(np.any(matrix.values(w))),
    )


def _nonzero(w):
    """``(w != 0)`` as 0/1 floats, of the kind (and, sparse, the stored pattern) of ``w``."""
    if matrix.is_sparse(w):
        return _with_data(w, (w.data != 0.0).astype(np.float64))
    return (w != 0.0).astype(np.float64)


def _with_data(pattern: sp.csr_array, data: np.ndarray) -> sp.csr_array:
    """A csr_array with ``pattern``'s stored positions (zeros kept) and the values ``data``."""
    import scipy.sparse as sp

    return sp.csr_array((data, pattern.indices.copy(), pattern.indptr.copy()), shape=pattern.shape)


def _union_aligned(wf, wg) -> tuple[sp.csr_array, np.ndarray, np.ndarray]:
    """The union of the stored patterns of two same-shaped sparse matrices as a
    canonical csr pattern, and each matrix's values on it (0 where it stores nothing): exact
    copies, so ``vf - vg`` is the entrywise difference everywhere (both are 0 off the pattern)."""
    import scipy.sparse as sp

    a, b = matrix.as_csr(wf), matrix.as_csr(wg)
    cols = a.shape[1]

    def keys(m):
        rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
        return rows * cols + m.indices.astype(np.int64)

    ka, kb = keys(a), keys(b)
    union = np.union1d(ka, kb)  # sorted: row-major, the canonical csr order
    va, vb = np.zeros(len(union)), np.zeros(len(union))
    va[np.searchsorted(union, ka)] = a.data
    vb[np.searchsorted(union, kb)] = b.data
    rows, idx = union // cols, union % cols
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=a.shape[0]))])
    pattern = sp.csr_array((np.zeros(len(union)), idx.astype(np.int32), indptr.astype(np.int32)),
                           shape=a.shape)
    return pattern, va, vb


def _ulp_err(layer, values: np.ndarray) -> np.ndarray:
    """Elementwise bounds of |exact - float| for ``values``, the weight (dense, or its values
    on a sparse pattern) or the bias of ``layer``."""
    if layer.affine.is_exact_float:
        return np.zeros_like(values)
    return WEIGHT_ULP * np.abs(values) + TINY


def _diff_arrays(lf, lg, rf: np.ndarray | None = None, rg: np.ndarray | None = None) -> DiffArrays:
    """``D``, ``db`` and their error bounds; the bias radii ``rf``/``rg`` of the two layers
    (None: none) join ``db``'s error bound: ``dz`` is within ``D h_f + W_g delta + db +- (rf + rg)``."""
    if matrix.is_sparse(lf.weight) and matrix.is_sparse(lg.weight):
        pattern, vf, vg = _union_aligned(lf.weight, lg.weight)
        dv, errv = two_diff(vf, vg)
        # (an entry stored by one network only is an exact 0 of the other: its TINY there is
        # conservative; entries neither stores are exact zeros of both, with no error at all)
        fe_v, ge_v = _ulp_err(lf, vf), _ulp_err(lg, vg)
        d_err_v = (np.abs(errv) + fe_v + ge_v) * (1.0 + 2.0**-50)
        d, d_err, ge_w = (_with_data(pattern, v) for v in (dv, d_err_v, ge_v))
    else:  # dense (one sparse layer against a dense one of its shape: dense too, as small)
        wf, wg = matrix.dense(lf.weight), matrix.dense(lg.weight)
        d, err = two_diff(wf, wg)
        fe_w, ge_w = _ulp_err(lf, wf), _ulp_err(lg, wg)
        # 1 + 2**-50 covers the rounding of these (nonnegative) sums of error terms
        d_err = (np.abs(err) + fe_w + ge_w) * (1.0 + 2.0**-50)
    db, berr = two_diff(lf.bias, lg.bias)
    fe_b, ge_b = _ulp_err(lf, lf.bias), _ulp_err(lg, lg.bias)
    db_err = (np.abs(berr) + fe_b + ge_b) * (1.0 + 2.0**-50)
    for r in (rf, rg):
        if r is not None:
            db_err = (db_err + r) * (1.0 + 2.0**-50)
    return DiffArrays(
        d, matrix.positive_part(d), matrix.negative_part(d), matrix.absolute(d), _nonzero(d),
        d_err, _nonzero(d_err), db, np.abs(db), db_err, ge_w,
        bool(np.any(matrix.values(d_err)) or np.any(db_err) or np.any(matrix.values(ge_w))),
        matrix.transpose(d) if matrix.is_sparse(d) else None,
    )


def _rows(m, j: int):
    """Row ``j`` of a dense or sparse matrix as a one-row matrix of the same kind."""
    return matrix.as_csr(m[[j]]) if matrix.is_sparse(m) else m[j:j + 1]


def _row_of_layer(lay: LayerArrays, j: int) -> LayerArrays:
    w = _rows(lay.w, j)
    return replace(lay, w=w, wp=_rows(lay.wp, j), wn=_rows(lay.wn, j), aw=_rows(lay.aw, j),
                   nzw=_rows(lay.nzw, j), b=lay.b[j:j + 1], ab=lay.ab[j:j + 1],
                   wt=matrix.transpose(w) if matrix.is_sparse(w) else None,
                   br=None if lay.br is None else lay.br[j:j + 1],
                   rounding=None if lay.rounding is None else lay.rounding.rows(j))


def _row_of_diff(dl: DiffArrays, j: int) -> DiffArrays:
    d = _rows(dl.d, j)
    d_err, g_err, db_err = _rows(dl.d_err, j), _rows(dl.g_err, j), dl.db_err[j:j + 1]
    return replace(dl, d=d, dp=_rows(dl.dp, j), dn=_rows(dl.dn, j), ad=_rows(dl.ad, j),
                   nzd=_rows(dl.nzd, j), d_err=d_err, nz_err=_rows(dl.nz_err, j),
                   db=dl.db[j:j + 1], adb=dl.adb[j:j + 1], db_err=db_err, g_err=g_err,
                   has_err=dl.has_err, dt=matrix.transpose(d) if matrix.is_sparse(d) else None)
