"""Certified bounds on the deviation ``f(x) - g(x)`` of two networks over boxes, by the
differential engine (:mod:`equivcheck.engine`), and the exact deviation at a point.

:func:`engine_pair` prepares a pair for the engine once and returns, per box and output, a
certified bound of ``|f_j(x) - g_j(x)|`` on the whole box. For same-shaped pairs the engine can
bound ``f - g`` in two ways: the *difference stream* (``f``, ``g`` and ``f - g`` propagated
together: tight when the weights are close, as for a pruned or quantized copy) or *each network*
back-substituted on its own and the two linear bounds subtracted before the box is applied
(tighter when the weights differ throughout: ACAS Xu N1,1 vs N1,2 on prop_3's box, 1.6-2.7 per
output against 33-42 by the difference stream). Both are rigorous; the pair keeps the one whose
whole-box bound is smaller (the per-output bounds returned are the smaller of the two).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from equivcheck.core.domain import Box
from equivcheck.core.network import Network
from equivcheck.core.options import BoundMethod
from equivcheck.engine import Boxes, PairModel, pair_bounds
from equivcheck.engine.search import RELU_INPUTS

DEFAULT_METHOD = BoundMethod.SYMBOLIC  # the prover calls' and unit analysis' bounds unless given
ROOT_CHUNK = 64  # boxes bounded per engine call for the whole-box bounds

DIFFERENCE_STREAM = "differential bounds (f, g and f - g together)"
EACH_NETWORK = "back-substituted bounds of each network"


def engine_pair(f: Network, g: Network, boxes: tuple[Box, ...]
                ) -> tuple[PairModel, np.ndarray, str]:
    """The engine's model of the pair, the certified bounds ``[boxes, outputs]`` (floats) of
    ``|f_j - g_j|`` on each whole box, and the name of the bounds the model uses
    (:data:`DIFFERENCE_STREAM` or :data:`EACH_NETWORK`: both are measured on the boxes and the
    tighter kept)."""
    model = PairModel.build(f, g)
    candidates = [(model, DIFFERENCE_STREAM if model.same_shape else EACH_NETWORK)]
    if model.same_shape:
        candidates.append((model.streams_apart(), EACH_NETWORK))
    best = bound = None
    for m, name in candidates:
        dev = whole_box_bounds(m, boxes)
        bound = dev if bound is None else np.minimum(bound, dev)
        if best is None or float(dev.max()) < best[2]:
            best = (m, name, float(dev.max()))
    return best[0], bound, best[1]


def engine_model(f: Network, g: Network, stream: str) -> PairModel:
    """The engine's model of the pair with the bounds ``stream`` names (see the module doc)."""
    model = PairModel.build(f, g)
    return model.streams_apart() if stream == EACH_NETWORK else model


def whole_box_bounds(model: PairModel, boxes: tuple[Box, ...]) -> np.ndarray:
    """``[boxes, outputs]``: rigorous upper bounds of ``|f_j - g_j|`` on each box (the float
    enclosure of the exact box, every layer back-substituted)."""
    lo = np.array([b.lower_float() for b in boxes], dtype=np.float64)
    hi = np.array([b.upper_float() for b in boxes], dtype=np.float64)
    out = []
    for s in range(0, len(boxes), ROOT_CHUNK):
        # hidden differences back-substituted too; on many inputs interval arithmetic before
        # the back-substitution (tighter and faster there, measured on MNIST 256x4: 0.086 vs 0.177)
        pb = pair_bounds(model, Boxes(lo[s:s + ROOT_CHUNK], hi[s:s + ROOT_CHUNK], model.width), "all",
                         hidden_diff=True, symbolic=model.n_in <= RELU_INPUTS)
        out.append(np.maximum(pb.d_hi, -pb.d_lo))
    return np.vstack(out)


def exact_deviation(f: Network, g: Network, x) -> list[Fraction]:
    """``|f_j(x) - g_j(x)|`` for every output j, in exact rational arithmetic (``x`` of floats
    or exact Fractions)."""
    q = [v if isinstance(v, Fraction) else Fraction(float(v)) for v in x]
    return [abs(a - b) for a, b in zip(f.evaluate_exact(q), g.evaluate_exact(q))]
