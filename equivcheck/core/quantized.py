"""Quantized networks: a chain of affine+ReLU layers whose values are rounded to integer grids.

An ONNX ``QuantizeLinear`` followed by ``DequantizeLinear`` (what ``onnxruntime.quantization``
writes around every quantized tensor) maps a value ``v`` to

    Q(v) = s * (clip(round_half_even(v / s) + zp, qmin, qmax) - zp)

with scale ``s > 0``, integer zero point ``zp`` and the integer range ``[qmin, qmax]`` of the
integer type (uint8 [0, 255], int8 [-128, 127], ...). :class:`Quantizer` holds one ``(s, zp)``
per unit (a per-tensor quantization repeats the same pair) and evaluates ``Q`` exactly on
rationals and in float64.

A :class:`QuantizedNetwork` is a float :class:`~equivcheck.core.network.Network` (its affine
maps, dequantized weights included) plus the quantizers: an optional one on the input, and one
optional quantizer after each layer's activation, so layer ``k`` computes
``h_k = Q_k(relu(W_k h_{k-1} + b_k))`` (``Q_k(W_k h + b_k)`` without a ReLU).

It is deliberately *not* a :class:`Network`: it has no ``layers`` attribute, so no code written for
float networks can read its affine maps and silently drop the rounding. What can take one says so
(exact and float evaluation here, the prover's quantized path, the enclosure of
:mod:`equivcheck.bounds.enclosure`, the solver's encoding); everything else refuses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property

import numpy as np

from equivcheck.core.exact import affine_exact, relu_exact
from equivcheck.core.network import Network
from equivcheck.errors import ModelValueError, ShapeMismatchError


@dataclass(frozen=True, eq=False)
class Quantizer:
    """``Q(v) = s * (clip(round_half_even(v / s) + zp, qmin, qmax) - zp)`` unit by unit.

    ``scale`` is an object array of positive ``Fraction`` s (the stored float scales, exactly),
    ``zero_point`` an int64 array, both of the width ``n``; ``qmin <= zp <= qmax`` for every
    unit (zero is representable, as ONNX requires). ``name`` names the source node.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    qmin: int
    qmax: int
    name: str = ""

    def __post_init__(self) -> None:
        scale = np.empty(len(self.scale), dtype=object)
        scale[:] = [Fraction(v) for v in self.scale]
        zp = np.asarray(self.zero_point, dtype=np.int64).reshape(-1)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "zero_point", zp)
        object.__setattr__(self, "qmin", int(self.qmin))
        object.__setattr__(self, "qmax", int(self.qmax))
        where = f"quantizer {self.name!r}" if self.name else "quantizer"
        if scale.shape != zp.shape:
            raise ShapeMismatchError(f"{where}: {len(scale)} scales but {len(zp)} zero points")
        if self.qmin > self.qmax:
            raise ModelValueError(f"{where}: integer range [{self.qmin}, {self.qmax}] is empty")
        if any(s <= 0 for s in scale):
            bad = next(s for s in scale if s <= 0)
            raise ModelValueError(f"{where}: scale {float(bad)} is not positive")
        if np.any(zp < self.qmin) or np.any(zp > self.qmax):
            raise ModelValueError(f"{where}: a zero point lies outside [{self.qmin}, {self.qmax}]")

    @classmethod
    def uniform(cls, n: int, scale, zero_point: int, qmin: int, qmax: int, name: str = "") -> Quantizer:
        """One ``(scale, zero_point)`` for all ``n`` units (a per-tensor quantization)."""
        return cls(np.full(n, Fraction(scale), dtype=object), np.full(n, int(zero_point)), qmin, qmax, name)

    @property
    def n(self) -> int:
        return len(self.scale)

    # -- the grid ---------------------------------------------------------------------------
    @cached_property
    def scale_float(self) -> np.ndarray:
        """The scales as float64 (exact: they are stored floats)."""
        return np.array([float(s) for s in self.scale], dtype=np.float64)

    def lowest(self) -> np.ndarray:
        """``s * (qmin - zp)``, the smallest value ``Q`` gives, exactly (object array; computed
        once, not to be changed)."""
        return self._lowest

    def highest(self) -> np.ndarray:
        """``s * (qmax - zp)``, the largest value ``Q`` gives, exactly (object array; computed
        once, not to be changed)."""
        return self._highest

    @cached_property
    def _lowest(self) -> np.ndarray:
        return self.scale * (self.qmin - self.zero_point).astype(object)

    @cached_property
    def _highest(self) -> np.ndarray:
        return self.scale * (self.qmax - self.zero_point).astype(object)

    def same_as(self, other: Quantizer) -> bool:
        """True when both round every unit to the same grid and range."""
        return (self.n == other.n and self.qmin == other.qmin and self.qmax == other.qmax
                and bool(np.all(self.scale == other.scale))
                and bool(np.array_equal(self.zero_point, other.zero_point)))

    # -- evaluation -------------------------------------------------------------------------
    def apply_exact(self, v: Sequence) -> np.ndarray:
        """``Q(v)`` in exact rational arithmetic (``round`` of a Fraction rounds half to even)."""
        out = np.empty(self.n, dtype=object)
        for i, (x, s, zp) in enumerate(zip(v, self.scale, self.zero_point)):
            q = min(max(round(Fraction(x) / s) + int(zp), self.qmin), self.qmax)
            out[i] = s * (q - int(zp))
        return out

    def levels_exact(self, v: Sequence) -> list[int]:
        """The integers ``clip(round_half_even(v / s) + zp, qmin, qmax)`` (what QuantizeLinear
        stores), exactly."""
        return [min(max(round(Fraction(x) / s) + int(zp), self.qmin), self.qmax)
                for x, s, zp in zip(v, self.scale, self.zero_point)]

    def apply_float(self, v: np.ndarray) -> np.ndarray:
        """``Q(v)`` in float64 for values ``(..., n)`` (half to even as numpy rounds; the
        division ``v / s`` may round differently from the exact one at a tie: float evaluation
        ranks points, exact evaluation judges them)."""
        s = self.scale_float
        q = np.clip(np.rint(np.asarray(v, dtype=np.float64) / s) + self.zero_point, self.qmin, self.qmax)
        return (q - self.zero_point) * s


