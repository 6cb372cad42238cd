"""The engine on several worker processes: :func:`check_box_parallel`.

The work is dealt out as parts, each a box and the nodes of it to search: the nodes the
in-process slice (below) left open, dealt out in turn, or else the exact box cut into
``PARTS_PER_WORKER`` parts per worker (:meth:`Box.halves`: exact rational halves that keep the
box's strict faces, so the parts' union is exactly the box). A pool of processes pulls the
parts from a queue, hardest first, each running :func:`~equivcheck.engine.check_box` on its part
with the caller's deadline, and a worker left idle is given nodes by a busy one (below). The
parts cover the box, so verdicts combine as for any cover:

* the first REFUTED part stops every worker at once; its point lies in the part, hence in the
  box (checked exactly before it is returned);
* every part PROVED: the box is PROVED (each part's proof is for the exact weights);
* otherwise UNKNOWN, with the parts' statistics merged and their residues (float boxes the
  bounds could not close) concatenated.

How the box is cut (:func:`cut_box`): best-first, the part with the worst forward bound of
``f - g`` is halved on the input whose halves get the smallest bounds. Measured on ACAS Xu
(N1,1 vs float16, prop_1, eps 0.01; 251 nodes in one process): cut this way, 2, 4 and 8 parts
need 254, 256 and 256 nodes in all; halving the relatively widest input instead, 462 nodes for 2
parts and 892 for 16. Few parts per worker, because each part pays the engine's per-round cost
again (13 rounds for the whole box; 24, 41 and 61 for 2, 4 and 8 parts), and a round on a small
frontier costs nearly as much as on a full one. A worker whose part is done does not idle while
another's runs: it says so (a shared count of idle workers), and one searching worker gives half
of its open nodes away at its next round (``check_box``'s ``share``), which go to the queue as a
new part (same box, those nodes as its start). The part that gave is then PROVED on the nodes it
kept, the new part on the nodes given: together they still cover it.

Small instances do not pay for processes: the engine first runs in this process for a short
slice of the time, and only an instance still open when the slice ends goes to the workers,
which go on from the nodes the slice left open (``check_box``'s ``hand_back``), dealt out in
turn; only when the slice left fewer open nodes than there are workers (a root whose first round
outlasted the slice) is the box cut into parts as above, and the slice's work done again.

Measured (``benchmarks/engine_parallel.py``: 8 ACAS Xu instances of prop_1 at epsilon 0.05
that one worker proves in 1.9-13.4 s, vs float16 and 5%-pruned copies; 2 workers on this
2-core machine): wall-time ratio one worker / two, median 1.44 with the parts fixed at the cut
(min 1.26, max 1.61; 8-17% more nodes than one worker, the slice's done again), 1.55 with the
workers going on from the slice's nodes and sharing them (min 1.46, max 1.89, nodes within 7%
of one worker's).

The deadline is hard: workers check it between rounds like the one-process engine, and are
killed ``GRACE`` seconds after it, so no worker outlives it by more. On Linux the workers
are forked (the networks and the :class:`PairModel` are inherited, not pickled); elsewhere they are
spawned. Each worker limits BLAS to one thread (several threads per worker only fight over the
cores the other workers use).
"""

from __future__ import annotations

import inspect
import math
import multiprocessing
import os
import queue
import signal
import sys
import time
from dataclasses import replace

import numpy as np

from equivcheck.core.children import die_with_parent
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Box
from equivcheck.core.network import Network
from equivcheck.core.progress import Progress, ProgressFn, report
from equivcheck.core.spec import Norm, Spec
from equivcheck.engine import frontier
from equivcheck.engine.bounds import Boxes, pair_bounds
from equivcheck.engine.model import PairModel
from equivcheck.engine.search import EngineOptions, EngineResult, EngineStats, Outcome, check_box
from equivcheck.errors import SoundnessError

