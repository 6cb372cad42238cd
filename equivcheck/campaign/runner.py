"""Running a campaign: every instance not finished yet, on worker processes of this machine or
on a Dask cluster, each record written as soon as it arrives.

:func:`run_campaign` is the library entry point the CLI calls. Every instance runs in a child
process of its own under its hard limit (:mod:`equivcheck.campaign.isolate`); on this machine
up to ``workers`` of them at once, on a cluster one per Dask worker thread
(:mod:`equivcheck.campaign.cluster`). ^C stops the children and keeps every finished record.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from equivcheck.campaign.instances import Instance
from equivcheck.campaign.isolate import Child, start
from equivcheck.campaign.results import ResultsFile, Summary, finished_rows

TICK = 0.5  # seconds between looks at the children's hard limits

Emit = Callable[[dict], None]


@dataclass(frozen=True)
class CampaignResult:
    """What a campaign left: every record by row order (those of earlier runs too, with
    ``resume``), the rows this run ran, its summary, and whether ^C stopped it."""

    records: tuple[dict, ...]
    ran: tuple[int, ...]
    skipped: tuple[int, ...]
    summary: Summary
    interrupted: bool


def run_campaign(instances: list[Instance], out: Path | None = None, workers: int = 1,
                 scheduler: str | None = None, resume: bool = False,
                 on_record: Emit | None = None) -> CampaignResult:
    """Run ``instances`` and return their records.

    ``out``: the JSONL results file (one line per finished instance, appended and flushed at
    once); with ``resume`` the rows it already holds are not run again (see
    :func:`~equivcheck.campaign.results.finished_rows`), else it is truncated. ``workers``:
    instances at once on this machine (``scheduler`` None), or the workers of a LocalCluster
    (``scheduler`` "local"); any other ``scheduler`` is the address of a Dask scheduler.
    ``on_record`` is called with each new record. A record is written once per row, however
    often a cluster ran the instance. Raises an :class:`~equivcheck.errors.InputError` before
    any work when the results file does not belong to the campaign or the cluster cannot be
    reached.
    """
    t0 = time.monotonic()
    done = finished_rows(out, instances) if (resume and out is not None) else {}
    todo = [inst for inst in instances if inst.row not in done]
    sink = ResultsFile(out, done, append=resume)
    ran: list[int] = []

    def emit(rec: dict) -> None:
        if sink.add(rec):
            ran.append(rec["row"])
            if on_record is not None:
                on_record(rec)

    interrupted = False
    try:
        if todo:
            if scheduler is None:
                run_local(todo, max(1, workers), emit)
            else:
                from equivcheck.campaign.cluster import run_dask

                run_dask(todo, scheduler, workers, emit)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        sink.close()
    order = {inst.row: k for k, inst in enumerate(instances)}
    records = sorted(sink.records.values(), key=lambda r: order.get(r["row"], len(order)))
    new = [sink.records[r] for r in ran]
    summary = Summary.of(new, len(todo), time.monotonic() - t0)
    return CampaignResult(tuple(records), tuple(ran), tuple(sorted(done)), summary, interrupted)


def run_local(todo: list[Instance], workers: int, emit: Emit) -> None:
    """Run ``todo`` on this machine, ``workers`` children at a time, in row order; ``emit``
    each record as it finishes. Every child is killed and reaped before this returns or
    raises (^C included)."""
    pending = list(reversed(todo))
    running: dict[int, Child] = {}
    try:
        while pending or running:
            while pending and len(running) < workers:
                child = start(pending.pop())
                running[child.fd] = child
            soonest = min(c.kill_at for c in running.values()) - time.monotonic()
            select.select(list(running), [], [], max(0.0, min(TICK, soonest)))
            for fd, child in list(running.items()):
                rec = child.poll()
                if rec is not None:
                    del running[fd]
                    emit(rec)
    finally:
        for child in running.values():
            child.kill()
