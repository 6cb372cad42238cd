"""``equivcheck audit ORIGINAL PRUNED``: what pruning (or any edit) cost, with certified bounds."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated

import typer

from equivcheck.cli import app
from equivcheck.cli.common import EXIT_USAGE, check_timeout, emit_json, fail, guarded, out_console
from equivcheck.cli.paths import check_outputs, domain_file, onnx_external_files
from equivcheck.cli.progress import HEARTBEAT, ProgressLine
from equivcheck.core.deadline import Deadline
from equivcheck.core.options import MULTI_PROOF_TIMEOUT
from equivcheck.errors import InputError


@app.command("audit")
@guarded
def audit_cmd(
    original: Annotated[Path, typer.Argument(help="Original model (ONNX).", show_default=False)],
    pruned: Annotated[Path, typer.Argument(help="Pruned / modified model (ONNX).",
                                           show_default=False)],
    domain: Annotated[str | None, typer.Option(
        "--domain", "-d", help="LO:HI, a .vnnlib or a .json file; default 0:1 on every input.")] = None,
    data: Annotated[Path | None, typer.Option(
        "--data", help="A .npy of real inputs: top-1 agreement and deviation distribution.")] = None,
    report: Annotated[Path | None, typer.Option(
        "--report", "-o", "-r", help="Write a report: .html (with plots; needs matplotlib, the "
        "'report' extra), .md or .json.")] = None,
    epsilons: Annotated[str, typer.Option(
        "--epsilons", help="Comma-separated epsilon ladder (L-inf), read exactly.")]
        = "1e-6,1e-4,1e-3,1e-2,1e-1,1,10",
    gap: Annotated[float, typer.Option(
        "--gap", help="Refine the deviation bounds until (upper-lower)/upper <= GAP.")] = 0.05,
    timeout: Annotated[float, typer.Option(
        "--timeout", "-t", help="Limit in seconds for the whole audit.")] = MULTI_PROOF_TIMEOUT,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress line on stderr.")] = False,
) -> int:
    """Audit a pruned model against the original: verdicts for strict / epsilon / argmax
    equivalence, the certified worst-case deviation, which units pruning removed, and
    agreement on real data.

    The summary goes to stdout, progress and errors to stderr.

    Exit codes: 0 the audit ran (whatever it found), 4 bad input, 2 usage error.
    """
    from equivcheck.audit.auditor import audit
    from equivcheck.audit.report import REPORT_SUFFIXES, summary_lines, write_report

    check_timeout(timeout)
    if not (math.isfinite(gap) and gap >= 0):
        fail(f"--gap {gap:g}: give a finite number >= 0", EXIT_USAGE)
    if report is not None and report.suffix.lower() not in REPORT_SUFFIXES:
        fail(f"--report {report}: use a .html, .md or .json file name", EXIT_USAGE)
    ladder = tuple(e.strip() for e in epsilons.split(",") if e.strip())
    if not ladder:
        fail("--epsilons is empty", EXIT_USAGE)
    check_epsilons(ladder)
    if report is not None and report.suffix.lower() == ".html":
        check_plotting()
    if report is not None:
        inputs = [original, pruned, *onnx_external_files(original),
                  *onnx_external_files(pruned), *domain_file(domain), data]
        check_outputs([("--report", report)], inputs)
    with ProgressLine(quiet=quiet, tty=False if as_json else None, heartbeat=HEARTBEAT) as progress:
        result = audit(original, pruned, domain=domain, data=data, epsilons=ladder,
                       timeout=Deadline.for_command(timeout), gap=gap,
                       progress=progress)
    write_error = None
    if report is not None:
        try:
            write_report(result, report)
        except InputError as exc:  # checked before the audit: a late failure (a full disk)
            write_error = str(exc)
    if as_json:
        emit_json(result)
    else:
        from rich.markup import escape

        con = out_console()
        con.print(f"[bold]audit[/] {escape(result.original)} -> {escape(result.pruned)}",
                  soft_wrap=True)
        con.print(f"  domain: {result.domain_text}", markup=False, soft_wrap=True)
        for line in summary_lines(result):
            con.print(line, markup=False, soft_wrap=True)
        con.print(f"  time: {result.seconds:.1f} s", markup=False)
    if write_error is not None:
        sys.stderr.write(f"equivcheck: warning: {write_error}\n")
    elif report is not None:  # with the summary; beside --json's object, on stderr
        (sys.stderr if as_json else sys.stdout).write(f"report written to {report}\n")
    return 0


def check_epsilons(ladder: tuple[str, ...]) -> None:
    """Each ``--epsilons`` value is a decimal number >= 0 (read exactly, as the audit will);
    else one line and the usage exit code 2, before any model is read."""
    from equivcheck.core.spec import Spec

    for eps in ladder:
        try:
            Spec.make("epsilon", eps)
        except InputError as exc:
            fail(f"--epsilons {eps!r}: {exc}", EXIT_USAGE)


def check_plotting() -> None:
    """An HTML report draws its plots with matplotlib: when it is not installed, say so in one
    line (exit 4) before the audit runs, rather than lose its result at the end."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        fail("--report *.html needs matplotlib, which is not installed: "
             "pip install 'equivcheck[report]' (or write a .md or .json report)")
