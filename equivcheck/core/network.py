"""The network representation every step of the pipeline shares.

A :class:`Network` is a straight chain of :class:`Layer` objects; each layer is one affine map
``z = W h + b`` optionally followed by a ReLU. The weights are exactly the values stored in the
model file: float32 or float64 numbers held in float64 arrays (every float32 is exactly a float64).
Where importing had to combine two affine operations and the float64 result is not exact (division
by a normalisation constant, say), the layer also carries the exact rational weights, and every
exact computation (:meth:`Network.evaluate_exact`, the solver encoding) uses those.

Size and magnitude limits (enforced by the importer before anything dense is allocated; other
builders of networks may check against them with :func:`check_dense_size`):

* ``MAX_WIDTH``: at most 100,000 values in the input or in any layer. Exact verification of a
  ReLU network this wide is far out of reach, and memory runs out first: before this limit,
  ``prove`` on a 5-200,000-5 network (2 million weights) used 12.7 GB.
* ``MAX_LAYER_ENTRIES``: at most 10,000,000 weights in one dense layer, ``MAX_NETWORK_ENTRIES``:
  50,000,000 in the whole network. Exact arithmetic keeps a Python rational or integer of
  50-100 bytes per weight; past these the import or the proof runs out of memory.
  (The largest model in the test corpus, mnist 256x6, has 200,704 weights in its largest layer.)
* ``MAX_ABS_WEIGHT``: every weight and bias has magnitude at most 1e30. That is below float32's
  largest value (3.4e38), so an accepted network exported as float32 keeps finite weights, and it
  leaves float64 bounds room for (width x 1e30)^depth growth over several layers: two consecutive
  layers of 1e30 weights prove and refute in every mode and bound method, while two of 1e200
  overflowed float64 (1e400) and crashed the bounds. Trained networks are many orders of
  magnitude below it (the largest weight in the test corpus is 32.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property

import numpy as np

from equivcheck.core import matrix
from equivcheck.core.exact import dyadic_matrix, pre_activations_exact, relu_exact
from equivcheck.core.rational import fraction_array
from equivcheck.errors import ModelValueError, ShapeMismatchError, UnsupportedModelError

MAX_WIDTH = 100_000
MAX_LAYER_ENTRIES = 10_000_000
MAX_NETWORK_ENTRIES = 50_000_000
MAX_ABS_WEIGHT = 1e30


def check_dense_size(rows: int, cols: int, where: str) -> None:
    """Raise :class:`UnsupportedModelError` naming ``where`` when a dense ``rows x cols`` layer
    would exceed ``MAX_WIDTH`` or ``MAX_LAYER_ENTRIES``; call it *before* allocating the matrix.
    """
    rows, cols = int(rows), int(cols)
    if rows > MAX_WIDTH or cols > MAX_WIDTH:
        raise UnsupportedModelError(
            f"{where}: a layer of width {max(rows, cols):,} is too large "
            f"(equivcheck handles widths up to {MAX_WIDTH:,})"
        )
    if rows * cols > MAX_LAYER_ENTRIES:
        raise UnsupportedModelError(
            f"{where}: a dense {rows:,} x {cols:,} layer ({rows * cols:,} weights) is too large "
            f"(equivcheck handles up to {MAX_LAYER_ENTRIES:,} weights per layer)"
        )


@dataclass(frozen=True, eq=False)
class Affine:
    """``z = weight @ h + bias`` with ``weight`` of shape (out, in).

    ``weight`` is a dense float64 array or a sparse ``scipy.sparse.csr_array`` of float64 (see
    :mod:`equivcheck.core.matrix`; made canonical here); ``bias`` is a dense float64 vector.
    ``exact_weight``/``exact_bias`` are object arrays of ``Fraction`` when the float64 values
    are not the exact ones, else ``None``; for a sparse weight, ``exact_weight`` is aligned
    with ``weight.data`` (one exact value per stored entry).
    """

    weight: np.ndarray
    bias: np.ndarray
    exact_weight: np.ndarray | None = None
    exact_bias: np.ndarray | None = None

    def __post_init__(self) -> None:
        w, b = self.weight, self.bias
        if matrix.is_sparse(w):
            w = matrix.as_csr(w)
            object.__setattr__(self, "weight", w)
            if self.exact_weight is not None and len(self.exact_weight) != w.nnz:
                raise ShapeMismatchError(
                    f"sparse affine layer has {w.nnz} stored weights but "
                    f"{len(self.exact_weight)} exact values"
                )
        if w.ndim != 2 or b.ndim != 1 or w.shape[0] != b.shape[0]:
            raise ShapeMismatchError(
                f"affine layer has weight shape {w.shape} and bias shape {b.shape}"
            )
        if not (matrix.all_finite(w) and np.all(np.isfinite(b))):
            raise ModelValueError("affine layer has NaN or infinite weights")

    @property
    def in_dim(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_dim(self) -> int:
        return int(self.weight.shape[0])

    @property
    def is_sparse(self) -> bool:
        """True when the weight is a sparse ``csr_array``."""
        return matrix.is_sparse(self.weight)

    @property
    def is_exact_float(self) -> bool:
        """True when the float64 arrays are the exact weights."""
        return self.exact_weight is None and self.exact_bias is None

    def rational_weight(self) -> np.ndarray:
        """Exact weights as an object array of ``Fraction`` (computed once); for a sparse
        weight, one value per stored entry, aligned with ``weight.data``."""
        return self.exact_weight if self.exact_weight is not None else self._fraction_weight

    def rational_bias(self) -> np.ndarray:
        """Exact bias as an object array of ``Fraction`` (computed once)."""
        return self.exact_bias if self.exact_bias is not None else self._fraction_bias

    @cached_property
    def _fraction_weight(self) -> np.ndarray:
        return fraction_array(matrix.values(self.weight).reshape(
            (-1,) if self.is_sparse else self.weight.shape))

    @cached_property
    def _fraction_bias(self) -> np.ndarray:
        return fraction_array(self.bias)

    def dense_rational_weight(self) -> np.ndarray:
        """Exact weights as a dense ``(out, in)`` object array of ``Fraction`` (for a sparse
        weight, built entry by entry; refused past ``matrix.MAX_DENSE_ENTRIES``)."""
        if not self.is_sparse:
            return self.rational_weight()
        w = self.weight
        if w.shape[0] * w.shape[1] > matrix.MAX_DENSE_ENTRIES:
            matrix.dense(w, "exact weights")  # raises, naming the size
        out = np.full(w.shape, Fraction(0), dtype=object)
        rows = np.repeat(np.arange(w.shape[0]), np.diff(w.indptr))
        out[rows, w.indices] = self.rational_weight()
        return out

    def _exact_entries(self) -> dict[tuple[int, int], Fraction]:
        """The nonzero exact weights by ``(row, column)`` (memory linear in the stored ones)."""
        w = self.weight
        if self.is_sparse:
            rows = np.repeat(np.arange(w.shape[0]), np.diff(w.indptr))
            cols, vals = w.indices, self.rational_weight()
        else:
            rows, cols = np.nonzero(np.ones(w.shape, dtype=bool))
            vals = np.asarray(self.rational_weight()).ravel()
        return {(int(r), int(c)): v for r, c, v in zip(rows, cols, vals) if v != 0}

    @cached_property
    def dyadic_weight(self) -> tuple[np.ndarray, int] | None:
        """``(M, e)`` with integer matrix M (object array) and W = M * 2**e exactly, or None.

        Only for float weights (every float is a dyadic rational); lets exact evaluation use
        Python integers instead of ``Fraction`` objects. For a sparse weight, ``M`` is a vector
        aligned with ``weight.data``.
        """
        if not self.is_exact_float:
            return None
        return dyadic_matrix(self.weight.data if self.is_sparse else self.weight)

    def same_as(self, other: Affine) -> bool:
        """True when both maps have exactly the same weights and biases."""
        if self.weight.shape != other.weight.shape:
            return False
        floats_equal = matrix.same_entries(self.weight, other.weight) and np.array_equal(
            self.bias, other.bias)
        if (self.is_exact_float and other.is_exact_float) or not floats_equal:
            return floats_equal  # exact floats, or the nearest floats already differ
        if self.is_sparse or other.is_sparse:  # compared entry by entry, nothing dense
            return bool(self._exact_entries() == other._exact_entries()
                        and np.all(self.rational_bias() == other.rational_bias()))
        return bool(
            np.all(self.rational_weight() == other.rational_weight())
            and np.all(self.rational_bias() == other.rational_bias())
        )


@dataclass(frozen=True, eq=False)
class Layer:
    """One affine map, then a ReLU when ``relu`` is true. ``name`` names the source node(s)."""

    affine: Affine
    relu: bool
    name: str = ""

    @property
    def weight(self) -> np.ndarray:
        return self.affine.weight

    @property
    def bias(self) -> np.ndarray:
        return self.affine.bias

    @property
    def out_dim(self) -> int:
        return self.affine.out_dim

    @property
    def in_dim(self) -> int:
        return self.affine.in_dim


@dataclass(frozen=True, eq=False)
class Network:
    """A straight-chain ReLU network over a flat input vector.

    ``input_shape``/``output_shape`` are the tensor shapes of the source model (symbolic
    dimensions as -1); the network itself maps a flat vector of ``in_dim`` values to a flat
    vector of ``out_dim`` values in C order. ``notes`` record anything the import could not
    keep exact (for example a BatchNormalization folded in float64).
    """

    layers: tuple[Layer, ...]
    input_name: str = "input"
    input_shape: tuple[int, ...] = ()
    input_dtype: str = "float32"
    output_name: str = "output"
    output_shape: tuple[int, ...] = ()
    source: str = "<memory>"
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.layers:
            raise ShapeMismatchError(f"{self.source}: the network has no affine layer")
        for k in range(1, len(self.layers)):
            prev, cur = self.layers[k - 1], self.layers[k]
            if prev.out_dim != cur.in_dim:
                raise ShapeMismatchError(
                    f"{self.source}: layer {k} ({cur.name}) takes {cur.in_dim} inputs but "
                    f"layer {k - 1} ({prev.name}) gives {prev.out_dim}"
                )

    @property
    def in_dim(self) -> int:
        return self.layers[0].in_dim

    @property
    def out_dim(self) -> int:
        return self.layers[-1].out_dim

    @property
    def hidden_widths(self) -> tuple[int, ...]:
        """Widths of the layers followed by a ReLU."""
        return tuple(layer.out_dim for layer in self.layers if layer.relu)

    @property
    def num_relus(self) -> int:
        return sum(self.hidden_widths)

    @property
    def num_parameters(self) -> int:
        return sum(matrix.stored_entries(layer.weight) + layer.bias.size for layer in self.layers)

    def evaluate(self, x: np.ndarray) -> np.ndarray:
        """Float64 outputs for a flat input (shape ``(in_dim,)``) or a batch ``(n, in_dim)``."""
        h = np.asarray(x, dtype=np.float64)
        single = h.ndim == 1
        if single:
            h = h[None, :]
        for layer in self.layers:
            h = h @ layer.weight.T + layer.bias
            if layer.relu:
                h = np.maximum(h, 0.0)
        return h[0] if single else h

    def pre_activations(self, x: np.ndarray) -> list[np.ndarray]:
        """Float64 pre-activation values of every layer for a batch ``(n, in_dim)``."""
        h = np.atleast_2d(np.asarray(x, dtype=np.float64))
        out = []
        for layer in self.layers:
            z = h @ layer.weight.T + layer.bias
            out.append(z)
            h = np.maximum(z, 0.0) if layer.relu else z
        return out

    def evaluate_exact(self, x: Sequence[Fraction | float | int]) -> list[Fraction]:
        """Outputs in exact rational arithmetic on the stored weights, for one flat input."""
        z = self.pre_activations_exact(x)[-1]
        return list(relu_exact(z) if self.layers[-1].relu else z)

    def pre_activations_exact(self, x: Sequence[Fraction | float | int]) -> list[np.ndarray]:
        """Pre-activation values of every layer in exact rational arithmetic on the stored
        weights, for one flat input (floats are taken exactly)."""
        if len(x) != self.in_dim:
            raise ShapeMismatchError(f"{self.source}: input has {len(x)} values, expected {self.in_dim}")
        return pre_activations_exact(self.layers, x)

    def with_layers(self, layers: Sequence[Layer], note: str | None = None) -> Network:
        """The same model interface with other layers (used by transformations)."""
        notes = self.notes + ((note,) if note else ())
        return Network(
            layers=tuple(layers),
            input_name=self.input_name,
            input_shape=self.input_shape,
            input_dtype=self.input_dtype,
            output_name=self.output_name,
            output_shape=self.output_shape,
            source=self.source,
            notes=notes,
        )

    @cached_property
    def description(self) -> str:
        widths = [self.in_dim] + [layer.out_dim for layer in self.layers]
        return "-".join(str(w) for w in widths)


def same_widths(a, b) -> bool:
    """Whether ``a`` and ``b`` have as many layers, each of the same width (as a pruned,
    quantized or fine-tuned copy has; removing or folding units changes them)."""
    la, lb = getattr(a, "layers", None), getattr(b, "layers", None)
    if la is None or lb is None:
        return False
    return len(la) == len(lb) and all(x.out_dim == y.out_dim for x, y in zip(la, lb))
