"""The auditor's state and its steps: narrowing ``[witnessed lower, certified upper]`` on the
worst-case deviation until it is within the target gap or the time is up, and the verdicts.

The upper bound starts from the engine's bounds of each whole box
(:func:`~equivcheck.audit.deviation.engine_pair`) and is tightened by the differential engine
(:func:`~equivcheck.engine.check_box`: "is the deviation within t on this box?", t just above
the best witnessed deviation; every answer that is not REFUTED carries a certified bound of the
box), for the total and per output (single-output slices), and by every epsilon the prover
PROVED. The lower bound is always the exact deviation at a point of the domain (from the
witness search, an engine refutation or a prover counterexample), confirmed in rational
arithmetic here. An UNKNOWN answer never moves a bound the wrong way.
"""

from __future__ import annotations

import dataclasses
import time
from fractions import Fraction

import numpy as np

from equivcheck.audit.deviation import engine_model, engine_pair, exact_deviation
from equivcheck.audit.results import CheckVerdict, DecidedBy, DeviationBound
from equivcheck.audit.witnesses import search_witnesses
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Domain
from equivcheck.core.network import Affine, Layer, Network
from equivcheck.core.options import ProverOptions
from equivcheck.core.progress import Progress, ProgressFn, report
from equivcheck.core.rational import float_down, float_up
from equivcheck.core.result import Counterexample, FoundBy, ProofResult, Verdict
from equivcheck.core.spec import Mode, Spec, batch_margin
from equivcheck.engine import EngineOptions, Outcome, PairModel, check_box
from equivcheck.errors import ModelValueError
from equivcheck.solve.prover import LoadedPair, prove_networks
from equivcheck.solve.witness import OrtRunner, build_counterexample

MIN_CALL_SECONDS = 1.0
CALL_SHARE = 1 / 8  # each prover call gets at most this share of the audit's time (or 1 s)
WITNESS_SHARE = 1 / 20  # the witness search gets this share (at least 0.5 s, a quarter of what is left)
ARGMAX_CHECKS = 8  # sampled points whose top-1 disagreement is checked in exact arithmetic
TARGET_SLACK = 0.98  # the engine is asked for a bound within 98% of the gap (float rounding room)


def _slice_output(net: Network, j: int) -> Network:
    """``net`` with only output ``j`` (exact weights kept)."""
    last = net.layers[-1]
    a = last.affine
    exact_w = a.exact_weight
    if exact_w is not None:  # a sparse layer's exact values are aligned with its stored entries
        exact_w = exact_w[a.weight.indptr[j]:a.weight.indptr[j + 1]] if a.is_sparse else exact_w[j:j + 1]
    aff = Affine(a.weight[j:j + 1], a.bias[j:j + 1], exact_w,
                 None if a.exact_bias is None else a.exact_bias[j:j + 1])
    return net.with_layers(net.layers[:-1] + (Layer(aff, False, last.name),))


