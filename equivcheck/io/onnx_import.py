"""ONNX import: an ONNX graph of affine and piecewise linear operators becomes a
:class:`~equivcheck.core.network.Network`.

The entry points are :func:`load_model` (read a model file safely) and :func:`load_network`
(import it). The importer walks the nodes once, in their (topological) order. Every live data
tensor is an exact affine map of the *anchor*, the outputs of the last layer closed (at first
the graph input); linear operators compose into these maps, and a ReLU (or another piecewise
linear activation, or a level of a max) closes a layer whose units are the ReLU's rows plus
pass-through units for every other tensor a later node reads (see
:class:`~equivcheck.io.onnx_affine.DataPath`). A straight chain imports exactly as it always
did; a residual block's skip connection is carried by stably active units. The work is split
along its seams:

* :mod:`equivcheck.io.onnx_files`: reading model files and external data safely;
* :mod:`equivcheck.io.onnx_graph`: the graph's constants, attributes, input and definitions;
* :mod:`equivcheck.io.onnx_fold`: nodes off the data path (all inputs constant) folded to
  constants, exactly or as onnxruntime computes them (then named in ``Network.notes``);
* :mod:`equivcheck.io.onnx_ops`, :mod:`equivcheck.io.onnx_ops_cnn`,
  :mod:`equivcheck.io.onnx_ops_index`, :mod:`equivcheck.io.onnx_ops_dag`: one handler per
  operator on the data path, from a registry (dense maps; convolution, pooling and activations;
  selections and sums; nodes reading several data tensors);
* :mod:`equivcheck.io.onnx_affine` and :mod:`equivcheck.io.onnx_sparse`: the affine maps
  between two layers, dense or sparse, composed exactly;
* :mod:`equivcheck.io.onnx_quant`, :mod:`equivcheck.io.onnx_qops` and
  :mod:`equivcheck.io.onnx_qgrid`: quantized models (QuantizeLinear/DequantizeLinear on the
  data, QOperator nodes), imported as a :class:`~equivcheck.core.quantized.QuantizedNetwork`.

Anything else on the data path is an :class:`~equivcheck.errors.UnsupportedModelError` naming the
operator and node; bad attributes or values (non-finite attributes, negative variances,
impossible permutations, weights beyond ``MAX_ABS_WEIGHT``) are a
:class:`~equivcheck.errors.ModelValueError`; models past the size limits of
:mod:`equivcheck.core.network` are refused before anything dense is allocated. Convolutions,
pooling and skip connections give sparse layers: memory linear in their stored entries.
"""

from __future__ import annotations

import math

from equivcheck.core.network import MAX_WIDTH, Network
from equivcheck.core.quantized import QuantizedNetwork
from equivcheck.errors import ModelValueError, UnsupportedModelError
from equivcheck.io.onnx_affine import DataPath, MapKind, PendingMap
from equivcheck.io.onnx_files import ModelLike, load_model
from equivcheck.io.onnx_fold import ConstantFolder
from equivcheck.io.onnx_graph import FLOAT_TYPES, GraphContext, declared_shape
from equivcheck.io.onnx_head import OutputHead, check_head, find_head
from equivcheck.io.onnx_ops import apply_op
from equivcheck.io.onnx_ops_cnn import SIGN_KEEPING_OPS
from equivcheck.io.onnx_ops_dag import MULTI_DATA_OPS, shape_of
from equivcheck.io.onnx_ops_index import INDEX_OPS
from equivcheck.io.onnx_proto import is_model_proto
from equivcheck.io.onnx_qops import visit_qop
from equivcheck.io.onnx_quant import grid_after, quant_visit

__all__ = ["ModelLike", "import_graph", "load_model", "load_network", "model_label"]


def load_network(model: ModelLike, name: str | None = None, *, head_ok: bool = False,
                 quantized_ok: bool = False) -> Network | QuantizedNetwork:
    """Import an ONNX model (path or ``ModelProto``; a torch module is exported first, see
    :func:`~equivcheck.io.onnx_files.load_model`) as a :class:`Network`.

    Promises: the network computes, in exact arithmetic, the function the ONNX graph defines on
    its stored weights, with constant subgraphs valued as onnxruntime computes them (up to
    float64 folding of BatchNormalization; both recorded in ``notes``). The one exception is a
    trailing Softmax/LogSoftmax head (:mod:`equivcheck.io.onnx_head`): with ``head_ok`` it is
    set aside, the network computes the logits before it and its notes say so; without, it is
    refused with the reason.
    A quantized model (QuantizeLinear on the data, QOperator nodes; see
    :mod:`equivcheck.io.onnx_quant`) is a :class:`QuantizedNetwork` computing the ONNX spec's
    rounding exactly; it is refused unless ``quantized_ok``. Weight-only quantization
    (DequantizeLinear of constants) gives a plain :class:`Network` with the exact weights.
    Raises an :class:`~equivcheck.errors.InputError` subclass naming the file, node or value
    for anything it cannot import.
    """
    label = name or model_label(model)
    return import_graph(load_model(model), label, head_ok, quantized_ok)[0]


def model_label(model) -> str:
    """How messages and results name a model: its path, ``torch <class>`` for a torch module,
    the graph's name (else ``<model>``) for a ``ModelProto``."""
    from equivcheck.io.torch_export import TorchModel, is_torch_module, label

    if isinstance(model, TorchModel):
        return label(model.module)
    if is_torch_module(model):
        return label(model)
    if is_model_proto(model):
        return model.graph.name or "<model>"
    return str(model)


