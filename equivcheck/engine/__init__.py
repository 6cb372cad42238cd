"""The differential branch-and-bound engine (input splitting for few inputs, ReLU splitting for many).

Entry point: :func:`check_box` decides a :class:`~equivcheck.core.spec.Spec` for two networks on
one :class:`~equivcheck.core.domain.Box` and returns an :class:`EngineResult` (PROVED, REFUTED
with a point confirmed in exact arithmetic, or UNKNOWN with the reason) and its statistics.
:func:`pair_bounds` gives the batched rigorous bounds of f, g and f - g over many boxes.
Layers may hold sparse weights (``csr_array``, convolutions lowered by the importer): they stay
sparse throughout (memory linear in the stored entries; see :mod:`equivcheck.engine.model`).

Imports only :mod:`equivcheck.errors`, :mod:`equivcheck.core`, numpy and scipy.
"""

from equivcheck.engine.bounds import Boxes, PairBounds, pair_bounds
from equivcheck.engine.model import PairModel
from equivcheck.engine.search import EngineOptions, EngineResult, EngineStats, Outcome, check_box

__all__ = [
    "Boxes", "EngineOptions", "EngineResult", "EngineStats", "Outcome", "PairBounds", "PairModel",
    "check_box", "pair_bounds",
]
