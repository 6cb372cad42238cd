"""The epsilon proof of folded units, by the engine's differential bounds.

Folding recomputes weights as exact rationals that the ONNX file stores rounded, so the stored
compressed network ``g`` differs from the original ``f`` by at most the rigorous rounding bound
``epsilon`` (:mod:`equivcheck.compress.rounding`). :func:`prove_folds` proves
``||f(x) - g(x)||_inf <= epsilon`` on every box of the domain for the *stored* weights of ``g``:

* ``g`` is first *padded* back to ``f``'s shape (:func:`padded`): every unit ``compress`` removed
  or folded becomes a unit with zero weights, zero bias and zero outgoing weights. It outputs
  ``relu(0) = 0`` and contributes nothing, so the padded network computes exactly ``g``'s function
  (in exact arithmetic, not only in float). The pair is then same-shaped, and the engine
  propagates ``f``, ``g`` and ``f - g`` together: kept units have identical rows in both, folded
  units cancel against the units that absorbed them once the output difference is
  back-substituted, and what is left is the rounding;
* the bounds the stability analysis proved on the whole domain (``known``) are handed to the
  engine's :func:`~equivcheck.engine.pair_bounds` as prior bounds of every layer, so units it
  proved stable by splitting are stable for the engine too;
* a box the root bounds do not close goes to :func:`~equivcheck.engine.check_box` (input
  splitting; without the prior) with what is left of the time;
* when the bounds on the whole boxes close every box, the stated epsilon is their largest
  bound rounded up to two decimal digits, when that is smaller than the rounding bound (the
  engine's bound keeps the correlation the layer-by-layer rounding bound loses).

Every bound is the engine's rigorous one (outward rounding for the exact rational weights), and
the tolerance is compared after rounding it down to a float, so PROVED holds exactly.
"""

from __future__ import annotations

import time

import numpy as np

from equivcheck.bounds.interval import LayerBounds
from equivcheck.compress.passes import WorkingLayer
from equivcheck.compress.rounding import round_up_decimal
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Domain
from equivcheck.core.network import Network
from equivcheck.core.options import ProverOptions
from equivcheck.core.progress import Progress, ProgressFn, report
from equivcheck.core.rational import float_down
from equivcheck.core.result import BoxResult, ProofResult, Verdict
from equivcheck.core.spec import Mode, Norm, Spec
from equivcheck.engine import Boxes, Outcome, PairModel, check_box, pair_bounds
from equivcheck.engine.backward import History  # the type of pair_bounds' ``prior``
from equivcheck.solve.padding import place_units


def padded(original: Network, stored: Network, layers: list[WorkingLayer]) -> Network | None:
    """``stored`` with zero units where ``original`` has units it lacks, so both have the same
    shape; None when the passes changed the depth (a folded layer, a collapse). The padded
    network computes exactly the stored one's function: a zero unit is ``relu(0) = 0`` and its
    outgoing weights are zero."""
    if len(layers) != len(original.layers) or len(stored.layers) != len(layers):
        return None
    if any(lay.origin != k or lay.relu != orig.relu
           for k, (lay, orig) in enumerate(zip(layers, original.layers))):
        return None
    return place_units(original, stored, [lay.units for lay in layers])


def _padded_bounds(layers: list[WorkingLayer], stored_bounds: list[LayerBounds],
                   original: Network) -> list[LayerBounds]:
    """The stored network's known bounds placed at its units' original positions (0 for the
    zero units of the padding)."""
    out = []
    for lay, b, orig in zip(layers, stored_bounds, original.layers):
        lo, hi = np.zeros(orig.out_dim), np.zeros(orig.out_dim)
        lo[lay.units], hi[lay.units] = b.lower, b.upper
        out.append(LayerBounds(lo, hi))
    return out


