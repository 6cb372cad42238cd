"""``equivcheck regions bound`` and ``equivcheck regions count``: thin layers over
:mod:`equivcheck.regions.counting`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from equivcheck.cli import app
from equivcheck.cli.common import EXIT_USAGE, check_timeout, emit_json, fail, guarded, out_console
from equivcheck.cli.progress import HEARTBEAT, ProgressLine
from equivcheck.core.deadline import Deadline
from equivcheck.core.options import DEFAULT_TIMEOUT
from equivcheck.core.progress import Progress

EXIT_LOWER_BOUND = 3  # the count stopped early (cap, timeout, unresolved branch): a lower bound
PRINT_DIGITS = 1000  # longer exact integers are not printed on the terminal
MAX_BOX_ROWS = 20  # boxes whose per-layer refinement is printed

regions_app = typer.Typer(
    name="regions",
    help="Linear regions: Serra et al. upper bounds and exact counting.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(regions_app, name="regions")

DomainOpt = Annotated[
    str | None,
    typer.Option("--domain", "-d", help="LO:HI, a .vnnlib or a .json file."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


@regions_app.command("bound")
@guarded
def bound_cmd(
    model: Annotated[
        Path | None, typer.Argument(help="Network (ONNX).", show_default=False)
    ] = None,
    widths: Annotated[
        str | None,
        typer.Option(
            "--widths",
            "-w",
            help="Instead of a model: IN,H1,...,HL,OUT (e.g. 784,22,10); the last "
            "(output) layer has no ReLU and is not counted. Each width at most 1,000,000, "
            "at most 1,000,000 ReLU units, and the exact bounds must be cheap enough to compute.",
        ),
    ] = None,
    domain: DomainOpt = None,
    as_json: JsonOpt = False,
) -> int:
    """Upper bounds on the number of linear regions (exact integers).

    Theorem 1 of Serra, Tjandraatmadja and Ramalingam (2018), the 2^N activation-pattern bound
    and the bound of one hidden layer with all N units; with --domain also the bound refined by
    unit stability on the domain and by weight ranks.
    """
    from equivcheck.regions import bounds_for_widths, network_bounds, parse_widths

    if (model is None) == (widths is None):
        fail("give either a model or --widths (not both)", EXIT_USAGE)
    if widths is not None:
        if domain is not None:
            fail("--domain needs a model (the refined bound reads the weights)", EXIT_USAGE)
        in_dim, hidden, out = parse_widths(widths)
        result = bounds_for_widths(in_dim, hidden, output_width=out, source=f"--widths {widths}")
    else:
        from equivcheck.io.onnx_import import load_network

        net = load_network(model)
        result = network_bounds(net, domain)
    if as_json:
        emit_json(result)
    else:
        _render_bounds(result)
    return 0


def _render_bounds(b) -> None:
    from rich.markup import escape

    from equivcheck.regions import scientific

    con = out_console()
    units = sum(b.widths)
    con.print(f"[bold]Linear-region bounds[/bold] for {escape(str(b.source))}")
    layers = ", ".join(str(w) for w in b.widths) or "none"
    out = (
        f"; output layer of {b.output_width} units has no ReLU and is not counted"
        if b.output_width is not None
        else ""
    )
    con.print(f"  input dimension n0 = {b.in_dim}, ReLU layers: {layers} ({units} units){out}")
    rows = [
        ("Theorem 1 (Serra et al. 2018)", b.theorem1),
        (f"shallow net, one layer of {units} units (comparison)", b.shallow),
        (f"activation patterns 2^{units}", b.activation_patterns),
    ]
    if b.refined is not None:
        rows.insert(1, ("refined on the domain (stability, ranks)", b.refined.value))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        con.print(f"  {label:<{width}}  {scientific(value):>11}")
    if b.refined is not None:
        con.print(f"  domain: {b.refined.domain}", markup=False)
        boxes = b.refined.boxes
        for k, box in enumerate(boxes[:MAX_BOX_ROWS]):
            for i, lr in enumerate(box):
                note = "" if lr.ranks_exact else " (rank not confirmed: min(rows, cols) used)"
                con.print(
                    f"    {'box ' + str(k + 1) + ' ' if len(b.refined.boxes) > 1 else ''}"
                    f"layer {i + 1}: {lr.unstable} unstable, {lr.stably_active} stably active, "
                    f"{lr.stably_inactive} stably inactive; "
                    f"ranks {lr.split_rank}/{lr.pass_rank}{note}"
                )
        if len(boxes) > MAX_BOX_ROWS:
            con.print(f"    ... and {len(boxes) - MAX_BOX_ROWS} more boxes (--json lists every box)")
    con.print("  exact values:")
    for label, value in rows:
        con.print(f"    {label}: {_exact_text(value)}", soft_wrap=True, markup=False)


def _exact_text(n: int) -> str:
    """``n`` in full when it has at most :data:`PRINT_DIGITS` digits, else its size."""
    from equivcheck.regions import scientific

    if n.bit_length() <= PRINT_DIGITS * 3.32:
        return str(n)
    from equivcheck.core.result import MAX_EXACT_DIGITS

    digits = int(scientific(n, 3).split("e")[1]) + 1
    where = "--json holds it" if digits <= MAX_EXACT_DIGITS else "too long to write exactly"
    return f"about {digits:,} digits, not printed ({where})"


@regions_app.command("count")
@guarded
def count_cmd(
    model: Annotated[Path, typer.Argument(help="Network (ONNX).", show_default=False)],
    domain: DomainOpt = None,
    cap: Annotated[
        int, typer.Option("--cap", help="Stop after this many regions (lower bound).")
    ] = 100_000,
    timeout: Annotated[
        float | None, typer.Option("--timeout", "-t", show_default=False, help=(
            f"Stop after this many seconds (lower bound); default {DEFAULT_TIMEOUT:g}, or "
            "\\[tool.equivcheck] timeout."))
    ] = None,
    as_json: JsonOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress line on stderr.")] = False,
) -> int:
    """Count the linear regions of a small network on a box, exactly.

    Default domain 0:1 on every input. The count goes to stdout, progress and errors to
    stderr. Exit codes: 0 exact count, 3 lower bound only (cap, timeout or an undecided
    branch), 4 bad input, 2 usage error.
    """
    from equivcheck.cli.common import project_defaults
    from equivcheck.io.onnx_import import load_network
    from equivcheck.regions import count_regions

    if cap < 1:
        fail(f"--cap must be at least 1, got {cap}", EXIT_USAGE)
    if timeout is None:
        timeout = project_defaults().timeout or DEFAULT_TIMEOUT
    check_timeout(timeout)
    deadline = Deadline.for_command(timeout)
    net = load_network(model)
    with ProgressLine(quiet=quiet, tty=False if as_json else None, heartbeat=HEARTBEAT) as line:

        def progress(done: float, found: int) -> None:
            line(Progress("counting regions", done=found, unit="regions",
                          seconds_left=deadline.remaining(),
                          detail=f"{100 * done:.1f}% of activation patterns"))

        result = count_regions(net, domain, cap=cap, timeout=deadline, progress=progress)
    out = result.to_dict()
    out = {"model": str(model), **out}
    if as_json:
        emit_json(out)
    else:
        from rich.markup import escape

        con = out_console()
        kind = "exact" if result.exact else f"lower bound: stopped by {result.status.value}"
        con.print(f"[bold]{escape(str(model))}[/bold] on {escape(str(result.domain))}")
        plural = "" if result.count == 1 else "s"
        con.print(f"  {result.count} linear region{plural} ({kind})")
        refined = (f", refined bound {_exact_text(result.refined)}"
                   if result.refined is not None else "")
        con.print(f"  Theorem 1 bound {_exact_text(result.theorem1)}{refined}", soft_wrap=True,
                  markup=False)
        con.print(
            f"  search: {result.nodes} nodes, {result.lp_calls} LPs, "
            f"{result.unresolved} unresolved branches, {result.elapsed:.2f} s"
        )
    return 0 if result.exact else EXIT_LOWER_BOUND
