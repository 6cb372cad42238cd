"""The data while an ONNX graph is imported: the affine maps pending since the last layer,
composed exactly, and the layers closed so far.

Affine operations between two ReLUs are composed into one affine map. Composition is exact:
whenever the float64 result of a composition might round, it is recomputed in rational
arithmetic and the layer keeps the exact rationals (with their nearest floats beside them).
Stored floats that are not composed with anything are kept exactly as they are. Maps from
convolutions, pooling, padding, transposes and skip connections are sparse
(:mod:`equivcheck.io.onnx_sparse`); a layer closed from a large, mostly zero map keeps a sparse
weight. In a DAG every live tensor has its own map of the same anchor, and closing a layer
passes the tensors still needed through it (:meth:`DataPath.close_layer`).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from equivcheck.core.network import (
    MAX_ABS_WEIGHT,
    MAX_LAYER_ENTRIES,
    MAX_NETWORK_ENTRIES,
    MAX_WIDTH,
    Affine,
    Layer,
    check_dense_size,
)
from equivcheck.core.rational import as_fraction_array, fraction_array, nearest_float_array
from equivcheck.errors import ModelValueError, ShapeMismatchError, UnsupportedModelError
from equivcheck.io.onnx_graph import GraphContext, signed_max
from equivcheck.io.onnx_sparse import (
    csr_from_coo,
    exact_column,
    exact_product,
    exact_values,
    exact_vstack,
    from_dense,
    split_last_column,
    to_dense,
)

if TYPE_CHECKING:
    import scipy.sparse as sp

    from equivcheck.core.quantized import Quantizer
    from equivcheck.io.onnx_qgrid import QGrid

# Large rational matrix products are slow in Python; past this many multiply-adds we refuse
# to merge two dense maps instead of silently rounding them.
MAX_EXACT_PRODUCT = 5_000_000


class MapKind(enum.Enum):
    """The shape of a pending affine map's weight."""

    IDENTITY = "identity"  # no weight
    DIAG = "diag"  # ``w`` is the diagonal, a vector
    DENSE = "dense"  # ``w`` is a matrix
    SPARSE = "sparse"  # ``w`` is the exact sparse matrix ``[W | b]`` (bias as last column), ``q`` its values


