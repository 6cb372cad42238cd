"""Deciding one box: the branch-and-bound engine first, the exact solver for what it leaves.

:func:`search` runs :func:`equivcheck.engine.check_box` (batched rigorous bounds of f, g and
f - g over sub-boxes, best first, with its own falsifier) and hands the solver only what bounds
cannot settle:

* the engine's *residue*: sub-boxes it cannot close by splitting (an exact tie with the
  tolerance, boxes at float resolution), each clipped to the exact box and decided by Z3;
* the whole box, first, when the networks differ in shape (the solver's encoding shares the
  units the two networks have in common, which the engine's bounds cannot see) or when few
  ReLUs are unstable on the box (a small query);
* the whole box, with the time the engine left, when the engine is not the right tool on its
  own: with the falsifier turned off (bounds alone never refute), strict mode (bounds close a node only where the difference is exactly 0) and boxes of
  more inputs than ``max_split_dim`` (input splitting does not pay there).

:func:`decide` is one exact query of the solver on one box. A proof by parts is a proof of the
box: the engine's closed sub-boxes and the residue cover the float enclosure of the exact box,
and each residue part is the exact box intersected with a residue box.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from equivcheck.bounds.difference import DiffBounds, difference_bounds
from equivcheck.bounds.interval import LayerBounds
from equivcheck.core import matrix
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Box
from equivcheck.core.network import Network
from equivcheck.core.options import ProverOptions, SearchOutcome
from equivcheck.core.progress import ProgressFn
from equivcheck.core.spec import Mode, Norm, Spec
from equivcheck.engine import EngineOptions, EngineResult, Outcome, PairModel, check_box
from equivcheck.engine.parallel import check_box_parallel
from equivcheck.solve.encode import encode_disagreement
from equivcheck.solve.solver import SolveOutcome, SolveStatus, solve, solve_built

# Rigorous bounds of both networks over a part of the box, computed by ``deadline``.
PartBounds = Callable[[Box, Deadline], "tuple[list[LayerBounds], list[LayerBounds]]"]


# Pairs with at most this many weights and biases are encoded in this process (milliseconds):
# no child process and no z3 import when the encoding alone shows the outputs are the same.
# Larger encodings are built in the solver's child, so they too end at the deadline.
IN_PROCESS_PARAMS = 50_000
# Networks with sparse layers (convolutions: thousands of ReLUs) are not handed to the solver
# past this many weights and biases (both networks): z3 took 1.9-2.6 GB only to time out on
# pairs of 0.65-1.8 million (MNIST/CIFAR convnets against pruned copies, argmax, 30 s); the box
# is then UNKNOWN at once, with this reason.
SPARSE_SOLVER_PARAMS = 1_000_000


@dataclass(frozen=True)
class Decision:
    """How a box was decided: PROVED, REFUTED (with an exact violating ``point``) or UNKNOWN.

    ``engine_point``: the point was found by the engine's falsifier (a float point, confirmed
    in exact arithmetic); otherwise it is the solver's rational model."""

    status: SearchOutcome
    reason: str
    point: tuple[Fraction, ...] | None = None  # an exact violating input (refuted)
    unstable: int = 0  # unstable ReLUs in the encoding of the whole box
    shared_units: int = 0
    parts: int = 1  # boxes examined (1 = no splitting)
    solver_calls: int = 0
    engine_point: bool = False


def difference_check(a: Network, b: Network, spec: Spec, box: Box, bounds_a: list[LayerBounds],
                     bounds_b: list[LayerBounds], deadline: Deadline
                     ) -> tuple[list[DiffBounds] | None, Fraction | None]:
    """The unit-wise difference bounds of a same-shaped pair over ``box`` (None otherwise), and
    the rigorous bound on ``||f - g||`` they give when it settles an epsilon spec (else None)."""
    diff = difference_bounds(a, b, box.lower_float(), box.upper_float(), bounds_a, bounds_b,
                             symbolic=True, deadline=deadline)
    if diff is None or spec.mode is not Mode.EPSILON:
        return diff, None
    worst = np.maximum(np.abs(diff[-1].post_lower), np.abs(diff[-1].post_upper))
    exact = [Fraction(float(v)) for v in worst]
    eps = max(exact) if spec.norm is Norm.LINF else sum(exact, Fraction(0))
    return diff, eps if eps <= spec.tolerance else None


