"""What :func:`equivcheck.compress.compress` returns: the per-layer table and the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from equivcheck.bounds.stability_report import StabilityReport
from equivcheck.core.network import Network
from equivcheck.core.result import ProofResult, result_html


@dataclass(frozen=True)
class LayerCompression:
    """One row of the per-layer table (``layer`` indexes the original network's layers)."""

    layer: int
    relu: bool
    units_before: int
    removed_inactive: int
    folded_active: int
    units_after: int
    params_before: int
    params_after: int
    folded_into_next: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class CompressionResult:
    """What :func:`compress` returns.

    ``compressed`` is the network re-imported from the exported ONNX (what was proved);
    ``proof`` is ``None`` only when verification was switched off; ``epsilon`` is the tolerance
    proved (``None`` for a strict proof); ``exact`` says whether the stored weights equal the
    exactly recomputed ones (then a strict proof is attempted).
    """

    original: Network
    compressed: Network
    onnx_model: object
    table: tuple[LayerCompression, ...]
    stability: StabilityReport
    proof: ProofResult | None
    exact: bool
    epsilon: Fraction | None
    collapsed: bool
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def hidden_before(self) -> int:
        return sum(r.units_before for r in self.table if r.relu)

    @property
    def hidden_after(self) -> int:
        return sum(r.units_after for r in self.table if r.relu)

    @property
    def unit_compression(self) -> float:
        """Percentage of hidden units removed (the seed's "compression")."""
        return 100.0 * (1 - self.hidden_after / self.hidden_before) if self.hidden_before else 0.0

    @property
    def param_compression(self) -> float:
        before = self.original.num_parameters
        return 100.0 * (1 - self.compressed.num_parameters / before) if before else 0.0

    def _repr_html_(self) -> str:
        """The per-layer table, the summary line and the proof, as escaped HTML for notebooks
        (Jupyter calls this to display it)."""
        return compression_html(self)

    def to_dict(self) -> dict:
        return {
            "model": self.original.source,
            "original": self.original.description,
            "compressed": self.compressed.description,
            "hidden_units_before": self.hidden_before,
            "hidden_units_after": self.hidden_after,
            "unit_compression_percent": round(self.unit_compression, 3),
            "parameters_before": self.original.num_parameters,
            "parameters_after": self.compressed.num_parameters,
            "parameter_compression_percent": round(self.param_compression, 3),
            "collapsed_to_constant": self.collapsed,
            "weights_exact": self.exact,
            "epsilon": None if self.epsilon is None else str(self.epsilon),
            "epsilon_float": None if self.epsilon is None else float(self.epsilon),
            "table": [r.to_dict() for r in self.table],
            "stability": self.stability.to_dict(),
            "proof": None if self.proof is None else self.proof.to_dict(),
            "seconds": round(self.seconds, 4),
            "notes": list(self.notes),
        }


def compression_html(c: CompressionResult) -> str:
    """``c`` as escaped HTML: a caption with the architectures, units and parameters before and
    after, the per-layer table, the undecided (kept) units and notes, then the proof's table
    (:func:`equivcheck.core.result.result_html`) or "not verified" when there is no proof."""
    from html import escape

    def cells(values: tuple[str, ...], tag: str = "td") -> str:
        return "<tr>" + "".join(f"<{tag} style='text-align:right'>{escape(v)}</{tag}>"
                                for v in values) + "</tr>"

    head = cells(("layer", "units", "inactive removed", "active folded", "units kept", "params",
                  "params kept", "saved %"), "th")
    rows = "".join(cells((
        f"{r.layer}{'' if r.relu else ' out'}{' folded' if r.folded_into_next else ''}",
        str(r.units_before), str(r.removed_inactive), str(r.folded_active), str(r.units_after),
        f"{r.params_before:,}", f"{r.params_after:,}",
        f"{100.0 * (1 - r.params_after / r.params_before) if r.params_before else 0.0:.1f}"))
        for r in c.table)
    summary = (f"{c.original.description} -> {c.compressed.description}: "
               f"{c.hidden_before - c.hidden_after} of {c.hidden_before} hidden units removed "
               f"({c.unit_compression:.1f}%), parameters {c.original.num_parameters:,} -> "
               f"{c.compressed.num_parameters:,} ({c.param_compression:.1f}%)")
    lines = [f"{len(c.stability.undecided)} units undecided (kept)"]
    lines += [f"note: {n}" for n in c.notes]
    if c.proof is None:
        lines.append("not verified: no proof was run")
    elif c.epsilon is not None:
        lines.append(f"proof of equality within epsilon = {c.epsilon} (linf, "
                     f"{float(c.epsilon):.3g}):")
    else:
        lines.append("proof of strict equality:")
    text = "".join(f"<p style='text-align:left'>{escape(line)}</p>" for line in lines)
    proof = "" if c.proof is None else result_html(c.proof)
    return (f"<div><table><caption style='text-align:left'><b>equivcheck compress</b> "
            f"{escape(str(c.original.source))}<br>{escape(summary)}</caption>{head}{rows}"
            f"</table>{text}{proof}</div>")