@dataclass
class PendingMap:
    """The affine map from the last anchor (network input or ReLU output) to the data tensor,
    on ``n`` flat inputs.

    ``w`` and ``b`` are float64 when ``exact`` is False; otherwise object arrays of Fractions.
    A ``SPARSE`` map keeps weight and bias in one exact sparse matrix ``w = [W | b]`` with
    ``q`` its exact values or None (see :mod:`equivcheck.io.onnx_sparse`); ``b`` is unused.
    """

    n: int
    kind: MapKind = MapKind.IDENTITY
    w: np.ndarray | None = None
    b: np.ndarray | None = None
    exact: bool = False
    q: np.ndarray | None = None

    @property
    def out_dim(self) -> int:
        if self.kind in (MapKind.DENSE, MapKind.SPARSE):
            return self.w.shape[0]
        return self.n

    # -- sparse maps (convolution, pooling, selections, skip connections) ----------------------
    def augmented(self) -> tuple[sp.csr_array, np.ndarray | None]:
        """The map as the exact sparse matrix ``[W | b]`` (out_dim x (n + 1))."""
        if self.kind is MapKind.SPARSE:
            return self.w, self.q
        m, n = self.out_dim, self.n
        if self.kind is MapKind.DENSE:
            wm, wq = from_dense(self.w)
        elif self.kind is MapKind.DIAG:
            d = self.w
            wm, wq = csr_from_coo(np.arange(n), np.arange(n),
                                  nearest_float_array(d) if d.dtype == object else d, (n, n),
                                  q=d if d.dtype == object else None)
        else:
            wm, wq = csr_from_coo(np.arange(n), np.arange(n), np.ones(n), (n, n))
        b = self.b if self.b is not None else np.zeros(m)
        bm, bq = exact_column(b)
        rows = np.repeat(np.arange(m), np.diff(wm.indptr))
        exact = wq is not None or bq is not None
        return csr_from_coo(
            np.r_[rows, np.repeat(np.arange(m), np.diff(bm.indptr))],
            np.r_[wm.indices, np.full(bm.nnz, n)], np.r_[wm.data, bm.data], (m, n + 1),
            q=np.r_[exact_values(wm, wq), exact_values(bm, bq)] if exact else None)

    def then_sparse(self, lin: sp.csr_array, lin_q, shift, where: str) -> None:
        """Compose ``x -> lin @ x + shift`` after this map, exactly (``lin`` an exact sparse
        matrix with values ``lin_q`` or None; ``shift`` a float64 or Fraction vector, or None)."""
        if lin.shape[1] != self.out_dim:
            raise ShapeMismatchError(
                f"{where}: the map takes {lin.shape[1]} values but the data has {self.out_dim}"
            )
        m = lin.shape[0]
        shift = np.zeros(m) if shift is None else shift
        lin_aug = _append_column(lin, lin_q, shift)
        if self.kind is MapKind.IDENTITY and self.b is None and not self.exact:
            self.kind, self.w, self.q, self.b = MapKind.SPARSE, lin_aug[0], lin_aug[1], None
            return
        base, base_q = self.augmented()
        one = csr_from_coo([0], [self.n], [1.0], (1, self.n + 1))
        ext = exact_vstack([(base, base_q), one])
        self.w, self.q = exact_product(lin_aug[0], lin_aug[1], ext[0], ext[1], where)
        self.kind, self.b, self.exact = MapKind.SPARSE, None, False

    def select(self, src: np.ndarray, fill, where: str) -> None:
        """Output ``i`` becomes input ``src[i]``, or the constant ``fill[i]`` where ``src[i]``
        is -1 (``fill`` None: 0). Dense maps stay dense (rows gathered)."""
        src = np.asarray(src, dtype=np.int64)
        if fill is None and len(src) == self.out_dim and np.array_equal(src, np.arange(len(src))):
            return
        if self.kind is MapKind.DENSE and np.all(src >= 0) and fill is None:
            self.w = self.w[src]
            if self.b is not None:
                self.b = self.b[src]
            return
        valid = np.flatnonzero(src >= 0)
        lin = csr_from_coo(valid, src[valid], np.ones(len(valid)), (len(src), self.out_dim))[0]
        shift = None
        if fill is not None:
            shift = np.where(src >= 0, 0.0, np.asarray(fill, dtype=np.float64))
        self.then_sparse(lin, None, shift, where)

    def to_fractions(self) -> None:
        """Switch to exact rational arrays (from here on every composition is exact)."""
        if self.w is not None and self.w.dtype != object:
            self.w = fraction_array(self.w)
        if self.b is not None and self.b.dtype != object:
            self.b = fraction_array(self.b)
        self.exact = True

    def then_dense(self, w: np.ndarray, b: np.ndarray | None, where: str) -> None:
        """Compose ``x -> w @ x + b`` after this map (``w`` float64 of shape (m, out_dim)),
        exactly; refuses a product of two dense maps past ``MAX_EXACT_PRODUCT``."""
        if w.shape[1] != self.out_dim:
            raise ShapeMismatchError(
                f"{where}: weight takes {w.shape[1]} values but the data has {self.out_dim}"
            )
        if self.kind is MapKind.SPARSE:
            check_dense_size(w.shape[0], self.n, where)
            self.then_sparse(from_dense(w)[0], None, b, where)
            wm, wq, bias = split_last_column(self.w, self.q)
            self.kind, self.exact = MapKind.DENSE, wq is not None or bias.dtype == object
            self.w, self.q = to_dense(wm, wq), None
            self.b = bias if not self.exact else as_fraction_array(bias)
            if self.exact and self.w.dtype != object:
                self.w = fraction_array(self.w)
            return
        if self.kind is MapKind.IDENTITY and self.b is None and not self.exact:
            self.kind, self.w, self.b = MapKind.DENSE, w, b  # nothing to compose: the stored floats
            return
        self.to_fractions()
        wq = fraction_array(w)
        if self.kind is MapKind.IDENTITY:
            new_w = wq
        elif self.kind is MapKind.DIAG:
            new_w = wq * self.w[None, :]
        else:
            cost = w.shape[0] * w.shape[1] * self.w.shape[1]
            if cost > MAX_EXACT_PRODUCT:
                raise UnsupportedModelError(
                    f"{where}: two dense maps of shapes {w.shape} and {self.w.shape} "
                    "follow each other with no activation; merging them exactly is too large"
                )
            new_w = wq.dot(self.w)
        new_b = wq.dot(self.b) if self.b is not None else None
        if b is not None:
            new_b = fraction_array(b) if new_b is None else new_b + fraction_array(b)
        self.kind, self.w, self.b = MapKind.DENSE, new_w, new_b

    def then_elementwise(self, scale: np.ndarray | None, shift: np.ndarray | None) -> None:
        """Compose ``x -> scale * x + shift`` (elementwise on the flat vector) after this map.

        ``scale``/``shift`` are float64 or object (Fraction) arrays of the data's flat size, or
        None for 1 and 0.
        """
        if scale is not None and scale.dtype != object and np.all(scale == 1.0):
            scale = None
        if shift is not None and shift.dtype != object and np.all(shift == 0.0):
            shift = None
        if scale is None and shift is None:
            return
        if self.kind is MapKind.SPARSE:
            n = self.out_dim
            d = np.ones(n) if scale is None else scale
            dq = d if d.dtype == object else None
            lin, lin_q = csr_from_coo(np.arange(n), np.arange(n),
                                      nearest_float_array(d) if dq is not None else d, (n, n), q=dq)
            self.then_sparse(lin, lin_q, shift, "elementwise")
            return
        if not self.exact and scale is None and self.b is None and shift.dtype != object:
            self.b = shift  # a bias after a map that has none: the stored floats, as they are
            return
        if (not self.exact and self.kind is MapKind.IDENTITY and self.b is None and shift is None
                and scale.dtype != object):
            self.kind, self.w = MapKind.DIAG, scale
            return
        self.to_fractions()
        sq = None if scale is None else as_fraction_array(scale)
        tq = None if shift is None else as_fraction_array(shift)
        if sq is not None:
            if self.kind is MapKind.IDENTITY:
                self.kind, self.w = MapKind.DIAG, sq
            elif self.kind is MapKind.DIAG:
                self.w = self.w * sq
            else:
                self.w = self.w * sq[:, None]
            if self.b is not None:
                self.b = self.b * sq
        if tq is not None:
            self.b = tq if self.b is None else self.b + tq

    def to_affine(self, where: str) -> Affine:
        """The map as an :class:`Affine`: plain float64 when every weight and bias is a float,
        else exact rationals with their nearest floats. Refuses a weight or bias beyond
        ``MAX_ABS_WEIGHT`` in magnitude."""
        if self.kind is MapKind.SPARSE:
            return _sparse_affine(self.w, self.q, where)
        if self.kind is MapKind.IDENTITY:
            w = np.eye(self.n)
        elif self.kind is MapKind.DIAG:
            w = _object_diag(self.w) if self.w.dtype == object else np.diag(self.w)
        else:
            w = self.w
        b = self.b if self.b is not None else np.zeros(self.out_dim)
        w_near, b_near = _nearest_within_limit(w, where, "weight"), _nearest_within_limit(b, where, "bias")
        if _is_float_exact(w) and _is_float_exact(b):
            return Affine(w_near, b_near)
        return Affine(w_near, b_near, exact_weight=as_fraction_array(w), exact_bias=as_fraction_array(b))


