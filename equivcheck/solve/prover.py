"""The prover: for each box of the domain, bounds -> difference bounds -> falsify -> exact search.

:func:`prove_networks` is the core: two :class:`Network` s, a :class:`Spec`, a :class:`Domain`
and the :class:`ProverOptions` in, a :class:`ProofResult` out; nothing else is read (no cache,
no module-level setting), so the same call takes the same time whatever ran before it.
:func:`prove` is the thin loader the CLI, the pytest plugin and the audit call: model files or
protos, domain text and mode names become those objects.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from functools import cached_property
from typing import Any

import numpy as np

from equivcheck.bounds.interval import LayerBounds, StabilityCode
from equivcheck.bounds.methods import bounds_pair, sound_bounds
from equivcheck.canon import CanonResult, canonical_check
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Box, Domain
from equivcheck.core.exact import snap
from equivcheck.core.network import Network, same_widths
from equivcheck.core.options import BoundMethod, ProverOptions, SearchOutcome
from equivcheck.core.progress import ProgressFn
from equivcheck.core.quantized import is_quantized
from equivcheck.core.result import (
    BoxResult,
    Counterexample,
    FoundBy,
    LayerStability,
    ProofResult,
    Verdict,
)
from equivcheck.core.spec import Mode, Spec, batch_margin
from equivcheck.engine import Outcome, PairModel, check_box
from equivcheck.engine.units import split_inputs
from equivcheck.errors import InputError, ShapeMismatchError
from equivcheck.io.domains import parse_domain
from equivcheck.io.models import load_models
from equivcheck.io.onnx_import import ModelLike
from equivcheck.solve import falsify
from equivcheck.solve.encode import same_units, shared_prefix
from equivcheck.solve.padding import pad_to
from equivcheck.solve.quantized import QuantRun
from equivcheck.solve.search import (
    SAME_UNITS,
    Decision,
    decide,
    difference_check,
    search,
    solver_goes_first,
)
from equivcheck.solve.witness import OrtRunner, build_counterexample, exact_evaluation

NOT_EXAMINED = "timeout: the time limit was reached before this box was examined"
CANON_SHARE = 0.4  # of the time left, at most, for the canonical forms (a rewritten 256x6 MNIST
# pair takes two passes, 25 s on a loaded machine; a pair that differs stops at its first layer)
_DECIDED = {SearchOutcome.PROVED: Verdict.PROVED, SearchOutcome.REFUTED: Verdict.REFUTED,
            SearchOutcome.UNKNOWN: Verdict.UNKNOWN}


@dataclass(frozen=True, eq=False)
class KnownBounds:
    """Rigorous pre-activation bounds of every layer of network ``a`` and/or ``b`` (None: none
    known), valid on the *whole* domain, e.g. the bounds ``compress`` proved by its stability
    analysis.

    Soundness contract: every bound encloses the exact pre-activation values of the network as
    given to the prover, on every input of the domain. The prover intersects them with the bounds
    it computes itself, on every box and every part of a box.
    """

    a: tuple[LayerBounds, ...] | None = None
    b: tuple[LayerBounds, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("a", "b"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))

    def check(self, a: Network, b: Network) -> None:
        """An :class:`InputError` unless each network's bounds have one entry per layer, of the
        layer's width."""
        for tag, net, bounds in (("a", a, self.a), ("b", b, self.b)):
            if bounds is None:
                continue
            widths = [layer.out_dim for layer in net.layers]
            got = [(np.shape(lb.lower), np.shape(lb.upper)) for lb in bounds]
            if got != [((w,), (w,)) for w in widths]:
                raise InputError(
                    f"known bounds of network {tag} do not match its layers (widths {widths})"
                )


@dataclass(frozen=True, eq=False)
class LoadedPair:
    """Both models: the ONNX protos (None for a model given as a :class:`Network`; they are run
    in onnxruntime to re-check a counterexample) and the imported networks."""

    proto_a: Any
    proto_b: Any
    net_a: Network
    net_b: Network


