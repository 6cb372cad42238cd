"""Exact stability analysis of every ReLU unit over an input domain (as in LEO, Serra et al.).

Each hidden unit ends as

* ``INACTIVE``: its pre-activation is ``<= 0`` on the whole domain (the ReLU outputs 0), proved;
* ``ACTIVE``: its pre-activation is ``>= 0`` on the whole domain (the ReLU is the identity), proved;
* ``UNSTABLE``: two inputs in the domain are known, one where the pre-activation is ``> 0`` and one
  where it is ``< 0``, both checked in exact rational arithmetic on the stored weights;
* ``UNDECIDED``: the time limit came first (such units must be kept as unstable).

Cheap stages first, and each records what it decided: rigorous interval bounds, rigorous
symbolic (CROWN-style) bounds, concrete witnesses (random points, box vertices picked by the
symbolic bounds, optional training samples), LP bounds certified from HiGHS' duals (whose primal
points are more witness candidates), and finally an exact stage: a branch and bound over the
phases of earlier unstable units in which every pruned node is an LP bound certified from its
dual (so a "stable" verdict rests only on rigorous bounds), and whose LP points are checked
exactly as witnesses. Units of the first hidden layer are decided exactly by evaluating the
maximising / minimising vertex of the box in rational arithmetic.
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from equivcheck.bounds.propagation import (
    LayerBounds,
    LinearRelaxation,
    LPSolver,
    back_substitute,
    intersect,
    interval_bounds,
    lp_tighten_layer,
    symbolic_layer,
)
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Box, Domain
from equivcheck.core.network import Network, _exact_matvec
from equivcheck.io.domains import parse_domain

DEFAULT_TIMEOUT = 60.0
RANDOM_POINTS = 512
MAX_NODES_PER_QUESTION = 2000
QUESTION_SECONDS = 5.0
SPLIT_MAX_INPUTS = 16
SPLIT_BUDGETS = (30, 300, 3000, 30000)  # sub-boxes per question, pass by pass
FIRST_LAYER_CHUNK = 32  # first-layer units decided exactly between two looks at the clock


class UnitStatus(enum.Enum):
    INACTIVE = "inactive"
    ACTIVE = "active"
    UNSTABLE = "unstable"
    UNDECIDED = "undecided"

    @property
    def stable(self) -> bool:
        return self in (UnitStatus.INACTIVE, UnitStatus.ACTIVE)


class Stage(enum.Enum):
    """Which stage of the analysis decided a unit."""

    INTERVAL = "interval"
    SYMBOLIC = "symbolic"
    LP = "lp"
    WITNESS = "witness"
    EXACT = "exact"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class LayerStabilityReport:
    """The verdicts of one hidden (ReLU) layer: ``status[i]``, ``stage[i]`` and, for unstable
    units, the indices into :attr:`StabilityReport.witnesses` of a point where the unit is
    strictly active and one where it is strictly inactive."""

    layer: int
    width: int
    status: tuple[UnitStatus, ...]
    stage: tuple[Stage, ...]
    witness_active: tuple[int | None, ...]
    witness_inactive: tuple[int | None, ...]

    def count(self, status: UnitStatus) -> int:
        return sum(1 for s in self.status if s is status)

    def to_dict(self) -> dict:
        return {
            "layer": self.layer,
            "width": self.width,
            "active": self.count(UnitStatus.ACTIVE),
            "inactive": self.count(UnitStatus.INACTIVE),
            "unstable": self.count(UnitStatus.UNSTABLE),
            "undecided": self.count(UnitStatus.UNDECIDED),
            "status": [s.value for s in self.status],
            "stage": [s.value for s in self.stage],
        }


@dataclass(frozen=True)
class StabilityReport:
    """Stability of every ReLU unit of a network over a domain (see the module docstring)."""

    layers: tuple[LayerStabilityReport, ...]
    witnesses: tuple[tuple[float, ...], ...]
    domain_text: str
    seconds: float
    stage_seconds: dict = field(default_factory=dict)
    # one-box domains: the sound pre-activation bounds the analysis ended with (pass them
    # through :meth:`clip` for every proved unit), so callers need not recompute them; None for
    # unions of boxes
    bounds: tuple[LayerBounds, ...] | None = field(default=None, compare=False, repr=False)

    def layer(self, index: int) -> LayerStabilityReport | None:
        for rep in self.layers:
            if rep.layer == index:
                return rep
        return None

    def clip(self, bounds: list[LayerBounds]) -> list[LayerBounds]:
        """``bounds`` with every unit proved stable clipped at 0 (still sound if they were)."""
        out = list(bounds)
        for rep in self.layers:
            lower, upper = out[rep.layer].lower.copy(), out[rep.layer].upper.copy()
            for i, s in enumerate(rep.status):
                if s is UnitStatus.INACTIVE:
                    upper[i] = min(upper[i], 0.0)
                elif s is UnitStatus.ACTIVE:
                    lower[i] = max(lower[i], 0.0)
            out[rep.layer] = LayerBounds(lower, upper)
        return out

    @property
    def undecided(self) -> tuple[tuple[int, int], ...]:
        """(layer, unit) of every unit the time limit left undecided."""
        return tuple((r.layer, i) for r in self.layers for i, s in enumerate(r.status)
                     if s is UnitStatus.UNDECIDED)

    def stage_counts(self) -> dict[str, dict[str, int]]:
        """How many units each stage decided, split into stable and unstable ("timeout" counts
        the undecided units)."""
        out: dict[str, dict[str, int]] = {
            s.value: {"stable": 0, "unstable": 0, "undecided": 0} for s in Stage
        }
        for r in self.layers:
            for st, sg in zip(r.status, r.stage):
                key = "stable" if st.stable else st.value
                out[sg.value][key] += 1
        return out

    def to_dict(self) -> dict:
        return {
            "domain": self.domain_text,
            "seconds": round(self.seconds, 4),
            "stage_seconds": {k: round(v, 4) for k, v in self.stage_seconds.items()},
            "stage_counts": self.stage_counts(),
            "undecided": [list(u) for u in self.undecided],
            "layers": [r.to_dict() for r in self.layers],
            "witnesses": len(self.witnesses),
        }


def exact_preactivations(net: Network, x) -> list[np.ndarray]:
    """Pre-activations of every layer at input ``x`` in exact rational arithmetic."""
    h = np.empty(len(x), dtype=object)
    h[:] = [Fraction(v) for v in x]
    out = []
    for layer in net.layers:
        z = _exact_matvec(layer.affine, h)
        out.append(z)
        h = np.array([v if v > 0 else Fraction(0) for v in z], dtype=object) if layer.relu else z
    return out


class _State:
    """Mutable bookkeeping of one analysis run (internal)."""

    def __init__(self, net: Network, box: Box, deadline: Deadline | float) -> None:
        self.net = net
        self.box = box
        if not isinstance(deadline, Deadline):  # a bare time.monotonic() value
            deadline = Deadline(float(deadline), max(0.0, float(deadline) - time.monotonic()))
        self.deadline = deadline
        self.bounds: list[LayerBounds] | None = None
        self.relu_layers = [k for k, layer in enumerate(net.layers) if layer.relu]
        self.status = {k: [UnitStatus.UNDECIDED] * net.layers[k].out_dim for k in self.relu_layers}
        self.stage = {k: [Stage.TIMEOUT] * net.layers[k].out_dim for k in self.relu_layers}
        self.w_pos = {k: [None] * net.layers[k].out_dim for k in self.relu_layers}
        self.w_neg = {k: [None] * net.layers[k].out_dim for k in self.relu_layers}
        self.witnesses: list[tuple[float, ...]] = []
        f32 = box.float32_box()
        self.lo, self.hi = box.lower_float(), box.upper_float()
        self.plo, self.phi = f32 if f32 is not None else (None, None)

    def time_left(self) -> float:
        """Seconds to the deadline (<= 0 once it has passed)."""
        return self.deadline.end - time.monotonic()

    def record_bounds(self, bounds: list[LayerBounds], stage: Stage) -> None:
        for k in self.relu_layers:
            st = bounds[k].stability()
            for i, s in enumerate(st):
                if self.status[k][i] is not UnitStatus.UNDECIDED:
                    continue
                if s > 0:
                    self.status[k][i], self.stage[k][i] = UnitStatus.ACTIVE, stage
                elif s < 0:
                    self.status[k][i], self.stage[k][i] = UnitStatus.INACTIVE, stage

    def proved_stable(self, bounds: list[LayerBounds], k: int, i: int, sign: int) -> None:
        """Record that ``sign * z_{k,i} <= 0`` was proved by the exact stage, and clip the bounds
        (later questions may rely on the fact)."""
        lower, upper = bounds[k].lower.copy(), bounds[k].upper.copy()
        if sign > 0:
            self.status[k][i], self.stage[k][i] = UnitStatus.INACTIVE, Stage.EXACT
            upper[i] = min(upper[i], 0.0)
        else:
            self.status[k][i], self.stage[k][i] = UnitStatus.ACTIVE, Stage.EXACT
            lower[i] = max(lower[i], 0.0)
        bounds[k] = LayerBounds(lower, upper)

    def needs(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Per layer: masks of units still lacking a positive / a negative witness."""
        out = {}
        for k in self.relu_layers:
            und = np.array([s is UnitStatus.UNDECIDED for s in self.status[k]])
            pos = und & np.array([w is None for w in self.w_pos[k]])
            neg = und & np.array([w is None for w in self.w_neg[k]])
            out[k] = (pos, neg)
        return out

    def open_units(self) -> int:
        return sum(s is UnitStatus.UNDECIDED for k in self.relu_layers for s in self.status[k])

    def project(self, pts: np.ndarray) -> np.ndarray:
        """Points moved into the box's float32 grid (so onnxruntime can run them exactly)."""
        if self.plo is None:
            return np.clip(pts, self.lo, self.hi)
        return np.clip(pts.astype(np.float32).astype(np.float64), self.plo, self.phi)

    def try_witnesses(self, pts: np.ndarray, stage: Stage = Stage.WITNESS) -> None:
        """Greedy: verify exactly the points that give the most missing witnesses."""
        if len(pts) == 0 or self.open_units() == 0:
            return
        pts = self.project(np.atleast_2d(pts))
        zs = self.net.pre_activations(pts)
        tried = np.zeros(len(pts), dtype=bool)
        while self.time_left() > 0:
            needs = self.needs()
            gain = np.zeros(len(pts))
            for k, (pos, neg) in needs.items():
                gain += (zs[k][:, pos] > 0).sum(axis=1) + (zs[k][:, neg] < 0).sum(axis=1)
            gain[tried] = 0
            best = int(np.argmax(gain))
            if gain[best] <= 0:
                return
            tried[best] = True
            self._verify(pts[best], stage)

    def _verify(self, x: np.ndarray, stage: Stage) -> bool:
        if not self.box.contains(x):
            return False
        exact = exact_preactivations(self.net, [Fraction(float(v)) for v in x])
        index = None
        gained = False
        for k in self.relu_layers:
            z = exact[k]
            for i in range(len(z)):
                if self.status[k][i] is not UnitStatus.UNDECIDED:
                    continue
                if self.w_pos[k][i] is None and z[i] > 0 or self.w_neg[k][i] is None and z[i] < 0:
                    if index is None:
                        index = len(self.witnesses)
                        self.witnesses.append(tuple(float(v) for v in x))
                    if z[i] > 0 and self.w_pos[k][i] is None:
                        self.w_pos[k][i] = index
                    if z[i] < 0 and self.w_neg[k][i] is None:
                        self.w_neg[k][i] = index
                    gained = True
                    if self.w_pos[k][i] is not None and self.w_neg[k][i] is not None:
                        self.status[k][i], self.stage[k][i] = UnitStatus.UNSTABLE, stage
        return gained