def _falsifies(options: ProverOptions) -> bool:
    """Whether the check looks for counterexamples by sampling and local search."""
    return options.falsify and options.falsify_seconds > 0


def engine_options(options: ProverOptions) -> EngineOptions:
    """The engine's settings for a check run with ``options`` (no falsification when the
    options turn it off)."""
    return EngineOptions(seed=options.seed, falsify=_falsifies(options))


def solver_goes_first(model: PairModel, stability, options: ProverOptions) -> bool:
    """True for pairs the solver's encoding suits better than the engine's bounds: networks of
    different shapes (units removed or folded, layers merged: the encoding writes a unit both
    networks share once, a correlation the engine's two separate streams do not see), or at most
    ``solver_first_unstable`` unstable ReLUs in ``stability`` (rows with ``unstable`` counts: a
    query with few ReLU cases is decided at once where bounds may need many sub-boxes, near an
    argmax tie say). Not for pairs with sparse (convolution) layers and more unstable ReLUs than
    that: on a small CNN against its compressed pruned copy (24k weights, 2,000 unstable units)
    the solver's child used 1 GB for nothing, and the engine then proved it on one node."""
    unstable = sum(row.unstable for row in stability)
    if unstable <= options.solver_first_unstable:
        return True
    sparse = any(matrix.is_sparse(lay.w) for lay in tuple(model.f) + tuple(model.g))
    return not model.same_shape and not sparse


def engine_alone(spec: Spec, box: Box, options: ProverOptions) -> bool:
    """True when the engine may take all the time of the box (see the module doc). Without its
    falsifier the engine can prove but never refute, so the solver gets the box then too."""
    return _falsifies(options) and spec.mode is not Mode.STRICT and box.dim <= options.max_split_dim


def search(a: Network, b: Network, spec: Spec, box: Box, bounds_a: list[LayerBounds],
           bounds_b: list[LayerBounds], diff: list[DiffBounds] | None, model: PairModel,
           deadline: Deadline, options: ProverOptions, part_bounds: PartBounds,
           solver_first: bool, progress: ProgressFn | None = None) -> Decision | None:
    """Run the engine on ``box`` and the solver on its residue (see the module doc).

    Returns the decision, or None when the engine left the whole box to the solver (the caller
    then runs :func:`decide` on it with the time left). ``bounds_a``/``bounds_b``/``diff`` are
    rigorous over ``box``; ``part_bounds(part, deadline)`` gives rigorous bounds of both networks
    over a part (for the solver's encoding of a residue part). With ``solver_first`` (see
    :func:`solver_goes_first`) the solver first tries the whole box (``first_try_share`` of the
    time, at least ``first_try_seconds``).
    """
    if solver_first:
        first = deadline.sub(seconds=max(options.first_try_seconds,
                                         options.first_try_share * deadline.remaining()))
        dec = decide(a, b, spec, box, bounds_a, bounds_b, diff, first)
        if dec.status is not SearchOutcome.UNKNOWN:
            return dec
    alone = engine_alone(spec, box, options)
    budget = deadline if alone else deadline.sub(options.engine_share)
    if options.workers != 1:  # (with ReLU splitting too: the workers share the first
        # slice's ReLU-phase nodes; MNIST 256x4 vs float16 over prop_0, 0.05: 1.9 s -> 1.3 s)
        res = check_box_parallel(a, b, spec, box, budget, engine_options(options), model,
                                 options.workers or None, progress)
    else:
        res = check_box(a, b, spec, box, budget, engine_options(options), model=model,
                        progress=progress)
    st = res.stats
    if res.outcome is Outcome.PROVED:
        bound = f", ||f - g|| <= {st.best_bound:.6g}" if spec.mode is Mode.EPSILON else ""
        return Decision(SearchOutcome.PROVED, f"branch and bound: {res.reason}{bound}",
                        parts=st.nodes)
    if res.outcome is Outcome.REFUTED:
        point = tuple(Fraction(float(v)) for v in res.point)
        return Decision(SearchOutcome.REFUTED, "counterexample found by sampling and local search "
                        f"(branch and bound, {st.nodes} nodes)", point, parts=st.nodes,
                        engine_point=True)
    residue = res.extra.get("residue") or []
    if residue and st.open_nodes == len(residue):
        return _close_residue(a, b, spec, box, residue, deadline, part_bounds, st.nodes)
    if alone or deadline.expired():
        return Decision(SearchOutcome.UNKNOWN, f"{res.reason} ({_engine_text(res)})", parts=st.nodes)
    return None


