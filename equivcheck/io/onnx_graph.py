"""Graph validation for the ONNX importer: the graph's constants, its node attributes, its one
input and its single definitions, each refused with a message naming the file, node or value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from equivcheck.core.network import MAX_ABS_WEIGHT, MAX_WIDTH
from equivcheck.errors import ModelFileError, ModelValueError, UnsupportedModelError
from equivcheck.io.onnx_files import check_constant_entries, refuse_unloaded_external
from equivcheck.io.onnx_proto import attribute_value, pb2, tensor_to_array

# ONNX element types the data may have, by TensorProto code
FLOAT_TYPES = {1: "float32", 11: "float64"}


@dataclass(frozen=True)
class GraphInput:
    """The graph's one data input: its name, declared shape (-1 for a symbolic dimension), the
    shape the importer walks with (symbolic dimensions taken as 1) and its float type."""

    name: str
    declared_shape: tuple[int, ...]
    shape: tuple[int, ...]
    dtype: str


class GraphContext:
    """One graph being imported: its constants by name (initializers, Constant nodes and folded
    values) and the checks every node goes through. Errors name ``label`` and the node."""

    def __init__(self, proto, label: str) -> None:
        self.proto = proto
        self.label = label
        self.graph = proto.graph
        self.consts: dict[str, np.ndarray] = {}
        # dequantized constants, held exactly in float64: name -> (float type ONNX gives them,
        # whether float64 holds them exactly)
        self.dequantized: dict[str, tuple[str, bool]] = {}

    def where(self, node) -> str:
        """The prefix of every message about ``node``: file, node name and operator."""
        return f"{self.label}: node '{node_name(node)}' ({node.op_type})"

    # -- the graph as a whole ------------------------------------------------------------------
    def read_initializers(self) -> None:
        """Load every initializer into ``consts``; refuses external data that was not loaded
        from the model's path, and initializers past the size limit or unreadable."""
        refuse_unloaded_external(self.graph, self.label)
        for init in self.graph.initializer:
            check_constant_entries(math.prod(int(d) for d in init.dims),
                                   f"{self.label}: initializer '{init.name}'")
            try:
                self.consts[init.name] = tensor_to_array(init)
            except Exception as exc:
                raise ModelFileError(
                    f"{self.label}: initializer '{init.name}' cannot be read ({exc})"
                ) from None

    def data_input(self) -> GraphInput:
        """The one non-constant graph input (float32 or float64, at most ``MAX_WIDTH`` values),
        after checking the graph has exactly one output; call after :meth:`read_initializers`."""
        g = self.graph
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
        declared = declared_shape(ttype)
        shape = tuple(1 if d <= 0 else d for d in declared)
        n_in = math.prod(shape)
        if n_in > MAX_WIDTH:
            raise UnsupportedModelError(
                f"{self.label}: input '{inp.name}' of shape {declared} has {n_in:,} values "
                f"(equivcheck handles inputs of up to {MAX_WIDTH:,})"
            )
        return GraphInput(inp.name, declared, shape, FLOAT_TYPES[ttype.elem_type])

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

    # -- one node ------------------------------------------------------------------------------
    def const(self, node, name: str) -> np.ndarray:
        """The constant ``name`` used by ``node``; refuses a name that is not a constant (a
        branch of the data path) and a float constant holding a non-finite value or one beyond
        ``MAX_ABS_WEIGHT`` in magnitude."""
        if name not in self.consts:
            raise UnsupportedModelError(
                f"{self.where(node)}: input '{name}' is neither a constant nor the data path "
                "(nor a tensor defined before this node)"
            )
        value = self.consts[name]
        if value.dtype.kind == "f" and value.size:
            if not np.all(np.isfinite(value)):
                bad = value.ravel()[~np.isfinite(value.ravel())][0]
                raise ModelValueError(f"{self.where(node)}: constant '{name}' contains {bad}")
            big = float(np.max(np.abs(value)))
            if big > MAX_ABS_WEIGHT:
                raise ModelValueError(
                    f"{self.where(node)}: constant '{name}' contains {signed_max(value):g}, beyond "
                    f"the magnitude limit {MAX_ABS_WEIGHT:g} for weights"
                )
        return value

    def attr(self, node, name: str, default, kind: str | None = None):
        """The attribute ``name`` of ``node`` (``default`` when absent), refusing one of the wrong
        type; ``kind`` ("int", "float", "ints") defaults to the type of ``default``."""
        AttributeProto = pb2().AttributeProto

        kind = kind or ("float" if isinstance(default, float) else "int")
        want = {"int": AttributeProto.INT, "float": AttributeProto.FLOAT, "ints": AttributeProto.INTS}[kind]
        for a in node.attribute:
            if a.name == name:
                if a.type != want:
                    raise ModelValueError(
                        f"{self.where(node)}: attribute {name} has type "
                        f"{AttributeProto.AttributeType.Name(a.type)}, expected {kind}"
                    )
                value = attribute_value(a)
                return list(value) if kind == "ints" else value
        return default

    def check_attributes(self, node) -> None:
        """Every float attribute must be finite; control flow (subgraph attributes) is refused."""
        AttributeProto = pb2().AttributeProto

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

    def dropout_training(self, node) -> bool:
        """True when a Dropout runs in training mode (a constant true ``training_mode`` input)."""
        if len(node.input) > 2 and node.input[2]:
            flag = self.const(node, node.input[2])
            return bool(np.any(flag))
        return False


def declared_shape(tensor_type) -> tuple[int, ...]:
    """The shape a value info declares, -1 for a dimension without a fixed value."""
    return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)


def node_name(node) -> str:
    """A node's name for messages: its name, else its first output, else its operator."""
    return node.name or (node.output[0] if node.output else node.op_type)


def signed_max(values: np.ndarray) -> float:
    """The entry of largest magnitude, with its sign."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    return float(flat[int(np.argmax(np.abs(flat)))])
