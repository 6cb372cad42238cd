"""Auditing a pruned (or otherwise modified) model against its original.

:func:`audit` answers what a reviewer asks before a pruned model ships:

* **verdicts** for strict equivalence, a ladder of epsilons (L-infinity) and argmax equivalence,
  each PROVED / REFUTED (with a counterexample) / UNKNOWN;
* the **worst-case deviation** ``max_x ||f(x) - g(x)||_inf`` over the domain as an interval
  ``[lower, upper]``: ``upper`` is *certified* (no input of the domain deviates more) and
  ``lower`` is *witnessed* (an input attains it, checked in exact arithmetic); the same per output;
* which **units** the pruning removed or changed, and whether each removed unit was stably
  inactive on the domain in the original (harmless) or live;
* with ``data``: top-1 agreement and the distribution of the deviation on real inputs.

Soundness. The upper bound is the smallest of (1) the differential engine's rigorous bounds
(:mod:`equivcheck.engine`: outward-rounded bounds of ``f - g`` valid for the exact stored
weights) on each whole box, (2) the engine's branch and bound asked "is the deviation within t
on this box?" for t just above the witnessed deviation, for the total and per output (every
answer but REFUTED carries a certified bound of the box) and (3) any epsilon for which the
prover returned PROVED. The lower bound is always the exact deviation (rational arithmetic on
the stored weights) at a concrete input inside the domain, found by a gradient search that
maximises the deviation, by the engine's falsifier or taken from a refutation. An UNKNOWN answer
never moves a bound the wrong way. The verdicts come from the bounds where they decide, else
from :func:`equivcheck.solve.prover.prove_networks`.

The parts: :mod:`~equivcheck.audit.results` (what is returned), :mod:`~equivcheck.audit.deviation`
(certified bounds), :mod:`~equivcheck.audit.witnesses` (the witness search),
:mod:`~equivcheck.audit.changes` (units pruning removed or changed),
:mod:`~equivcheck.audit.samples` (statistics on inputs), :mod:`~equivcheck.audit.refine` (the
refinement steps and verdicts) and :mod:`~equivcheck.audit.report` (the one renderer). This
module is the entry: :func:`audit`.
"""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from equivcheck.audit.changes import unit_changes
from equivcheck.audit.deviation import DEFAULT_METHOD
from equivcheck.audit.quantized import audit_quantized
from equivcheck.audit.refine import MIN_CALL_SECONDS, Auditor
from equivcheck.audit.results import AuditResult, CheckVerdict, DecidedBy
from equivcheck.audit.samples import random_domain_points, read_inputs, sample_stats
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Domain
from equivcheck.core.network import Network
from equivcheck.core.options import MULTI_PROOF_TIMEOUT, BoundMethod, ProverOptions
from equivcheck.core.progress import ProgressFn
from equivcheck.core.quantized import is_quantized
from equivcheck.core.result import Verdict
from equivcheck.core.spec import Mode, Spec
from equivcheck.errors import InputError
from equivcheck.io.domains import parse_domain
from equivcheck.io.onnx_import import ModelLike
from equivcheck.solve.prover import load_pair

DEFAULT_EPSILONS: tuple[str, ...] = ("1e-6", "1e-4", "1e-3", "1e-2", "1e-1", "1", "10")
DEFAULT_GAP = 0.05  # stop refining when upper - lower <= gap * upper
RANDOM_SAMPLES = 2000  # random domain points whose deviation the report plots
VERDICT_RESERVE = 0.1  # narrowing the total may take all the time left but this share (at
# least MIN_CALL_SECONDS) for the verdicts; the per-output bounds get what the total leaves


def _tolerance(e: Any) -> Fraction:
    """An epsilon of the ladder, read and range-checked exactly as ``--tolerance`` is."""
    try:
        return Spec.make("epsilon", e).tolerance
    except InputError as exc:
        raise InputError(str(exc).replace("tolerance", "epsilon", 1)) from None