FIRST_SHARE = 0.1  # of the time left: the in-process slice before the workers start ...
FIRST_SECONDS = 0.3  # ... and at most this many seconds
MIN_PARALLEL = 0.5  # seconds left below which starting processes is not worth it
PARTS_PER_WORKER = 1  # parts per worker: more balance the load better, but every part pays the
# engine's per-round cost again; on 8 ACAS Xu instances with 2 workers, 1 part per worker gave a
# median speed-up of 1.42, 2 parts 1.21 (CPU-time estimate, benchmarks/engine_parallel.py)
GRACE = 0.25  # seconds after the deadline before the workers are killed
LOOKAHEAD_INPUTS = 16  # above this many inputs, parts are cut by width (2 n bounds per cut)
TICK = 0.25  # seconds between progress reports while waiting for the workers
RELAY = 0.5  # seconds between two of a worker's search reports sent to the parent


def default_workers() -> int:
    """The cores this process may run on (its CPU affinity where the OS says, else all)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_box_parallel(f: Network, g: Network, spec: Spec, box: Box,
                       deadline: Deadline | None = None, options: EngineOptions = EngineOptions(),
                       model: PairModel | None = None, workers: int | None = None,
                       progress: ProgressFn | None = None, *,
                       first_seconds: float | None = None) -> EngineResult:
    """Decide ``spec`` for ``f`` and ``g`` on ``box`` like :func:`check_box`, on ``workers``
    processes (None: :func:`default_workers`; 1: exactly :func:`check_box`).

    Same promises as :func:`check_box`: PROVED holds for the exact weights on the exact box, a
    REFUTED point lies in the box and violates the spec in exact arithmetic. UNKNOWN carries the
    merged statistics and ``extra["residue"]``, the parts' residues concatenated;
    ``extra["residue_complete"]`` says whether every open part's residue covers all it left open
    (then ``stats.open_nodes == len(extra["residue"])``). ``extra["parallel"]`` describes the run.
    ``first_seconds``: the in-process slice (None: ``min(FIRST_SECONDS, FIRST_SHARE`` of the
    time left); 0: none, straight to the workers). No worker outlives ``deadline`` by more than
    ``GRACE`` seconds. ``options`` apply to each part (``max_nodes`` too: per part).
    """
    n = default_workers() if workers is None else int(workers)
    deadline = deadline or Deadline.start(3600.0)
    if n <= 1 or multiprocessing.current_process().daemon:  # a daemon may not have children
        return _check(f, g, spec, box, deadline, options, model, progress)
    t0 = time.monotonic()
    model = model or PairModel.build(f, g)
    first = None
    if first_seconds is None or first_seconds > 0:
        share = min(FIRST_SECONDS, FIRST_SHARE * deadline.remaining()) if first_seconds is None \
            else first_seconds
        sub = deadline.sub(seconds=share)
        first = _check(f, g, spec, box, sub, options, model, progress, hand_back=True)
        timed_out = sub.expired() or first.reason.startswith("timeout")  # (or no time left
        # for another round: the slice ran out before its deadline passed)
        if first.outcome is not Outcome.UNKNOWN or not timed_out:
            # decided, or open for a reason more time would not change
            return replace(first, extra={k: v for k, v in first.extra.items()
                                         if k not in ("frontier", "closed_bound")})
    if deadline.remaining() < MIN_PARALLEL:
        return _check(f, g, spec, box, deadline, options, model, progress)
    front = None if first is None else first.extra.get("frontier")
    continued = front is not None and frontier.count(front) >= n
    if continued:
        # the slice's open nodes, dealt out in turn (its work is not done again)
        parts, levels = [box], first.stats.max_depth
        starts = [(0, frontier.take(front, slice(k, None, n))) for k in range(n)]
    else:
        parts, levels = cut_box(box, n * PARTS_PER_WORKER, model, spec)
        if len(parts) < 2:
            return _check(f, g, spec, box, deadline, options, model, progress)
        starts = [(i, None) for i in range(len(parts))]
    results, cpu, tasks = _run_pool(f, g, spec, parts, starts, deadline, options, model, n,
                                    progress, first.stats.nodes if continued else 0)
    res = _merge(box, parts, tasks, len(tasks) - len(starts), levels, results, first,
                 continued, n, time.monotonic() - t0)
    res.extra["parallel"]["part_cpu"] = [round(cpu.get(i, 0.0), 3) for i in range(len(tasks))]
    return res


def cut_box(box: Box, count: int, model: PairModel, spec: Spec) -> tuple[list[Box], int]:
    """About ``count`` parts of ``box`` whose union is exactly the box, cut best-first: the part
    whose difference bound is worst is halved on the input whose halves get the smallest bounds
    (forward bounds of all ``2 n`` candidate halves in one batched call). Boxes of more than
    ``LOOKAHEAD_INPUTS`` inputs are cut by :func:`split_box`. Returns the parts and the most
    cuts made to reach one of them."""
    if box.dim > LOOKAHEAD_INPUTS:
        return split_box(box, count)
    parts = [(box, _measure(model, spec, [box])[0], 0)]
    while len(parts) < count:
        k = max(range(len(parts)), key=lambda i: parts[i][1])
        part, _, depth = parts[k]
        dims = [i for i in range(box.dim) if part.upper[i] > part.lower[i]]
        if not dims:  # a single point: never cut, and the others only while they can be
            parts[k] = (part, -math.inf, depth)
            if all(m == -math.inf for _, m, _ in parts):
                break
            continue
        halves = [part.halves(d) for d in dims]
        meas = _measure(model, spec, [h for pair in halves for h in pair]).reshape(-1, 2)
        best = min(range(len(dims)), key=lambda i: (meas[i].max(), meas[i].sum(), i))
        parts[k:k + 1] = [(h, m, depth + 1) for h, m in zip(halves[best], meas[best])]
    parts.sort(key=lambda p: -p[1])  # the hardest first: the workers take them in this order
    return [p for p, _, _ in parts], max(d for _, _, d in parts)


def _measure(model: PairModel, spec: Spec, boxes: list[Box]) -> np.ndarray:
    """A forward bound of ``||f - g||`` (the spec's norm; L-inf for strict and argmax) over
    each box: only a guide for cutting, no proof rests on it."""
    lo = np.array([b.lower_float() for b in boxes])
    hi = np.array([b.upper_float() for b in boxes])
    pb = pair_bounds(model, Boxes(lo, hi, model.width), "none")
    mag = np.maximum(np.abs(pb.d_lo), np.abs(pb.d_hi))
    out = mag.sum(axis=1) if spec.norm is Norm.L1 else mag.max(axis=1)
    return np.where(np.isfinite(out), out, np.inf)


def split_box(box: Box, count: int) -> tuple[list[Box], int]:
    """At least ``count`` parts of ``box`` (fewer only when no input has width left), cut by
    halving every part, level by level, on the input widest relative to the box's own span;
    and the number of levels. The parts' union is exactly the box."""
    span = [hi - lo for lo, hi in zip(box.lower, box.upper)]
    width = list(span)
    parts, levels = [box], 0
    while len(parts) < count:
        dims = [i for i in range(box.dim) if width[i] > 0]
        if not dims:
            break
        d = max(dims, key=lambda i: (width[i] / span[i], -i))
        nxt = [half for part in parts for half in part.halves(d)]
        if any(np.any(p.lower_float() > p.upper_float()) for p in nxt):
            break  # not expected: the float enclosure of a half is never inverted
        parts, levels = nxt, levels + 1
        width[d] /= 2
    return parts, levels


# ---- the workers --------------------------------------------------------------------------------

_JOB: tuple | None = None  # what every worker needs (its process's arguments)
_LIMITS = None  # the worker's BLAS limit (kept alive for the worker's life)
_OUT: list = [None]  # the worker's queue to the parent (its search reports go there too)
_CHECK_ARGS: frozenset | None = None  # the keyword arguments check_box accepts


def _check(f, g, spec, box, deadline, options, model, progress, start=None,
           share=None, hand_back=False) -> EngineResult:
    """:func:`check_box`, with ``progress``, ``start``, ``share`` and ``hand_back`` passed only
    when given (and taken: tests stand in simpler engines)."""
    global _CHECK_ARGS
    if _CHECK_ARGS is None:
        _CHECK_ARGS = frozenset(inspect.signature(check_box).parameters)
    extra = {key: val for key, val in (("progress", progress), ("share", share),
                                       ("start", start), ("hand_back", hand_back or None))
             if val is not None and key in _CHECK_ARGS}
    return check_box(f, g, spec, box, deadline, options, model, **extra)


class _Share:
    """A worker's ``share`` for :func:`check_box`: nodes are wanted while some worker idles
    (``hungry``: idle workers less parts already on their way to them); the nodes given go to
    the parent as ``("share", part, nodes)``, which queues them as a new task."""

    def __init__(self, hungry, part: int, out) -> None:
        self.hungry, self.part, self.out = hungry, part, out

    def wanted(self) -> bool:
        if self.hungry.value <= 0:  # (a read without the lock: the usual answer, cheaply)
            return False
        with self.hungry.get_lock():
            if self.hungry.value <= 0:
                return False
            self.hungry.value -= 1  # this worker feeds one idle worker
            return True

    def give(self, nodes: tuple) -> None:
        self.out.put(("share", self.part, nodes))


def _worker(job: tuple, tasks, out, hungry, parent: int) -> None:
    """A worker process: tasks from ``tasks`` (a part's index, or ``(task, part, start
    nodes)``), ``(task, result, cpu)`` to ``out`` (an exception instead of the result if the
    engine raised one), until the parent kills it. Before waiting for a task it counts itself
    in ``hungry``. It dies with the ``parent`` process (killed by a signal the parent got, say)."""
    global _JOB, _LIMITS
    _JOB = job + (hungry,)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # whatever handlers a forked parent had,
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C is the parent's to handle
    die_with_parent(parent)
    try:
        from threadpoolctl import threadpool_limits
        _LIMITS = threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        pass
    _OUT[0] = out
    while True:
        with hungry.get_lock():
            hungry.value += 1
        i = tasks.get()
        try:
            out.put(_work(i))
        except BaseException as exc:  # handed to the parent, which raises it
            out.put((i[0] if isinstance(i, tuple) else i, exc, 0.0))


class _Relay:
    """A worker's progress callback: part ``i``'s latest search report to the parent's queue,
    at most every :data:`RELAY` seconds (the parent tells them from results by their first
    item, the string ``"progress"``)."""

    def __init__(self, i: int, out) -> None:
        self.i, self.out, self.last = i, out, -math.inf

    def __call__(self, event: Progress) -> None:
        now = time.monotonic()
        if now - self.last >= RELAY:
            self.last = now
            self.out.put(("progress", self.i, event))


def _work(task) -> tuple[int, EngineResult, float]:
    """A task's result and the CPU seconds the worker spent on it (its search reports go to
    the parent's queue as they come). ``task``: a part's index (the whole part), or ``(task,
    part, start)``, nodes of a part (the first slice's open nodes, or nodes another worker
    gave away)."""
    f, g, spec, deadline, options, model, parts, hungry = _JOB
    i, part, start = task if isinstance(task, tuple) else (task, task, None)
    if deadline.expired():  # a task taken after the deadline: no work (the parent counts it open)
        return i, _not_run(parts[part], start), 0.0
    cpu = time.process_time()
    out = _OUT[0]
    relay = _Relay(i, out) if out is not None else None
    share = _Share(hungry, part, out) if out is not None else None
    res = _check(f, g, spec, parts[part], deadline, options, model, relay, start, share)
    return i, res, time.process_time() - cpu


def _not_run(part: Box, start: tuple | None = None) -> EngineResult:
    """A task no worker examined: open, its whole float enclosure (or its start nodes' boxes:
    one, the part's, under ReLU splitting) left as its residue."""
    if start is None or len(start) > 2:
        boxes = [(part.lower_float(), part.upper_float(), math.inf)]
    else:
        boxes = [(lo, hi, math.inf) for lo, hi in zip(start[0], start[1])]
    stats = EngineStats(0, 0, 0, len(boxes), math.inf, -math.inf, 0.0, 0)
    return EngineResult(Outcome.UNKNOWN, "timeout: the time limit was reached", stats,
                        extra={"residue": boxes})


def _context():
    fork = "fork" in multiprocessing.get_all_start_methods() and sys.platform.startswith("linux")
    return multiprocessing.get_context("fork" if fork else "spawn")


def _run_pool(f, g, spec, parts, starts, deadline, options, model, n, progress, before: int = 0
              ) -> tuple[dict[int, EngineResult], dict[int, float], list]:
    """Every task's result that arrived by the deadline (plus ``GRACE``), its CPU seconds,
    and the tasks (``(part, start nodes or None)``: ``starts``, then one per share of nodes a
    worker gave away); stops at the first REFUTED. (``before``: nodes bounded before, for the
    progress reports.) Every worker is killed and reaped
    before this returns.

    Plain processes and queues rather than ``multiprocessing.Pool``: ``Pool.terminate`` can
    hang for ever when it kills a worker that holds the result queue's lock (seen here, a
    worker killed while handing back its part after another part was refuted). The parent
    only writes ``tasks`` (through the queue's feeder thread, which is not waited for: a put
    never blocks it, not even one of megabytes of nodes no worker reads) and only reads
    ``out``, so no lock a killed worker held can block it. (``hungry`` is a shared count under
    its own lock, which a worker holds only for an increment or a decrement.)"""
    ctx = _context()
    task_q, out = ctx.Queue(), ctx.Queue()  # (puts never block the parent: a feeder thread
    # writes them; a part's start nodes can be megabytes, more than a pipe holds)
    tasks: list = list(starts)
    for i, (part, start) in enumerate(tasks):
        task_q.put(i if start is None and part == i else (i, part, start))
    count = min(n, len(tasks))
    hungry = ctx.Value("i", -len(tasks))  # idle workers less tasks queued for them
    job = (f, g, spec, deadline, options, model, parts)
    procs = [ctx.Process(target=_worker, args=(job, task_q, out, hungry, os.getpid()),
                         daemon=True) for _ in range(count)]
    results: dict[int, EngineResult] = {}
    cpu: dict[int, float] = {}
    live: dict[int, Progress] = {}  # the latest search report of each task being searched
    try:
        for p in procs:
            p.start()
        while len(results) < len(tasks):
            wait = deadline.end + GRACE - time.monotonic()
            if wait <= 0:
                break
            try:
                i, res, secs = out.get(timeout=min(wait, TICK))
            except queue.Empty:
                if not any(p.is_alive() for p in procs) and out.empty():
                    break  # every worker ended (killed from outside): what is missing is open
            else:
                if i == "progress":  # (i, res, secs) = ("progress", task, its report)
                    if res not in results:
                        live[res] = secs
                    continue
                if i == "share":  # (i, res, secs) = ("share", part, the nodes given away)
                    tasks.append((res, secs))
                    task_q.put((len(tasks) - 1, res, secs))
                    continue
                if isinstance(res, BaseException):
                    raise res
                results[i], cpu[i] = res, secs
                live.pop(i, None)
            report(progress, _pool_progress(results, live, len(tasks), n, deadline, before))
            if any(r.outcome is Outcome.REFUTED for r in results.values()):
                break
    finally:
        for p in procs:
            if p.pid is not None and p.is_alive():
                p.kill()
        for p in procs:
            if p.pid is not None:
                p.join()
        for q in (out, task_q):
            q.close()
            q.cancel_join_thread()
    return results, cpu, tasks


def _pool_progress(results: dict, live: dict, parts: int, n: int, deadline: Deadline,
                   before: int = 0) -> Progress:
    """The pool's report: nodes bounded before the pool (``before``: the first slice's, when
    the workers go on from its nodes), in the parts done and in the workers' latest reports,
    nodes open in the parts being searched, and the worst bound known so far (a part not yet
    started, or not yet through its first round, has none)."""
    done = before + sum(r.stats.nodes for r in results.values()) + sum(
        e.done for e in live.values())
    bounds = [r.stats.best_bound for r in results.values()]
    bounds += [e.bound for e in live.values() if e.bound is not None and math.isfinite(e.bound)]
    return Progress("search", done, sum(e.open for e in live.values()), "nodes",
                    max(bounds, default=None), deadline.remaining(),
                    f"{n} workers, {len(results)} of {parts} parts done")


# ---- merging ------------------------------------------------------------------------------------


def _merge(box: Box, parts: list[Box], tasks: list, shares: int, levels: int,
           results: dict[int, EngineResult], first: EngineResult | None, continued: bool,
           n: int, seconds: float) -> EngineResult:
    """One result for the box from its tasks' (``tasks``: ``(part, start)``, the last
    ``shares`` of them nodes a worker gave away; a task with no result is open, see
    :func:`_not_run`). ``continued``: the tasks searched the nodes the in-process slice
    ``first`` left open (its closed nodes count), else they cover the box."""
    done = [results.get(i) or _not_run(parts[p], start) for i, (p, start) in enumerate(tasks)]
    refuted = next((r for r in done if r.outcome is Outcome.REFUTED), None)
    fs = first.stats if first is not None else None
    nodes = sum(r.stats.nodes for r in done) + (fs.nodes if fs else 0)
    initial = len(tasks) - shares
    parallel = {"workers": n, "parts": initial, "shares": shares, "continued": continued,
                "parts_done": sum(i in results for i in range(initial)),
                "first_nodes": fs.nodes if fs else 0,
                "part_seconds": [round(r.stats.seconds, 3) for r in done]}
    bound = max(r.stats.best_bound for r in done)
    if fs is not None and continued:  # the slice's closed nodes, the tasks the others
        bound = max(bound, first.extra.get("closed_bound", np.inf))
    elif fs is not None:
        bound = min(bound, fs.best_bound)  # both bound the measure over the whole box
    stats = EngineStats(
        nodes=nodes, rounds=sum(r.stats.rounds for r in done) + (fs.rounds if fs else 0),
        max_depth=max([r.stats.max_depth + levels for r in done] + [fs.max_depth if fs else 0]),
        open_nodes=sum(r.stats.open_nodes for r in done if r.outcome is Outcome.UNKNOWN),
        best_bound=float(bound),
        witness=float(max([r.stats.witness for r in done] + [fs.witness if fs else -math.inf])),
        seconds=seconds,
        exact_checks=sum(r.stats.exact_checks for r in done) + (fs.exact_checks if fs else 0))
    if refuted is not None:
        if refuted.point is None or not box.contains(refuted.point):
            raise SoundnessError("a worker's counterexample lies outside the box")
        return replace(refuted, stats=stats, extra={**refuted.extra, "parallel": parallel})
    unknown = [r for r in done if r.outcome is Outcome.UNKNOWN]
    if not unknown:
        return EngineResult(Outcome.PROVED, f"proved by bounds on {nodes} node(s) in {len(done)} "
                            f"parts on {n} workers", stats, extra={"parallel": parallel})
    residue = [entry for r in unknown for entry in r.extra.get("residue") or []]
    complete = all(r.stats.open_nodes == len(r.extra.get("residue") or []) for r in unknown)
    timed = [r for r in unknown if r.reason.startswith("timeout")]
    why = timed[0].reason if timed else unknown[0].reason
    reason = f"{why} ({len(unknown)} of {len(done)} parts open)"
    return EngineResult(Outcome.UNKNOWN, reason, stats,
                        extra={"residue": residue, "residue_complete": complete,
                               "parallel": parallel})