@dataclass(frozen=True, eq=False)
class QuantizedNetwork:
    """A :class:`Network` whose input and layer outputs are quantized (see the module doc).

    ``quant`` has one entry per layer of ``network`` (None: that layer's output is not
    quantized); ``input_quant`` quantizes the input (None: it is not). At least one quantizer
    is present.
    """

    network: Network
    quant: tuple[Quantizer | None, ...]
    input_quant: Quantizer | None = None
    quant_notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        net = self.network
        quant = tuple(self.quant)
        object.__setattr__(self, "quant", quant)
        if len(quant) != len(net.layers):
            raise ShapeMismatchError(f"{net.source}: {len(quant)} quantizers for {len(net.layers)} layers")
        for k, (layer, q) in enumerate(zip(net.layers, quant)):
            if q is not None and q.n != layer.out_dim:
                raise ShapeMismatchError(
                    f"{net.source}: the quantizer after layer {k} ({layer.name}) has {q.n} units, "
                    f"the layer {layer.out_dim}")
        if self.input_quant is not None and self.input_quant.n != net.in_dim:
            raise ShapeMismatchError(f"{net.source}: the input quantizer has {self.input_quant.n} "
                                     f"units, the input {net.in_dim}")
        if self.input_quant is None and all(q is None for q in quant):
            raise ShapeMismatchError(f"{net.source}: a quantized network without a quantizer")

    # -- the model interface, as Network has it ------------------------------------------
    @property
    def in_dim(self) -> int:
        return self.network.in_dim

    @property
    def out_dim(self) -> int:
        return self.network.out_dim

    @property
    def source(self) -> str:
        return self.network.source

    @property
    def input_name(self) -> str:
        return self.network.input_name

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.network.input_shape

    @property
    def input_dtype(self) -> str:
        return self.network.input_dtype

    @property
    def output_name(self) -> str:
        return self.network.output_name

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.network.output_shape

    @property
    def notes(self) -> tuple[str, ...]:
        """The float network's notes, then the quantization's."""
        return self.network.notes + self.quant_notes

    @property
    def quantized_units(self) -> int:
        """How many values are rounded (input included)."""
        return sum(q.n for q in self.quantizers())

    def quantizers(self) -> list[Quantizer]:
        """Every quantizer, input first."""
        return [q for q in (self.input_quant, *self.quant) if q is not None]

    @cached_property
    def description(self) -> str:
        return f"{self.network.description} (quantized: {self.quantized_units:,} values rounded)"

    # -- evaluation -----------------------------------------------------------------------
    def evaluate(self, x: np.ndarray) -> np.ndarray:
        """Float64 outputs for a flat input ``(in_dim,)`` or a batch ``(n, in_dim)`` (rounding
        as :meth:`Quantizer.apply_float`)."""
        h = np.asarray(x, dtype=np.float64)
        single = h.ndim == 1
        if single:
            h = h[None, :]
        if self.input_quant is not None:
            h = self.input_quant.apply_float(h)
        for layer, q in zip(self.network.layers, self.quant):
            h = h @ layer.weight.T + layer.bias
            if layer.relu:
                h = np.maximum(h, 0.0)
            if q is not None:
                h = q.apply_float(h)
        return h[0] if single else h

    def evaluate_exact(self, x: Sequence[Fraction | float | int]) -> list[Fraction]:
        """Outputs in exact rational arithmetic on the stored weights and scales, for one flat
        input (floats are taken exactly)."""
        if len(x) != self.in_dim:
            raise ShapeMismatchError(f"{self.source}: input has {len(x)} values, expected {self.in_dim}")
        h = np.empty(len(x), dtype=object)
        h[:] = [v if isinstance(v, (Fraction, int)) else Fraction(float(v)) for v in x]
        if self.input_quant is not None:
            h = self.input_quant.apply_exact(h)
        for layer, q in zip(self.network.layers, self.quant):
            h = affine_exact(layer.affine, h)
            if layer.relu:
                h = relu_exact(h)
            if q is not None:
                h = q.apply_exact(h)
        return list(h)


def is_quantized(net) -> bool:
    """True for a :class:`QuantizedNetwork`."""
    return isinstance(net, QuantizedNetwork)


def float_layers(net) -> Network:
    """The float chain of a network: a :class:`QuantizedNetwork`'s ``network`` (its layers
    without the rounding), or a :class:`Network` itself."""
    return net.network if isinstance(net, QuantizedNetwork) else net
