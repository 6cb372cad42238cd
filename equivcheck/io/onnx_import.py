"""ONNX import: a straight-chain ONNX graph becomes a :class:`~equivcheck.core.network.Network`.

The importer walks the graph once, following the single data path from the graph input. Every
operator on that path is either affine in the data (MatMul, Gemm, Add/Sub/Mul/Div by a constant,
BatchNormalization, reshapes, Transpose, Identity, Dropout in inference mode, Cast to float) or a
Relu. Affine operations between two ReLUs are composed into one affine map. Composition is exact:
whenever the float64 result of a composition might round, it is recomputed in rational arithmetic
and the layer keeps the exact rationals. The one exception is BatchNormalization, whose
``1/sqrt(var+eps)`` is irrational: it is folded in float64 and the network carries a note saying so.

Nodes off the data path (all inputs constant) are folded to constants. The meaning of a constant
is what onnxruntime computes for it: operators that only move or select data, or cannot round
(Identity, Reshape, Transpose, Squeeze/Unsqueeze, Concat, Gather, Slice, Neg, Abs, a Cast that
loses nothing, ...), are folded exactly by the ONNX reference evaluator; any operator that may
round (Exp, Add, Mul, Div, Sqrt, Pow, a narrowing Cast, ...) is evaluated by onnxruntime itself,
so the folded value is bit-identical to the one onnxruntime uses, and ``Network.notes`` names the
nodes folded that way.

Anything else on the data path is an :class:`UnsupportedModelError` naming the operator and node;
bad attributes or values (non-finite attributes, negative variances, impossible permutations,
weights beyond ``MAX_ABS_WEIGHT``) are a :class:`ModelValueError`; models past the size limits of
:mod:`equivcheck.core.network` are refused before anything dense is allocated.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Union

import numpy as np

from equivcheck.core.network import (
    MAX_ABS_WEIGHT,
    MAX_NETWORK_ENTRIES,
    MAX_WIDTH,
    Affine,
    Layer,
    Network,
    check_dense_size,
    fraction_array,
    nearest_float_array,
)
from equivcheck.errors import (
    ModelFileError,
    ModelValueError,
    ShapeMismatchError,
    UnsupportedModelError,
)

ModelLike = Union[str, os.PathLike, "onnx.ModelProto"]  # noqa: F821

NON_RELU_ACTIVATIONS = {
    "Sigmoid", "Tanh", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "HardSigmoid",
    "HardSwish", "Softplus", "Softsign", "Softmax", "LogSoftmax", "Clip", "ThresholdedRelu",
    "Mish", "Swish", "Sin", "Cos", "Exp", "Log", "Abs", "Sqrt", "Erf",
}
PASS_THROUGH = {"Identity", "Dropout"}
# data-path operators whose data operand may be either input (the others take it first)
BINARY_OPS = {"Add", "Sub", "Mul", "Div", "MatMul"}
# Large rational matrix products are slow in Python; past this many multiply-adds we refuse
# to merge two dense maps instead of silently rounding them.
MAX_EXACT_PRODUCT = 5_000_000
FLOAT_TYPES = {1: "float32", 11: "float64"}
# Constants (initializers, Constant nodes, folded values) hold at most this many entries.
MAX_CONSTANT_ENTRIES = 50_000_000
# protobuf cannot parse a model file larger than 2 GiB; refuse before reading one.
MAX_MODEL_BYTES = 2**31
# Constant operators folded exactly: they move, select or copy values, or change only a sign.
# A Cast (or CastLike) is exact when its result converts back to exactly its input.
EXACT_FOLD_OPS = frozenset({
    "Identity", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Split",
    "Gather", "GatherElements", "Slice", "Expand", "Tile", "ConstantOfShape", "Neg", "Abs",
    "Dropout", "Cast", "CastLike",
})
# the input holding sizes or repeat counts, which must not be negative (numpy clamps them to 0,
# onnxruntime refuses them)
SIZE_INPUTS = {"Tile": 1, "Expand": 1, "ConstantOfShape": 0}
RANDOM_OPS = frozenset({
    "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
    "Bernoulli",
})


def load_model(model: ModelLike) -> "onnx.ModelProto":  # noqa: F821
    """Read an ONNX model from a path (or pass a ``ModelProto`` through).

    Only a regular file is opened (a FIFO, device, socket or directory is refused before it is
    opened, so nothing can block); external data must be regular files inside the model's folder.
    Raises :class:`ModelFileError` naming the path (and tensor) for anything else.
    """
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    data = _read_regular_file(path, path, "model")
    try:
        proto = onnx.load_model_from_string(data, format=_format_of(path))
    except Exception as exc:  # protobuf raises several unrelated types
        raise ModelFileError(f"{path}: not a valid ONNX model ({type(exc).__name__})") from None
    if not proto.graph.node and not proto.graph.output:
        raise ModelFileError(f"{path}: not a valid ONNX model (empty graph)")
    _load_external_data(proto, path)
    return proto


def _format_of(path: Path) -> str | None:
    """The serialization format ``onnx.load`` would infer from the file extension (None:
    binary protobuf)."""
    try:
        from onnx import serialization

        return serialization.registry.get_format_from_file_extension(path.suffix)
    except (ImportError, AttributeError):  # onnx < 1.15 reads binary protobuf only
        return None


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _read_regular_file(path: Path, label: Path | str, what: str, offset: int = 0,
                       length: int | None = None) -> bytes:
    """The bytes of a regular file (from ``offset``, ``length`` of them or to the end).

    The file is checked with ``stat`` before it is opened and with ``fstat`` on the opened
    descriptor (opened non-blocking), so a FIFO or device never blocks the import.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ModelFileError(f"{label}: no such file") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise ModelFileError(f"{label}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = _file_kind(st.st_mode)
        suffix = "" if kind == "not a regular file" else ", not a regular file"
        raise ModelFileError(f"{label}: is {kind}{suffix}; an ONNX {what} must be a regular file")
    size = st.st_size
    want = size - offset if length is None else length
    if offset > size or offset + want > size:
        raise ModelFileError(
            f"{label}: the {what} needs bytes {offset}..{offset + want} but the file has {size}"
        )
    if want > MAX_MODEL_BYTES:
        raise ModelFileError(f"{label}: {want:,} bytes is larger than the 2 GiB ONNX limit")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise ModelFileError(f"{label}: cannot be read ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # replaced since the stat above
            raise ModelFileError(f"{label}: is not a regular file")
        try:
            fh.seek(offset)
            data = fh.read(want)
        except OSError as exc:
            raise ModelFileError(f"{label}: cannot be read ({exc.strerror or exc})") from None
    if len(data) != want:
        raise ModelFileError(f"{label}: the file changed while it was read")
    return data


def _all_tensors(graph):
    """(kind, TensorProto) for every tensor of a graph: initializers and tensor attributes,
    subgraphs included."""
    from onnx import AttributeProto

    for tensor in graph.initializer:
        yield "initializer", tensor
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR:
                yield "tensor", attr.t
            elif attr.type == AttributeProto.TENSORS:
                for tensor in attr.tensors:
                    yield "tensor", tensor
            elif attr.type == AttributeProto.GRAPH:
                yield from _all_tensors(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _all_tensors(sub)


def _load_external_data(proto, path: Path) -> None:
    """Read every tensor stored in an external file into ``proto`` (in place).

    Each external file must lie inside the model's folder (symbolic links resolved), exist, be a
    regular file and hold the bytes the tensor names; the tensor must be within the size limit.
    """
    from onnx import TensorProto

    folder = path.resolve().parent
    for kind, tensor in _all_tensors(proto.graph):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        what = f"external data file '{location}' of {kind} '{tensor.name}'"
        entries = math.prod(int(d) for d in tensor.dims)
        if entries > MAX_CONSTANT_ENTRIES:
            raise UnsupportedModelError(
                f"{path}: tensor '{tensor.name}' has {entries:,} entries "
                f"(equivcheck handles constants of up to {MAX_CONSTANT_ENTRIES:,})"
            )
        if not location:
            raise ModelFileError(f"{path}: tensor '{tensor.name}' has external data without a location")
        try:
            target = (folder / location).resolve()
        except (OSError, ValueError, RuntimeError) as exc:  # NUL byte, symlink loop
            raise ModelFileError(f"{path}: {what} cannot be resolved ({exc})") from None
        if os.path.isabs(location) or not target.is_relative_to(folder):
            raise ModelFileError(f"{path}: {what} lies outside the model's folder")
        try:
            offset = int(info.get("offset", 0))
            length = int(info["length"]) if "length" in info else None
        except ValueError:
            raise ModelFileError(f"{path}: {what} has a malformed offset or length") from None
        if offset < 0 or (length is not None and length < 0):
            raise ModelFileError(f"{path}: {what} has a negative offset or length")
        data = _read_regular_file(target, f"{path}: {what}", "external data", offset, length)
        tensor.raw_data = data
        tensor.data_location = TensorProto.DEFAULT
        del tensor.external_data[:]


def load_network(model: ModelLike, name: str | None = None) -> Network:
    """Import an ONNX model (path or ``ModelProto``) as a :class:`Network`.

    Promises: the network computes, in exact arithmetic, the function the ONNX graph defines on
    its stored weights, with constant subgraphs valued as onnxruntime computes them (up to
    float64 folding of BatchNormalization; both recorded in ``notes``).
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
        self.ort_folded: dict[str, list[str]] = {}  # dtype -> nodes folded by onnxruntime
        self.entries = 0  # weights of the layers closed so far

    # -- helpers -------------------------------------------------------------------------------
    def where(self, node) -> str:
        return f"{self.label}: node '{_node_name(node)}' ({node.op_type})"

    def const(self, node, name: str) -> np.ndarray:
        if name not in self.consts:
            raise UnsupportedModelError(
                f"{self.where(node)}: input '{name}' is neither a constant nor the data path "
                "(branching graphs are not supported)"
            )
        value = self.consts[name]
        if value.dtype.kind == "f" and value.size:
            if not np.all(np.isfinite(value)):
                bad = value.ravel()[~np.isfinite(value.ravel())][0]
                raise ModelValueError(f"{self.where(node)}: constant '{name}' contains {bad}")
            big = float(np.max(np.abs(value)))
            if big > MAX_ABS_WEIGHT:
                raise ModelValueError(
                    f"{self.where(node)}: constant '{name}' contains {_signed_max(value):g}, beyond "
                    f"the magnitude limit {MAX_ABS_WEIGHT:g} for weights"
                )
        return value

    def attr(self, node, name: str, default, kind: str | None = None):
        """The attribute ``name`` of ``node`` (``default`` when absent), refusing one of the wrong
        type; ``kind`` ("int", "float", "ints") defaults to the type of ``default``."""
        from onnx import AttributeProto, helper

        kind = kind or ("float" if isinstance(default, float) else "int")
        want = {"int": AttributeProto.INT, "float": AttributeProto.FLOAT, "ints": AttributeProto.INTS}[kind]
        for a in node.attribute:
            if a.name == name:
                if a.type != want:
                    raise ModelValueError(
                        f"{self.where(node)}: attribute {name} has type "
                        f"{AttributeProto.AttributeType.Name(a.type)}, expected {kind}"
                    )
                value = helper.get_attribute_value(a)
                return list(value) if kind == "ints" else value
        return default

    def check_attributes(self, node) -> None:
        """Every float attribute must be finite; control flow (subgraph attributes) is refused."""
        from onnx import AttributeProto

        for a in node.attribute:
            if a.type == AttributeProto.FLOAT and not math.isfinite(a.f):
                raise ModelValueError(f"{self.where(node)}: attribute {a.name} is {a.f}")
            if a.type == AttributeProto.FLOATS:
                bad = [v for v in a.floats if not math.isfinite(v)]
                if bad:
                    raise ModelValueError(f"{self.where(node)}: attribute {a.name} contains {bad[0]}")
            if a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
                raise UnsupportedModelError(
                    f"{self.where(node)}: control flow (a subgraph in attribute {a.name}) is not supported"
                )

    # -- main walk -----------------------------------------------------------------------------
    def run(self) -> Network:
        from onnx import numpy_helper

        g = self.graph
        for _, tensor in _all_tensors(g):
            _refuse_unloaded_external(tensor, self.label)
        for init in g.initializer:
            entries = math.prod(int(d) for d in init.dims)
            if entries > MAX_CONSTANT_ENTRIES:
                raise UnsupportedModelError(
                    f"{self.label}: initializer '{init.name}' has {entries:,} entries "
                    f"(equivcheck handles constants of up to {MAX_CONSTANT_ENTRIES:,})"
                )
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
        n_in = math.prod(shape)
        if n_in > MAX_WIDTH:
            raise UnsupportedModelError(
                f"{self.label}: input '{inp.name}' of shape {in_shape} has {n_in:,} values "
                f"(equivcheck handles inputs of up to {MAX_WIDTH:,})"
            )
        self.check_single_definitions()
        self.data = inp.name
        self.dtype = FLOAT_TYPES[ttype.elem_type]
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
        if out_t.elem_type and FLOAT_TYPES.get(out_t.elem_type) != self.dtype:
            raise ModelValueError(
                f"{self.label}: output '{out.name}' is declared with element type {out_t.elem_type} "
                f"but the data path computes {self.dtype}"
            )
        out_shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in out_t.shape.dim)
        if not out_shape:
            out_shape = tuple(self.shape)
        declared = math.prod(1 if d <= 0 else d for d in out_shape)
        if declared > MAX_WIDTH:
            raise UnsupportedModelError(
                f"{self.label}: output '{out.name}' is declared with shape {out_shape}, "
                f"{declared:,} values (equivcheck handles outputs of up to {MAX_WIDTH:,})"
            )
        for dtype, nodes in self.ort_folded.items():
            shown = ", ".join(nodes[:8]) + (f" and {len(nodes) - 8} more" if len(nodes) > 8 else "")
            self.notes.append(f"constant subgraph {shown} folded as onnxruntime computes it ({dtype})")
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

    def check_single_definitions(self) -> None:
        """Every tensor name is defined once (ONNX graphs are in SSA form; onnxruntime refuses
        a model that defines a name twice, and the walk would silently take the later one)."""
        g = self.graph
        defined = {i.name for i in g.input}
        names = [t.name for t in g.initializer]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise UnsupportedModelError(f"{self.label}: initializer '{dup}' is defined twice")
        defined.update(names)
        for node in g.node:
            for out in node.output:
                if not out:
                    continue
                if out in defined:
                    raise UnsupportedModelError(
                        f"{self.where(node)}: output '{out}' redefines a tensor defined before"
                    )
                defined.add(out)

    def typed_const(self, node, name: str) -> np.ndarray:
        """A constant operand of an arithmetic operator: it must have the data's float type
        (ONNX binds both operands to one type; onnxruntime refuses a model that mixes them)."""
        c = self.const(node, name)
        if c.dtype.name != self.dtype:
            raise ModelValueError(
                f"{self.where(node)}: constant '{name}' has type {c.dtype} but the data is "
                f"{self.dtype} (both operands must have one type)"
            )
        return c

    def visit(self, node) -> None:
        op = node.op_type
        data_inputs = [i for i in node.input if i == self.data]
        if not node.output or not node.output[0]:
            raise UnsupportedModelError(f"{self.where(node)}: the node has no output")
        if node.op_type != "Constant":
            self.check_attributes(node)
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
        if (op in BINARY_OPS and len(node.input) != 2) or (op == "Gemm" and len(node.input) < 2):
            raise UnsupportedModelError(f"{self.where(node)}: {op} with {len(node.input)} inputs")
        if op not in BINARY_OPS and node.input[0] != self.data:
            raise UnsupportedModelError(
                f"{self.where(node)}: the data path enters as input {list(node.input).index(self.data)} "
                "(only as the first input of this operator)"
            )
        handler(node)
        self.data = node.output[0]
        width = math.prod(self.shape)
        if width > MAX_WIDTH:
            raise UnsupportedModelError(
                f"{self.where(node)}: the data has {width:,} values (shape {self.shape}); "
                f"equivcheck handles widths up to {MAX_WIDTH:,}"
            )

    def fold_constant(self, node) -> None:
        """Evaluate a node whose inputs are all constants.

        Exact operators (``EXACT_FOLD_OPS``; a Cast only when its result converts back to its
        input exactly) are folded by the ONNX reference evaluator; any other operator is
        evaluated by onnxruntime, so the constant is bit-identical to the one onnxruntime
        computes, and the node is named in ``notes``. Random operators are refused, and the
        size of every result is checked (from shape inference) before it is computed.
        """
        op = node.op_type
        if op == "Constant":
            self.consts[node.output[0]] = self.constant_value(node)
            return
        if op == "Shape":
            raise UnsupportedModelError(f"{self.where(node)}: Shape of a constant is not supported")
        if op in RANDOM_OPS or (op == "Dropout" and self.dropout_training(node)):
            raise UnsupportedModelError(
                f"{self.where(node)}: {op} is random; a constant must be deterministic"
            )
        for name in node.input:
            if name and name not in self.consts:
                raise UnsupportedModelError(
                    f"{self.where(node)}: input '{name}' is neither a constant nor the data path "
                    "(branching graphs are not supported)"
                )
        exact = op in EXACT_FOLD_OPS and node.domain in ("", "ai.onnx")
        if exact:
            self.check_input_types(node)
            k = SIZE_INPUTS.get(op)
            if k is not None and len(node.input) > k and np.any(self.consts[node.input[k]] < 0):
                raise ModelValueError(
                    f"{self.where(node)}: input '{node.input[k]}' holds a negative size "
                    f"{self.consts[node.input[k]].ravel().tolist()[:8]}"
                )
        model = self.single_node_model(node, strict=exact)
        results = self.reference_fold(node, model) if exact else None
        if results is not None and op in ("Cast", "CastLike"):
            source = self.consts[node.input[0]]
            if not _converts_back(source, results[0]):
                results = None
        if results is None:
            results = self.ort_fold(node, model)
            dtype = results[0].dtype.name if results else "?"
            self.ort_folded.setdefault(dtype, []).append(_node_name(node))
        for name, value in zip([o for o in node.output if o], results):
            value = np.asarray(value)
            if value.size > MAX_CONSTANT_ENTRIES:  # shape inference could not tell beforehand
                raise UnsupportedModelError(
                    f"{self.where(node)}: the constant '{name}' has {value.size:,} entries "
                    f"(equivcheck handles constants of up to {MAX_CONSTANT_ENTRIES:,})"
                )
            self.consts[name] = value

    def constant_value(self, node) -> np.ndarray:
        """The value of a Constant node, with the element type ONNX gives it."""
        from onnx import numpy_helper

        for attr in node.attribute:
            if attr.name == "value":
                entries = math.prod(int(d) for d in attr.t.dims)
                if entries > MAX_CONSTANT_ENTRIES:
                    raise UnsupportedModelError(
                        f"{self.where(node)}: the constant has {entries:,} entries "
                        f"(equivcheck handles constants of up to {MAX_CONSTANT_ENTRIES:,})"
                    )
                try:
                    return numpy_helper.to_array(attr.t)
                except Exception as exc:
                    raise ModelFileError(f"{self.where(node)}: value cannot be read ({exc})") from None
            if attr.name == "value_float":
                return np.array(attr.f, dtype=np.float32)
            if attr.name == "value_floats":
                return np.array(list(attr.floats), dtype=np.float32)
            if attr.name == "value_int":
                return np.array(attr.i, dtype=np.int64)
            if attr.name == "value_ints":
                return np.array(list(attr.ints), dtype=np.int64)
        raise UnsupportedModelError(f"{self.where(node)}: unsupported Constant attribute")

    def single_node_model(self, node, strict: bool):
        """A model computing ``node`` from its constant inputs (as initializers), with output
        types and shapes from ONNX shape inference; refuses a result past the size limit.

        With ``strict``, a node that fails ONNX type and shape inference is refused (the
        reference evaluator accepts inputs onnxruntime refuses, such as float Gather indices).
        """
        from onnx import TensorProto, helper, numpy_helper, shape_inference

        names = list(dict.fromkeys(n for n in node.input if n))
        inits = [numpy_helper.from_array(self.consts[n], n) for n in names]
        outputs = [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in node.output if o]
        graph = helper.make_graph([node], "fold", [], outputs, initializer=inits)
        model = helper.make_model(graph, opset_imports=self.proto.opset_import)
        model.ir_version = max(int(self.proto.ir_version), 4)
        try:
            inferred = shape_inference.infer_shapes(model, strict_mode=strict, data_prop=True)
        except Exception as exc:
            if strict:
                first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
                raise ModelValueError(f"{self.where(node)}: invalid constant operator ({first})") from None
            return model  # evaluated anyway; the result's size is checked afterwards
        for out in inferred.graph.output:
            dims = out.type.tensor_type.shape.dim
            if all(d.HasField("dim_value") for d in dims):
                entries = math.prod(d.dim_value for d in dims)
                if entries > MAX_CONSTANT_ENTRIES:
                    raise UnsupportedModelError(
                        f"{self.where(node)}: the constant '{out.name}' would have {entries:,} "
                        f"entries (equivcheck handles constants of up to {MAX_CONSTANT_ENTRIES:,})"
                    )
        return inferred

    def check_input_types(self, node) -> None:
        """The constant inputs of a default-domain node have types its ONNX schema allows, and
        inputs bound to one type parameter share a type (as onnxruntime requires)."""
        from onnx import TensorProto, defs, helper

        version = next((o.version for o in self.proto.opset_import if o.domain in ("", "ai.onnx")), None)
        try:
            schema = defs.get_schema(node.op_type, version or defs.onnx_opset_version(), "")
        except Exception:
            raise UnsupportedModelError(
                f"{self.where(node)}: operator {node.op_type} is unknown in opset {version}"
            ) from None
        allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
        formals = list(schema.inputs)
        if len(node.input) > len(formals) and not (formals and formals[-1].option == defs.OpSchema.FormalParameterOption.Variadic):
            raise ModelValueError(f"{self.where(node)}: {len(node.input)} inputs, the operator takes {len(formals)}")
        bound: dict[str, str] = {}
        for k, name in enumerate(node.input):
            if not name:
                continue
            formal = formals[min(k, len(formals) - 1)]
            value = self.consts[name]
            try:
                elem = helper.np_dtype_to_tensor_dtype(value.dtype)
            except Exception:
                raise ModelValueError(f"{self.where(node)}: input '{name}' has dtype {value.dtype}") from None
            actual = f"tensor({TensorProto.DataType.Name(elem).lower()})"
            if actual not in allowed.get(formal.type_str, {formal.type_str}):
                raise ModelValueError(
                    f"{self.where(node)}: input '{name}' has type {actual}, which {node.op_type} "
                    f"does not accept as {formal.name}"
                )
            if bound.setdefault(formal.type_str, actual) != actual:
                raise ModelValueError(
                    f"{self.where(node)}: inputs of one type parameter have types "
                    f"{bound[formal.type_str]} and {actual}"
                )

    def reference_fold(self, node, model) -> list[np.ndarray]:
        """The outputs of an exact operator, by the ONNX reference evaluator."""
        try:
            from onnx.reference import ReferenceEvaluator

            with np.errstate(all="ignore"):
                return [np.asarray(v) for v in ReferenceEvaluator(model).run(None, {})]
        except Exception as exc:
            raise UnsupportedModelError(
                f"{self.where(node)}: cannot evaluate constant operator ({exc})"
            ) from None

    def ort_fold(self, node, model) -> list[np.ndarray]:
        """The outputs of a constant operator as onnxruntime computes them (one thread, the
        session options the counterexample check uses)."""
        try:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.log_severity_level = 4  # errors become one InputError line, not log output
            opts.intra_op_num_threads = 1
            sess = ort.InferenceSession(
                model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
            )
            run_opts = ort.RunOptions()
            run_opts.log_severity_level = 4
            return [np.asarray(v) for v in sess.run(None, {}, run_opts)]
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnsupportedModelError(
                f"{self.where(node)}: onnxruntime cannot evaluate this constant operator ({first})"
            ) from None

    def dropout_training(self, node) -> bool:
        """True when a Dropout runs in training mode (a constant true ``training_mode`` input)."""
        if len(node.input) > 2 and node.input[2]:
            flag = self.const(node, node.input[2])
            return bool(np.any(flag))
        return False

    # -- layer closing -------------------------------------------------------------------------
    def close_layer(self, relu: bool, name: str) -> None:
        """Turn the pending affine map into a layer (with a ReLU when ``relu``).

        Refuses (before allocating it) a layer past the size limits, and a layer whose folded
        weights or biases exceed ``MAX_ABS_WEIGHT`` in magnitude.
        """
        p = self.pending
        n_out = p.out_dim
        where = f"{self.label}: layer '{name}'"
        check_dense_size(n_out, p.n, where)
        self.entries += n_out * p.n
        if self.entries > MAX_NETWORK_ENTRIES:
            raise UnsupportedModelError(
                f"{where}: the network has more than {MAX_NETWORK_ENTRIES:,} weights "
                "(equivcheck handles up to that many)"
            )
        if p.kind == "identity":
            w = np.eye(p.n)
        elif p.kind == "diag":
            w = _object_diag(p.w) if p.w.dtype == object else np.diag(p.w)
        else:
            w = p.w
        b = p.b if p.b is not None else np.zeros(n_out)
        w_near, b_near = _nearest_within_limit(w, where, "weight"), _nearest_within_limit(b, where, "bias")
        w_f, w_ok = _to_float_if_exact(w)
        b_f, b_ok = _to_float_if_exact(b)
        if w_ok and b_ok:
            affine = Affine(np.asarray(w_f, dtype=np.float64), np.asarray(b_f, dtype=np.float64))
        else:
            affine = Affine(
                w_near,
                b_near,
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
        if self.dropout_training(node):
            raise UnsupportedModelError(
                f"{self.where(node)}: Dropout with training_mode true is random; only inference "
                "(training_mode false or absent) is supported"
            )

    def op_Cast(self, node) -> None:
        to = self.attr(node, "to", 1)
        if to not in FLOAT_TYPES:
            raise UnsupportedModelError(f"{self.where(node)}: Cast to element type {to} on the data path")
        self.dtype = FLOAT_TYPES[to]

    def op_Flatten(self, node) -> None:
        axis = self.attr(node, "axis", 1)
        s = self.shape
        if not -len(s) <= axis <= len(s):
            raise ShapeMismatchError(f"{self.where(node)}: axis {axis} out of range for data of shape {s}")
        axis = axis + len(s) if axis < 0 else axis
        self.shape = (int(np.prod(s[:axis])), int(np.prod(s[axis:])))

    def op_Reshape(self, node) -> None:
        if len(node.input) < 2 or not node.input[1]:
            raise ShapeMismatchError(f"{self.where(node)}: Reshape without a target shape")
        value = self.const(node, node.input[1])
        if value.dtype.kind not in "iu":
            raise ModelValueError(f"{self.where(node)}: target shape has dtype {value.dtype}, not int64")
        target = [int(v) for v in value.ravel()]
        allowzero = self.attr(node, "allowzero", 0)
        if not allowzero:
            if any(v == 0 and i >= len(self.shape) for i, v in enumerate(target)):
                raise ShapeMismatchError(
                    f"{self.where(node)}: target {target} copies a dimension (0) that data of "
                    f"shape {self.shape} does not have"
                )
            target = [self.shape[i] if v == 0 else v for i, v in enumerate(target)]
        if any(v < -1 for v in target):
            raise ShapeMismatchError(f"{self.where(node)}: target shape {target} has a dimension below -1")
        try:
            self.shape = np.empty(self.shape, dtype=np.uint8).reshape(target).shape
        except ValueError as exc:
            raise ShapeMismatchError(f"{self.where(node)}: cannot reshape {self.shape} to {target} ({exc})") from None

    def _axes(self, node) -> list[int] | None:
        if len(node.input) > 1 and node.input[1]:
            value = self.const(node, node.input[1])
            if value.dtype.kind not in "iu":
                raise ModelValueError(f"{self.where(node)}: axes have dtype {value.dtype}, not int64")
            return [int(a) for a in value.ravel()]
        axes = self.attr(node, "axes", None, "ints")
        return None if axes is None else [int(a) for a in axes]

    def op_Squeeze(self, node) -> None:
        axes = self._axes(node)
        s = list(self.shape)
        if axes is None:
            self.shape = tuple(d for d in s if d != 1)
        else:
            if any(not -len(s) <= a < len(s) for a in axes):
                raise ShapeMismatchError(f"{self.where(node)}: axes {axes} out of range for data of shape {tuple(s)}")
            axes = sorted(a + len(s) if a < 0 else a for a in axes)
            if any(s[a] != 1 for a in axes):
                raise ShapeMismatchError(
                    f"{self.where(node)}: cannot squeeze axes {axes} of data of shape {tuple(s)} "
                    "(only axes of size 1)"
                )
            self.shape = tuple(d for i, d in enumerate(s) if i not in axes)

    def op_Unsqueeze(self, node) -> None:
        axes = self._axes(node) or []
        rank = len(self.shape) + len(axes)
        if any(not -rank <= a < rank for a in axes) or len({a % rank for a in axes}) != len(axes):
            raise ShapeMismatchError(
                f"{self.where(node)}: axes {axes} are out of range or repeated for data of shape {self.shape}"
            )
        axes = sorted(a + rank if a < 0 else a for a in axes)
        s = list(self.shape)
        for a in axes:
            s.insert(a, 1)
        self.shape = tuple(s)

    def op_Transpose(self, node) -> None:
        perm = self.attr(node, "perm", None, "ints")
        if perm is not None and sorted(perm) != list(range(len(self.shape))):
            raise ModelValueError(
                f"{self.where(node)}: perm {list(perm)} is not a permutation of the "
                f"{len(self.shape)} axes of data of shape {self.shape}"
            )
        idx = np.arange(math.prod(self.shape)).reshape(self.shape)
        idx = idx.transpose(perm) if perm is not None else idx.T
        self.shape = idx.shape
        if np.array_equal(idx.ravel(), np.arange(idx.size)):
            return
        check_dense_size(idx.size, idx.size, self.where(node))
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
        c = self.typed_const(node, other)
        return np.asarray(c, dtype=np.float64), data_first

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
        w = np.asarray(self.typed_const(node, node.input[1] if data_first else node.input[0]), dtype=np.float64)
        s = self.shape
        if w.ndim != 2:
            raise UnsupportedModelError(f"{self.where(node)}: MatMul with a rank-{w.ndim} constant")
        if data_first:
            # data (..., k) @ w (k, n)
            if len(s) == 0 or s[-1] != w.shape[0]:
                raise ShapeMismatchError(f"{self.where(node)}: data shape {s} @ weight shape {w.shape}")
            rows = math.prod(s[:-1]) if len(s) > 1 else 1
            check_dense_size(rows * w.shape[1], rows * w.shape[0], self.where(node))
            flat = w.T if rows == 1 else np.kron(np.eye(rows), w.T)
            self.shape = tuple(s[:-1]) + (w.shape[1],)
        else:
            # w (m, k) @ data (k,) or (k, c) or (..., k, c)
            if len(s) <= 1:
                if s != (w.shape[1],):
                    raise ShapeMismatchError(f"{self.where(node)}: weight shape {w.shape} @ data shape {s}")
                flat = w
                self.shape = (w.shape[0],)
            else:
                if s[-2] != w.shape[1]:
                    raise ShapeMismatchError(f"{self.where(node)}: weight shape {w.shape} @ data shape {s}")
                batch = math.prod(s[:-2]) if len(s) > 2 else 1
                check_dense_size(batch * w.shape[0] * s[-1], batch * w.shape[1] * s[-1], self.where(node))
                block = np.kron(w, np.eye(s[-1]))
                flat = block if batch == 1 else np.kron(np.eye(batch), block)
                self.shape = tuple(s[:-2]) + (w.shape[0], s[-1])
        self.apply_dense(node, flat, None)

    def op_Gemm(self, node) -> None:
        alpha = float(self.attr(node, "alpha", 1.0))
        beta = float(self.attr(node, "beta", 1.0))
        trans_a = self.attr(node, "transA", 0)
        trans_b = self.attr(node, "transB", 0)
        b = np.asarray(self.typed_const(node, node.input[1]), dtype=np.float64)
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
        if len(node.input) > 2 and node.input[2]:  # C's shape is checked even when beta is 0
            c_value = np.asarray(self.typed_const(node, node.input[2]), np.float64)
            try:
                c = np.broadcast_to(c_value, (1, bt.shape[1])).ravel()
            except ValueError:
                raise ShapeMismatchError(
                    f"{self.where(node)}: C of shape {c_value.shape} does not broadcast to the "
                    f"output shape {(1, bt.shape[1])}"
                ) from None
            if beta == 0.0:
                c = None
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
        if self.attr(node, "training_mode", 0) or self.attr(node, "is_test", 1) == 0 or any(node.output[1:]):
            raise UnsupportedModelError(
                f"{self.where(node)}: BatchNormalization in training mode is not supported "
                "(only inference: training_mode 0 and no running-statistics outputs)"
            )
        if len(node.input) != 5:
            raise ShapeMismatchError(f"{self.where(node)}: BatchNormalization needs 5 inputs, has {len(node.input)}")
        eps = float(self.attr(node, "epsilon", 1e-5))
        # onnxruntime has kernels only for parameters of the data's type
        scale, bias, mean, var = (np.asarray(self.typed_const(node, n), np.float64) for n in node.input[1:5])
        if len(self.shape) < 2:
            raise ShapeMismatchError(f"{self.where(node)}: BatchNormalization on data of shape {self.shape}")
        channels = self.shape[1]
        for pname, value in zip(("scale", "B", "input_mean", "input_var"), (scale, bias, mean, var)):
            if value.shape != (channels,):
                raise ShapeMismatchError(
                    f"{self.where(node)}: {pname} has shape {value.shape}, expected ({channels},) "
                    f"for data of shape {self.shape}"
                )
        if np.any(var < 0):
            raise ModelValueError(
                f"{self.where(node)}: input_var '{node.input[4]}' contains the negative variance "
                f"{float(var[var < 0][0]):g}"
            )
        if np.any(var + eps <= 0):
            raise ModelValueError(f"{self.where(node)}: var + epsilon ({eps:g}) is not positive")
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


def _refuse_unloaded_external(tensor, label: str) -> None:
    """A ``ModelProto`` handed over in memory must not point at external files (they would be
    read relative to the working directory); :func:`load_model` loads them from a path."""
    from onnx import TensorProto

    if tensor.data_location == TensorProto.EXTERNAL:
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        raise ModelFileError(
            f"{label}: tensor '{tensor.name}' keeps its data in the external file '{location}'; "
            "load the model from its path so the file is found next to it"
        )


def _node_name(node) -> str:
    return node.name or (node.output[0] if node.output else node.op_type)


def _signed_max(values: np.ndarray) -> float:
    """The entry of largest magnitude, with its sign."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    return float(flat[int(np.argmax(np.abs(flat)))])


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
            f"{where}: a {what} of {_signed_max(out):g} after folding, beyond the magnitude limit "
            f"{MAX_ABS_WEIGHT:g} for weights"
        )
    return out


def _converts_back(source: np.ndarray, result: np.ndarray) -> bool:
    """True when converting ``result`` back to ``source``'s type gives exactly ``source``
    (the conversion lost nothing, so every implementation computes the same value)."""
    source, result = np.asarray(source), np.asarray(result)
    if source.shape != result.shape or source.dtype.kind not in "fiub" or result.dtype.kind not in "fiub":
        return False
    with np.errstate(all="ignore"):
        try:
            return bool(np.array_equal(result.astype(source.dtype), source))
        except (TypeError, ValueError, OverflowError):
            return False


def _object_diag(v: np.ndarray) -> np.ndarray:
    n = len(v)
    out = np.empty((n, n), dtype=object)
    out[:] = Fraction(0)
    for i in range(n):
        out[i, i] = v[i]
    return out
