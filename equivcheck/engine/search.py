"""Branch and bound over one box: :func:`check_box`.

The frontier is a set of nodes: float sub-boxes (arrays ``[F, n]``) and, with ReLU splitting,
fixed ReLU phases (:mod:`equivcheck.engine.branch`), carried in the bounds each node inherits
from its parent. The nodes' union covers the float enclosure of the exact box, so proving every
leaf proves the box. Each round takes up to ``batch`` nodes, worst first (the ones whose bounds
violate the spec most), and bounds them in one call, as a cascade: forward symbolic bounds for all
of them, then back-substitution (:func:`~equivcheck.engine.bounds.pair_bounds` with
``refine="all"``) for those the cheap bounds did not close, then (epsilon mode) the same with
optimised lower slopes (:mod:`equivcheck.engine.alpha`, ``EngineOptions.alpha_steps``) for those
whose bound is still open but within ``ALPHA_REACH`` times the tolerance (measured there, see
``alpha_steps``). Closed nodes leave; the others are split, and the worst few are handed to the
falsifier (centre, the vertex the bound points to, gradient steps). A candidate counterexample
is confirmed in exact arithmetic before it is returned.

How a node is split depends on the input dimension (``EngineOptions.branch``):

* few inputs (ACAS Xu, 5): bisect the input whose two halves get the smallest forward bounds
  (look-ahead: 2n forward bounds per box, ~10 ms per box instead of ~6). Measured against the
  bisection of the input the worst bound is most sensitive to (width times its coefficient), ACAS
  Xu vs float16, prop_1, epsilon 0.05, 10 s: nodes N1,1 295 -> 169, N1,9 309 -> 141, N5,4 1,099
  -> 517; N2,3 and N4,2 proved (were undecided), N3,5 undecided (was proved in 7.9 s); prop_3
  N4,2 271 -> 111, N5,9 (0.01) 85 -> 11; 5%-pruned prop_1 epsilon 0.5: N1,1 615 -> 157, N3,5
  proved with 491 (undecided with 3,709);
* many inputs (MNIST, 784): fix the phase of one ReLU (:mod:`equivcheck.engine.branch`), with
  the forward pass in interval arithmetic and every hidden difference back-substituted. Measured
  on MNIST 256x2 vs its 10%-pruned copy, prop_0: input bisection bounded 73 boxes in 30 s
  (0.4 s each, the symbolic ``[256, 784, B]`` arrays were 2/3 of it) without moving the bound;
  the interval forward pass makes a node ~13x cheaper (795 nodes in 30 s).
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np
from threadpoolctl import threadpool_limits

from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Box
from equivcheck.core.network import Network
from equivcheck.core.progress import Progress, ProgressFn, report
from equivcheck.core.spec import Spec
from equivcheck.engine.bounds import Boxes, pair_bounds
from equivcheck.engine.branch import Layout, empty_nodes, relu_children
from equivcheck.engine.falsify import Falsifier
from equivcheck.engine.forward import bisect
from equivcheck.engine.frontier import handed, no_prior, pack, phase_rows, unpack
from equivcheck.engine.model import PairModel
from equivcheck.engine.objective import Judgement, judge, tolerance_down


class Outcome(str, enum.Enum):
    PROVED = "proved"  # the bounds prove the spec on every point of the box (exact weights)
    REFUTED = "refuted"  # ``point`` violates the spec in exact arithmetic and lies in the box
    UNKNOWN = "unknown"  # time or node limit, or boxes too small to split further


@dataclass(frozen=True)
class EngineOptions:
    """Budgets and knobs of the search (every one has its single default here)."""

    batch: int = 256  # boxes bounded per round (one numpy call)
    max_nodes: int = 1_000_000  # nodes bounded in all, then UNKNOWN
    refine: str = "cascade"  # "none" | "output" | "all" | "cascade": forward, then "all" where
    # the forward bounds did not close the box | "cascade3": forward, "output", then "all"
    split: str = "auto"  # "lookahead": the input whose halves get the smallest forward
    # bounds (2n forward bounds per split; up to 16 inputs, else "coef"); "coef": width x
    # |coefficient| of the worst bound; "width": the widest (relative to the box); "auto":
    # "lookahead" with a difference stream (same-shaped pairs: 1.5-10x fewer nodes on ACAS Xu
    # copies), else "coef" (two separate streams, e.g. ACAS N1,1 vs N1,2 on prop_3 at 0.1146:
    # 2755 nodes in 3.2 s, against 4315 nodes in 10.8 s with "lookahead")
    max_residue: int = 64  # boxes left to exact reasoning before giving up (UNKNOWN)
    inherit: bool = True  # children start from their parent's bounds of every layer (measured
    # about neutral on ACAS Xu: fewer boxes on some instances, more on others; frontier memory)
    hidden_diff: bool = True  # back-substitute hidden differences too (not only the outputs'):
    # with the look-ahead split, 1.5-10x fewer nodes on ACAS Xu (see engine.bounds)
    symbolic: bool | None = None  # forward symbolic bounds (else interval arithmetic before the
    # back-substitution); None: not when branching on ReLUs (their [units, inputs, nodes] arrays
    # cost 2/3 of a round on MNIST, for bounds the back-substitution replaces)
    branch: str = "auto"  # "input": bisect inputs; "relu": fix ReLU phases (engine.branch);
    # "auto": "relu" above RELU_INPUTS inputs, else "input"
    falsify: bool = True  # look for counterexamples (off: the engine can prove, never refute)
    falsify_boxes: int = 256  # worst open boxes handed to the falsifier per round (with input
    # splitting; ReLU splitting hands it one, as its nodes share the box). Every open box of a
    # round, as a rule: violations can sit in slivers that no bound-worst box holds. ACAS Xu
    # N4,6 vs its 5%-pruned copy over prop_1, epsilon 0.05 (violated on 9e-6 of the box: theta
    # within 0.01 of 0, v_int within 0.015 of its bound): 8 boxes, UNKNOWN after 10 s (2,163
    # nodes); 64, refuted in 2.8 s; 256, in 2.0 s. The proofs of 7 float16 copies over prop_1
    # took 10.9 s in all with 256, 11.1 s with 8 (same nodes): the points are cheap beside
    # the bounds
    falsify_steps: int = 4  # gradient steps per round
    alpha_steps: int = 4  # optimised-slope steps (engine.alpha) on the nodes the plain
    # back-substitution did not close but came within ALPHA_REACH x the tolerance (0: none).
    # Measured (one worker, CPU seconds; benchmarks/engine_*.py): MNIST 256x4 vs float16, prop_0,
    # 0.05: proved in 41 nodes, 3.0 s (undecided before: 178 nodes, 8.5 s, bound 0.081; the
    # root bound goes 0.086 -> 0.051); ACAS float16 prop_1 0.05: N3,5 691 -> 359 nodes (5.4 ->
    # 4.6 s), N4,2 649 -> 413 (5.2 -> 4.7 s), N2,3 255 -> 151 (1.8 -> 1.9 s). On every open node
    # (no reach) ACAS cost 3-10x per node for 1.5-2x fewer nodes; 2 steps instead of 4, or a
    # reach of 12, did no better. Pairs bounded as two separate streams (no difference stream)
    # never use it: the audit of ACAS N1,1 vs N1,2 on prop_3 reached a 4.9% gap in 6.2 CPU
    # seconds (3,398 nodes) without it, 18.6% (511 nodes) with it
    root_samples: int = 64  # random points in the whole box once the first round leaves it open
    root_steps: int = 20
    seed: int = 0


@dataclass(frozen=True)
class EngineStats:
    nodes: int  # nodes (boxes, or boxes with fixed ReLU phases) bounded
    rounds: int
    max_depth: int  # most splits from the root box to a bounded box
    open_nodes: int  # nodes left open (and residue boxes) when the search stopped
    best_bound: float  # rigorous upper bound of the spec's measure over the whole box
    witness: float  # best float margin seen at a point (> 0 for a violation)
    seconds: float
    exact_checks: int  # candidates evaluated in exact arithmetic


@dataclass(frozen=True)
class EngineResult:
    """What :func:`check_box` found.

    ``point`` (REFUTED) is a float point of the box where the spec is violated in exact
    arithmetic (``exact_margin`` > 0, or argmax classes differ); ``margin`` its float64 margin.
    The caller re-checks it (exactly, and in onnxruntime) before reporting it. ``best_bound``
    in ``stats``: epsilon and strict mode, an upper bound of ``||f(x) - g(x)||`` over the box
    (so the spec holds for any tolerance at or above it); argmax, the worst pairwise bound
    (< 0 proves).
    """

    outcome: Outcome
    reason: str
    stats: EngineStats
    point: tuple[float, ...] | None = None
    margin: float | None = None
    exact_margin: Fraction | None = None
    extra: dict = field(default_factory=dict)  # "residue": [(lo, hi, measure)] float boxes
    # (enclosing parts of the box) the bounds could not close by splitting: for the solver


def check_box(f: Network, g: Network, spec: Spec, box: Box, deadline: Deadline | None = None,
              options: EngineOptions = EngineOptions(), model: PairModel | None = None,
              progress: ProgressFn | None = None, *,
              start: tuple | None = None, hand_back: bool = False, share=None) -> EngineResult:
    """Decide ``spec`` for ``f`` and ``g`` on ``box`` by branch and bound (see the module doc).

    ``progress`` is called about once per round (stage "search", unit "nodes"). BLAS runs on
    one thread during the call: the engine's products are many small matrices, which OpenBLAS
    threads made 20-50x slower on a loaded 2-core machine.

    ``start``: nodes inside ``box``'s float enclosure to search instead of the whole box,
    float boxes ``(lo [F, n], hi [F, n])`` or, with ReLU splitting, boxes with ReLU phases
    ``(lo, hi, phases[, rows])`` (:mod:`equivcheck.engine.frontier`): PROVED then holds on their union
    (the falsifier still samples ``box``, so a REFUTED point lies in ``box``). With
    ``hand_back``, an UNKNOWN for time or nodes carries ``extra["frontier"]``: every open node
    (and the residue's boxes) in that form, whose union with the nodes proved covers what was
    searched, so a later call with them as ``start`` goes on where this one stopped (asked
    for, as ReLU-split nodes carry their inherited bounds: 25-50 kB a node on MNIST), and
    ``extra["closed_bound"]``, the worst bound of a node proved (-inf: none), which with the
    later calls' bounds bounds the measure over everything searched.

    ``share`` (another worker's search may want nodes: :mod:`equivcheck.engine.parallel`): an
    object whose ``wanted()`` says, before each round, whether to give nodes away now, and whose
    ``give(nodes)`` takes them in ``start``'s form. Every other open node (by priority) is
    given and no longer searched here: PROVED then holds on the nodes kept, and the caller must
    have the given ones searched (a REFUTED point still lies in ``box``)."""
    with threadpool_limits(limits=1, user_api="blas"):
        return _check_box(f, g, spec, box, deadline, options, model, progress, start, hand_back,
                          share)


def _check_box(f: Network, g: Network, spec: Spec, box: Box, deadline: Deadline | None,
               options: EngineOptions, model: PairModel | None,
               progress: ProgressFn | None, start=None, hand_back=False, share=None
               ) -> EngineResult:
    t0 = time.monotonic()
    deadline = deadline or Deadline.start(3600.0)
    model = model or PairModel.build(f, g)
    relu = options.branch == "relu" or (options.branch == "auto" and model.n_in > RELU_INPUTS)
    if options.symbolic is None:
        options = replace(options, symbolic=not relu)
    if options.split == "auto":
        options = replace(options, split="lookahead" if model.same_shape else "coef")
    if not model.same_shape:  # two separate streams: optimised slopes measured not to pay
        options = replace(options, alpha_steps=0)
    layout = Layout(model)
    eps_down = tolerance_down(spec)
    fals = Falsifier(f, g, spec, box, options.seed)
    prior = None  # [F, Q] bounds inherited from the parents (None: not kept)
    if start is None:
        lo, hi = box.lower_float()[None, :], box.upper_float()[None, :]
    else:
        lo, hi = np.array(start[0], dtype=np.float64), np.array(start[1], dtype=np.float64)
        if len(start) > 2:  # nodes with ReLU phases: the phases go into their bound rows
            if not relu:
                raise ValueError("check_box: start nodes with ReLU phases need ReLU splitting")
            rows = start[3] if len(start) > 3 else no_prior(len(lo), model)
            prior = phase_rows(start[2], np.array(rows, dtype=np.float64), layout)
    depth = np.zeros(len(lo), dtype=np.int64)
    prio = np.full(len(lo), np.inf)
    fmeas = np.full(len(lo), np.inf)  # the parent's measure of each frontier box (a valid bound)
    closed_measure = -np.inf
    nodes = rounds = max_depth = 0
    residue: list = []  # (lo, hi, measure) of boxes left to exact reasoning
    cascade: dict = {}  # how well the cheap bounds do (see _bound)
    # boxes per round: at most ``batch``, and few enough that the linear bounds
    # ([units, inputs, boxes] arrays) stay near BATCH_FLOATS floats
    batch = max(1, min(options.batch, BATCH_FLOATS // (model.width * (model.n_in + 1))))
    per_node = None  # seconds per node of the last round (a round must fit in the time left)

    def residue_reason() -> str:
        worst = max(m for _, _, m in residue)
        return (f"{len(residue)} box(es) the bounds cannot close by splitting (too small, or the "
                f"bound {worst:.6g} misses by rounding only): exact reasoning must settle them")

    def stats(in_flight: float = -np.inf) -> EngineStats:
        """``in_flight``: the worst measure of open boxes taken out of the frontier."""
        frontier = float(fmeas.max()) if len(fmeas) else -np.inf
        best = max([closed_measure, frontier, in_flight] + [m for _, _, m in residue])
        return EngineStats(nodes, rounds, max_depth, len(lo) + len(residue), float(best),
                           float(fals.best_margin), time.monotonic() - t0, fals.checked)

    def stopped(reason: str) -> EngineResult:
        """UNKNOWN for time or nodes, with every open node (equivcheck.engine.frontier)."""
        if not hand_back:
            return EngineResult(Outcome.UNKNOWN, reason, stats())
        rlo = np.array([r[0] for r in residue]).reshape(-1, lo.shape[1])
        rhi = np.array([r[1] for r in residue]).reshape(-1, lo.shape[1])
        # (residue boxes, if any, with no phase under ReLU splitting: a sound superset)
        front = tuple(np.concatenate(pair) for pair in zip(
            handed(lo, hi, prior, relu, layout), handed(rlo, rhi, None, relu, layout)))
        return EngineResult(Outcome.UNKNOWN, reason, stats(),
                            extra={"frontier": front, "closed_bound": closed_measure})

    def refuted(found) -> EngineResult:
        p, m, em = found
        return EngineResult(Outcome.REFUTED, "counterexample confirmed in exact arithmetic",
                            stats(), tuple(float(v) for v in p), m, em)

    # falsification on the whole box (cheap, finds the easy violations) once the first round
    # has left the root open: a root its bounds close holds no counterexample to look for
    # (not again on resumed ReLU-split nodes: their box is the part's, which the per-round
    # falsification samples, and the search that handed them back sampled it already)
    root_pending = options.falsify and fals.sample is not None and prior is None

    while len(lo):
        if deadline.expired():
            return stopped("timeout: the time limit was reached")
        if nodes >= options.max_nodes:
            return stopped(f"node limit: {nodes} nodes bounded")
        report(progress, Progress("search", nodes, len(lo), "nodes", stats().best_bound,
                                  deadline.remaining()))
        if share is not None and len(lo) >= 2 and (
                per_node is None or deadline.remaining() > 3 * per_node * min(len(lo), batch)
        ) and share.wanted():  # (not when the time left is a round or two: pointless)
            give = np.zeros(len(lo), bool)  # every other node by priority: an even share
            give[np.argsort(-prio, kind="stable")[1::2]] = True
            share.give(handed(lo[give], hi[give], None if prior is None else prior[give], relu,
                              layout))
            lo, hi, depth, prio, fmeas = lo[~give], hi[~give], depth[~give], prio[~give], fmeas[~give]
            prior = None if prior is None else prior[~give]
        k = min(len(lo), batch)
        if per_node is not None:  # no round that the time left cannot pay for (hard deadline)
            fit = int(deadline.remaining() / per_node)
            if fit < 1:
                return stopped("timeout: the time limit was reached (no time left for another "
                               "round)")
            k = min(k, fit)
        if k < len(lo):
            sel = np.argpartition(-prio, k - 1)[:k]
            rest = np.ones(len(lo), bool)
            rest[sel] = False
        else:
            sel, rest = np.arange(len(lo)), np.zeros(len(lo), bool)
        blo, bhi, bdepth = lo[sel], hi[sel], depth[sel]
        bprior = None if prior is None else prior[sel]
        lo, hi, depth, prio, fmeas = lo[rest], hi[rest], depth[rest], prio[rest], fmeas[rest]
        prior = None if prior is None else prior[rest]
        rounds += 1
        nodes += k
        max_depth = max(max_depth, int(bdepth.max()))
        t_round = time.monotonic()
        jd, packed = _bound(model, spec, blo, bhi, eps_down, options, bprior, cascade, deadline)
        took = time.monotonic() - t_round
        per_node = took / k
        if took > 0.25 * deadline.remaining():
            batch = max(1, batch // 2)  # smaller rounds near the deadline (less overshoot)
        closed = jd.closed
        if relu:  # contradicting bounds: no point of the box has the node's phases
            empty = empty_nodes(packed, layout)
            closed = closed | empty
            if (jd.closed & ~empty).any():
                closed_measure = max(closed_measure, float(jd.measure[jd.closed & ~empty].max()))
        elif closed.any():
            closed_measure = max(closed_measure, float(jd.measure[closed].max()))
        keep = ~closed
        if not keep.any():
            continue
        blo, bhi, bdepth, score, coef, meas = (blo[keep], bhi[keep], bdepth[keep], jd.score[keep],
                                              jd.coef[keep], jd.measure[keep])
        packed = packed[keep]
        if root_pending and not deadline.expired():  # the root is open: random points and
            root_pending = False  # climbs over the whole box
            slo, shi = fals.sample
            found = fals.confirm(fals.candidates(slo[None], shi[None], None, options.root_steps,
                                                 options.root_samples))
            if found is not None:
                lo, fmeas = np.concatenate([lo, blo]), np.concatenate([fmeas, meas])
                return refuted(found)
        # falsify on the worst open nodes (one box when they all share it)
        if options.falsify and options.falsify_boxes and fals.sample is not None:
            w = np.argsort(-score)[: 1 if relu else options.falsify_boxes]
            found = fals.confirm(fals.candidates(blo[w], bhi[w], coef[w], options.falsify_steps))
            if found is not None:
                lo, fmeas = np.concatenate([lo, blo]), np.concatenate([fmeas, meas])
                return refuted(found)
        if relu:
            ok, parent, children = relu_children(packed, layout)
            ok &= score > RESIDUAL * (1.0 + np.abs(meas))
            if not ok.all():  # every phase fixed (or a tie): the whole box goes to exact reasoning
                if not residue:
                    residue.append((box.lower_float(), box.upper_float(), float(meas[~ok].max())))
                else:
                    residue[0] = residue[0][:2] + (max(residue[0][2], float(meas[~ok].max())),)
                return EngineResult(Outcome.UNKNOWN, residue_reason(), stats(float(meas.max())),
                                    extra={"residue": residue})
            if prior is None:
                prior = no_prior(len(lo), model)
            if (len(lo) + len(children)) * children.shape[1] > MAX_PRIOR_FLOATS:
                return EngineResult(Outcome.UNKNOWN, "memory: the frontier of ReLU phases is full",
                                    stats(float(meas.max())))
            twice = np.concatenate
            lo, hi = twice([lo, blo[parent]]), twice([hi, bhi[parent]])
            depth = twice([depth, bdepth[parent] + 1])
            prio, fmeas = twice([prio, score[parent]]), twice([fmeas, meas[parent]])
            prior = twice([prior, children])
            continue
        lo, hi, depth, prio, fmeas, prior, stop = _split_inputs(
            model, spec, box, options, eps_down, (lo, hi, depth, prio, fmeas, prior),
            (blo, bhi, bdepth, score, coef, meas, packed), residue)
        if stop:
            return EngineResult(Outcome.UNKNOWN, residue_reason(), stats(float(meas.max())),
                                extra={"residue": residue})
    if residue:
        return EngineResult(Outcome.UNKNOWN, residue_reason(), stats(), extra={"residue": residue})
    return EngineResult(Outcome.PROVED, f"proved by bounds on {nodes} node(s)", stats())


def _split_inputs(model: PairModel, spec: Spec, box: Box, options: EngineOptions, eps_down: float,
                  frontier, batch, residue: list):
    """Bisect each open box of ``batch`` on the input its worst bound is most sensitive to
    (width times the magnitude of its input coefficient) and add the halves to ``frontier``;
    boxes that cannot be split, or whose bound misses by rounding only, go to ``residue``.
    Returns the new frontier arrays and whether the residue is full."""
    lo, hi, depth, prio, fmeas, prior = frontier
    blo, bhi, bdepth, score, coef, meas, packed = batch
    width = bhi - blo
    rel = width / np.maximum(hi_span(box), 1e-300)
    sens = rel if options.split == "width" else width * np.abs(coef)
    mid = 0.5 * blo + 0.5 * bhi
    if options.split == "lookahead" and model.n_in <= 16:
        sens = _lookahead(model, spec, blo, bhi, mid, eps_down)
    splittable = (mid > blo) & (mid < bhi)
    sens = np.where(splittable, sens, -1.0)
    flat = sens.max(axis=1) <= 0.0  # the bound is flat in every input: the widest
    if flat.any():
        sens[flat] = np.where(splittable, rel, -1.0)[flat]
    dim = sens.argmax(axis=1)
    # residue: boxes that cannot be split, or whose bound misses by rounding only (an
    # exact tie with the tolerance, say): splitting will not close them
    ok = splittable[np.arange(len(dim)), dim] & (score > RESIDUAL * (1.0 + np.abs(meas)))
    if not ok.all():
        residue.extend(zip(blo[~ok], bhi[~ok], meas[~ok]))
        if len(residue) > options.max_residue:
            return lo, hi, depth, prio, fmeas, prior, True
        blo, bhi, bdepth, score, dim, mid = blo[ok], bhi[ok], bdepth[ok], score[ok], dim[ok], mid[ok]
        meas = meas[ok]
        packed = packed[ok]
    clo, chi = bisect(blo, bhi, dim, mid)
    lo, hi = np.concatenate([lo, clo]), np.concatenate([hi, chi])
    depth = np.concatenate([depth, bdepth + 1, bdepth + 1])
    prio = np.concatenate([prio, score, score])
    fmeas = np.concatenate([fmeas, meas, meas])
    if options.inherit and (len(lo) * packed.shape[1] <= MAX_PRIOR_FLOATS):
        if prior is None:  # boxes already in the frontier have nothing to inherit
            prior = no_prior(len(lo) - 2 * len(packed), model)
        prior = np.concatenate([prior, packed, packed])
    else:
        prior = None
    return lo, hi, depth, prio, fmeas, prior, False


RELU_INPUTS = 24  # above this many inputs the engine branches on ReLU phases (engine.branch)
BATCH_FLOATS = 4_000_000
CHEAP_RATE = 0.25  # below this share of boxes closed by forward bounds, go straight to "all"
ALPHA_REACH = 4.0  # optimised slopes on nodes whose plain bound is at most this x the tolerance
# (they tighten a bound 1.5-3x: beyond that, splitting is cheaper; epsilon mode only)
RESIDUAL = 1e-11  # a bound above the tolerance by less than this (relative) is rounding only

MAX_PRIOR_FLOATS = 40_000_000  # frontier memory for inherited bounds (320 MB), then none


def _lookahead(model: PairModel, spec: Spec, lo, hi, mid, eps_down: float) -> np.ndarray:
    """``[K, n]`` split scores in (0, 1], higher for the input whose halves get the smallest
    forward bounds."""
    k, n = lo.shape
    clo = np.repeat(lo[:, None, None, :], 2, axis=2).repeat(n, axis=1)  # [K, n, 2, n]
    chi = np.repeat(hi[:, None, None, :], 2, axis=2).repeat(n, axis=1)
    d = np.arange(n)
    chi[:, d, 0, d] = mid
    clo[:, d, 1, d] = mid
    # (without the parent's bounds: they would hide the difference between the candidates)
    pb = pair_bounds(model, Boxes(clo.reshape(-1, n), chi.reshape(-1, n), model.width), "none")
    jd = judge(spec, pb, eps_down)
    excess = np.maximum(jd.measure - eps_down, 0.0).reshape(k, n, 2).sum(axis=2)
    return 1.0 / (1.0 + excess)


def hi_span(box: Box) -> np.ndarray:
    return box.upper_float() - box.lower_float()


def _bound(model: PairModel, spec: Spec, lo, hi, eps_down: float, options: EngineOptions, prior,
           state: dict, deadline: Deadline | None = None):
    """Judge a batch of boxes as a cascade of ever dearer bounds, each on the boxes the previous
    one did not close: with "cascade", forward bounds, then back-substitution ("all"); then,
    with ``alpha_steps``, back-substitution with optimised slopes (:mod:`equivcheck.engine.alpha`)
    starting from the bounds just computed. Returns the judgement and the bounds of every layer
    (packed, for the children)."""
    refine, hidden, sym = options.refine, options.hidden_diff, options.symbolic
    if refine.startswith("cascade") and not sym:
        refine = "all"  # interval bounds alone close nothing
    if refine.startswith("cascade"):
        stages = ("none", "output", "all") if refine == "cascade3" else ("none", "all")
        # the cheap stage is skipped while it closes few boxes (tried again every few rounds)
        state["round"] = state.get("round", 0) + 1
        if state["round"] == 1 and len(lo) == 1:
            # the root alone: forward bounds seldom close it (ACAS Xu vs float16, props 3/4,
            # 0.05: 1 root of 20, at a third of the cost of back-substitution, which closes 15
            # of them, and 4 more with optimised slopes)
            stages = stages[1:]
        elif state.get("cheap_rate", 1.0) < CHEAP_RATE and state["round"] % 8:
            stages = stages[1:]
    else:
        stages = (refine,)
    if options.alpha_steps and refine != "none":
        stages = stages + ("alpha",)
    closed = score = measure = coef = packed = None
    todo = np.arange(len(lo))
    for stage in stages:
        if stage == "alpha":  # from the bounds the last stage found on these boxes
            # only where the plain bound is near the tolerance: optimised slopes tighten it
            # about 3x at 3-6x the cost, splitting is cheaper for the others
            todo = todo[measure[todo] <= ALPHA_REACH * eps_down]
            if not len(todo):
                break
            sub = unpack(packed[todo], model)
            pb = pair_bounds(model, Boxes(lo[todo], hi[todo], model.width), "all", sub, hidden,
                             sym or refine.startswith("cascade"), options.alpha_steps, deadline)
        else:
            sub = None if prior is None else unpack(prior[todo], model)
            pb = pair_bounds(model, Boxes(lo[todo], hi[todo], model.width), stage, sub, hidden,
                             sym or refine.startswith("cascade"), deadline=deadline)
        jd = judge(spec, pb, eps_down)
        if closed is None:
            closed, score, measure, coef = jd.closed, jd.score, jd.measure, jd.coef
            packed = pack(pb.hist, model.same_shape)
        else:
            closed[todo] = jd.closed
            score[todo] = np.minimum(jd.score, score[todo])
            measure[todo] = np.minimum(jd.measure, measure[todo])
            coef[todo] = jd.coef
            packed[todo] = pack(pb.hist, model.same_shape)
        if stage == "none":
            state["cheap_rate"] = float(jd.closed.mean())
        todo = todo[~jd.closed]
        if not len(todo):
            break
    return Judgement(closed, score, measure, coef), packed