def audit(
    original: ModelLike | Network,
    pruned: ModelLike | Network,
    domain: str | Domain | None = None,
    data: Any = None,
    epsilons: tuple = DEFAULT_EPSILONS,
    timeout: float | Deadline = MULTI_PROOF_TIMEOUT,
    gap: float = DEFAULT_GAP,
    samples: int = RANDOM_SAMPLES,
    seed: int = 0,
    bounds: BoundMethod | str | None = None,
    progress: ProgressFn | None = None,
) -> AuditResult:
    """Audit ``pruned`` against ``original`` on ``domain`` (see the module docstring).

    ``data`` is a .npy path or an array of inputs (any shape whose size is a multiple of the
    input size). ``timeout`` (seconds, or a :class:`~equivcheck.core.deadline.Deadline` handed down)
    bounds the whole audit (each prover call gets at most ``CALL_SHARE`` of it); ``gap`` is the
    relative width ``(upper - lower) / upper`` at which refinement stops: the audit ends as soon
    as the bounds meet it (or can no longer move), not when the time is up. ``seed`` and
    ``bounds`` (a :class:`~equivcheck.core.options.BoundMethod`; None: symbolic) are those of
    every prover call and of the unit analysis; the result carries them as its ``options``.
    ``progress`` is called at each refinement step (stage ``"audit"``, ``bound`` the certified
    upper bound, the lower bound in ``detail``).
    Promises: ``deviation.upper`` is certified (no input of the domain deviates more in exact
    arithmetic), ``deviation.lower`` is the exact deviation at ``deviation.witness``, and every
    verdict is sound. Raises :class:`~equivcheck.errors.InputError` for bad models, domains or data.
    """
    start = time.monotonic()
    deadline = Deadline.of(timeout)
    if not 0 <= gap < 1:
        raise InputError(f"gap must be in [0, 1), got {gap}")
    method = DEFAULT_METHOD if bounds is None else BoundMethod.parse(bounds)
    options = ProverOptions(timeout=deadline.budget, bound_method=method, seed=seed)
    models = load_pair(original, pruned, quantized_ok=True)
    if is_quantized(models.net_a) or is_quantized(models.net_b):
        dom = parse_domain(domain, models.net_a.in_dim)
        data_x = read_inputs(data, dom.dim) if data is not None else None
        return audit_quantized(models, dom, data_x, str(data) if isinstance(data, (str, Path))
                               else None, sorted({_tolerance(e) for e in epsilons}), deadline,
                               gap, options, samples, seed)
    au = Auditor(models, parse_domain(domain, models.net_a.in_dim), deadline, gap, options,
                 progress)
    ladder = sorted({_tolerance(e) for e in epsilons})
    data_x = read_inputs(data, au.f.in_dim) if data is not None else None
    layers, units, note = unit_changes(au.f, au.g, au.domain, au.method, deadline)
    if note:
        au.notes.append(note)
    au.initial_bounds()
    rand = random_domain_points(au.domain, samples, seed)
    # top-1 disagreement at the sampled points (whose agreement the report quotes): checked
    # now, while there is time for the counterexample's float64 / onnxruntime re-check
    top1 = au.argmax_witness(rand if data_x is None else np.concatenate(
        [rand.reshape(-1, au.f.in_dim), data_x]))
    au.tighten(None, deadline.sub(seconds=deadline.remaining()
                                  - max(MIN_CALL_SECONDS, VERDICT_RESERVE * deadline.remaining())))
    strict = au.check_strict()
    if strict.verdict is Verdict.PROVED:  # the bound is 0 now: why refinement stopped is moot
        au.notes[:] = [n for n in au.notes if "refinement stopped" not in n]
    checks = [strict]
    for eps in ladder:
        checks.append(au.check_epsilon(eps))
    checks.append(au.check_argmax(strict, top1))
    au.tighten_outputs()
    # the ladder verdicts that were UNKNOWN may be decided by the refined bounds now
    checks = [_settle(c, au) for c in checks]
    source = f"{len(rand)} random domain points"
    if len(rand) == 0:  # no float point lies in the domain: the nearest floats of box centres
        rand = np.array([[float(v) for v in box.midpoint()] for box in au.domain.boxes])
        source = (f"{len(rand)} float64 point(s) nearest the centres of the boxes (the domain "
                  "holds no float point)")
    sample = sample_stats(au.f, au.g, rand, au.domain, source)
    if any(w is not None for w in au.witness_exact):
        au.notes.append("a witness is a rational point that is not a float vector (see "
                        "witness_exact): its deviation is exact, but onnxruntime cannot be fed "
                        "that point exactly")
    data_stats = sample_stats(au.f, au.g, data_x, au.domain, str(data)
                              if isinstance(data, (str, Path)) else "data") if data_x is not None else None
    overall = au.overall()
    if au.domain.is_default:
        au.notes.append("no domain given: audited the default domain [0, 1] on every input")
    return AuditResult(
        original=au.f.source,
        pruned=au.g.source,
        domain=au.domain,
        options=options,
        checks=tuple(checks),
        deviation=overall,
        per_output=au.per_output(),
        layers=layers,
        units=units,
        samples=sample,
        data=data_stats,
        gap=gap,
        converged=overall.within(gap),
        seconds=time.monotonic() - start,
        notes=tuple(au.notes) + tuple(au.f.notes) + tuple(au.g.notes),
    )


def _settle(c: CheckVerdict, au: Auditor) -> CheckVerdict:
    """Decide UNKNOWN epsilon verdicts with the final bounds; quote the final bound."""
    if c.mode is not Mode.EPSILON or c.tolerance is None:
        return c
    if c.verdict is not Verdict.UNKNOWN and c.method is not DecidedBy.CERTIFIED_BOUND:
        return c
    if c.tolerance >= au.total_upper:
        return CheckVerdict(c.name, c.mode, c.tolerance, Verdict.PROVED,
                            f"certified upper bound {float(au.total_upper):.6g} <= "
                            f"{float(c.tolerance):g} ({au.total_method})", DecidedBy.CERTIFIED_BOUND,
                            None, c.seconds)
    if c.tolerance < au.total_lower:
        return au.witness_refutation(c.name, c.mode, c.tolerance)
    return c