def _engine_text(res: EngineResult) -> str:
    st = res.stats
    return (f"branch and bound: {st.nodes} nodes bounded, {st.open_nodes} open, best bound "
            f"{st.best_bound:.6g}")


def clip(box: Box, lo: np.ndarray, hi: np.ndarray) -> Box | None:
    """The exact box intersected with the float box ``[lo, hi]`` (None when empty): strict
    faces are kept where the exact box's bound is the binding one."""
    lower, upper, ls, us = [], [], [], []
    for i in range(box.dim):
        ql, qh = Fraction(float(lo[i])), Fraction(float(hi[i]))
        if ql > box.lower[i]:
            lower.append(ql), ls.append(False)
        else:
            lower.append(box.lower[i]), ls.append(box.lower_strict[i])
        if qh < box.upper[i]:
            upper.append(qh), us.append(False)
        else:
            upper.append(box.upper[i]), us.append(box.upper_strict[i])
        if lower[-1] > upper[-1] or (lower[-1] == upper[-1] and (ls[-1] or us[-1])):
            return None
    return Box(tuple(lower), tuple(upper), tuple(ls), tuple(us))


def _close_residue(a: Network, b: Network, spec: Spec, box: Box, residue: list, deadline: Deadline,
                   part_bounds: PartBounds, nodes: int) -> Decision:
    """Decide each residue part (the exact box clipped to a residue box) with the solver; the
    time left is shared evenly among the parts not decided yet."""
    parts = [p for p in (clip(box, lo, hi) for lo, hi, _ in residue) if p is not None]
    calls = 0
    for k, part in enumerate(parts):
        if deadline.expired():
            return Decision(SearchOutcome.UNKNOWN, f"timeout: {len(parts) - k} of {len(parts)} "
                            "sub-boxes the bounds could not close are left to the solver",
                            parts=nodes, solver_calls=calls)
        leaf = deadline.sub(seconds=deadline.remaining() / (len(parts) - k))
        ba, bb = part_bounds(part, leaf)
        diff, settled = difference_check(a, b, spec, part, ba, bb, leaf)
        if settled is not None:
            continue
        dec = decide(a, b, spec, part, ba, bb, diff, leaf)
        calls += dec.solver_calls
        if dec.status is SearchOutcome.REFUTED:
            return Decision(SearchOutcome.REFUTED, dec.reason, dec.point, parts=nodes,
                            solver_calls=calls)
        if dec.status is SearchOutcome.UNKNOWN:
            return Decision(SearchOutcome.UNKNOWN, f"{dec.reason} (on one of {len(parts)} "
                            "sub-boxes the bounds could not close)", parts=nodes, solver_calls=calls)
    return Decision(SearchOutcome.PROVED, f"bounds on {nodes} sub-boxes, and the solver on the "
                    f"{len(parts)} they could not close", parts=nodes, solver_calls=calls)


SAME_UNITS = ("both networks compute their outputs through the same units ({shared} units of b "
              "are units of a); no search needed")


