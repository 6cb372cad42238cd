"""Human-readable rendering of a :class:`ProofResult` (rich, for stderr) and plain text."""

from __future__ import annotations

from .result import Counterexample, ProofResult, Verdict

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
        if ev.error:
            lines.append(f"  {ev.backend:<11}: could not run ({ev.error})")
            continue
        shown = "VIOLATED" if ev.violated else "holds"
        lines.append(
            f"  {ev.backend:<11}: a={_vec(ev.output_a, limit)} b={_vec(ev.output_b, limit)} "
            f"margin={ev.margin:.6g} ({shown})"
        )
    lines.append("  reproduces in float64 and onnxruntime: " + ("yes" if cex.reproduces else "NO"))
    if cex.note:
        lines.append(f"  note: {cex.note}")
    return lines


def render(result: ProofResult, console) -> None:
    """Print a result for a person (to the given rich console)."""
    from rich.table import Table

    style = VERDICT_STYLE[result.verdict]
    console.print(f"[{style}]{result.verdict.label.upper()}[/] {result.reason}")
    console.print(f"  a: {result.model_a}")
    console.print(f"  b: {result.model_b}")
    spec = result.spec
    spec_text = spec["mode"] + (f" (tolerance {spec['tolerance']:g}, {spec['norm']})" if "tolerance" in spec else "")
    console.print(f"  mode: {spec_text}")
    console.print(f"  domain: {result.domain_text}")
    console.print(f"  time: {result.seconds:.3f} s")
    for note in result.notes:
        console.print(f"  note: {note}")
    rows = result.stability
    if rows:
        table = Table(title="ReLU stability from interval bounds", title_justify="left")
        for col in ("box", "net", "layer", "width", "active", "inactive", "unstable", "shared"):
            table.add_column(col, justify="right")
        for box in result.boxes:
            for s in box.stability:
                table.add_row(
                    str(box.index), s.network, str(s.layer), str(s.width), str(s.active),
                    str(s.inactive), str(s.unstable), "yes" if s.shared else "",
                )
        console.print(table)
    if result.counterexample is not None:
        console.print("[bold]counterexample[/]")
        for line in counterexample_lines(result.counterexample):
            console.print(line, markup=False)