def analyze_stability(
    net: Network,
    domain: str | Domain | None = None,
    timeout: float | Deadline = DEFAULT_TIMEOUT,
    samples: np.ndarray | None = None,
    seed: int = 0,
    use_lp: bool = True,
    exact: bool = True,
) -> StabilityReport:
    """Classify every ReLU unit of ``net`` over ``domain`` (default ``[0, 1]`` on every input).

    Soundness: ACTIVE / INACTIVE verdicts rest only on rigorous bounds (interval, symbolic, LP
    bounds certified from duals, exact vertex evaluation for the first layer, certified branch
    and bound); UNSTABLE verdicts on two exactly checked witness points inside the domain. Units
    not decided within ``timeout`` seconds (or by the :class:`Deadline` given) are UNDECIDED;
    ``timeout`` 0 runs the cheap bound stages only, NaN, infinite or negative values raise an
    :class:`~equivcheck.errors.InputError`. ``samples`` (n, in_dim) are extra
    witness candidates, e.g. training images (points outside the domain are ignored).
    For a domain of several boxes a unit is stable only if it is stable with the same phase on
    every box, and unstable if some box shows it unstable (or it is active on one box and
    inactive on another, with witnesses from both).
    """
    start = time.monotonic()
    deadline = Deadline.of(timeout, allow_zero=True)
    dom = parse_domain(domain, net.in_dim)
    per_box = []
    stage_seconds: dict[str, float] = {}
    for box in dom.boxes:
        per_box.append(_analyze_box(net, box, deadline, samples, seed, use_lp, exact, stage_seconds))
    state = per_box[0] if len(per_box) == 1 else _combine(per_box)
    if len(per_box) > 1:
        _union_witnesses(net, dom, state, seed, deadline)
    layers = tuple(
        LayerStabilityReport(
            layer=k,
            width=net.layers[k].out_dim,
            status=tuple(state.status[k]),
            stage=tuple(state.stage[k]),
            witness_active=tuple(state.w_pos[k]),
            witness_inactive=tuple(state.w_neg[k]),
        )
        for k in state.relu_layers
    )
    bounds = tuple(state.bounds) if len(per_box) == 1 and state.bounds is not None else None
    return StabilityReport(layers, tuple(state.witnesses), dom.describe(), time.monotonic() - start,
                           stage_seconds, bounds)