@dataclass
class LiveTensor:
    """A data tensor still needed by a later node: its shape, float type, affine map from the
    current anchor, and whether it is known to be non-negative (it then passes a ReLU layer
    as one stably active unit)."""

    shape: tuple[int, ...]
    dtype: str
    pending: PendingMap
    nonneg: bool = False
    grid: QGrid | None = None
    integer: bool = False


@dataclass
class DataPath:
    """The data being walked: the current tensor (name, shape, float type, pending affine map
    from the anchor, sign), the other live data tensors of a DAG, and the layers and notes
    gathered so far. ``last_use`` gives, per tensor, the index of the last node reading it
    (the graph output: past the end); ``index`` is the node being visited."""

    ctx: GraphContext
    tensor: str
    shape: tuple[int, ...]
    dtype: str
    pending: PendingMap
    layers: list[Layer] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    entries: int = 0  # weights of the layers closed so far
    nonneg: bool = False
    live: dict[str, LiveTensor] = field(default_factory=dict)
    last_use: dict[str, int] = field(default_factory=dict)
    index: int = 0
    # quantization (see equivcheck.io.onnx_quant): the grid the current values lie on (None:
    # unknown), whether the tensor holds the integers (its map gives their real values
    # s * (q - zp)), the quantizer after each quantized layer (by index) and of the input
    grid: QGrid | None = None
    integer: bool = False
    quant: dict[int, Quantizer] = field(default_factory=dict)
    input_quant: Quantizer | None = None
    quantized_ok: bool = False

    def where(self, node) -> str:
        return self.ctx.where(node)

    def load(self, name: str) -> None:
        """Make the live tensor ``name`` the current one (its map is copied: other nodes may
        still read the original)."""
        t = self.live[name]
        self.tensor, self.shape, self.dtype, self.nonneg = name, t.shape, t.dtype, t.nonneg
        self.grid, self.integer = t.grid, t.integer
        self.pending = dataclasses.replace(t.pending)

    def store(self, name: str) -> None:
        """Record the current data as the live tensor ``name``."""
        self.tensor = name
        self.live[name] = LiveTensor(tuple(self.shape), self.dtype, self.pending, self.nonneg,
                                     self.grid, self.integer)

    def drop_dead(self) -> None:
        """Forget the tensors no node after the current one reads."""
        for name in [t for t in self.live if self.last_use.get(t, -1) <= self.index]:
            del self.live[name]

    def typed_const(self, node, name: str) -> np.ndarray:
        """A constant operand of an arithmetic operator: it must have the data's float type
        (ONNX binds both operands to one type; onnxruntime refuses a model that mixes them)."""
        c = self.ctx.const(node, name)
        mark = self.ctx.dequantized.get(name)
        if mark is not None:  # a DequantizeLinear of constants, exact in float64
            if not mark[1]:
                raise ModelValueError(
                    f"{self.where(node)}: constant '{name}' is dequantized to values float64 "
                    "cannot hold exactly (an int32 times its scale needs more than 53 bits); "
                    "not supported")
            if mark[0] == self.dtype:
                return c
            raise ModelValueError(
                f"{self.where(node)}: constant '{name}' has type {mark[0]} but the data is "
                f"{self.dtype} (both operands must have one type)")
        if c.dtype.name != self.dtype:
            raise ModelValueError(
                f"{self.where(node)}: constant '{name}' has type {c.dtype} but the data is "
                f"{self.dtype} (both operands must have one type)"
            )
        return c

    def apply_dense(self, node, w: np.ndarray, b: np.ndarray | None) -> None:
        """data <- w @ data + b on the flat vector (``w`` float64 of shape (m, n))."""
        self.pending.then_dense(w, b, self.where(node))

    def apply_elementwise(self, scale: np.ndarray | None, shift: np.ndarray | None) -> None:
        """data <- scale * data + shift elementwise on the flat vector."""
        self.pending.then_elementwise(scale, shift)

    def apply_sparse(self, node, lin: sp.csr_array, lin_q, shift) -> None:
        """data <- lin @ data + shift (``lin`` exact sparse, see :meth:`PendingMap.then_sparse`)."""
        self.pending.then_sparse(lin, lin_q, shift, self.where(node))

    def select(self, node, src: np.ndarray, fill=None) -> None:
        """data[i] <- data[src[i]], or ``fill[i]`` where ``src[i]`` is -1."""
        self.pending.select(src, fill, self.where(node))

    def close_layer(self, relu: bool, name: str, rows: PendingMap | None = None) -> None:
        """Close a layer: the units are ``rows`` (default: the pending map), with a ReLU when
        ``relu``, plus pass-through units for every other tensor a later node reads (one stably
        active unit per value known to be non-negative, ``relu(v) - relu(-v)`` otherwise).
        Afterwards the pending map selects the ``rows`` units and every live tensor is
        re-expressed on the new layer's outputs.

        Refuses (before allocating it) a layer past the size limits, and a layer whose folded
        weights or biases exceed ``MAX_ABS_WEIGHT`` in magnitude.
        """
        p = rows if rows is not None else self.pending
        where = f"{self.ctx.label}: layer '{name}'"
        passes = [(t, v) for t, v in self.live.items() if self.last_use.get(t, -1) > self.index]
        # the ReLU's own input, read again later: relu(x) is a unit already, x = relu(x) - relu(-x)
        own = self.tensor if (relu and rows is None) else None
        # without a ReLU a carried value is one unit v; with one, relu(v) - relu(-v) unless v >= 0
        split = {t: relu and not v.nonneg for t, v in passes}
        n_main = p.out_dim
        n_out = n_main + sum(v.pending.out_dim * ((0 if t == own else 1) + (1 if split[t] else 0))
                             for t, v in passes)
        if n_out > MAX_WIDTH or p.n > MAX_WIDTH or (p.kind is not MapKind.SPARSE and not passes):
            check_dense_size(n_out, p.n, where)
        if passes:
            parts = [p.augmented()]
            for t, v in passes:
                aug = v.pending.augmented()
                if t != own:
                    parts.append(aug)
                if split[t]:
                    parts.append((-aug[0], None if aug[1] is None else -aug[1]))
            w, q = exact_vstack(parts)
            p = PendingMap(n=p.n, kind=MapKind.SPARSE, w=w, q=q)
        self.entries += p.w.nnz if p.kind is MapKind.SPARSE else n_out * p.n
        if self.entries > MAX_NETWORK_ENTRIES:
            raise UnsupportedModelError(
                f"{where}: the network has more than {MAX_NETWORK_ENTRIES:,} weights "
                "(equivcheck handles up to that many)"
            )
        self.layers.append(Layer(affine=p.to_affine(where), relu=relu, name=name))
        if not passes:
            self.pending = PendingMap(n=n_out)
            self.live = {}
            return
        self.pending = _units(n_out, np.arange(n_main), None)
        at = n_main
        for t, v in passes:
            k = v.pending.out_dim
            pos = np.arange(n_main) if t == own else np.arange(at, at + k)
            at += 0 if t == own else k
            neg = np.arange(at, at + k) if split[t] else None
            at += k if split[t] else 0
            v.pending = _units(n_out, pos, neg)
        self.live = dict(passes)


