"""The one renderer of an :class:`~equivcheck.audit.results.AuditResult`: HTML (with inline
SVG figures from :mod:`~equivcheck.audit.plots`), Markdown, JSON, and the plain text for the
terminal.

All renderings carry the same content, in this order: the removed units that were live (first,
when there are any), the certified / witnessed deviation bounds overall, the verdicts, the
bounds per output, the deviation on random domain points and on the user's data (inputs inside
and outside the domain kept apart: the certified bound covers only the inside), and what the
pruning changed. No section is left empty: where there is nothing to draw or list, a sentence
says why.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from equivcheck.audit.plots import Figure, empty_texts, figures, inconsistent_outputs
from equivcheck.audit.results import AuditResult, ChangeKind, UnitChange
from equivcheck.core.options import UnitStability
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
# content shared by the HTML and the Markdown


_ORIGINAL_WORDS = {
    UnitStability.ACTIVE: "active on the whole domain",
    UnitStability.UNSTABLE: "active on part of the domain",
    UnitStability.INACTIVE: "inactive on the whole domain",
}


def live_units(r: AuditResult) -> list[UnitChange]:
    """The removed units that were not harmless (see :attr:`UnitChange.live`)."""
    return [u for u in r.units if u.live]


def effect_text(u: UnitChange) -> str:
    """What removing the live unit ``u`` does, in one sentence."""
    if u.reach is not None:
        return (f"can move a pre-activation of layer {u.layer + 1} by up to {u.reach:.4g} "
                "(certified bound over the domain)")
    if u.original is UnitStability.ACTIVE:
        return "its output is lost on every input of the domain"
    if u.original is UnitStability.UNSTABLE:
        return "its output is lost wherever it fires"
    return "the pruned unit outputs its positive bias where the original outputs 0"


def removed_counts(r: AuditResult) -> tuple[int, int]:
    """(removed units, of which live)."""
    removed = [u for u in r.units if u.kind is ChangeKind.REMOVED]
    return len(removed), sum(u.live for u in removed)


def inconsistency_text(r: AuditResult) -> str | None:
    """A warning when a certified upper bound lies below its witnessed lower bound (impossible
    when both are right: the witness is exact, so the certified bound is wrong), else None."""
    bad = inconsistent_outputs(r)
    if r.deviation.upper < r.deviation.lower:
        bad = ["the total"] + bad
    if not bad:
        return None
    return ("Inconsistent bounds, a bug in equivcheck (please report it): the certified upper "
            f"bound lies below the exactly witnessed deviation for output(s) "
            f"{', '.join(map(str, bad))}. Do not rely on the certified bounds or the verdicts "
            "they decide in this report.")


def comparison_note(r: AuditResult) -> str | None:
    """The note saying why units were not compared one by one (architectures differ)."""
    return next((n for n in r.notes if n.startswith("architectures differ")), None)


def input_rows(r: AuditResult) -> list[tuple[str, ...]]:
    """The rows of the deviation-on-inputs table: source, count, inside the domain, top-1
    agreement, median, p99 (all inputs), max inside the domain (covered by the certified bound),
    max outside (not covered); "-" where there is no such input."""
    rows = []
    for s in (r.samples, r.data):
        if s is None:
            continue
        inside = np.asarray(s.deviations_inside, dtype=float)
        q = s.quantiles
        outside = s.count - s.inside_domain
        out_max = "-"
        if outside:
            out_max = _g(s.deviation_max) if not len(inside) or float(inside.max()) < \
                s.deviation_max else f"<= {_g(s.deviation_max)}"
        rows.append((s.source, str(s.count), f"{s.inside_domain} of {s.count}",
                     f"{s.top1_agreement:.2f}%", _g(q["p50"]), _g(q["p99"]),
                     _g(float(inside.max())) if len(inside) else "-", out_max))
    return rows


INPUT_COLUMNS = ("inputs", "count", "inside the domain", "top-1 agreement", "median", "p99",
                 "max inside the domain", "max outside the domain (not covered)")


# ---------------------------------------------------------------------------------------------
# HTML

_CSS = """
.eqc { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; color: #222;
       max-width: 1100px; line-height: 1.4; }
