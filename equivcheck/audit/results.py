"""What an audit found: the result types of :func:`equivcheck.audit.audit` (frozen; their
``to_dict`` is the JSON the CLI prints and :mod:`equivcheck.audit.report` renders)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from equivcheck.core.domain import Domain
from equivcheck.core.options import ProverOptions, UnitStability
from equivcheck.core.result import Counterexample, Verdict
from equivcheck.core.spec import Mode


class DecidedBy(str, enum.Enum):
    """How a :class:`CheckVerdict` was decided."""

    PROVER = "prover"  # equivcheck.prove
    CERTIFIED_BOUND = "certified bound"  # the certified deviation bound is <= the tolerance
    WITNESS = "witness"  # an exactly checked input deviates more than the tolerance

    def __str__(self) -> str:
        return self.value


class ChangeKind(str, enum.Enum):
    """What pruning did to a hidden unit."""

    REMOVED = "removed"  # incoming (or outgoing) weights all zero in the pruned model only
    CHANGED = "changed"  # incoming weights or bias differ

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class CheckVerdict:
    """One equivalence notion (``name``: "strict", "epsilon 0.01", "argmax") and how it was
    decided (``method``, see :class:`DecidedBy`)."""

    name: str
    mode: Mode
    tolerance: Fraction | None
    verdict: Verdict
    reason: str
    method: DecidedBy
    counterexample: Counterexample | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "mode": self.mode.value,
            "tolerance": None if self.tolerance is None else float(self.tolerance),
            "tolerance_exact": None if self.tolerance is None else str(self.tolerance),
            "verdict": self.verdict.label,
            "reason": self.reason,
            "method": self.method.value,
            "counterexample": self.counterexample.to_dict() if self.counterexample else None,
            "seconds": round(self.seconds, 4),
        }


@dataclass(frozen=True)
class DeviationBound:
    """``lower <= max_x |f(x) - g(x)| <= upper`` over the domain (``output`` None: all outputs,
    the L-infinity norm).

    ``lower`` is exact: the deviation at ``witness`` computed in rational arithmetic (at
    ``witness_exact`` when the witness is a rational point that is not a float vector, as in a
    domain holding no float32 point; ``witness`` is then its nearest floats). ``upper`` is
    certified by ``upper_method``; it is always a float value (rounded up where needed), so no
    bound grows huge denominators.
    """

    output: int | None
    lower: Fraction
    upper: Fraction
    witness: tuple[float, ...] | None
    upper_method: str
    witness_output: int | None = None
    witness_exact: tuple[Fraction, ...] | None = None  # set when the witness is not a float point

    @property
    def gap(self) -> float:
        return float(self.upper - self.lower)

    def within(self, rel_gap: float) -> bool:
        return float(self.upper - self.lower) <= rel_gap * float(self.upper) or self.upper == 0

    def to_dict(self) -> dict:
        return {
            "output": self.output,
            "lower": float(self.lower),
            "upper": float(self.upper),
            "lower_exact": str(self.lower),
            "upper_exact": str(self.upper),
            "upper_method": self.upper_method,
            "witness": list(self.witness) if self.witness is not None else None,
            "witness_exact": [str(v) for v in self.witness_exact] if self.witness_exact else None,
            "witness_output": self.witness_output,
        }


@dataclass(frozen=True)
class UnitChange:
    """A hidden unit that pruning removed or changed.

    ``original`` is the unit's stability on the domain in the original model by sound bounds
    (active, inactive or unstable). A removed unit is ``harmless`` when it was stably inactive
    in the original and outputs 0 in the pruned model too; a changed unit when it is stably
    inactive in both. ``reach`` (None: not computed) is a certified bound on how far the change
    of this one unit's output can move any pre-activation of the next layer over the domain.
    """

    layer: int
    unit: int
    kind: ChangeKind
    original: UnitStability
    harmless: bool
    reach: float | None = None

    @property
    def live(self) -> bool:
        """A removed unit that was not harmless: removing it can change the outputs."""
        return self.kind is ChangeKind.REMOVED and not self.harmless

    def to_dict(self) -> dict:
        return {"layer": self.layer, "unit": self.unit, "kind": self.kind.value,
                "original": self.original.value, "harmless": self.harmless,
                "reach": self.reach}


@dataclass(frozen=True)
class LayerChange:
    """Per layer: how many weights and units pruning touched."""

    layer: int
    width: int
    relu: bool
    weights: int
    weights_zeroed: int
    weights_changed: int
    units_removed: int
    units_removed_harmless: int
    units_changed: int
    units_changed_harmless: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @property
    def units_removed_live(self) -> int:
        return self.units_removed - self.units_removed_harmless


@dataclass(frozen=True)
class SampleStats:
    """Deviation statistics on a set of inputs, evaluated in numpy float64 (not certified)."""

    source: str
    count: int
    inside_domain: int
    top1_agreement: float  # percent
    deviation_max: float
    quantiles: dict[str, float]
    histogram_edges: tuple[float, ...]
    histogram_counts: tuple[int, ...]
    deviations: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.zeros(0))
    deviations_inside: np.ndarray = field(repr=False, compare=False,
                                          default_factory=lambda: np.zeros(0))

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "count": self.count,
            "inside_domain": self.inside_domain,
            "top1_agreement_percent": self.top1_agreement,
            "deviation_max": self.deviation_max,
            "quantiles": self.quantiles,
            "histogram": {"edges": list(self.histogram_edges),
                          "counts": list(self.histogram_counts)},
        }


@dataclass(frozen=True)
class AuditResult:
    """Everything :func:`audit` found, with the domain and the prover options it ran with;
    ``to_dict`` is the JSON the CLI prints."""

    original: str
    pruned: str
    domain: Domain
    options: ProverOptions
    checks: tuple[CheckVerdict, ...]
    deviation: DeviationBound
    per_output: tuple[DeviationBound, ...]
    layers: tuple[LayerChange, ...]
    units: tuple[UnitChange, ...]
    samples: SampleStats
    data: SampleStats | None
    gap: float
    converged: bool
    seconds: float
    notes: tuple[str, ...] = ()

    @property
    def domain_text(self) -> str:
        return self.domain.describe()

    def check(self, name: str) -> CheckVerdict:
        """The verdict called ``name`` ("strict", "argmax", "epsilon 0.01", ...)."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def _repr_html_(self) -> str:
        """A compact summary as one HTML table, for notebooks (Jupyter calls this to display it):
        the certified and witnessed deviation bounds, every verdict, removed live units, the
        sampled agreement and the notes, all escaped; no plots, so it needs no matplotlib (the
        full report: :func:`equivcheck.audit.report.html_fragment`)."""
        return audit_html(self)

    def to_dict(self) -> dict:
        return {
            "original": self.original,
            "pruned": self.pruned,
            "domain": self.domain.to_dict(),
            "domain_text": self.domain_text,
            "options": self.options.to_dict(),
            "checks": [c.to_dict() for c in self.checks],
            "deviation": self.deviation.to_dict(),
            "per_output": [d.to_dict() for d in self.per_output],
            "gap_target": self.gap,
            "converged": self.converged,
            "layers": [lc.to_dict() for lc in self.layers],
            "units": [u.to_dict() for u in self.units],
            "samples": self.samples.to_dict(),
            "data": self.data.to_dict() if self.data else None,
            "seconds": round(self.seconds, 3),
            "notes": list(self.notes),
        }