def load_pair(a: ModelLike | Network, b: ModelLike | Network, spec: Spec | None = None,
              dim: int | None = None, quantized_ok: bool = False) -> LoadedPair:
    """Load two models (paths, ``onnx.ModelProto`` s, :class:`Network` s or torch modules, see
    :func:`equivcheck.io.models.load_models`; a Softmax/LogSoftmax head only when ``spec``
    accepts one; a quantized model only with ``quantized_ok``, else an
    :class:`~equivcheck.errors.UnsupportedModelError`) and check that their inputs and outputs
    have the same sizes (:class:`ShapeMismatchError` if not)."""
    ma, mb = load_models(a, b, spec, dim=dim, quantized_ok=quantized_ok)
    check_pair(ma.net, mb.net)
    return LoadedPair(ma.proto, mb.proto, ma.net, mb.net)


def check_pair(a: Network, b: Network) -> None:
    """A :class:`ShapeMismatchError` unless both networks take and give as many values."""
    if a.in_dim != b.in_dim:
        raise ShapeMismatchError(f"{a.source} takes {a.in_dim} inputs but {b.source} takes {b.in_dim}")
    if a.out_dim != b.out_dim:
        raise ShapeMismatchError(f"{a.source} has {a.out_dim} outputs but {b.source} has {b.out_dim}")


def stability_table(net: Network, tag: str, bounds: list[LayerBounds], shared: int) -> list[LayerStability]:
    """Per hidden layer: how many ReLUs the bounds found active, inactive, unstable."""
    rows = []
    for li, (layer, lb) in enumerate(zip(net.layers, bounds)):
        if not layer.relu:
            continue
        st = lb.stability()
        rows.append(
            LayerStability(
                network=tag,
                layer=li,
                width=layer.out_dim,
                active=int(np.sum(st == StabilityCode.ACTIVE)),
                inactive=int(np.sum(st == StabilityCode.INACTIVE)),
                unstable=int(np.sum(st == StabilityCode.UNSTABLE)),
                shared=li < shared,
            )
        )
    return rows


def prove(
    a: ModelLike | Network,
    b: ModelLike | Network,
    domain: str | Domain | None = None,
    mode: str = "strict",
    tolerance=None,
    norm: str = "linf",
    timeout: float | Deadline | None = None,
    falsify_seconds: float | None = None,
    seed: int | None = None,
    bounds: BoundMethod | str | None = None,
    *,
    confidence=None,
    logits: bool = False,
    options: ProverOptions | None = None,
    progress: ProgressFn | None = None,
) -> ProofResult:
    """Decide whether models ``a`` and ``b`` agree on every input of ``domain``.

    ``a``/``b`` are paths, ``onnx.ModelProto`` s or :class:`Network` s; ``domain`` is text
    (``"LO:HI"``, a ``.vnnlib`` or ``.json`` path), a :class:`Domain` or None (``[0, 1]`` on every
    input); ``mode``/``tolerance``/``norm``/``confidence`` (top1's DELTA)/``logits`` (compare
    the outputs before a Softmax/LogSoftmax head) make the :class:`Spec`. The choices of the check are
    ``options`` (default :class:`ProverOptions`), of which ``timeout``, ``falsify_seconds``,
    ``seed`` and ``bounds`` (the bound method: "interval", "symbolic", "lp" or "exact") override
    one field each when given; ``progress`` is called now and then during the search (see
    :mod:`equivcheck.core.progress`). ``timeout`` is seconds for the whole call, loading included, or a
    :class:`Deadline` handed down by a caller. Returns :func:`prove_networks`' result (see there
    for what each verdict promises); its ``seconds`` count the loading too.

    Raises an :class:`~equivcheck.errors.InputError` for bad models, domains or choices (an
    unknown bound method, a timeout that is not a positive finite number of seconds of at most
    ``MAX_TIMEOUT``).
    """
    start = time.monotonic()
    deadline = timeout if isinstance(timeout, Deadline) else None
    changes: dict[str, Any] = {}
    if timeout is not None:
        changes["timeout"] = deadline.budget if deadline is not None else timeout
    if falsify_seconds is not None:  # exactly this long (no share of the time left)
        changes.update(falsify_share=1.0, falsify_seconds=falsify_seconds)
    if seed is not None:
        changes["seed"] = seed
    if bounds is not None:
        changes["bound_method"] = BoundMethod.parse(bounds)
    opts = dataclasses.replace(options or ProverOptions(), **changes)
    if deadline is None:
        deadline = Deadline.start(opts.timeout)
    spec = Spec.make(mode, tolerance, norm, confidence, logits)
    models = load_pair(a, b, spec, dim=domain.dim if isinstance(domain, Domain) else None,
                       quantized_ok=True)
    dom = parse_domain(domain, models.net_a.in_dim)
    result = prove_networks(models.net_a, models.net_b, spec, dom, opts, deadline=deadline,
                            onnx_models=(models.proto_a, models.proto_b), progress=progress)
    return dataclasses.replace(result, seconds=time.monotonic() - start)