.eqc h1 { font-size: 22px; margin: 0 0 4px; } .eqc h2 { font-size: 17px; margin: 26px 0 6px; }
.eqc .meta { color: #555; font-size: 13px; }
.eqc table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
.eqc th, .eqc td { border: 1px solid #ccc; padding: 4px 8px; text-align: left;
                   vertical-align: top; }
.eqc th { background: #f3f3f3; }
.eqc .proved { background: #d8f3dc; font-weight: bold; }
.eqc .refuted { background: #fadbd8; font-weight: bold; }
.eqc .unknown { background: #fdf2c4; font-weight: bold; }
.eqc .big { font-size: 18px; margin: 6px 0; } .eqc .note { color: #8a5a00; font-size: 13px; }
.eqc .alert { border-left: 5px solid #C62828; background: #fff4f4; padding: 4px 14px 8px; }
.eqc figure { margin: 10px 0 18px; } .eqc figure svg { display: block; }
.eqc figcaption { font-size: 13px; color: #333; max-width: 1000px; }
.eqc code { font-size: 12px; } .eqc summary { cursor: pointer; font-size: 13px; }
"""


def _e(text) -> str:
    return html.escape(str(text))


def _vec(values, limit: int = 6) -> str:
    shown = ", ".join(f"{v:.5g}" for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}] ({len(values)} values)"


def _table(columns, rows) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _figure(n: int, fig: Figure) -> str:
    return (f"<figure id='fig-{fig.key}'>{fig.svg}<figcaption><b>Figure {n}. {_e(fig.title)}."
            f"</b> {_e(fig.caption)}</figcaption></figure>")


def _live_html(r: AuditResult) -> list[str]:
    live = live_units(r)
    if not live:
        return []
    removed, _ = removed_counts(r)
    rows = [(str(u.layer), str(u.unit), _ORIGINAL_WORDS[u.original], effect_text(u))
            for u in live]
    return ["<section id='live-units' class='alert'>",
            f"<h2>Removed units that were live: {len(live)} of {removed} removed</h2>",
            "<p>In the original model these units are not stably inactive on the domain "
            "(sound bounds), so removing them can change the outputs; their effect is included "
            f"in the deviation bounds below. The other {removed - len(live)} removed units were "
            "stably inactive: harmless.</p>",
            _table(("layer", "unit", "in the original, on the domain", "effect of removing it"),
                   rows), "</section>"]


def _changes_html(r: AuditResult) -> list[str]:
    p = ["<section id='changes'><h2>What the pruning changed</h2>"]
    if not r.layers:
        why = comparison_note(r) or "the models were not compared unit by unit"
        p.append(f"<p>{_e(why[0].upper() + why[1:])}. The audit compares the two functions "
                 "only: the deviation bounds and verdicts above.</p></section>")
        return p
    rows = [(f"{lc.layer} ({'hidden' if lc.relu else 'output'})", str(lc.width),
             f"{lc.weights_zeroed} of {lc.weights}", str(lc.weights_changed),
             str(lc.units_removed), str(lc.units_removed_harmless), str(lc.units_removed_live),
             str(lc.units_changed), str(lc.units_changed_harmless)) for lc in r.layers]
    p.append(_table(("layer", "width", "weights zeroed", "weights changed", "units removed",
                     "removed, stably inactive (harmless)", "removed, live", "units changed",
                     "changed, inactive in both (harmless)"), rows))
    changed = [u for u in r.units]
    if changed:
        rows = [(str(u.layer), str(u.unit), str(u.kind), _ORIGINAL_WORDS[u.original],
                 "harmless" if u.harmless else ("LIVE" if u.live else "may change outputs"))
                for u in changed]
        p.append(f"<details><summary>All {len(changed)} removed or changed hidden units"
                 "</summary>")
        p.append(_table(("layer", "unit", "change", "in the original, on the domain",
                         "effect"), rows))
        p.append("</details>")
    p.append("</section>")
    return p


def html_fragment(r: AuditResult) -> str:
    """The report as one ``<div class="eqc">`` with its own scoped style (what a notebook shows;
    :func:`to_html` wraps it in a page)."""
    figs = {f.key: (n, f) for n, f in enumerate(figures(r), start=1)}
    empty = empty_texts(r)

    def fig_or_text(key: str) -> str:
        if key in figs:
            return _figure(*figs[key])
        return f"<p>{_e(empty[key])}</p>" if key in empty else ""

    d = r.deviation
    p = [f"<div class='eqc'><style>{_CSS}</style>", "<h1>equivcheck audit</h1>",
         f"<div class='meta'>original: <code>{_e(r.original)}</code><br>pruned: "
         f"<code>{_e(r.pruned)}</code><br>domain: {_e(r.domain_text)}<br>"
         f"time: {r.seconds:.1f} s</div>"]
    warning = inconsistency_text(r)
    if warning:
        p.append(f"<section id='inconsistent' class='alert'><h2>Warning</h2><p>{_e(warning)}"
                 "</p></section>")
    p += _live_html(r)
    state = "within" if r.converged else "not within"
    p.append("<section id='worst-case'><h2>Worst-case deviation over the domain</h2>")
    p.append(f"<p class='big'>{_g(float(d.lower))} &le; max<sub>x in domain</sub> "
             f"||f(x) &minus; g(x)||<sub>&infin;</sub> &le; <b>{_g(float(d.upper))}</b> "
             "<span class='meta'>(the models' output units)</span></p>")
    p.append(f"<p>Upper bound <b>certified</b> by {_e(d.upper_method)}: no input of the domain "
             "deviates more, in exact arithmetic on the stored weights. Lower bound "
             "<b>witnessed</b>: the exact deviation at a concrete input of the domain"
             + (f" (largest at output {d.witness_output}; input {_e(_vec(d.witness))})"
                if d.witness is not None else "")
             + f". Gap {state} the target {r.gap:g} (relative).</p>")
    p.append(fig_or_text("bounds") + "</section>")
    p.append("<section id='verdicts'><h2>Verdicts</h2><table><tr><th>notion</th>"
             "<th>verdict</th><th>decided by</th><th>reason</th><th>counterexample</th></tr>")
    for c in r.checks:
        cex = ""
        if c.counterexample is not None:
            ce = c.counterexample
            where = ("the witness above" if d.witness is not None
                     and tuple(ce.input) == tuple(d.witness) else f"x = {_e(_vec(ce.input))}")
            cex = (f"{where}<br>exact margin {ce.exact.margin:.4g}; reproduces in float64 and "
                   f"onnxruntime: {'yes' if ce.reproduces else 'NO'}")
        p.append(f"<tr><td>{_e(c.name)}</td><td class='{c.verdict.label}'>"
                 f"{c.verdict.label.upper()}</td><td>{_e(c.method)}</td><td>{_e(c.reason)}</td>"
                 f"<td>{cex}</td></tr>")
    p.append("</table></section>")
    p.append("<section id='per-output'><h2>Per output</h2>")
    p.append(_table(("output", "witnessed lower", "certified upper", "upper bound by"),
                    [(str(o.output), _g(float(o.lower)), _g(float(o.upper))
                      + (" (below the witnessed: wrong)" if o.upper < o.lower else ""),
                      o.upper_method) for o in r.per_output]))
    p.append(fig_or_text("per-output") + "</section>")
    p.append("<section id='inputs'><h2>Deviation on inputs (float64, not certified)</h2>")
    p.append(_table(INPUT_COLUMNS, input_rows(r)))
    p.append("<p class='meta'>Deviations on inputs are numpy float64 evaluations (not "
             "certified). The certified bound covers every input inside the domain and says "
             "nothing about inputs outside it.</p>")
    p.append(fig_or_text("samples") + fig_or_text("outside") + "</section>")
    p += _changes_html(r)
    notes = [n for n in r.notes if n != comparison_note(r)]
    if notes:
        p.append("<section id='notes'><h2>Notes</h2>"
                 + "".join(f"<p class='note'>{_e(n)}</p>" for n in notes) + "</section>")
    p.append("</div>")
    return "\n".join(p)


def to_html(r: AuditResult) -> str:
    """A self-contained HTML page (the figures are inline SVG; no file or network access)."""
    return ("<!doctype html><html><head><meta charset='utf-8'><title>equivcheck audit</title>"
            "<style>body { margin: 24px; }</style></head><body>\n" + html_fragment(r)
            + "\n</body></html>")


# ---------------------------------------------------------------------------------------------
# Markdown


def _md_table(columns, rows) -> list[str]:
    def cell(text) -> str:
        return str(text).replace("|", "/")

    return ["| " + " | ".join(cell(c) for c in columns) + " |",
            "|" + "---|" * len(columns)] + ["| " + " | ".join(cell(c) for c in row) + " |"
                                            for row in rows]


def to_markdown(r: AuditResult) -> str:
    """The same content as :func:`to_html`, as Markdown (no figures; the numbers instead)."""
    d = r.deviation
    out = ["# equivcheck audit", "", f"- original: `{r.original}`", f"- pruned: `{r.pruned}`",
           f"- domain: {r.domain_text}", f"- time: {r.seconds:.1f} s", ""]
    warning = inconsistency_text(r)
    if warning:
        out += ["## Warning", "", warning, ""]
    live = live_units(r)
    if live:
        removed, _ = removed_counts(r)
        out += [f"## Removed units that were live: {len(live)} of {removed} removed", "",
                "Not stably inactive on the domain in the original: removing them can change "
                f"the outputs. The other {removed - len(live)} removed units were stably "
                "inactive: harmless.", ""]
        out += _md_table(("layer", "unit", "in the original, on the domain",
                          "effect of removing it"),
                         [(u.layer, u.unit, _ORIGINAL_WORDS[u.original], effect_text(u))
                          for u in live])
        out.append("")
    out += ["## Worst-case deviation over the domain", "",
            (f"**{_g(float(d.lower))} <= max ||f(x) - g(x)||_inf <= {_g(float(d.upper))}** "
             f"(the models' output units; target relative gap {r.gap:g}: "
             f"{'met' if r.converged else 'NOT met'})"), "",
            f"- certified upper bound (every input of the domain) by: {d.upper_method}",
            "- witnessed lower bound: exact deviation at "
            + (f"`{_vec(d.witness)}` (output {d.witness_output})" if d.witness else "no input"),
            "", "## Verdicts", ""]
    out += _md_table(("notion", "verdict", "decided by", "reason"),
                     [(c.name, f"**{c.verdict.label.upper()}**", c.method, c.reason)
                      for c in r.checks])
    out += ["", "## Per output", ""]
    out += _md_table(("output", "witnessed lower", "certified upper", "by"),
                     [(o.output, _g(float(o.lower)), _g(float(o.upper)), o.upper_method)
                      for o in r.per_output])
    out += ["", "## Deviation on inputs (float64, not certified)", ""]
    out += _md_table(INPUT_COLUMNS, input_rows(r))
    out += ["", "The certified bound covers every input inside the domain and says nothing "
            "about inputs outside it.", "", "## What the pruning changed", ""]
    if r.layers:
        out += _md_table(("layer", "width", "weights zeroed", "weights changed", "units removed",
                          "removed harmless", "removed live", "units changed",
                          "changed, inactive in both"),
                         [(f"{lc.layer}{'' if lc.relu else ' (output)'}", lc.width,
                           f"{lc.weights_zeroed}/{lc.weights}", lc.weights_changed,
                           lc.units_removed, lc.units_removed_harmless, lc.units_removed_live,
                           lc.units_changed, lc.units_changed_harmless) for lc in r.layers])
    else:
        why = comparison_note(r) or "the models were not compared unit by unit"
        out.append(f"{why[0].upper() + why[1:]}. The audit compares the two functions only: the "
                   "deviation bounds and verdicts above.")
    notes = [n for n in r.notes if n != comparison_note(r)]
    if notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in notes]
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
