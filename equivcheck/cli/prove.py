"""``equivcheck prove A B``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from ..spec import Mode, Norm
from . import app
from .common import console, emit_json, fail, guarded


@app.command("prove")
@guarded
def prove_cmd(
    model_a: Annotated[Path, typer.Argument(help="Original model (ONNX).", show_default=False)],
    model_b: Annotated[Path, typer.Argument(help="Model to compare (ONNX).", show_default=False)],
    domain: Annotated[Optional[str], typer.Option("--domain", "-d", help="LO:HI, a .vnnlib or a .json file; default 0:1 on every input.")] = None,
    mode: Annotated[Mode, typer.Option("--mode", "-m", help="strict, epsilon or argmax.")] = Mode.STRICT,
    tolerance: Annotated[Optional[str], typer.Option("--tolerance", "-e", help="EPS for --mode epsilon (default 1e-6), read exactly.")] = None,
    norm: Annotated[Norm, typer.Option("--norm", help="Norm for --mode epsilon.")] = Norm.LINF,
    timeout: Annotated[float, typer.Option("--timeout", "-t", help="Hard limit in seconds for the whole check.")] = 60.0,
    bounds: Annotated[str, typer.Option("--bounds", help="Bound method that classifies ReLUs: interval, symbolic, lp, exact (stability analysis); all rigorous.")] = "interval",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    counterexample: Annotated[Optional[Path], typer.Option("--counterexample", "-o", help="Write the counterexample input to PATH (.npy or .json).")] = None,
) -> int:
    """Prove two networks equivalent on a domain, or refute it with a counterexample.

    Exit codes: 0 proved, 1 refuted, 3 unknown, 4 bad input.
    """
    from ..bounds import BOUND_METHODS
    from ..prover import prove

    if bounds not in BOUND_METHODS:
        fail(f"--bounds {bounds!r}: use one of {', '.join(BOUND_METHODS)}")
    if timeout <= 0:
        fail(f"--timeout must be positive, got {timeout}")
    if counterexample is not None and counterexample.suffix.lower() not in (".npy", ".json"):
        fail(f"--counterexample {counterexample}: use a .npy or .json file name")
    result = prove(model_a, model_b, domain=domain, mode=mode.value, tolerance=tolerance, norm=norm.value, timeout=timeout, bounds=bounds)
    if counterexample is not None and result.counterexample is not None:
        _write_counterexample(counterexample, result)
    if as_json:
        emit_json(result.to_dict())
    else:
        from ..report import render

        render(result, console())
        if counterexample is not None and result.counterexample is not None:
            console().print(f"  counterexample input written to {counterexample}")
    return result.exit_code


def _write_counterexample(path: Path, result) -> None:
    cex = result.counterexample
    try:
        if path.suffix.lower() == ".npy":
            np.save(path, np.array(cex.input, dtype=np.float32))
        else:
            path.write_text(json.dumps(cex.to_dict(), indent=2) + "\n")
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror}")
