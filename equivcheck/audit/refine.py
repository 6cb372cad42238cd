"""The auditor's refinement loop: narrowing ``[witnessed lower, certified upper]`` on the
worst-case deviation until it is within the target gap or the time is up.

The upper bound starts from :func:`~equivcheck.audit.deviation.certified_difference` per box,
is tightened by input splitting (low dimension) and by every epsilon the prover PROVED; the
lower bound is always the exact deviation at a point of the domain (from the witness search,
a split leaf's centre or a refutation). An UNKNOWN answer never moves a bound.
"""

from __future__ import annotations

import dataclasses
import heapq
import time
from fractions import Fraction

import numpy as np

from equivcheck.audit.deviation import (
    certified_difference,
    difference_network,
    differential_interval,
    exact_deviation,
)
from equivcheck.audit.results import CheckVerdict, DecidedBy, DeviationBound
from equivcheck.audit.witnesses import search_witnesses
from equivcheck.bounds.difference import same_shape
from equivcheck.bounds.methods import sound_bounds
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Domain
from equivcheck.core.exact import snap
from equivcheck.core.network import Affine, Layer, Network
from equivcheck.core.options import ProverOptions
from equivcheck.core.rational import float_up
from equivcheck.core.result import Counterexample, FoundBy, ProofResult, Verdict
from equivcheck.core.spec import Mode, Spec
from equivcheck.solve.prover import LoadedPair, prove_networks
from equivcheck.solve.witness import OrtRunner, build_counterexample

MIN_CALL_SECONDS = 1.0
CALL_SHARE = 1 / 8  # each prover call gets at most this share of the audit's time (or 1 s)
WITNESS_SHARE = 1 / 20  # the witness search gets this share (at least 0.5 s, a quarter of what is left)


def _slice_output(net: Network, j: int) -> Network:
    """``net`` with only output ``j`` (exact weights kept)."""
    last = net.layers[-1]
    a = last.affine
    aff = Affine(a.weight[j:j + 1], a.bias[j:j + 1],
                 None if a.exact_weight is None else a.exact_weight[j:j + 1],
                 None if a.exact_bias is None else a.exact_bias[j:j + 1])
    return net.with_layers(net.layers[:-1] + (Layer(aff, False, last.name),))


def _short(q: Fraction) -> Fraction:
    """A simple rational within 1e-6 relative of ``q``, for bisection points (any is valid)."""
    return Fraction(f"{float(q):.6g}")


def _bisection_point(lo: Fraction, hi: Fraction) -> Fraction | None:
    """A point strictly between ``lo`` and ``hi`` for the bisection: a short decimal near the
    midpoint, else the nearest float of the midpoint; None when no float lies strictly between
    (the bounds are at float resolution: refining further would only grow denominators)."""
    mid = (lo + hi) / 2
    for q in (_short(mid), Fraction(float(mid))):
        if lo < q < hi and Fraction(float(q)) == q:
            return q
    return None


