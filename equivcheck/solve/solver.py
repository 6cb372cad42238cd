"""Running Z3 on an SMT-LIB query with a hard time limit. The only module that imports z3.

Z3 does not always honour its own timeout, so every query runs in a child process that is
killed when the limit is reached: ``timeout`` is a wall-clock promise, not a hint. The child
never outlives the parent: on Linux it asks the kernel for SIGKILL when its parent dies
(``prctl(PR_SET_PDEATHSIG)``), and while a child runs the parent kills it on SIGTERM / SIGHUP
before exiting (SIGINT becomes ``KeyboardInterrupt``, whose unwinding kills it too).

The query can also be *built* in the child (:func:`solve_built`): work that cannot be
interrupted in-process, such as writing a large encoding, then ends at the deadline as well.
"""

from __future__ import annotations

import contextlib
import enum
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from equivcheck.core.children import die_with_parent
from equivcheck.core.deadline import Deadline
from equivcheck.errors import SolverError

GRACE_SECONDS = 0.5  # child start-up and parsing, beyond the solver's own timeout
POLL_SECONDS = 3600.0  # longest single wait on the child (the loop waits again)
MAX_SOFT_MS = 2**31 - 1  # z3's own timeout is an unsigned int of milliseconds (the kill is ours)
_FORWARDED_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))

# A query builder runs in the child and returns (info, text, names): ``info`` is a small
# picklable dict sent back to the parent first; ``text`` None means there is nothing to solve.
Builder = Callable[[], "tuple[dict, str | None, tuple[str, ...]]"]


class SolveStatus(str, enum.Enum):
    """What the solver said about a query."""

    SAT = "sat"  # satisfiable: the outcome's model holds exact values of the input names
    UNSAT = "unsat"  # unsatisfiable over the reals
    UNKNOWN = "unknown"  # the solver gave up (its reason says why), or there was nothing to solve
    TIMEOUT = "timeout"  # the time limit was reached (the child was stopped or killed)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class SolveOutcome:
    """The solver's ``status`` and, when it is SAT, the ``model``: names to exact rationals."""

    status: SolveStatus
    seconds: float
    model: dict[str, Fraction] = field(default_factory=dict)
    reason: str = ""


@dataclass(frozen=True)
class BuiltOutcome:
    """What :func:`solve_built` learnt: the builder's ``info`` and input ``names`` (None when
    the time ran out before the query was built) and the solver's outcome."""

    info: dict | None
    names: tuple[str, ...]
    outcome: SolveOutcome


def _die_with_parent(parent_pid: int) -> None:
    """In the child: be killed when the parent dies, and leave at once if it already has."""
    for sig in _FORWARDED_SIGNALS:  # the parent's handler (below) is inherited: drop it
        signal.signal(sig, signal.SIG_DFL)
    die_with_parent(parent_pid)