def decide(a: Network, b: Network, spec: Spec, box: Box, bounds_a: list[LayerBounds],
           bounds_b: list[LayerBounds], diff: list[DiffBounds] | None, deadline: Deadline
           ) -> Decision:
    """One exact query: does some input of ``box`` violate ``spec``? By ``deadline``.

    ``bounds_a``/``bounds_b``/``diff`` are rigorous over ``box``. PROVED only on an unsat
    answer (or when both networks compute their outputs through the same units); REFUTED only
    with a point whose violation was confirmed in exact arithmetic. A large query is encoded in
    the solver's child process, so its encoding ends at the deadline too.
    """
    if deadline.expired():
        return Decision(SearchOutcome.UNKNOWN, "timeout: no time left for the solver")
    sparse = any(lay.affine.is_sparse for lay in tuple(a.layers) + tuple(b.layers))
    if sparse and _params(a) + _params(b) > SPARSE_SOLVER_PARAMS:
        return Decision(SearchOutcome.UNKNOWN, (
            f"solver not started: the query would encode {_params(a) + _params(b):,} weights "
            f"and biases of networks with sparse (convolution) layers, more than the "
            f"{SPARSE_SOLVER_PARAMS:,} the solver is given memory for"))

    def build():
        enc = encode_disagreement(a, b, box, bounds_a, bounds_b, spec, diff)
        info = {"unstable": enc.unstable, "shared_units": enc.shared_units,
                "same_outputs": enc.same_outputs}
        return info, None if enc.same_outputs else enc.text, enc.inputs

    if _params(a) + _params(b) <= IN_PROCESS_PARAMS:  # small: encode here (fast), and
        info, text, names = build()  # the solver (and z3's import) only if needed
        out = None if info["same_outputs"] else solve(text, names, deadline.remaining(), deadline)
    else:
        got = solve_built(build, deadline.remaining(), deadline)
        if got.info is None:
            return Decision(SearchOutcome.UNKNOWN,
                            "timeout: the time ran out while encoding the query for the solver",
                            solver_calls=1)
        info, names, out = got.info, got.names, got.outcome
    stats = {"unstable": info["unstable"], "shared_units": info["shared_units"]}
    if info["same_outputs"]:
        return Decision(SearchOutcome.PROVED, SAME_UNITS.format(shared=stats["shared_units"]), **stats)
    verdict = _verdict(a, b, spec, box, names, out)
    if verdict is not None:
        status, reason, point = verdict
        if status is SearchOutcome.PROVED:
            reason = f"solver: no input in the box violates the spec ({stats['unstable']} unstable ReLUs encoded)"
        return Decision(status, reason, point, **stats, solver_calls=1)
    timed_out = out.status is SolveStatus.TIMEOUT
    why = f"solver timed out after {out.seconds:.3g} s" if timed_out else out.reason
    label = "timeout" if timed_out else "solver gave up"
    return Decision(SearchOutcome.UNKNOWN, f"{label}: {why}", **stats, solver_calls=1)


def _params(net: Network) -> int:
    """Weights and biases of ``net``."""
    return sum(matrix.stored_entries(layer.weight) + layer.bias.size for layer in net.layers)


def _verdict(a: Network, b: Network, spec: Spec, box: Box, names, out: SolveOutcome
             ) -> tuple[SearchOutcome, str, tuple[Fraction, ...] | None] | None:
    """(status, reason, point) for a decisive solver answer, None for timeout/unknown. A model
    counts only when it lies in the box and violates the spec in exact arithmetic."""
    if out.status is SolveStatus.UNSAT:
        return SearchOutcome.PROVED, "", None
    if out.status is not SolveStatus.SAT:
        return None
    x_q = tuple(out.model[n] for n in names)
    ya, yb = a.evaluate_exact(x_q), b.evaluate_exact(x_q)
    if spec.holds(ya, yb) or not box.contains(x_q):
        if spec.mode is Mode.TOP1 and box.contains(x_q):  # the encoding relaxes the confidence
            return (SearchOutcome.UNKNOWN, "the solver's point meets the linear relaxation of a's "
                    "confidence condition, but a's softmax confidence there is below "
                    f"{float(spec.confidence):g}: undecided", None)
        return (SearchOutcome.UNKNOWN,
                "solver returned a model that does not check exactly (please report)", None)
    return SearchOutcome.REFUTED, "solver found an input that violates the spec", x_q