def _combine(states: list[_State]) -> _State:
    first = states[0]
    out = _State.__new__(_State)
    out.relu_layers = first.relu_layers
    out.witnesses = []
    out.status, out.stage, out.w_pos, out.w_neg = {}, {}, {}, {}
    offsets = []
    for s in states:
        offsets.append(len(out.witnesses))
        out.witnesses.extend(s.witnesses)
    for k in first.relu_layers:
        n = len(first.status[k])
        out.status[k], out.stage[k] = [], []
        out.w_pos[k], out.w_neg[k] = [None] * n, [None] * n
        for i in range(n):
            sts = [s.status[k][i] for s in states]
            for s, off in zip(states, offsets):
                if s.w_pos[k][i] is not None and out.w_pos[k][i] is None:
                    out.w_pos[k][i] = s.w_pos[k][i] + off
                if s.w_neg[k][i] is not None and out.w_neg[k][i] is None:
                    out.w_neg[k][i] = s.w_neg[k][i] + off
            if all(st is sts[0] for st in sts) and sts[0].stable:
                status, stage = sts[0], max((s.stage[k][i] for s in states), key=_stage_rank)
            elif out.w_pos[k][i] is not None and out.w_neg[k][i] is not None:
                status, stage = UnitStatus.UNSTABLE, Stage.WITNESS
            else:
                status, stage = UnitStatus.UNDECIDED, Stage.TIMEOUT
            out.status[k].append(status)
            out.stage[k].append(stage)
    return out


