"""Equivalence assertions for test suites: :func:`assert_equivalent`.

::

    from equivcheck.testing import assert_equivalent

    def test_compressed_model_still_matches():
        assert_equivalent("model.onnx", "model.small.onnx", domain="0:1")

:func:`assert_equivalent` runs :func:`equivcheck.prove` and returns the :class:`ProofResult` when
the models are PROVED equivalent. Otherwise it raises an :class:`EquivalenceError` (an
``AssertionError``) whose message reads like a good assertion: the verdict, the counterexample
input (abbreviated; the full input is saved to a file), both outputs, the difference against the
tolerance, whether the violation reproduces in onnxruntime on the original files, and the
``equivcheck prove ...`` command that reproduces it.

An UNKNOWN verdict (time ran out) fails by default; ``unknown="skip"`` or ``"xfail"`` turns it
into a pytest skip / xfail instead. Under pytest the ``equivcheck`` plugin supplies defaults for
``timeout`` and ``unknown`` from the command line, the ini file and the ``equivcheck`` marker.

This module imports nothing heavy at import time (no onnx, no torch, no z3).
"""

from __future__ import annotations

import contextvars
import itertools
import json
import os
import shlex
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from equivcheck.core.deadline import validate_timeout
from equivcheck.core.options import UNKNOWN_ACTIONS, BoundMethod, ProverOptions
from equivcheck.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from equivcheck.core.domain import Domain
    from equivcheck.core.result import Counterexample, ProofResult
    from equivcheck.core.spec import Spec

SHOWN_VALUES = 8  # values of a vector shown in a message before abbreviating

__all__ = [
    "CheckDefaults",
    "EquivalenceError",
    "EquivalenceUnknownError",
    "NotEquivalentError",
    "assert_equivalent",
    "failure_message",
]


class EquivalenceError(AssertionError):
    """An equivalence assertion failed; ``result`` is the :class:`ProofResult` behind it."""

    def __init__(self, message: str, result: ProofResult, files: tuple[Path, ...] = ()) -> None:
        super().__init__(message)
        self.result = result
        self.files = files


class NotEquivalentError(EquivalenceError):
    """The models are REFUTED: a counterexample (checked exactly) shows they differ."""


class EquivalenceUnknownError(EquivalenceError):
    """The check ended UNKNOWN (time ran out or the solver gave up) and ``unknown="fail"``."""


@dataclass(frozen=True)
class CheckDefaults:
    """Defaults the pytest plugin installs for the duration of one test.

    Any field left ``None`` falls back to the library default (for the prover's choices, those
    of :class:`ProverOptions`). ``record`` receives every :class:`ProofResult` (with the message,
    when the check failed) for the test's report section.
    """

    timeout: float | None = None
    unknown: str | None = None
    domain: Any = None
    mode: str | None = None
    tolerance: Any = None
    norm: str | None = None
    bounds: str | None = None
    counterexample_dir: Path | None = None
    record: Callable[[ProofResult, str | None], None] | None = field(default=None, compare=False)
    # makes the progress callable of one check (called with each Progress; ``close()`` when the
    # check ends); None: no progress
    progress: Callable[[], Any] | None = field(default=None, compare=False)

    def prover_options(self, timeout: float | None = None, bounds: BoundMethod | str | None = None,
                       seed: int | None = None) -> ProverOptions:
        """The :class:`ProverOptions` of one check: the call's values, else these defaults, else
        the options' own. Raises :class:`InputError` for a bad timeout or bound method."""
        changes: dict[str, Any] = {}
        if timeout is not None or self.timeout is not None:
            changes["timeout"] = validate_timeout(timeout if timeout is not None else self.timeout)
        if bounds is not None or self.bounds is not None:
            changes["bound_method"] = bounds if bounds is not None else self.bounds
        if seed is not None:
            changes["seed"] = seed
        return ProverOptions(**changes)


