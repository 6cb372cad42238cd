"""Running Z3 on an SMT-LIB query with a hard time limit. The only module that imports z3.

Z3 does not always honour its own timeout, so every query runs in a child process that is
killed when the limit is reached: ``timeout`` is a wall-clock promise, not a hint.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass, field
from fractions import Fraction

from .errors import SolverError

GRACE_SECONDS = 0.5


@dataclass(frozen=True)
class SolveOutcome:
    """``status`` is "sat", "unsat", "unknown" or "timeout"; ``model`` maps names to rationals."""

    status: str
    seconds: float
    model: dict[str, Fraction] = field(default_factory=dict)
    reason: str = ""


def _child(conn, text: str, names: tuple[str, ...], soft_ms: int) -> None:
    try:
        import z3

        solver = z3.Solver()
        if soft_ms > 0:
            solver.set("timeout", soft_ms)
        solver.from_string(text)
        result = solver.check()
        if result == z3.sat:
            m = solver.model()
            values = {}
            for name in names:
                v = m.eval(z3.Real(name), model_completion=True)
                values[name] = str(v.as_fraction())
            conn.send(("sat", values, ""))
        elif result == z3.unsat:
            conn.send(("unsat", {}, ""))
        else:
            conn.send(("unknown", {}, solver.reason_unknown()))
    except BaseException as exc:  # report, never hang the parent
        conn.send(("error", {}, f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def solve(text: str, names: tuple[str, ...], timeout: float) -> SolveOutcome:
    """Decide the SMT-LIB ``text``; on *sat* return the values of ``names`` exactly.

    The child process is killed after ``timeout`` seconds (plus a short grace for start-up),
    and the outcome is then "timeout".
    """
    start = time.monotonic()
    import z3  # noqa: F401  (loaded once here, so forked children start with it)

    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, text, names, int(timeout * 1000)), daemon=True)
    proc.start()
    child.close()
    got = None
    if parent.poll(max(timeout, 0.0) + GRACE_SECONDS):
        try:
            got = parent.recv()
        except EOFError:
            got = None
    if proc.is_alive():
        proc.kill()
    proc.join()
    seconds = time.monotonic() - start
    if got is None:
        if seconds >= timeout:
            return SolveOutcome("timeout", seconds, reason=f"solver timed out after {timeout:g} s")
        raise SolverError(f"the solver process died (exit code {proc.exitcode})")
    status, values, reason = got
    if status == "error":
        raise SolverError(f"the solver failed: {reason}")
    if status == "unknown" and seconds >= timeout * 0.95:
        return SolveOutcome("timeout", seconds, reason=f"solver timed out after {timeout:g} s ({reason})")
    return SolveOutcome(status, seconds, {k: Fraction(v) for k, v in values.items()}, reason)