def _union_witnesses(net: Network, dom: Domain, state: _State, seed: int,
                     deadline: Deadline) -> None:
    """Witnesses for units whose verdicts differ between boxes (e.g. inactive on one box and
    active on another): the best sampled point of each box per missing sign, checked exactly,
    while time lasts."""
    rng = np.random.default_rng(seed)
    for box in dom.boxes:
        if deadline.expired():
            return
        f32 = box.float32_box()
        lo, hi = f32 if f32 is not None else (box.lower_float(), box.upper_float())
        pts = np.vstack([((lo + hi) / 2)[None, :], lo[None, :], hi[None, :],
                         lo + rng.random((256, len(lo))) * (hi - lo)])
        zs = net.pre_activations(pts)
        for k in state.relu_layers:
            for i, status in enumerate(state.status[k]):
                if status is not UnitStatus.UNDECIDED:
                    continue
                for sign, store in ((1, state.w_pos), (-1, state.w_neg)):
                    if store[k][i] is not None:
                        continue
                    x = pts[int(np.argmax(sign * zs[k][:, i]))]
                    if deadline.expired() or not box.contains(x):
                        continue
                    z = exact_preactivations(net, [Fraction(float(v)) for v in x])[k][i]
                    if sign * z > 0:
                        store[k][i] = len(state.witnesses)
                        state.witnesses.append(tuple(float(v) for v in x))
                if state.w_pos[k][i] is not None and state.w_neg[k][i] is not None:
                    state.status[k][i], state.stage[k][i] = UnitStatus.UNSTABLE, Stage.WITNESS


def _stage_rank(stage: Stage) -> int:
    return list(Stage).index(stage)


