"""The audit report cannot mislead: data outside the domain is kept apart from the certified
bound, every figure names its units and says what is certified, nothing covers a plot, no
section is empty, and live removed units come first. The HTML and SVG are parsed, the
matplotlib figures measured."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from fractions import Fraction
from html.parser import HTMLParser

import numpy as np
import pytest

from equivcheck.audit import audit
from equivcheck.audit.plots import (
    bounds_figure,
    drawn,
    empty_texts,
    figures,
    histogram_figure,
    per_output_figure,
)
from equivcheck.audit.report import html_fragment, to_html, to_markdown, write_report
from equivcheck.audit.results import (
    AuditResult,
    ChangeKind,
    CheckVerdict,
    DecidedBy,
    DeviationBound,
    LayerChange,
    SampleStats,
    UnitChange,
)
from equivcheck.core.options import ProverOptions, UnitStability
from equivcheck.core.result import Verdict
from equivcheck.core.spec import Mode
from equivcheck.io.domains import parse_domain

from .helpers import net as mlp


def stats(source: str, devs, inside) -> SampleStats:
    devs, inside = np.asarray(devs, dtype=float), np.asarray(inside, dtype=bool)
    qs = {f"p{q}": float(np.percentile(devs, q)) for q in (0, 50, 90, 99, 100)}
    return SampleStats(source, len(devs), int(inside.sum()), 99.0, float(devs.max()), qs, (),
                       (), devs, devs[inside])


def result(upper=0.5, lower=0.4, per_output=((0.3, 0.5), (0.4, 0.45)), data=None,
           units=(), layers=(), notes=(), samples=None) -> AuditResult:
    """A hand-made audit result: ``per_output`` holds (lower, upper) per output."""
    rng = np.random.default_rng(0)
    samples = samples if samples is not None else stats(
        "500 random domain points", rng.uniform(0.1, 0.3, 500), np.ones(500, bool))
    witness = (0.5, 0.5)
    outs = tuple(DeviationBound(j, Fraction(lo), Fraction(up), witness, "bounds", j)
                 for j, (lo, up) in enumerate(per_output))
    check = CheckVerdict("strict", Mode.STRICT, None,
                         Verdict.REFUTED if lower > 0 else Verdict.PROVED, "reason",
                         DecidedBy.WITNESS)
    return AuditResult("a.onnx", "b.onnx", parse_domain("0:1", 2), ProverOptions(), (check,),
                       DeviationBound(None, Fraction(lower), Fraction(upper),
                                      witness if lower > 0 else None, "bounds", 0),
                       outs, tuple(layers), tuple(units), samples, data, 0.05, False, 1.0,
                       tuple(notes))


def mostly_outside():
    """1,000 data inputs: 10 inside the domain (small deviations), 990 outside deviating up to
    6x the certified bound."""
    rng = np.random.default_rng(1)
    inside = np.zeros(1000, bool)
    inside[:10] = True
    devs = np.where(inside, rng.uniform(0.0, 0.2, 1000), rng.uniform(0.5, 3.0, 1000))
    return result(data=stats("digits.npy", devs, inside))


class Sections(HTMLParser):
    """The text of each ``<section id=...>`` below its heading (style, SVG and the ``<h2>``
    left out), in page order."""

    def __init__(self):
        super().__init__()
        self.sections: dict[str, str] = {}
        self.order: list[str] = []
        self.current: str | None = None
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.current = dict(attrs)["id"]
            self.order.append(self.current)
            self.sections[self.current] = ""
        elif tag in ("style", "svg", "h2"):
            self.skip += 1

    def handle_endtag(self, tag):
        if tag == "section":
            self.current = None
        elif tag in ("style", "svg", "h2"):
            self.skip -= 1

    def handle_data(self, data):
        if self.current and not self.skip:
            self.sections[self.current] += " " + data


def sections(html: str) -> Sections:
    parser = Sections()
    parser.feed(html)
    return parser


def figure_blocks(html: str) -> dict[str, str]:
    """Each ``<figure id='fig-KEY'>`` block's text, by KEY."""
    return {m.group(1): m.group(0) for m in
            re.finditer(r"<figure id='fig-([\w-]+)'>.*?</figure>", html, re.S)}


# --------------------------------------------------------------------------------------------