def _units(n: int, pos: np.ndarray, neg: np.ndarray | None) -> PendingMap:
    """The map on ``n`` units giving ``u[pos] - u[neg]`` (``neg`` None: ``u[pos]``)."""
    k = len(pos)
    rows, cols, vals = np.arange(k), pos, np.ones(k)
    if neg is not None:
        rows, cols, vals = np.r_[rows, np.arange(k)], np.r_[pos, neg], np.r_[vals, -np.ones(k)]
    w, _ = csr_from_coo(rows, cols, vals, (k, n + 1))
    return PendingMap(n=n, kind=MapKind.SPARSE, w=w)


def _append_column(lin: sp.csr_array, lin_q, col) -> tuple[sp.csr_array, np.ndarray | None]:
    """``[lin | col]`` as an exact sparse matrix (``col`` float64 or Fractions)."""
    m, k = lin.shape
    cm, cq = exact_column(np.asarray(col) if np.asarray(col).dtype == object else np.asarray(col, np.float64))
    rows = np.repeat(np.arange(m), np.diff(lin.indptr))
    exact = lin_q is not None or cq is not None
    return csr_from_coo(
        np.r_[rows, np.repeat(np.arange(m), np.diff(cm.indptr))], np.r_[lin.indices, np.full(cm.nnz, k)],
        np.r_[lin.data, cm.data], (m, k + 1),
        q=np.r_[exact_values(lin, lin_q), exact_values(cm, cq)] if exact else None)