def _analyze_box(net, box, deadline, samples, seed, use_lp, exact, stage_seconds) -> _State:
    st = _State(net, box, deadline)
    lo, hi = st.lo, st.hi
    clock = time.monotonic()

    def lap(name):
        nonlocal clock
        now = time.monotonic()
        stage_seconds[name] = stage_seconds.get(name, 0.0) + now - clock
        clock = now

    # 1. interval bounds
    bounds = interval_bounds(net, lo, hi)
    st.record_bounds(bounds, Stage.INTERVAL)
    lap("interval")
    # 2. symbolic bounds (layer by layer, each from the tightened earlier layers)
    st.bounds = bounds
    vertices = []
    for k in range(1, len(net.layers)):
        if st.time_left() <= 0:
            break  # later layers keep their interval bounds
        bounds[k] = intersect(bounds[k], symbolic_layer(net, k, bounds, lo, hi))
        if k + 1 < len(net.layers):
            bounds[k + 1] = intersect(bounds[k + 1], _interval_next(net, k + 1, bounds, lo, hi))
    st.record_bounds(bounds, Stage.SYMBOLIC)
    lap("symbolic")
    # 3. witnesses: vertices chosen by the linear bounds, random points, training samples
    if st.open_units() and st.time_left() > 0:
        vlo = st.plo if st.plo is not None else lo
        vhi = st.phi if st.phi is not None else hi
        for k in st.relu_layers:
            if st.time_left() <= 0:
                break
            pos, neg = st.needs()[k]
            rows = np.flatnonzero(pos | neg)
            if len(rows) == 0:
                continue
            n = net.layers[k].out_dim
            c = np.vstack([np.eye(n)[rows], -np.eye(n)[rows]])
            _, nu = back_substitute(net, k, c, bounds, lo, hi)
            vertices.append(np.where(nu > 0, vhi, vlo))
        rng = np.random.default_rng(seed)
        cand = list(vertices)
        n_rand = RANDOM_POINTS if net.in_dim > 64 else 16 * RANDOM_POINTS
        cand.append(vlo + rng.random((n_rand, net.in_dim)) * (vhi - vlo))
        cand.append(np.where(rng.random((RANDOM_POINTS, net.in_dim)) < 0.5, vlo, vhi))
        cand.append(((vlo + vhi) / 2)[None, :])
        if samples is not None and len(samples):
            s = np.asarray(samples, dtype=np.float64).reshape(len(samples), -1)
            inside = np.all((s >= vlo) & (s <= vhi), axis=1)
            cand.append(s[inside])
        st.try_witnesses(np.vstack(cand))
        _local_search(st, np.vstack(cand), rng)
    lap("witness")
    # 4. first hidden layer: exact vertex evaluation decides every unit
    if st.relu_layers and st.relu_layers[0] == 0:
        _first_layer_exact(st)
    # 5. LP bounds (certified), layer by layer, with their points as witness candidates
    if use_lp:
        for k in st.relu_layers:
            if k == 0 or st.time_left() <= 0:
                continue
            bounds[k] = intersect(bounds[k], symbolic_layer(net, k, bounds, lo, hi))
            st.record_bounds(bounds, Stage.LP)
            if st.time_left() <= 0:
                continue
            if k == st.relu_layers[-1]:
                units = [i for i, s in enumerate(st.status[k]) if s is UnitStatus.UNDECIDED]
            else:  # tighter bounds of unstable units here make every later LP tighter
                units = [i for i, s in enumerate(st.status[k]) if not s.stable]
            if units:
                pts: list[np.ndarray] = []
                bounds[k] = intersect(bounds[k], lp_tighten_layer(net, k, bounds, lo, hi, units,
                                                                  st.deadline, pts))
                st.record_bounds(bounds, Stage.LP)
                if pts:
                    st.try_witnesses(np.vstack(pts))
        lap("lp")
    # 6. exact: input splitting for low-dimensional inputs, then certified branch and bound
    if exact and net.in_dim <= SPLIT_MAX_INPUTS and st.open_units():
        _input_split(st, bounds)
        lap("exact")
    if exact and net.in_dim > SPLIT_MAX_INPUTS:
        for k in st.relu_layers:
            for i in range(net.layers[k].out_dim):
                if st.status[k][i] is not UnitStatus.UNDECIDED or st.time_left() <= 0:
                    continue
                for sign in (1, -1):
                    if st.status[k][i] is not UnitStatus.UNDECIDED:
                        break
                    have = st.w_pos[k][i] if sign > 0 else st.w_neg[k][i]
                    if have is None:
                        _branch_and_bound(st, bounds, k, i, sign)
        lap("exact")
    return st


