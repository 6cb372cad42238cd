"""The audit of a pair with a quantized model (a float model against its int8 copy, say).

The same report as :func:`equivcheck.audit.auditor.audit` gives, with the same promises, from
the parts that know the rounding:

* the **certified upper bound** of the deviation per output: the engine's bounds of ``f - g``
  over each whole box on the float layers with each rounding as a per-node interval bias
  (:mod:`equivcheck.bounds.bias_enclosure`; they hold the models' exact values), lowered by
  every epsilon the prover proves;
* the **witnessed lower bound**: the exact deviation (rational arithmetic, rounding half to
  even) at the worst of random points, falsifier climbs and the prover's counterexamples;
* the **verdicts** (strict, the epsilon ladder, argmax): from those bounds where they decide,
  else from :func:`equivcheck.solve.prover.prove_networks`, which takes quantized models;
* the **samples** (random domain points, and ``data``), as for float pairs.

Dynamically quantized models (:class:`~equivcheck.core.quantized.DynamicQuantizer`) take the
same path: their rounding enters the enclosure with a bound of their scale per node.

Units are not compared: quantization moves every value a little, it removes none.
"""

from __future__ import annotations

import dataclasses
import time
from fractions import Fraction

import numpy as np

from equivcheck.audit.results import AuditResult, CheckVerdict, DecidedBy, DeviationBound
from equivcheck.audit.samples import random_domain_points, sample_stats
from equivcheck.bounds.bias_enclosure import bias_enclosure
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Domain
from equivcheck.core.options import ProverOptions
from equivcheck.core.rational import float_up
from equivcheck.core.result import FoundBy, Verdict
from equivcheck.core.spec import Mode, Spec
from equivcheck.engine import Boxes, PairModel, pair_bounds
from equivcheck.solve import falsify
from equivcheck.solve.prover import LoadedPair, prove_networks
from equivcheck.solve.witness import OrtRunner, build_counterexample

CALL_SHARE = 1 / 6  # of the audit's time, at most, for each prover call
CANDIDATES = 24  # points per box whose deviation is computed exactly


@dataclasses.dataclass
class _Bounds:
    """Per output: the certified upper bound and the best witness (exact deviation, point, box)."""

    upper: list[Fraction]
    how: list[str]
    lower: list[Fraction]
    witness: list[tuple | None]
    box: list[int]

    def total(self) -> tuple[Fraction, Fraction, int | None]:
        j = int(np.argmax([float(v) for v in self.lower])) if any(self.lower) else None
        return max(self.lower), max(self.upper), j


def audit_quantized(models: LoadedPair, domain: Domain, data_x, data_name: str | None,
                    ladder: list[Fraction], deadline: Deadline, gap: float,
                    options: ProverOptions, samples: int, seed: int) -> AuditResult:
    """The :class:`AuditResult` of ``models`` (at least one quantized) on ``domain`` (see the
    module doc); ``ladder`` the epsilons to decide, ``data_x`` inputs or None."""
    start = time.monotonic()
    f, g = models.net_a, models.net_b
    runner = OrtRunner() if models.proto_a is not None and models.proto_b is not None else None
    b = _initial(f, g, domain, seed, deadline)
    notes = ["units are not compared: quantization rounds every value, it removes no unit"]

    def call(mode: Mode, tol: Fraction | None):
        budget = deadline.sub(CALL_SHARE)
        res = prove_networks(f, g, Spec.make(mode, tol), domain,
                             dataclasses.replace(options, timeout=budget.budget),
                             deadline=budget, onnx_models=(models.proto_a, models.proto_b))
        if res.verdict is Verdict.PROVED and mode in (Mode.EPSILON, Mode.STRICT):
            cap = Fraction(float_up(tol)) if tol is not None else Fraction(0)
            for j in range(len(b.upper)):
                if cap < b.upper[j]:
                    b.upper[j], b.how[j] = cap, (f"proved at epsilon {float(tol):g}"
                                                 if tol is not None else "proved strictly equal")
        if res.verdict is Verdict.REFUTED and res.counterexample is not None:
            cex = res.counterexample
            _offer(f, g, b, cex.exact_input or cex.input, cex.box_index)
        return res

    def witness_check(name, mode, tol):
        lower, _, j = b.total()
        t0 = time.monotonic()
        spec = Spec.make(mode, tol)
        cex = build_counterexample(f, g, spec, b.witness[j], b.box[j], FoundBy.AUDIT, runner,
                                   models.proto_a, models.proto_b, box=domain.boxes[b.box[j]])
        bound = f" > {float(tol):g}" if tol is not None else " > 0"
        return CheckVerdict(name, mode, tol, Verdict.REFUTED, f"witness deviates by "
                            f"{float(lower):.6g}{bound} (exact arithmetic)", DecidedBy.WITNESS,
                            cex, time.monotonic() - t0)

    def check(name, mode, tol):
        lower, upper, _ = b.total()
        limit = tol if tol is not None else Fraction(0)
        if mode is not Mode.ARGMAX and upper <= limit:
            return CheckVerdict(name, mode, tol, Verdict.PROVED, f"certified upper bound "
                                f"{float(upper):.6g} <= {float(limit):g}", DecidedBy.CERTIFIED_BOUND)
        if mode is not Mode.ARGMAX and lower > limit:
            return witness_check(name, mode, tol)
        if deadline.expired():
            return CheckVerdict(name, mode, tol, Verdict.UNKNOWN, "timeout: no time left",
                                DecidedBy.PROVER)
        t0 = time.monotonic()
        res = call(mode, tol)
        return CheckVerdict(name, mode, tol, res.verdict, res.reason, DecidedBy.PROVER,
                            res.counterexample, time.monotonic() - t0)

    checks = [check("strict", Mode.STRICT, None)]
    checks += [check(f"epsilon {float(e):g}", Mode.EPSILON, e) for e in ladder]
    checks.append(check("argmax", Mode.ARGMAX, None))
    lower, upper, j = b.total()
    overall = DeviationBound(None, lower, upper, _float_point(b.witness[j]) if j is not None else None,
                             b.how[int(np.argmax([float(u) for u in b.upper]))], j,
                             _rational(b.witness[j]) if j is not None else None)
    per_output = tuple(DeviationBound(k, b.lower[k], b.upper[k], _float_point(b.witness[k]),
                                      b.how[k], k, _rational(b.witness[k]))
                       for k in range(len(b.upper)))
    rand = random_domain_points(domain, samples, seed)
    source = f"{len(rand)} random domain points"
    if len(rand) == 0:
        rand = np.array([[float(v) for v in box.midpoint()] for box in domain.boxes])
        source = f"{len(rand)} float64 point(s) nearest the centres of the boxes"
    data = sample_stats(f, g, data_x, domain, data_name or "data") if data_x is not None else None
    if domain.is_default:
        notes.append("no domain given: audited the default domain [0, 1] on every input")
    return AuditResult(
        original=f.source, pruned=g.source, domain=domain, options=options, checks=tuple(checks),
        deviation=overall, per_output=per_output, layers=(), units=(),
        samples=sample_stats(f, g, rand, domain, source), data=data, gap=gap,
        converged=overall.within(gap), seconds=time.monotonic() - start,
        notes=tuple(notes) + tuple(f.notes) + tuple(g.notes))


