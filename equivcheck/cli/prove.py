"""``equivcheck prove A B``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from equivcheck.cli import app
from equivcheck.cli.common import check_timeout, console, emit_json, fail, guarded, stderr_is_tty
from equivcheck.cli.paths import check_outputs, domain_file, onnx_external_files
from equivcheck.cli.progress import ProgressLine
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
    mode: Annotated[Mode, typer.Option("--mode", "-m", help="strict, epsilon or argmax.")] = Mode.STRICT,
    tolerance: Annotated[Optional[str], typer.Option("--tolerance", "-e", help="EPS for --mode epsilon (default 1e-6), read exactly.")] = None,
    norm: Annotated[Norm, typer.Option("--norm", help="Norm for --mode epsilon.")] = Norm.LINF,
    timeout: Annotated[float, typer.Option("--timeout", "-t", help="Hard limit in seconds for the whole check (finite, positive).")] = DEFAULT_TIMEOUT,
    bounds: Annotated[str, typer.Option("--bounds", help="Bound method that classifies ReLUs: interval, symbolic, lp, exact (stability analysis); all rigorous.")] = ProverOptions().bound_method.value,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    counterexample: Annotated[Optional[Path], typer.Option("--counterexample", "-o", help="Write the counterexample input to PATH (.npy or .json); checked before the proof starts.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress line on stderr.")] = False,
    workers: Annotated[int, typer.Option("--workers", "-w", min=0, help="Worker processes for the branch-and-bound search (0: every core; instances decided in a fraction of a second start none).")] = 0,
) -> int:
    """Prove two networks equivalent on a domain, or refute it with a counterexample.

    Exit codes: 0 proved, 1 refuted, 3 unknown, 4 bad input.
    """
    from equivcheck.solve.prover import prove

    try:
        method = BoundMethod.parse(bounds)
    except InputError:
        fail(f"--bounds {bounds!r}: use one of {', '.join(m.value for m in BoundMethod)}")
    options = ProverOptions(timeout=check_timeout(timeout), bound_method=method, workers=workers)
    if counterexample is not None:
        if counterexample.suffix.lower() not in CEX_SUFFIXES:
            fail(f"--counterexample {counterexample}: use a .npy or .json file name")
        inputs = [model_a, model_b, *onnx_external_files(model_a), *onnx_external_files(model_b),
                  *domain_file(domain)]
        check_outputs([("--counterexample", counterexample)], inputs)
    with ProgressLine(quiet=quiet, tty=False if as_json else None) as progress:
        result = prove(model_a, model_b, domain=domain, mode=mode.value, tolerance=tolerance,
                       norm=norm.value, timeout=Deadline.for_command(timeout), options=options,
                       progress=progress)
    write_error = None
    if counterexample is not None and result.counterexample is not None:
        write_error = write_counterexample(counterexample, result.counterexample)
    if as_json:
        emit_json(result)
    else:
        from equivcheck.report import render, render_text

        if stderr_is_tty():
            render(result, console())
        else:  # a log or a pipe: plain text, and no rich to import
            sys.stderr.write(render_text(result))
        if counterexample is not None and result.counterexample is not None and write_error is None:
            sys.stderr.write(f"  counterexample input written to {counterexample}\n")
    if write_error is not None:
        # the path was checked before the proof; this is a late failure (a full disk): the
        # verdict above stands and keeps its exit code
        sys.stderr.write(f"equivcheck: warning: {write_error}\n")
    return result.exit_code


def write_counterexample(path: Path, cex) -> str | None:
    """Write the counterexample to exactly ``path``: the input as ``.npy`` (whatever the case of
    the suffix: ``np.save`` gets an open file, so it appends no ``.npy``), or the whole
    counterexample as strict JSON. The ``.npy`` is float32 when that is the very point (so
    onnxruntime runs it as is), else float64: a float32 rounding could lie outside the domain.
    Returns None, or why the file could not be written."""
    try:
        if path.suffix.lower() == ".npy":
            x = np.array(cex.input, dtype=np.float64)
            is_f32 = np.array_equal(round_to(x, "float32"), x)
            with open(path, "wb") as f:
                np.save(f, x.astype(np.float32) if is_f32 else x)
        else:
            path.write_text(json_text(cex, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        return f"could not write the counterexample to {path}: {exc.strerror}"
    return None
