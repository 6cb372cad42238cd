"""Models as users hand them over, loaded for a check: the one loader of every command.

A model is an ONNX path, an ``onnx.ModelProto``, a :class:`~equivcheck.core.network.Network`, a
``torch.nn.Module`` or a :class:`~equivcheck.io.torch_export.TorchModel`. :func:`load_for_check`
turns one into the network to prove and the ONNX model onnxruntime re-runs counterexamples on;
:func:`load_models` does it for a pair, giving a torch module without a known input shape the
other model's input shape (else the domain's dimension). A Softmax/LogSoftmax head is set aside
when the spec allows it (:attr:`~equivcheck.core.spec.Spec.accepts_head`); onnxruntime then runs
the model without its head, so its outputs are the logits the spec is about.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from equivcheck.core.network import Network
from equivcheck.core.quantized import QuantizedNetwork
from equivcheck.core.spec import Spec
from equivcheck.errors import UnsupportedModelError
from equivcheck.io.onnx_files import ModelLike, load_model
from equivcheck.io.onnx_head import without_head
from equivcheck.io.onnx_import import import_graph, model_label
from equivcheck.io.torch_export import TorchModel, export_module, guess_input_shape, is_torch_module


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model ready for a check: ``net``, the network to prove; ``proto``, the ONNX model
    onnxruntime re-runs a counterexample on (its head removed when the network's was; None for
    a model given as a :class:`Network`); ``head``, the operator of the head set aside (None:
    none)."""

    net: Network | QuantizedNetwork
    proto: Any
    head: str | None = None


def load_for_check(model: ModelLike | Network | QuantizedNetwork, spec: Spec | None = None, *,
                   input_shape: tuple[int, ...] | None = None, name: str | None = None,
                   quantized_ok: bool = False) -> LoadedModel:
    """Load one model for a check under ``spec`` (None: no head is accepted).

    A quantized ONNX model (or a :class:`QuantizedNetwork`) is refused with one line unless
    ``quantized_ok``.

    A torch module is exported at ``input_shape`` when it is not a :class:`TorchModel` and no
    shape can be guessed from its first layer. Raises an
    :class:`~equivcheck.errors.InputError` naming the model for anything it cannot load.
    """
    if isinstance(model, Network):
        return LoadedModel(model, None)
    if isinstance(model, QuantizedNetwork):
        if not quantized_ok:
            raise UnsupportedModelError(
                f"{model.source}: a quantized model: only `prove`, `audit`, `compress` and the "
                "pytest plugin take quantized models")
        return LoadedModel(model, None)
    label = name or model_label(model)
    if is_torch_module(model) and input_shape is not None:
        model = TorchModel(model, input_shape)
    proto = load_model(model)
    net, head = import_graph(proto, label, head_ok=spec is not None and spec.accepts_head,
                             quantized_ok=quantized_ok)
    if head is None:
        return LoadedModel(net, proto)
    return LoadedModel(net, without_head(proto, head), head.op)


def load_models(a: ModelLike | Network, b: ModelLike | Network, spec: Spec | None = None, *,
                dim: int | None = None, quantized_ok: bool = False) -> tuple[LoadedModel, LoadedModel]:
    """Load a pair for a check under ``spec`` (see :func:`load_for_check`; ``quantized_ok``
    is passed on).

    A torch module with no shape of its own (not a :class:`TorchModel`, no first
    ``nn.Linear``) is exported at the other model's input shape when that one is not a bare
    module, else at ``(1, dim)`` when the caller knows the domain's dimension ``dim``.
    """
    la, lb = model_label(a) if not isinstance(a, (Network, QuantizedNetwork)) else a.source, \
        model_label(b) if not isinstance(b, (Network, QuantizedNetwork)) else b.source
    if la == lb and is_torch_module(a) and is_torch_module(b):
        la, lb = f"{la} (a)", f"{lb} (b)"
    fallback = (1, dim) if dim is not None else None
    bare_a = is_torch_module(a) and guess_input_shape(a) is None
    bare_b = is_torch_module(b) and guess_input_shape(b) is None
    if bare_a and not bare_b:
        mb = load_for_check(b, spec, input_shape=fallback, name=lb, quantized_ok=quantized_ok)
        ma = load_for_check(a, spec, input_shape=_shape_of(mb.net), name=la, quantized_ok=quantized_ok)
        return ma, mb
    ma = load_for_check(a, spec, input_shape=fallback, name=la, quantized_ok=quantized_ok)
    mb = load_for_check(b, spec, input_shape=_shape_of(ma.net) if bare_b else fallback, name=lb,
                        quantized_ok=quantized_ok)
    return ma, mb


def _shape_of(net: Network | QuantizedNetwork) -> tuple[int, ...]:
    """The input shape to export a module at, like ``net``'s (symbolic sizes as 1)."""
    shape = tuple(1 if d <= 0 else d for d in net.input_shape)
    return shape or (1, net.in_dim)


__all__ = ["LoadedModel", "TorchModel", "export_module", "load_for_check", "load_models"]
