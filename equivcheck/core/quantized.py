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

A *dynamic* quantizer (:class:`DynamicQuantizer`, what ``onnxruntime.quantization.quantize_dynamic``
writes as ``DynamicQuantizeLinear``) computes its one scale from the whole vector at run time:
``s = (max(0, max v) - min(0, min v)) / (qmax - qmin)``, then rounds like ``Q`` with that scale
and the zero point ``zp = round_half_even(clip(qmin - min(0, min v) / s, qmin, qmax))``.
Its rounding error is at most ``s / 2`` per value (:meth:`DynamicQuantizer.apply_exact`).

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
from equivcheck.core.rational import float_up
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
        return (isinstance(other, Quantizer) and self.n == other.n and self.qmin == other.qmin and self.qmax == other.qmax
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
class DynamicQuantizer:
    """``DynamicQuantizeLinear`` then its dequantization, on a whole vector of ``n`` values.

    For ``v`` (the whole tensor), with ``lo = min(0, min v)``, ``hi = max(0, max v)``:
    ``s = (hi - lo) / (qmax - qmin)`` (an exact Fraction here; onnxruntime computes it in
    float32), ``zp = round_half_even(clip(qmin - lo / s, qmin, qmax))`` and
    ``D(v)_i = s * (clip(round_half_even(v_i / s) + zp, qmin, qmax) - zp)``; ``D(0) = 0``
    (``s = 0``: onnxruntime then stores scale 1, zero point 0 and every level 0, so its
    output is 0 too).

    Not a :class:`Quantizer` (it has no fixed ``scale``, ``zero_point``, ``lowest`` or
    ``highest``): code written for static grids cannot take it for one.

    Facts the bounds use (all exact): ``|D(v)_i - v_i| <= s / 2`` (unclipped: a rounding;
    clipped at the top, ``qmax - zp >= v_i / s - 1/2`` because ``zp <= qmin - lo / s + 1/2``
    and ``v_i <= hi``; the bottom likewise), ``D(v)_i`` has the sign of ``v_i`` (or is 0: the
    zero point lies in ``[qmin, qmax]``, so ``v_i = 0`` gives exactly 0), and ``s`` is monotone
    in the box of the vector (:meth:`scale_bound`).
    """

    n: int
    qmin: int = 0
    qmax: int = 255
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "qmin", int(self.qmin))
        object.__setattr__(self, "qmax", int(self.qmax))
        if self.qmin >= self.qmax or self.qmin > 0 or self.qmax < 0:
            raise ModelValueError(f"dynamic quantizer {self.name!r}: integer range "
                                  f"[{self.qmin}, {self.qmax}] does not hold 0 and one step")

    def same_as(self, other) -> bool:
        """True when ``other`` is the same map (a dynamic quantizer of the same width and range)."""
        return (isinstance(other, DynamicQuantizer) and self.n == other.n
                and self.qmin == other.qmin and self.qmax == other.qmax)

    def scale_exact(self, v: Sequence) -> Fraction:
        """The scale ``s`` of the vector ``v``, exactly (0 when ``v`` is all zeros)."""
        vals = [Fraction(x) for x in v]
        lo, hi = min([Fraction(0), *vals]), max([Fraction(0), *vals])
        return (hi - lo) / (self.qmax - self.qmin)

    def zero_point_exact(self, v: Sequence) -> int:
        """The zero point of the vector ``v`` (0 when ``s`` is 0)."""
        vals = [Fraction(x) for x in v]
        s = self.scale_exact(vals)
        if s == 0:
            return 0
        lo = min([Fraction(0), *vals])
        return round(min(max(self.qmin - lo / s, Fraction(self.qmin)), Fraction(self.qmax)))

    def levels_exact(self, v: Sequence) -> list[int]:
        """The stored integers ``clip(round_half_even(v_i / s) + zp, qmin, qmax)``, exactly."""
        vals = [Fraction(x) for x in v]
        s = self.scale_exact(vals)
        if s == 0:
            return [0] * len(vals)
        zp = self.zero_point_exact(vals)
        return [min(max(round(x / s) + zp, self.qmin), self.qmax) for x in vals]

    def apply_exact(self, v: Sequence) -> np.ndarray:
        """``D(v)`` in exact rational arithmetic (an object array of Fractions)."""
        vals = [Fraction(x) for x in v]
        if len(vals) != self.n:
            raise ShapeMismatchError(f"dynamic quantizer {self.name!r}: {len(vals)} values, expected {self.n}")
        s = self.scale_exact(vals)
        out = np.empty(self.n, dtype=object)
        if s == 0:
            out[:] = [Fraction(0)] * self.n
            return out
        zp = self.zero_point_exact(vals)
        out[:] = [s * (q - zp) for q in self.levels_exact(vals)]
        return out

    def apply_float(self, v: np.ndarray) -> np.ndarray:
        """``D(v)`` in float64 for values ``(..., n)``, each row its own vector (the same formula;
        float evaluation ranks points, exact evaluation judges them)."""
        x = np.asarray(v, dtype=np.float64)
        lo = np.minimum(x.min(axis=-1, keepdims=True), 0.0)
        hi = np.maximum(x.max(axis=-1, keepdims=True), 0.0)
        s = (hi - lo) / (self.qmax - self.qmin)
        safe = np.where(s > 0, s, 1.0)
        zp = np.rint(np.clip(self.qmin - lo / safe, self.qmin, self.qmax))
        q = np.clip(np.rint(x / safe) + zp, self.qmin, self.qmax)
        return np.where(s > 0, (q - zp) * s, 0.0)

    def scale_bound(self, lo: np.ndarray, hi: np.ndarray) -> float:
        """An upper bound (rounded up) of ``s`` over every vector ``v`` with ``lo <= v <= hi``
        (float bounds of the whole vector): ``s`` grows with ``max v`` and falls with ``min v``."""
        top = max(0.0, float(np.max(hi))) if len(hi) else 0.0
        bottom = min(0.0, float(np.min(lo))) if len(lo) else 0.0
        if not (np.isfinite(top) and np.isfinite(bottom)):
            return float("inf")
        return float_up((Fraction(top) - Fraction(bottom)) / (self.qmax - self.qmin))

    def half_bound(self, lo: np.ndarray, hi: np.ndarray) -> float:
        """An upper bound (rounded up) of the rounding error ``|D(v)_i - v_i| <= s / 2`` over
        every vector in ``[lo, hi]``."""
        s = self.scale_bound(lo, hi)
        return float(np.nextafter(s / 2, np.inf)) if np.isfinite(s) else s


AnyQuantizer = Quantizer | DynamicQuantizer


def is_dynamic(q) -> bool:
    """True for a :class:`DynamicQuantizer` (a scale computed from the data at run time)."""
    return isinstance(q, DynamicQuantizer)


@dataclass(frozen=True, eq=False)
class QuantizedNetwork:
    """A :class:`Network` whose input and layer outputs are quantized (see the module doc).

    ``quant`` has one entry per layer of ``network`` (None: that layer's output is not
    quantized); ``input_quant`` quantizes the input (None: it is not). At least one quantizer
    is present.
    """

    network: Network
    quant: tuple[AnyQuantizer | None, ...]
    input_quant: AnyQuantizer | None = None
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

    def quantizers(self) -> list[AnyQuantizer]:
        """Every quantizer, input first."""
        return [q for q in (self.input_quant, *self.quant) if q is not None]

    @property
    def dynamic(self) -> bool:
        """True when some quantizer is dynamic (its scale computed from the data)."""
        return any(is_dynamic(q) for q in self.quantizers())

    @cached_property
    def description(self) -> str:
        kind = "dynamically quantized" if self.dynamic else "quantized"
        return f"{self.network.description} ({kind}: {self.quantized_units:,} values rounded)"

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
