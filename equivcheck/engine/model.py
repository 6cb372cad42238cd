"""The float arrays the engine's bounds work on, prepared once per pair of networks.

:class:`PairModel` holds, per layer of each network, the weight split into its positive and
negative parts, absolute values and nonzero patterns (for the rounding allowances), and, when
the two networks have the same shape (same layer widths and ReLU placement: a pruned, quantized
or fine-tuned copy), the layer-wise differences ``D = W_f - W_g`` and ``db = b_f - b_g`` in float
with their exact rounding errors (TwoSum). Weights that are not exact floats add their half-ulp
(:data:`~equivcheck.engine.rounding.WEIGHT_ULP`) to the error terms.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from equivcheck.core.network import Network
from equivcheck.engine.rounding import TINY, WEIGHT_ULP, factor, two_diff


@dataclass(frozen=True, eq=False)
class LayerArrays:
    """One affine layer (``z = W h + b``, then ReLU when ``relu``) of one network."""

    w: np.ndarray
    wp: np.ndarray  # max(W, 0)
    wn: np.ndarray  # min(W, 0)
    aw: np.ndarray  # |W|
    nzw: np.ndarray  # (W != 0) as 0/1 floats: counts nonzero products exactly
    b: np.ndarray
    ab: np.ndarray
    relu: bool
    exact: bool  # the float arrays are the exact weights
    fac: float  # relative allowance of one step through this layer

    @property
    def out_dim(self) -> int:
        return int(self.w.shape[0])


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

    @staticmethod
    def build(f: Network, g: Network) -> "PairModel":
        if f.in_dim != g.in_dim or f.out_dim != g.out_dim:
            from equivcheck.errors import ShapeMismatchError

            raise ShapeMismatchError(
                f"{f.source} maps {f.in_dim} -> {f.out_dim} values but {g.source} maps "
                f"{g.in_dim} -> {g.out_dim}"
            )
        widest = max(max(lay.in_dim, lay.out_dim) for lay in f.layers + g.layers)
        length = 2 * widest + f.in_dim + 8
        fa = tuple(_layer_arrays(lay, length) for lay in f.layers)
        ga = tuple(_layer_arrays(lay, length) for lay in g.layers)
        diff = None
        if len(f.layers) == len(g.layers) and all(
            lf.weight.shape == lg.weight.shape and lf.relu == lg.relu
            for lf, lg in zip(f.layers, g.layers)
        ):
            diff = tuple(_diff_arrays(lf, lg) for lf, lg in zip(f.layers, g.layers))
        return PairModel(fa, ga, diff, f.in_dim, f.out_dim, widest)


def _layer_arrays(layer, length: int) -> LayerArrays:
    w = np.ascontiguousarray(layer.weight, dtype=np.float64)
    b = np.ascontiguousarray(layer.bias, dtype=np.float64)
    exact = layer.affine.is_exact_float
    fac = factor(length) + (0.0 if exact else WEIGHT_ULP)
    return LayerArrays(
        w, np.maximum(w, 0.0), np.minimum(w, 0.0), np.abs(w), (w != 0.0).astype(np.float64),
        b, np.abs(b), bool(layer.relu), exact, fac,
    )


def _ulp_err(layer) -> tuple[np.ndarray, np.ndarray]:
    """Elementwise bounds of |exact - float| for a layer's weight and bias."""
    if layer.affine.is_exact_float:
        return np.zeros_like(layer.weight), np.zeros_like(layer.bias)
    return (WEIGHT_ULP * np.abs(layer.weight) + TINY, WEIGHT_ULP * np.abs(layer.bias) + TINY)


def _diff_arrays(lf, lg) -> DiffArrays:
    d, err = two_diff(lf.weight, lg.weight)
    db, berr = two_diff(lf.bias, lg.bias)
    fe_w, fe_b = _ulp_err(lf)
    ge_w, ge_b = _ulp_err(lg)
    # 1 + 2**-50 covers the rounding of these (nonnegative) sums of error terms
    d_err = (np.abs(err) + fe_w + ge_w) * (1.0 + 2.0**-50)
    db_err = (np.abs(berr) + fe_b + ge_b) * (1.0 + 2.0**-50)
    return DiffArrays(
        d, np.maximum(d, 0.0), np.minimum(d, 0.0), np.abs(d), (d != 0.0).astype(np.float64),
        d_err, (d_err != 0.0).astype(np.float64), db, np.abs(db), db_err, ge_w,
        bool(np.any(d_err) or np.any(db_err) or np.any(ge_w)),
    )
