"""The HTML summary of a campaign: a table per family, a cactus plot, counterexample files.

The cactus plot (the verification competitions' usual figure) shows, per family, the time of
each decided instance sorted, against the number decided. It is drawn with matplotlib (the
``report`` extra) as inline SVG; without matplotlib the page says so and has the tables (the
command refuses ``--report`` before any work when matplotlib is missing). Each
REFUTED instance's counterexample (the object ``prove --json`` prints) is written to
``<report stem>_counterexamples/row_<row>.json`` beside the report and linked from its row.
"""

from __future__ import annotations

import html
import io
import statistics
from collections import defaultdict
from pathlib import Path

from equivcheck.campaign.results import VERDICTS

STYLE = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
         "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}"
         ".proved{color:#070}.refuted{color:#a00}.unknown{color:#a60}.error{color:#555}")


def write_report(path: Path, records: list[dict], title: str = "campaign") -> Path:
    """Write the HTML summary of ``records`` to ``path`` (and the counterexample files beside
    it); returns ``path``."""
    path = Path(path)
    cex_dir = path.parent / f"{path.stem}_counterexamples"
    links = _write_counterexamples(cex_dir, records)
    families: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        families[str(rec.get("family") or "")].append(rec)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>Campaign: {_e(title)}</h1>",
             _overview(families), "<h2>Cactus plot</h2>", _cactus(families)]
    for fam in sorted(families):
        parts.append(_family_table(fam, families[fam], links, path.parent))
    parts.append("</body></html>\n")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _write_counterexamples(folder: Path, records: list[dict]) -> dict[int, Path]:
    from equivcheck.core.result import json_text

    links: dict[int, Path] = {}
    for rec in records:
        cex = rec.get("counterexample")
        if not cex:
            continue
        folder.mkdir(exist_ok=True)
        target = folder / f"row_{rec['row']}.json"
        target.write_text(json_text({"row": rec["row"], "model_a": rec.get("model_a"),
                                     "model_b": rec.get("model_b"), "counterexample": cex},
                                    indent=2) + "\n", encoding="utf-8")
        links[rec["row"]] = target
    return links


def _overview(families: dict[str, list[dict]]) -> str:
    head = "".join(f"<th>{v}</th>" for v in VERDICTS)
    rows = []
    for fam in sorted(families):
        recs = families[fam]
        counts = "".join(f"<td>{sum(r.get('verdict') == v for r in recs)}</td>" for v in VERDICTS)
        times = [float(r.get("seconds") or 0) for r in recs]
        rows.append(f"<tr><td>{_e(fam)}</td><td>{len(recs)}</td>{counts}"
                    f"<td>{statistics.median(times):.3f}</td><td>{max(times):.3f}</td></tr>")
    return (f"<h2>Families</h2><table><tr><th>family</th><th>instances</th>{head}"
            f"<th>median s</th><th>max s</th></tr>{''.join(rows)}</table>")


def _family_table(fam: str, recs: list[dict], links: dict[int, Path], base: Path) -> str:
    rows = []
    for r in sorted(recs, key=lambda r: r["row"]):
        v = str(r.get("verdict"))
        link = links.get(r["row"])
        cex = f"<a href='{_e(link.relative_to(base).as_posix())}'>counterexample</a>" if link else ""
        rows.append(f"<tr><td>{r['row']}</td><td>{_e(Path(str(r.get('model_a'))).name)}</td>"
                    f"<td>{_e(Path(str(r.get('model_b'))).name)}</td><td class='{_e(v)}'>{_e(v)}"
                    f"</td><td>{float(r.get('seconds') or 0):.3f}</td><td>{_e(r.get('reason', ''))}"
                    f"</td><td>{cex}</td></tr>")
    return (f"<h2>Family {_e(fam)}</h2><table><tr><th>row</th><th>a</th><th>b</th>"
            f"<th>verdict</th><th>s</th><th>reason</th><th></th></tr>{''.join(rows)}</table>")


def _cactus(families: dict[str, list[dict]]) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "<p>(no plot: matplotlib is not installed)</p>"
    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = False
    for fam in sorted(families):
        times = sorted(float(r.get("seconds") or 0) for r in families[fam]
                       if r.get("verdict") in ("proved", "refuted"))
        if times:
            ax.plot(range(1, len(times) + 1), times, marker=".", label=fam)
            drawn = True
    ax.set_xlabel("instances decided")
    ax.set_ylabel("seconds per instance")
    if drawn and all(float(r.get("seconds") or 0) > 0 for recs in families.values() for r in recs):
        ax.set_yscale("log")
    if drawn:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.find("<svg"):]
