"""A campaign on a Dask distributed cluster: one task per instance.

``scheduler`` is the address of a running scheduler (``tcp://host:8786``) or ``"local"``: a
``LocalCluster`` of ``workers`` single-threaded worker processes on this machine, closed at the
end. Each task runs its instance in a child process of the worker under the instance's hard
limit (:func:`~equivcheck.campaign.isolate.run_isolated`). A worker that dies mid-instance has
its tasks re-run on another worker by the scheduler (a task that kills
``distributed.scheduler.allowed-failures`` + 1 workers is given up: its record is an error);
a task that raises is retried ``RETRIES`` times. The results are collected by key, one per
instance, so nothing is counted twice.

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
from equivcheck.errors import InputError

RETRIES = 2  # re-runs of a task that raised (a dead worker is handled by the scheduler)
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
    single-threaded worker processes, one per core when ``workers`` is 0), closed on leaving.
    A scheduler that cannot be reached is a :class:`ClusterError`."""
    from equivcheck.engine.parallel import default_workers

    dd = _distributed()
    cluster = None
    try:
        if scheduler == "local":
            cluster = dd.LocalCluster(n_workers=workers or default_workers(), threads_per_worker=1,
                                      processes=True, dashboard_address=":0",
                                      silence_logs=logging.ERROR)
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
             emit: Callable[[dict], None], client=None) -> None:
    """Submit ``todo`` to the cluster (or to ``client`` when given) and ``emit`` each record as
    its task finishes; on ^C or an error every task not finished is cancelled."""
    if client is None:
        with connect(scheduler, workers) as own:
            return run_dask(todo, scheduler, workers, emit, own)
    dd = _distributed()
    run = uuid.uuid4().hex[:8]
    futures = {}
    for inst in todo:
        fut = client.submit(run_isolated, inst, key=f"equivcheck-{run}-row{inst.row}",
                            pure=False, retries=RETRIES)
        futures[fut.key] = (fut, inst)
    try:
        for fut in dd.as_completed([f for f, _ in futures.values()]):
            inst = futures[fut.key][1]
            try:
                rec = fut.result()
            except Exception as exc:  # a task given up (KilledWorker, an error every retry)
                rec = error_record(inst, f"internal error: the cluster gave up the instance: "
                                   f"{type(exc).__name__}: {' '.join(str(exc).split())}")
            emit(rec)
    finally:
        client.cancel([f for f, _ in futures.values()])