def _local_search(st: _State, cand: np.ndarray, rng, steps: int = 30) -> None:
    """For each missing witness, climb ``sign * z`` from the best candidate (signed gradient).

    Within a linear region the gradient of a pre-activation is a product of masked weights; we
    step along its sign, a fraction of the box width that shrinks, and keep the box.
    """
    net = st.net
    if st.time_left() <= 0:
        return
    vlo = st.plo if st.plo is not None else st.lo
    vhi = st.phi if st.phi is not None else st.hi
    width = vhi - vlo
    pts = st.project(cand)
    zs = net.pre_activations(pts)
    starts, targets = [], []
    for k, (pos, neg) in st.needs().items():
        for sign, mask in ((1.0, pos), (-1.0, neg)):
            for i in np.flatnonzero(mask):
                starts.append(pts[int(np.argmax(sign * zs[k][:, i]))])
                targets.append((k, int(i), sign))
    if not targets:
        return
    x = np.array(starts)
    found: dict[int, np.ndarray] = {}  # target -> the first point that reached it
    by_layer: dict[int, list[int]] = {}
    for t, (k, _, _) in enumerate(targets):
        by_layer.setdefault(k, []).append(t)
    rows = {k: (np.array(ts), np.array([targets[t][1] for t in ts]),
                np.array([targets[t][2] for t in ts])) for k, ts in by_layer.items()}
    for step in range(steps):
        if st.time_left() <= 0:
            return
        grads = np.zeros_like(x)
        pre = net.pre_activations(x)
        for k, (ts, units, signs) in rows.items():  # batched: one matrix product per layer
            g = signs[:, None] * net.layers[k].weight[units]
            for j in range(k - 1, -1, -1):
                if net.layers[j].relu:
                    g = g * (pre[j][ts] > 0)
                g = g @ net.layers[j].weight
            grads[ts] = g
        eta = 0.5 * (1.0 - step / steps) ** 2 + 1e-3
        x = st.project(x + eta * width * np.sign(grads))
        pre = net.pre_activations(x)
        for k, (ts, units, signs) in rows.items():
            for t in ts[signs * pre[k][ts, units] > 0]:
                found.setdefault(int(t), x[t].copy())
        if len(found) == len(targets):
            break
    if found:
        st.try_witnesses(np.array(list(found.values())))


def _interval_next(net, k, bounds, lo, hi) -> LayerBounds:
    from equivcheck.bounds.propagation import _interval_step

    return _interval_step(net, k, bounds, lo, hi)


def _first_layer_exact(st: _State) -> None:
    """Layer 0 is affine in the input: its exact max / min over the box is at a vertex.

    Evaluated exactly: with float weights ``W = M 2^e`` (integers M) and the box's bounds over a
    common denominator, in Python integers; else in ``Fraction`` s. Units are done in chunks
    between which the deadline is checked (units left are simply not decided here)."""
    layer = st.net.layers[0]
    todo = [i for i, s in enumerate(st.status[0]) if s is UnitStatus.UNDECIDED]
    if not todo or st.time_left() <= 0:
        return
    b = layer.affine.rational_bias()
    dyadic = layer.affine.dyadic_weight
    for start in range(0, len(todo), FIRST_LAYER_CHUNK):
        if st.time_left() <= 0:
            return
        rows = todo[start:start + FIRST_LAYER_CHUNK]
        if dyadic is not None:
            tops, bots = _vertex_extremes_dyadic(dyadic, rows, st.box)
        else:
            tops, bots = _vertex_extremes(layer.affine.rational_weight(), rows, st.box)
        for i, top, bot in zip(rows, tops, bots):
            if top + b[i] <= 0:
                st.status[0][i], st.stage[0][i] = UnitStatus.INACTIVE, Stage.EXACT
            elif bot + b[i] >= 0:
                st.status[0][i], st.stage[0][i] = UnitStatus.ACTIVE, Stage.EXACT


def _vertex_extremes(w: np.ndarray, rows: list[int], box: Box) -> tuple[list, list]:
    """Exact max and min of ``w[i] . x`` over the box for each row i (rational weights)."""
    tops, bots = [], []
    for i in rows:
        row = w[i]
        tops.append(sum((r * (hi if r > 0 else lo) for r, lo, hi in zip(row, box.lower, box.upper)
                         if r != 0), Fraction(0)))
        bots.append(sum((r * (lo if r > 0 else hi) for r, lo, hi in zip(row, box.lower, box.upper)
                         if r != 0), Fraction(0)))
    return tops, bots