_DEFAULTS: contextvars.ContextVar[CheckDefaults | None] = contextvars.ContextVar(
    "equivcheck_defaults", default=None
)
_COUNTER = itertools.count(1)


def use_defaults(defaults: CheckDefaults | None) -> contextvars.Token:
    """Install ``defaults`` for the current context (the plugin does this around each test)."""
    return _DEFAULTS.set(defaults)


def reset_defaults(token: contextvars.Token) -> None:
    """Undo :func:`use_defaults`."""
    _DEFAULTS.reset(token)


def assert_equivalent(
    a: Any,
    b: Any,
    domain: str | Domain | tuple | None = None,
    mode: str | None = None,
    tolerance: Any = None,
    timeout: float | None = None,
    *,
    norm: str | None = None,
    unknown: str | None = None,
    example_input: Any = None,
    counterexample_dir: str | os.PathLike | None = None,
    bounds: BoundMethod | str | None = None,
    seed: int | None = None,
    progress: Any = None,
) -> ProofResult:
    """Assert that models ``a`` and ``b`` agree on every input of ``domain``.

    ``a``/``b`` are ONNX paths, ``onnx.ModelProto`` s, :class:`equivcheck.Network` s or, when
    torch is installed, ``torch.nn.Module`` s; a module is exported with ``torch.onnx.export``
    using ``example_input`` (one tensor, or a tuple of positional inputs) and the exported file is
    what gets checked. ``domain`` is ``"LO:HI"``, a ``.vnnlib``/``.json`` path, a
    :class:`~equivcheck.Domain` or a ``(lower, upper)`` pair of sequences; ``mode`` is
    ``"strict"`` (the default), ``"epsilon"`` (with ``tolerance`` and ``norm``) or ``"argmax"``.
    ``timeout``, ``bounds`` (the bound method) and ``seed`` set those fields of the
    :class:`ProverOptions` the check runs with (:meth:`CheckDefaults.prover_options`).
    ``progress`` (a :data:`~equivcheck.core.progress.ProgressFn`) gets the check's progress
    reports; under pytest the plugin shows them on the terminal.

    Returns the :class:`ProofResult` when the verdict is PROVED (a proof in exact arithmetic on
    the stored weights). Raises :class:`NotEquivalentError` on REFUTED, and on UNKNOWN either
    raises :class:`EquivalenceUnknownError` (``unknown="fail"``, the default), skips the test
    (``"skip"``) or marks it xfail (``"xfail"``). Bad models or domains raise the usual
    :class:`~equivcheck.errors.InputError` (a test *error*, not a failed assertion).
    """
    __tracebackhide__ = True  # pytest shows the caller's line, not this function
    from equivcheck.core.result import Verdict
    from equivcheck.solve.prover import prove

    d = _DEFAULTS.get() or CheckDefaults()
    mode = mode if mode is not None else (d.mode or "strict")
    if tolerance is None and mode == "epsilon":  # a default tolerance is for epsilon mode only
        tolerance = d.tolerance
    if domain is None:
        domain = d.domain
    norm = norm if norm is not None else (d.norm or "linf")
    options = d.prover_options(timeout, bounds, seed)
    unknown = unknown if unknown is not None else (d.unknown or "fail")
    if unknown not in UNKNOWN_ACTIONS:
        raise InputError(f"unknown={unknown!r}: use one of {', '.join(UNKNOWN_ACTIONS)}")
    outdir_arg = counterexample_dir if counterexample_dir is not None else d.counterexample_dir

    with tempfile.TemporaryDirectory(prefix="equivcheck-export-") as export_dir:
        ma = _as_model(a, example_input, Path(export_dir) / "a.onnx")
        mb = _as_model(b, example_input, Path(export_dir) / "b.onnx")
        dom = _as_domain(domain)
        line = d.progress() if progress is None and d.progress is not None else None
        try:
            result = prove(ma, mb, domain=dom, mode=mode, tolerance=tolerance, norm=norm,
                           options=options, progress=progress if line is None else line)
        finally:
            if line is not None:
                line.close()
        if result.verdict is Verdict.PROVED:
            if d.record is not None:
                d.record(result, None)
            return result
        outdir = _output_dir(outdir_arg)
        exported = {key: m for key, m, src in (("model_a", ma, a), ("model_b", mb, b))
                    if _is_torch_module(src)}
        files = _save_artifacts(result, outdir, ma, mb, dom, exported)
    message = failure_message(result, files)
    if d.record is not None:
        d.record(result, message)
    if result.verdict is Verdict.REFUTED:
        raise NotEquivalentError(message, result, tuple(files.values()))
    if unknown != "fail":
        import pytest

        if unknown == "skip":
            pytest.skip(message)
        pytest.xfail(message)
    raise EquivalenceUnknownError(message, result, tuple(files.values()))