def test_data_outside_the_domain_is_never_drawn_against_the_certified_bound():
    r = mostly_outside()
    figs = figure_blocks(to_html(r))
    assert set(figs) == {"bounds", "samples", "outside", "per-output"}
    assert 'id="certified-bound"' in figs["bounds"] and "data-outside" not in figs["bounds"]
    assert 'id="data-outside' in figs["outside"]
    for line in ("certified-bound", "witnessed-bound", "gap"):
        assert f'id="{line}"' not in figs["outside"]
    assert "990 of 1000 data inputs lie outside" in figs["outside"]
    assert "NOT covered by the certified bound" in figs["outside"]
    assert "990 data inputs outside the domain are not on this axis" in figs["bounds"]
    # on the bound's axis, every drawn deviation lies left of the certified line
    fig = bounds_figure(r)
    ax = fig.axes[0]
    certified = next(ln for ln in ax.lines if ln.get_gid() == "certified-bound").get_xdata()[0]
    ranges = [ln for ln in ax.lines if (ln.get_gid() or "").endswith("-range")]
    assert {ln.get_gid() for ln in ranges} == {"samples-range", "data-inside-range"}
    assert max(max(ln.get_xdata()) for ln in ranges) <= certified


def test_the_inputs_table_keeps_inside_and_outside_maxima_apart():
    r = mostly_outside()
    md = to_markdown(r)
    row = next(line for line in md.splitlines() if line.startswith("| digits.npy"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "10 of 1000"
    assert float(cells[6]) == pytest.approx(float(r.data.deviations_inside.max()), rel=1e-3)
    assert float(cells[7]) == pytest.approx(r.data.deviation_max, rel=1e-3)
    assert float(cells[6]) <= float(r.deviation.upper) < float(cells[7])


def test_every_figure_names_its_units_and_says_what_is_certified():
    r = mostly_outside()
    for key, title, caption, fig in drawn(r):
        ax = fig.axes[0]
        assert "output units" in ax.get_xlabel() + ax.get_ylabel(), key
        assert title and caption
        if key in ("bounds", "per-output"):
            assert "ertified" in caption and "itnessed" in caption, key
        else:
            assert "not certified" in caption.lower() or "NOT covered" in caption, key


@pytest.mark.parametrize("r", [mostly_outside(), result(upper=1.79015, lower=7.97652e-08)])
def test_no_legend_or_inset_covers_a_plot(r):
    for key, _, _, fig in drawn(r):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        assert len(fig.axes) == 1, f"{key}: an inset or second axes"
        ax = fig.axes[0]
        assert ax.get_legend() is None, f"{key}: a legend inside the axes"
        box = ax.get_window_extent(renderer)
        for legend in fig.legends:
            extent = legend.get_window_extent(renderer)
            assert not extent.overlaps(box), f"{key}: the legend covers the plot"
            assert fig.bbox.contains(extent.x0, extent.y0) and \
                fig.bbox.contains(extent.x1, extent.y1), f"{key}: the legend is cut off"
        texts = [t for t in ax.texts if t.get_text()]
        for t in texts:  # the row labels stay inside the axes
            assert box.contains(*t.get_window_extent(renderer).get_points()[0]), key


def test_tiny_deviations_get_a_scaled_axis_and_no_offset_text():
    fig, start = histogram_figure(np.linspace(6.8e-8, 7e-8, 100), "x", "#000", "h")
    ax = fig.axes[0]
    fig.canvas.draw()
    assert "/ 1e-8" in ax.get_xlabel()
    assert ax.xaxis.get_offset_text().get_text() == ""
    assert start > 0 and ax.get_xlim()[0] == pytest.approx(start * 1e8)


def test_per_output_axis_starts_at_zero_and_all_zero_bounds_draw_nothing():
    r = result(per_output=((0.0, 1e-7), (0.0, 2e-7)))
    ax = per_output_figure(r).axes[0]
    assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] > 0
    zero = result(upper=0, lower=0, per_output=((0, 0), (0, 0)),
                  samples=stats("500 random domain points", np.zeros(500), np.ones(500, bool)))
    assert per_output_figure(zero) is None and bounds_figure(zero) is None
    assert figures(zero) == []
    assert set(empty_texts(zero)) == {"bounds", "per-output", "samples"}


def test_no_section_is_empty_for_a_compressed_model():
    note = "architectures differ (2-8-2 vs 2-5-2): no unit-by-unit comparison"
    zero = result(upper=0, lower=0, per_output=((0, 0), (0, 0)), notes=(note, "other note"),
                  samples=stats("500 random domain points", np.zeros(500), np.ones(500, bool)))
    html = to_html(zero)
    parsed = sections(html)
    assert parsed.order == ["worst-case", "verdicts", "per-output", "inputs", "changes",
                            "notes"]
    for name, text in parsed.sections.items():
        assert text.split(), f"section {name} is empty below its heading"
    assert "Architectures differ (2-8-2 vs 2-5-2)" in parsed.sections["changes"]
    assert note not in parsed.sections["notes"] and "other note" in parsed.sections["notes"]
    assert "certified upper bound is 0" in parsed.sections["worst-case"]
    assert "<figure" not in html and "<svg" not in html
    md = to_markdown(zero)
    changes = md.split("## What the pruning changed")[1].split("##")[0]
    assert "Architectures differ" in changes


def test_live_removed_units_come_first_as_a_table():
    units = [UnitChange(0, i, ChangeKind.REMOVED, UnitStability.INACTIVE, True)
             for i in range(150)]
    units += [UnitChange(1, 7, ChangeKind.REMOVED, UnitStability.UNSTABLE, False),
              UnitChange(1, 9, ChangeKind.REMOVED, UnitStability.ACTIVE, False, reach=0.25)]
    layers = [LayerChange(0, 300, True, 600, 300, 0, 150, 150, 0, 0),
              LayerChange(1, 20, True, 6000, 40, 0, 2, 0, 0, 0)]
    r = result(units=units, layers=layers)
    html = to_html(r)
    parsed = sections(html)
    assert parsed.order[0] == "live-units"
    live = html.split("<section id='live-units'")[1].split("</section>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", live)
    assert len(rows) == 3  # the header and the two live units
    assert "<td>7</td>" in rows[1] and "active on part of the domain" in rows[1]
    assert "up to 0.25" in rows[2]
    assert "<h2>Removed units that were live: 2 of 152 removed</h2>" in live
    md = to_markdown(r)
    assert md.index("## Removed units that were live") < md.index("## Worst-case")
    assert "| 1 | 9 | active on the whole domain |" in md


def test_contradicting_bounds_are_flagged_not_drawn():
    r = result(per_output=((0.3, -2.0), (0.4, 0.45)))
    parsed = sections(to_html(r))
    assert parsed.order[0] == "inconsistent"
    assert "output(s) 0" in parsed.sections["inconsistent"]
    ax = per_output_figure(r).axes[0]
    uppers = [p.get_height() for p in ax.patches if p.get_gid() == "per-output-upper"]
    assert uppers[0] == 0 and uppers[1] == pytest.approx(0.45)
    assert ax.get_xticklabels()[0].get_text() == "0\n!"
    assert "## Warning" in to_markdown(r)
    assert "## Warning" not in to_markdown(result())


def test_a_real_audit_report_parses_and_has_a_notebook_fragment(tmp_path):
    w1 = np.array([[1.0, 1.0], [-1.0, -0.5], [0.5, -1.0]])
    b1 = np.array([0.25, -1.0, 0.25])
    w2 = np.array([[1.0, 2.0, -1.0], [0.5, -1.0, 1.0]])
    pruned = w1.copy()
    pruned[[0, 1]] = 0.0
    f = mlp([w1, w2], [b1, np.zeros(2)])
    g = mlp([pruned, w2], [b1, np.zeros(2)])
    data = np.random.default_rng(2).uniform(-1, 2, (200, 2))
    r = audit(f, g, "0:1", data=data, timeout=20, samples=300)
    path = write_report(r, tmp_path / "a.html")
    html = path.read_text()
    for svg in re.findall(r"<svg.*?</svg>", html, re.S):
        root = ET.fromstring(svg)  # every figure is well-formed SVG
        assert root.get("role") == "img" and root.get("aria-label")
    parsed = sections(html)
    assert parsed.order[0] == "live-units"  # unit 0 fires on the domain: live
    assert all(t.split() for t in parsed.sections.values())
    outside = r.data.count - r.data.inside_domain
    assert outside > 0 and f"{outside} of {r.data.count} data inputs lie outside" in html
    fragment = html_fragment(r)  # what a notebook shows: one element, its style scoped
    assert fragment.startswith("<div class='eqc'>") and fragment in html
    assert "<html" not in fragment and "<style>" in fragment
