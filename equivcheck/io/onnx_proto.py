"""The ONNX protobuf classes without the cost of ``import onnx``.

``import onnx`` loads its whole helper API, and with it ``ml_dtypes``, whose extension takes over
a second to initialise on a small machine: most of the wall time of a small ``equivcheck prove``.
Reading a model needs only the generated protobuf module (``onnx.onnx_ml_pb2``: ``ModelProto``,
``TensorProto``, ``AttributeProto``), which depends on protobuf alone. :func:`pb2` loads that
file from the installed onnx package under its own name, so a later ``import onnx`` reuses it
(one module object: ``onnx.ModelProto is pb2().ModelProto``); anything unusual (onnx already
imported, another layout) falls back to ``import onnx``.

:func:`tensor_to_array` and :func:`attribute_value` do what ``onnx.numpy_helper.to_array`` and
``onnx.helper.get_attribute_value`` do for the types a ReLU network's constants use, and hand
anything else to them.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from types import ModuleType
from typing import Any

import numpy as np

_PB2 = "onnx.onnx_ml_pb2"
_LOCK = threading.Lock()  # the module is executed once, whichever thread asks first

# TensorProto element type -> (numpy dtype, typed field) for the fast path of tensor_to_array
_PLAIN_TYPES = {
    1: (np.dtype("<f4"), "float_data"),  # FLOAT
    6: (np.dtype("<i4"), "int32_data"),  # INT32
    7: (np.dtype("<i8"), "int64_data"),  # INT64
    11: (np.dtype("<f8"), "double_data"),  # DOUBLE
}


def pb2() -> ModuleType:
    """The module of ONNX's protobuf messages (``ModelProto``, ``TensorProto``, ...), loaded
    without importing the rest of onnx when onnx is not imported yet."""
    mod = sys.modules.get(_PB2)
    if mod is not None and getattr(mod, "ModelProto", None) is not None:
        return mod
    with _LOCK:
        mod = sys.modules.get(_PB2)
        if mod is not None and getattr(mod, "ModelProto", None) is not None:
            return mod
        if "onnx" not in sys.modules:
            mod = _load_pb2_alone()
            if mod is not None:
                return mod
    return full_onnx().onnx_ml_pb2


def full_onnx() -> ModuleType:
    """``import onnx`` (the whole API: helper, checker, shape inference, serialization)."""
    import onnx

    if getattr(onnx, "onnx_ml_pb2", None) is None and _PB2 in sys.modules:
        onnx.onnx_ml_pb2 = sys.modules[_PB2]  # loaded by pb2() before onnx: attach it as import would
    return onnx


def is_model_proto(obj: Any) -> bool:
    """True when ``obj`` is an ``onnx.ModelProto`` (imports nothing: a ModelProto can only exist
    once its module is loaded)."""
    mod = sys.modules.get(_PB2)
    if mod is not None and isinstance(obj, mod.ModelProto):
        return True
    onnx = sys.modules.get("onnx")
    model_proto = getattr(onnx, "ModelProto", None)
    return model_proto is not None and isinstance(obj, model_proto)


def _load_pb2_alone() -> ModuleType | None:
    """Execute ``onnx/onnx_ml_pb2.py`` as ``onnx.onnx_ml_pb2`` without the package's
    ``__init__``; None (and nothing left behind) if that does not work here."""
    try:
        spec = importlib.util.find_spec("onnx")
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        path = next((os.path.join(d, "onnx_ml_pb2.py") for d in locations
                     if os.path.isfile(os.path.join(d, "onnx_ml_pb2.py"))), None)
        if path is None:
            return None
        sub = importlib.util.spec_from_file_location(_PB2, path)
        if sub is None or sub.loader is None:
            return None
        mod = importlib.util.module_from_spec(sub)
        sys.modules[_PB2] = mod
        try:
            sub.loader.exec_module(mod)
        except BaseException:
            sys.modules.pop(_PB2, None)
            raise
        return mod if getattr(mod, "ModelProto", None) is not None else None
    except Exception:
        return None


def tensor_to_array(tensor) -> np.ndarray:
    """The value of a ``TensorProto`` as ``onnx.numpy_helper.to_array`` gives it (float32,
    float64, int32 and int64 directly; every other type by onnx itself)."""
    plain = _PLAIN_TYPES.get(tensor.data_type)
    if plain is None or tensor.HasField("segment") or tensor.data_location != 0 or sys.byteorder != "little":
        return full_onnx().numpy_helper.to_array(tensor)
    dtype, field = plain
    dims = tuple(tensor.dims)
    if tensor.HasField("raw_data"):
        return np.frombuffer(tensor.raw_data, dtype=dtype).reshape(dims)
    return np.asarray(getattr(tensor, field), dtype=dtype).reshape(dims)


def attribute_value(attr) -> Any:
    """The value of an ``AttributeProto`` as ``onnx.helper.get_attribute_value`` gives it for
    numbers and lists of numbers; every other type by onnx itself."""
    kinds = pb2().AttributeProto
    if not attr.ref_attr_name:
        if attr.type == kinds.FLOAT:
            return attr.f
        if attr.type == kinds.INT:
            return attr.i
        if attr.type == kinds.FLOATS:
            return list(attr.floats)
        if attr.type == kinds.INTS:
            return list(attr.ints)
    return full_onnx().helper.get_attribute_value(attr)