def prove_networks(
    a: Network,
    b: Network,
    spec: Spec,
    domain: Domain,
    options: ProverOptions,
    known_bounds: KnownBounds | None = None,
    *,
    deadline: Deadline | None = None,
    onnx_models: tuple[Any, Any] | None = None,
    progress: ProgressFn | None = None,
) -> ProofResult:
    """Decide whether networks ``a`` and ``b`` agree by ``spec`` on every input of ``domain``.

    The verdict of the returned :class:`ProofResult` is

    * PROVED: the negated spec is unsatisfiable over the reals on the stored weights (exactly),
      on every box of the domain;
    * REFUTED: a point of the domain violates the spec in exact arithmetic; the counterexample
      says whether it also shows in float64 and in onnxruntime (run on ``onnx_models``, the
      models ``a`` and ``b`` were imported from, when both are given);
    * UNKNOWN: the time ran out or the solver gave up; ``reason`` says which.

    First the canonical forms of both networks (:func:`equivcheck.canon.canonical_check`, exact):
    when they prove the spec, that is the verdict and ``reason`` names the rewrites recognised;
    otherwise each box goes through cheap difference bounds, then (``options.engine``) the
    branch-and-bound engine, with the solver on what the engine's bounds cannot close
    (:func:`equivcheck.solve.search.search`), else the falsifier and the solver on the box.
    ``progress`` gets the engine's reports.

    ``options.bound_method`` chooses the (always sound) bounds that classify ReLUs before
    encoding (AUTO: by the pair's shapes, see
    :meth:`~equivcheck.core.options.BoundMethod.resolve`); with EXACT each box gets an exact
    stability analysis of each network, unless
    ``known_bounds`` gives that network's bounds on the whole domain (which every method
    intersects with its own). The check ends by ``deadline`` when given (a caller's budget),
    else ``options.timeout`` seconds from now; once it has passed, the boxes not examined yet are
    UNKNOWN at once. Raises :class:`~equivcheck.errors.InputError` when the networks, the domain
    and the known bounds disagree on shapes.
    """
    start = time.monotonic()
    if deadline is None:
        deadline = Deadline.start(options.timeout)
    check_pair(a, b)
    if domain.dim != a.in_dim:
        raise ShapeMismatchError(f"domain {domain.source} has {domain.dim} inputs but the networks "
                                 f"take {a.in_dim}")
    quantized = is_quantized(a) or is_quantized(b)  # rounding: see equivcheck.solve.quantized
    if quantized and known_bounds is not None:
        raise InputError("known bounds are not taken for quantized networks")
    known = known_bounds or KnownBounds()
    asked = options  # (the result keeps the options asked for; ``bounds`` says what ran)
    if not quantized:
        known.check(a, b)  # and AUTO becomes the method this pair runs
        options = replace(options, bound_method=options.bound_method.resolve(same_widths(a, b)))
    box_results: list[BoxResult] = []
    cex: Counterexample | None = None
    # 0. canonical forms (exact): equal forms prove the pair; anything else searches as before
    canon = (canonical_check(a, b, spec, domain, deadline.sub(CANON_SHARE))
             if options.canonical and not quantized else CanonResult(False, "not asked for"))
    proto_a, proto_b = onnx_models if onnx_models is not None else (None, None)
    runner = OrtRunner() if proto_a is not None and proto_b is not None and not canon.proved else None
    if quantized:
        run = QuantRun(a, b, spec, options, deadline, proto_a, proto_b, runner, progress,
                       prove_networks)
    else:
        model = (PairModel.build(a, b) if options.engine and spec.mode not in (Mode.STRICT, Mode.TOP1)
                 and not canon.proved else None)  # the engine does not judge top1: the solver does
        run = _BoxRun(a, b, spec, options, known, deadline, proto_a, proto_b, runner, model, progress)
    if canon.proved:  # each box with its stability table, as a searched box has it
        box_results = [run.canonical_box(box, i, canon.reason) for i, box in enumerate(domain.boxes)]
    for index, box in enumerate(domain.boxes if not canon.proved else ()):
        if deadline.expired():  # no per-box work once the time is up
            box_results.extend(BoxResult(i, Verdict.UNKNOWN, NOT_EXAMINED)
                               for i in range(index, len(domain.boxes)))
            break
        res, found = run.prove_box(box, index)
        box_results.append(res)
        if found is not None:
            cex = found
            break
    verdict, reason = ((Verdict.PROVED, canon.reason) if canon.proved
                       else _summary(box_results, len(domain.boxes)))
    notes = tuple(a.notes) + tuple(b.notes) + ((canon.note,) if canon.note else ())
    notes += tuple(run.notes) if quantized else ()
    if domain.is_default:
        notes += ("no --domain given: checked the default domain [0, 1] on every input",)
    return ProofResult(
        verdict=verdict,
        reason=reason,
        model_a=a.source,
        model_b=b.source,
        spec=spec,
        domain=domain,
        counterexample=cex,
        boxes=tuple(box_results),
        seconds=time.monotonic() - start,
        notes=notes,
        options=asked,
        bounds=options.bound_method,
    )


