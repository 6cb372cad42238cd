"""Cheap counterexample search that runs before the solver.

Samples the box (centre, corners, uniform points), then climbs the disagreement from the most
promising samples with the shared signed-gradient ascent of :mod:`equivcheck.core.ascent` (the
networks are piecewise linear, so the gradient inside a linear region is exact and cheap). Every point it returns is float32-representable and
inside the exact box; it is only a *candidate*: the prover confirms it in exact arithmetic.
"""

from __future__ import annotations

import itertools

import numpy as np

from equivcheck.core.ascent import Objective, Schedule, ascend, vjp
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Box
from equivcheck.core.exact import snap
from equivcheck.core.network import Network
from equivcheck.core.quantized import float_layers
from equivcheck.core.spec import Spec, batch_margin, objective_weights

_SCHEDULE = Schedule(step=0.25, scales=(1.0, 0.5, 0.1), min_step=1e-7, jitter=0.1)


def _f32_box(box: Box) -> tuple[np.ndarray, np.ndarray] | None:
    """Float bounds whose every float point lies in the exact box (strict faces honoured):
    float32 points when the box holds any, else float64 points; None when it holds neither."""
    got = box.sample_box()
    return None if got is None else got[0]


def search(
    a: Network,
    b: Network,
    spec: Spec,
    box: Box,
    seconds: float = 1.0,
    samples: int = 4096,
    seed: int = 0,
    keep: int = 8,
    deadline: Deadline | None = None,
) -> list[tuple[float, np.ndarray]]:
    """Candidate counterexamples as (float64 margin, point), most violating first.

    Only points with a positive float64 margin are returned; at most ``keep`` of them. Every
    returned point lies in ``box`` exactly (float32 when the box holds float32 points, else
    float64); a box that holds no float64 point at all gives no candidates.
    """
    if deadline is None:
        deadline = Deadline.start(max(seconds, 0.0), allow_zero=True)
    rng = np.random.default_rng(seed)
    got = _f32_box(box)
    if got is None:
        return []
    lo, hi = got
    dim = len(lo)
    pts = [(lo + hi) / 2, lo, hi]
    if dim <= 10:
        corners = np.array(list(itertools.product((0.0, 1.0), repeat=dim)))
    else:
        corners = rng.integers(0, 2, size=(256, dim)).astype(np.float64)
    pts.extend(lo + corners * (hi - lo))
    n_rand = max(16, min(samples, int(4_000_000 // max(dim, 1))))
    rand = lo + rng.random((n_rand, dim)) * (hi - lo)
    x = snap(np.vstack([np.atleast_2d(np.array(pts)), rand]), lo, hi)
    # evaluate in chunks so that a small budget is honoured on large networks
    layers = tuple(float_layers(a).layers) + tuple(float_layers(b).layers)
    chunk = max(64, int(2_000_000 // max(1, sum(layer.weight.size for layer in layers))))
    parts_a, parts_b = [], []
    for start in range(0, len(x), chunk):
        if start and deadline.expired():
            break
        parts_a.append(a.evaluate(x[start:start + chunk]))
        parts_b.append(b.evaluate(x[start:start + chunk]))
    ya, yb = np.vstack(parts_a), np.vstack(parts_b)
    x = x[: len(ya)]
    margin = batch_margin(spec, ya, yb)
    best = list(np.argsort(-margin)[:keep])
    found: list[tuple[float, np.ndarray]] = [
        (float(margin[i]), x[i]) for i in best if margin[i] > 0 and box.contains(x[i])
    ]
    # Above this, a float64 margin is not rounding noise, so searching on is pointless. (The
    # prover still confirms every candidate in exact arithmetic; this only stops the search.)
    noise = 1e-9 * (1.0 + float(np.max(np.abs(ya))) + float(np.max(np.abs(yb))))
    if found and found[0][0] > noise:
        return found[:keep]

    # local search from the best starts: climb the margin (jitter leaves flat regions); stop
    # once one candidate's margin is above the noise
    objective = Objective(lambda p: batch_margin(spec, a.evaluate(p), b.evaluate(p)),
                          lambda p: _margin_gradient(a, b, spec, p))
    cur, cur_m = ascend(objective, x[best], lambda p: snap(p, lo, hi), hi - lo, deadline,
                        _SCHEDULE, rng, done=lambda v: bool(np.any(v > noise)),
                        start_value=margin[best])
    for m, p in zip(cur_m, cur):
        if m > 0:
            found.append((float(m), p))
    found.sort(key=lambda t: -t[0])
    return [(m, p) for m, p in found if box.contains(p)][:keep]


def _margin_gradient(a: Network, b: Network, spec: Spec, x: np.ndarray) -> np.ndarray:
    """Per row, the gradient of the local linear measure of the disagreement at ``x`` (of a
    quantized network, the gradient of its float layers: rounding is flat almost everywhere,
    so the climb follows the map the rounding steps along)."""
    ca, cb = objective_weights(spec, a.evaluate(x), b.evaluate(x))
    return vjp(float_layers(a), x, ca) + vjp(float_layers(b), x, cb)

