"""One deadline through every stage (issue 8): ``--timeout T`` ends within T + 1 s with UNKNOWN
on each slow case, the solver child dies with its parent, and the audit's number growth and
point domains no longer crash it.

The CLI cases run the real command in a subprocess (``python -c "...cli.main()"``) and measure
wall time from its start, imports included. Nets are generated here; the MNIST cases use the
third-party models and skip when ../shared is absent.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction

import numpy as np
import onnx
import pytest

from equivcheck import prove
from equivcheck.audit.auditor import audit
from equivcheck.bounds.stability import analyze_stability
from equivcheck.bounds.stability_exact import vertex_extremes, vertex_extremes_dyadic
from equivcheck.bounds.stability_state import AnalysisState
from equivcheck.compress.pipeline import compress
from equivcheck.core.deadline import MAX_TIMEOUT, Deadline, validate_timeout
from equivcheck.core.domain import Domain, box_domain
from equivcheck.core.network import Affine, Layer, Network
from equivcheck.core.result import Verdict
from equivcheck.errors import InputError
from equivcheck.solve.prover import NOT_EXAMINED
from equivcheck.solve.solver import solve, solve_built
from equivcheck.testing import assert_equivalent

from .helpers import external_path, mlp, strict_json

CLI = [sys.executable, "-c", "from equivcheck.cli import main; main()"]
SLACK = 1.0  # the promise: --timeout T ends within T + 1 s of wall time


def run_cli(*args, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - t0


def hard_pair(tmp_path, n_in: int = 10, seed: int = 3) -> tuple:
    """Two nets n_in-48-48-4 that differ by weight noise 2e-3 (max deviation ~0.03 on [-1, 1]):
    ``--mode epsilon --tolerance 0.1`` holds, but neither bounds nor the solver settle it in
    seconds."""
    rng = np.random.default_rng(seed)
    dims = [n_in, 48, 48, 4]
    ws = [rng.normal(0, 1 / np.sqrt(dims[i]), (dims[i + 1], dims[i])).astype(np.float32) for i in range(3)]
    bs = [rng.normal(0, 0.1, dims[i + 1]).astype(np.float32) for i in range(3)]
    wb = [w + rng.normal(0, 2e-3, w.shape).astype(np.float32) for w in ws]
    a, b = tmp_path / f"hard{n_in}_a.onnx", tmp_path / f"hard{n_in}_b.onnx"
    onnx.save(mlp(ws, bs), a)
    onnx.save(mlp(wb, bs), b)
    return a, b


def many_boxes_vnnlib(path, n_boxes: int, dim: int) -> None:
    """A VNN-LIB whose input region is a union of ``n_boxes`` distinct boxes (one disjunction;
    equal boxes would be read once)."""
    lines = [f"(declare-const X_{i} Real)" for i in range(dim)] + ["(declare-const Y_0 Real)"]
    alts = []
    for k in range(n_boxes):
        lo = -1 + k * 1e-4
        alts.append("(and " + " ".join(f"(>= X_{i} {lo}) (<= X_{i} 1)" for i in range(dim)) + ")")
    lines.append("(assert (or " + "\n".join(alts) + "))")
    path.write_text("\n".join(lines) + "\n")


def small_pair_one_output_unchanged(tmp_path) -> tuple:
    """A 3-4-2 pair where only output 0 changed (output 1 is the same in both)."""
    rng = np.random.default_rng(1)
    w1, b1 = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    w2, b2 = rng.normal(size=(2, 4)).astype(np.float32), rng.normal(size=2).astype(np.float32)
    w2b = w2.copy()
    w2b[0] *= np.float32(1.01)
    a, b = tmp_path / "orig.onnx", tmp_path / "pruned.onnx"
    onnx.save(mlp([w1, w2], [b1, b2]), a)
    onnx.save(mlp([w1, w2b], [b1, b2]), b)
    return a, b


# --------------------------------------------------------------------------------------------
# the Deadline object and timeout validation


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), -1, 0, 1e12, "abc", True, None])
def test_validate_timeout_refuses_bad_values(bad):
    with pytest.raises(InputError, match="timeout"):
        validate_timeout(bad)


def test_validate_timeout_accepts_sane_values():
    assert validate_timeout(5) == 5.0
    assert validate_timeout("2.5") == 2.5
    assert validate_timeout(MAX_TIMEOUT) == MAX_TIMEOUT
    assert validate_timeout(0, allow_zero=True) == 0.0


def test_sub_budget_never_exceeds_parent_and_raises_nothing():
    parent = Deadline.start(2.0)
    assert parent.sub(seconds=100).end <= parent.end
    assert parent.sub(10.0).end <= parent.end  # a "fraction" above 1 is still capped
    assert parent.sub(0.5).remaining() <= parent.remaining() / 2 + 1e-3
    assert parent.sub(float("nan")).expired()
    assert parent.sub(seconds=-3).expired()
    assert not parent.sub().expired() and parent.sub().end == parent.end
    gone = Deadline(time.monotonic() - 1.0, 1.0)
    assert gone.expired() and gone.remaining() == 0.0 and gone.sub(seconds=5).expired()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_for_process_counts_from_process_start():
    code = ("import time; time.sleep(0.6); from equivcheck.core.deadline import Deadline; "
            "print(Deadline.for_process(5).remaining())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert 0 < float(out.stdout) <= 5 - 0.6  # start-up and the sleep counted against the 5 s


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0, -2, 1e12])
def test_every_api_validates_its_timeout(bad, tmp_path):
    a, b = small_pair_one_output_unchanged(tmp_path)
    with pytest.raises(InputError, match="timeout"):
        prove(a, b, timeout=bad)
    with pytest.raises(InputError, match="timeout"):
        audit(a, b, timeout=bad)
    with pytest.raises(InputError, match="timeout"):
        compress(a, timeout=bad)
    with pytest.raises(InputError, match="timeout"):
        assert_equivalent(a, b, timeout=bad)
    if bad != 0:  # 0 is "only the cheap bound stages" for the analysis
        with pytest.raises(InputError, match="timeout"):
            analyze_stability(Network((Layer(Affine(np.eye(2), np.zeros(2)), False),)), timeout=bad)


# --------------------------------------------------------------------------------------------
# the solver: killed at the deadline, and with its parent


def test_query_building_in_the_child_ends_at_the_deadline():
    def slow_build():
        time.sleep(30)
        return {}, "(check-sat)", ()

    t0 = time.monotonic()
    got = solve_built(slow_build, 60.0, Deadline.start(1.0))
    assert time.monotonic() - t0 <= 1.0 + SLACK
    assert got.info is None and got.outcome.status == "timeout"


def test_the_largest_timeout_still_runs_the_solver():
    """Before: a timeout of 1e7 s overflowed the wait on the solver child (exit 5)."""
    got = solve("(declare-const x Real)(assert (> x 1))", ("x",), MAX_TIMEOUT)
    assert got.status == "sat" and got.model["x"] > 1


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _sigterm_survivors(args: list[str], count: int, settle: float = 0.0) -> tuple[list, list]:
    """Run ``equivcheck args``, wait for ``count`` children, let them work ``settle`` s, send
    SIGTERM to the CLI: the children seen and those still alive 2 s after it ended."""
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        children: list[int] = []
        stop = time.monotonic() + 30
        while len(children) < count and time.monotonic() < stop and proc.poll() is None:
            time.sleep(0.05)
            children = _children(proc.pid)
        if len(children) < count:
            return children, []
        time.sleep(settle)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        stop = time.monotonic() + 2.0
        while any(_alive(c) for c in children) and time.monotonic() < stop:
            time.sleep(0.05)
        return children, [c for c in children if _alive(c)]
    finally:
        if proc.poll() is None:
            proc.kill()
        for c in _children(proc.pid):
            os.kill(c, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_to_the_cli_kills_the_solver_child(tmp_path):
    """Before: the z3 child kept running ~55 s after SIGTERM to ``equivcheck``."""
    a, b = hard_pair(tmp_path, n_in=40)  # 40 inputs: the solver gets the time the engine leaves
    # (one worker: the first child is the solver's, not the engine's)
    children, alive = _sigterm_survivors(
        ["prove", str(a), str(b), "--domain=-1:1", "--mode", "epsilon", "--tolerance", "0.1",
         "--timeout", "20", "--workers", "1"], 1, settle=0.3)
    assert children, "the solver child never started"
    assert not alive, "the solver child outlived its parent"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_to_the_cli_kills_the_engine_workers(tmp_path):
    """Before: the branch and bound's worker processes ran on (to their deadline) after SIGTERM
    to ``equivcheck`` (they die with their parent now: ``core.children``)."""
    a, b = hard_pair(tmp_path, n_in=5)
    children, alive = _sigterm_survivors(
        ["prove", str(a), str(b), "--domain=-1:1", "--mode", "epsilon", "--tolerance", "0.1",
         "--timeout", "30", "--workers", "2"], 2)
    assert len(children) == 2, "the engine's workers never started"
    assert not alive, "a worker outlived its parent"


# --------------------------------------------------------------------------------------------
# --timeout T ends within T + 1 s with UNKNOWN


@pytest.mark.slow
@pytest.mark.parametrize("n_boxes", [100, 2000])
def test_union_of_many_boxes_stops_at_the_deadline(tmp_path, n_boxes):
    """Before: 100 boxes took 21 s with --timeout 5 (every box examined after the deadline)."""
    a, b = hard_pair(tmp_path)
    vnn = tmp_path / f"boxes{n_boxes}.vnnlib"
    many_boxes_vnnlib(vnn, n_boxes, 10)
    proc, wall = run_cli("prove", a, b, "--domain", vnn, "--mode", "epsilon", "--tolerance", "0.1",
                         "--timeout", 5, "--json")
    assert proc.returncode == 3, proc.stderr
    assert wall <= 5 + SLACK
    res = strict_json(proc.stdout)
    assert res["verdict"] == "unknown"
    assert len(res["boxes"]) == n_boxes
    assert res["boxes"][-1]["reason"] == NOT_EXAMINED


def test_boxes_after_the_deadline_get_no_work(tmp_path):
    a, b = hard_pair(tmp_path)
    many = Domain(box_domain([-1] * 10, [1] * 10).boxes * 50, "50 copies")
    r = prove(a, b, domain=many, mode="epsilon", tolerance="0.1", timeout=1.5)
    assert r.verdict is Verdict.UNKNOWN
    skipped = [x for x in r.boxes if x.reason == NOT_EXAMINED]
    assert len(skipped) >= 45 and all(x.seconds == 0 for x in skipped)
    assert "not examined" in r.reason


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lp", "exact"])
def test_mnist_argmax_bound_methods_honour_the_timeout(method):
    """Before: --bounds lp was still running at 597 s, --bounds exact took 7.6-12 s."""
    m = external_path("mnistfc")
    proc, wall = run_cli("prove", m / "mnist-net_256x4.onnx", m / "mnist-net_256x6.onnx",
                         "--mode", "argmax", "--bounds", method, "--timeout", 5,
                         "--domain", m / "prop_0_0.03.vnnlib", "--json", timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert wall <= 5 + SLACK
    assert strict_json(proc.stdout)["verdict"] == "unknown"


@pytest.mark.slow
def test_mnist_compress_honours_the_timeout(tmp_path):
    """Before: compress --timeout 5 on mnist 256x6 took 9.1 s (11.4 s under load)."""
    m = external_path("mnistfc")
    out = tmp_path / "small.onnx"
    proc, wall = run_cli("compress", m / "mnist-net_256x6.onnx", "-o", out, "--timeout", 5,
                         "--domain", m / "prop_0_0.03.vnnlib", "--json", timeout=60)
    assert wall <= 5 + SLACK
    assert proc.returncode in (0, 3), proc.stderr  # proved if there was time, else unknown
    assert strict_json(proc.stdout)["proof"]["verdict"] in ("proved", "unknown")


def test_audit_honours_the_timeout(tmp_path):
    """A guard of the promise (the old audit happened to keep it on this pair)."""
    a, b = hard_pair(tmp_path, n_in=40)
    t0 = time.monotonic()
    r = audit(a, b, domain="-1:1", timeout=3, samples=200)
    assert time.monotonic() - t0 <= 3 + SLACK
    assert any(c.verdict is Verdict.UNKNOWN for c in r.checks)


# --------------------------------------------------------------------------------------------
# the audit: stops when its bounds meet, no huge numbers, point domains


def test_audit_stops_when_the_bounds_meet(tmp_path):
    """Before: the bisection drove output 1's bound toward 0 until the timeout, then died on
    Python's 4,300-digit limit (exit 5)."""
    a, b = small_pair_one_output_unchanged(tmp_path)
    r = audit(a, b, timeout=60, samples=200)
    assert r.converged
    assert r.seconds < 30  # it stopped because the bounds met, not because the time ran out
    assert r.per_output[1].upper == 0 == r.per_output[1].lower  # proved strictly equal
    assert r.deviation.upper - r.deviation.lower <= r.gap * r.deviation.upper
    json.dumps(r.to_dict(), allow_nan=False)
    for d in [r.deviation, *r.per_output]:  # no bound carries a huge denominator
        assert d.upper.denominator.bit_length() <= 1100 and d.lower.denominator.bit_length() <= 4000


