"""Reading ONNX model files safely, and the size limit checked before any constant is allocated.

Only regular files are opened (a FIFO, device, socket or directory is refused before it is opened,
so nothing can block); external tensor data must be regular files inside the model's folder, and
every byte range is checked against the file's size before it is read.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Union

from equivcheck.errors import InputError, ModelFileError, UnsupportedModelError
from equivcheck.io.onnx_proto import full_onnx, is_model_proto, pb2

# A model as users hand it over: a path, an ONNX ModelProto, a torch.nn.Module or a TorchModel
ModelLike = Union[str, os.PathLike, "onnx.ModelProto", "torch.nn.Module", "TorchModel"]  # noqa: F821

# protobuf cannot parse a model file larger than 2 GiB; refuse before reading one.
MAX_MODEL_BYTES = 2**31
# File suffixes onnx reads as text (its serialization registry); any other file is binary protobuf
TEXT_SUFFIXES = frozenset({".pbtxt", ".txtpb", ".prototxt", ".textproto", ".json", ".onnxjson",
                           ".onnxtext", ".onnxtxt"})
# Constants (initializers, Constant nodes, folded values) hold at most this many entries.
MAX_CONSTANT_ENTRIES = 50_000_000


def check_constant_entries(entries: int, subject: str, verb: str = "has") -> None:
    """Refuse a constant of more than ``MAX_CONSTANT_ENTRIES`` entries with an
    :class:`UnsupportedModelError` "``subject`` ``verb`` N entries (...)"."""
    if entries > MAX_CONSTANT_ENTRIES:
        raise UnsupportedModelError(
            f"{subject} {verb} {entries:,} entries "
            f"(equivcheck handles constants of up to {MAX_CONSTANT_ENTRIES:,})"
        )


def load_model(model: ModelLike) -> "onnx.ModelProto":  # noqa: F821
    """Read an ONNX model from a path (or pass a ``ModelProto`` through).

    Only a regular file is opened (a FIFO, device, socket or directory is refused before it is
    opened, so nothing can block); external data must be regular files inside the model's folder.
    Raises :class:`ModelFileError` naming the path (and tensor) for anything else.
    A binary model is parsed by the protobuf classes alone (no ``import onnx``: see
    :mod:`equivcheck.io.onnx_proto`). A ``torch.nn.Module`` or :class:`TorchModel` is exported
    in memory (:func:`equivcheck.io.torch_export.export_module`); any other object is an
    :class:`InputError` naming its type.
    """
    if is_model_proto(model):
        return model
    from equivcheck.io.torch_export import export_module, is_torch_model

    if is_torch_model(model):
        return export_module(model)
    if not isinstance(model, (str, os.PathLike)):
        raise InputError(
            f"cannot check a {type(model).__name__}: pass an ONNX file path, an onnx.ModelProto, "
            "an equivcheck Network or a torch.nn.Module"
        )
    path = Path(model)
    data = _read_regular_file(path, path, "model")
    try:
        fmt = _format_of(path)
        if fmt is None:
            proto = parse_binary(data)
        else:
            proto = full_onnx().load_model_from_string(data, format=fmt)
    except Exception as exc:  # protobuf raises several unrelated types
        raise ModelFileError(f"{path}: not a valid ONNX model ({type(exc).__name__})") from None
    if not proto.graph.node and not proto.graph.output:
        raise ModelFileError(f"{path}: not a valid ONNX model (empty graph)")
    _load_external_data(proto, path)
    return proto


def all_tensors(graph):
    """(kind, TensorProto) for every tensor of a graph: initializers and tensor attributes,
    subgraphs included."""
    AttributeProto = pb2().AttributeProto

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
                yield from all_tensors(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from all_tensors(sub)


def refuse_unloaded_external(graph, label: str) -> None:
    """Refuse a graph with a tensor still kept in an external file: a ``ModelProto`` handed over
    in memory would have it read relative to the working directory; :func:`load_model` loads
    such data from the model's path instead."""
    TensorProto = pb2().TensorProto

    for _, tensor in all_tensors(graph):
        if tensor.data_location == TensorProto.EXTERNAL:
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            raise ModelFileError(
                f"{label}: tensor '{tensor.name}' keeps its data in the external file '{location}'; "
                "load the model from its path so the file is found next to it"
            )


def _format_of(path: Path) -> str | None:
    """The serialization format ``onnx.load`` would infer from the file extension (None:
    binary protobuf, which needs no ``import onnx``)."""
    if path.suffix not in TEXT_SUFFIXES:
        return None
    try:
        from onnx import serialization

        return serialization.registry.get_format_from_file_extension(path.suffix)
    except (ImportError, AttributeError):  # onnx < 1.15 reads binary protobuf only
        return None


def parse_binary(data: bytes):
    """A ``ModelProto`` parsed from binary protobuf (no ``import onnx``), refusing trailing bytes
    the parser did not consume (as ``onnx.load_model_from_string`` does); external data is left
    where it is."""
    proto = pb2().ModelProto()
    decoded = proto.ParseFromString(data)
    if decoded is not None and decoded != len(data):
        raise ValueError(f"protobuf decoding consumed {decoded} of {len(data)} bytes")
    return proto


def _file_kind(mode: int) -> str:
    """What a non-regular file is, for the error message."""
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
    descriptor (opened non-blocking), so a FIFO or device never blocks the import; the byte
    range is checked against the file's size and the 2 GiB limit before anything is read.
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


def _load_external_data(proto, path: Path) -> None:
    """Read every tensor stored in an external file into ``proto`` (in place).

    Each external file must lie inside the model's folder (symbolic links resolved), exist, be a
    regular file and hold the bytes the tensor names; the tensor must be within the size limit.
    """
    TensorProto = pb2().TensorProto

    folder = path.resolve().parent
    for kind, tensor in all_tensors(proto.graph):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        what = f"external data file '{location}' of {kind} '{tensor.name}'"
        check_constant_entries(math.prod(int(d) for d in tensor.dims), f"{path}: tensor '{tensor.name}'")
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
