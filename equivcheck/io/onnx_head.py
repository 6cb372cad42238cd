"""Softmax and LogSoftmax output heads: found, checked and set aside.

Classifiers are often exported with a trailing Softmax (or LogSoftmax). It is not piecewise
linear, so it cannot be part of a :class:`~equivcheck.core.network.Network`; but it keeps the
order of the outputs, so the top-1 class of the probabilities is the top-1 class of the logits
before it (ties aside, as float rounding may make them). A *head* is a Softmax/LogSoftmax of the
default domain that computes the graph's one output from the data path and normalises over all
of its values (one group). The importer sets it aside when asked (the network then computes the
logits, and its notes say so), refuses it otherwise with :data:`REFUSAL`; :func:`without_head`
gives the model onnxruntime re-runs a counterexample on, whose output is then the same logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from equivcheck.errors import ShapeMismatchError, UnsupportedModelError
from equivcheck.io.onnx_graph import GraphContext, node_name

HEAD_OPS = ("Softmax", "LogSoftmax")

REFUSAL = (
    "strict and epsilon checks would compare its probabilities, which are not piecewise linear; "
    "use --mode argmax or --mode top1 (the head is set aside: it keeps the top class), or "
    "--logits to compare the logits before it"
)


@dataclass(frozen=True)
class OutputHead:
    """The head of a graph: its operator, its node's name and position, and the tensor it reads
    (the logits)."""

    op: str
    name: str
    index: int
    logits: str


def find_head(graph) -> OutputHead | None:
    """The Softmax/LogSoftmax node (default domain) that computes the graph's one output, if
    any. Whether it reads the data path and normalises over all values is checked on the walk
    (:func:`check_head`)."""
    if len(graph.output) != 1:
        return None
    out = graph.output[0].name
    for index, node in enumerate(graph.node):
        if (node.op_type in HEAD_OPS and node.domain in ("", "ai.onnx") and node.input
                and node.output and node.output[0] == out):
            return OutputHead(node.op_type, node_name(node), index, node.input[0])
    return None


def check_head(ctx: GraphContext, node, shape: tuple[int, ...], allowed: bool) -> str:
    """The note saying the head ``node`` (reading data of ``shape``, symbolic sizes as 1) was
    set aside. Raises :class:`UnsupportedModelError` when it is not ``allowed`` (with
    :data:`REFUSAL`) or when it normalises several groups of values separately (then the
    largest probability and the largest logit need not be the same output)."""
    where = ctx.where(node)
    if not allowed:
        raise UnsupportedModelError(f"{where}: the output goes through a {node.op_type} head; {REFUSAL}")
    opset = next((o.version for o in ctx.proto.opset_import if o.domain in ("", "ai.onnx")), 13)
    axis = ctx.attr(node, "axis", -1 if opset >= 13 else 1)
    rank = len(shape)
    if not -rank <= axis < max(rank, 1):
        raise ShapeMismatchError(f"{where}: axis {axis} out of range for data of shape {shape}")
    axis = axis + rank if axis < 0 else axis
    # opset 13 on: one axis; before: the dimensions from ``axis`` on, flattened
    group = shape[axis] if opset >= 13 else math.prod(shape[axis:])
    total = math.prod(shape)
    if group != total:
        raise UnsupportedModelError(
            f"{where}: the {node.op_type} head normalises {total // group} groups of {group} values "
            f"separately (axis {axis} of shape {shape}); only a head over all the outputs is supported"
        )
    return (f"{ctx.label}: the {node.op_type} head (node '{node_name(node)}') was set aside: "
            "the check is about the logits before it")


def without_head(proto, head: OutputHead):
    """A copy of ``proto`` without its head node: its output is the head's input (the logits),
    under that name, with the output's declared type."""
    copy = type(proto)()
    copy.CopyFrom(proto)
    graph = copy.graph
    del graph.node[head.index]
    graph.output[0].name = head.logits
    return copy