@pytest.mark.slow
def test_audit_json_is_strict_with_an_unchanged_output(tmp_path):
    a, b = small_pair_one_output_unchanged(tmp_path)
    proc, _ = run_cli("audit", a, b, "--json", "--timeout", 20)
    assert proc.returncode == 0, proc.stderr
    res = strict_json(proc.stdout)
    assert res["converged"] is True


def test_audit_on_a_point_holding_no_float(tmp_path):
    """Before: ``audit --domain 0.3:0.3`` died with an IndexError (exit 5)."""
    a, b = small_pair_one_output_unchanged(tmp_path)
    r = audit(a, b, domain="0.3:0.3", timeout=20, samples=50)
    d = r.deviation
    assert d.witness_exact == (Fraction(3, 10),) * 3
    assert d.lower > 0 and d.lower <= d.upper
    assert r.check("strict").verdict is Verdict.REFUTED  # at the exact point 3/10, exactly
    assert any("onnxruntime cannot be fed" in n for n in r.notes)
    assert r.samples.inside_domain == 0  # the float64 stand-in lies outside the domain
    json.dumps(r.to_dict(), allow_nan=False)
    proc, _ = run_cli("audit", a, b, "--domain", "0.3:0.3", "--timeout", 10, "--json")
    assert proc.returncode == 0, proc.stderr
    assert strict_json(proc.stdout)["deviation"]["witness_exact"] == ["3/10"] * 3


