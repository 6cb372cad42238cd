"""The bookkeeping of one stability analysis and its witness search (internal to
:mod:`equivcheck.bounds.stability`).

A unit becomes UNSTABLE only through two points of the domain, checked in exact rational
arithmetic on the stored weights, one where its pre-activation is ``> 0`` and one where it is
``< 0``; ACTIVE / INACTIVE only through rigorous bounds (:meth:`AnalysisState.record_bounds`) or
an exact proof (:meth:`AnalysisState.proved_stable`).
"""

from __future__ import annotations

import time
from dataclasses import replace
from fractions import Fraction

import numpy as np

from equivcheck.bounds.interval import LayerBounds, interval_bounds
from equivcheck.bounds.stability_report import LayerStabilityReport, Stage
from equivcheck.core.ascent import ANNEALED, ascend, preactivation_objective
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Box, Domain
from equivcheck.core.exact import pre_activations_exact, snap
from equivcheck.core.network import Network
from equivcheck.core.options import UnitStability
from equivcheck.core.rational import float_down, float_up


class UnitVerdicts:
    """Per ReLU unit: its :class:`UnitStability`, the :class:`Stage` that decided it, and the
    indices into ``witnesses`` of a point where it is strictly positive (``w_pos``) and one
    where it is strictly negative (``w_neg``). Mutable; owned by one analysis."""

    def __init__(self, net: Network) -> None:
        self.relu_layers = [k for k, layer in enumerate(net.layers) if layer.relu]
        widths = {k: net.layers[k].out_dim for k in self.relu_layers}
        self.status = {k: [UnitStability.UNDECIDED] * n for k, n in widths.items()}
        self.stage = {k: [Stage.TIMEOUT] * n for k, n in widths.items()}
        self.w_pos: dict[int, list[int | None]] = {k: [None] * n for k, n in widths.items()}
        self.w_neg: dict[int, list[int | None]] = {k: [None] * n for k, n in widths.items()}
        self.witnesses: list[tuple[float, ...]] = []

    def needs(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Per layer: masks of units still lacking a positive / a negative witness."""
        out = {}
        for k in self.relu_layers:
            und = np.array([s is UnitStability.UNDECIDED for s in self.status[k]])
            pos = und & np.array([w is None for w in self.w_pos[k]])
            neg = und & np.array([w is None for w in self.w_neg[k]])
            out[k] = (pos, neg)
        return out

    def open_units(self) -> int:
        """How many units are still UNDECIDED."""
        return sum(s is UnitStability.UNDECIDED for k in self.relu_layers for s in self.status[k])

    def layer_reports(self, net: Network) -> tuple[LayerStabilityReport, ...]:
        """The verdicts as frozen reports, one per ReLU layer."""
        return tuple(
            LayerStabilityReport(
                layer=k,
                width=net.layers[k].out_dim,
                status=tuple(self.status[k]),
                stage=tuple(self.stage[k]),
                witness_active=tuple(self.w_pos[k]),
                witness_inactive=tuple(self.w_neg[k]),
            )
            for k in self.relu_layers
        )

    @classmethod
    def combine(cls, net: Network, parts: list[UnitVerdicts]) -> UnitVerdicts:
        """The verdicts over the union of the parts' boxes: stable only when stable with the same
        phase on every box, unstable when witnesses of both signs exist on some boxes, else
        UNDECIDED. The parts are not changed."""
        out = cls(net)
        offsets = []
        for s in parts:
            offsets.append(len(out.witnesses))
            out.witnesses.extend(s.witnesses)
        for k in out.relu_layers:
            for i in range(len(out.status[k])):
                sts = [s.status[k][i] for s in parts]
                for s, off in zip(parts, offsets):
                    if s.w_pos[k][i] is not None and out.w_pos[k][i] is None:
                        out.w_pos[k][i] = s.w_pos[k][i] + off
                    if s.w_neg[k][i] is not None and out.w_neg[k][i] is None:
                        out.w_neg[k][i] = s.w_neg[k][i] + off
                if all(st is sts[0] for st in sts) and sts[0].stable:
                    status = sts[0]
                    stage = max((s.stage[k][i] for s in parts), key=lambda g: g.rank)
                elif out.w_pos[k][i] is not None and out.w_neg[k][i] is not None:
                    status, stage = UnitStability.UNSTABLE, Stage.WITNESS
                else:
                    status, stage = UnitStability.UNDECIDED, Stage.TIMEOUT
                out.status[k][i], out.stage[k][i] = status, stage
        return out


class AnalysisState(UnitVerdicts):
    """The verdicts of one box under analysis, with the analysis' own sound ``bounds`` of every
    layer (a list nobody else holds; proved facts clip it) and its deadline."""

    def __init__(self, net: Network, box: Box, deadline: Deadline | float) -> None:
        super().__init__(net)
        self.net = net
        self.box = box
        if not isinstance(deadline, Deadline):  # a bare time.monotonic() value
            deadline = Deadline(float(deadline), max(0.0, float(deadline) - time.monotonic()))
        self.deadline = deadline
        self.bounds: list[LayerBounds] | None = None
        f32 = box.float32_box()
        self.lo, self.hi = box.lower_float(), box.upper_float()
        self.plo, self.phi = f32 if f32 is not None else (None, None)
        # the smallest floats inside the box's lower bounds and the largest inside its upper ones
        # (a float equal to a strict bound is outside): a float point is in the box exactly when
        # it lies between them
        ilo = np.array([float_up(q) for q in box.lower])
        ihi = np.array([float_down(q) for q in box.upper])
        on_lo = np.array([s and float(v) == q for v, q, s in zip(ilo, box.lower, box.lower_strict)], bool)
        on_hi = np.array([s and float(v) == q for v, q, s in zip(ihi, box.upper, box.upper_strict)], bool)
        self._inner = (np.where(on_lo, np.nextafter(ilo, np.inf), ilo),
                       np.where(on_hi, np.nextafter(ihi, -np.inf), ihi))

    def time_left(self) -> float:
        """Seconds to the deadline (<= 0 once it has passed)."""
        return self.deadline.end - time.monotonic()

    def record_bounds(self, stage: Stage) -> None:
        """Mark the undecided units that :attr:`bounds` show stable as decided by ``stage``."""
        for k in self.relu_layers:
            active, inactive = self.bounds[k].active, self.bounds[k].inactive
            for i in range(len(active)):
                if self.status[k][i] is not UnitStability.UNDECIDED:
                    continue
                if active[i]:
                    self.status[k][i], self.stage[k][i] = UnitStability.ACTIVE, stage
                elif inactive[i]:
                    self.status[k][i], self.stage[k][i] = UnitStability.INACTIVE, stage

    def proved_stable(self, k: int, i: int, sign: int) -> None:
        """Record that ``sign * z_{k,i} <= 0`` was proved by the exact stage, and clip
        :attr:`bounds` (later questions may rely on the fact)."""
        lower, upper = self.bounds[k].lower.copy(), self.bounds[k].upper.copy()
        if sign > 0:
            self.status[k][i], self.stage[k][i] = UnitStability.INACTIVE, Stage.EXACT
            upper[i] = min(upper[i], 0.0)
        else:
            self.status[k][i], self.stage[k][i] = UnitStability.ACTIVE, Stage.EXACT
            lower[i] = max(lower[i], 0.0)
        self.bounds[k] = LayerBounds(lower, upper)

    def project(self, pts: np.ndarray) -> np.ndarray:
        """Points moved into the box's float32 grid (so onnxruntime can run them exactly)."""
        if self.plo is None:
            return np.clip(pts, self.lo, self.hi)
        return snap(pts, self.plo, self.phi)

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

    def _inside(self, x: np.ndarray) -> bool:
        """Exactly whether the float point ``x`` lies in the box (:attr:`_inner`)."""
        lo, hi = self._inner
        x = np.asarray(x, dtype=np.float64)
        return x.shape == lo.shape and bool(np.all((x >= lo) & (x <= hi)))

    def _signs(self, x: np.ndarray) -> dict[int, np.ndarray]:
        """Per ReLU layer, the sign of every pre-activation at the float point ``x``: +1 or -1
        where rigorous interval bounds of the point (outward-rounded float arithmetic, valid for
        the exact weights) exclude 0, else 0 (no witness from this point: a value within
        rounding of 0, such as a residual pass-through unit carrying a ReLU's exact 0). On a CNN
        this is what makes a witness cheap: resnet_2b's 9,316 units took 0.3 s per point in
        rational arithmetic."""
        pt = np.asarray(x, dtype=np.float64)
        bounds = interval_bounds(self.net, pt, pt)
        return {k: np.where(bounds[k].lower > 0, 1, np.where(bounds[k].upper < 0, -1, 0))
                for k in self.relu_layers}

    def _verify(self, x: np.ndarray, stage: Stage) -> bool:
        """Check ``x`` rigorously (:meth:`_signs`); record it as a witness of every undecided
        unit it helps."""
        if not self._inside(x):
            return False
        needs = self.needs()
        signs = self._signs(x)
        index = None
        gained = False
        for k in self.relu_layers:
            z = signs[k]
            pos, neg = needs[k]
            for i in np.flatnonzero((pos & (z > 0)) | (neg & (z < 0))):
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
                        self.status[k][i], self.stage[k][i] = UnitStability.UNSTABLE, stage
        return gained


_State = AnalysisState  # the name _local_search's signature uses


def union_witnesses(net: Network, dom: Domain, state: UnitVerdicts, seed: int,
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
                if status is not UnitStability.UNDECIDED:
                    continue
                for sign, store in ((1, state.w_pos), (-1, state.w_neg)):
                    if store[k][i] is not None:
                        continue
                    x = pts[int(np.argmax(sign * zs[k][:, i]))]
                    if deadline.expired() or not box.contains(x):
                        continue
                    z = pre_activations_exact(net.layers, [Fraction(float(v)) for v in x])[k][i]
                    if sign * z > 0:
                        store[k][i] = len(state.witnesses)
                        state.witnesses.append(tuple(float(v) for v in x))
                if state.w_pos[k][i] is not None and state.w_neg[k][i] is not None:
                    state.status[k][i], state.stage[k][i] = UnitStability.UNSTABLE, Stage.WITNESS


CLIMB_ENTRIES = 40_000_000  # climbs x hidden units evaluated at once by _local_search (320 MB)


def _local_search(st: AnalysisState, cand: np.ndarray, rng, steps: int = 30) -> None:
    """For each missing witness, climb ``sign * z`` from the best candidate with the shared
    signed-gradient ascent (:func:`equivcheck.core.ascent.ascend`: annealed steps, always taken,
    kept on the box's float grid by ``st.project``), then offer the first point that reached each
    sign to the exact check. ``rng`` is unused (kept for the callers)."""
    if st.time_left() <= 0:
        return
    net = st.net
    vlo = st.plo if st.plo is not None else st.lo
    vhi = st.phi if st.phi is not None else st.hi
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
    most = max(64, CLIMB_ENTRIES // sum(z.shape[1] for z in zs))  # climbs x units held at once
    if len(targets) > most:  # a wide network (a CNN): climb for an even random share
        keep = np.sort(np.random.default_rng(len(targets)).choice(len(targets), most, replace=False))
        starts, targets = [starts[j] for j in keep], [targets[j] for j in keep]
    layers, units, signs = (np.array(column) for column in zip(*targets))
    # per target, the first point the climb reached with sign * z > 0 (the starts do not count)
    x, value = ascend(preactivation_objective(net, layers, units, signs), np.array(starts),
                      st.project, vhi - vlo, st.deadline, replace(ANNEALED, rounds=steps),
                      start_value=np.full(len(starts), -np.inf), goal=0.0)
    if np.any(value > 0):
        st.try_witnesses(x[value > 0])


MULTI_POOL = 20_000  # random points from which multi_start_search picks its starts ...
MULTI_STARTS = 16  # ... the best this many per missing witness
MULTI_ROUNDS = 60  # annealed moves per climb
MULTI_SHARE, MULTI_SECONDS = 0.1, 5.0  # at most this share of the time left, and seconds


def multi_start_search(st: AnalysisState, rng: np.random.Generator, pool: int = MULTI_POOL,
                       starts: int = MULTI_STARTS, rounds: int = MULTI_ROUNDS) -> None:
    """For each missing witness, an annealed climb of ``sign * z`` (``rounds`` moves, on the
    box's float grid) from each of the ``starts`` best of ``pool`` random points of the box
    (which are offered first); the points that reached the sign are offered to the exact check.
    Takes at most ``MULTI_SHARE`` of the time left and ``MULTI_SECONDS``. (Measured on ACAS Xu
    over prop_1 after the cheap stages: 16 starts x 60 rounds find 5 more unstable units on
    N2,5 (4 x 30: 3), 4 on N2,7 (2); the one climb of :func:`_local_search` misses such units,
    positive on a sliver of the box, which then cost the input splitting its whole time.)"""
    if st.time_left() <= 0:
        return
    net = st.net
    vlo = st.plo if st.plo is not None else st.lo
    vhi = st.phi if st.phi is not None else st.hi
    pts = st.project(vlo + rng.random((pool, net.in_dim)) * (vhi - vlo))
    zs = net.pre_activations(pts)
    st.try_witnesses(pts[[int(np.argmax(zs[k][:, i] * s)) for k in st.relu_layers
                          for i in range(net.layers[k].out_dim) for s in (1, -1)]])
    rows, targets = [], []
    for k, (pos, neg) in st.needs().items():
        for sign, mask in ((1.0, pos), (-1.0, neg)):
            for i in np.flatnonzero(mask):
                v = sign * zs[k][:, i]
                top = np.argpartition(-v, starts - 1)[:starts] if starts < len(v) else np.arange(len(v))
                rows.append(top)
                targets.extend([(k, int(i), sign)] * len(top))
    if not targets:
        return
    layers, units, signs = (np.array(column) for column in zip(*targets))
    x, value = ascend(preactivation_objective(net, layers, units, signs), pts[np.concatenate(rows)],
                      st.project, vhi - vlo, st.deadline.sub(MULTI_SHARE, seconds=MULTI_SECONDS),
                      replace(ANNEALED, rounds=rounds), goal=0.0)
    if np.any(value > 0):
        st.try_witnesses(x[value > 0])
