"""Long commands show progress on a terminal: each one is run under a pseudo-terminal (stdout
and stderr both a TTY, as in a user's shell) and the live line must appear; ``--quiet`` hides
it. The pytest plugin's checks report progress through pytest's terminal reporter."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

from equivcheck.io.onnx_export import export_network

from .test_testing import base, hard_pair

pytest_plugins = ["pytester"]

# what ProgressLine shows: "<stage>: 1,234 nodes done, 56 open, ... 3 s left"
PROGRESS = re.compile(r"\w[\w ]*: [\d,]+ (nodes|units|boxes|regions|splits|checks|\w+) done")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_in_terminal(args: list, cwd, limit: float = 120.0) -> tuple[int, str]:
    """Run ``equivcheck ARGS`` with stdout and stderr on a pseudo-terminal 160 columns wide;
    returns the exit code and everything it wrote (escape codes removed)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS", "CI")}
    env["TERM"] = "xterm"
    proc = subprocess.Popen([sys.executable, "-c", "from equivcheck.cli import main; main()",
                             *map(str, args)], stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, cwd=cwd, env=env, close_fds=True)
    os.close(slave)
    chunks, end = [], time.monotonic() + limit
    try:
        while time.monotonic() < end:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    code = proc.wait(timeout=30)
    text = b"".join(chunks).decode("utf-8", "replace")
    return code, ANSI.sub("", text).replace("\r", "\n")


@pytest.fixture(scope="module")
def slow_models(tmp_path_factory):
    """Pairs that keep each command busy for seconds: a hard epsilon pair (nobody decides it
    in a few seconds) and a wider network with many regions and units to analyse."""
    folder = tmp_path_factory.mktemp("slow")
    a, b = hard_pair()
    export_network(a, folder / "a.onnx")
    export_network(b, folder / "b.onnx")
    wide, _ = hard_pair(width=60, depth=4)
    export_network(wide, folder / "wide.onnx")
    return folder


COMMANDS = {
    "prove": ["prove", "a.onnx", "b.onnx", "--domain", "-1:1", "--mode", "epsilon",
              "--tolerance", "0.5", "--timeout", "5"],
    "compress": ["compress", "wide.onnx", "--domain", "-1:1", "-o", "small.onnx", "--timeout", "5"],
    "audit": ["audit", "a.onnx", "b.onnx", "--domain", "-1:1", "--timeout", "5"],
    "regions count": ["regions", "count", "wide.onnx", "--domain", "-1:1", "--timeout", "5"],
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_long_command_shows_progress_on_a_terminal(slow_models, name):
    code, text = run_in_terminal(COMMANDS[name], slow_models)
    assert code in (0, 1, 3), (name, code, text[-2000:])
    assert PROGRESS.search(text), (name, text[-2000:])
    assert "s left" in text, (name, text[-2000:])
    assert "Traceback" not in text


def test_quiet_shows_no_progress(slow_models):
    code, text = run_in_terminal([*COMMANDS["prove"], "--quiet"], slow_models)
    # the slow pair runs for seconds; the engine may prove it before the limit on a quiet machine
    assert code in (0, 3), text[-2000:]
    assert not PROGRESS.search(text), text[-2000:]
    assert ("UNKNOWN" if code == 3 else "PROVED") in text  # the summary is still there


SLOW_CHECK = """
from equivcheck.testing import assert_equivalent

def test_hard():
    assert_equivalent("a.onnx", "b.onnx", domain="-1:1", mode="epsilon", tolerance=0.5,
                      timeout=4, unknown="skip")

def test_quick():
    assert_equivalent("base.onnx", "base.onnx", domain="-1:1")
"""


@pytest.mark.parametrize("quiet", [False, True])
def test_a_long_pytest_check_reports_progress_unless_quiet(pytester, slow_models, quiet):
    for name in ("a.onnx", "b.onnx"):
        (pytester.path / name).write_bytes((slow_models / name).read_bytes())
    export_network(base(), pytester.path / "base.onnx")
    pytester.makepyfile(SLOW_CHECK)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", *(["-q"] if quiet else []))
    res.assert_outcomes(passed=1, skipped=1)
    lines = [ln for ln in res.stdout.lines if ln.startswith("equivcheck: [")]
    if quiet:
        assert lines == [], lines
    else:
        # a report of the check's stage, or the heartbeat's line before the first report
        assert lines and all(PROGRESS.search(ln) or "] working" in ln for ln in lines), \
            res.stdout.str()
