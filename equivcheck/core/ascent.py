"""Signed-gradient ascent over a box: the one climbing routine of the falsifier
(:func:`equivcheck.solve.falsify.search`), the audit's witness search
(:func:`equivcheck.audit.witnesses.search_witnesses`) and the stability analysis' witness search.

The networks are piecewise linear, so inside a linear region the gradient of a linear function
of their outputs, or of one pre-activation, is exact and cheap (:func:`vjp`). :func:`ascend`
uses only its sign: every row of a batch of points steps along ``sign(gradient)`` by a fraction
of the box width and is put back on the caller's grid by ``project``. Nothing it returns is
trusted: the callers check their points in exact arithmetic.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from equivcheck.core.deadline import Deadline
from equivcheck.core.network import Network

Batch = Callable[[np.ndarray], np.ndarray]


def vjp(net: Network, x: np.ndarray, c: np.ndarray, layer: int | None = None) -> np.ndarray:
    """Rows of ``c^T J(x)``: per row, the gradient with respect to ``x`` of ``c . y(x)``, where
    ``y`` is the network's output (``layer`` None) or the pre-activation of layer ``layer``.

    Exact inside the linear region of each row (a ReLU counts as off where its pre-activation
    is <= 0); ``x`` and ``c`` have one row per point.
    """
    last = len(net.layers) - 1 if layer is None else layer
    masks: list[np.ndarray | None] = []
    h = x
    for k in range(last + 1):
        lay = net.layers[k]
        z = h @ lay.weight.T + lay.bias
        if lay.relu and (layer is None or k < last):
            m = z > 0
            masks.append(m)
            h = np.where(m, z, 0.0)
        else:
            masks.append(None)
            h = z
    g = c
    for k in range(last, -1, -1):
        if masks[k] is not None:
            g = g * masks[k]
        g = g @ net.layers[k].weight
    return g


@dataclass(frozen=True)
class Objective:
    """What to climb, row by row of a batch of points.

    ``value(x)`` gives one number per row (larger is better); ``gradient(x)`` one vector per row
    whose sign points uphill inside the row's linear region.
    """

    value: Batch
    gradient: Batch


def difference_objective(f: Network, g: Network, c: np.ndarray) -> Objective:
    """Per row r, climb ``c[r] . (f(x) - g(x))`` (e.g. ``c[r]`` = ±1 at one output)."""

    def value(x: np.ndarray) -> np.ndarray:
        return np.sum(c * (f.evaluate(x) - g.evaluate(x)), axis=1)

    def gradient(x: np.ndarray) -> np.ndarray:
        return vjp(f, x, c) - vjp(g, x, c)

    return Objective(value, gradient)


def preactivation_objective(net: Network, layers: np.ndarray, units: np.ndarray,
                            signs: np.ndarray) -> Objective:
    """Per row r, climb ``signs[r] * z[layers[r]][units[r]](x)``, a pre-activation of ``net``
    (positive once the row has reached the sign it looks for)."""
    layers, units, signs = np.asarray(layers), np.asarray(units), np.asarray(signs, dtype=float)
    groups = [(int(k), np.flatnonzero(layers == k)) for k in np.unique(layers)]

    def value(x: np.ndarray) -> np.ndarray:
        pre = net.pre_activations(x)
        out = np.empty(len(x))
        for k, rows in groups:
            out[rows] = signs[rows] * pre[k][rows, units[rows]]
        return out

    def gradient(x: np.ndarray) -> np.ndarray:
        grads = np.zeros_like(x)
        for k, rows in groups:  # batched: one product per layer
            c = np.zeros((len(rows), net.layers[k].out_dim))
            c[np.arange(len(rows)), units[rows]] = signs[rows]
            grads[rows] = vjp(net, x[rows], c, layer=k)
        return grads

    return Objective(value, gradient)


class StepRule(enum.Enum):
    """How :func:`ascend` moves."""

    # each round: try every scale of the step, keep a row's move only where it raises the
    # value; halve the step when no row moved; stop when the step falls to ``min_step``
    GREEDY = "greedy"
    # ``rounds`` moves that are always taken, of ``step * (1 - t / rounds)**2 + min_step``;
    # the best point seen per row is kept
    ANNEALED = "annealed"


@dataclass(frozen=True)
class Schedule:
    """Step sizes of :func:`ascend`, as fractions of the box width."""

    rule: StepRule = StepRule.GREEDY
    step: float = 0.25
    scales: tuple[float, ...] = (1.0, 0.5, 0.1)  # GREEDY: the multiples of the step tried
    min_step: float = 1e-7  # GREEDY: the step at which to stop; ANNEALED: the last step's size
    rounds: int = 30  # ANNEALED: how many moves
    jitter: float = 0.0  # GREEDY: per round, a random move of this share of the step, kept if better


GREEDY = Schedule()
ANNEALED = Schedule(StepRule.ANNEALED, step=0.5, min_step=1e-3, rounds=30)


def ascend(
    objective: Objective,
    x: np.ndarray,
    project: Batch,
    width: np.ndarray,
    deadline: Deadline,
    schedule: Schedule = GREEDY,
    rng: np.random.Generator | None = None,
    done: Callable[[np.ndarray], bool] | None = None,
    start_value: np.ndarray | None = None,
    goal: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Climb ``objective`` from the rows of ``x``; returns ``(points, values)``: per row the
    best point seen and its value (never below the start's).

    Every point tried is ``project`` of a move of ``sign(gradient) * width * step``, so it lies
    wherever ``project`` puts points (callers snap to the box's float grid). Stops at the
    ``deadline`` (checked once per round), when the schedule ends, or as soon as
    ``done(values)`` holds. With a ``goal``, a row whose value exceeds it keeps the first point
    that did, and the climb ends once every row has. ``start_value`` is
    ``objective.value(x)`` when the caller has it (``-inf`` makes only points reached by moving
    count); ``rng`` is needed only for a schedule with ``jitter``. ``x`` is not modified.
    """
    cur = np.array(x, dtype=np.float64, copy=True)
    cur_v = objective.value(cur) if start_value is None else np.array(start_value, dtype=float)
    if goal is not None:
        user_done = done

        def done(v: np.ndarray) -> bool:
            return bool(np.all(v > goal)) or (user_done is not None and user_done(v))

    if schedule.rule is StepRule.ANNEALED:
        return _annealed(objective, cur, cur_v, project, width, deadline, schedule, done, goal)
    step = schedule.step
    while not deadline.expired() and step > schedule.min_step:
        direction = np.sign(objective.gradient(cur))
        moved = False
        for scale in schedule.scales:
            cand = project(cur + direction * width * step * scale)
            if _keep_better(objective, cur, cur_v, cand, goal):
                moved = True
        if not moved:
            step *= 0.5
        if schedule.jitter:
            noise = rng.normal(0, 1, cur.shape) * width * step * schedule.jitter
            _keep_better(objective, cur, cur_v, project(cur + noise), goal)
        if done is not None and done(cur_v):
            break
    return cur, cur_v


