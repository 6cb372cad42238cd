"""Exact counting of the linear regions of a small ReLU network on a box.

A *linear region* is an activation pattern (which ReLUs are active, layer by layer) whose set of
inputs has a non-empty interior. :func:`count_regions` finds them by a depth-first search over
activation patterns; the upper bounds are in :mod:`equivcheck.regions.bounds`.

Soundness of the count. The search uses a float LP (HiGHS, through
:class:`equivcheck.bounds.lp.HighsLP`) only as an oracle; every decision it takes is re-checked
exactly on the stored weights, which are converted to integers times a common denominator
without rounding (:mod:`equivcheck.regions.certificates`):

* a partial pattern is kept only with a *witness point* at which every decided pre-activation is
  exactly (in integer arithmetic) strictly on its side and which lies strictly inside the box;
* a partial pattern is pruned only with an exact *Farkas certificate*: non-negative multipliers
  ``y`` (the LP's duals, read as exact rationals) such that ``sum_r y_r g_r(x) <= 0`` for every
  ``x`` in the box, where the ``g_r`` are the strict inequalities of the pattern and of the open
  box; then no point satisfies all of them;
* each counted region's witness is re-evaluated with the network's own exact rational evaluation
  (``Network`` weights as ``Fraction``) and must reproduce the pattern.

A pre-activation whose gradient is exactly zero on the current region (a dead or constant unit) is
classified by its constant value (active iff > 0) and does not split the region. When the LP cannot
be confirmed either way the branch is *unresolved*; the count is then reported as a lower bound,
as it is when the cap or the timeout stop the search.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from equivcheck.bounds.lp import HighsLP
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Box, Domain
from equivcheck.core.exact import integer_affine, pre_activations_exact, scaled_integers
from equivcheck.core.network import Network
from equivcheck.errors import InputError, UnsupportedModelError
from equivcheck.io.domains import parse_domain

# refined_bound and theorem1_bound are used here; the other names moved to regions.bounds and are
from equivcheck.regions.bounds import MAX_SPARSE_DENSIFIED, refined_bound, theorem1_bound
from equivcheck.regions.certificates import (
    OpenBox,
    Point,
    Row,
    exact_point,
    float_point,
    row_sign,
)

IntLayer = tuple[np.ndarray, np.ndarray, int]  # (W, b, den): integer weights over den (integer_affine)


class CountStatus(str, enum.Enum):
    """How the count ended (only COMPLETE makes it exact)."""

    COMPLETE = "complete"  # every branch decided exactly: the count is exact
    CAP = "cap"  # stopped at the cap: lower bound
    TIMEOUT = "timeout"  # stopped by the timeout: lower bound
    UNRESOLVED = "unresolved"  # some branch could not be decided exactly: lower bound


@dataclass(frozen=True)
class Region:
    """One counted linear region: its pattern (0/1 per ReLU, layer by layer) and an exactly
    verified interior witness (the full input vector, as exact rationals)."""

    pattern: tuple[tuple[int, ...], ...]
    witness: tuple[Fraction, ...]


@dataclass(frozen=True)
class RegionCount:
    """The result of :func:`count_regions`. ``count`` is exact iff ``status`` is COMPLETE; it is
    always a certified lower bound (every counted region has a verified witness)."""

    count: int
    status: CountStatus
    domain: str
    regions: tuple[Region, ...]
    nodes: int
    lp_calls: int
    unresolved: int
    elapsed: float
    theorem1: int
    refined: int | None

    @property
    def exact(self) -> bool:
        return self.status is CountStatus.COMPLETE

    def to_dict(self) -> dict:
        return {
            "count": self.count,
            "exact": self.exact,
            "status": self.status.value,
            "lower_bound": self.count,
            "domain": self.domain,
            "theorem1": self.theorem1,
            "refined_bound": self.refined,
            "nodes": self.nodes,
            "lp_calls": self.lp_calls,
            "unresolved_branches": self.unresolved,
            "elapsed_s": round(self.elapsed, 3),
        }


class _Stop(Exception):
    """Raised inside the search to end it early with ``status`` (the cap or the timeout)."""

    def __init__(self, status: CountStatus):
        self.status = status


class Branch(enum.Enum):
    """What the exact checks made of one branch of the search (see :meth:`_BoxCounter._decide`)."""

    FEASIBLE = "feasible"  # an exactly verified witness point strictly inside the branch
    EMPTY = "empty"  # an exact Farkas certificate: no point of the open box is in the branch
    UNRESOLVED = "unresolved"  # neither could be confirmed: the count becomes a lower bound


@dataclass(frozen=True, eq=False)
class BranchDecision:
    """The answer for one branch: its :class:`Branch` and, when FEASIBLE, the witness."""

    branch: Branch
    witness: np.ndarray | None = None  # FEASIBLE only: a float point, exactly checked


class _SlackLP:
    """max t s.t. G x + g0 >= norms * t, lo + t <= x <= hi - t, x in [lo, hi], t <= tcap."""

    def __init__(self, lo: np.ndarray, hi: np.ndarray):
        self.lp = HighsLP(primal_feasibility_tolerance=1e-10, dual_feasibility_tolerance=1e-10)
        self.lo, self.hi = lo, hi
        self.tcap = float(np.max(hi - lo)) / 2.0
        self.calls = 0

    def solve(self, g: np.ndarray, g0: np.ndarray, norms: np.ndarray):
        """(t, x, y) or None when HiGHS does not report an optimum. ``y`` are the row duals,
        constraint rows first, then the d rows ``x - t >= lo`` and the d rows ``-x - t >= -hi``."""
        self.calls += 1
        d = len(self.lo)
        eye = np.eye(d)
        a = np.vstack(
            [
                np.hstack([g, -norms[:, None]]),
                np.hstack([eye, -np.ones((d, 1))]),
                np.hstack([-eye, -np.ones((d, 1))]),
            ]
        )
        self.lp.load(
            a,
            row_lo=np.r_[-g0, self.lo, -self.hi],
            row_hi=np.full(a.shape[0], np.inf),
            col_lo=np.r_[self.lo, -np.inf],
            col_hi=np.r_[self.hi, self.tcap],
            cost=np.r_[np.zeros(d), -1.0],
        )
        sol = self.lp.solve()
        if not sol.optimal or sol.x is None or sol.row_dual is None:
            return None
        return float(sol.x[d]), sol.x[:d], sol.row_dual


class _BoxCounter:
    """Depth-first enumeration of the activation patterns of ``net`` on one box."""

    def __init__(
        self,
        net: Network,
        box: Box,
        layers: list[IntLayer | None],
        relu_idx: list[int],
        deadline: float | None,
        cap: int | None,
        found: dict,
        on_progress,
        rng,
        samples: int,
    ):
        self.net, self.box, self.layers, self.relu_idx = net, box, layers, relu_idx
        self.deadline, self.cap, self.found, self.on_progress = deadline, cap, found, on_progress
        self.open = OpenBox.of(box)
        self.free, self.fixed = list(self.open.free), list(self.open.fixed)
        self.nodes = 0
        self.unresolved = 0
        self.done = 0.0
        self.lp = _SlackLP(self.open.lo, self.open.hi) if self.free else None
        self.rng = rng
        self.samples = samples
        self._last_report = 0.0

    # -- exact maps --------------------------------------------------------------------------

    def _first_map(self):
        """Pre-activations of the first ReLU layer as (A, c, den): z = (A u + c) / den."""
        w, b, den = self.layers[self.relu_idx[0]]
        xf, fden = scaled_integers([self.box.lower[i] for i in self.fixed])
        a = w[:, self.free] * fden if self.free else np.empty((w.shape[0], 0), dtype=object)
        c = (w[:, self.fixed].dot(xf) if self.fixed else 0) + b * fden
        c = np.asarray(c, dtype=object)
        return a, c, den * fden

    def _next_map(self, level: int, a, c, den, active: np.ndarray):
        """Pre-activations of ReLU layer ``level + 1`` given the active mask of ``level``."""
        nw, nb, nden = self.layers[self.relu_idx[level + 1]]
        w = nw[:, active]
        d = a.shape[1]
        if active.any():
            a2 = w.dot(a[active]) if d else np.empty((w.shape[0], 0), dtype=object)
            c2 = w.dot(c[active]) + nb * den
        else:
            a2 = np.zeros((w.shape[0], d), dtype=object)
            a2[:] = 0
            c2 = nb * den
        return np.asarray(a2, dtype=object), np.asarray(c2, dtype=object), nden * den

    # -- search ------------------------------------------------------------------------------

    def _tick(self, count: int) -> None:
        self.nodes += 1
        now = time.monotonic()
        if self.deadline is not None and now > self.deadline:
            raise _Stop(CountStatus.TIMEOUT)
        if self.on_progress is not None and now - self._last_report > 0.1:
            self._last_report = now
            self.on_progress(self.done, count)

    def _initial_pool(self) -> list[Point]:
        """The box centre and random points strictly inside the box, with their exact ints."""
        box = self.open
        d = len(self.free)
        pool = [exact_point([(lo + hi) / 2 for lo, hi in zip(box.lo_q, box.hi_q)])]
        if self.samples and d:
            u = self.rng.uniform(0.0, 1.0, size=(self.samples, d))
            pts = box.lo + u * (box.hi - box.lo)
            pool.extend(float_point(p) for p in pts if box.strictly_inside(p))
        return pool

    def run(self) -> None:
        n_relu = len(self.relu_idx)
        if n_relu == 0:
            self._leaf((), (), self._initial_pool()[0], ())
            self.done = 1.0
            return
        a, c, den = self._first_map()
        pool = self._initial_pool()
        # stack items: (level, unit, A, c, den, bits (tuple), rows (tuple), pool, weight, consts)
        stack = [(0, 0, a, c, den, (), (), pool, 1.0, ())]
        widths = [self.layers[k][0].shape[0] for k in self.relu_idx]
        offsets = np.cumsum([0] + widths)
        while stack:
            self._tick(len(self.found))
            level, unit, a, c, den, bits, rows, pool, weight, consts = stack.pop()
            if unit == widths[level]:
                if level + 1 == n_relu:
                    self._leaf(self._split_bits(bits, widths), rows, pool[0], consts)
                    self.done += weight
                    continue
                active = np.array(bits[offsets[level] :], dtype=bool)
                a2, c2, den2 = self._next_map(level, a, c, den, active)
                stack.append((level + 1, 0, a2, c2, den2, bits, rows, pool, weight, consts))
                continue
            arow, crow = a[unit], c[unit]
            flat = offsets[level] + unit
            if not any(arow):
                bit = 1 if crow > 0 else 0
                stack.append(
                    (
                        level,
                        unit + 1,
                        a,
                        c,
                        den,
                        bits + (bit,),
                        rows,
                        pool,
                        weight,
                        consts + (flat,),
                    )
                )
                continue
            sides: dict[int, list] = {1: [], -1: []}
            for item in pool:
                s = row_sign(arow, crow, item[1], item[2])
                if s:
                    sides[s].append(item)
            children = []
            af = _floats(arow, den)
            norm = float(np.linalg.norm(af)) or 1e-300
            for s in (-1, 1):
                row = Row(s, arow, int(crow), den, s * af, s * (int(crow) / den), norm)
                new_rows = rows + (row,)
                child_pool = sides[s]
                if not child_pool:
                    got = (
                        BranchDecision(Branch.EMPTY)
                        if self.open.excludes(arow, crow, s)
                        else self._decide(new_rows)
                    )
                    if got.branch is Branch.EMPTY:
                        self.done += weight / 2
                        continue
                    if got.branch is Branch.UNRESOLVED:
                        self.unresolved += 1
                        self.done += weight / 2
                        continue
                    child_pool = [float_point(got.witness)]
                children.append(
                    (
                        level,
                        unit + 1,
                        a,
                        c,
                        den,
                        bits + ((1 if s > 0 else 0),),
                        new_rows,
                        child_pool,
                        weight / 2,
                        consts,
                    )
                )
            stack.extend(children)

    @staticmethod
    def _split_bits(bits, widths):
        out, k = [], 0
        for w in widths:
            out.append(tuple(bits[k : k + w]))
            k += w
        return tuple(out)

    def _decide(self, rows: tuple[Row, ...]) -> BranchDecision:
        """Whether the branch ``rows`` holds a point of the open box, from the slack LP; a
        FEASIBLE witness and an EMPTY certificate are both checked exactly."""
        g = np.array([r.af for r in rows])
        g0 = np.array([r.cf for r in rows])
        norms = np.array([r.norm for r in rows])
        res = self.lp.solve(g, g0, norms)
        if res is None:
            return BranchDecision(Branch.UNRESOLVED)
        t, x, y = res
        if t > 0:
            x = np.clip(x, self.open.lo, self.open.hi)
            if self.open.strictly_inside(x) and self.open.satisfies(rows, x):
                return BranchDecision(Branch.FEASIBLE, x)
        if self.open.certified_empty(list(rows), y):
            return BranchDecision(Branch.EMPTY)
        return BranchDecision(Branch.UNRESOLVED)

    def _leaf(self, pattern, rows, point: Point, consts) -> None:
        """Verify the witness with the network's exact evaluation, then count the region."""
        x = [Fraction(0)] * self.box.dim
        _, xs, k = point
        for i, v in zip(self.free, xs):
            x[i] = Fraction(int(v), k)
        for i in self.fixed:
            x[i] = self.box.lower[i]
        inside = all(lo < x[i] < hi for i, lo, hi in zip(self.free, self.open.lo_q, self.open.hi_q))
        if not (self.box.contains(x) and inside):
            self.unresolved += 1
            return
        if not _verify_pattern(self.net, x, pattern, set(consts)):
            self.unresolved += 1
            return
        if pattern not in self.found:
            self.found[pattern] = Region(pattern, tuple(x))
            if self.cap is not None and len(self.found) >= self.cap:
                raise _Stop(CountStatus.CAP)