_VERDICT_COLOURS = {"proved": "#1a7f37", "refuted": "#cf222e", "unknown": "#9a6700"}


def _cell(text: str, header: bool = False) -> str:
    from html import escape

    tag = "th" if header else "td"
    return f"<{tag} style='text-align:left'>{escape(text)}</{tag}>"


def _sample_text(s: SampleStats) -> str:
    return (f"{s.count} points, {s.inside_domain} inside the domain: top-1 agreement "
            f"{s.top1_agreement:.2f}%, largest deviation {s.deviation_max:.6g} (float64, not "
            "certified)")


def audit_html(r: AuditResult) -> str:
    """``r`` as one self-contained, escaped HTML table: models, domain, the worst-case deviation
    (witnessed lower and certified upper bound, flagged when the upper lies below the lower),
    one row per verdict in colour, removed live units, sample and data statistics, notes."""
    from html import escape

    d = r.deviation
    bound = (f"{float(d.lower):.6g} <= max ||f(x) - g(x)||_inf <= {float(d.upper):.6g} "
             f"(upper certified by {d.upper_method}; lower witnessed exactly"
             + (f", largest at output {d.witness_output}" if d.witness_output is not None else "")
             + f"; gap {'within' if r.converged else 'not within'} the target {r.gap:g})")
    rows = [("models", f"{r.original} vs {r.pruned}"), ("domain", r.domain_text),
            ("worst-case deviation", bound)]
    if d.upper < d.lower or any(p.upper < p.lower for p in r.per_output):
        rows.append(("WARNING", "a certified upper bound lies below its exact witness: a bug "
                                "in equivcheck (please report it); do not rely on the bounds"))
    live = [u for u in r.units if u.live]
    if live:
        shown = ", ".join(f"layer {u.layer} unit {u.unit}" for u in live[:8])
        more = f", ... ({len(live)} in all)" if len(live) > 8 else ""
        removed = sum(u.kind is ChangeKind.REMOVED for u in r.units)
        rows.append(("live units removed", f"{len(live)} of {removed} removed units were live "
                                           f"(removing them can change the outputs): {shown}"
                                           f"{more}"))
    rows.append(("random domain points", _sample_text(r.samples)))
    if r.data is not None:
        rows.append((f"data ({r.data.source})", _sample_text(r.data)))
    rows.extend(("note", n) for n in r.notes)
    rows.append(("time", f"{r.seconds:.1f} s"))
    checks = "".join(
        f"<tr>{_cell(c.name)}<td style='text-align:left;color:"
        f"{_VERDICT_COLOURS[c.verdict.value]}'><b>{c.verdict.value.upper()}</b></td>"
        f"{_cell(str(c.method))}{_cell(c.reason)}</tr>" for c in r.checks)
    body = "".join(f"<tr>{_cell(k, header=True)}<td colspan='3' style='text-align:left'>"
                   f"{escape(v)}</td></tr>" for k, v in rows)
    head = "".join(_cell(h, header=True) for h in ("notion", "verdict", "decided by", "reason"))
    return ("<table><caption style='text-align:left'><b>equivcheck audit</b> "
            f"{escape(r.original)} -> {escape(r.pruned)}</caption>{body}<tr>{head}</tr>"
            f"{checks}</table>")
