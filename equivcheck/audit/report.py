"""The one renderer of an :class:`~equivcheck.audit.results.AuditResult`: HTML (with an embedded
plot), Markdown, JSON, and the plain text for the terminal.

All renderings carry the same content: the verdict table, the certified / witnessed deviation
bounds overall and per output, the units pruning removed or changed, and the deviation
distribution on random domain points (and on the user's data, when given).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from equivcheck.audit.results import AuditResult, ChangeKind
from equivcheck.core.result import json_safe, long_int_text
from equivcheck.errors import InputError

REPORT_SUFFIXES = (".html", ".htm", ".md", ".json")


def _g(v: float) -> str:
    return f"{v:.6g}"


def summary_lines(r: AuditResult) -> list[str]:
    """The headline facts, one per line (the CLI prints these)."""
    d = r.deviation
    state = "within the target gap" if r.converged else "NOT within the target gap"
    head = (f"worst-case deviation max ||f(x) - g(x)||_inf over the domain: "
            f"{_g(float(d.lower))} <= max <= {_g(float(d.upper))} ({state} {r.gap:g})")
    witness = (f"  witnessed lower bound: exact deviation at an input of the domain (output "
               f"{d.witness_output})") if d.witness is not None else "  no witness deviates (all zero)"
    lines = [head, f"  certified upper bound by: {d.upper_method}", witness]
    for c in r.checks:
        lines.append(f"{c.name:<16} {c.verdict.label.upper():<8} [{c.method}] {c.reason}")
    removed = sum(lc.units_removed for lc in r.layers)
    live = sum(lc.units_removed_live for lc in r.layers)
    changed = sum(lc.units_changed for lc in r.layers if lc.relu)
    changed_ok = sum(lc.units_changed_harmless for lc in r.layers if lc.relu)
    zeroed = sum(lc.weights_zeroed for lc in r.layers)
    total = sum(lc.weights for lc in r.layers)
    if r.layers:
        lines.append(
            f"pruning: {zeroed} of {total} weights zeroed; hidden units: {removed} removed "
            f"({removed - live} stably inactive = harmless, {live} live), {changed} changed "
            f"({changed_ok} of them inactive in both models = harmless)"
        )
    for s in (r.samples, r.data):
        if s is not None:
            lines.append(
                f"{s.source}: top-1 agreement {s.top1_agreement:.2f}%, deviation median "
                f"{_g(s.quantiles['p50'])}, p99 {_g(s.quantiles['p99'])}, max {_g(s.deviation_max)}"
                f" ({s.inside_domain} of {s.count} inside the domain)"
            )
    lines.extend(f"note: {n}" for n in r.notes)
    return lines


def terminal_lines(r: AuditResult) -> list[str]:
    """What ``equivcheck audit`` prints without ``--json``: the models, the domain, the
    :func:`summary_lines` and the time."""
    return [f"audit {r.original} -> {r.pruned}", f"  domain: {r.domain_text}",
            *summary_lines(r), f"  time: {r.seconds:.1f} s"]


# ---------------------------------------------------------------------------------------------
# plot


def plot_png(r: AuditResult) -> bytes:
    """A PNG: the deviation distribution with the certified and witnessed bounds, and per-output
    bound intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100,
                                   gridspec_kw={"width_ratios": [3, 2]})
    lower, upper = float(r.deviation.lower), float(r.deviation.upper)
    series = [(r.samples, "random domain points", "#4C72B0")]
    if r.data is not None:
        series.append((r.data, f"data ({r.data.count} inputs)", "#DD8452"))
    top = max([upper, lower] + [float(s.deviations.max()) for s, _, _ in series if len(s.deviations)])
    top = top if top > 0 else 1.0
    for s, label, color in series:
        if len(s.deviations):
            ax1.hist(s.deviations, bins=40, range=(0, top * 1.02), alpha=0.6, color=color,
                     label=label)
    spread = max((float(s.deviations.max()) - float(s.deviations.min()) for s, _, _ in series
                  if len(s.deviations)), default=0.0)
    if 0 < spread < 0.1 * top:
        # the samples crowd into one bar at this scale: zoom in on them
        inset = ax1.inset_axes([0.3, 0.45, 0.4, 0.4])
        for s, _, color in series:
            if len(s.deviations):
                inset.hist(s.deviations, bins=40, alpha=0.6, color=color)
        inset.set_title("zoom on the samples", fontsize=8)
        inset.tick_params(labelsize=7)
    ax1.axvline(lower, color="#2CA02C", lw=2, label=f"witnessed lower bound {lower:.4g}")
    ax1.axvline(upper, color="#D62728", lw=2, ls="--", label=f"certified upper bound {upper:.4g}")
    ax1.set_xlabel("||f(x) - g(x)||_inf")
    ax1.set_ylabel("inputs")
    ax1.set_title("Deviation distribution and worst-case bounds")
    ax1.legend(fontsize=8, loc="lower right")
    outs = r.per_output
    js = [p.output for p in outs]
    ax2.bar(js, [float(p.upper) for p in outs], color="#F4A6A6", label="certified upper")
    ax2.bar(js, [float(p.lower) for p in outs], color="#2CA02C", label="witnessed lower")
    ax2.set_xlabel("output")
    ax2.set_ylabel("max |f_j(x) - g_j(x)|")
    ax2.set_title("Per-output worst-case deviation")
    ax2.set_xticks(js)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# HTML

