"""A campaign on a Dask distributed cluster: one task per instance, or per small batch of
instances with short timeouts.

``scheduler`` is the address of a running scheduler (``tcp://host:8786``) or ``"local"``: a
``LocalCluster`` of ``workers`` single-threaded worker processes on this machine, closed at the
end. Each task runs its instance in a child process of the worker under the instance's hard
limit (:func:`~equivcheck.campaign.isolate.run_isolated`). A worker that dies mid-instance has
its tasks re-run on another worker by the scheduler (a task that kills
``distributed.scheduler.allowed-failures`` + 1 workers is given up: its record is an error);
a task that raises is retried ``RETRIES`` times. The results are collected by key, one per
instance, so nothing is counted twice.

Batches (:func:`batches`, ``run_dask(batch=...)``): instances whose timeouts are short share a
task, several in a row (each still in a child process of its own under its hard limit), so the
per-task cost (the scheduler's round trip, a few ms to tens of ms) is paid once per batch: on
a 2-worker LocalCluster, tiny instances took 5-30 % less wall time in batches
(``benchmarks/campaign.py --tiny``). The price: a batch's records arrive together when it ends,
and a worker lost mid-batch has the whole batch run again (each record still counted once).
A batch holds at most
``BATCH_SECONDS`` of timeouts (what a lost batch, or a record held back until its batch ends,
can cost) and, with ``batch=None``, at most n / (``BATCHES_PER_THREAD`` x worker threads) of
the n instances (so every worker still gets several tasks); an instance whose timeout is over
half of ``BATCH_SECONDS`` is a task alone.

The workers need equivcheck installed (``pip install equivcheck[cluster]``) and must see the
model and domain files at the same paths as this machine (a shared file system).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable

from equivcheck.campaign.instances import Instance
from equivcheck.campaign.isolate import error_record, run_isolated
from equivcheck.campaign.malloc import malloc_defaults
from equivcheck.errors import InputError

RETRIES = 2  # re-runs of a task that raised (a dead worker is handled by the scheduler)
BATCH_SECONDS = 10.0  # the most timeout seconds one task's batch holds (see the module doc)
BATCHES_PER_THREAD = 4  # at least this many tasks per worker thread when batching
CONNECT_SECONDS = 10.0


class ClusterError(InputError):
    """The Dask scheduler cannot be reached, or Dask is not installed (CLI exit code 4)."""


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ClusterError("--scheduler needs Dask distributed: pip install "
                           "'equivcheck[cluster]' (or dask[distributed])") from None
    return distributed


@contextlib.contextmanager
def connect(scheduler: str, workers: int = 0):
    """A ``distributed.Client`` on ``scheduler`` ("local": a LocalCluster of ``workers``
    single-threaded worker processes, one per core when ``workers`` is 0, started without the
    nanny's ``MALLOC_*`` settings), closed on leaving.
    A scheduler that cannot be reached is a :class:`ClusterError`."""
    from equivcheck.engine.parallel import default_workers

    dd = _distributed()
    cluster = None
    try:
        if scheduler == "local":
            with malloc_defaults():
                cluster = dd.LocalCluster(n_workers=workers or default_workers(),
                                          threads_per_worker=1, processes=True,
                                          dashboard_address=":0", silence_logs=logging.ERROR)
            client = dd.Client(cluster)
        else:
            try:
                client = dd.Client(scheduler, timeout=CONNECT_SECONDS)
            except (OSError, TimeoutError, ValueError) as exc:
                raise ClusterError(f"--scheduler {scheduler}: cannot reach the Dask scheduler "
                                   f"({' '.join(str(exc).split()) or type(exc).__name__})"
                                   ) from None
        try:
            yield client
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


def run_dask(todo: list[Instance], scheduler: str, workers: int,
             emit: Callable[[dict], None], client=None, batch: int | None = None) -> None:
    """Submit ``todo`` to the cluster (or to ``client`` when given) and ``emit`` each record as
    its task finishes (a batch's records together, in row order); on ^C or an error every task
    not finished is cancelled. ``batch``: the most instances per task (None: chosen by
    :func:`batches` from the worker threads; 1: one task per instance)."""
    if client is None:
        with connect(scheduler, workers) as own:
            return run_dask(todo, scheduler, workers, emit, own, batch)
    dd = _distributed()
    if batch is None:
        threads = sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values())
        batch = max(1, len(todo) // (BATCHES_PER_THREAD * max(1, threads)))
    run = uuid.uuid4().hex[:8]
    futures = {}
    for group in batches(todo, batch):
        key = f"equivcheck-{run}-row{group[0].row}" + (f"-{len(group)}" if len(group) > 1 else "")
        fut = client.submit(run_batch, group, key=key, pure=False, retries=RETRIES)
        futures[fut.key] = (fut, group)
    try:
        for fut in dd.as_completed([f for f, _ in futures.values()]):
            group = futures[fut.key][1]
            try:
                recs = fut.result()
            except Exception as exc:  # a task given up (KilledWorker, an error every retry)
                why = (f"internal error: the cluster gave up the instance: "
                       f"{type(exc).__name__}: {' '.join(str(exc).split())}")
                recs = [error_record(inst, why) for inst in group]
            for rec in recs:
                emit(rec)
    finally:
        client.cancel([f for f, _ in futures.values()])


def batches(todo: list[Instance], most: int) -> list[list[Instance]]:
    """``todo`` cut into runs of consecutive instances, in order: at most ``most`` instances
    and ``BATCH_SECONDS`` of timeouts per run; an instance whose timeout alone is more than
    half of ``BATCH_SECONDS`` is a run of its own. Every instance is in exactly one run."""
    runs: list[list[Instance]] = []
    current: list[Instance] = []
    for inst in todo:
        short = inst.timeout <= BATCH_SECONDS / 2
        fits = (short and len(current) < most
                and sum(i.timeout for i in current) + inst.timeout <= BATCH_SECONDS)
        if current and not fits:
            runs.append(current)
            current = []
        current.append(inst)
        if not short:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def run_batch(group: list[Instance]) -> list[dict]:
    """A Dask task: the records of ``group``, one after another, each instance in a child
    process of its own under its hard limit (:func:`run_isolated`)."""
    return [run_isolated(inst) for inst in group]
