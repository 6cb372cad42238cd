"""One check spread over a Dask cluster: :func:`prove_distributed`.

The box's branch and bound is farmed out as Dask tasks by :func:`~equivcheck.campaign.farm.farm`:
a queue of exact rational parts (cut by :func:`~equivcheck.engine.parallel.cut_box`, their union
exactly the box), each task the engine on one part for a slice of time (many nodes per task, so
the per-task overhead stays small); a part whose slice ran out comes back cut into exact
sub-parts, which idle worker threads take. Verdicts combine as for any cover of the box:

* the first REFUTED part stops every task (a Dask ``Event`` that each task's engine looks at
  between rounds); its point is re-checked here, exactly and in onnxruntime on the original
  files, before it is reported;
* every part PROVED: the box is PROVED (each part's proof is for the exact weights, and the
  parts' union is exactly the box);
* parts left open: the prover of this machine (:func:`~equivcheck.solve.prover.prove_networks`:
  the engine, then the solver on what its bounds leave) decides them with the time left, as a
  domain whose boxes are the open parts; the box is PROVED only when all of them are.

Small instances do not pay for the cluster: the engine first runs here for a short slice
(as :func:`~equivcheck.engine.parallel.check_box_parallel` does); with ReLU splitting (many
inputs) the cluster goes on from the open nodes that slice hands back (the box is not cut). Strict mode (which the engine
does not decide) and the other modes go to the prover of this machine.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from fractions import Fraction

from equivcheck.campaign.farm import farm
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Box, Domain
from equivcheck.core.options import DEFAULT_TIMEOUT, ProverOptions
from equivcheck.core.progress import ProgressFn
from equivcheck.core.result import BoxResult, FoundBy, ProofResult, Verdict
from equivcheck.core.spec import Mode, Spec
from equivcheck.engine import EngineResult, Outcome, PairModel, check_box
from equivcheck.engine.parallel import FIRST_SECONDS, FIRST_SHARE, cut_box
from equivcheck.engine.search import RELU_INPUTS
from equivcheck.io.domains import parse_domain
from equivcheck.solve.prover import load_pair, prove_networks
from equivcheck.solve.search import engine_alone, engine_options
from equivcheck.solve.witness import OrtRunner, build_counterexample, exact_evaluation

PARTS_PER_WORKER = 1  # parts per worker thread: a part queued behind one that runs to the
# engine's time limit gets no time (as in engine.parallel: more parts balance decided parts better)
ENGINE_MODES = (Mode.EPSILON, Mode.ARGMAX)  # the modes the cluster's engine parts decide


def prove_distributed(a, b, domain: str | Domain | None = None, mode: str = "strict",
                      tolerance=None, norm: str = "linf",
                      timeout: float | Deadline = DEFAULT_TIMEOUT, *, scheduler: str = "local",
                      workers: int = 0, options: ProverOptions | None = None,
                      parts_per_worker: int = PARTS_PER_WORKER, client=None,
                      first_seconds: float | None = None,
                      progress: ProgressFn | None = None) -> ProofResult:
    """Decide whether models ``a`` and ``b`` agree on ``domain`` like
    :func:`equivcheck.prove`, with the branch and bound of each box run as Dask tasks on
    ``scheduler`` (an address, or "local": a LocalCluster of ``workers`` processes; or the
    given ``client``). The same promises as :func:`equivcheck.prove`: PROVED is exact on the
    stored weights, a REFUTED point lies in the domain and violates the spec exactly (re-run in
    float64 and onnxruntime on the original files), UNKNOWN says why. ``timeout`` (seconds or a
    caller's :class:`Deadline`) is the whole call's limit; no task runs past it.
    ``first_seconds``: the engine's first slice on this machine (None: as
    :func:`~equivcheck.engine.parallel.check_box_parallel`; 0: straight to the cluster). Raises an
    :class:`~equivcheck.errors.InputError` for bad inputs or a scheduler that cannot be reached.
    ``progress`` (see :mod:`equivcheck.core.progress`) gets the engine's reports while this
    machine searches, and a "cluster" report (unit "parts": tasks done, parts queued or
    running) when the parts are submitted and as each task finishes.
    """
    start = time.monotonic()
    deadline = Deadline.of(timeout)
    opts = dataclasses.replace(options or ProverOptions(), timeout=deadline.budget, workers=1)
    spec = Spec.make(mode, tolerance, norm)
    pair = load_pair(a, b)
    dom = parse_domain(domain, pair.net_a.in_dim)
    protos = (pair.proto_a, pair.proto_b)
    if spec.mode not in ENGINE_MODES or not opts.engine:
        res = prove_networks(pair.net_a, pair.net_b, spec, dom, opts, deadline=deadline,
                             onnx_models=protos, progress=progress)
        return _note(res, start, f"--scheduler: {spec.mode.value} mode (or no engine) is decided "
                     "on this machine: the cluster runs the engine's parts only")
    if client is None:
        from equivcheck.campaign.cluster import connect

        with connect(scheduler, workers) as own:
            return _run(pair, spec, dom, opts, deadline, own, parts_per_worker, start,
                        first_seconds, progress)
    return _run(pair, spec, dom, opts, deadline, client, parts_per_worker, start, first_seconds,
                progress)


def _run(pair, spec: Spec, dom: Domain, opts: ProverOptions, deadline: Deadline, client,
         per_worker: int, start: float, first_seconds: float | None,
         progress: ProgressFn | None = None) -> ProofResult:
    a, b = pair.net_a, pair.net_b
    model = PairModel.build(a, b)
    threads = sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values())
    runner = OrtRunner() if pair.proto_a is not None and pair.proto_b is not None else None
    # unique keys: the same networks scattered by an earlier check may be being released
    remote = client.scatter([a, b], broadcast=True, hash=False)
    results: list[BoxResult] = []
    cex = None
    stats = {"parts": 0, "tasks_done": 0, "nodes": 0, "workers": threads, "cuts": 0,
             "handed_on": 0, "overhead": []}
    for index, box in enumerate(dom.boxes):
        t0 = time.monotonic()
        if deadline.expired():
            results.append(BoxResult(index, Verdict.UNKNOWN, "timeout: the time limit was "
                                     "reached before this box was examined"))
            continue
        verdict, reason, point, nodes = _box(a, b, spec, box, opts, deadline, model, client,
                                             remote, max(1, threads) * per_worker, stats,
                                             first_seconds, progress)
        if verdict is None:  # parts left open: the prover of this machine, with the time left
            res = prove_networks(a, b, spec, Domain(point, f"{len(point)} open parts"), opts,
                                 deadline=deadline, onnx_models=(pair.proto_a, pair.proto_b),
                                 progress=progress)
            verdict, reason = res.verdict, f"{reason}; open parts: {res.reason}"
            if res.counterexample is not None:
                cex = dataclasses.replace(res.counterexample, box_index=index)
        elif verdict is Verdict.REFUTED:
            x = [Fraction(float(v)) for v in point]
            cex = build_counterexample(a, b, spec, point, index, FoundBy.FALSIFIER, runner,
                                       pair.proto_a, pair.proto_b,
                                       exact_evaluation(a, b, spec, x), box=box)
        results.append(BoxResult(index, verdict, reason, parts=nodes,
                                 seconds=time.monotonic() - t0))
        if verdict is Verdict.REFUTED:
            break
    verdict = min(r.verdict for r in results)
    first = next(r for r in results if r.verdict == verdict)
    reason = first.reason if len(dom.boxes) == 1 else f"{first.reason} (box {first.index})"
    over = sorted(stats["overhead"])
    note = (f"--scheduler: {stats['parts']} parts as Dask tasks on {threads} worker threads, "
            f"{stats['tasks_done']} finished, {stats['cuts']} cut again, {stats['handed_on']} "
            f"handed their open nodes on, {stats['nodes']} nodes"
            + (f", median task overhead {1000 * over[len(over) // 2]:.0f} ms" if over else ""))
    return ProofResult(verdict, reason, a.source, b.source, spec, dom, cex, tuple(results),
                       time.monotonic() - start,
                       tuple(a.notes) + tuple(b.notes) + (note,), opts)


def _box(a, b, spec, box: Box, opts, deadline: Deadline, model, client, remote, count, stats,
         first_seconds: float | None, progress: ProgressFn | None = None):
    """(verdict, reason, point or open parts, nodes) of one box: None as the verdict when parts
    are left open (then the third item is the list of open parts)."""
    eopts = engine_options(opts)
    slice_ = min(FIRST_SECONDS, FIRST_SHARE * deadline.remaining()) if first_seconds is None \
        else first_seconds
    first_nodes = 0
    frontier = None
    if slice_ > 0:
        first = deadline.sub(seconds=slice_)
        res = check_box(a, b, spec, box, first, eopts, model=model, progress=progress,
                        hand_back=True)
        # the slice ran out (or the engine saw no time for another round): on to the cluster
        timed_out = first.expired() or res.reason.startswith("timeout")
        if res.outcome is not Outcome.UNKNOWN or not timed_out:
            return _decided(res, "this machine's first slice", box, [box])
        first_nodes = res.stats.nodes
        frontier = res.extra.get("frontier")
    budget = deadline if engine_alone(spec, box, opts) else deadline.sub(opts.engine_share)
    if frontier is not None and len(frontier) > 2 or _relu(eopts, model):
        # ReLU splitting: its nodes are phases over the whole box (cutting the box into input
        # parts does not split its work): the cluster goes on from this machine's open nodes,
        # or (no first slice here) from one task's on the whole box, shared as they come back
        parts = [box]
    else:
        frontier = None
        parts, _ = cut_box(box, count, model, spec)
    got = farm(client, remote, spec, parts, model, stats["workers"], budget, eopts,
               f"equivcheck-stop-{uuid.uuid4().hex}", progress, frontier=frontier)
    stats["parts"] += len(got.proved) + len(got.open) + (got.refuted is not None)
    stats["tasks_done"] += got.tasks
    stats["nodes"] += got.nodes
    stats["cuts"] += got.cuts
    stats["handed_on"] += got.handed_on
    stats["overhead"].extend(got.overhead)
    nodes = got.nodes + first_nodes
    where = f"{got.tasks} Dask tasks, {got.cuts} parts cut again"
    if got.refuted is not None:
        return _decided(got.refuted, where, box, [box])
    if not got.open:
        return (Verdict.PROVED, f"branch and bound: proved by bounds on {nodes} nodes in "
                f"{len(got.proved)} parts ({where})", None, nodes)
    return None, f"branch and bound: {len(got.proved)} parts proved, {len(got.open)} open " \
        f"({where})", got.open, nodes


def _relu(eopts, model: PairModel) -> bool:
    """Whether the engine branches on ReLU phases for this pair (see EngineOptions.branch)."""
    return eopts.branch == "relu" or (eopts.branch == "auto" and model.n_in > RELU_INPUTS)


def _decided(res: EngineResult, where: str, box: Box, parts):
    nodes = res.stats.nodes
    if res.outcome is Outcome.PROVED:
        return Verdict.PROVED, f"branch and bound: {res.reason} ({where})", None, nodes
    if res.outcome is Outcome.REFUTED:
        return (Verdict.REFUTED, f"counterexample found by sampling and local search (branch "
                f"and bound, {where})", res.point, nodes)
    return None, f"branch and bound: {res.reason} ({where})", list(parts), nodes


def _note(res: ProofResult, start: float, note: str) -> ProofResult:
    return dataclasses.replace(res, notes=res.notes + (note,), seconds=time.monotonic() - start)
