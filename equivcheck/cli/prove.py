"""``equivcheck prove A B``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from equivcheck.cli import app
from equivcheck.cli.common import (
    EXIT_USAGE,
    check_spec,
    check_timeout,
    emit_json,
    fail,
    guarded,
    out_console,
    project_defaults,
    stdout_is_tty,
)
from equivcheck.cli.paths import check_outputs, domain_file, onnx_external_files
from equivcheck.cli.progress import HEARTBEAT, ProgressLine
from equivcheck.core.deadline import Deadline
from equivcheck.core.exact import round_to
from equivcheck.core.options import DEFAULT_TIMEOUT, BoundMethod, ProverOptions
from equivcheck.core.result import json_text
from equivcheck.core.spec import Mode, Norm
from equivcheck.errors import InputError

CEX_SUFFIXES = (".npy", ".json")


@app.command("prove")
@guarded
def prove_cmd(
    model_a: Annotated[Path, typer.Argument(help="Original model (ONNX).", show_default=False)],
    model_b: Annotated[Path, typer.Argument(help="Model to compare (ONNX).", show_default=False)],
    domain: Annotated[Optional[str], typer.Option("--domain", "-d", help="LO:HI, a .vnnlib or a .json file; default 0:1 on every input.")] = None,
    mode: Annotated[Optional[Mode], typer.Option("--mode", "-m", help="strict, epsilon, argmax or top1 (default strict, or \\[tool.equivcheck] mode).", show_default=False)] = None,
    tolerance: Annotated[Optional[str], typer.Option("--tolerance", "-e", help="EPS for --mode epsilon (default 1e-6), read exactly.")] = None,
    norm: Annotated[Optional[Norm], typer.Option("--norm", help="Norm for --mode epsilon (default linf).", show_default=False)] = None,
    confidence: Annotated[Optional[str], typer.Option("--confidence", help="DELTA for --mode top1 (0 < DELTA < 1): wherever A's softmax confidence is at least DELTA, B picks the same class. Read exactly.", show_default=False)] = None,
    logits: Annotated[bool, typer.Option("--logits", help="Models with a Softmax/LogSoftmax head: compare the logits before it (strict and epsilon modes refuse such models otherwise).")] = False,
    timeout: Annotated[Optional[float], typer.Option("--timeout", "-t", help=f"Hard limit in seconds for the whole check (default {DEFAULT_TIMEOUT:g}, or \\[tool.equivcheck] timeout).", show_default=False)] = None,
    bounds: Annotated[Optional[str], typer.Option("--bounds", help="Bound method that classifies ReLUs: auto (default: interval for same-shaped pairs, symbolic when units were removed or folded), interval, symbolic, lp, exact (stability analysis); all rigorous.", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout (instead of the summary).")] = False,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Also write the result as one JSON object (what --json prints) to this .json file.")] = None,
    counterexample: Annotated[Optional[Path], typer.Option("--counterexample", "--cex", help="Write the counterexample to this file: its input (.npy) or all of it (.json).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress line on stderr.")] = False,
    workers: Annotated[int, typer.Option("--workers", "-w", min=0, help="Worker processes for the branch-and-bound search (0: every core; instances decided in a fraction of a second start none).")] = 0,
    scheduler: Annotated[Optional[str], typer.Option("--scheduler", help="Run the branch and bound's parts as tasks on a Dask cluster: a scheduler address (tcp://host:8786), or 'local' for a LocalCluster of --workers workers.")] = None,
) -> int:
    """Prove two networks equivalent on a domain, or refute it with a counterexample.

    The verdict and the summary go to stdout, progress and errors to stderr. Defaults of
    --mode, --tolerance, --norm, --timeout and --bounds come from \\[tool.equivcheck] in the
    nearest pyproject.toml, when it has one.

    Exit codes: 0 proved, 1 refuted, 3 unknown, 4 bad input, 2 usage error.
    """
    from equivcheck.solve.prover import prove

    project = project_defaults()
    mode_text = mode.value if mode is not None else (project.mode or Mode.STRICT.value)
    if tolerance is None and mode_text == Mode.EPSILON.value:
        tolerance = project.tolerance
    norm_text = norm.value if norm is not None else (project.norm or Norm.LINF.value)
    check_spec(mode_text, tolerance, norm_text, confidence, logits)
    seconds = check_timeout(timeout if timeout is not None else (project.timeout or DEFAULT_TIMEOUT))
    bounds = bounds if bounds is not None else (project.bounds or ProverOptions().bound_method.value)
    try:
        method = BoundMethod.parse(bounds)
    except InputError:
        fail(f"--bounds {bounds!r}: use one of {', '.join(m.value for m in BoundMethod)}", EXIT_USAGE)
    options = ProverOptions(timeout=seconds, bound_method=method, workers=workers)
    deprecated_o = output is not None and output.suffix.lower() == ".npy" and counterexample is None
    if deprecated_o:  # -o once named the counterexample file: a .npy can only be that
        counterexample, output = output, None
    if counterexample is not None and counterexample.suffix.lower() not in CEX_SUFFIXES:
        fail(f"--counterexample {counterexample}: use a .npy or .json file name", EXIT_USAGE)
    if output is not None and output.suffix.lower() != ".json":
        fail(f"--output {output}: use a .json file name", EXIT_USAGE)
    if counterexample is not None or output is not None:
        inputs = [model_a, model_b, *onnx_external_files(model_a), *onnx_external_files(model_b),
                  *domain_file(domain)]
        check_outputs([("--counterexample", counterexample), ("--output", output)], inputs)
    if deprecated_o:
        sys.stderr.write("equivcheck: warning: -o FILE.npy is deprecated: use --counterexample "
                         "FILE.npy (-o writes the result as JSON)\n")
    if scheduler is not None and (confidence is not None or logits):
        fail("--scheduler does not take --confidence or --logits (yet)", EXIT_USAGE)
    with ProgressLine(quiet=quiet, tty=False if as_json else None,
                      heartbeat=HEARTBEAT) as progress:
        if scheduler is not None:
            from equivcheck.campaign.distributed import prove_distributed

            result = prove_distributed(model_a, model_b, domain=domain, mode=mode_text,
                                       tolerance=tolerance, norm=norm_text,
                                       timeout=Deadline.for_command(seconds),
                                       scheduler=scheduler, workers=workers, options=options,
                                       progress=progress)
        else:
            result = prove(model_a, model_b, domain=domain, mode=mode_text,
                           tolerance=tolerance, norm=norm_text,
                           timeout=Deadline.for_command(seconds), confidence=confidence,
                           logits=logits, options=options, progress=progress)
    errors = []
    if counterexample is not None and result.counterexample is not None:
        errors.append(write_counterexample(counterexample, result.counterexample))
    if output is not None:
        errors.append(write_text(output, json_text(result, indent=2) + "\n", "the result"))
    if as_json:
        emit_json(result)
    else:
        from equivcheck.report import render, render_text

        if stdout_is_tty():
            render(result, out_console())
        else:  # a log or a pipe: plain text, and no rich to import
            sys.stdout.write(render_text(result))
        for path, what in ((counterexample, "counterexample"), (output, "result")):
            written = path is not None and (what == "result" or result.counterexample is not None)
            if written and path not in _failed(errors):
                sys.stdout.write(f"  {what} written to {path}\n")
        sys.stdout.flush()
    for error in errors:
        if error is not None:
            # the path was checked before the proof; this is a late failure (a full disk): the
            # verdict above stands and keeps its exit code
            sys.stderr.write(f"equivcheck: warning: {error[1]}\n")
    return result.exit_code


def _failed(errors: list) -> set:
    """The paths whose write failed (an entry of ``errors`` is None or ``(path, message)``)."""
    return {e[0] for e in errors if e is not None}


def write_text(path: Path, text: str, what: str) -> tuple[Path, str] | None:
    """Write ``text`` to ``path``; None, or ``(path, why it could not be written)``."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        return path, f"could not write {what} to {path}: {exc.strerror}"
    return None


def write_counterexample(path: Path, cex) -> tuple[Path, str] | None:
    """Write the counterexample to exactly ``path``: the input as ``.npy`` (whatever the case of
    the suffix: ``np.save`` gets an open file, so it appends no ``.npy``), or the whole
    counterexample as strict JSON. The ``.npy`` is float32 when that is the very point (so
    onnxruntime runs it as is), else float64: a float32 rounding could lie outside the domain.
    Returns None, or ``(path, why the file could not be written)``."""
    try:
        if path.suffix.lower() == ".npy":
            x = np.array(cex.input, dtype=np.float64)
            is_f32 = np.array_equal(round_to(x, "float32"), x)
            with open(path, "wb") as f:
                np.save(f, x.astype(np.float32) if is_f32 else x)
        else:
            path.write_text(json_text(cex, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        return path, f"could not write the counterexample to {path}: {exc.strerror}"
    return None
