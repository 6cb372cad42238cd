"""torch modules as models: exported through ``torch.onnx`` into an in-memory ONNX model.

A ``torch.nn.Module`` (or a :class:`TorchModel`, a module with the input shape to export it at)
is accepted wherever a model is. It is exported in evaluation mode with the TorchScript-based
exporter (``dynamo=False``: the default exporter needs onnxscript), at a zero example input of
its input shape, and the exported ONNX model is what gets imported, proved and re-run in
onnxruntime. torch is never imported here just to look: a module can only exist once the caller
imported torch.

The input shape, when not given, is ``(1, in_features)`` of the module's first layer that has
one (an ``nn.Linear``); a module that starts with a convolution needs its shape given
(:class:`TorchModel`), or taken by the caller from the other model or the domain.
"""

from __future__ import annotations

import io
import math
import sys
import warnings
from dataclasses import dataclass
from typing import Any

from equivcheck.core.network import MAX_WIDTH
from equivcheck.errors import InputError, UnsupportedModelError
from equivcheck.io.onnx_proto import pb2


@dataclass(frozen=True, eq=False)
class TorchModel:
    """A ``torch.nn.Module`` with the input shape to export it at, batch dimension included
    (for example ``(1, 1, 28, 28)``)."""

    module: Any
    input_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not is_torch_module(self.module):
            raise InputError(f"TorchModel needs a torch.nn.Module, got a {type(self.module).__name__}")
        object.__setattr__(self, "input_shape", check_shape(self.input_shape, label(self.module)))


def is_torch_module(obj: Any) -> bool:
    """True for a ``torch.nn.Module`` (False, without importing torch, when torch is not loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def is_torch_model(obj: Any) -> bool:
    """True for a ``torch.nn.Module`` or a :class:`TorchModel`."""
    return isinstance(obj, TorchModel) or is_torch_module(obj)


def label(module: Any) -> str:
    """How messages name a module: ``torch Sequential``."""
    return f"torch {type(module).__name__}"


def check_shape(shape: Any, where: str) -> tuple[int, ...]:
    """``shape`` as a tuple of positive ints of at most ``MAX_WIDTH`` values; an
    :class:`InputError` naming ``where`` otherwise."""
    try:
        dims = tuple(shape)
    except TypeError:
        raise InputError(f"{where}: input shape {shape!r} is not a sequence of sizes") from None
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise InputError(f"{where}: input shape {shape!r} must be positive whole sizes")
    if math.prod(dims) > MAX_WIDTH:
        raise UnsupportedModelError(
            f"{where}: input shape {dims} has {math.prod(dims):,} values "
            f"(equivcheck handles inputs of up to {MAX_WIDTH:,})"
        )
    return dims


def guess_input_shape(module: Any) -> tuple[int, ...] | None:
    """``(1, in_features)`` of the first submodule (registration order) that has
    ``in_features``, unless a convolution comes before it; None when there is none."""
    for sub in module.modules():
        if type(sub).__name__.startswith(("Conv", "LazyConv")):
            return None
        n = getattr(sub, "in_features", None)
        if isinstance(n, int) and n > 0:
            return (1, n)
    return None


def export_module(model: Any, input_shape: tuple[int, ...] | None = None):
    """The ONNX model (a ``ModelProto``) of a module or :class:`TorchModel`, exported in memory.

    The shape is the :class:`TorchModel`'s, else ``input_shape``, else
    :func:`guess_input_shape`. Raises an :class:`InputError` naming the module when no shape is
    known or when ``torch.onnx.export`` fails; the module's training mode is restored.
    """
    module = model.module if isinstance(model, TorchModel) else model
    where = label(module)
    shape = model.input_shape if isinstance(model, TorchModel) else input_shape
    if shape is None:
        shape = guess_input_shape(module)
    if shape is None:
        raise InputError(
            f"{where}: cannot tell its input shape (its first layer is not nn.Linear); pass "
            "equivcheck.TorchModel(module, input_shape=(1, ...))"
        )
    shape = check_shape(shape, where)
    import torch

    params = [p for p in module.parameters()][:1]
    dtype = params[0].dtype if params and params[0].dtype == torch.float64 else torch.float32
    buffer = io.BytesIO()
    was_training = module.training
    try:
        module.eval()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (torch.zeros(shape, dtype=dtype),), buffer, dynamo=False,
                              input_names=["input"], output_names=["output"])
    except Exception as exc:  # noqa: BLE001 - any exporter failure is the user's module
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise InputError(
            f"{where}: torch.onnx.export failed at input shape {shape}: {type(exc).__name__}: {first}"
        ) from None
    finally:
        module.train(was_training)
    proto = pb2().ModelProto()
    proto.ParseFromString(buffer.getvalue())
    return proto
