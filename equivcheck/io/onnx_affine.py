"""The data path while an ONNX graph is imported: the affine map pending since the last ReLU,
composed exactly, and the layers closed so far.

Affine operations between two ReLUs are composed into one affine map. Composition is exact:
whenever the float64 result of a composition might round, it is recomputed in rational
arithmetic and the layer keeps the exact rationals (with their nearest floats beside them).
Stored floats that are not composed with anything are kept exactly as they are.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from equivcheck.core.network import (
    MAX_ABS_WEIGHT,
    MAX_NETWORK_ENTRIES,
    Affine,
    Layer,
    check_dense_size,
)
from equivcheck.core.rational import as_fraction_array, fraction_array, nearest_float_array
from equivcheck.errors import ModelValueError, ShapeMismatchError, UnsupportedModelError
from equivcheck.io.onnx_graph import GraphContext, signed_max

# Large rational matrix products are slow in Python; past this many multiply-adds we refuse
# to merge two dense maps instead of silently rounding them.
MAX_EXACT_PRODUCT = 5_000_000


class MapKind(enum.Enum):
    """The shape of a pending affine map's weight."""

    IDENTITY = "identity"  # no weight
    DIAG = "diag"  # ``w`` is the diagonal, a vector
    DENSE = "dense"  # ``w`` is a matrix


@dataclass
class PendingMap:
    """The affine map from the last anchor (network input or ReLU output) to the data tensor,
    on ``n`` flat inputs.

    ``w`` and ``b`` are float64 when ``exact`` is False; otherwise object arrays of Fractions.
    """

    n: int
    kind: MapKind = MapKind.IDENTITY
    w: np.ndarray | None = None
    b: np.ndarray | None = None
    exact: bool = False

    @property
    def out_dim(self) -> int:
        return self.n if self.kind is not MapKind.DENSE else self.w.shape[0]

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
class DataPath:
    """The single data path being walked: the name of its current tensor, the tensor's shape and
    float type, the pending affine map, and the layers and notes gathered so far."""

    ctx: GraphContext
    tensor: str
    shape: tuple[int, ...]
    dtype: str
    pending: PendingMap
    layers: list[Layer] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    entries: int = 0  # weights of the layers closed so far

    def where(self, node) -> str:
        return self.ctx.where(node)

    def typed_const(self, node, name: str) -> np.ndarray:
        """A constant operand of an arithmetic operator: it must have the data's float type
        (ONNX binds both operands to one type; onnxruntime refuses a model that mixes them)."""
        c = self.ctx.const(node, name)
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

    def close_layer(self, relu: bool, name: str) -> None:
        """Turn the pending affine map into a layer (with a ReLU when ``relu``).

        Refuses (before allocating it) a layer past the size limits, and a layer whose folded
        weights or biases exceed ``MAX_ABS_WEIGHT`` in magnitude.
        """
        p = self.pending
        n_out = p.out_dim
        where = f"{self.ctx.label}: layer '{name}'"
        check_dense_size(n_out, p.n, where)
        self.entries += n_out * p.n
        if self.entries > MAX_NETWORK_ENTRIES:
            raise UnsupportedModelError(
                f"{where}: the network has more than {MAX_NETWORK_ENTRIES:,} weights "
                "(equivcheck handles up to that many)"
            )
        self.layers.append(Layer(affine=p.to_affine(where), relu=relu, name=name))
        self.pending = PendingMap(n=n_out)


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
