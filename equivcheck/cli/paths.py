"""Output paths, checked before any work starts.

Every command that writes a file calls :func:`check_outputs` with all the paths it will write and
all the files it reads, *before* it loads a model or starts an analysis. So a bad output path
costs nothing (no verdict is computed and then lost), and no input is ever overwritten: outputs
are compared with inputs by device and inode (``os.stat``), so a hard link or a symlink to an
input is caught as well as the same name.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from equivcheck.errors import InputError

MAX_ONNX_SCAN_BYTES = 64 * 2**20  # larger model files are not scanned for external data


class OutputPathError(InputError):
    """An output path cannot be written, or would overwrite an input (CLI exit code 4)."""


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file ``path`` names (following symlinks), None if there is none."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def onnx_external_files(model: Path) -> list[Path]:
    """The external-data files a model file refers to (its weights stored beside it), so that
    they count as inputs too. Best effort: a file that is not a readable, regular ONNX file of at
    most :data:`MAX_ONNX_SCAN_BYTES` gives none (the loader reports its problems later)."""
    try:
        st = os.stat(model)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_ONNX_SCAN_BYTES:
            return []
        from equivcheck.io.onnx_files import TEXT_SUFFIXES, all_tensors, parse_binary
        from equivcheck.io.onnx_proto import full_onnx, pb2

        if Path(model).suffix in TEXT_SUFFIXES:
            proto = full_onnx().load(str(model), load_external_data=False)
        else:  # binary protobuf: no onnx import
            proto = parse_binary(Path(model).read_bytes())
        external = pb2().TensorProto.EXTERNAL
        found = []
        for _, t in all_tensors(proto.graph):
            if t.data_location != external:
                continue
            for entry in t.external_data:
                if entry.key == "location" and entry.value:
                    found.append(Path(model).parent / entry.value)
        return list(dict.fromkeys(found))
    except Exception:  # scanning is best effort: loading the model reports its problems
        return []


def domain_file(domain: str | None) -> list[Path]:
    """The domain argument as an input file, when it names one (``LO:HI`` names none)."""
    if domain is None:
        return []
    try:
        return [Path(domain)] if os.path.exists(domain) else []
    except (OSError, ValueError):
        return []


def _check_one(option: str, path: Path) -> None:
    """``path`` can be written: not a folder or special file, its folder exists and is
    writable, and an existing file there is writable."""
    text = str(path)
    if text == "" or text.endswith(os.sep):
        raise OutputPathError(f"{option} {text!r}: not a file name")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise OutputPathError(f"{option} {path}: a part of the path is not a folder") from None
    except OSError as exc:
        raise OutputPathError(f"{option} {path}: cannot use it ({exc.strerror})") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise OutputPathError(f"{option} {path}: is a folder, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise OutputPathError(f"{option} {path}: exists and is not a regular file")
        if not os.access(path, os.W_OK):
            raise OutputPathError(f"{option} {path}: the file exists and is not writable")
        try:
            with open(path, "ab"):  # opening for append changes nothing
                pass
        except OSError as exc:
            raise OutputPathError(f"{option} {path}: cannot write it ({exc.strerror})") from None
        return
    folder = Path(os.path.realpath(path)).parent  # a dangling symlink is written at its target
    if not folder.exists():
        raise OutputPathError(f"{option} {path}: the folder {folder} does not exist")
    if not folder.is_dir():
        raise OutputPathError(f"{option} {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"{option} {path}: the folder {folder} is not writable")
    try:  # os.access says yes to root even where a write fails (read-only file systems)
        fd, probe = tempfile.mkstemp(prefix=".equivcheck-probe-", dir=folder)
    except OSError as exc:
        raise OutputPathError(
            f"{option} {path}: cannot write in {folder} ({exc.strerror})"
        ) from None
    os.close(fd)
    os.unlink(probe)


def check_outputs(
    outputs: Sequence[tuple[str, Path | None]], inputs: Iterable[Path | None]
) -> None:
    """Raise :class:`OutputPathError` (one line naming the option and the path) unless every
    output ``(option, path)`` (None: not asked for) can be written and none of them is the same
    file as an input or as another output, compared by device and inode. Model inputs should
    include their external-data files (:func:`onnx_external_files`). Writes nothing (a probe
    file, created and removed at once, tests a folder that ``os.access`` cannot judge)."""
    wanted = [(opt, Path(p)) for opt, p in outputs if p is not None]
    if not wanted:
        return
    ins = [(Path(p), _identity(p)) for p in inputs if p is not None]
    seen: dict[tuple[int, int], str] = {}
    for option, path in wanted:
        ident = _identity(path)
        if ident is not None:
            for src, src_ident in ins:
                if src_ident == ident:
                    what = "is" if os.path.abspath(src) == os.path.abspath(path) else "is the same file as"
                    raise OutputPathError(
                        f"{option} {path}: {what} the input {src}; refusing to overwrite an input"
                    )
            if ident in seen:
                raise OutputPathError(f"{option} {path}: the same file as {seen[ident]}")
            seen[ident] = f"{option} {path}"
        _check_one(option, path)
    texts = [os.path.abspath(p) for _, p in wanted]
    if len(set(texts)) != len(texts):
        raise OutputPathError("two outputs name the same file")