# ---------------------------------------------------------------------------------------------
# inputs


def _is_torch_module(obj: Any) -> bool:
    """A ``torch.nn.Module`` or an :class:`equivcheck.TorchModel` (torch is never imported
    just to look)."""
    from equivcheck.io.torch_export import is_torch_model

    return is_torch_model(obj)


def _as_model(model: Any, example_input: Any, export_path: Path) -> Any:
    """A path, ModelProto or Network for :func:`prove`; torch modules are exported first."""
    if _is_torch_module(model):
        from equivcheck.io.torch_export import TorchModel, export_module

        if example_input is None or isinstance(model, TorchModel):  # its shape, or nn.Linear's

            export_path.write_bytes(export_module(model).SerializeToString())
            return export_path
        return export_torch(model, example_input, export_path)
    if isinstance(model, (str, os.PathLike)) or hasattr(model, "SerializeToString"):
        return model
    from equivcheck.core.network import Network

    if isinstance(model, Network):
        return model
    raise InputError(
        f"cannot check a {type(model).__name__}: pass an ONNX path, an onnx.ModelProto, an "
        "equivcheck Network or a torch.nn.Module with example_input"
    )


def export_torch(module: Any, example_input: Any, path: Path) -> Path:
    """Export a torch module to ONNX at ``path`` (evaluation mode, the legacy exporter when it
    is available because it needs no extra packages). The file is what gets checked."""
    import torch

    args = example_input if isinstance(example_input, tuple) else (example_input,)
    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(module, args, str(path), dynamo=False,
                                  input_names=["input"], output_names=["output"])
            except TypeError:  # a torch without the dynamo switch
                torch.onnx.export(module, args, str(path), input_names=["input"],
                                  output_names=["output"])
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any exporter failure is the user's model
        raise InputError(
            f"torch.onnx.export failed for {type(module).__name__}: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        module.train(was_training)
    return path


def _as_domain(domain: Any) -> Any:
    """Pass strings, paths and Domains through; turn a ``(lower, upper)`` pair into a Domain."""
    from equivcheck.core.domain import Domain, box_domain

    if domain is None or isinstance(domain, (str, Domain)):
        return domain
    if isinstance(domain, os.PathLike):
        return str(domain)
    if isinstance(domain, (tuple, list)) and len(domain) == 2:
        lo, hi = domain
        if _is_number(lo) and _is_number(hi):
            return f"{lo}:{hi}"
        return box_domain(_flat(lo), _flat(hi))
    raise InputError(f"domain {domain!r}: use 'LO:HI', a .vnnlib/.json path or (lower, upper)")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, Fraction)) and not isinstance(v, bool)


def _flat(v: Any) -> list:
    import numpy as np

    if hasattr(v, "detach"):  # a torch tensor
        v = v.detach().cpu().numpy()
    arr = np.asarray(v, dtype=object).ravel()
    return [x if isinstance(x, (Fraction, str)) else float(x) for x in arr]


# ---------------------------------------------------------------------------------------------
# artifacts and the message


