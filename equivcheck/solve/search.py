"""The exact query on a box, and on sub-boxes when the whole box is too hard.

Z3 decides small problems well and large ones badly; how large depends mostly on how many ReLUs
are unstable. Splitting the input box makes more units stable in each part (and tightens the
difference bounds), so for low-dimensional inputs a box the solver cannot decide at once is
split in two, recursively, and each part is closed by bounds or by the solver. Splitting is exact:
midpoints are rationals and the parts cover the box, so "every part proved" is a proof of the box.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from equivcheck.bounds.difference import DiffBounds, difference_bounds
from equivcheck.bounds.interval import LayerBounds
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Box
from equivcheck.core.network import Network
from equivcheck.core.options import ProverOptions, SearchOutcome
from equivcheck.core.spec import Mode, Norm, Spec, batch_margin
from equivcheck.solve.encode import encode_disagreement
from equivcheck.solve.solver import SolveOutcome, SolveStatus, solve, solve_built

# Rigorous bounds of both networks over a part of the box, computed by ``deadline``.
PartBounds = Callable[[Box, Deadline], "tuple[list[LayerBounds], list[LayerBounds]]"]


@dataclass(frozen=True)
class Decision:
    """How a box was decided: PROVED, REFUTED (with an exact violating ``point``) or UNKNOWN."""

    status: SearchOutcome
    reason: str
    point: tuple[Fraction, ...] | None = None  # an exact violating input (refuted)
    unstable: int = 0  # unstable ReLUs in the encoding of the whole box
    shared_units: int = 0
    parts: int = 1  # boxes examined (1 = no splitting)
    solver_calls: int = 0


def epsilon_bound(spec: Spec, diff: list[DiffBounds] | None) -> Fraction | None:
    """The rigorous bound on ||f - g|| that difference bounds give (epsilon mode), else None."""
    if diff is None or spec.mode is not Mode.EPSILON:
        return None
    worst = np.maximum(np.abs(diff[-1].post_lower), np.abs(diff[-1].post_upper))
    exact = [Fraction(float(v)) for v in worst]
    return max(exact) if spec.norm is Norm.LINF else sum(exact, Fraction(0))


def decide(
    a: Network,
    b: Network,
    spec: Spec,
    box: Box,
    bounds_a: list[LayerBounds],
    bounds_b: list[LayerBounds],
    diff: list[DiffBounds] | None,
    deadline: Deadline,
    options: ProverOptions,
    part_bounds: PartBounds,
) -> Decision:
    """Decide whether some input of ``box`` violates ``spec``, by ``deadline``.

    ``bounds_a``/``bounds_b``/``diff`` are rigorous over ``box``; ``part_bounds`` gives rigorous
    bounds over a part of it when the box is split (``options`` says when: boxes of at most
    ``max_split_dim`` inputs the solver cannot decide in its first try). PROVED only when every
    part of the box was closed by sound bounds or an unsat answer; REFUTED only with a point
    whose violation was confirmed in exact arithmetic. The query is encoded in the solver's
    child process, so a large encoding ends at the deadline too.
    """
    if deadline.expired():
        return Decision(SearchOutcome.UNKNOWN, "timeout: no time left for the solver")
    can_split = box.dim <= options.max_split_dim
    first = deadline
    if can_split:  # the whole box first; parts get the rest of the time
        first = deadline.sub(seconds=max(options.first_try_seconds,
                                         options.first_try_share * deadline.remaining()))

    def build():
        enc = encode_disagreement(a, b, box, bounds_a, bounds_b, spec, diff)
        info = {"unstable": enc.unstable, "shared_units": enc.shared_units,
                "same_outputs": enc.same_outputs}
        return info, None if enc.same_outputs else enc.text, enc.inputs

    got = solve_built(build, first.remaining(), first)
    if got.info is None:
        return Decision(SearchOutcome.UNKNOWN,
                        "timeout: the time ran out while encoding the query for the solver",
                        solver_calls=1)
    stats = {"unstable": got.info["unstable"], "shared_units": got.info["shared_units"]}
    if got.info["same_outputs"]:
        return Decision(
            SearchOutcome.PROVED,
            f"both networks compute their outputs through the same units ({stats['shared_units']} "
            "units of b are units of a); no search needed",
            **stats,
        )
    out = got.outcome
    verdict = _verdict(a, b, spec, box, got.names, out)
    if verdict is not None:
        status, reason, point = verdict
        if status is SearchOutcome.PROVED:
            reason = f"solver: no input in the box violates the spec ({stats['unstable']} unstable ReLUs encoded)"
        return Decision(status, reason, point, **stats, solver_calls=1)
    if not can_split or deadline.expired():
        timed_out = out.status is SolveStatus.TIMEOUT
        why = f"solver timed out after {out.seconds:.3g} s" if timed_out else out.reason
        label = "timeout" if timed_out else "solver gave up"
        return Decision(SearchOutcome.UNKNOWN, f"{label}: {why}", **stats, solver_calls=1)
    return _split(a, b, spec, box, deadline, options, part_bounds, stats)


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
        return (SearchOutcome.UNKNOWN,
                "solver returned a model that does not check exactly (please report)", None)
    return SearchOutcome.REFUTED, "solver found an input that violates the spec", x_q


def _split_dim(a: Network, b: Network, box: Box) -> int:
    """The input whose range most influences the first layers: width x total |weight|."""
    width = np.array([float(h - lo) for lo, h in zip(box.lower, box.upper)])
    influence = np.abs(a.layers[0].weight).sum(axis=0) + np.abs(b.layers[0].weight).sum(axis=0)
    return int(np.argmax(width * (influence + 1e-12)))


def _halves(box: Box, dim: int) -> tuple[Box, Box]:
    return box.halves(dim)


def _split(a: Network, b: Network, spec: Spec, box: Box, deadline: Deadline,
           options: ProverOptions, part_bounds: PartBounds, stats: dict) -> Decision:
    """Close the halves of ``box`` (depth first) by bounds, a probe of their centre or the
    solver; a part the solver cannot close within ``leaf_seconds`` is split again."""
    parts = 1
    calls = 1
    by_bounds = by_solver = 0
    stack: list[tuple[Box, int]] = [(p, 1) for p in reversed(_halves(box, _split_dim(a, b, box)))]
    while stack:
        if deadline.expired():
            return Decision(
                SearchOutcome.UNKNOWN,
                f"timeout while splitting the box: {parts} parts examined, {len(stack)} left open",
                **stats, parts=parts, solver_calls=calls,
            )
        part, depth = stack.pop()
        parts += 1
        lo, hi = part.lower_float(), part.upper_float()
        ba, bb = part_bounds(part, deadline)
        diff = difference_bounds(a, b, lo, hi, ba, bb, symbolic=True, deadline=deadline)
        eps = epsilon_bound(spec, diff)
        if eps is not None and eps <= spec.tolerance:
            by_bounds += 1
            continue
        if deadline.expired():
            stack.append((part, depth))  # not closed: counted as open by the check above
            continue
        point = _probe(a, b, spec, part)
        if point is not None:
            return Decision(SearchOutcome.REFUTED, "found while splitting the box", point,
                            **stats, parts=parts, solver_calls=calls)
        enc = encode_disagreement(a, b, part, ba, bb, spec, diff)
        if enc.same_outputs:
            by_bounds += 1
            continue
        deepest = depth >= options.max_depth
        if enc.unstable <= options.leaf_unstable or deepest:
            calls += 1
            leaf = deadline if deepest else deadline.sub(seconds=options.leaf_seconds)
            out = solve(enc.text, enc.inputs, leaf.remaining(), leaf)
            verdict = _verdict(a, b, spec, part, enc.inputs, out)
            if verdict is not None:
                status, reason, pt = verdict
                if status is SearchOutcome.PROVED:
                    by_solver += 1
                    continue
                return Decision(status, reason, pt, **stats, parts=parts, solver_calls=calls)
            if deepest:
                return Decision(SearchOutcome.UNKNOWN,
                                f"solver could not decide a part at depth {depth}: {out.reason}",
                                **stats, parts=parts, solver_calls=calls)
        stack.extend((p, depth + 1) for p in reversed(_halves(part, _split_dim(a, b, part))))
    return Decision(
        SearchOutcome.PROVED,
        f"split the box into parts: {by_bounds} closed by bounds, {by_solver} by the solver "
        f"({parts} boxes examined)",
        **stats, parts=parts, solver_calls=calls,
    )


def _probe(a: Network, b: Network, spec: Spec, part: Box) -> tuple[Fraction, ...] | None:
    """The centre of a part, if it violates the spec in exact arithmetic (cheap falsification)."""
    centre = tuple((lo + hi) / 2 for lo, hi in zip(part.lower, part.upper))
    xf = np.array([float(v) for v in centre])
    ya, yb = a.evaluate(xf), b.evaluate(xf)
    if batch_margin(spec, ya[None, :], yb[None, :])[0] <= 0:
        return None
    if spec.holds(a.evaluate_exact(centre), b.evaluate_exact(centre)):
        return None
    return centre
