"""The figures of the HTML audit report, each with a caption that says what is certified (holds
for every input of the domain), what is witnessed (one input, exact arithmetic) and what is only
sampled (float64 evaluations, not certified).

Rules every figure keeps, so that a picture cannot suggest more than the audit proved:

* the certified bound is drawn only next to deviations of inputs *inside* the domain; data
  outside the domain gets its own figure with no bound line, and its count in the caption;
* axes name their units (the deviation is in the models' output units) and start at 0;
* legends sit outside the axes and there is no inset, so nothing covers a bar or a line;
* a figure with nothing to show (every deviation 0) is not drawn: the report says so in words.

matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from equivcheck.audit.results import AuditResult, SampleStats

DEVIATION_LABEL = "deviation ‖f(x) − g(x)‖∞  (the models' output units)"
CERTIFIED, CERTIFIED_FILL = "#C62828", "#F4B6B6"
WITNESSED = "#2E7D32"
SAMPLED, DATA = "#4C72B0", "#DD8452"
WIDTH = 10.0  # inches; the SVG scales to the page


@dataclass(frozen=True)
class Figure:
    """One figure of the report: ``key`` (``bounds``, ``samples``, ``outside`` or
    ``per-output``), a title, a plain-text caption and the SVG text (inline, no XML header)."""

    key: str
    title: str
    caption: str
    svg: str


def _g(v: float) -> str:
    return f"{v:.4g}"


def _scale(top: float) -> tuple[float, str]:
    """(factor, axis label): deviations far from 1 are drawn divided by a power of 10 that the
    label names, so no offset text hangs under the axis."""
    if top <= 0 or 1e-3 <= top < 1e4:
        return 1.0, DEVIATION_LABEL
    k = int(np.floor(np.log10(top)))
    return 10.0 ** -k, DEVIATION_LABEL.replace("  (", f" / 1e{k}  (", 1)


def inconsistent_outputs(r: AuditResult) -> list[int]:
    """The outputs whose certified upper bound lies below the witnessed lower bound (never
    possible when both are right: the report flags them as a bug)."""
    return [p.output for p in r.per_output if p.upper < p.lower]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _inside(s: SampleStats | None) -> np.ndarray:
    return np.zeros(0) if s is None else np.asarray(s.deviations_inside, dtype=float)


def _outside(s: SampleStats | None) -> np.ndarray:
    """The deviations of the inputs of ``s`` that lie outside the domain."""
    if s is None or len(s.deviations) == 0:
        return np.zeros(0)
    devs = np.asarray(s.deviations, dtype=float)
    if s.inside_domain == 0:
        return devs
    if s.inside_domain == s.count:
        return np.zeros(0)
    # deviations_inside is deviations[inside]: take it out as a multiset (the order is lost)
    vals, counts = np.unique(devs, return_counts=True)
    ins, ins_counts = np.unique(np.asarray(s.deviations_inside, dtype=float), return_counts=True)
    counts[np.searchsorted(vals, ins)] -= ins_counts
    return np.repeat(vals, counts)


def _range_row(ax, y: float, devs: np.ndarray, color: str, gid: str, xmax: float) -> None:
    """A horizontal box: the whisker from min to max, the box from p25 to p75, the median, and
    the max written above the whisker (on the side away from the bound lines)."""
    lo, q1, med, q3, hi = np.percentile(devs, [0, 25, 50, 75, 100])
    ax.plot([lo, hi], [y, y], color=color, lw=1.5, gid=f"{gid}-range")
    ax.plot([lo, lo], [y - 0.12, y + 0.12], color=color, lw=1.5)
    ax.plot([hi, hi], [y - 0.12, y + 0.12], color=color, lw=1.5)
    ax.barh([y], [max(q3 - q1, 0.0)], left=[q1], height=0.36, color=color, alpha=0.55,
            edgecolor=color, gid=f"{gid}-box")
    ax.plot([med, med], [y - 0.18, y + 0.18], color="#222", lw=2)
    left = hi < 0.3 * xmax
    ax.annotate(f"max {_g(devs.max())}", (hi, y + 0.2), xytext=(3 if left else -3, 0),
                textcoords="offset points", ha="left" if left else "right", va="bottom",
                fontsize=8, color="#333")


def bounds_figure(r: AuditResult):
    """The worst case on one axis: the certified upper bound, the witnessed lower bound and the
    sampled deviations of inputs inside the domain (None when the certified bound is 0)."""
    lower, upper = float(r.deviation.lower), float(r.deviation.upper)
    if upper <= 0:
        return None
    rows = [(r.samples.source, _inside(r.samples), SAMPLED, "samples")]
    if r.data is not None and r.data.inside_domain:
        rows.append((f"data inside the domain ({r.data.inside_domain} of {r.data.count})",
                     _inside(r.data), DATA, "data-inside"))
    rows = [row for row in rows if len(row[1])]
    top = max([upper, lower] + [float(d.max()) for _, d, _, _ in rows])
    k, label = _scale(top)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH, 1.5 + 0.5 * len(rows)), layout="constrained")
    ax.axvspan(lower * k, upper * k, color="#FFE9A8", alpha=0.8, lw=0, gid="gap",
               label="the true worst case lies in this interval")
    ax.axvline(lower * k, color=WITNESSED, lw=2.2, gid="witnessed-bound",
               label=f"witnessed lower bound {_g(lower)} (one input, exact)" if lower > 0
               else "witnessed lower bound 0 (no input found that deviates)")
    ax.axvline(upper * k, color=CERTIFIED, lw=2.2, ls="--", gid="certified-bound",
               label=f"certified upper bound {_g(upper)} (every input of the domain)")
    for n, (_, devs, color, gid) in enumerate(rows):
        _range_row(ax, -n, devs * k, color, gid, top * k)
    ax.set_xlim(0, top * k * 1.04)
    ax.set_ylim(-len(rows) + 0.45, 0.62)
    ax.set_yticks([-n for n in range(len(rows))],
                  [f"{name}\n(float64, sampled)" for name, _, _, _ in rows], fontsize=9)
    ax.set_xlabel(label)
    fig.legend(loc="outside lower center", ncols=2, fontsize=8.5, frameon=False)
    return fig


def histogram_figure(devs: np.ndarray, label: str, color: str, gid: str):
    """The distribution of ``devs`` at its own scale, and where its x axis starts: 0, or the
    smallest deviation when they all crowd far from 0 (None, 0 when every deviation is 0)."""
    if len(devs) == 0 or float(devs.max()) <= 0:
        return None, 0.0
    top, low = float(devs.max()), float(devs.min())
    k, axis_label = _scale(top)
    start = low if low > 0.25 * top else 0.0
    pad = 0.04 * ((top - start) or top)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH, 2.9), layout="constrained")
    counts, _, _ = ax.hist(devs * k, bins=40, range=(start * k, top * k + 1e-300), color=color,
                           alpha=0.8, gid=gid, label=label)
    ax.set_xlim(max(start - pad, 0.0) * k, (top + pad) * k)
    ax.ticklabel_format(axis="x", useOffset=False, style="plain")
    ax.set_xlabel(axis_label)
    if np.count_nonzero(counts) > 1 and counts.max() >= 0.9 * len(devs):
        # one bar holds nearly every input: the rest would be invisible on a linear axis
        ax.set_yscale("log")
        ax.set_ylim(0.7, counts.max() * 1.5)
        ax.set_ylabel("inputs (count, log scale)")
    else:
        ax.set_ylabel("inputs (count)")
    return fig, max(start - pad, 0.0)


def per_output_figure(r: AuditResult):
    """Per output j, the certified upper and witnessed lower bound of max |f_j - g_j| (None
    when every certified bound is 0). Outputs whose bounds contradict each other (see
    :func:`inconsistent_outputs`) get no certified bar and a red "!" under their number."""
    outs = r.per_output
    uppers = [float(p.upper) for p in outs]
    lowers = [float(p.lower) for p in outs]
    if not outs or max(uppers) <= 0:
        return None
    bad = set(inconsistent_outputs(r))
    k, _ = _scale(max(uppers + lowers))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH, 3.1), layout="constrained")
    js = [p.output for p in outs]
    ax.bar(js, [0.0 if j in bad else u * k for j, u in zip(js, uppers)], color=CERTIFIED_FILL,
           edgecolor=CERTIFIED, width=0.7, gid="per-output-upper",
           label="certified upper bound (every input of the domain)")
    ax.bar(js, [v * k for v in lowers], color=WITNESSED, width=0.42, gid="per-output-lower",
           label="witnessed lower bound (one input, exact)")
    ax.set_ylim(0, max(uppers + lowers) * k * 1.08)
    ax.set_xlim(min(js) - 0.6, max(js) + 0.6)
    ax.set_xticks(js, [f"{j}\n!" if j in bad else str(j) for j in js])
    for tick, j in zip(ax.get_xticklabels(), js):
        if j in bad:
            tick.set_color(CERTIFIED)
    ax.set_xlabel("output j")
    unit = "output units" if k == 1 else f"output units / {1 / k:.0e}"
    ax.set_ylabel(f"max |f_j(x) − g_j(x)|\n({unit})")
    fig.legend(loc="outside lower center", ncols=2, fontsize=8.5, frameon=False)
    return fig


def drawn(r: AuditResult) -> list[tuple[str, str, str, Any]]:
    """The report's figures as (key, title, caption, matplotlib figure); the caller closes
    them. Figures with nothing to show are left out (:func:`empty_texts` says why)."""
    out = []
    lower, upper = float(r.deviation.lower), float(r.deviation.upper)
    outside = _outside(r.data)
    fig = bounds_figure(r)
    if fig is not None:
        cap = (f"Certified: no input of the domain deviates by more than {_g(upper)} (dashed red "
               f"line; {r.deviation.upper_method}). "
               + (f"Witnessed: one input of the domain deviates by exactly {_g(lower)} (green "
                  "line, exact rational arithmetic)." if lower > 0 else
                  "Witnessed: no input was found that deviates at all (lower bound 0).")
               + " The true worst case lies between them. Rows: deviations of inputs inside the domain, evaluated "
               "in float64 (not certified): whisker min to max, box 25% to 75%, black tick the "
               "median.")
        if len(outside):
            cap += (f" The {len(outside)} data inputs outside the domain are not on this axis: "
                    "the certified bound does not cover them (see the last figure).")
        out.append(("bounds", "Worst-case deviation over the domain", cap, fig))
    samples = _inside(r.samples)
    fig, start = histogram_figure(samples, r.samples.source, SAMPLED, "samples-histogram")
    if fig is not None:
        cap = (f"Deviation at {len(samples)} random points of the domain, evaluated in float64 "
               f"(sampled, not certified), at its own scale{_starts(start)}.{_zeros(samples)}")
        top = float(samples.max())
        if lower > top:
            cap += (f" The witnessed deviation {_g(lower)} and the certified bound {_g(upper)} "
                    f"are both beyond the largest sampled one ({_g(top)}): random sampling "
                    "alone underestimates the worst case.")
        else:
            cap += f" The certified bound {_g(upper)} covers every one of them."
        out.append(("samples", "Deviation on random domain points", cap, fig))
    fig, start = histogram_figure(outside, "data outside the domain", DATA, "data-outside")
    if fig is not None:
        cap = (f"{len(outside)} of {r.data.count} data inputs lie outside the audited domain. "
               "Their deviation is evaluated in float64 and is NOT covered by the certified "
               f"bound, which holds only inside the domain; so no bound is drawn here{_starts(start)}."
               f" Largest: {_g(float(outside.max()))}.{_zeros(outside)}")
        out.append(("outside", "Deviation on data outside the domain (not certified)", cap, fig))
    fig = per_output_figure(r)
    if fig is not None:
        cap = ("Per output j: the light red bar is the certified bound of max |f_j(x) − g_j(x)| "
               "over the domain (no input deviates more on that output), the green bar the "
               "exact deviation on that output at a witnessed input. Output units.")
        bad = inconsistent_outputs(r)
        if bad:
            cap += (f" Outputs marked ! ({', '.join(map(str, bad))}) have a certified bound "
                    "below their witnessed deviation, which is impossible: their certified bars "
                    "are left out (see the warning at the top).")
        out.append(("per-output", "Worst-case deviation per output", cap, fig))
    page = ("bounds", "per-output", "samples", "outside")  # the report's order
    return sorted(out, key=lambda item: page.index(item[0]))


def _zeros(devs: np.ndarray) -> str:
    zero = int(np.sum(devs == 0))
    return f" {zero} of the {len(devs)} deviate by exactly 0." if zero else ""


def _starts(start: float) -> str:
    return f"; the x axis starts at {_g(start)}, not at 0" if start > 0 else ""


def empty_texts(r: AuditResult) -> dict[str, str]:
    """Per figure key that :func:`drawn` leaves out, the sentence the report shows instead."""
    texts = {}
    if float(r.deviation.upper) <= 0:
        texts["bounds"] = ("The certified upper bound is 0: the models compute the same outputs "
                           "on every input of the domain, in exact arithmetic.")
        texts["per-output"] = "Every output's certified bound is 0."
    elif not r.per_output or max(float(p.upper) for p in r.per_output) <= 0:
        texts["per-output"] = "Every output's certified bound is 0."
    samples = _inside(r.samples)
    if len(samples) and float(samples.max()) <= 0:
        texts["samples"] = (f"All {len(samples)} random domain points deviate by exactly 0 "
                            "(float64).")
    outside = _outside(r.data)
    if len(outside) and float(outside.max()) <= 0:
        texts["outside"] = (f"All {len(outside)} data inputs outside the domain deviate by "
                            "exactly 0 (float64; not covered by the certified bound).")
    return texts


def svg_text(fig) -> str:
    """``fig`` as inline SVG (no XML header; scales to the page width)."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "equivcheck-audit"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    return re.sub(r'<svg ([^>]*?)width="[^"]*" height="[^"]*"',
                  r'<svg \1style="width:100%;height:auto"', text, count=1)


def figures(r: AuditResult) -> list[Figure]:
    """The report's figures, drawn (see :func:`drawn`)."""
    plt = None
    out = []
    for key, title, caption, fig in drawn(r):
        svg = svg_text(fig)
        svg = svg.replace("<svg ", f'<svg role="img" aria-label="{title}" ', 1)
        out.append(Figure(key, title, caption, svg))
        plt = plt or _pyplot()
        plt.close(fig)
    return out
