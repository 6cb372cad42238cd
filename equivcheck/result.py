"""Verdicts and results: the objects every front end (CLI, pytest plugin, reports) renders."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any


class Verdict(enum.IntEnum):
    """Three-valued verdict, ordered so that the weakest of several is ``min``."""

    REFUTED = 0
    UNKNOWN = 1
    PROVED = 2

    @property
    def label(self) -> str:
        return self.name.lower()


EXIT_CODES = {Verdict.PROVED: 0, Verdict.REFUTED: 1, Verdict.UNKNOWN: 3}


def _q(v: Fraction) -> str:
    return str(v) if isinstance(v, Fraction) else repr(v)


@dataclass(frozen=True)
class Evaluation:
    """Both networks' outputs at one input on one backend, and the spec's margin there."""

    backend: str  # "exact", "float64", "onnxruntime"
    output_a: tuple[float, ...]
    output_b: tuple[float, ...]
    margin: float
    violated: bool
    exact_margin: Fraction | None = None  # only for the exact backend
    error: str | None = None  # backend could not run

    def to_dict(self) -> dict:
        d: dict[str, Any] = {
            "backend": self.backend,
            "output_a": list(self.output_a),
            "output_b": list(self.output_b),
            "margin": self.margin,
            "violated": self.violated,
        }
        if self.exact_margin is not None:
            d["margin_exact"] = _q(self.exact_margin)
        if self.error:
            d["error"] = self.error
        return d


@dataclass(frozen=True)
class Counterexample:
    """An input in the domain where the two networks disagree, re-evaluated on every backend.

    ``input`` is the point as floats (float32-representable when possible, so onnxruntime runs
    exactly this point); ``exact`` is the evaluation in rational arithmetic on the stored weights
    at that point, ``float64`` our numpy evaluation and ``onnxruntime`` the original files.
    """

    input: tuple[float, ...]
    box_index: int
    found_by: str  # "falsifier" or "solver"
    exact: Evaluation
    float64: Evaluation
    onnxruntime: Evaluation | None
    note: str = ""

    @property
    def reproduces(self) -> bool:
        """True when the violation is seen in float64 and in onnxruntime (float32) too."""
        ort_ok = self.onnxruntime is not None and self.onnxruntime.violated
        return self.exact.violated and self.float64.violated and ort_ok

    def to_dict(self) -> dict:
        return {
            "input": list(self.input),
            "box_index": self.box_index,
            "found_by": self.found_by,
            "reproduces": self.reproduces,
            "exact": self.exact.to_dict(),
            "float64": self.float64.to_dict(),
            "onnxruntime": self.onnxruntime.to_dict() if self.onnxruntime else None,
            "note": self.note,
        }


@dataclass(frozen=True)
class LayerStability:
    """How interval bounds classified the ReLUs of one hidden layer of one network."""

    network: str  # "a" or "b"
    layer: int
    width: int
    active: int
    inactive: int
    unstable: int
    shared: bool = False  # identical to the other network's layer and encoded once

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class BoxResult:
    """The outcome on one box of the domain."""

    index: int
    verdict: Verdict
    reason: str
    stability: tuple[LayerStability, ...] = ()
    unstable_encoded: int = 0
    shared_layers: int = 0
    shared_units: int = 0
    parts: int = 0  # sub-boxes examined by the exact search (0: none needed, 1: no splitting)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "verdict": self.verdict.label,
            "reason": self.reason,
            "stability": [s.to_dict() for s in self.stability],
            "unstable_encoded": self.unstable_encoded,
            "shared_layers": self.shared_layers,
            "shared_units": self.shared_units,
            "parts": self.parts,
            "seconds": round(self.seconds, 4),
        }


@dataclass(frozen=True)
class ProofResult:
    """The answer of :func:`equivcheck.prove`."""

    verdict: Verdict
    reason: str
    model_a: str
    model_b: str
    spec: dict
    domain: dict
    domain_text: str
    counterexample: Counterexample | None
    boxes: tuple[BoxResult, ...]
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def proved(self) -> bool:
        return self.verdict is Verdict.PROVED

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    @property
    def stability(self) -> tuple[LayerStability, ...]:
        return tuple(s for b in self.boxes for s in b.stability)

    def to_dict(self) -> dict:
        return {
            "verdict": self.verdict.label,
            "reason": self.reason,
            "model_a": self.model_a,
            "model_b": self.model_b,
            "spec": self.spec,
            "domain": self.domain,
            "counterexample": self.counterexample.to_dict() if self.counterexample else None,
            "boxes": [b.to_dict() for b in self.boxes],
            "seconds": round(self.seconds, 4),
            "notes": list(self.notes),
        }