def _initial(f, g, domain: Domain, seed: int, deadline: Deadline) -> _Bounds:
    """Certified per-output bounds over every whole box (the interval-bias enclosure at the
    root) and the exact deviation at the worst sampled and climbed points."""
    m = f.out_dim
    b = _Bounds([Fraction(0)] * m, ["the engine's bounds on the whole box"] * m,
                [Fraction(0)] * m, [None] * m, [0] * m)
    for index, box in enumerate(domain.boxes):
        enc = bias_enclosure(f, g, box)
        model = PairModel.build(enc.f, enc.g, enc.radius, enc.rounding)
        lo, hi = box.lower_float(), box.upper_float()
        pb = pair_bounds(model, Boxes(lo[None], hi[None], model.width), "all", None, True, True)
        dev = np.maximum(-pb.d_lo[0], pb.d_hi[0])
        for j in range(m):
            b.upper[j] = max(b.upper[j], Fraction(float(np.nextafter(max(dev[j], 0.0), np.inf))))
        # climbs of the largest deviation (epsilon 0: every point with a deviation violates)
        for _, x in falsify.search(f, g, Spec.make("epsilon", 0), box, seed=seed + index,
                                   deadline=deadline.sub(0.05), keep=4):
            _offer(f, g, b, x, index)
        (slo, shi), _ = box.sample_box() or ((lo, hi), None)
        pts = slo + np.random.default_rng(seed + index).random((2000, len(lo))) * (shi - slo)
        dev_f = np.abs(f.evaluate(pts) - g.evaluate(pts))
        for j in range(m):
            for i in np.argsort(-dev_f[:, j])[:max(1, CANDIDATES // m)]:
                _offer(f, g, b, pts[i], index)
    return b


def _offer(f, g, b: _Bounds, x, box: int) -> None:
    """Take ``x`` as the witness of every output it deviates most on (exactly)."""
    xs = [v if isinstance(v, Fraction) else Fraction(float(v)) for v in x]
    ya, yb = f.evaluate_exact(xs), g.evaluate_exact(xs)
    for j, (u, v) in enumerate(zip(ya, yb)):
        d = abs(u - v)
        if d > b.lower[j]:
            b.lower[j], b.witness[j], b.box[j] = d, tuple(xs), box


def _float_point(x) -> tuple[float, ...] | None:
    return None if x is None else tuple(float(v) for v in x)


def _rational(x) -> tuple[Fraction, ...] | None:
    """The exact witness when it is not a float vector (else None, as the audit reports it)."""
    if x is None or all(Fraction(float(v)) == v for v in x):
        return None
    return tuple(x)
