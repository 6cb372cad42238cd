"""ONNX import: a straight-chain ONNX graph becomes a :class:`~equivcheck.network.Network`.

The importer walks the graph once, following the single data path from the graph input. Every
operator on that path is either affine in the data (MatMul, Gemm, Add/Sub/Mul/Div by a constant,
BatchNormalization, reshapes, Transpose, Identity, Dropout, Cast to float) or a Relu. Affine
operations between two ReLUs are composed into one affine map. Composition is exact: whenever
the float64 result of a composition might round, it is recomputed in rational arithmetic and the
layer keeps the exact rationals. The one exception is BatchNormalization, whose ``1/sqrt(var+eps)``
is irrational: it is folded in float64 and the network carries a note saying so.

Anything else on the data path is an :class:`UnsupportedModelError` naming the operator and node.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Union

import numpy as np

from .errors import ModelFileError, ModelValueError, ShapeMismatchError, UnsupportedModelError
from .network import Affine, Layer, Network, fraction_array, nearest_float_array

ModelLike = Union[str, os.PathLike, "onnx.ModelProto"]  # noqa: F821

NON_RELU_ACTIVATIONS = {
    "Sigmoid", "Tanh", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "HardSigmoid",
    "HardSwish", "Softplus", "Softsign", "Softmax", "LogSoftmax", "Clip", "ThresholdedRelu",
    "Mish", "Swish", "Sin", "Cos", "Exp", "Log", "Abs", "Sqrt", "Erf",
}
PASS_THROUGH = {"Identity", "Dropout"}
# Large rational matrix products are slow in Python; past this many multiply-adds we refuse
# to merge two dense maps instead of silently rounding them.
MAX_EXACT_PRODUCT = 5_000_000
FLOAT_TYPES = {1: "float32", 11: "float64"}


def load_model(model: ModelLike) -> "onnx.ModelProto":  # noqa: F821
    """Read an ONNX model from a path (or pass a ``ModelProto`` through)."""
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.exists():
        raise ModelFileError(f"{path}: no such file")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a directory, not an ONNX model")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # protobuf raises several unrelated types
        raise ModelFileError(f"{path}: not a valid ONNX model ({type(exc).__name__})") from None
    if not proto.graph.node and not proto.graph.output:
        raise ModelFileError(f"{path}: not a valid ONNX model (empty graph)")
    return proto


def load_network(model: ModelLike, name: str | None = None) -> Network:
    """Import an ONNX model (path or ``ModelProto``) as a :class:`Network`.

    Promises: the network computes, in exact arithmetic, the function the ONNX graph defines on
    its stored weights (up to float64 folding of BatchNormalization, recorded in ``notes``).
    Raises an :class:`~equivcheck.errors.InputError` subclass naming the file, node or value
    for anything it cannot import.
    """
    import onnx

    label = name or (str(model) if not isinstance(model, onnx.ModelProto) else "<model>")
    proto = load_model(model)
    return _Importer(proto, label).run()


# --------------------------------------------------------------------------------------------
# pending affine maps between two ReLUs


@dataclass
class _Pending:
    """The affine map from the last anchor (network input or ReLU output) to the data tensor.

    ``kind`` is "identity", "diag" (``w`` is a vector) or "dense" (``w`` is a matrix). ``w`` and
    ``b`` are float64 when ``exact`` is False; otherwise object arrays of Fractions.
    """

    n: int
    kind: str = "identity"
    w: np.ndarray | None = None
    b: np.ndarray | None = None
    exact: bool = False

    @property
    def out_dim(self) -> int:
        return self.n if self.kind != "dense" else self.w.shape[0]

    def bias(self) -> np.ndarray:
        if self.b is None:
            return np.zeros(self.out_dim)
        return self.b

    def to_fractions(self) -> None:
        """Switch to exact rational arrays (from here on every composition is exact)."""
        if self.w is not None and self.w.dtype != object:
            self.w = fraction_array(self.w)
        if self.b is not None and self.b.dtype != object:
            self.b = fraction_array(self.b)
        self.exact = True


def _is_float_exact(values: np.ndarray) -> bool:
    return all(Fraction(float(v)) == v for v in values.ravel())


def _to_float_if_exact(arr: np.ndarray | None) -> tuple[np.ndarray | None, bool]:
    if arr is None or arr.dtype != object:
        return arr, True
    if _is_float_exact(arr):
        return nearest_float_array(arr), True
    return arr, False


class _Importer:
    def __init__(self, proto, label: str) -> None:
        self.proto = proto
        self.label = label
        self.graph = proto.graph
        self.consts: dict[str, np.ndarray] = {}
        self.layers: list[Layer] = []
        self.notes: list[str] = []
        self.layer_nodes: list[str] = []

    # -- helpers -------------------------------------------------------------------------------
    def where(self, node) -> str:
        return f"{self.label}: node '{node.name or node.output[0]}' ({node.op_type})"

    def const(self, node, name: str) -> np.ndarray:
        if name not in self.consts:
            raise UnsupportedModelError(
                f"{self.where(node)}: input '{name}' is neither a constant nor the data path "
                "(branching graphs are not supported)"
            )
        value = self.consts[name]
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            bad = value.ravel()[~np.isfinite(value.ravel())][0]
            raise ModelValueError(f"{self.where(node)}: constant '{name}' contains {bad}")
        return value

    # -- main walk -----------------------------------------------------------------------------
    def run(self) -> Network:
        from onnx import numpy_helper

        g = self.graph
        for init in g.initializer:
            try:
                self.consts[init.name] = numpy_helper.to_array(init)
            except Exception as exc:
                raise ModelFileError(
                    f"{self.label}: initializer '{init.name}' cannot be read ({exc})"
                ) from None
        inputs = [i for i in g.input if i.name not in self.consts]
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs) or "none"
            raise UnsupportedModelError(
                f"{self.label}: expected exactly one graph input, found {len(inputs)} ({names})"
            )
        if len(g.output) != 1:
            raise UnsupportedModelError(
                f"{self.label}: expected exactly one graph output, found {len(g.output)}"
            )
        inp = inputs[0]
        ttype = inp.type.tensor_type
        if ttype.elem_type not in FLOAT_TYPES:
            raise UnsupportedModelError(
                f"{self.label}: input '{inp.name}' has element type {ttype.elem_type}; "
                "only float32 and float64 inputs are supported"
            )
        in_shape = tuple(
            d.dim_value if d.HasField("dim_value") else -1 for d in ttype.shape.dim
        )
        shape = tuple(1 if d <= 0 else d for d in in_shape)
        n_in = int(np.prod(shape)) if shape else 1
        self.data = inp.name
        self.shape = shape
        self.pending = _Pending(n=n_in)
        self.anchor_dim = n_in

        for node in g.node:
            self.visit(node)

        out = g.output[0]
        if out.name != self.data:
            if out.name in self.consts:
                raise UnsupportedModelError(
                    f"{self.label}: output '{out.name}' does not depend on the input"
                )
            raise UnsupportedModelError(
                f"{self.label}: output '{out.name}' is not at the end of the data path "
                f"(the path ends at '{self.data}')"
            )
        if self.pending.kind != "identity" or self.pending.b is not None or not self.layers:
            self.close_layer(relu=False, name="output")
        out_t = out.type.tensor_type
        out_shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in out_t.shape.dim)
        if not out_shape:
            out_shape = tuple(self.shape)
        return Network(
            layers=tuple(self.layers),
            input_name=inp.name,
            input_shape=in_shape,
            input_dtype=FLOAT_TYPES[ttype.elem_type],
            output_name=out.name,
            output_shape=out_shape,
            source=self.label,
            notes=tuple(self.notes),
        )

    def visit(self, node) -> None:
        op = node.op_type
        data_inputs = [i for i in node.input if i == self.data]
        if not data_inputs:
            self.fold_constant(node)
            return
        if len(data_inputs) > 1:
            raise UnsupportedModelError(
                f"{self.where(node)}: uses the data tensor twice (only constant operands are supported)"
            )
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedModelError(
                f"{self.where(node)}: operator from domain '{node.domain}' is not supported"
            )
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            if op in NON_RELU_ACTIVATIONS:
                raise UnsupportedModelError(
                    f"{self.where(node)}: activation {op} is not supported (only Relu)"
                )
            raise UnsupportedModelError(f"{self.where(node)}: operator {op} is not supported")
        handler(node)
        self.data = node.output[0]

    def fold_constant(self, node) -> None:
        """Evaluate a node whose inputs are all constants (shape arithmetic, Constant nodes)."""
        if node.op_type == "Constant":
            from onnx import helper, numpy_helper

            for attr in node.attribute:
                if attr.name == "value":
                    self.consts[node.output[0]] = numpy_helper.to_array(attr.t)
                    return
                if attr.name in ("value_float", "value_int", "value_floats", "value_ints"):
                    self.consts[node.output[0]] = np.array(helper.get_attribute_value(attr))
                    return
            raise UnsupportedModelError(f"{self.where(node)}: unsupported Constant attribute")
        if node.op_type == "Shape":
            raise UnsupportedModelError(f"{self.where(node)}: Shape of a constant is not supported")
        for name in node.input:
            if name and name not in self.consts:
                raise UnsupportedModelError(
                    f"{self.where(node)}: input '{name}' is neither a constant nor the data path "
                    "(branching graphs are not supported)"
                )
        try:
            from onnx import helper, numpy_helper
            from onnx.reference import ReferenceEvaluator

            inits = [numpy_helper.from_array(self.consts[n], n) for n in node.input if n]
            graph = helper.make_graph(
                [node], "fold", [], [helper.make_tensor_value_info(o, 0, None) for o in node.output],
                initializer=inits,
            )
            model = helper.make_model(graph, opset_imports=self.proto.opset_import)
            results = ReferenceEvaluator(model).run(None, {})
        except Exception as exc:
            raise UnsupportedModelError(
                f"{self.where(node)}: cannot evaluate constant operator ({exc})"
            ) from None
        for name, value in zip(node.output, results):
            self.consts[name] = np.asarray(value)

    # -- layer closing -------------------------------------------------------------------------
    def close_layer(self, relu: bool, name: str) -> None:
        """Turn the pending affine map into a layer (with a ReLU when ``relu``)."""
        p = self.pending
        n_out = p.out_dim
        if p.kind == "identity":
            w = np.eye(p.n)
        elif p.kind == "diag":
            w = _object_diag(p.w) if p.w.dtype == object else np.diag(p.w)
        else:
            w = p.w
        b = p.b if p.b is not None else np.zeros(n_out)
        w_f, w_ok = _to_float_if_exact(w)
        b_f, b_ok = _to_float_if_exact(b)
        if w_ok and b_ok:
            affine = Affine(np.asarray(w_f, dtype=np.float64), np.asarray(b_f, dtype=np.float64))
        else:
            affine = Affine(
                nearest_float_array(w) if w.dtype == object else np.asarray(w, dtype=np.float64),
                nearest_float_array(b) if b.dtype == object else np.asarray(b, dtype=np.float64),
                exact_weight=w if w.dtype == object else fraction_array(w),
                exact_bias=b if b.dtype == object else fraction_array(b),
            )
        self.layers.append(Layer(affine=affine, relu=relu, name=name))
        self.pending = _Pending(n=n_out)

    # -- composition primitives ----------------------------------------------------------------
    def apply_dense(self, node, w: np.ndarray, b: np.ndarray | None) -> None:
        """data <- w @ data + b on the flat vector (``w`` float64 of shape (m, n))."""
        p = self.pending
        if w.shape[1] != p.out_dim:
            raise ShapeMismatchError(
                f"{self.where(node)}: weight takes {w.shape[1]} values but the data has {p.out_dim}"
            )
        if p.kind == "identity" and p.b is None and not p.exact:
            p.kind, p.w, p.b = "dense", w, b  # nothing to compose: the stored floats, as they are
            return
        p.to_fractions()
        wq = fraction_array(w)
        if p.kind == "identity":
            new_w = wq
        elif p.kind == "diag":
            new_w = wq * p.w[None, :]
        else:
            cost = w.shape[0] * w.shape[1] * p.w.shape[1]
            if cost > MAX_EXACT_PRODUCT:
                raise UnsupportedModelError(
                    f"{self.where(node)}: two dense maps of shapes {w.shape} and {p.w.shape} "
                    "follow each other with no activation; merging them exactly is too large"
                )
            new_w = wq.dot(p.w)
        new_b = wq.dot(p.b) if p.b is not None else None
        if b is not None:
            new_b = fraction_array(b) if new_b is None else new_b + fraction_array(b)
        p.kind, p.w, p.b = "dense", new_w, new_b

    def apply_elementwise(self, scale: np.ndarray | None, shift: np.ndarray | None) -> None:
        """data <- scale * data + shift elementwise on the flat vector.

        ``scale``/``shift`` are float64 or object (Fraction) arrays of the data's flat size.
        """
        p = self.pending
        if scale is not None and scale.dtype != object and np.all(scale == 1.0):
            scale = None
        if shift is not None and shift.dtype != object and np.all(shift == 0.0):
            shift = None
        if scale is None and shift is None:
            return
        if not p.exact and scale is None and p.b is None and shift.dtype != object:
            p.b = shift  # a bias after a map that has none: the stored floats, as they are
            return
        if not p.exact and p.kind == "identity" and p.b is None and shift is None and scale.dtype != object:
            p.kind, p.w = "diag", scale
            return
        p.to_fractions()
        sq = None if scale is None else (scale if scale.dtype == object else fraction_array(scale))
        tq = None if shift is None else (shift if shift.dtype == object else fraction_array(shift))
        if sq is not None:
            if p.kind == "identity":
                p.kind, p.w = "diag", sq
            elif p.kind == "diag":
                p.w = p.w * sq
            else:
                p.w = p.w * sq[:, None]
            if p.b is not None:
                p.b = p.b * sq
        if tq is not None:
            p.b = tq if p.b is None else p.b + tq

    # -- operators on the data path -------------------------------------------------------------
    def op_Relu(self, node) -> None:
        self.close_layer(relu=True, name=node.name or node.output[0])

    def op_Identity(self, node) -> None:
        pass

    def op_Dropout(self, node) -> None:
        pass

    def op_Cast(self, node) -> None:
        to = _attr(node, "to", 1)
        if to not in FLOAT_TYPES:
            raise UnsupportedModelError(f"{self.where(node)}: Cast to element type {to} on the data path")

    def op_Flatten(self, node) -> None:
        axis = _attr(node, "axis", 1)
        s = self.shape
        axis = axis + len(s) if axis < 0 else axis
        self.shape = (int(np.prod(s[:axis])), int(np.prod(s[axis:])))

    def op_Reshape(self, node) -> None:
        target = [int(v) for v in self.const(node, node.input[1]).ravel()]
        allowzero = _attr(node, "allowzero", 0)
        if not allowzero:
            target = [self.shape[i] if v == 0 else v for i, v in enumerate(target)]
        try:
            self.shape = np.empty(self.shape, dtype=np.uint8).reshape(target).shape
        except ValueError as exc:
            raise ShapeMismatchError(f"{self.where(node)}: cannot reshape {self.shape} to {target} ({exc})") from None

    def _axes(self, node) -> list[int] | None:
        if len(node.input) > 1 and node.input[1]:
            return [int(a) for a in self.const(node, node.input[1]).ravel()]
        axes = _attr(node, "axes", None)
        return None if axes is None else [int(a) for a in axes]

    def op_Squeeze(self, node) -> None:
        axes = self._axes(node)
        s = list(self.shape)
        if axes is None:
            self.shape = tuple(d for d in s if d != 1)
        else:
            axes = sorted(a + len(s) if a < 0 else a for a in axes)
            self.shape = tuple(d for i, d in enumerate(s) if i not in axes)

    def op_Unsqueeze(self, node) -> None:
        axes = self._axes(node) or []
        rank = len(self.shape) + len(axes)
        axes = sorted(a + rank if a < 0 else a for a in axes)
        s = list(self.shape)
        for a in axes:
            s.insert(a, 1)
        self.shape = tuple(s)

    def op_Transpose(self, node) -> None:
        perm = _attr(node, "perm", None)
        idx = np.arange(int(np.prod(self.shape))).reshape(self.shape)
        idx = idx.transpose(perm) if perm is not None else idx.T
        self.shape = idx.shape
        if np.array_equal(idx.ravel(), np.arange(idx.size)):
            return
        w = np.eye(idx.size)[idx.ravel()]
        self.apply_dense(node, w, None)

    def _broadcast_const(self, node, c: np.ndarray) -> np.ndarray:
        try:
            out_shape = np.broadcast_shapes(self.shape, c.shape)
        except ValueError:
            raise ShapeMismatchError(
                f"{self.where(node)}: constant of shape {c.shape} does not broadcast to data shape {self.shape}"
            ) from None
        if int(np.prod(out_shape)) != int(np.prod(self.shape)):
            raise ShapeMismatchError(
                f"{self.where(node)}: constant of shape {c.shape} enlarges the data shape {self.shape}"
            )
        self.shape = tuple(out_shape)
        return np.broadcast_to(c, out_shape).ravel()

    def _const_operand(self, node) -> tuple[np.ndarray, bool]:
        """The constant operand of a binary op and whether the data is the first operand."""
        data_first = node.input[0] == self.data
        other = node.input[1] if data_first else node.input[0]
        c = self.const(node, other)
        if c.dtype.kind not in "fiu":
            raise UnsupportedModelError(f"{self.where(node)}: constant '{other}' has dtype {c.dtype}")
        return np.asarray(c, dtype=np.float64) if c.dtype.kind == "f" else c.astype(np.float64), data_first

    def op_Add(self, node) -> None:
        c, _ = self._const_operand(node)
        self.apply_elementwise(None, self._broadcast_const(node, c))

    def op_Sub(self, node) -> None:
        c, data_first = self._const_operand(node)
        c = self._broadcast_const(node, c)
        if data_first:
            self.apply_elementwise(None, -c)
        else:
            self.apply_elementwise(-np.ones_like(c), c)

    def op_Mul(self, node) -> None:
        c, _ = self._const_operand(node)
        self.apply_elementwise(self._broadcast_const(node, c), None)

    def op_Div(self, node) -> None:
        c, data_first = self._const_operand(node)
        if not data_first:
            raise UnsupportedModelError(f"{self.where(node)}: division by the data is not affine")
        c = self._broadcast_const(node, c)
        if np.any(c == 0):
            raise ModelValueError(f"{self.where(node)}: division by zero constant")
        inv = np.empty(c.size, dtype=object)
        inv[:] = [1 / Fraction(float(v)) for v in c]
        self.apply_elementwise(inv, None)

    def op_MatMul(self, node) -> None:
        data_first = node.input[0] == self.data
        w = np.asarray(self.const(node, node.input[1] if data_first else node.input[0]), dtype=np.float64)
        s = self.shape
        if w.ndim != 2:
            raise UnsupportedModelError(f"{self.where(node)}: MatMul with a rank-{w.ndim} constant")
        if data_first:
            # data (..., k) @ w (k, n)
            if len(s) == 0 or s[-1] != w.shape[0]:
                raise ShapeMismatchError(f"{self.where(node)}: data shape {s} @ weight shape {w.shape}")
            rows = int(np.prod(s[:-1])) if len(s) > 1 else 1
            flat = w.T if rows == 1 else np.kron(np.eye(rows), w.T)
            self.shape = tuple(s[:-1]) + (w.shape[1],)
        else:
            # w (m, k) @ data (k,) or (k, c) or (..., k, c)
            if len(s) == 1:
                if s[0] != w.shape[1]:
                    raise ShapeMismatchError(f"{self.where(node)}: weight shape {w.shape} @ data shape {s}")
                flat = w
                self.shape = (w.shape[0],)
            else:
                if s[-2] != w.shape[1]:
                    raise ShapeMismatchError(f"{self.where(node)}: weight shape {w.shape} @ data shape {s}")
                batch = int(np.prod(s[:-2])) if len(s) > 2 else 1
                block = np.kron(w, np.eye(s[-1]))
                flat = block if batch == 1 else np.kron(np.eye(batch), block)
                self.shape = tuple(s[:-2]) + (w.shape[0], s[-1])
        self.apply_dense(node, flat, None)

    def op_Gemm(self, node) -> None:
        if node.input[0] != self.data:
            raise UnsupportedModelError(f"{self.where(node)}: Gemm with the data as second operand")
        alpha = float(_attr(node, "alpha", 1.0))
        beta = float(_attr(node, "beta", 1.0))
        trans_a = _attr(node, "transA", 0)
        trans_b = _attr(node, "transB", 0)
        b = np.asarray(self.const(node, node.input[1]), dtype=np.float64)
        if b.ndim != 2:
            raise ShapeMismatchError(f"{self.where(node)}: Gemm weight has shape {b.shape}")
        bt = b.T if trans_b else b  # (k, n)
        s = self.shape
        if len(s) != 2:
            raise ShapeMismatchError(f"{self.where(node)}: Gemm needs rank-2 data, got shape {s}")
        rows, k = (s[1], s[0]) if trans_a else (s[0], s[1])
        if rows != 1:
            raise UnsupportedModelError(f"{self.where(node)}: Gemm on {rows} rows of data (only one)")
        if k != bt.shape[0]:
            raise ShapeMismatchError(f"{self.where(node)}: data shape {s} does not fit weight {b.shape}")
        self.shape = (1, bt.shape[1])
        c = None
        if len(node.input) > 2 and node.input[2] and beta != 0.0:
            c = np.broadcast_to(np.asarray(self.const(node, node.input[2]), np.float64), (1, bt.shape[1])).ravel()
        if alpha == 1.0 and beta == 1.0:
            self.apply_dense(node, bt.T.copy(), c)
            return
        self.apply_dense(node, bt.T.copy(), None)
        if alpha != 1.0:
            self.apply_elementwise(np.full(bt.shape[1], alpha), None)
        if c is not None:
            shift = fraction_array(c) * Fraction(beta) if beta != 1.0 else c
            self.apply_elementwise(None, shift)

    def op_BatchNormalization(self, node) -> None:
        eps = float(_attr(node, "epsilon", 1e-5))
        scale, bias, mean, var = (np.asarray(self.const(node, n), np.float64) for n in node.input[1:5])
        if len(self.shape) < 2:
            raise ShapeMismatchError(f"{self.where(node)}: BatchNormalization on data of shape {self.shape}")
        mult = scale / np.sqrt(var + eps)
        shift = bias - mean * mult
        view = (1, -1) + (1,) * (len(self.shape) - 2)
        s = self._broadcast_const(node, mult.reshape(view))
        t = self._broadcast_const(node, shift.reshape(view))
        self.notes.append(
            f"BatchNormalization '{node.name or node.output[0]}' was folded in float64 "
            "(1/sqrt(var+eps) is irrational); proofs hold for the folded weights"
        )
        self.apply_elementwise(s, None)
        self.apply_elementwise(None, t)


def _object_diag(v: np.ndarray) -> np.ndarray:
    n = len(v)
    out = np.empty((n, n), dtype=object)
    out[:] = Fraction(0)
    for i in range(n):
        out[i, i] = v[i]
    return out


def _attr(node, name: str, default):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default
