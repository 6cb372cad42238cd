"""One time limit for a whole command, handed down to every stage that can take long.

A :class:`Deadline` is made once per command from the user's ``timeout`` (:meth:`Deadline.start`
validates it) and passed down: the prover, its bound methods, the falsifier, the solver, the
stability analysis, the audit and the compressor all read the same object. A stage that should
use only part of the time takes a *sub-budget* with :meth:`Deadline.sub`, which can never end
later than its parent, so no stage can push the command past the limit the user gave. Stages
check :meth:`Deadline.expired` between units of work small enough that the overrun stays far
below a second; work that cannot be interrupted in-process (the SMT solver) runs in a child
process killed at the deadline (see :mod:`equivcheck.solve.solver`).

The clock is :func:`time.monotonic` (system-wide on Linux, so a forked child sees the same
clock).
"""

from __future__ import annotations

import math
import os
import time
from contextvars import ContextVar
from dataclasses import dataclass

from equivcheck.errors import InputError

MAX_TIMEOUT = 1e7  # seconds (about 116 days): anything larger is a typo or an overflow trick
MAX_STARTUP = 60.0  # Deadline.for_process: older processes are not freshly started commands


def validate_timeout(timeout, what: str = "timeout", allow_zero: bool = False) -> float:
    """``timeout`` as a float of seconds, or :class:`InputError` with one line saying why not.

    Accepted: a finite number in ``(0, MAX_TIMEOUT]`` (``[0, MAX_TIMEOUT]`` with
    ``allow_zero``). NaN, infinities, negative values, absurdly large values and non-numbers
    are refused.
    """
    if isinstance(timeout, bool):
        raise InputError(f"{what} must be a number of seconds, got {timeout!r}")
    try:
        t = float(timeout)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{what} must be a number of seconds, got {timeout!r}") from None
    if math.isnan(t) or math.isinf(t):
        raise InputError(f"{what} must be a finite number of seconds, got {t}")
    if t < 0 or (t == 0 and not allow_zero):
        raise InputError(f"{what} must be positive, got {t:g}")
    if t > MAX_TIMEOUT:
        raise InputError(f"{what} {t:g} s is too large (at most {MAX_TIMEOUT:g} s)")
    return t


@dataclass(frozen=True)
class Deadline:
    """The moment ``end`` (on the :func:`time.monotonic` clock) by which the work must be done.

    ``budget`` is the number of seconds it was made with (for messages). Immutable: a stage
    never extends the time of another; it can only take a smaller part with :meth:`sub`.
    """

    end: float
    budget: float

    @classmethod
    def start(cls, timeout, what: str = "timeout", allow_zero: bool = False) -> Deadline:
        """A deadline ``timeout`` seconds from now, after :func:`validate_timeout`."""
        t = validate_timeout(timeout, what, allow_zero)
        return cls(time.monotonic() + t, t)

    @classmethod
    def for_process(cls, timeout, what: str = "timeout") -> Deadline:
        """A deadline ``timeout`` seconds after *this process started* (not after now), for
        command-line tools whose limit the user measures from launching the command: start-up
        and imports count against it. Falls back to :meth:`start` where the start time is not
        known (anywhere but Linux)."""
        t = validate_timeout(timeout, what)
        return cls(time.monotonic() - _process_age() + t, t)

    @classmethod
    def for_command(cls, timeout, what: str = "timeout") -> Deadline:
        """A deadline ``timeout`` seconds after the *command* started: after this process
        started when the command runs as its own process (the console script marks that with
        :func:`command_started_with_process`), else (a command invoked in-process, e.g. by a
        test runner) from now."""
        if not _COMMAND_IS_PROCESS.get():
            return cls.start(timeout, what)
        return cls.for_process(timeout, what)

    @classmethod
    def of(cls, timeout: float | Deadline, what: str = "timeout",
           allow_zero: bool = False) -> Deadline:
        """``timeout`` itself when it is a :class:`Deadline` (a caller's budget being handed
        down), else :meth:`start` of it."""
        if isinstance(timeout, Deadline):
            return timeout
        return cls.start(timeout, what, allow_zero)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.end - time.monotonic())

    def expired(self) -> bool:
        """True once the deadline has passed."""
        return time.monotonic() >= self.end

    def sub(self, fraction: float | None = None, seconds: float | None = None) -> Deadline:
        """A child deadline: ``fraction`` of the time left and/or at most ``seconds`` from now,
        never later than this one. Raises nothing: a NaN or negative share gives an expired
        child, no argument gives the parent's own end."""
        left = self.remaining()
        share = left
        if fraction is not None:
            share = min(share, left * _clean(fraction))
        if seconds is not None:
            share = min(share, _clean(seconds))
        now = time.monotonic()
        return Deadline(min(self.end, now + share), share)

    def __repr__(self) -> str:
        return f"Deadline({self.remaining():.3f} s left of {self.budget:g} s)"


_COMMAND_IS_PROCESS: ContextVar[bool] = ContextVar("equivcheck_command_is_process", default=False)


def command_started_with_process() -> None:
    """Say that the command being run is this whole process (the console script's ``main``), so
    :meth:`Deadline.for_command` counts start-up and imports against ``--timeout``."""
    _COMMAND_IS_PROCESS.set(True)


def _process_age() -> float:
    """Seconds since this process was started (0.0 when unknown)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        age = uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0
    return age if 0.0 <= age <= MAX_STARTUP else 0.0  # a long-lived process: count from now


def _clean(x: float) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return 0.0
    if math.isnan(v) or v < 0:
        return 0.0
    return v
