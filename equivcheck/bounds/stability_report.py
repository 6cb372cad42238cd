"""What the exact stability analysis (:mod:`equivcheck.bounds.stability`) reports: per ReLU unit a
:class:`~equivcheck.core.options.UnitStability`, the :class:`Stage` that decided it, and for
unstable units two witness points."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from equivcheck.bounds.interval import LayerBounds
from equivcheck.core.options import UnitStability


class Stage(enum.Enum):
    """Which stage of the analysis decided a unit."""

    INTERVAL = "interval"
    SYMBOLIC = "symbolic"
    LP = "lp"
    WITNESS = "witness"
    EXACT = "exact"
    TIMEOUT = "timeout"

    @property
    def rank(self) -> int:
        """Position in the order the stages run (TIMEOUT last)."""
        return list(Stage).index(self)


@dataclass(frozen=True)
class LayerStabilityReport:
    """The verdicts of one hidden (ReLU) layer: ``status[i]``, ``stage[i]`` and, for unstable
    units, the indices into :attr:`StabilityReport.witnesses` of a point where the unit is
    strictly active and one where it is strictly inactive."""

    layer: int
    width: int
    status: tuple[UnitStability, ...]
    stage: tuple[Stage, ...]
    witness_active: tuple[int | None, ...]
    witness_inactive: tuple[int | None, ...]

    def count(self, status: UnitStability) -> int:
        return sum(1 for s in self.status if s is status)

    def to_dict(self) -> dict:
        return {
            "layer": self.layer,
            "width": self.width,
            "active": self.count(UnitStability.ACTIVE),
            "inactive": self.count(UnitStability.INACTIVE),
            "unstable": self.count(UnitStability.UNSTABLE),
            "undecided": self.count(UnitStability.UNDECIDED),
            "status": [s.value for s in self.status],
            "stage": [s.value for s in self.stage],
        }


@dataclass(frozen=True)
class StabilityReport:
    """Stability of every ReLU unit of a network over a domain (see
    :func:`equivcheck.bounds.stability.analyze_stability`)."""

    layers: tuple[LayerStabilityReport, ...]
    witnesses: tuple[tuple[float, ...], ...]
    domain_text: str
    seconds: float
    stage_seconds: dict = field(default_factory=dict)
    # one-box domains: the sound pre-activation bounds the analysis ended with (pass them
    # through :meth:`clip` for every proved unit), so callers need not recompute them; None for
    # unions of boxes
    bounds: tuple[LayerBounds, ...] | None = field(default=None, compare=False, repr=False)

    def layer(self, index: int) -> LayerStabilityReport | None:
        for rep in self.layers:
            if rep.layer == index:
                return rep
        return None

    def clip(self, bounds: Sequence[LayerBounds]) -> list[LayerBounds]:
        """A new list: ``bounds`` with every unit proved stable clipped at 0 (still sound if
        they were). ``bounds`` itself is not changed."""
        out = list(bounds)
        for rep in self.layers:
            lower, upper = out[rep.layer].lower.copy(), out[rep.layer].upper.copy()
            for i, s in enumerate(rep.status):
                if s is UnitStability.INACTIVE:
                    upper[i] = min(upper[i], 0.0)
                elif s is UnitStability.ACTIVE:
                    lower[i] = max(lower[i], 0.0)
            out[rep.layer] = LayerBounds(lower, upper)
        return out

    @property
    def undecided(self) -> tuple[tuple[int, int], ...]:
        """(layer, unit) of every unit the time limit left undecided."""
        return tuple((r.layer, i) for r in self.layers for i, s in enumerate(r.status)
                     if s is UnitStability.UNDECIDED)

    def stage_counts(self) -> dict[str, dict[str, int]]:
        """How many units each stage decided, split into stable and unstable ("timeout" counts
        the undecided units)."""
        out: dict[str, dict[str, int]] = {
            s.value: {"stable": 0, "unstable": 0, "undecided": 0} for s in Stage
        }
        for r in self.layers:
            for st, sg in zip(r.status, r.stage):
                key = "stable" if st.stable else st.value
                out[sg.value][key] += 1
        return out

    def to_dict(self) -> dict:
        return {
            "domain": self.domain_text,
            "seconds": round(self.seconds, 4),
            "stage_seconds": {k: round(v, 4) for k, v in self.stage_seconds.items()},
            "stage_counts": self.stage_counts(),
            "undecided": [list(u) for u in self.undecided],
            "layers": [r.to_dict() for r in self.layers],
            "witnesses": len(self.witnesses),
        }