def _output_dir(arg: Any) -> Path:
    if arg is not None:
        path = Path(arg)
    else:
        path = Path(tempfile.gettempdir()) / f"equivcheck-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _save_artifacts(result, outdir: Path, ma, mb, dom, exported: dict | None = None
                    ) -> dict[str, Path]:
    """Write what the message refers to: the full counterexample and, for models or domains
    that exist only in memory (or in a temporary export of a torch module), files the
    reproduce command can name."""
    import numpy as np

    from equivcheck.core.domain import Domain

    n = next(_COUNTER)
    stem = f"check{os.getpid()}-{n}"
    files: dict[str, Path] = {}
    cex = result.counterexample
    if cex is not None:
        files["input"] = outdir / f"{stem}-counterexample.npy"
        np.save(files["input"], np.array(cex.input, dtype=np.float64))
        files["json"] = outdir / f"{stem}-counterexample.json"
        from equivcheck.core.result import json_text

        files["json"].write_text(json_text(result, indent=2) + "\n")
    exported = exported or {}
    for key, model in (("model_a", ma), ("model_b", mb)):
        path = outdir / f"{stem}-{key[-1]}.onnx"
        if key in exported:
            shutil.copyfile(model, path)  # the export lives in a temporary directory
        elif isinstance(model, (str, os.PathLike)):
            continue
        elif hasattr(model, "SerializeToString"):
            path.write_bytes(model.SerializeToString())
        else:
            from equivcheck.io.onnx_export import export_network

            export_network(model, path)
        files[key] = path
    source = result.domain.source
    in_memory = source.startswith("<") or not source
    if isinstance(dom, Domain) and in_memory and len(dom.boxes) == 1:
        box = dom.boxes[0]
        path = outdir / f"{stem}-domain.json"
        path.write_text(json.dumps({"lower": [str(v) for v in box.lower],
                                    "upper": [str(v) for v in box.upper]}) + "\n")
        files["domain"] = path
    return files


def reproduce_command(result: ProofResult, files: dict[str, Path], timeout: float | None = None
                      ) -> str | None:
    """The ``equivcheck prove`` command line that re-runs this check (None if not expressible);
    ``timeout`` defaults to the one the check ran with."""
    from equivcheck.core.spec import Mode, Norm

    spec, options = result.spec, result.options
    a = str(files.get("model_a") or result.model_a)
    b = str(files.get("model_b") or result.model_b)
    if a.startswith("<") or b.startswith("<"):
        return None
    parts = ["equivcheck", "prove", a, b]
    source = result.domain.source
    if "domain" in files:
        parts += ["--domain", str(files["domain"])]
    elif source.startswith("<") or not source:
        return None  # a multi-box domain built in memory: no file to name
    elif not result.domain.is_default:
        parts += ["--domain", source]
    parts += ["--mode", spec.mode.value]
    if spec.mode is Mode.EPSILON:
        parts += ["--tolerance", _tolerance_arg(spec)]
        if spec.norm is not Norm.LINF:
            parts += ["--norm", spec.norm.value]
    if options.bound_method is not ProverOptions().bound_method:
        parts += ["--bounds", options.bound_method.value]
    parts += ["--timeout", _num(timeout if timeout is not None else options.timeout)]
    return " ".join(shlex.quote(p) for p in parts)


def _tolerance_arg(spec: Spec) -> str:
    """The exact tolerance as a --tolerance argument (``0.1``, ``1e-400``, ``1/3``)."""
    if Fraction(float(spec.tolerance)) == spec.tolerance:
        return _num(float(spec.tolerance))
    from equivcheck.core.rational import exact_text

    return exact_text(spec.tolerance)


def _num(v: float) -> str:
    return f"{v:g}" if float(f"{v:g}") == v else repr(v)


def _vec(values, limit: int = SHOWN_VALUES) -> str:
    shown = ", ".join(f"{v:.7g}" for v in values[:limit])
    more = f", ... ({len(values)} values)" if len(values) > limit else ""
    return f"[{shown}{more}]"


