"""One box's branch and bound farmed out to Dask workers as a queue of exact parts: :func:`farm`.

The coordinator (this process) keeps a queue of exact rational parts of the box (first one per
worker thread, cut by :func:`~equivcheck.engine.parallel.cut_box`: their union is exactly the
box) and keeps every worker thread busy with one task each: :func:`engine_part`, the engine
(:func:`~equivcheck.engine.check_box`) on one part for a slice of time. A task's answer:

* PROVED: the part is done (proved for the exact weights on the exact part);
* REFUTED: every task stops (a Dask ``Event`` each task's engine looks at between rounds),
  queued parts are dropped, and the point (which lies in the part, hence in the box) is returned;
* UNKNOWN because the slice ran out, with the engine's open nodes (``extra["frontier"]``, input
  splitting): the nodes, as exact boxes (:func:`frontier_parts`: each float node cut down to the
  exact part), go back to the queue, shared among the idle worker threads in groups of
  neighbours (:func:`batches`); a task that takes a group starts the engine from those nodes
  (``check_box(start=...)``), so nothing is searched twice;
* the same with ReLU splitting, whose open nodes are the part's box with ReLU phases fixed
  (:mod:`equivcheck.engine.frontier`): the nodes go back to the queue in batches of rows, each
  searched from its nodes; the part (a "family" of batches) is proved when every batch that came
  from it is, and open as soon as one is left open (phase splits partition a node, so the
  nodes handed back, with those proved, cover the part);
* UNKNOWN because the slice ran out, without open nodes (an engine that does not hand them
  back): the part is cut again by ``cut_box`` into
  exact sub-parts (at least ``CUT``, and enough for the worker threads idle at that moment),
  which go to the back of the queue with twice the slice (``GROWTH``);
* UNKNOWN for a reason more time would not change (boxes the bounds cannot close by splitting,
  the frontier's memory), or a task that failed: the part is left open for the caller.

Parts still queued or running when the engine's budget ends are open too. So at every moment
the parts queued, running, proved and open, with what tasks proved before handing nodes back,
cover the box by exact rational boxes (a cut replaces a part by parts whose union is exactly
it; a task's open nodes cover what it did not prove, because the engine's nodes cover the float
enclosure of what it was given): the box is PROVED only when every part is, and what is
returned open covers what was not proved. No float residue ever becomes a part: the open nodes
are float boxes whose bounds are exact rationals, cut down to the exact part in exact
arithmetic.

Slices: with nodes handed back nothing is searched twice, so slices are short
(``SLICE_SECONDS``: an idle thread waits at most about that long for work; a task's overhead,
26-120 ms measured, stays a few per cent of it). A part cut instead is searched again from its
own root by its sub-parts, so a cut costs the slice it ends: the first slice is then a quarter
of the budget (``CUT_SHARE``) and each generation's slice twice its parent's, so the work done
again is at most about a third of the last generation's (``4^d`` against ``4^(d+1)``
task-seconds when a generation of ``2^d`` parts all run to their slice); measured, cutting cost
1.5-2x the work on ACAS Xu (``docs/campaigns.md``). With one worker thread there is no one to
share with: the part gets the whole budget.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Box
from equivcheck.core.progress import Progress, ProgressFn, report
from equivcheck.core.spec import Spec
from equivcheck.engine import EngineOptions, EngineResult, Outcome, PairModel, check_box
from equivcheck.engine.frontier import count as frontier_count
from equivcheck.engine.frontier import take
from equivcheck.engine.parallel import cut_box
from equivcheck.errors import SoundnessError

SLICE_SECONDS = 2.0  # the first generation's slice when open nodes are handed back (an idle
# thread waits at most about this long for work; ACAS Xu N3,5 prop_1 0.005 on 2 workers: 6 s
# slices left one worker idle for most of one) ...
CUT_SHARE = 0.25  # ... else this share of the budget (at least SLICE_SECONDS): a cut part is
# searched again from its root (same instance, 2 s slices cut again: 2,745 nodes and 26 CPU s
# in all against 1,339 and 11 s on one worker; 6 s slices: 2,048 nodes)
GROWTH = 2.0  # each generation's slice is this many times its parent's
CUT = 2  # sub-parts of a part whose slice ran out (more when worker threads are idle)
MIN_BATCH = 8  # open nodes handed back are shared among idle threads at least this many a task
RELU_BATCH = 2  # the same for ReLU-split nodes (MNIST: 40-80 ms a node, a task's overhead 40-90)
MIN_SLICE = 0.5  # a part is not cut when less time than this is left (it stays open) ...
MAX_PARTS = 4096  # ... or when this many parts are queued (a bound on the coordinator's memory)
STOP_POLL = 0.5  # seconds between a task's looks at the stop event
GRACE = 0.5  # tasks end this long before the budget, and results are waited for this long
# past it (then the stop event ends the tasks still running: their parts are open)
TICK = 0.25  # seconds between the coordinator's looks while it waits


@dataclass
class FarmResult:
    """What :func:`farm` found on one box: ``refuted`` (the task's result, its point in the
    box) or None; the parts ``proved`` and left ``open`` (with ``refuted`` None, together a
    cover of the box: the box is proved when ``open`` is empty); and how the work went."""

    refuted: EngineResult | None = None
    proved: list[Box] = field(default_factory=list)
    open: list[Box] = field(default_factory=list)
    nodes: int = 0
    tasks: int = 0  # tasks finished (with a result or not)
    cuts: int = 0  # parts cut again after their slice ran out (searched again from their root)
    handed_on: int = 0  # tasks whose open nodes went back to the queue (nothing searched again)
    generations: int = 0  # the most cuts from the box to a part
    engine_seconds: float = 0.0  # the engine's seconds in all tasks
    overhead: list[float] = field(default_factory=list)  # per task: submit-to-result wall time
    # minus the engine's seconds (the task's round trip, its start, the wait for a thread)


@dataclass
class _Family:
    """The batches of ReLU-split nodes that came from one exact part ``box``: the part is
    proved when ``pending`` reaches 0 with no batch left open (``failed``)."""

    box: Box
    pending: int = 0
    failed: bool = False


@dataclass
class _Part:
    """A queued piece of work: the exact ``box`` to search, or (``nodes``) exact parts of it,
    the open nodes a task handed back, searched as the engine's starting frontier, or
    (``relu``) rows of ReLU-split nodes of the part ``box`` (their ``family``)."""

    box: Box
    generation: int
    seconds: float  # its slice
    nodes: list[Box] | None = None
    relu: tuple | None = None
    family: _Family | None = None

    def pieces(self) -> list[Box]:
        """The exact boxes this work decides (none for a batch of ReLU-split nodes: its
        family's part is counted when the family is decided)."""
        if self.family is not None:
            return []
        return [self.box] if self.nodes is None else list(self.nodes)

    def start(self):
        """The engine's starting frontier for this work (None: the whole part)."""
        return self.relu if self.relu is not None else self.nodes


def farm(client, remote, spec: Spec, parts: list[Box], model: PairModel, threads: int,
         budget: Deadline, options: EngineOptions, stop: str,
         progress: ProgressFn | None = None, detail: str = "", frontier=None) -> FarmResult:
    """Decide ``spec`` on the union of ``parts`` (exact boxes) with :func:`engine_part` tasks
    on ``client`` (``remote``: the scattered networks f and g), at most ``threads`` at once,
    within ``budget`` (see the module doc). The Dask event ``stop`` is set on return (every
    task still running ends at its next look) and every task not finished is cancelled.
    ``progress`` gets a "cluster" report (unit "parts") at the start and as each task ends.
    ``frontier``: ReLU-split open nodes (``extra["frontier"]`` of a search of the single part
    ``parts[0]`` that stopped for time) to go on from instead of that part's root."""
    from distributed import Event, wait

    res = FarmResult()
    if threads <= 1:
        slice0 = budget.remaining()
    elif hands_back(model, options):
        slice0 = SLICE_SECONDS
    else:
        slice0 = max(SLICE_SECONDS, CUT_SHARE * budget.remaining())
    if frontier is not None and len(frontier) > 2 and len(parts) == 1 and frontier_count(frontier):
        queue = relu_batches(_Part(parts[0], 0, slice0), frontier, max(1, threads))
    else:
        queue = [_Part(p, 0, slice0) for p in parts]
    running: dict = {}  # future -> (part, submitted at)
    event = Event(stop, client=client)

    def tell() -> None:
        report(progress, Progress("cluster", res.tasks, len(queue) + len(running), "parts",
                                  seconds_left=budget.remaining(),
                                  detail=f"{res.nodes:,} nodes on {threads} Dask worker threads"
                                  + detail))

    def submit() -> None:
        while queue and len(running) < max(1, threads):
            seconds = min(queue[0].seconds, budget.remaining() - GRACE)
            if seconds < MIN_SLICE / 2:
                return
            part = queue.pop(0)
            fut = client.submit(engine_part, remote[0], remote[1], spec, part.box, seconds,
                                options, stop, time.time() + seconds, start=part.start(),
                                pure=False)
            running[fut] = (part, time.monotonic())

    tell()
    try:
        submit()
        while running:
            wait_for = min(TICK, budget.remaining() + GRACE)
            if wait_for <= 0:
                break
            try:
                done = wait(list(running), timeout=wait_for, return_when="FIRST_COMPLETED").done
            except TimeoutError:
                continue
            except Exception:  # noqa: BLE001 - a task cancelled by the cluster (its networks
                # lost with a worker): it ends like one that failed, its part open
                done = {f for f in running if f.done()}
            for n, fut in enumerate(done):
                if n:  # two tasks ended in one wait: the one before gets its own report
                    tell()
                part, submitted = running.pop(fut)
                got = _result(fut)
                res.tasks += 1
                if got is not None:
                    res.nodes += got.stats.nodes
                    res.engine_seconds += got.stats.seconds
                    res.overhead.append(time.monotonic() - submitted - got.stats.seconds)
                if got is not None and got.outcome is Outcome.REFUTED:
                    if got.point is None or not part.box.contains(got.point):
                        raise SoundnessError("a Dask task's counterexample lies outside its part")
                    res.refuted = got
                    return res
                if got is not None and got.outcome is Outcome.PROVED:
                    _proved(res, part)
                elif got is not None and _more_time_helps(got) and len(queue) < MAX_PARTS \
                        and budget.remaining() - GRACE >= MIN_SLICE:
                    idle = max(1, threads - len(running) - len(queue))
                    front = got.extra.get("frontier")
                    if front is not None and len(front) > 2 and frontier_count(front):
                        # ReLU-split nodes: batches of rows, one per thread even when the others
                        # are busy (a thread whose batch is proved then finds work queued
                        # instead of waiting for a running task's slice to end)
                        res.handed_on += 1
                        queue.extend(relu_batches(part, front, max(idle, threads)))
                        continue
                    if part.family is not None:  # ReLU-split nodes without open nodes back:
                        _left_open(res, part)  # not cut (their family's part goes open)
                        continue
                    nodes = frontier_parts(part.box, front)
                    if nodes is not None:  # the engine's open nodes: go on from them
                        res.handed_on += 1
                        queue.extend(_Part(hull, part.generation, part.seconds, group)
                                     for hull, group in batches(nodes, idle, part.box))
                        continue
                    subs, _ = cut_box(part.box, max(CUT, idle), model, spec)
                    res.cuts += 1
                    res.generations = max(res.generations, part.generation + 1)
                    queue.extend(_Part(s, part.generation + 1, part.seconds * GROWTH)
                                 for s in subs)
                else:
                    _left_open(res, part)
            submit()
            tell()
    finally:
        event.set()
        if running:
            client.cancel(list(running))
    for p in [p for p, _ in running.values()] + queue:
        _left_open(res, p)
    return res


def relu_batches(part: _Part, frontier, count: int) -> list[_Part]:
    """The ReLU-split open nodes ``frontier`` that a search of ``part`` handed back, in at
    most ``count`` batches (at least ``RELU_BATCH`` nodes each, siblings kept together), queued
    as members of ``part``'s family (the family's count of batches to decide grows by them)."""
    total = frontier_count(frontier)
    count = max(1, min(count, total // RELU_BATCH))
    family = part.family or _Family(part.box)
    family.pending += count - (part.family is not None)
    return [_Part(part.box, part.generation, part.seconds, relu=take(frontier, rows),
                  family=family) for rows in np.array_split(np.arange(total), count)]


def _proved(res: FarmResult, part: _Part) -> None:
    fam = part.family
    if fam is None:
        res.proved.extend(part.pieces())
        return
    fam.pending -= 1
    if fam.pending == 0 and not fam.failed:
        res.proved.append(fam.box)


def _left_open(res: FarmResult, part: _Part) -> None:
    """``part`` not decided: its boxes are open (for a batch of ReLU-split nodes, its family's
    whole part, once)."""
    fam = part.family
    if fam is None:
        res.open.extend(part.pieces())
        return
    fam.pending -= 1
    if not fam.failed:
        fam.failed = True
        res.open.append(fam.box)


def frontier_parts(hull: Box, frontier) -> list[Box] | None:
    """The engine's open float boxes ``frontier = (lo [F, n], hi [F, n])`` (None: the engine
    handed back none) as exact boxes: each float box (its bounds are exact rationals) cut down
    to the exact ``hull`` the task searched, keeping the hull's strict faces; boxes that hold no
    point of the hull are dropped. Every point of the hull that lies in a float box lies in one
    of them, so with the nodes the task proved they still cover everything it was given."""
    if frontier is None:
        return None
    out = []
    for lo, hi in zip(*frontier):
        lower, upper, ls, us = [], [], [], []
        for i, (a, b) in enumerate(zip(lo, hi)):
            a, b = Fraction(float(a)), Fraction(float(b))
            if a <= hull.lower[i]:
                lower.append(hull.lower[i])
                ls.append(hull.lower_strict[i])
            else:
                lower.append(a)
                ls.append(False)
            if b >= hull.upper[i]:
                upper.append(hull.upper[i])
                us.append(hull.upper_strict[i])
            else:
                upper.append(b)
                us.append(False)
        if all(x < y or (x == y and not (p or q)) for x, y, p, q in zip(lower, upper, ls, us)):
            out.append(Box(tuple(lower), tuple(upper), tuple(ls), tuple(us)))
    return out


def batches(nodes: list[Box], count: int, hull: Box) -> list[tuple[Box, list[Box]]]:
    """``nodes`` in at most ``count`` groups of neighbours (sorted by their lower corners, then
    cut into runs of equal length), each with its exact hull (inside ``hull``): the falsifier of
    the task that takes a group samples the group's hull."""
    if not nodes:
        return []
    nodes = sorted(nodes, key=lambda b: b.lower)
    count = max(1, min(count, len(nodes) // MIN_BATCH))
    size = -(-len(nodes) // count)
    out = []
    for k in range(0, len(nodes), size):
        group = nodes[k:k + size]
        out.append((_hull(group, hull), group))
    return out


def _hull(group: list[Box], outer: Box) -> Box:
    """The smallest exact box holding every box of ``group`` (all inside ``outer``)."""
    n = outer.dim
    lower, upper, ls, us = [], [], [], []
    for i in range(n):
        lo = min(b.lower[i] for b in group)
        hi = max(b.upper[i] for b in group)
        lower.append(lo)
        upper.append(hi)
        ls.append(all(b.lower_strict[i] for b in group if b.lower[i] == lo))
        us.append(all(b.upper_strict[i] for b in group if b.upper[i] == hi))
    return Box(tuple(lower), tuple(upper), tuple(ls), tuple(us))


def hands_back(model: PairModel, options: EngineOptions) -> bool:
    """Whether the engine hands its open nodes back when a slice runs out: an engine that
    takes a starting frontier (``check_box(start=...)``: input boxes, or with ReLU splitting
    boxes with fixed phases)."""
    return "start" in inspect.signature(check_box).parameters


def _result(fut) -> EngineResult | None:
    try:
        return fut.result()
    except (Exception, asyncio.CancelledError):  # noqa: BLE001 - a task that failed (or was
        return None  # cancelled) leaves its part open


def _more_time_helps(res: EngineResult) -> bool:
    """An UNKNOWN that a longer search of smaller parts may decide: the slice (or the node
    limit) ran out; not boxes the bounds cannot close, nor a full frontier."""
    return res.outcome is Outcome.UNKNOWN and res.reason.startswith(("timeout", "node limit"))


class _Stopped(Exception):
    """Raised inside a task's engine when the answer is known elsewhere."""


def engine_part(a, b, spec: Spec, part: Box, seconds: float, eopts: EngineOptions, stop: str,
                end_wall: float | None = None, start: list[Box] | tuple | None = None
                ) -> EngineResult | None:
    """A Dask task: :func:`check_box` on one part within ``seconds`` from the task's start and
    by the wall-clock time ``end_wall`` (when given: a task that waited in the queue gets what
    is left; if the machines' clocks disagree, the stop event still ends it once the caller
    stops waiting), or None when the stop event was set before it finished. ``start``: exact
    boxes inside ``part`` to search instead of the whole part (the engine's starting frontier:
    their float enclosures), or ReLU-split nodes (a tuple of arrays, as the engine hands them
    back)."""
    from distributed import Event

    from equivcheck.campaign.malloc import tune_malloc

    tune_malloc()  # a nanny's MALLOC_TRIM_THRESHOLD_ made the engine 1.7-1.9x slower
    event = Event(stop)
    last = [0.0]

    def look(_progress) -> None:
        now = time.monotonic()
        if now - last[0] >= STOP_POLL:
            last[0] = now
            if event.is_set():
                raise _Stopped

    if end_wall is not None:
        seconds = min(seconds, end_wall - time.time())
    if event.is_set() or seconds <= 0:
        return None
    extra = {}
    if isinstance(start, tuple):
        extra["start"] = start
    elif start is not None:
        extra["start"] = (np.array([s.lower_float() for s in start]),
                          np.array([s.upper_float() for s in start]))
    try:
        return check_box(a, b, spec, part, Deadline.start(seconds), eopts,
                         model=_model(a, b), progress=look, hand_back=True, **extra)
    except _Stopped:
        return None


_MODEL: list = []  # (a, b, PairModel) of the worker's last networks: the tasks of one check
# share them (the networks are held, so the identity test cannot meet a reused id)


def _model(a, b) -> PairModel:
    if not _MODEL or _MODEL[0][0] is not a or _MODEL[0][1] is not b:
        _MODEL[:] = [(a, b, PairModel.build(a, b))]
    return _MODEL[0][2]