# --------------------------------------------------------------------------------------------
# internals the deadline work changed


def test_first_layer_vertex_extremes_integer_path_matches_fractions():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 5)) * 2.0 ** rng.integers(-30, 10, size=(6, 5))
    w[0, 1] = 0.0
    box = box_domain([Fraction(-3, 10), 0, Fraction(1, 3), -2, Fraction(-7, 1000)],
                     [Fraction(1, 10), Fraction(1, 7), 1, Fraction(-3, 2), 0]).boxes[0]
    aff = Affine(w, np.zeros(6))
    rows = [0, 2, 5]
    assert vertex_extremes_dyadic(aff.dyadic_weight, rows, box) == vertex_extremes(
        aff.rational_weight(), rows, box)


def test_stability_state_accepts_a_bare_monotonic_deadline():
    net = Network((Layer(Affine(np.eye(2), np.zeros(2)), True), Layer(Affine(np.ones((1, 2)), np.zeros(1)), False)))
    st = AnalysisState(net, box_domain([0, 0], [1, 1]).boxes[0], time.monotonic() + 5)
    assert 0 < st.time_left() <= 5 and not math.isnan(st.deadline.budget)


def test_in_process_commands_count_from_their_own_start(tmp_path):
    # a command run in-process (a test runner, a notebook) gets its whole --timeout even when
    # the process is older; only the console script counts from the process start
    from equivcheck.core.deadline import Deadline

    assert Deadline.for_command(5).remaining() > 4.9