def _floats(a: np.ndarray, den: int) -> np.ndarray:
    return np.array([int(v) / den for v in a], dtype=np.float64)


def _verify_pattern(net: Network, x: list[Fraction], pattern, constant_units: set[int]) -> bool:
    """Exact re-evaluation: every ReLU pre-activation has the pattern's strict sign at ``x``
    (a unit found constant on the region may be exactly 0, and is then inactive)."""
    relu = [k for k, layer in enumerate(net.layers) if layer.relu]
    if len(relu) != len(pattern):
        return False
    if not relu:
        return True
    zs = pre_activations_exact(net.layers[: relu[-1] + 1], x)
    flat = 0
    for k, bits in zip(relu, pattern):
        for j, (zj, bit) in enumerate(zip(zs[k], bits)):
            if bit == 1 and not zj > 0:
                return False
            if bit == 0 and not (zj < 0 or (zj == 0 and flat + j in constant_units)):
                return False
        flat += len(bits)
    return True


def count_regions(
    net: Network,
    domain: str | Domain | None = None,
    cap: int | None = None,
    timeout: float | Deadline | None = None,
    progress: Callable[[float, int], None] | None = None,
    samples: int = 64,
    seed: int = 0,
    with_bounds: bool = True,
) -> RegionCount:
    """Count the linear regions of ``net`` on ``domain`` (default [0, 1]^n).

    A region is an activation pattern of the ReLU layers whose set of inputs in the domain has a
    point strictly inside the (non-degenerate coordinates of the) box at which every
    pre-activation is strictly non-zero, except pre-activations that are exactly constant on the
    region, which count as inactive when <= 0. Every counted region has an exactly verified
    witness, so ``count`` is always a lower bound; it is the exact number when ``status`` is
    COMPLETE (every pruned branch carries an exact infeasibility certificate). ``cap`` and
    ``timeout`` (seconds, or a :class:`~equivcheck.core.deadline.Deadline` handed down; checked
    between search steps) stop early with a lower bound.
    ``progress(fraction_of_pattern_tree_done, regions_so_far)`` is called now and then.
    For a union of boxes the patterns of all boxes are merged (a pattern counts once).
    """
    if cap is not None and cap < 1:
        raise InputError(f"--cap must be at least 1, got {cap}")
    limit = None if timeout is None else Deadline.of(timeout)  # validates the value
    dom = parse_domain(domain, net.in_dim)
    relu_idx = [k for k, layer in enumerate(net.layers) if layer.relu]
    for k in relu_idx[1:]:
        if not net.layers[k - 1].relu:
            raise InputError(
                f"{net.source}: layer {k - 1} has no ReLU but is followed by ReLU layers; "
                "counting supports ReLU layers followed by one final affine layer"
            )
    for k in relu_idx:
        rows, cols = net.layers[k].weight.shape
        if net.layers[k].affine.is_sparse and rows * cols > MAX_SPARSE_DENSIFIED:
            raise UnsupportedModelError(
                f"{net.source}: layer {k} is a sparse {rows:,} x {cols:,} layer (a convolution, "
                f"say); exact region counting works on dense layers (sparse ones of up to "
                f"{MAX_SPARSE_DENSIFIED:,} entries are made dense); the upper bounds "
                "(theorem 1, refined) still apply")
    start = time.monotonic()
    deadline = None if limit is None else limit.end
    layers = {k: integer_affine(net.layers[k].affine) for k in relu_idx}
    ints = [layers.get(k) for k in range(len(net.layers))]
    found: dict = {}
    status = CountStatus.COMPLETE
    nodes = lp_calls = unresolved = 0
    rng = np.random.default_rng(seed)
    nbox = len(dom.boxes)
    for b, box in enumerate(dom.boxes):

        def report(done, count, _b=b):
            if progress is not None:
                progress((_b + done) / nbox, count)

        counter = _BoxCounter(net, box, ints, relu_idx, deadline, cap, found, report, rng, samples)
        try:
            counter.run()
        except _Stop as stop:
            status = stop.status
        nodes += counter.nodes
        lp_calls += counter.lp.calls if counter.lp is not None else 0
        unresolved += counter.unresolved
        if status is not CountStatus.COMPLETE:
            break
    if status is CountStatus.COMPLETE and unresolved:
        status = CountStatus.UNRESOLVED
    if progress is not None and status is CountStatus.COMPLETE:
        progress(1.0, len(found))
    elapsed = time.monotonic() - start
    theorem1 = theorem1_bound(net.in_dim, net.hidden_widths) if net.hidden_widths else 1
    refined = refined_bound(net, dom).value if with_bounds else None
    return RegionCount(
        count=len(found),
        status=status,
        domain=dom.describe(),
        regions=tuple(found.values()),
        nodes=nodes,
        lp_calls=lp_calls,
        unresolved=unresolved,
        elapsed=elapsed,
        theorem1=theorem1,
        refined=refined,
    )
