"""Progress of a long check, as plain data: what a stage reports and what a front end shows.

Library code that can run for more than a second (the engine's search, the prover's boxes, the
audit, compress) takes an optional ``progress`` callable and calls it with a :class:`Progress`
now and then (cheaply: building one is a few attribute stores). What to do with it (a rich bar on
a terminal, a plain line every few seconds in a log, nothing) is the front end's choice
(:mod:`equivcheck.cli`); the library never prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """One report: the ``stage`` running (e.g. ``"search"``, ``"stability"``, ``"audit"``), work
    ``done`` and still ``open`` (nodes, boxes or units: ``unit`` names which), the best rigorous
    bound so far (``bound``: for a search, the upper bound of the measure the spec limits; None
    when there is none yet), the seconds left before the deadline, and a short free ``detail``."""

    stage: str
    done: int = 0
    open: int = 0
    unit: str = "nodes"
    bound: float | None = None
    seconds_left: float | None = None
    detail: str = ""


ProgressFn = Callable[[Progress], None]


def report(progress: ProgressFn | None, event: Progress) -> None:
    """Hand ``event`` to ``progress`` if there is one (the one call site pattern)."""
    if progress is not None:
        progress(event)