def _keep_better(objective: Objective, cur: np.ndarray, cur_v: np.ndarray, cand: np.ndarray,
                 goal: float | None = None) -> bool:
    """Move (in place) the rows of ``cur`` whose candidate has a larger value, except rows
    already past ``goal``; True if any moved."""
    v = objective.value(cand)
    better = _improves(v, cur_v, goal)
    if not np.any(better):
        return False
    cur[better], cur_v[better] = cand[better], v[better]
    return True


def _improves(v: np.ndarray, best: np.ndarray, goal: float | None) -> np.ndarray:
    """Rows where ``v`` beats ``best`` and ``best`` has not yet passed ``goal``."""
    better = v > best
    return better if goal is None else better & ~(best > goal)


def _annealed(objective: Objective, cur: np.ndarray, cur_v: np.ndarray, project: Batch,
              width: np.ndarray, deadline: Deadline, schedule: Schedule,
              done: Callable[[np.ndarray], bool] | None,
              goal: float | None) -> tuple[np.ndarray, np.ndarray]:
    """:attr:`StepRule.ANNEALED`: always move; keep the best point seen per row (the first
    past ``goal``, when there is one)."""
    best, best_v = cur.copy(), cur_v.copy()
    for t in range(schedule.rounds):
        if deadline.expired():
            break
        eta = schedule.step * (1.0 - t / schedule.rounds) ** 2 + schedule.min_step
        cur = project(cur + eta * width * np.sign(objective.gradient(cur)))
        v = objective.value(cur)
        better = _improves(v, best_v, goal)
        best[better], best_v[better] = cur[better], v[better]
        if done is not None and done(best_v):
            break
    return best, best_v
