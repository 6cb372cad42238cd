"""Human-readable rendering of a :class:`ProofResult`: rich for a terminal, plain text elsewhere.

The one renderer of proof results for people, and the one place a :class:`Spec` is put in
words (:func:`spec_text`), which the CLI, :mod:`equivcheck.testing` and the pytest plugin share.
"""

from __future__ import annotations

from fractions import Fraction

from equivcheck.core.options import BoundMethod
from equivcheck.core.result import BoxResult, Counterexample, ProofResult, Verdict
from equivcheck.core.spec import Mode, Spec

VERDICT_STYLE = {Verdict.PROVED: "bold green", Verdict.REFUTED: "bold red", Verdict.UNKNOWN: "bold yellow"}


def _vec(values, limit: int = 8) -> str:
    shown = ", ".join(f"{v:.9g}" for v in values[:limit])
    more = f", ... ({len(values)} values)" if len(values) > limit else ""
    return f"[{shown}{more}]"


def _input_vec(values, limit: int = 8) -> str:
    """Inputs, each in the shortest text that reads back to the same float32 (or float64)."""
    import numpy as np

    def one(v: float) -> str:
        f = np.float32(v)
        return str(f) if float(f) == v else repr(v)

    shown = ", ".join(one(v) for v in values[:limit])
    more = f", ... ({len(values)} values)" if len(values) > limit else ""
    return f"[{shown}{more}]"


def counterexample_lines(cex: Counterexample, limit: int = 8) -> list[str]:
    """Plain-text lines describing a counterexample on every backend."""
    lines = [f"input ({cex.found_by}, box {cex.box_index}): {_input_vec(cex.input, limit)}"]
    for ev in (cex.exact, cex.float64, cex.onnxruntime):
        if ev is None:
            continue
        if not ev.finite and ev.output_a and ev.backend != "exact":
            lines.append(
                f"  {ev.backend:<11}: a={_vec(ev.output_a, limit)} b={_vec(ev.output_b, limit)} "
                "outputs not finite (inf or NaN): the spec cannot be judged"
            )
            continue
        if ev.error:
            lines.append(f"  {ev.backend:<11}: could not run ({ev.error})")
            continue
        shown = "VIOLATED" if ev.violated else "holds"
        margin = f"{ev.margin:.6g}"
        if ev.exact_margin is not None:
            from equivcheck.core.rational import format_rational

            margin = format_rational(ev.exact_margin, 6)
        lines.append(
            f"  {ev.backend:<11}: a={_vec(ev.output_a, limit)} b={_vec(ev.output_b, limit)} "
            f"margin={margin} ({shown})"
        )
    lines.append("  reproduces in float64 and onnxruntime: " + ("yes" if cex.reproduces else "NO"))
    if cex.note:
        lines.append(f"  note: {cex.note}")
    return lines


MAX_BOX_ROWS = 20  # boxes shown in the stability table; --json keeps all


def boxes_to_show(boxes, limit: int = MAX_BOX_ROWS) -> tuple[list[BoxResult], list[BoxResult]]:
    """The boxes a person sees (at most ``limit``: the non-proved ones first, then in index
    order, shown in index order) and the rest."""
    if len(boxes) <= limit:
        return list(boxes), []
    order = sorted(range(len(boxes)), key=lambda i: (boxes[i].verdict is Verdict.PROVED, i))
    keep = set(order[:limit])
    return ([b for i, b in enumerate(boxes) if i in keep],
            [b for i, b in enumerate(boxes) if i not in keep])


def rest_text(rest: list[BoxResult]) -> str:
    """``"1980 more boxes (all PROVED)"`` or with the count of each verdict."""
    counts = {v: sum(1 for b in rest if b.verdict is v) for v in Verdict}
    if counts[Verdict.PROVED] == len(rest):
        what = "all PROVED"
    else:
        what = ", ".join(f"{n} {v.label.upper()}" for v, n in counts.items() if n)
    return f"{len(rest)} more box{'es' if len(rest) > 1 else ''} ({what})"


def tolerance_text(spec: Spec) -> str:
    """The tolerance in short text: ``%g`` of the float when that is the exact value, else the
    exact rational (so 1e-400 never prints as 0)."""
    from equivcheck.core.rational import format_rational

    tol = spec.tolerance
    if Fraction(float(tol)) != tol:
        return format_rational(tol, 6)
    return f"{float(tol):g}"


