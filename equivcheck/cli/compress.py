"""``equivcheck compress MODEL.onnx --domain ... -o OUT.onnx``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from equivcheck.cli import app
from equivcheck.cli.common import EXIT_USAGE, check_timeout, emit_json, fail, guarded, out_console
from equivcheck.cli.paths import check_outputs, domain_file, onnx_external_files
from equivcheck.cli.progress import HEARTBEAT, ProgressLine
from equivcheck.core.deadline import Deadline
from equivcheck.core.options import MULTI_PROOF_TIMEOUT


@app.command("compress")
@guarded
def compress_cmd(
    model: Annotated[Path, typer.Argument(help="Model to compress (ONNX).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the compressed ONNX model.")],
    domain: Annotated[Optional[str], typer.Option("--domain", "-d", help="LO:HI, a .vnnlib or a .json file; default 0:1 on every input.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", "-t", help="Hard limit in seconds for the whole command, counted from its start: stability analysis (at most 40%) and proof share it (finite, positive).")] = MULTI_PROOF_TIMEOUT,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip the equivalence proof of original vs compressed.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress line on stderr.")] = False,
) -> int:
    """Remove stably inactive units and fold stably active ones, losslessly on the domain.

    A statically quantized (int8/uint8) model only loses its dead units (stably active ones are kept: folding would drop a rounding step); the result is written as a QDQ model.

    Writes the compressed ONNX model, prints a per-layer table and, unless --no-verify, proves the two models equivalent on the domain.

    The table and the verdict go to stdout, progress and errors to stderr.

    Exit codes: 0 compressed and proved (or not verified), 1 the proof found a difference (a bug: please report it), 3 proof unknown, 4 bad input, 2 usage error.
    """
    from equivcheck.compress.pipeline import compress
    from equivcheck.compress.quantized import QuantizedCompressionResult

    check_timeout(timeout)
    if output.suffix.lower() != ".onnx":
        fail(f"--output {output}: use a .onnx file name", EXIT_USAGE)
    check_outputs([("--output", output)],
                  [model, *onnx_external_files(model), *domain_file(domain)])
    with ProgressLine(quiet=quiet, tty=False if as_json else None, heartbeat=HEARTBEAT) as progress:
        result = compress(model, domain=domain, output=output, verify=not no_verify,
                          timeout=Deadline.for_command(timeout),
                          progress=progress)
    if as_json:
        emit_json(result)
    elif isinstance(result, QuantizedCompressionResult):
        render_quantized(result, output)
    else:
        render(result, output)
    return 0 if result.proof is None else result.proof.exit_code


def render(result, output: Path) -> None:
    """The per-layer table and the proof's verdict, on stdout."""
    from rich.markup import escape
    from rich.table import Table

    from equivcheck.core.result import Verdict

    con = out_console()
    table = Table(title=f"equivcheck compress: {escape(str(result.original.source))}")
    for col in ("layer", "units", "inactive removed", "active folded", "units kept",
                "params", "params kept", "saved %"):
        table.add_column(col, justify="right")
    for r in result.table:
        pct = 100.0 * (1 - r.params_after / r.params_before) if r.params_before else 0.0
        name = f"{r.layer}{'' if r.relu else ' out'}{' folded' if r.folded_into_next else ''}"
        table.add_row(name, str(r.units_before), str(r.removed_inactive), str(r.folded_active),
                      str(r.units_after), f"{r.params_before:,}", f"{r.params_after:,}", f"{pct:.1f}")
    con.print(table)
    counts = result.stability.stage_counts()
    stages = ", ".join(f"{k} {v['stable']}" for k, v in counts.items() if v["stable"])
    con.print(f"  {escape(result.original.description)} -> {escape(result.compressed.description)}: "
              f"{result.hidden_before - result.hidden_after} of {result.hidden_before} hidden units removed "
              f"({result.unit_compression:.1f}%), parameters {result.original.num_parameters:,} -> "
              f"{result.compressed.num_parameters:,} ({result.param_compression:.1f}%)")
    con.print(f"  stable units found by stage: {stages or 'none'}; "
              f"{len(result.stability.undecided)} undecided (kept); "
              f"stability analysis {result.stability.seconds:.2f} s")
    for note in result.notes:
        con.print(f"  note: {note}", markup=False)
    con.print(f"  wrote {output}", markup=False)
    if result.proof is None:
        con.print("  [yellow]not verified[/] (--no-verify)")
        return
    p = result.proof
    what = "strictly equal" if result.epsilon is None else f"equal within epsilon = {result.epsilon} (linf, {float(result.epsilon):.3g})"
    colour = {Verdict.PROVED: "green", Verdict.REFUTED: "red", Verdict.UNKNOWN: "yellow"}[p.verdict]
    con.print(f"  proof: [{colour}]{p.verdict.label.upper()}[/] {what} on {escape(p.domain_text)} "
              f"({p.seconds:.2f} s): {escape(p.reason)}")


def render_quantized(result, output: Path) -> None:
    """The per-layer table of a quantized model's compression and its structural proof, on
    stdout."""
    from rich.markup import escape
    from rich.table import Table

    con = out_console()
    table = Table(title=f"equivcheck compress (quantized): {escape(str(result.original.source))}")
    for col in ("layer", "units", "dead removed", "active (kept)", "units kept", "params",
                "params kept", "saved %"):
        table.add_column(col, justify="right")
    last = len(result.table) - 1
    for r, active in zip(result.table, result.active):
        pct = 100.0 * (1 - r.params_after / r.params_before) if r.params_before else 0.0
        table.add_row(f"{r.layer}{' out' if r.layer == last else ''}", str(r.units_before),
                      str(r.removed_inactive), str(active), str(r.units_after), f"{r.params_before:,}",
                      f"{r.params_after:,}", f"{pct:.1f}")
    con.print(table)
    con.print(f"  {escape(result.summary)}")
    con.print(f"  dead units from {result.bounds} bounds through every quantizer ({result.seconds:.2f} s)")
    for note in result.notes:
        con.print(f"  note: {note}", markup=False)
    if result.ort_max_difference is not None:
        line = (f"  onnxruntime, original vs written file at {result.ort_points} domain points: "
                f"max difference {result.ort_max_difference:.3g}")
        if result.ort_differing:
            q = result.original.quant[-1]
            step = f", output step {float(q.scale_float.max()):.3g}" if q is not None else ""
            line += (f" at {result.ort_differing} point(s){step} (float32 sums in another order "
                     f"landing across a rounding boundary; exact outputs there: {result.ort_closer})")
        con.print(line, markup=False)
    con.print(f"  wrote {output}", markup=False)
    if result.proof is None:
        con.print("  [yellow]not verified[/] (--no-verify)")
        return
    p = result.proof
    con.print(f"  proof: [green]{p.verdict.label.upper()}[/] strictly equal on {escape(p.domain_text)} "
              f"({p.seconds:.2f} s): {escape(p.reason)}")