def import_graph(proto, label: str, head_ok: bool = False,
                 quantized_ok: bool = False) -> tuple[Network | QuantizedNetwork, OutputHead | None]:
    """The network of a loaded ``ModelProto`` (messages name ``label``), and the
    Softmax/LogSoftmax head it set aside (only with ``head_ok``; else a head is refused), or
    None. Promises what :func:`load_network` promises."""
    ctx = GraphContext(proto, label)
    ctx.read_initializers()
    inp = ctx.data_input()
    ctx.check_single_definitions()
    path = DataPath(ctx, tensor=inp.name, shape=inp.shape, dtype=inp.dtype,
                    pending=PendingMap(n=math.prod(inp.shape)), quantized_ok=quantized_ok)
    path.store(inp.name)
    nodes = ctx.graph.node
    path.last_use = last_uses(ctx.graph)
    folder = ConstantFolder(ctx)
    head, set_aside = find_head(ctx.graph), None
    for index, node in enumerate(nodes):
        path.index = index
        if head is not None and index == head.index and head.logits in path.live:
            ctx.check_attributes(node)
            path.load(head.logits)
            path.notes.append(check_head(ctx, node, tuple(path.shape), head_ok))
            path.store(node.output[0])
            set_aside = head
        else:
            _visit(path, folder, node)
        path.drop_dead()

    label, out = ctx.label, ctx.graph.output[0]
    if out.name not in path.live:
        if out.name in ctx.consts:
            raise UnsupportedModelError(f"{label}: output '{out.name}' does not depend on the input")
        raise UnsupportedModelError(
            f"{label}: output '{out.name}' is not at the end of the data path "
            f"(the path ends at '{path.tensor}')"
        )
    path.load(out.name)
    path.index = len(nodes)
    if path.integer:
        raise UnsupportedModelError(
            f"{label}: output '{out.name}' holds integers ({path.dtype}, a QuantizeLinear output "
            "with no DequantizeLinear after it); only float outputs are supported")
    p = path.pending
    if p.kind is not MapKind.IDENTITY or p.b is not None or not path.layers:
        path.close_layer(relu=False, name="output")
    out_t = out.type.tensor_type
    if out_t.elem_type and FLOAT_TYPES.get(out_t.elem_type) != path.dtype:
        raise ModelValueError(
            f"{label}: output '{out.name}' is declared with element type {out_t.elem_type} "
            f"but the data path computes {path.dtype}"
        )
    out_shape = declared_shape(out_t) or tuple(path.shape)
    declared = math.prod(1 if d <= 0 else d for d in out_shape)
    if declared > MAX_WIDTH:
        raise UnsupportedModelError(
            f"{label}: output '{out.name}' is declared with shape {out_shape}, "
            f"{declared:,} values (equivcheck handles outputs of up to {MAX_WIDTH:,})"
        )
    net = Network(
        layers=tuple(path.layers),
        input_name=inp.name,
        input_shape=inp.declared_shape,
        input_dtype=inp.dtype,
        output_name=out.name,
        output_shape=out_shape,
        source=label,
        notes=tuple(path.notes + folder.notes()),
    )
    if path.input_quant is None and not path.quant:
        return net, set_aside
    quant = tuple(path.quant.get(k) for k in range(len(path.layers)))
    return QuantizedNetwork(net, quant, path.input_quant), set_aside


def last_uses(graph) -> dict[str, int]:
    """For each tensor name, the index of the last node reading it; the graph's outputs are
    read past the end."""
    out: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            if name:
                out[name] = index
    for o in graph.output:
        out[o.name] = len(graph.node)
    return out


def _visit(path: DataPath, folder: ConstantFolder, node) -> None:
    """One node: folded when all its inputs are constants, else applied to the data (a node
    reading several data tensors, or one twice, must be one of ``MULTI_DATA_OPS``), then the
    data's width is checked."""
    where = path.where(node)
    if not node.output or not node.output[0]:
        raise UnsupportedModelError(f"{where}: the node has no output")
    if node.op_type != "Constant":
        path.ctx.check_attributes(node)
    data_inputs = [i for i in node.input if i in path.live]
    if not data_inputs:
        folder.fold(node)
        return
    if visit_qop(path, node) or quant_visit(path, node, data_inputs):
        _store(path, node, where)
        return
    grid, n_before = path.live[data_inputs[0]].grid, math.prod(path.live[data_inputs[0]].shape)
    if node.domain not in ("", "ai.onnx"):
        raise UnsupportedModelError(f"{where}: operator from domain '{node.domain}' is not supported")
    if node.op_type == "Shape":
        shape_of(path, node)
        return
    if node.op_type in MULTI_DATA_OPS and (len(data_inputs) > 1 or node.op_type == "Concat"):
        MULTI_DATA_OPS[node.op_type](path, node)
    elif len(data_inputs) > 1:
        what = "the data tensor twice" if len(set(data_inputs)) == 1 else "two data tensors"
        raise UnsupportedModelError(
            f"{where}: uses {what} (only constant operands are supported for {node.op_type})"
        )
    else:
        path.load(data_inputs[0])
        keeps_sign = node.op_type in SIGN_KEEPING_OPS or node.op_type in INDEX_OPS
        apply_op(path, node)
        path.nonneg = path.nonneg and keeps_sign
    grid_after(path, node, grid if len(data_inputs) == 1 else None, n_before)
    _store(path, node, where)


def _store(path: DataPath, node, where: str) -> None:
    """Record the node's output as the current data and check its width."""
    path.store(node.output[0])
    width = math.prod(path.shape)
    if width > MAX_WIDTH:
        raise UnsupportedModelError(
            f"{where}: the data has {width:,} values (shape {path.shape}); "
            f"equivcheck handles widths up to {MAX_WIDTH:,}"
        )