def spec_text(spec: Spec, brief: bool = False) -> str:
    """The spec in words: ``strict``, ``argmax``, ``top1 (confidence 0.9)`` or ``epsilon
    (tolerance 0.1, linf)``; with ``brief``, ``epsilon 0.1`` (the norm left out); with
    ``logits``, followed by ``, on the logits before the output head``."""
    logits = ", on the logits before the output head" if spec.logits else ""
    if spec.mode is Mode.TOP1:
        from equivcheck.core.rational import format_rational

        delta = spec.confidence
        shown = f"{float(delta):g}" if Fraction(float(delta)) == delta else format_rational(delta, 6)
        return f"top1 {shown}{logits}" if brief else f"top1 (confidence {shown}){logits}"
    if spec.mode is not Mode.EPSILON:
        return spec.mode.value + logits
    if brief:
        return f"{spec.mode.value} {tolerance_text(spec)}{logits}"
    return f"{spec.mode.value} (tolerance {tolerance_text(spec)}, {spec.norm.value}){logits}"


BOUNDS_TITLE = {
    BoundMethod.INTERVAL: "interval bounds",
    BoundMethod.SYMBOLIC: "symbolic bounds",
    BoundMethod.LP: "LP-tightened bounds",
    BoundMethod.EXACT: "the exact stability analysis",
    BoundMethod.AUTO: "the default bounds",  # (a check resolves it: BoundMethod.resolve)
}


CEX_HEADING = "counterexample"
STABILITY_COLUMNS = ("box", "verdict", "net", "layer", "width", "active", "inactive", "unstable", "shared")


def summary_lines(result: ProofResult) -> list[str]:
    """The verdict with its reason, the models, the spec, the domain, the time and the notes,
    one plain line each (no markup)."""
    lines = [
        f"{result.verdict.label.upper()} {result.reason}",
        f"  a: {result.model_a}",
        f"  b: {result.model_b}",
        f"  mode: {spec_text(result.spec)}",
        f"  domain: {result.domain_text}",
        f"  time: {result.seconds:.3f} s",
    ]
    return lines + [f"  note: {note}" for note in result.notes]


def stability_rows(result: ProofResult) -> tuple[str, list[tuple[str, ...]], list[BoxResult]]:
    """The title and rows (cells as text, :data:`STABILITY_COLUMNS`) of the ReLU stability
    table of the boxes a person sees, and the boxes left out; no rows when no box has any."""
    shown, rest = boxes_to_show(result.boxes)
    title = f"ReLU stability from {BOUNDS_TITLE[result.bounds or result.options.bound_method]}"
    rows = [
        (str(box.index), box.verdict.label, s.network, str(s.layer), str(s.width), str(s.active),
         str(s.inactive), str(s.unstable), "yes" if s.shared else "")
        for box in shown for s in box.stability
    ]
    return title, rows, rest


def render(result: ProofResult, console) -> None:
    """Print a result for a person (to the given rich console)."""
    from rich.markup import escape
    from rich.table import Table

    _, *lines = summary_lines(result)  # the first line, styled here
    style = VERDICT_STYLE[result.verdict]
    console.print(f"[{style}]{result.verdict.label.upper()}[/] {escape(result.reason)}")
    for line in lines:
        console.print(line, markup=False)
    title, rows, rest = stability_rows(result)
    if rows:
        table = Table(title=title, title_justify="left")
        for col in STABILITY_COLUMNS:
            table.add_column(col, justify="right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    for line in _tail_lines(result, rest):
        console.print(line, markup=False, style="bold" if line == CEX_HEADING else None)


def render_text(result: ProofResult) -> str:
    """The same as :func:`render` in plain text (what a log or a pipe gets: no rich, no colour,
    no wrapping), ending with a newline."""
    lines = summary_lines(result)
    title, rows, rest = stability_rows(result)
    if rows:
        cells = [STABILITY_COLUMNS, *rows]
        widths = [max(len(row[k]) for row in cells) for k in range(len(STABILITY_COLUMNS))]
        lines.append(title)
        lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines += _tail_lines(result, rest)
    return "\n".join(lines) + "\n"


def _tail_lines(result: ProofResult, rest: list[BoxResult]) -> list[str]:
    """The lines after the table: the boxes left out and the counterexample."""
    lines = []
    if rest:
        lines.append(f"  ... and {rest_text(rest)} (--json lists every box)")
    if result.counterexample is not None:
        lines.append(CEX_HEADING)
        lines += counterexample_lines(result.counterexample)
    return lines