def _vertex_extremes_dyadic(dyadic: tuple[np.ndarray, int], rows: list[int], box: Box
                            ) -> tuple[list, list]:
    """:func:`_vertex_extremes` for float weights ``M 2^e``, in Python integers."""
    m, e = dyadic
    den = math.lcm(*(q.denominator for q in box.lower + box.upper))
    lo = np.empty(box.dim, dtype=object)
    hi = np.empty(box.dim, dtype=object)
    lo[:] = [q.numerator * (den // q.denominator) for q in box.lower]
    hi[:] = [q.numerator * (den // q.denominator) for q in box.upper]
    sub = m[rows]
    pos = np.where(sub > 0, sub, 0)
    neg = np.where(sub < 0, sub, 0)
    top = pos.dot(hi) + neg.dot(lo)
    bot = pos.dot(lo) + neg.dot(hi)
    scale = Fraction(2) ** e / den
    return [int(t) * scale for t in top], [int(v) * scale for v in bot]


def _branch_and_bound(st: _State, bounds: list[LayerBounds], k: int, i: int, sign: int) -> None:
    """Decide whether ``sign * z_{k,i} > 0`` somewhere in the box.

    Depth-first over the phases of earlier unstable units. A node is closed when the LP bound of
    ``sign * z`` (certified from its dual) is ``<= 0``; if every node closes the unit is proved
    stable (INACTIVE for sign +1, ACTIVE for -1). LP points are tried as exact witnesses.
    """
    net = st.net
    layer = net.layers[k]
    stack: list[dict] = [{}]
    nodes = 0
    stop = time.monotonic() + QUESTION_SECONDS
    while stack:
        if st.time_left() <= 0 or nodes >= MAX_NODES_PER_QUESTION or time.monotonic() > stop:
            return
        phase = stack.pop()
        nodes += 1
        nb = _phase_bounds(net, bounds, phase, k, st.lo, st.hi)
        if nb is None:
            continue  # the rigorous bounds show no input of the box has these phases
        top_sym = back_substitute(net, k, sign * np.eye(layer.out_dim)[i:i + 1], nb, st.lo, st.hi)[0][0]
        if top_sym <= 0.0:
            continue
        relax = LinearRelaxation.build(net, k, nb, st.lo, st.hi, phase)
        solver = LPSolver(relax)
        cost = np.zeros(relax.a.shape[1])
        cost[relax.out_cols] = -sign * layer.weight[i]  # minimise -sign*(w.h): max of sign*z
        got, v = solver.minimize(cost, st.time_left())
        if got is not None:
            hmax = np.maximum(np.abs(relax.col_lo[relax.out_cols]), np.abs(relax.col_hi[relax.out_cols]))
            extra = 4.0 * 2.0**-53 * (np.abs(layer.weight[i]) @ hmax + abs(layer.bias[i]) + abs(got)) + 1e-300
            if not layer.affine.is_exact_float:
                extra *= 2.0
            top = -got + sign * float(layer.bias[i]) + extra  # rigorous max of sign * z
            if top <= 0.0:
                continue
        if v is None:
            return  # LP failed: leave undecided
        x = v[: relax.n_inputs]
        st.try_witnesses(x[None, :], Stage.EXACT)
        if st.status[k][i] is not UnitStatus.UNDECIDED:
            return
        have = st.w_pos[k][i] if sign > 0 else st.w_neg[k][i]
        if have is not None:
            return
        # branch on the unstable unit whose relaxation gap at the LP point, weighted by how much
        # the unit can move the objective (|w| propagated back through |W|), is largest
        best, best_viol = None, 0.0
        influence = np.abs(layer.weight[i])
        for j in range(k - 1, -1, -1):
            if net.layers[j].relu:
                lj, uj = nb[j].lower, nb[j].upper
                zc = relax.z_cols[j]
                hc = zc + net.layers[j].out_dim
                viol = (v[hc] - np.maximum(v[zc], 0.0)) * influence
                for u in np.flatnonzero((lj < 0) & (uj > 0)):
                    if (j, int(u)) in phase:
                        continue
                    score = viol[u] + 1e-12 * min(-lj[u], uj[u])
                    if score > best_viol:
                        best, best_viol = (j, int(u)), score
            influence = influence @ np.abs(net.layers[j].weight)
        if best is None:
            return  # nothing left to split: the point did not check exactly; leave undecided
        for ph in (-1, 1):
            child = dict(phase)
            child[best] = ph
            stack.append(child)
    st.proved_stable(bounds, k, i, sign)


def _input_split(st: _State, bounds: list[LayerBounds]) -> None:
    """Input splitting with growing per-question budgets, so that easy questions are settled
    before the hard ones use up the time (see :func:`_input_split_pass`)."""
    for budget in SPLIT_BUDGETS:
        if st.time_left() <= 0 or st.open_units() == 0:
            return
        _input_split_pass(st, bounds, budget)


def _input_split_pass(st: _State, bounds: list[LayerBounds], budget: int) -> None:
    """Prove stability by bisecting the input box (for few inputs, as ReluVal / nnenum do).

    A question "is sign * z_{k,i} > 0 somewhere?" is closed on a sub-box when the rigorous
    symbolic bounds over that sub-box (intersected with the proved global bounds) say no; the
    unit is proved stable when every sub-box of a cover of the box closes it. All questions share
    one tree of sub-boxes (largest first); a question still open after
    ``budget`` sub-boxes is given up, so hard questions do not starve easy
    ones. Sub-box centres are tried as witnesses. The float sub-boxes share their split points,
    so together they cover the (outward rounded) box.
    """
    import heapq

    from equivcheck.bounds.propagation import symbolic_bounds

    net = st.net
    width0 = np.where(st.hi > st.lo, st.hi - st.lo, 1.0)

    def open_questions():
        qs = set()
        for k, (pos, neg) in st.needs().items():
            qs.update((k, int(i), 1) for i in np.flatnonzero(pos))
            qs.update((k, int(i), -1) for i in np.flatnonzero(neg))
        return qs

    initial = open_questions()
    if not initial:
        return
    # how strongly each input can move each questioned unit (|w| through |W|): split there
    sens = {}
    for q in initial:
        g = np.abs(net.layers[q[0]].weight[q[1]])
        for j in range(q[0] - 1, -1, -1):
            g = g @ np.abs(net.layers[j].weight)
        sens[q] = g
    given_up: set = set()
    count: dict = {}
    heap = [(0.0, 0, st.lo.copy(), st.hi.copy(), frozenset(initial))]
    counter = 1
    timed_out = False
    while heap:
        if st.time_left() <= 0:
            timed_out = True
            break
        _, _, lo, hi, qs = heapq.heappop(heap)
        live = open_questions() - given_up
        qs = frozenset(q for q in qs if q in live)
        if not qs:
            continue
        upto = max(q[0] for q in qs)
        b = symbolic_bounds(net, lo, hi, upto=upto, base=bounds)
        left = frozenset(q for q in qs if (b[q[0]].upper[q[1]] > 0.0 if q[2] > 0 else b[q[0]].lower[q[1]] < 0.0))
        if not left:
            continue
        st.try_witnesses(((lo + hi) / 2)[None, :])
        live = open_questions()
        left = frozenset(q for q in left if q in live)
        for q in left:
            count[q] = count.get(q, 0) + 1
            if count[q] > budget:
                given_up.add(q)
        left = left - given_up
        if not left:
            continue
        smear = sum(sens[q] for q in left) * (hi - lo)
        d = int(np.argmax(smear)) if np.any(smear > 0) else int(np.argmax((hi - lo) / width0))
        mid = (lo[d] + hi[d]) / 2
        if not lo[d] < mid < hi[d]:
            given_up.update(left)  # cannot split further
            continue
        for a, c in ((lo[d], mid), (mid, hi[d])):
            nlo, nhi = lo.copy(), hi.copy()
            nlo[d], nhi[d] = a, c
            heapq.heappush(heap, (-float(np.prod((nhi - nlo) / width0)), counter, nlo, nhi, left))
            counter += 1
    unresolved = set(given_up)
    if timed_out:
        for item in heap:
            unresolved.update(item[4])
    live = open_questions()
    for (k, i, sign) in sorted(initial):
        if (k, i, sign) in unresolved or (k, i, sign) not in live:
            continue
        if st.status[k][i] is UnitStatus.UNDECIDED:
            st.proved_stable(bounds, k, i, sign)


def _phase_bounds(net, bounds, phase, k, lo, hi) -> list[LayerBounds] | None:
    """Rigorous bounds of layers < k over the inputs of the box whose units have ``phase``.

    Fixing a phase clips that unit's bounds at 0; later layers are then recomputed with the
    symbolic bounds. None when some unit's bounds become empty (no such input exists).
    """
    out = list(bounds)
    first = min((j for j, _ in phase), default=k)
    for j in range(first, k):
        b = out[j]
        if j > first:
            b = intersect(b, symbolic_layer(net, j, out, lo, hi))
        fixed = [(u, ph) for (jj, u), ph in phase.items() if jj == j]
        if fixed:
            lower, upper = b.lower.copy(), b.upper.copy()
            for u, ph in fixed:
                if ph > 0:
                    lower[u] = max(lower[u], 0.0)
                else:
                    upper[u] = min(upper[u], 0.0)
            b = LayerBounds(lower, upper)
        if np.any(b.lower > b.upper):
            return None
        out[j] = b
    return out