class Auditor:
    """The state of one audit: per output the witnessed lower and certified upper bounds of the
    deviation (with their witnesses and how each bound was obtained), and the steps that move
    them (:meth:`initial_bounds`, :meth:`split_refine`, the ``check_*`` verdicts, the
    ``refine_*`` bisections). Every step keeps ``lower <= max deviation <= upper``.

    ``models`` are both loaded models (:func:`equivcheck.solve.prover.load_pair`); the prover
    is given their ONNX protos where there are some (its counterexamples are then re-checked in
    onnxruntime). ``options`` are those of every prover call but the time: each call gets a
    share of ``deadline`` (see :meth:`call_budget`).
    """

    def __init__(self, models: LoadedPair, domain: Domain, deadline: Deadline, gap: float,
                 options: ProverOptions) -> None:
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
        """Certified upper bounds per box (:func:`certified_difference`) and witnessed lower
        bounds from the witness search, within a small share of the time."""
        m = self.f.out_dim
        per_box_upper = np.zeros(m)
        names = []
        for box in self.domain.boxes:  # every box needs a bound: past the deadline, cheap ones
            ub, name = certified_difference(self.f, self.g, box, self.method, self.deadline)
            per_box_upper = np.maximum(per_box_upper, ub)
            names.append(name)
        for j in range(m):
            self.upper[j] = Fraction(float(per_box_upper[j]))  # exact value of the float bound
            self.upper_method[j] = names[0] if len(set(names)) == 1 else "sound bounds per box"
        self.total_upper = max(self.upper)
        self.total_method = self.upper_method[int(np.argmax(per_box_upper))]
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

    def split_refine(self, deadline: Deadline) -> None:
        """Tighten the certified bound by splitting the input box (branch and bound).

        The leaves always cover the domain (each split halves a float box at a float midpoint
        and both halves keep it), so the maximum of the leaves' sound bounds is a certified
        bound. The leaf with the largest bound is split along its widest side (relative to the
        domain). The float32 centre of every new leaf is a witness candidate. Stops when the
        gap target is met or ``deadline`` has passed.
        """
        same = same_shape(self.f, self.g)
        diff = None if same else difference_network(self.f, self.g)
        if not same and diff is None:
            return

        def leaf(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
            if same:
                dl, du = differential_interval(self.f, self.g, lo, hi, self.method, symbolic=True)
            else:
                out = sound_bounds(diff, lo, hi, self.method)[-1]
                dl, du = out.lower, out.upper
            return np.maximum(np.abs(dl), np.abs(du))

        heap: list = []
        count = 0
        widths = []
        for bi, box in enumerate(self.domain.boxes):
            lo, hi = box.lower_float(), box.upper_float()
            widths.append(np.where(hi > lo, hi - lo, 1.0))
            ub = leaf(lo, hi)
            heapq.heappush(heap, (-float(np.max(ub)), count, bi, lo, hi, ub))
            count += 1
        f32 = [box.float32_box() for box in self.domain.boxes]
        splits = 0
        while not deadline.expired():
            top = -heap[0][0]
            lower = float(self.total_lower)
            if top - lower <= self.gap * top or top == 0:
                break
            _, _, bi, lo, hi, _ = heapq.heappop(heap)
            k = int(np.argmax((hi - lo) / widths[bi]))
            mid = lo[k] + (hi[k] - lo[k]) / 2
            if not lo[k] < mid < hi[k]:
                heapq.heappush(heap, (-top, count, bi, lo, hi, leaf(lo, hi)))
                break  # cannot split further in float64
            for clo, chi in ((lo, np.where(np.arange(len(hi)) == k, mid, hi)),
                             (np.where(np.arange(len(lo)) == k, mid, lo), hi)):
                ub = leaf(clo, chi)
                count += 1
                heapq.heappush(heap, (-float(np.max(ub)), count, bi, clo, chi, ub))
                if f32[bi] is not None:
                    x = snap((clo + chi) / 2, *f32[bi])
                    dev = np.abs(self.f.evaluate(x) - self.g.evaluate(x))
                    if np.any(dev > np.array([float(v) for v in self.lower]) * (1 + 1e-12)):
                        self.offer_witness(x, bi)
            splits += 1
        if splits == 0:
            return
        per_output = np.max(np.vstack([entry[5] for entry in heap]), axis=0)
        how = f"sound bounds on {len(heap)} sub-boxes (input splitting)"
        for j in range(len(self.upper)):
            q = Fraction(float(per_output[j]))
            if q < self.upper[j]:
                self.upper[j] = q
                self.upper_method[j] = how
        if max(self.upper) < self.total_upper:
            self.total_upper = max(self.upper)
            self.total_method = how

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
        value = Fraction(float_up(value))  # certified upper bounds stay float values
        if value < self.total_upper:
            self.total_upper = value
            self.total_method = how
            for j in range(len(self.upper)):
                if value < self.upper[j]:
                    self.upper[j] = value
                    self.upper_method[j] = how

    # -- proofs
    def prove(self, mode: Mode, tolerance: Fraction | None, a: Network | None = None,
              b: Network | None = None) -> ProofResult:
        """:func:`~equivcheck.solve.prover.prove_networks` of ``a`` and ``b`` (the two models,
        their counterexamples re-checked in onnxruntime, unless given) on the audit's domain,
        within :meth:`call_budget`."""
        budget = self.call_budget()
        options = dataclasses.replace(self.options, timeout=budget.budget)
        models = (self.pa, self.pb) if a is None else None
        return prove_networks(self.f if a is None else a, self.g if b is None else b,
                              Spec.make(mode, tolerance), self.domain, options,
                              deadline=budget, onnx_models=models)

    def learn(self, res: ProofResult, tolerance: Fraction, output: int | None) -> None:
        """Move the bounds with what a PROVED / REFUTED epsilon answer implies."""
        if res.verdict is Verdict.PROVED:
            if output is None:
                self.set_total_upper(tolerance, f"proved at epsilon {float(tolerance):g}")
            elif tolerance < self.upper[output]:
                self.upper[output] = tolerance
                self.upper_method[output] = f"proved at epsilon {float(tolerance):g}"
                self.total_upper = min(self.total_upper, max(self.upper))
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
        self.learn(res, eps, None)
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

    def check_argmax(self, strict: CheckVerdict) -> CheckVerdict:
        t0 = time.monotonic()
        if strict.verdict is Verdict.PROVED:
            return CheckVerdict("argmax", Mode.ARGMAX, None, Verdict.PROVED,
                                "implied by strict equivalence", DecidedBy.PROVER)
        if self.out_of_time():
            return CheckVerdict("argmax", Mode.ARGMAX, None, Verdict.UNKNOWN,
                                "timeout: no time left", DecidedBy.PROVER)
        res = self.prove(Mode.ARGMAX, None)
        return CheckVerdict("argmax", Mode.ARGMAX, None, res.verdict, res.reason, DecidedBy.PROVER,
                            res.counterexample, time.monotonic() - t0)

    def refine_total(self) -> None:
        """Bisection of [lower, upper] with prove(mode="epsilon") until within the gap.

        Stops as soon as the bounds meet the target, on an UNKNOWN answer, at float resolution,
        or when no input deviates (lower 0): then only a strict proof could close the gap, and
        :meth:`check_strict` has already tried it."""
        while not self.out_of_time() and not self.overall().within(self.gap):
            lo, hi = self.total_lower, self.total_upper
            if lo == 0:
                self.notes.append("refinement stopped: no input deviates and strict equivalence "
                                  "was not proved, so the relative gap cannot close")
                return
            mid = _bisection_point(lo, hi)
            if mid is None:
                return  # upper and lower are adjacent floats
            res = self.prove(Mode.EPSILON, mid)
            if res.verdict is Verdict.UNKNOWN:
                self.notes.append(
                    f"refinement stopped: prove(epsilon={float(mid):g}) was unknown ({res.reason})"
                )
                return
            self.learn(res, mid, None)

    def refine_outputs(self) -> None:
        """Per-output bisection on single-output slices, largest gap first, while time lasts.

        An output no input deviates on (lower 0) is first checked for strict equality (PROVED
        closes it at 0, REFUTED gives a witness); bisection toward 0 could never close its
        relative gap."""
        m = self.f.out_dim
        if m == 1:
            return
        order = sorted(range(m), key=lambda j: -float(self.upper[j] - self.lower[j]))
        unknowns = 0  # two UNKNOWN answers in a row: the solver is out of its depth here
        for j in order:
            fa, gb = _slice_output(self.f, j), _slice_output(self.g, j)
            while not self.out_of_time() and unknowns < 2:
                lo, hi = self.lower[j], self.upper[j]
                if hi - lo <= self.gap * hi or hi == 0:
                    break
                mid = Fraction(0) if lo == 0 else _bisection_point(lo, hi)
                if mid is None:
                    break  # at float resolution
                if mid == 0:
                    res = self.prove(Mode.STRICT, None, fa, gb)
                else:
                    res = self.prove(Mode.EPSILON, mid, fa, gb)
                what = "strict" if mid == 0 else f"epsilon={float(mid):g}"
                if res.verdict is Verdict.UNKNOWN:
                    unknowns += 1
                    self.notes.append(f"output {j}: refinement stopped, prove({what}) was unknown "
                                      f"({res.reason})")
                    break
                unknowns = 0
                if res.verdict is Verdict.PROVED:
                    self.upper[j] = mid
                    self.upper_method[j] = ("proved strictly equal" if mid == 0
                                            else f"proved at epsilon {float(mid):g}")
                elif res.counterexample is not None:
                    self.offer_witness(_cex_point(res.counterexample), res.counterexample.box_index)
                    if self.lower[j] == 0:
                        break  # refuted, yet no exact witness: do not loop on strict
            if self.out_of_time() or unknowns >= 2:
                break
        new_total = max(self.upper)
        if new_total < self.total_upper:
            self.total_upper = new_total
            self.total_method = "per-output bounds"

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