# a sparse layer this small, or this dense, is stored dense
DENSE_LAYER_ENTRIES = 65_536


def _sparse_affine(w_aug: sp.csr_array, q, where: str) -> Affine:
    """The :class:`Affine` of an exact sparse map ``[W | b]``: sparse when large and mostly
    zero, else dense (exact rationals kept where the floats are not exact)."""
    w, wq, b = split_last_column(w_aug, q)
    rows, cols = w.shape
    if rows * cols <= DENSE_LAYER_ENTRIES or (w.nnz * 4 > rows * cols and rows * cols <= MAX_LAYER_ENTRIES):
        dense_w = to_dense(w, wq)
        w_near = _nearest_within_limit(dense_w, where, "weight")
        b_near = _nearest_within_limit(b, where, "bias")
        if wq is None and b.dtype != object:
            return Affine(w_near, b_near)
        return Affine(w_near, b_near, exact_weight=as_fraction_array(dense_w), exact_bias=as_fraction_array(b))
    _nearest_within_limit(wq if wq is not None else w.data, where, "weight")
    b_near = _nearest_within_limit(b, where, "bias")
    if wq is None and b.dtype != object:
        return Affine(w, b_near)
    return Affine(w, b_near, exact_weight=wq if wq is not None else fraction_array(w.data),
                  exact_bias=as_fraction_array(b))