class Auditor:
    """The state of one audit: per output the witnessed lower and certified upper bounds of the
    deviation (with their witnesses and how each bound was obtained), and the steps that move
    them (:meth:`initial_bounds`, :meth:`tighten` and :meth:`tighten_outputs`, the ``check_*``
    verdicts). Every step keeps ``lower <= max deviation <= upper``.

    ``models`` are both loaded models (:func:`equivcheck.solve.prover.load_pair`); the prover
    is given their ONNX protos where there are some (its counterexamples are then re-checked in
    onnxruntime). ``options`` are those of every prover call but the time: each call gets a
    share of ``deadline`` (see :meth:`call_budget`). ``progress`` is told of every step.
    """

    def __init__(self, models: LoadedPair, domain: Domain, deadline: Deadline, gap: float,
                 options: ProverOptions, progress: ProgressFn | None = None) -> None:
        self.deadline = deadline
        self.timeout = deadline.budget
        self.pa, self.pb = models.proto_a, models.proto_b
        self.f, self.g = models.net_a, models.net_b
        self.domain = domain
        self.gap = gap
        self.options = options
        self.method = options.bound_method
        self.runner = OrtRunner() if self.pa is not None and self.pb is not None else None
        self.notes: list[str] = []
        m = self.f.out_dim
        self.upper = [Fraction(0)] * m
        self.upper_method = [""] * m
        self.lower = [Fraction(0)] * m
        self.witness: list[tuple[float, ...] | None] = [None] * m
        self.witness_exact: list[tuple[Fraction, ...] | None] = [None] * m
        self.witness_box: list[int] = [0] * m
        self.total_upper: Fraction = Fraction(0)
        self.total_method = ""
        self.progress = progress
        self.stream = ""  # the engine's bounds of this pair (see engine_pair)
        self.pairs: dict[int | None, tuple[Network, Network, PairModel]] = {}
        self.box_out: list[list[Fraction]] = []  # [box][output]: certified bounds per box
        self.box_tot: list[Fraction] = []  # [box]: certified bounds of the L-inf total per box
        self.nodes = 0  # sub-boxes the engine bounded

    # -- time
    def remaining(self) -> float:
        return self.deadline.remaining()

    def out_of_time(self) -> bool:
        """Too little time left for a prover call to be worth starting."""
        return self.remaining() < MIN_CALL_SECONDS / 2

    def call_budget(self) -> Deadline:
        """The deadline of one prover call: a share of the audit's time, never past its end."""
        return self.deadline.sub(seconds=max(MIN_CALL_SECONDS, self.timeout * CALL_SHARE))

    # -- bounds
    def initial_bounds(self) -> None:
        """Certified upper bounds of every output on every whole box (the engine's bounds,
        :func:`~equivcheck.audit.deviation.engine_pair`) and witnessed lower bounds from the
        witness search, within a small share of the time."""
        model, root, self.stream = engine_pair(self.f, self.g, self.domain.boxes)
        if not np.all(np.isfinite(root)):
            raise ModelValueError("the deviation bounds overflow float64 (weights or domain too "
                                  "large to audit)")
        self.pairs[None] = (self.f, self.g, model)
        self.box_out = [[Fraction(float(v)) for v in row] for row in root]
        self.box_tot = [max(row) for row in self.box_out]
        how = f"{self.stream} on the whole box"
        self.upper = [max(row[j] for row in self.box_out) for j in range(self.f.out_dim)]
        self.upper_method = [how] * self.f.out_dim
        self.total_upper, self.total_method = max(self.upper), how
        # the search and the exact checks of its candidates share one budget; the most
        # deviating candidate of each box is always checked (the lower bound rests on it)
        search = self.deadline.sub(seconds=min(max(0.5, self.timeout * WITNESS_SHARE),
                                               max(self.remaining() / 4, 0.1)))
        for bi, box in enumerate(self.domain.boxes):
            if box.sample_box() is None:
                # no float point in the box: its exact centre is the only candidate we have
                self.offer_witness(box.midpoint(), bi)
                continue
            if search.expired():
                break
            share = search.remaining() / (2 * (len(self.domain.boxes) - bi))
            cands = search_witnesses(self.f, self.g, box, search.sub(seconds=share),
                                     seed=self.options.seed + bi)
            if len(cands) == 0:
                continue
            dev = np.max(np.abs(self.f.evaluate(cands) - self.g.evaluate(cands)), axis=1)
            for rank, i in enumerate(np.argsort(-dev)):
                if rank > 0 and search.expired():
                    break
                self.offer_witness(cands[i], bi)
        self.report(None)

    def box_upper(self, bi: int, output: int | None) -> Fraction:
        """The certified bound of box ``bi`` for ``output`` (None: the L-inf total)."""
        if output is None:
            return min(self.box_tot[bi], max(self.box_out[bi]))
        return min(self.box_out[bi][output], self.box_tot[bi])

    def sync(self, how: str) -> None:
        """Lower the reported upper bounds to what the per-box bounds now certify."""
        nb = len(self.box_tot)
        for j in range(self.f.out_dim):
            q = max(self.box_upper(bi, j) for bi in range(nb))
            if q < self.upper[j]:
                self.upper[j], self.upper_method[j] = q, how
        q = max(self.box_upper(bi, None) for bi in range(nb))
        if q < self.total_upper:
            self.total_upper, self.total_method = q, how

    def target(self, lower: Fraction) -> Fraction:
        """The tolerance the engine is asked to prove: the largest float at or below
        ``lower / (1 - gap)`` (shaved by ``TARGET_SLACK``), so that a proof brings the bounds
        within the gap; 0 (strict equality) when nothing deviates yet."""
        if lower == 0:
            return Fraction(0)
        return Fraction(float_down(lower / (1 - Fraction(self.gap) * TARGET_SLACK)))

    def pair(self, output: int | None) -> tuple[Network, Network, PairModel]:
        """The networks (sliced to one output) and the engine's model of them, made once."""
        if output not in self.pairs:
            fa, gb = _slice_output(self.f, output), _slice_output(self.g, output)
            whole = self.pairs.get(None)
            # (the whole pair's model cut to one output: its arrays shared, not rebuilt, so an
            # audit's memory does not grow with the outputs of a wide, sparse network)
            model = engine_model(fa, gb, self.stream) if whole is None or output is None else \
                whole[2].output_slice(output)
            self.pairs[output] = (fa, gb, model)
        return self.pairs[output]

    def tighten(self, output: int | None, deadline: Deadline) -> None:
        """Narrow ``[lower, upper]`` of the total (``output`` None) or of one output with the
        engine (:func:`~equivcheck.engine.check_box`), box by box, worst box first.

        The engine is asked whether the deviation stays within :meth:`target` on the box.
        REFUTED gives a point deviating more, confirmed exactly by :meth:`offer_witness` (the
        lower bound rises; the question is asked again); PROVED or UNKNOWN give a certified
        bound of the box (``best_bound``, valid in both cases), which can only lower the upper
        bound. Stops within the gap, at ``deadline``, or when the engine cannot go further."""
        f, g, model = self.pair(output)
        asked: set = set()
        while not deadline.expired():
            lower = self.total_lower if output is None else self.lower[output]
            ups = [self.box_upper(bi, output) for bi in range(len(self.box_tot))]
            bi = int(np.argmax([float(u) for u in ups]))
            if _within(lower, ups[bi], self.gap):
                return
            t = self.target(lower)
            if (bi, t) in asked:
                return  # proved at this target already: the gap is at float resolution
            asked.add((bi, t))
            spec = Spec.make(Mode.EPSILON, t) if t > 0 else Spec.make(Mode.STRICT)

            def engine_round(ev: Progress, bi: int = bi) -> None:
                # the engine's bound at the start of a round covers the whole box already
                self.bound_box(bi, output, ev.bound, self.nodes + ev.done)
                self.report(output, ev.open, self.nodes + ev.done)

            res = check_box(f, g, spec, self.domain.boxes[bi], deadline,
                            EngineOptions(seed=self.options.seed), model=model,
                            progress=engine_round)
            self.nodes += res.stats.nodes
            if res.outcome is Outcome.REFUTED and res.point is not None:
                self.offer_witness(res.point, bi)
                now = self.total_lower if output is None else self.lower[output]
                if now <= lower:  # cannot happen for a confirmed point; never loop on it
                    return
            else:
                self.bound_box(bi, output, res.stats.best_bound, self.nodes)
            self.report(output, res.stats.open_nodes)
            if res.outcome is Outcome.UNKNOWN:
                if not deadline.expired():
                    what = "total" if output is None else f"output {output}"
                    self.notes.append(f"{what}: refinement stopped ({res.reason})")
                return

    def bound_box(self, bi: int, output: int | None, bound: float | None, nodes: int) -> None:
        """Record a certified bound of box ``bi`` from the engine (None or not finite: none)."""
        if bound is None or not np.isfinite(bound):
            return
        q = Fraction(max(bound, 0.0))
        if output is None:
            self.box_tot[bi] = min(self.box_tot[bi], q)
        else:
            self.box_out[bi][output] = min(self.box_out[bi][output], q)
        self.sync(f"{self.stream}, branch and bound ({nodes} nodes)")

    def tighten_outputs(self) -> None:
        """:meth:`tighten` each output (single-output slices), largest gap first, sharing the
        time left equally."""
        m = self.f.out_dim
        if m == 1:
            return
        order = sorted(range(m), key=lambda j: -float(self.upper[j] - self.lower[j]))
        for k, j in enumerate(order):
            if self.remaining() < MIN_CALL_SECONDS / 2:
                return
            self.tighten(j, self.deadline.sub(1 / (m - k)))

    def report(self, output: int | None, open_nodes: int = 0, done: int | None = None) -> None:
        """One progress event: the certified total, and the lower bound in the detail."""
        detail = f"lower {float(self.total_lower):.6g}"
        if output is not None:
            detail += (f"; output {output}: [{float(self.lower[output]):.6g}, "
                       f"{float(self.upper[output]):.6g}]")
        done = self.nodes if done is None else done
        report(self.progress, Progress("audit", done, open_nodes, "nodes", float(self.total_upper),
                                       self.remaining(), detail))

    def offer_witness(self, x, box_index: int) -> None:
        """Evaluate ``x`` (floats or exact Fractions) exactly and raise the lower bounds it beats.
        Points outside the box are ignored (a witness must lie in the domain)."""
        exact = tuple(v if isinstance(v, Fraction) else Fraction(float(v)) for v in x)
        if not self.domain.boxes[box_index].contains(exact):
            return
        dev = exact_deviation(self.f, self.g, exact)
        for j, d in enumerate(dev):
            if d > self.lower[j]:
                self.lower[j] = d
                self.witness[j] = tuple(float(v) for v in exact)
                floats = all(Fraction(w) == q for w, q in zip(self.witness[j], exact))
                self.witness_exact[j] = None if floats else exact
                self.witness_box[j] = box_index

    @property
    def total_lower(self) -> Fraction:
        return max(self.lower)

    def overall(self) -> DeviationBound:
        j = int(np.argmax([float(v) for v in self.lower])) if any(self.lower) else None
        return DeviationBound(None, self.total_lower, self.total_upper,
                              self.witness[j] if j is not None else None, self.total_method, j,
                              self.witness_exact[j] if j is not None else None)

    def set_total_upper(self, value: Fraction, how: str) -> None:
        """A certified bound of the total on the whole domain (a prover's proof)."""
        value = Fraction(float_up(value))  # certified upper bounds stay float values
        self.box_tot = [min(t, value) for t in self.box_tot]
        self.sync(how)

    # -- proofs
    def prove(self, mode: Mode, tolerance: Fraction | None) -> ProofResult:
        """:func:`~equivcheck.solve.prover.prove_networks` of the two models (counterexamples
        re-checked in onnxruntime) on the audit's domain, within :meth:`call_budget`."""
        budget = self.call_budget()
        options = dataclasses.replace(self.options, timeout=budget.budget)
        return prove_networks(self.f, self.g, Spec.make(mode, tolerance), self.domain, options,
                              deadline=budget, onnx_models=(self.pa, self.pb))

    def learn(self, res: ProofResult, tolerance: Fraction) -> None:
        """Move the bounds with what a PROVED / REFUTED epsilon answer implies."""
        if res.verdict is Verdict.PROVED:
            self.set_total_upper(tolerance, f"proved at epsilon {float(tolerance):g}")
        elif res.verdict is Verdict.REFUTED and res.counterexample is not None:
            self.offer_witness(_cex_point(res.counterexample), res.counterexample.box_index)

    def check_epsilon(self, eps: Fraction) -> CheckVerdict:
        name = f"epsilon {float(eps):g}"
        t0 = time.monotonic()
        if eps >= self.total_upper:
            return CheckVerdict(name, Mode.EPSILON, eps, Verdict.PROVED,
                                f"certified upper bound {float(self.total_upper):.6g} <= {float(eps):g}"
                                f" ({self.total_method})", DecidedBy.CERTIFIED_BOUND)
        if eps < self.total_lower:
            return self.witness_refutation(name, Mode.EPSILON, eps)
        if self.out_of_time():
            return CheckVerdict(name, Mode.EPSILON, eps, Verdict.UNKNOWN, "timeout: no time left",
                                DecidedBy.PROVER)
        res = self.prove(Mode.EPSILON, eps)
        self.learn(res, eps)
        return CheckVerdict(name, Mode.EPSILON, eps, res.verdict, res.reason, DecidedBy.PROVER,
                            res.counterexample, time.monotonic() - t0)

    def witness_refutation(self, name: str, mode: Mode, eps: Fraction | None) -> CheckVerdict:
        """REFUTED by the best witness: its exact deviation exceeds ``eps`` (0 when None)."""
        t0 = time.monotonic()
        j = int(np.argmax([float(v) for v in self.lower]))
        x = self.witness_exact[j] or self.witness[j]
        spec = Spec.make(mode, eps)
        tol = f" > {float(eps):g}" if eps is not None else " > 0"
        reason = f"witness deviates by {float(self.total_lower):.6g}{tol} (exact arithmetic)"
        cex = None
        if self.deadline.expired():  # the verdict rests on the exact deviation alone
            reason += "; the float64 / onnxruntime re-check was skipped (time limit)"
        else:
            cex = build_counterexample(self.f, self.g, spec, x, self.witness_box[j],
                                       FoundBy.AUDIT, self.runner, self.pa, self.pb,
                                       box=self.domain.boxes[self.witness_box[j]])
        return CheckVerdict(name, mode, eps, Verdict.REFUTED, reason, DecidedBy.WITNESS, cex,
                            time.monotonic() - t0)

    def check_strict(self) -> CheckVerdict:
        if self.total_lower > 0:
            return self.witness_refutation("strict", Mode.STRICT, None)
        if self.total_upper == 0:
            return CheckVerdict("strict", Mode.STRICT, None, Verdict.PROVED,
                                f"certified upper bound 0 ({self.total_method})",
                                DecidedBy.CERTIFIED_BOUND)
        if self.out_of_time():
            return CheckVerdict("strict", Mode.STRICT, None, Verdict.UNKNOWN,
                                "timeout: no time left", DecidedBy.PROVER)
        t0 = time.monotonic()
        res = self.prove(Mode.STRICT, None)
        if res.verdict is Verdict.PROVED:
            self.set_total_upper(Fraction(0), "proved strictly equivalent")
        elif res.counterexample is not None:
            self.offer_witness(_cex_point(res.counterexample), res.counterexample.box_index)
        return CheckVerdict("strict", Mode.STRICT, None, res.verdict, res.reason, DecidedBy.PROVER,
                            res.counterexample, time.monotonic() - t0)

    def check_argmax(self, strict: CheckVerdict, found: CheckVerdict | None = None
                     ) -> CheckVerdict:
        """The top-1 verdict: PROVED if strict equivalence was; ``found`` (a refutation at
        sampled points, :meth:`argmax_witness`, checked before the refinement took the time);
        REFUTED at a witness of the deviation where the two pick different classes; else the
        prover's."""
        t0 = time.monotonic()
        if strict.verdict is Verdict.PROVED:
            return CheckVerdict("argmax", Mode.ARGMAX, None, Verdict.PROVED,
                                "implied by strict equivalence", DecidedBy.PROVER)
        found = found or self.argmax_witness(None)
        if found is not None:
            return dataclasses.replace(found, seconds=found.seconds + time.monotonic() - t0)
        if self.out_of_time():
            return CheckVerdict("argmax", Mode.ARGMAX, None, Verdict.UNKNOWN,
                                "timeout: no time left", DecidedBy.PROVER)
        res = self.prove(Mode.ARGMAX, None)
        return CheckVerdict("argmax", Mode.ARGMAX, None, res.verdict, res.reason, DecidedBy.PROVER,
                            res.counterexample, time.monotonic() - t0)

    def argmax_witness(self, points: np.ndarray | None) -> CheckVerdict | None:
        """REFUTED (top-1) at the first of the points where f and g pick different classes in
        float64 that does so in exact arithmetic and lies in the domain, largest float margin
        first (at most ``ARGMAX_CHECKS`` exact evaluations, and no new one past ``WITNESS_SHARE``
        of the audit's time; one once the time is up, when the float64 / onnxruntime re-check
        is skipped as in :meth:`witness_refutation`); None if there is none."""
        rows = [np.array([[float(v) for v in w]]) for w in self.witness if w is not None]
        if points is not None and len(points):
            rows.append(np.asarray(points, dtype=np.float64))
        if not rows:
            return None
        x = np.concatenate(rows)
        spec = Spec.make(Mode.ARGMAX)
        margin = batch_margin(spec, self.f.evaluate(x), self.g.evaluate(x))
        t0, tried, late = time.monotonic(), 0, self.deadline.expired()
        for i in np.argsort(-margin, kind="stable"):
            if margin[i] < 0 or tried >= (1 if late else ARGMAX_CHECKS) or (
                    tried and time.monotonic() - t0 > WITNESS_SHARE * self.timeout):
                break  # (exact evaluations of a large network take seconds each)
            q = [Fraction(float(v)) for v in x[i]]
            bi = next((k for k, b in enumerate(self.domain.boxes) if b.contains(q)), None)
            if bi is None:
                continue
            tried += 1
            if spec.holds(self.f.evaluate_exact(q), self.g.evaluate_exact(q)):
                continue
            reason = ("the two pick different classes at a sampled input of the domain "
                      "(exact arithmetic)")
            cex = None
            if late:
                reason += "; the float64 / onnxruntime re-check was skipped (time limit)"
            else:
                cex = build_counterexample(self.f, self.g, spec, tuple(float(v) for v in x[i]),
                                           bi, FoundBy.AUDIT, self.runner, self.pa, self.pb,
                                           box=self.domain.boxes[bi])
            return CheckVerdict("argmax", Mode.ARGMAX, None, Verdict.REFUTED, reason,
                                DecidedBy.WITNESS, cex, time.monotonic() - t0)
        return None

    def per_output(self) -> tuple[DeviationBound, ...]:
        return tuple(
            DeviationBound(j, self.lower[j], self.upper[j], self.witness[j], self.upper_method[j], j,
                           self.witness_exact[j])
            for j in range(self.f.out_dim)
        )


def _cex_point(cex: Counterexample) -> tuple:
    """The exact point of a counterexample (its rational input where it has one)."""
    exact = getattr(cex, "exact_input", None)
    return tuple(exact) if exact else tuple(cex.input)


def _within(lower: Fraction, upper: Fraction, gap: float) -> bool:
    """The relative gap test of :meth:`DeviationBound.within`."""
    return upper == 0 or float(upper - lower) <= gap * float(upper)
