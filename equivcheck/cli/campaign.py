"""``equivcheck prove-many INSTANCES.csv``: a campaign of checks, on this machine or a Dask
cluster."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from equivcheck.cli import app
from equivcheck.cli.common import EXIT_USAGE, fail, guarded
from equivcheck.cli.paths import check_outputs

EXIT_INTERRUPTED = 130


@app.command("prove-many")
@guarded
def prove_many_cmd(
    instances: Annotated[Path, typer.Argument(help="CSV, one instance per row: a,b,domain,mode,tolerance,timeout[,family] (paths relative to the CSV's folder).", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write one JSON line per finished instance (the object prove --json prints, plus its row).")] = None,
    workers: Annotated[int, typer.Option("--workers", "-w", min=0, help="Instances at once on this machine, or the workers of --scheduler local (0: every core).")] = 0,
    scheduler: Annotated[Optional[str], typer.Option("--scheduler", help="Dask scheduler address (tcp://host:8786), or 'local' for a LocalCluster of --workers workers.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Skip the rows already in --out and append the others.")] = False,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write an HTML summary (table per family, cactus plot, counterexample files beside it).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No line per finished instance on stderr.")] = False,
) -> int:
    """Run many checks (one per CSV row) in parallel and summarise them.

    Exit codes: 0 every instance has a verdict (whatever it is), 2 usage error (--resume
    without --out, a --report that is not .html), 4 bad input (a bad row is
    named before any work starts; or an instance whose model or domain failed to load), 5 an
    instance failed internally, 130 interrupted (the finished results are kept).
    """
    from equivcheck.campaign.instances import read_instances
    from equivcheck.campaign.runner import run_campaign

    if resume and out is None:
        fail("--resume needs --out (the results file to resume)", EXIT_USAGE)
    if report is not None:
        check_report(report)
    rows = read_instances(instances)
    if workers == 0:
        from equivcheck.engine.parallel import default_workers

        workers = default_workers()
    files = [Path(p) for inst in rows for p in (inst.a, inst.b, inst.domain or "")
             if p and Path(p).is_file()]
    outputs = [(name, p) for name, p in (("--out", out), ("--report", report)) if p is not None]
    check_outputs(outputs, [instances, *dict.fromkeys(files)])
    total = len(rows)

    def line(rec: dict) -> None:
        if not quiet:
            sys.stderr.write(f"  row {rec['row']}: {rec.get('verdict', '?'):8s} "
                             f"{float(rec.get('seconds') or 0):8.3f} s  {rec.get('reason', '')}\n")
            sys.stderr.flush()

    if not quiet:
        sys.stderr.write(f"equivcheck: {total} instances from {instances}"
                         f"{f' on {scheduler}' if scheduler else f', {workers} worker(s)'}\n")
    result = run_campaign(rows, out=out, workers=workers, scheduler=scheduler, resume=resume,
                          on_record=line)
    if result.skipped and not quiet:
        sys.stderr.write(f"  {len(result.skipped)} rows already in {out}: skipped\n")
    sys.stderr.write(result.summary.text())
    if report is not None:
        from equivcheck.campaign.html import write_report

        write_report(report, list(result.records), title=str(instances))
        sys.stderr.write(f"  report written to {report}\n")
    if result.interrupted:
        sys.stderr.write(f"equivcheck: interrupted: {len(result.ran)} finished instances kept"
                         f"{f' in {out}' if out else ''}\n")
        return EXIT_INTERRUPTED
    return max((int(r.get("exit_code") or 0) for r in result.records
                if r.get("verdict") == "error"), default=0)


def check_report(report: Path) -> None:
    """``--report`` is an HTML file whose cactus plot matplotlib draws: a name that is not
    ``.html`` is a usage error (exit 2), and a missing matplotlib is said in one line (exit 4)
    before any instance runs, rather than found at the end."""
    import importlib.util

    if report.suffix.lower() not in (".html", ".htm"):
        fail(f"--report {report}: use a .html file name", EXIT_USAGE)
    if importlib.util.find_spec("matplotlib") is None:
        fail("--report needs matplotlib (the cactus plot), which is not installed: "
             "pip install 'equivcheck[report]'")