_CSS = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 24px;
       color: #222; max-width: 1150px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 26px; }
.meta { color: #555; font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; margin-top: 6px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.proved { background: #d8f3dc; font-weight: bold; } .refuted { background: #fadbd8;
font-weight: bold; } .unknown { background: #fdf2c4; font-weight: bold; }
.big { font-size: 18px; } .note { color: #8a5a00; font-size: 13px; }
code { font-size: 12px; }
"""


def _e(text) -> str:
    return html.escape(str(text))


def _vec(values, limit: int = 6) -> str:
    shown = ", ".join(f"{v:.5g}" for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}] ({len(values)} values)"


def to_html(r: AuditResult) -> str:
    """A self-contained HTML page (the plot is an embedded base64 PNG)."""
    png = base64.b64encode(plot_png(r)).decode("ascii")
    d = r.deviation
    p = []
    p.append(f"<!doctype html><html><head><meta charset='utf-8'><title>equivcheck audit</title>"
             f"<style>{_CSS}</style></head><body>")
    p.append("<h1>equivcheck audit</h1>")
    p.append(f"<div class='meta'>original: <code>{_e(r.original)}</code><br>pruned: "
             f"<code>{_e(r.pruned)}</code><br>domain: {_e(r.domain_text)}<br>"
             f"time: {r.seconds:.1f} s</div>")
    state = "within" if r.converged else "not within"
    p.append("<h2>Worst-case deviation over the domain</h2>")
    p.append(f"<p class='big'>{_g(float(d.lower))} &le; max<sub>x</sub> "
             f"||f(x) &minus; g(x)||<sub>&infin;</sub> &le; <b>{_g(float(d.upper))}</b></p>")
    p.append(f"<p>Upper bound <b>certified</b> by {_e(d.upper_method)}; lower bound "
             f"<b>witnessed</b>: the exact deviation at a concrete input of the domain"
             + (f" (largest at output {d.witness_output}; input {_e(_vec(d.witness))})"
                if d.witness is not None else "")
             + f". Gap {state} the target {r.gap:g} (relative).</p>")
    p.append(f"<img alt='deviation plot' style='max-width:100%' src='data:image/png;base64,{png}'>")
    p.append("<h2>Verdicts</h2><table><tr><th>notion</th><th>verdict</th><th>decided by</th>"
             "<th>reason</th><th>counterexample</th></tr>")
    for c in r.checks:
        cex = ""
        if c.counterexample is not None:
            ce = c.counterexample
            cex = (f"x = {_e(_vec(ce.input))}<br>exact margin {ce.exact.margin:.4g}; reproduces "
                   f"in float64 and onnxruntime: {'yes' if ce.reproduces else 'NO'}")
        p.append(f"<tr><td>{_e(c.name)}</td><td class='{c.verdict.label}'>"
                 f"{c.verdict.label.upper()}</td><td>{_e(c.method)}</td><td>{_e(c.reason)}</td>"
                 f"<td>{cex}</td></tr>")
    p.append("</table>")
    p.append("<h2>Per output</h2><table><tr><th>output</th><th>witnessed lower</th>"
             "<th>certified upper</th><th>upper bound by</th></tr>")
    for o in r.per_output:
        p.append(f"<tr><td>{o.output}</td><td>{_g(float(o.lower))}</td><td>{_g(float(o.upper))}"
                 f"</td><td>{_e(o.upper_method)}</td></tr>")
    p.append("</table>")
    p.append("<h2>What the pruning changed</h2>")
    if r.layers:
        p.append("<table><tr><th>layer</th><th>width</th><th>weights zeroed</th>"
                 "<th>weights changed</th><th>units removed</th><th>removed, stably inactive "
                 "(harmless)</th><th>removed, live</th><th>units changed</th><th>changed, "
                 "inactive in both</th></tr>")
        for lc in r.layers:
            kind = "hidden" if lc.relu else "output"
            p.append(f"<tr><td>{lc.layer} ({kind})</td><td>{lc.width}</td><td>{lc.weights_zeroed} "
                     f"of {lc.weights}</td><td>{lc.weights_changed}</td><td>{lc.units_removed}</td>"
                     f"<td>{lc.units_removed_harmless}</td><td>{lc.units_removed_live}</td>"
                     f"<td>{lc.units_changed}</td><td>{lc.units_changed_harmless}</td></tr>")
        p.append("</table>")
        removed = [u for u in r.units if u.kind is ChangeKind.REMOVED]
        if removed:
            items = ", ".join(
                f"L{u.layer}#{u.unit} ({u.original}{', harmless' if u.harmless else ', LIVE'})"
                for u in removed[:200]
            )
            p.append(f"<p>Removed units: {_e(items)}{' ...' if len(removed) > 200 else ''}</p>")
    p.append("<h2>Deviation on inputs</h2><table><tr><th>inputs</th><th>count</th>"
             "<th>inside domain</th><th>top-1 agreement</th><th>median</th><th>p90</th><th>p99</th>"
             "<th>max</th></tr>")
    for s in (r.samples, r.data):
        if s is None:
            continue
        q = s.quantiles
        p.append(f"<tr><td>{_e(s.source)}</td><td>{s.count}</td><td>{s.inside_domain}</td>"
                 f"<td>{s.top1_agreement:.2f}%</td><td>{_g(q['p50'])}</td><td>{_g(q['p90'])}</td>"
                 f"<td>{_g(q['p99'])}</td><td>{_g(s.deviation_max)}</td></tr>")
    p.append("</table><p class='meta'>Deviations on inputs are numpy float64 evaluations "
             "(not certified); the certified bound covers every input inside the domain.</p>")
    for n in r.notes:
        p.append(f"<p class='note'>note: {_e(n)}</p>")
    p.append("</body></html>")
    return "\n".join(p)


# ---------------------------------------------------------------------------------------------
# Markdown


def to_markdown(r: AuditResult) -> str:
    """The same content as :func:`to_html`, as Markdown (no plot; the numbers instead)."""
    d = r.deviation
    out = ["# equivcheck audit", "", f"- original: `{r.original}`", f"- pruned: `{r.pruned}`",
           f"- domain: {r.domain_text}", f"- time: {r.seconds:.1f} s", "",
           "## Worst-case deviation over the domain", "",
           (f"**{_g(float(d.lower))} <= max ||f(x) - g(x)||_inf <= {_g(float(d.upper))}** "
            f"(target relative gap {r.gap:g}: {'met' if r.converged else 'NOT met'})"), "",
           f"- certified upper bound by: {d.upper_method}",
           "- witnessed lower bound: exact deviation at "
           + (f"`{_vec(d.witness)}` (output {d.witness_output})" if d.witness else "no input"),
           "", "## Verdicts", "", "| notion | verdict | decided by | reason |",
           "|---|---|---|---|"]
    for c in r.checks:
        out.append(f"| {c.name} | **{c.verdict.label.upper()}** | {c.method} | "
                   f"{c.reason.replace('|', '/')} |")
    out += ["", "## Per output", "", "| output | witnessed lower | certified upper | by |",
            "|---|---|---|---|"]
    for o in r.per_output:
        out.append(f"| {o.output} | {_g(float(o.lower))} | {_g(float(o.upper))} | "
                   f"{o.upper_method} |")
    out += ["", "## What the pruning changed", ""]
    if r.layers:
        out += [("| layer | width | weights zeroed | weights changed | units removed | "
                 "removed harmless | removed live | units changed | changed, inactive in both |"),
                "|---|---|---|---|---|---|---|---|---|"]
        for lc in r.layers:
            out.append(f"| {lc.layer}{'' if lc.relu else ' (output)'} | {lc.width} | "
                       f"{lc.weights_zeroed}/{lc.weights} | {lc.weights_changed} | "
                       f"{lc.units_removed} | {lc.units_removed_harmless} | "
                       f"{lc.units_removed_live} | {lc.units_changed} | "
                       f"{lc.units_changed_harmless} |")
    out += ["", "## Deviation on inputs (float64, not certified)", "",
            "| inputs | count | inside domain | top-1 agreement | median | p99 | max |",
            "|---|---|---|---|---|---|---|"]
    for s in (r.samples, r.data):
        if s is not None:
            q = s.quantiles
            out.append(f"| {s.source} | {s.count} | {s.inside_domain} | {s.top1_agreement:.2f}% "
                       f"| {_g(q['p50'])} | {_g(q['p99'])} | {_g(s.deviation_max)} |")
    if r.notes:
        out += [""] + [f"- note: {n}" for n in r.notes]
    return "\n".join(out) + "\n"


def to_json(r: AuditResult) -> str:
    """The JSON object (``AuditResult.to_dict``), indented, strict (no NaN or Infinity; the
    rules of :mod:`equivcheck.core.result`)."""
    with long_int_text():
        data = json_safe(r.to_dict())
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


def write_report(r: AuditResult, path: str | Path) -> Path:
    """Write the report in the format its suffix names (.html, .md or .json)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in REPORT_SUFFIXES:
        raise InputError(f"report {path}: use a .html, .md or .json file name")
    text = to_html(r) if suffix in (".html", ".htm") else to_markdown(r) if suffix == ".md" \
        else to_json(r)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write report {path}: {exc.strerror}") from None
    return path