def _deviation_lines(cex: Counterexample, spec: Spec) -> list[str]:
    """The difference against the tolerance, in the words of the spec."""
    from equivcheck.core.spec import Mode, Norm
    from equivcheck.report import tolerance_text

    ex = cex.exact
    if spec.mode is Mode.ARGMAX:
        ca = max(range(len(ex.output_a)), key=lambda j: (ex.output_a[j], -j))
        cb = max(range(len(ex.output_b)), key=lambda j: (ex.output_b[j], -j))
        return [f"top-1 class: a -> {ca}, b -> {cb} (must be equal)"]
    diffs = [abs(x - y) for x, y in zip(ex.output_a, ex.output_b)]
    worst = max(range(len(diffs)), key=lambda j: diffs[j])
    if spec.mode is Mode.STRICT:
        return [
            f"max |a(x) - b(x)| = {diffs[worst]:.6g} at output {worst} (strict: must be 0)"
        ]
    tol = float(spec.tolerance)
    name = "||a(x) - b(x)||_inf" if spec.norm is Norm.LINF else "||a(x) - b(x)||_1"
    value = ex.margin + tol
    text = (f"{name} = {value:.6g} > tolerance {tolerance_text(spec)} (exceeds it by {ex.margin:.3g}; "
            f"largest difference at output {worst})")
    return [text]


def failure_message(result: ProofResult, files: dict[str, Path] | None = None,
                    timeout: float | None = None) -> str:
    """The assertion message for a REFUTED or UNKNOWN result (plain text, several lines); the
    reproduce command uses ``timeout``, by default the one the check ran with."""
    from equivcheck.core.result import Verdict
    from equivcheck.report import spec_text

    files = files or {}
    spec = result.spec
    if result.verdict is Verdict.REFUTED:
        head = "models are NOT equivalent (REFUTED): " + result.reason
    else:
        head = "equivalence could not be decided (UNKNOWN): " + result.reason
    lines = [
        head,
        f"  a: {files.get('model_a') or result.model_a}",
        f"  b: {files.get('model_b') or result.model_b}",
        f"  mode: {spec_text(spec)}",
        f"  domain: {result.domain_text}",
    ]
    cex = result.counterexample
    if cex is not None:
        where = f"; full input saved to {files['input']}" if "input" in files else ""
        lines.append(f"  counterexample x ({len(cex.input)} values{where}):")
        lines.append(f"    x    = {_vec(cex.input)}")
        lines.append(f"    a(x) = {_vec(cex.exact.output_a)}")
        lines.append(f"    b(x) = {_vec(cex.exact.output_b)}")
        lines.extend("  " + s for s in _deviation_lines(cex, spec))
        lines.append("    (outputs computed exactly on the stored weights)")
        ort = cex.onnxruntime
        if ort is None:
            lines.append("  onnxruntime: not run (a model was given as an in-memory Network)")
        elif ort.error:
            lines.append(f"  onnxruntime: could not run ({ort.error})")
        else:
            lines.append(
                f"  reproduces in onnxruntime: {'yes' if ort.violated else 'NO'} "
                f"(a={_vec(ort.output_a, 5)}, b={_vec(ort.output_b, 5)})"
            )
        if cex.note:
            lines.append(f"  note: {cex.note}")
        if "json" in files:
            lines.append(f"  details (all backends): {files['json']}")
    elif result.verdict is Verdict.UNKNOWN:
        lines.append("  no counterexample was found, and no proof finished in time; "
                     "raise the timeout (--equivcheck-timeout, the equivcheck_timeout ini "
                     "setting or @pytest.mark.equivcheck(timeout=...))")
    cmd = reproduce_command(result, files, timeout)
    if cmd:
        lines.append(f"  reproduce: {cmd}")
    return "\n".join(lines)
