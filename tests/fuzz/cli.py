"""Running ``equivcheck`` on fuzzed input in a scratch folder, and the properties of every run.

Two ways to run: in this process through ``typer.testing.CliRunner`` (fast; a watchdog timer
aborts a run that overstays its time limit) or as a subprocess (slower; catches what is printed
outside Python's handlers, runs under a memory limit, killed with its process group when late).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..helpers import strict_json
from .nets import OUTSIDE_BYTES, OUTSIDE_FILE

VERDICT_CODES = {"proved": 0, "refuted": 1, "unknown": 3}
MEMORY_LIMIT = 6 << 30  # bytes of address space for subprocess runs
SUBPROCESS_CODE = (
    "import sys; sys.argv[0] = 'equivcheck'; from equivcheck.cli import main; main()"
)


@dataclass(frozen=True)
class Run:
    """One CLI invocation: exit code (None when it had to be killed), streams, wall time."""

    args: tuple[str, ...]
    code: int | None
    stdout: str
    stderr: str
    seconds: float
    via: str
    error: str | None = None  # an exception that escaped the CLI, or "killed after N s"

    def command(self) -> str:
        return "equivcheck " + " ".join(_quote(a) for a in self.args)


def _quote(a: str) -> str:
    return a if a and all(c.isalnum() or c in "-_.:/=,+" for c in a) else repr(a)


_BASE: list[Path] = []


def _default_base() -> Path:
    """One folder per process for all scratch folders (and the file 'outside' them), removed
    when the process exits."""
    if not _BASE:
        import atexit

        _BASE.append(Path(tempfile.mkdtemp(prefix="ec_fuzz_base_")))
        atexit.register(shutil.rmtree, _BASE[0], True)
    return _BASE[0]


class Scratch:
    """A fresh folder (the current directory while a run lasts) holding a case's input files."""

    def __init__(self, base: Path | None = None) -> None:
        self.base = Path(base) if base else _default_base()
        outside = self.base / OUTSIDE_FILE
        if not outside.exists():
            outside.write_bytes(b"\x00\x00\x80\x3f" * (OUTSIDE_BYTES // 4))
        self.path = Path(tempfile.mkdtemp(prefix="ec_fuzz_", dir=self.base))

    def write(self, name: str, data: bytes | str) -> str:
        p = self.path / name
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        return name

    def fifo(self, name: str) -> str:
        os.mkfifo(self.path / name)
        return name

    def hardlink(self, src: str, name: str) -> str:
        os.link(self.path / src, self.path / name)
        return name

    def snapshot(self) -> dict[str, str]:
        """Relative path -> content hash (or the kind of special file) of everything inside."""
        out = {}
        for root, dirs, files in os.walk(self.path):
            for f in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
                p = Path(root) / f
                rel = str(p.relative_to(self.path))
                if p.is_fifo():
                    out[rel] = "fifo"
                elif p.is_file():
                    out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
                else:
                    out[rel] = "other"
        return out

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()


class _Overrun(BaseException):
    """Raised by the watchdog inside a run that overstayed (not an Exception: nothing eats it)."""


def run_cli(args: list[str], cwd: Path, limit: float, via: str = "inprocess") -> Run:
    """Run ``equivcheck *args`` in ``cwd``; kill it after ``limit`` seconds of wall time."""
    args = [str(a) for a in args]
    if via == "subprocess":
        return _run_subprocess(args, cwd, limit)
    return _run_inprocess(args, cwd, limit)


def _run_inprocess(args: list[str], cwd: Path, limit: float) -> Run:
    from typer.testing import CliRunner

    from equivcheck.cli import app

    runner = CliRunner()
    old = os.getcwd()
    use_timer = threading.current_thread() is threading.main_thread()

    def alarm(signum, frame):
        raise _Overrun()

    previous = signal.signal(signal.SIGALRM, alarm) if use_timer else None
    t0 = time.monotonic()
    os.chdir(cwd)
    try:
        if use_timer:
            signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            res = runner.invoke(app, args)
        finally:
            if use_timer:
                signal.setitimer(signal.ITIMER_REAL, 0)
    except _Overrun:
        _kill_children()
        return Run(tuple(args), None, "", "", time.monotonic() - t0, "inprocess",
                   f"still running after {limit:g} s: killed")
    finally:
        os.chdir(old)
        if use_timer:
            signal.signal(signal.SIGALRM, previous)
    seconds = time.monotonic() - t0
    _kill_children()
    error = None
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        import traceback

        tb = "".join(traceback.format_exception(res.exception))
        error = f"exception escaped the CLI: {type(res.exception).__name__}: {res.exception}\n{tb}"
    return Run(tuple(args), res.exit_code, res.stdout, res.stderr, seconds, "inprocess", error)


def _kill_children() -> None:
    """Kill solver processes this process started and that are still alive (by their pid)."""
    for child in multiprocessing.active_children():
        try:
            child.kill()
            child.join(1)
        except Exception:  # pragma: no cover - best effort
            pass


def _limit_memory() -> None:  # pragma: no cover - runs in the child
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _run_subprocess(args: list[str], cwd: Path, limit: float) -> Run:
    env = dict(os.environ, COLUMNS="120", NO_COLOR="1", PYTHONFAULTHANDLER="")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", SUBPROCESS_CODE, *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=_limit_memory, env=env)
    try:
        out, err = proc.communicate(timeout=limit)
        code, error = proc.returncode, None
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        code, error = None, f"still running after {limit:g} s: killed"
    seconds = time.monotonic() - t0
    try:  # a solver child left behind in the group after the parent exited
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return Run(tuple(args), code, out.decode(errors="replace"), err.decode(errors="replace"),
               seconds, "subprocess", error)


# ---------------------------------------------------------------------------------------------


@dataclass
class Expect:
    """What a run may do: exit codes allowed, files it may create, whether stdout is JSON."""

    codes: frozenset[int] = frozenset({0, 1, 3, 4})
    new_files: frozenset[str] = frozenset()
    json: bool = False
    notes: list[str] = field(default_factory=list)


def check_run(run: Run, before: dict[str, str], after: dict[str, str], expect: Expect
              ) -> list[str]:
    """The promises every run keeps, as a list of problems (empty: all kept)."""
    problems = []
    if run.error:
        problems.append(run.error.splitlines()[0] if "killed" in run.error else run.error)
        if run.code is None:
            return problems
    if run.code not in expect.codes:
        lines = [ln.strip() for ln in run.stderr.splitlines() if ln.strip()]
        said = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else "")
        problems.append(f"exit code {run.code} not in {sorted(expect.codes)}; stderr: {said}")
    for stream, text in (("stderr", run.stderr), ("stdout", run.stdout)):
        if "Traceback (most recent call last)" in text:
            problems.append(f"traceback on {stream}: " + text.strip().splitlines()[-1])
    if run.code == 4:
        lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
        if len(lines) != 1:
            problems.append(f"exit 4 with {len(lines)} lines on stderr (want 1): "
                            + " | ".join(lines[:4]))
        if run.stdout.strip():
            problems.append("exit 4 with output on stdout: " + run.stdout.strip()[:120])
    if expect.json and run.code in (0, 1, 3):
        try:
            data = strict_json(run.stdout, long_ints=True)
            if not isinstance(data, dict):
                problems.append("--json output is not one JSON object")
        except ValueError as exc:
            problems.append(f"--json output is not strict JSON ({exc}): {run.stdout[:160]!r}")
    for name, digest in before.items():
        if name not in after:
            problems.append(f"input file {name} was deleted")
        elif after[name] != digest and name not in expect.new_files:
            problems.append(f"input file {name} was modified (overwritten)")
    for name in sorted(set(after) - set(before)):
        if name not in expect.new_files:
            problems.append(f"unexpected file written: {name}")
    return problems


def parse_json(run: Run):
    """The JSON object on stdout, or None."""
    try:
        data = strict_json(run.stdout, long_ints=True)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
