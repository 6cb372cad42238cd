"""What :func:`equivcheck.compress.compress` returns: the per-layer table and the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from equivcheck.bounds.stability_report import StabilityReport
from equivcheck.core.network import Network
from equivcheck.core.result import ProofResult


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
