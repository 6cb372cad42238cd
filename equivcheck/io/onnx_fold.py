"""Constant folding for the ONNX importer: nodes off the data path become constants.

The meaning of a constant is what onnxruntime computes for it. Operators that only move or
select data, or cannot round (``EXACT_FOLD_OPS``; a Cast only when its result converts back to
its input exactly) are folded by the ONNX reference evaluator after their input types are checked
against the operator's schema; any other operator is evaluated by onnxruntime itself, so the
folded value is bit-identical to the one onnxruntime uses, and the node is named in a note.
Random operators are refused, and the size of every result is checked (from shape inference)
before it is computed.
"""

from __future__ import annotations

import math

import numpy as np

from equivcheck.errors import ModelFileError, ModelValueError, UnsupportedModelError
from equivcheck.io.onnx_files import check_constant_entries
from equivcheck.io.onnx_graph import GraphContext, node_name

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


class ConstantFolder:
    """Folds the constant nodes of one graph into ``ctx.consts`` and remembers which nodes
    onnxruntime evaluated (for :meth:`notes`)."""

    def __init__(self, ctx: GraphContext) -> None:
        self.ctx = ctx
        self.ort_folded: dict[str, list[str]] = {}  # dtype -> nodes folded by onnxruntime

    def fold(self, node) -> None:
        """Evaluate ``node`` (all of whose inputs are constants) into ``ctx.consts``.

        Promises: the stored value is the reference evaluator's for an exact operator and
        onnxruntime's otherwise; raises an ``InputError`` subclass naming the node for a random,
        unknown, ill-typed or oversized constant.
        """
        ctx = self.ctx
        op = node.op_type
        if op == "Constant":
            ctx.consts[node.output[0]] = self.constant_value(node)
            return
        if op == "Shape":
            raise UnsupportedModelError(f"{ctx.where(node)}: Shape of a constant is not supported")
        if op in RANDOM_OPS or (op == "Dropout" and ctx.dropout_training(node)):
            raise UnsupportedModelError(
                f"{ctx.where(node)}: {op} is random; a constant must be deterministic"
            )
        for name in node.input:
            if name and name not in ctx.consts:
                raise UnsupportedModelError(
                    f"{ctx.where(node)}: input '{name}' is neither a constant nor the data path "
                    "(nor a tensor defined before this node)"
                )
        if op in ("DequantizeLinear", "QuantizeLinear") and node.domain in ("", "ai.onnx"):
            self.fold_quantization(node)
            return
        exact = op in EXACT_FOLD_OPS and node.domain in ("", "ai.onnx")
        dequantized = [n for n in node.input if n in ctx.dequantized]
        if dequantized and not exact:
            self.narrow_dequantized(node, dequantized)
        if exact:
            self.check_input_types(node)
            k = SIZE_INPUTS.get(op)
            if k is not None and len(node.input) > k and np.any(ctx.consts[node.input[k]] < 0):
                raise ModelValueError(
                    f"{ctx.where(node)}: input '{node.input[k]}' holds a negative size "
                    f"{ctx.consts[node.input[k]].ravel().tolist()[:8]}"
                )
        model = self.single_node_model(node, strict=exact)
        results = self.reference_fold(node, model) if exact else None
        if results is not None and op in ("Cast", "CastLike"):
            source = ctx.consts[node.input[0]]
            if not converts_back(source, results[0]):
                results = None
        if results is None:
            results = self.ort_fold(node, model)
            dtype = results[0].dtype.name if results else "?"
            self.ort_folded.setdefault(dtype, []).append(node_name(node))
        for name, value in zip([o for o in node.output if o], results):
            value = np.asarray(value)
            # shape inference could not tell the size beforehand
            check_constant_entries(value.size, f"{ctx.where(node)}: the constant '{name}'")
            ctx.consts[name] = value
            if dequantized and exact and value.dtype.kind == "f":  # moved dequantized values
                marks = [ctx.dequantized[n] for n in dequantized]
                ctx.dequantized[name] = (marks[0][0], all(m[1] for m in marks))

    def fold_quantization(self, node) -> None:
        """A DequantizeLinear or QuantizeLinear of constants, in exact arithmetic (see
        :mod:`equivcheck.io.onnx_qgrid`): a dequantized value is kept in float64 (exact) and
        marked with the float type ONNX gives it."""
        from equivcheck.io.onnx_qgrid import fold_dequantize, fold_quantize

        ctx = self.ctx
        for name in node.input[:3]:
            if name:
                ctx.const(node, name)
        if node.op_type == "DequantizeLinear":
            value, ftype, exact = fold_dequantize(ctx, node)
            ctx.consts[node.output[0]] = value
            ctx.dequantized[node.output[0]] = (ftype, exact)
        else:
            ctx.consts[node.output[0]] = fold_quantize(ctx, node)

    def narrow_dequantized(self, node, names: list[str]) -> None:
        """Before onnxruntime folds ``node``: its dequantized inputs (held exactly in float64)
        become their float type again, which must hold them exactly; else the node is refused."""
        ctx = self.ctx
        for name in names:
            ftype, exact = ctx.dequantized[name]
            value = ctx.consts[name]
            narrow = value.astype(ftype)
            if not exact or not np.array_equal(narrow.astype(np.float64), value):
                raise UnsupportedModelError(
                    f"{ctx.where(node)}: input '{name}' is a dequantized constant that {ftype} "
                    "cannot hold exactly; this operator on it is not supported")
            ctx.consts[name] = narrow
            del ctx.dequantized[name]

    def notes(self) -> list[str]:
        """One note per element type naming the nodes onnxruntime folded (at most 8 shown)."""
        out = []
        for dtype, nodes in self.ort_folded.items():
            shown = ", ".join(nodes[:8]) + (f" and {len(nodes) - 8} more" if len(nodes) > 8 else "")
            out.append(f"constant subgraph {shown} folded as onnxruntime computes it ({dtype})")
        return out

    def constant_value(self, node) -> np.ndarray:
        """The value of a Constant node, with the element type ONNX gives it."""
        from equivcheck.io.onnx_proto import tensor_to_array

        where = self.ctx.where(node)
        for attr in node.attribute:
            if attr.name == "value":
                check_constant_entries(math.prod(int(d) for d in attr.t.dims), f"{where}: the constant")
                try:
                    return tensor_to_array(attr.t)
                except Exception as exc:
                    raise ModelFileError(f"{where}: value cannot be read ({exc})") from None
            if attr.name == "value_float":
                return np.array(attr.f, dtype=np.float32)
            if attr.name == "value_floats":
                return np.array(list(attr.floats), dtype=np.float32)
            if attr.name == "value_int":
                return np.array(attr.i, dtype=np.int64)
            if attr.name == "value_ints":
                return np.array(list(attr.ints), dtype=np.int64)
        raise UnsupportedModelError(f"{where}: unsupported Constant attribute")

    def single_node_model(self, node, strict: bool):
        """A model computing ``node`` from its constant inputs (as initializers), with output
        types and shapes from ONNX shape inference; refuses a result past the size limit.

        With ``strict``, a node that fails ONNX type and shape inference is refused (the
        reference evaluator accepts inputs onnxruntime refuses, such as float Gather indices).
        """
        from onnx import TensorProto, helper, numpy_helper, shape_inference

        ctx = self.ctx
        names = list(dict.fromkeys(n for n in node.input if n))
        inits = [numpy_helper.from_array(ctx.consts[n], n) for n in names]
        outputs = [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in node.output if o]
        graph = helper.make_graph([node], "fold", [], outputs, initializer=inits)
        model = helper.make_model(graph, opset_imports=ctx.proto.opset_import)
        model.ir_version = max(int(ctx.proto.ir_version), 4)
        try:
            inferred = shape_inference.infer_shapes(model, strict_mode=strict, data_prop=True)
        except Exception as exc:
            if strict:
                first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
                raise ModelValueError(f"{ctx.where(node)}: invalid constant operator ({first})") from None
            return model  # evaluated anyway; the result's size is checked afterwards
        for out in inferred.graph.output:
            dims = out.type.tensor_type.shape.dim
            if all(d.HasField("dim_value") for d in dims):
                check_constant_entries(math.prod(d.dim_value for d in dims),
                                       f"{ctx.where(node)}: the constant '{out.name}'", "would have")
        return inferred

    def check_input_types(self, node) -> None:
        """The constant inputs of a default-domain node have types its ONNX schema allows, and
        inputs bound to one type parameter share a type (as onnxruntime requires)."""
        from onnx import TensorProto, defs, helper

        ctx = self.ctx
        version = next((o.version for o in ctx.proto.opset_import if o.domain in ("", "ai.onnx")), None)
        try:
            schema = defs.get_schema(node.op_type, version or defs.onnx_opset_version(), "")
        except Exception:
            raise UnsupportedModelError(
                f"{ctx.where(node)}: operator {node.op_type} is unknown in opset {version}"
            ) from None
        allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
        formals = list(schema.inputs)
        variadic = bool(formals) and formals[-1].option == defs.OpSchema.FormalParameterOption.Variadic
        if len(node.input) > len(formals) and not variadic:
            raise ModelValueError(f"{ctx.where(node)}: {len(node.input)} inputs, the operator takes {len(formals)}")
        bound: dict[str, str] = {}
        for k, name in enumerate(node.input):
            if not name:
                continue
            formal = formals[min(k, len(formals) - 1)]
            value = ctx.consts[name]
            try:
                elem = helper.np_dtype_to_tensor_dtype(value.dtype)
            except Exception:
                raise ModelValueError(f"{ctx.where(node)}: input '{name}' has dtype {value.dtype}") from None
            actual = f"tensor({TensorProto.DataType.Name(elem).lower()})"
            if actual not in allowed.get(formal.type_str, {formal.type_str}):
                raise ModelValueError(
                    f"{ctx.where(node)}: input '{name}' has type {actual}, which {node.op_type} "
                    f"does not accept as {formal.name}"
                )
            if bound.setdefault(formal.type_str, actual) != actual:
                raise ModelValueError(
                    f"{ctx.where(node)}: inputs of one type parameter have types "
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
                f"{self.ctx.where(node)}: cannot evaluate constant operator ({exc})"
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
                f"{self.ctx.where(node)}: onnxruntime cannot evaluate this constant operator ({first})"
            ) from None


def converts_back(source: np.ndarray, result: np.ndarray) -> bool:
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