def _prior(model: PairModel, fb: list[LayerBounds], gb: list[LayerBounds] | None) -> History:
    """The known bounds as the engine's prior (one column, valid for every box of the domain)."""
    h = History()
    for k, layer in enumerate(model.f):
        h.f_lo.append(fb[k].lower[:, None])
        h.f_hi.append(fb[k].upper[:, None])
        if model.same_shape:
            h.dz_lo.append(np.full((layer.out_dim, 1), -np.inf))
            h.dz_hi.append(np.full((layer.out_dim, 1), np.inf))
    for k, layer in enumerate(model.g):
        h.g_lo.append(gb[k].lower[:, None] if gb is not None else np.full((layer.out_dim, 1), -np.inf))
        h.g_hi.append(gb[k].upper[:, None] if gb is not None else np.full((layer.out_dim, 1), np.inf))
    return h


def prove_folds(original: Network, stored: Network, layers: list[WorkingLayer], spec: Spec,
                domain: Domain, known_a: list[LayerBounds], known_b: list[LayerBounds],
                deadline: Deadline, options: ProverOptions,
                progress: ProgressFn | None = None) -> tuple[ProofResult | None, str]:
    """Prove ``spec`` (epsilon, L-inf) for ``original`` against ``stored`` on every box of
    ``domain`` with the engine (see the module doc). ``known_a``/``known_b``: sound bounds of
    every layer of each network over the whole domain (``known_b`` per layer of ``stored``).
    Returns the PROVED :class:`ProofResult` (its spec's tolerance may be tighter than
    ``spec``'s, see the module doc), or None and the reason when some box was not proved (the
    caller then tries the prover, or drops the folds)."""
    if spec.mode is not Mode.EPSILON or spec.norm is not Norm.LINF:
        return None, "the engine's fold proof is for epsilon (linf) only"
    start = time.monotonic()
    eps = float_down(spec.tolerance)
    g = padded(original, stored, layers)
    if g is not None:
        gb = _padded_bounds(layers, known_b, original)
    else:
        g, gb = stored, known_b
    model = PairModel.build(original, g)
    prior = _prior(model, known_a, gb)
    results = []
    worst, tight = 0.0, True  # the largest root bound; every box closed by its root bound
    for index, box in enumerate(domain.boxes):
        t0 = time.monotonic()
        report(progress, Progress("proof", index, len(domain.boxes), "boxes",
                                  seconds_left=deadline.remaining()))
        lo, hi = box.lower_float()[None, :], box.upper_float()[None, :]
        pb = pair_bounds(model, Boxes(lo, hi, model.width), "all", prior, deadline=deadline)
        bound = float(max(np.max(pb.d_hi), np.max(-pb.d_lo)))
        worst = max(worst, bound)
        if bound <= eps:
            results.append(BoxResult(index, Verdict.PROVED,
                                     f"the engine's differential bound {bound:.3g} <= epsilon on the "
                                     "whole box", parts=1, seconds=time.monotonic() - t0))
            continue
        if deadline.expired():
            return None, f"the engine's bound {bound:.3g} exceeds epsilon and the time is up"
        tight = False
        res = check_box(original, g, spec, box, deadline, model=model)
        if res.outcome is not Outcome.PROVED:
            return None, f"the engine did not prove box {index}: {res.reason}"
        results.append(BoxResult(index, Verdict.PROVED, f"the engine: {res.reason}",
                                 parts=res.stats.nodes, seconds=time.monotonic() - t0))
    n = len(results)
    if tight and 0.0 < worst and round_up_decimal(worst) < spec.tolerance:  # (>= worst exactly)
        spec = Spec.make(Mode.EPSILON, round_up_decimal(worst), Norm.LINF)
    return ProofResult(
        verdict=Verdict.PROVED,
        reason=f"proved by the engine's differential bounds on {n} box(es)",
        model_a=original.source, model_b=stored.source, spec=spec, domain=domain,
        counterexample=None, boxes=tuple(results), seconds=time.monotonic() - start,
        notes=tuple(original.notes) + tuple(stored.notes), options=options,
    ), ""