def _child(conn, parent_pid: int, query, soft_end: float) -> None:
    """In the child: build the query if asked, solve it, and send ``(kind, values, reason)``
    messages: kind "built" (the builder's info), then a :class:`SolveStatus` value, "nothing"
    (nothing to solve) or "error"."""
    _die_with_parent(parent_pid)
    try:
        if callable(query):
            info, text, names = query()
            conn.send(("built", info, tuple(names)))
            if text is None:
                conn.send(("nothing", {}, "nothing to solve"))
                return
        else:
            text, names = query
        import z3

        soft_ms = int((soft_end - time.monotonic()) * 1000)
        if soft_ms <= 0:
            conn.send((SolveStatus.TIMEOUT.value, {}, "no time left after building the query"))
            return
        solver = z3.Solver()
        solver.set("timeout", min(soft_ms, MAX_SOFT_MS))
        solver.from_string(text)
        result = solver.check()
        if result == z3.sat:
            m = solver.model()
            values = {}
            for name in names:
                v = m.eval(z3.Real(name), model_completion=True)
                values[name] = str(v.as_fraction())
            conn.send((SolveStatus.SAT.value, values, ""))
        elif result == z3.unsat:
            conn.send((SolveStatus.UNSAT.value, {}, ""))
        else:
            conn.send((SolveStatus.UNKNOWN.value, {}, solver.reason_unknown()))
    except BaseException as exc:  # report, never hang the parent
        with contextlib.suppress(Exception):
            conn.send(("error", {}, f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


@contextlib.contextmanager
def _kill_on_signal(proc):
    """While the child runs: SIGTERM / SIGHUP kill it first, then act as before (the previous
    Python handler is called; under the default action the process exits with 128 + signal)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def handler(signum, frame):
        with contextlib.suppress(Exception):
            proc.kill()
        prev = previous.get(signum)
        if callable(prev):
            prev(signum, frame)
        else:
            raise SystemExit(128 + signum)

    for sig in _FORWARDED_SIGNALS:
        try:
            old = signal.getsignal(sig)
            if old == signal.SIG_IGN:
                continue
            signal.signal(sig, handler)
            previous[sig] = old
        except (ValueError, OSError):  # pragma: no cover
            pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, old if old is not None else signal.SIG_DFL)


def _run(query, timeout: float, deadline: Deadline | None
         ) -> tuple[tuple | None, tuple | None, float, float, bool, int | None]:
    """Run the child; returns (built message, result message, seconds, the solver's time limit
    in seconds, timed out, exit code)."""
    start = time.monotonic()
    import multiprocessing as mp  # here, like z3: a check that never solves loads neither

    import z3  # noqa: F401  (loaded once here, so forked children start with it)

    timeout = max(0.0, float(timeout))
    soft_end = start + timeout
    hard_end = soft_end + GRACE_SECONDS
    if deadline is not None:
        soft_end = min(soft_end, deadline.end)
        hard_end = min(hard_end, deadline.end)
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, os.getpid(), query, soft_end), daemon=True)
    built = got = None
    timed_out = started = False
    with _kill_on_signal(proc):
        try:
            proc.start()
            started = True
            child.close()
            while got is None:
                left = hard_end - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                if not parent.poll(min(left, POLL_SECONDS)):  # poll() refuses huge waits
                    continue
                try:
                    msg = parent.recv()
                except EOFError:  # the child died: let it finish dying, for its exit code
                    proc.join(max(0.0, min(1.0, hard_end - time.monotonic())))
                    break
                if msg[0] == "built":
                    built = msg
                else:
                    got = msg
        finally:
            if started:
                if proc.is_alive():
                    proc.kill()
                proc.join()
            parent.close()
    return built, got, time.monotonic() - start, soft_end - start, timed_out, proc.exitcode


def _outcome(got, seconds: float, limit: float, timed_out: bool, exitcode, what: str) -> SolveOutcome:
    if got is None:
        if timed_out:
            return SolveOutcome(SolveStatus.TIMEOUT, seconds, reason=f"{what} timed out after {seconds:.3g} s")
        raise SolverError(f"the solver process died (exit code {exitcode})")
    status, values, reason = got
    if status == "error":
        raise SolverError(f"the solver failed: {reason}")
    if status == SolveStatus.TIMEOUT:
        return SolveOutcome(SolveStatus.TIMEOUT, seconds, reason=f"{what} timed out: {reason}")
    if status == SolveStatus.UNKNOWN and seconds >= limit * 0.95:
        return SolveOutcome(SolveStatus.TIMEOUT, seconds, reason=f"solver timed out after {limit:.3g} s ({reason})")
    return SolveOutcome(SolveStatus(status), seconds, {k: Fraction(v) for k, v in values.items()}, reason)


def solve(text: str, names: tuple[str, ...], timeout: float,
          deadline: Deadline | None = None) -> SolveOutcome:
    """Decide the SMT-LIB ``text``; on *sat* return the values of ``names`` exactly.

    The child process is killed after ``timeout`` seconds (plus a short grace for start-up),
    or at ``deadline`` if that comes first, and the outcome is then TIMEOUT.
    """
    _, got, seconds, limit, timed_out, code = _run((text, tuple(names)), timeout, deadline)
    return _outcome(got, seconds, limit, timed_out, code, "solver")


def solve_built(build: Builder, timeout: float, deadline: Deadline | None = None) -> BuiltOutcome:
    """Like :func:`solve`, but the query is made by ``build()`` in the child process, within
    the same time limit (so a long encoding cannot overrun it). ``build`` returns
    ``(info, text, names)``; with ``text`` None only ``info`` comes back (UNSAT is not implied:
    the outcome's status is then UNKNOWN with reason "nothing to solve")."""
    built, got, seconds, limit, timed_out, code = _run(build, timeout, deadline)
    if built is None:
        if timed_out:
            why = "the time limit was reached while building the query"
            return BuiltOutcome(None, (), SolveOutcome(SolveStatus.TIMEOUT, seconds, reason=why))
        if got is not None and got[0] == "error":
            raise SolverError(f"building the query failed: {got[2]}")
        raise SolverError(f"the solver process died (exit code {code})")
    _, info, names = built
    if got is not None and got[0] == "nothing":
        return BuiltOutcome(info, names, SolveOutcome(SolveStatus.UNKNOWN, seconds, reason="nothing to solve"))
    return BuiltOutcome(info, names, _outcome(got, seconds, limit, timed_out, code, "solver"))