def _summary(box_results: list[BoxResult], n_boxes: int) -> tuple[Verdict, str]:
    """The weakest verdict of the boxes and the reason of the first box that has it."""
    verdict = min(r.verdict for r in box_results)
    first = next(r for r in box_results if r.verdict == verdict)
    reason = first.reason if n_boxes == 1 else f"{first.reason} (box {first.index})"
    skipped = sum(1 for r in box_results if r.reason == NOT_EXAMINED)
    if skipped and first.reason != NOT_EXAMINED:
        reason += f"; {skipped} of {n_boxes} boxes not examined (time limit)"
    if verdict is Verdict.PROVED and n_boxes > 1:
        reason = f"proved on all {n_boxes} boxes"
    return verdict, reason


PADDED_SHARE = 0.5  # of the time left: the engine on b padded to a's shape (solve.padding)
PADDED = ("b's units are units of a, their weights equal or rounded: the engine bounds a - b with b "
          "padded to a's shape by zero units ({nodes} node(s), ||f - g|| <= {bound:.6g})")


@dataclass(frozen=True, eq=False)
class _BoxRun:
    """What every box of one check shares: the networks, the spec, the options, the known
    bounds, the deadline and the onnxruntime sessions."""

    a: Network
    b: Network
    spec: Spec
    options: ProverOptions
    known: KnownBounds
    deadline: Deadline
    proto_a: Any
    proto_b: Any
    runner: OrtRunner | None  # onnxruntime sessions of both protos (None: not both given)
    model: PairModel | None  # the engine's arrays of the pair (None: no engine)
    progress: ProgressFn | None

    @cached_property
    def padded_b(self) -> Network | None:
        """``b`` laid out in ``a``'s shape (:func:`equivcheck.solve.padding.pad_to`: the same
        function), for a pair of different widths the engine bounds; None otherwise."""
        if self.model is None or same_widths(self.a, self.b):
            return None
        return pad_to(self.a, self.b)

    # -- bounds
    def box_bounds(self, box: Box) -> tuple[list[LayerBounds], list[LayerBounds]]:
        """Rigorous bounds of both networks over a whole box of the domain, by the options'
        bound method (the costly ones take ``bound_share()`` of the time left per network; EXACT
        runs a stability analysis of a network whose bounds are not known), with the known
        bounds."""
        return bounds_pair(self.a, self.b, box.lower_float(), box.upper_float(),
                           self.options.bound_method, self.deadline, self.known.a, self.known.b,
                           share=self.options.bound_share(), box=box, splitter=split_inputs)

    def part_bounds(self, part: Box, deadline: Deadline) -> tuple[list[LayerBounds], list[LayerBounds]]:
        """Rigorous bounds of both networks over a part of a box (when the search splits it):
        the bound method's own, with no stability analysis, and the known bounds."""
        lo, hi = part.lower_float(), part.upper_float()
        method = self.options.bound_method
        return (sound_bounds(self.a, lo, hi, method, deadline, self.known.a),
                sound_bounds(self.b, lo, hi, method, deadline, self.known.b))

    # -- one box
    def canonical_box(self, box: Box, index: int, reason: str) -> BoxResult:
        """The PROVED result of a box the canonical forms settled, with the stability table of
        the options' bounds (no search)."""
        t0 = time.monotonic()
        ba, bb = self.box_bounds(box)
        k = shared_prefix(self.a, self.b)
        stab = tuple(stability_table(self.a, "a", ba, k) + stability_table(self.b, "b", bb, k))
        return BoxResult(index, Verdict.PROVED, reason, stab, 0, k, 0, 0, time.monotonic() - t0)

    def prove_box(self, box: Box, index: int) -> tuple[BoxResult, Counterexample | None]:
        """The verdict on one box, and the counterexample when it is REFUTED."""
        t0 = time.monotonic()
        a, b, spec, opts, deadline = self.a, self.b, self.spec, self.options, self.deadline
        ba, bb = self.box_bounds(box)
        k = shared_prefix(a, b)
        stab = tuple(stability_table(a, "a", ba, k) + stability_table(b, "b", bb, k))

        def done(verdict, reason, dec=None, cex=None):
            unstable, shared, parts = (dec.unstable, dec.shared_units, dec.parts) if dec is not None else (0, 0, 0)
            res = BoxResult(index, verdict, reason, stab, unstable, k, shared, parts, time.monotonic() - t0)
            return res, cex

        if k == len(a.layers) == len(b.layers):
            return done(Verdict.PROVED, "the networks are identical after canonicalisation (no search needed)")

        # 1. bounds on the difference of same-shaped networks may settle epsilon outright
        diff, eps = difference_check(a, b, spec, box, ba, bb, deadline)
        if eps is not None:
            return done(
                Verdict.PROVED,
                f"difference bounds: ||f(x) - g(x)|| <= {float(eps):.6g} on the whole box (no search needed)",
            )
        if deadline.expired():
            return done(Verdict.UNKNOWN, "timeout: the time ran out while computing bounds")

        # 2. a model against its copy with stable units removed: the same units (no search)
        if not same_widths(a, b):
            same, shared = same_units(a, b, ba, bb)
            if same:
                return done(Verdict.PROVED, SAME_UNITS.format(shared=shared),
                            Decision(SearchOutcome.PROVED, "", shared_units=shared))
            # ... or with its kept weights rounded (a file that cannot store them): the engine
            # on b padded to a's shape, a same-shaped pair, with part of the time
            padded = self.padded_b
            if padded is not None and not deadline.expired():
                res = check_box(a, padded, spec, box, deadline.sub(PADDED_SHARE), progress=self.progress)
                if res.outcome is Outcome.PROVED:
                    return done(Verdict.PROVED, PADDED.format(nodes=res.stats.nodes,
                                                              bound=res.stats.best_bound))
                if res.outcome is Outcome.REFUTED and res.point is not None:
                    found = self._confirmed(box, index, np.array(res.point), FoundBy.FALSIFIER)
                    if found is not None:
                        return done(Verdict.REFUTED, "counterexample found by the branch and bound "
                                    "(b padded to a's shape)", cex=found)
        # 3. the falsifier, when the solver comes first (no engine, or a pair the solver's
        # encoding suits: different shapes, few unstable ReLUs; see solve.search.search)
        engine = self.model is not None
        solver_first = not engine or solver_goes_first(self.model, stab, opts)
        if solver_first and opts.falsify:
            budget = deadline.sub(opts.falsify_share, seconds=opts.falsify_seconds)
            candidates = falsify.search(a, b, spec, box, deadline=budget, seed=opts.seed + index)
            for _, x in candidates[:opts.exact_checks]:
                if deadline.expired():
                    return done(Verdict.UNKNOWN, "timeout: the time ran out while confirming falsifier candidates")
                found = self._confirmed(box, index, x, FoundBy.FALSIFIER)
                if found is not None:
                    return done(Verdict.REFUTED, "counterexample found by sampling and local search", cex=found)
        # 4. the branch-and-bound engine, with the solver on what it cannot close; else the
        # exact query on the whole box
        dec = None
        if engine:
            dec = search(a, b, spec, box, ba, bb, diff, self.model, deadline, opts, self.part_bounds,
                         solver_first, self.progress)
        if dec is None:
            dec = decide(a, b, spec, box, ba, bb, diff, deadline)
        if dec.status is not SearchOutcome.REFUTED:
            return done(_DECIDED[dec.status], dec.reason, dec)
        if dec.engine_point:  # a float point the engine confirmed exactly
            found = self._confirmed(box, index, np.array([float(v) for v in dec.point]),
                                    FoundBy.FALSIFIER)
            if found is not None:
                return done(Verdict.REFUTED, dec.reason, dec, found)
        x_q = list(dec.point)
        cex = self._float_counterexample(box, index, x_q)
        if cex is None:
            # no float point near the solver's point shows the violation: report the exact point
            note = "the solver's point is rational; no float32 point near it shows the violation"
            cex = build_counterexample(a, b, spec, x_q, index, FoundBy.SOLVER, self.runner, self.proto_a,
                                       self.proto_b, exact_evaluation(a, b, spec, x_q), note, box=box)
        return done(Verdict.REFUTED, dec.reason, dec, cex)

    def _confirmed(self, box: Box, index: int, x: np.ndarray, found_by: FoundBy) -> Counterexample | None:
        """A counterexample at the float point ``x`` if it lies in the box and violates the spec
        in exact arithmetic, else None."""
        if not box.contains(x):
            return None
        ex = exact_evaluation(self.a, self.b, self.spec, [Fraction(float(v)) for v in x])
        if not ex.violated:
            return None
        return build_counterexample(self.a, self.b, self.spec, x, index, found_by, self.runner,
                                    self.proto_a, self.proto_b, ex, box=box)

    def _float_counterexample(self, box: Box, index: int, x_q: list[Fraction]) -> Counterexample | None:
        """A float counterexample inside the box at or near the solver's rational point, if one
        is found (float32 points when the box holds any, else float64 points)."""
        got = box.sample_box()
        if got is None:
            return None
        (lo, hi), precision = got
        x0 = snap(np.array([float(v) for v in x_q]), lo, hi, precision)
        starts = [x0]
        rng = np.random.default_rng(self.options.seed)
        width = hi - lo
        for scale in (1e-6, 1e-4, 1e-2):
            starts.extend(snap(x0 + rng.normal(0, 1, (4, len(x0))) * width * scale, lo, hi, precision))
        pts = np.array(starts)
        margins = batch_margin(self.spec, self.a.evaluate(pts), self.b.evaluate(pts))
        for i in np.argsort(-margins)[:self.options.exact_checks]:
            found = self._confirmed(box, index, pts[i], FoundBy.SOLVER)
            if found is not None:
                return found
        return None