def _is_float_exact(arr: np.ndarray) -> bool:
    """True when every entry is exactly a float64 (always for a float array)."""
    return arr.dtype != object or all(Fraction(float(v)) == v for v in arr.ravel())


def _nearest_within_limit(values: np.ndarray, where: str, what: str) -> np.ndarray:
    """float64 values (nearest floats of exact rationals), refusing any of magnitude beyond
    ``MAX_ABS_WEIGHT`` (a rational too large for a float64 included)."""
    if values.dtype == object:
        limit = Fraction(MAX_ABS_WEIGHT)
        big = max((abs(v) for v in values.ravel()), default=Fraction(0))
        if big > limit:
            raise ModelValueError(
                f"{where}: a {what} of magnitude {float(min(big, Fraction(10**300))):g}"
                f"{' or more' if big > 10**300 else ''} after folding, beyond the limit "
                f"{MAX_ABS_WEIGHT:g} for weights"
            )
        return nearest_float_array(values)
    out = np.asarray(values, dtype=np.float64)
    if out.size and float(np.max(np.abs(out))) > MAX_ABS_WEIGHT:
        raise ModelValueError(
            f"{where}: a {what} of {signed_max(out):g} after folding, beyond the magnitude limit "
            f"{MAX_ABS_WEIGHT:g} for weights"
        )
    return out


def _object_diag(v: np.ndarray) -> np.ndarray:
    """The diagonal matrix of a vector of Fractions, as an object array."""
    n = len(v)
    out = np.empty((n, n), dtype=object)
    out[:] = Fraction(0)
    for i in range(n):
        out[i, i] = v[i]
    return out
