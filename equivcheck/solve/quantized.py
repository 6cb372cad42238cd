"""The prover for pairs with a quantized network (:mod:`equivcheck.core.quantized`).

Each box goes through, in order:

1. the identity check: two quantized networks with the same layers and the same quantizers
   compute the same function (PROVED at once);
2. the falsifier on the networks themselves (float evaluation with the rounding, climbing the
   float layers' gradient); a candidate counts only once exact evaluation confirms it;
3. the branch-and-bound engine on the float layers with each rounding as an interval bias of
   the next layer, bounded per node (:mod:`equivcheck.bounds.bias_enclosure`,
   :mod:`equivcheck.engine.rounding_noise`; epsilon and argmax mode): it holds the networks'
   exact values, so PROVED there is PROVED; the engine's counterexamples are points of the
   float layers, re-checked on the networks with their rounding;
4. the ordinary prover on the *enclosure* of the pair (:mod:`equivcheck.bounds.enclosure`:
   each rounding error an input in ``[-s/2, s/2]``), when it is small enough: PROVED there is
   PROVED; a violation at ``(x, e)`` is a counterexample only if the networks themselves
   violate the spec at ``x``;
5. the exact encoding with integer rounding variables
   (:func:`equivcheck.solve.quant_encode.decide_quantized`) for what is left, when the pair is
   small enough for it (it declines dynamically quantized networks, whose rounding is
   nonlinear; steps 1-4 take them, with each dynamic rounding error bounded by ``S/2``, ``S``
   a bound of the scale over the node or the box).

Anything still open is UNKNOWN, and the reason says which step gave up and why.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np

from equivcheck.bounds.bias_enclosure import bias_enclosure
from equivcheck.bounds.enclosure import EnclosedPair, enclose_pair
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Box, Domain
from equivcheck.core.options import ProverOptions, SearchOutcome
from equivcheck.core.progress import ProgressFn
from equivcheck.core.quantized import QuantizedNetwork, float_layers
from equivcheck.core.result import BoxResult, Counterexample, FoundBy, ProofResult, Verdict
from equivcheck.core.spec import Mode, Spec
from equivcheck.engine import Outcome, PairModel, check_box
from equivcheck.solve import falsify
from equivcheck.solve.quant_encode import MAX_INTEGER_VARIABLES, MAX_PARAMETERS, decide_quantized
from equivcheck.solve.quant_units import same_quantized_units
from equivcheck.solve.search import engine_options
from equivcheck.solve.witness import OrtRunner, build_counterexample, exact_evaluation

BIAS_SHARE = 0.6  # of the time left on a box, at most, for the engine with interval biases
EXACT_SHARE = 0.9  # of the time left, at most, for the exact encoding (the rest: the report)
ENCLOSURE_SHARE = 0.7  # of the time left on a box, at most, for the engine on the enclosure
# The engine's linear bounds are [units x inputs] arrays per node, and the enclosure has an input
# per rounded value: past this many floats (a CNN's 23,328-unit layer against 30,000 noise inputs
# would need 5.6 GB per node) the enclosure is not searched.
MAX_ENCLOSURE_FLOATS = 20_000_000


def identical(a, b) -> bool:
    """True when ``a`` and ``b`` are both quantized with the same layers and quantizers (or
    both plain with the same layers): the same function, exactly."""
    pa, pb = float_layers(a), float_layers(b)
    if len(pa.layers) != len(pb.layers) or type(a) is not type(b):
        return False
    same_layers = all(la.relu == lb.relu and la.affine.same_as(lb.affine)
                      for la, lb in zip(pa.layers, pb.layers))
    if not same_layers or not isinstance(a, QuantizedNetwork):
        return same_layers
    qa, qb = (a.input_quant, *a.quant), (b.input_quant, *b.quant)
    return all((x is None and y is None) or (x is not None and y is not None and x.same_as(y))
               for x, y in zip(qa, qb))


@dataclasses.dataclass(eq=False)
class QuantRun:
    """What every box of a check with a quantized network shares (the prover's per-box run,
    as :class:`equivcheck.solve.prover._BoxRun` is for float pairs). ``prove_plain`` is
    :func:`equivcheck.solve.prover.prove_networks` (passed in: it calls this class), run on the
    enclosures; ``notes`` collects what each step left open. The verdicts of
    :meth:`prove_box` promise what ``prove_networks`` promises (PROVED: exactly, on the stored
    weights and scales, rounding half to even; REFUTED: a point of the box that violates the
    spec in exact arithmetic, also run in float64 and onnxruntime)."""

    a: Any
    b: Any
    spec: Spec
    options: ProverOptions
    deadline: Deadline
    proto_a: Any
    proto_b: Any
    runner: OrtRunner | None
    progress: ProgressFn | None
    prove_plain: Callable[..., ProofResult]
    notes: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        for net in (self.a, self.b):
            if isinstance(net, QuantizedNetwork):
                kind = "dynamically quantized" if net.dynamic else "quantized"
                self.notes.append(f"{net.source} is {kind}: {net.quantized_units:,} values "
                                  f"rounded by {len(net.quantizers())} quantizers")

    def prove_box(self, box: Box, index: int) -> tuple[BoxResult, Counterexample | None]:
        """The verdict on one box (see the module doc), and the counterexample when REFUTED."""
        t0 = time.monotonic()
        a, b, spec, opts, deadline = self.a, self.b, self.spec, self.options, self.deadline

        def done(verdict, reason, cex=None, parts=0):
            return BoxResult(index, verdict, reason, parts=parts, seconds=time.monotonic() - t0), cex

        if identical(a, b):
            return done(Verdict.PROVED, "the networks have the same layers and the same "
                        "quantizers, exactly (no search needed)")
        same, shared, dead = same_quantized_units(a, b, box)
        if same:  # b is a with units removed that are dead on the box (equivcheck.solve.quant_units)
            return done(Verdict.PROVED, f"both networks compute their outputs through the same "
                        f"units ({shared} units of b are units of a, with the same quantizers; "
                        f"the {dead} others of a are 0 on the box after their ReLU and "
                        "quantizer); no search needed")
        # 1. the falsifier on the networks themselves
        if opts.falsify:
            budget = deadline.sub(opts.falsify_share, seconds=opts.falsify_seconds)
            for _, x in falsify.search(a, b, spec, box, deadline=budget, seed=opts.seed + index)[:opts.exact_checks]:
                found = self._confirmed(box, index, x, FoundBy.FALSIFIER)
                if found is not None:
                    return done(Verdict.REFUTED, "counterexample found by sampling and local "
                                "search (with the rounding)", found)
                if deadline.expired():
                    break
        if deadline.expired():
            return done(Verdict.UNKNOWN, "timeout: the time ran out in the falsifier")
        # 2. the engine on the float layers with the rounding as interval biases, then the
        # prover on the enclosure with the rounding errors as inputs (when it is small enough)
        open_reason = "no exact search was possible"
        noise = sum(net.quantized_units for net in (a, b) if isinstance(net, QuantizedNetwork))
        widest = max(la.out_dim for net in (a, b) for la in float_layers(net).layers)
        small = (widest + noise) * (a.in_dim + noise) <= MAX_ENCLOSURE_FLOATS
        params = sum(float_layers(n).num_parameters for n in (a, b))
        dynamic = any(isinstance(n, QuantizedNetwork) and n.dynamic for n in (a, b))
        exact_may = noise <= MAX_INTEGER_VARIABLES and params <= MAX_PARAMETERS and not dynamic
        if spec.mode in (Mode.EPSILON, Mode.ARGMAX) and opts.engine:
            # all the time when nothing after it can run (the enclosure too large, the pair too
            # large for the exact encoding)
            got = self._bias_run(box, index, BIAS_SHARE if small or exact_may else 1.0)
            if got is not None:
                return done(*got)
            open_reason = self.notes[-1]
        if not small:
            exact = self._exact(box, index)
            if exact is not None:
                return done(*exact[:2], exact[2])
            return done(Verdict.UNKNOWN, f"{open_reason}; the enclosure with the {noise:,} "
                        "rounding errors as inputs is too large to search, and the exact "
                        "encoding declined or timed out (see the notes)")
        pair = enclose_pair(a, b, box.lower_float(), box.upper_float())
        what = (f"the enclosure of the rounding ({pair.noise:,} rounding errors as inputs in "
                f"[-s/2, s/2], {pair.clip_units:,} clipping units)")
        sub = self._enclosure_run(pair, box, deadline.sub(ENCLOSURE_SHARE))
        if sub.verdict is Verdict.PROVED:
            return done(Verdict.PROVED, f"proved on {what}: {sub.reason}",
                        parts=sum(r.parts for r in sub.boxes))
        first_reason = open_reason
        open_reason = f"{open_reason}; {what} is {sub.verdict.label}: {sub.reason}"
        if sub.verdict is Verdict.REFUTED and sub.counterexample is not None:
            point = sub.counterexample.exact_input[:pair.in_dim]
            found = self._confirmed(box, index, point, FoundBy.FALSIFIER)
            if found is not None:
                return done(Verdict.REFUTED, "counterexample found on the enclosure of the "
                            "rounding and confirmed on the networks", found)
            open_reason = (f"{first_reason}; {what} has a counterexample, but the networks "
                           "themselves agree at its input (its rounding errors are not the "
                           "networks' own)")
        # 3. the exact encoding with integer rounding variables, for small pairs
        exact = self._exact(box, index)
        if exact is not None:
            return done(*exact[:2], exact[2])
        return done(Verdict.UNKNOWN, open_reason)

    def _bias_run(self, box: Box, index: int, share: float):
        """(verdict, reason, counterexample, nodes) from the engine on the
        :class:`~equivcheck.bounds.bias_enclosure.BiasEnclosure` of the pair, or None when it
        leaves the box open (its reason is kept in the notes)."""
        enc = bias_enclosure(self.a, self.b, box)
        model = PairModel.build(enc.f, enc.g, enc.radius, enc.rounding)
        res = check_box(enc.f, enc.g, self.spec, box, self.deadline.sub(share),
                        engine_options(self.options), model=model, progress=self.progress)
        nodes = res.stats.nodes
        what = (f"the float layers with the rounding as interval biases ({enc.rounded_layers} layers, "
                f"{enc.clip_units} clipping units)")
        if res.outcome is Outcome.PROVED:
            bound = (f", ||f - g|| <= {res.stats.best_bound:.6g}"
                     if self.spec.mode is Mode.EPSILON else "")
            return Verdict.PROVED, f"branch and bound on {what}: {res.reason}{bound}", None, nodes
        if res.outcome is Outcome.REFUTED:
            found = self._confirmed(box, index, np.array(res.point), FoundBy.FALSIFIER)
            if found is not None:
                return (Verdict.REFUTED, f"counterexample found by the engine's search ({nodes} "
                        "nodes) and confirmed with the rounding", found, nodes)
            self.notes.append(f"branch and bound on {what}: a point where the float layers "
                              "violate the spec, but the networks with their rounding do not")
            return None
        self.notes.append(f"branch and bound on {what}: {res.reason} ({nodes} nodes, best "
                          f"bound {res.stats.best_bound:.6g})")
        return None

    def _enclosure_run(self, pair: EnclosedPair, box: Box, deadline: Deadline) -> ProofResult:
        """The ordinary prover on the enclosures over ``box`` x the noise box (no canonical
        forms, no onnxruntime: its counterexamples are points of the enclosure)."""
        opts = dataclasses.replace(self.options, canonical=False)
        dom = Domain((pair.extend(box),), source="enclosure")
        return self.prove_plain(pair.a, pair.b, self.spec, dom, opts, deadline=deadline,
                                progress=self.progress)

    def _exact(self, box: Box, index: int):
        """(verdict, reason, counterexample) from the exact encoding with integer rounding
        variables, or None when it declines the pair or leaves it open (why goes to the notes)."""
        if self.deadline.expired():
            return None
        dec = decide_quantized(self.a, self.b, self.spec, box, self.deadline.sub(EXACT_SHARE))
        what = "exact encoding with integer rounding variables"
        if dec.status is SearchOutcome.PROVED:
            return Verdict.PROVED, f"{what}: {dec.reason}", None
        if dec.status is SearchOutcome.REFUTED:
            found = self._confirmed(box, index, list(dec.point), FoundBy.SOLVER)
            if found is not None:
                return Verdict.REFUTED, f"{what}: {dec.reason}", found
        self.notes.append(f"{what}: {dec.reason}")
        return None

    def _confirmed(self, box: Box, index: int, x, found_by: FoundBy) -> Counterexample | None:
        """A counterexample at ``x`` (floats or Fractions) if it lies in the box and violates
        the spec in exact arithmetic, else None."""
        x_q = [Fraction(v) if not isinstance(v, Fraction) else v for v in
               (x.tolist() if isinstance(x, np.ndarray) else x)]
        if not box.contains(x_q):
            return None
        ex = exact_evaluation(self.a, self.b, self.spec, x_q)
        if not ex.violated:
            return None
        return build_counterexample(self.a, self.b, self.spec, x_q, index, found_by, self.runner,
                                    self.proto_a, self.proto_b, ex, box=box)
