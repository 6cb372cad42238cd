"""One instance in a child process of its own, under a hard time limit.

:func:`start` forks a child that runs :func:`run_instance` (``equivcheck.prove`` on the
instance, with the instance's timeout as the hard limit of the whole check) and writes its
record, one JSON text, to a pipe. The parent reads it with :meth:`Child.poll` and kills the
child ``GRACE`` seconds after the instance's limit, so no instance outlives its timeout by more
than that whatever it does (the prover's own limit is hard too; this is the worker's guard).
A child dies with the process that started it (Linux ``PR_SET_PDEATHSIG``), ignores ^C (the
parent handles it), limits BLAS to one thread (the other children use the other cores) and
sets the C allocator's thresholds (:func:`~equivcheck.campaign.malloc.tune_malloc`: a Dask
worker's environment made every instance 1.7-1.9x slower).

Forking directly (``os.fork``, not :mod:`multiprocessing`) works from any thread, in the CLI's
process as in a Dask worker; the child may start processes of its own (the solver's) even when
the worker is a daemon.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import signal
import sys
import time
from dataclasses import dataclass, field

from equivcheck.campaign.instances import Instance
from equivcheck.campaign.malloc import tune_malloc
from equivcheck.core.children import die_with_parent

GRACE = 3.0  # seconds after an instance's timeout before its child is killed
EXIT_CRASH = 5  # the exit code of a record for a child that died without one


def run_instance(inst: Instance) -> dict:
    """The record of one instance, in this process: the object ``prove --json`` prints, plus
    ``row``, ``family`` and ``instance`` (see :meth:`Instance.to_dict`) and ``exit_code``. An
    error the user can cause (a model that does not load, a domain of the wrong size) gives
    ``verdict`` "error" and its one-line ``reason``, never an exception."""
    from equivcheck.core.deadline import Deadline
    from equivcheck.core.options import ProverOptions
    from equivcheck.errors import EquivcheckError
    from equivcheck.solve.prover import prove

    deadline = Deadline.start(inst.timeout)
    try:
        res = prove(inst.a, inst.b, domain=inst.domain, mode=inst.mode, tolerance=inst.tolerance,
                    timeout=deadline, options=ProverOptions(timeout=inst.timeout, workers=1))
    except EquivcheckError as exc:
        return error_record(inst, " ".join(str(exc).split()), exc.exit_code)
    return {**res.to_dict(), "exit_code": res.exit_code, **_tags(inst)}


def error_record(inst: Instance, reason: str, code: int = EXIT_CRASH,
                 verdict: str = "error", seconds: float = 0.0) -> dict:
    """A record for an instance that gave no result: ``verdict`` "error" (or "unknown" for a
    child stopped at the hard limit) and why."""
    return {"verdict": verdict, "reason": reason, "model_a": inst.a, "model_b": inst.b,
            "seconds": round(seconds, 4), "exit_code": code, **_tags(inst)}


def _tags(inst: Instance) -> dict:
    return {"row": inst.row, "family": inst.family, "instance": inst.to_dict()}


@dataclass
class Child:
    """A running instance: its process, the read end of its pipe, and when it must end."""

    inst: Instance
    pid: int
    fd: int
    started: float
    kill_at: float
    data: bytearray = field(default_factory=bytearray)
    record: dict | None = None

    def poll(self) -> dict | None:
        """Read what the child wrote; its record once it has finished (the child is reaped),
        None while it runs. A child past its hard limit is killed and gets an UNKNOWN record;
        one that died without a record gets an error record."""
        if self.record is not None:
            return self.record
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:  # end of file: the child is done (or dead)
                return self._finish(None)
            self.data.extend(chunk)
        if time.monotonic() >= self.kill_at:
            self.kill()
            return self._finish(f"timeout: the worker stopped the instance at its hard limit "
                                f"({self.inst.timeout:g} s)")
        return None

    def kill(self) -> None:
        """Kill the child (if it still runs) and reap it."""
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(self.pid, signal.SIGKILL)
        self._reap()

    def _reap(self) -> int | None:
        with contextlib.suppress(ChildProcessError):
            _, status = os.waitpid(self.pid, 0)
            return os.waitstatus_to_exitcode(status)
        return None

    def _finish(self, stopped: str | None) -> dict:
        code = None if stopped else self._reap()
        with contextlib.suppress(OSError):
            os.close(self.fd)
        seconds = time.monotonic() - self.started
        if stopped:
            self.record = error_record(self.inst, stopped, 3, "unknown", seconds)
            return self.record
        try:
            self.record = json.loads(self.data.decode("utf-8"))
        except ValueError:
            why = f"exit code {code}" if code is None or code >= 0 else f"signal {-code}"
            self.record = error_record(self.inst, f"internal error: the worker process died "
                                       f"without a result ({why})", EXIT_CRASH, seconds=seconds)
        return self.record


@functools.cache
def warm() -> None:
    """Import, once in this process, what a check imports lazily (the prover, ONNX's protobuf
    classes, numpy's random generator, onnxruntime for re-running counterexamples), so that the
    forked children inherit it instead of each importing it again (measured: 0.08 s of every
    tiny proved instance, 0.2 s of a refuted one, forked from a fresh process)."""
    import numpy as np

    import equivcheck.solve.prover  # noqa: F401
    from equivcheck.io.onnx_proto import pb2

    pb2()
    np.random.default_rng(0)
    with contextlib.suppress(ImportError):
        import onnxruntime  # noqa: F401


def start(inst: Instance) -> Child:
    """Fork a child running ``inst`` (see the module doc) and return its handle."""
    warm()
    r, w = os.pipe()
    now = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(r)
        _child(inst, w, os.getppid())
    os.close(w)
    os.set_blocking(r, False)
    return Child(inst, pid, r, now, now + inst.timeout + GRACE)


def run_isolated(inst: Instance) -> dict:
    """The record of ``inst`` run in a child process of its own (blocking): what a Dask task
    runs, so that a worker keeps every instance's hard limit."""
    child = start(inst)
    try:
        while (rec := child.poll()) is None:
            select.select([child.fd], [], [], max(0.0, min(0.5, child.kill_at - time.monotonic())))
        return rec
    finally:
        if child.record is None:  # interrupted: leave no child behind
            child.kill()


def _child(inst: Instance, fd: int, parent: int) -> None:
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        die_with_parent(parent, EXIT_CRASH)
        _allow_children()
        tune_malloc()  # a Dask worker's MALLOC_TRIM_THRESHOLD_ made instances 1.7-1.9x slower
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            rec = run_instance(inst)
        from equivcheck.core.result import json_text

        data = json_text(rec).encode("utf-8")
        while data:
            data = data[os.write(fd, data):]
    except BaseException as exc:  # noqa: BLE001 - reported, never a traceback
        code = EXIT_CRASH
        with contextlib.suppress(Exception):
            msg = f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())}"
            os.write(fd, json.dumps(error_record(inst, msg)).encode("utf-8"))
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _allow_children() -> None:
    """A child forked from a daemonic process (a Dask worker) is a process of its own: let it
    start the solver's processes (multiprocessing refuses children to daemons)."""
    import multiprocessing

    proc = multiprocessing.current_process()
    if proc.daemon:
        with contextlib.suppress(AssertionError, AttributeError):
            proc.daemon = False
