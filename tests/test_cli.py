"""The `equivcheck prove` command line: exit codes, JSON, counterexample files, bad input."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper
from typer.testing import CliRunner

from equivcheck import __version__
from equivcheck.cli import app

from .helpers import make_model, mlp

runner = CliRunner()

W1 = np.array([[1.0, -1.0], [0.5, 0.25], [-1.0, 2.0]])
B1 = np.array([0.0, -0.5, 0.25])
W2 = np.array([[1.0, 0.5, -0.25]])
B2 = np.array([0.125])


@pytest.fixture
def pair(tmp_path):
    """(a, same function, perturbed) as ONNX files."""
    a = tmp_path / "a.onnx"
    same = tmp_path / "same.onnx"
    other = tmp_path / "other.onnx"
    onnx.save(mlp([W1, W2], [B1, B2]), a)
    # the same function with the hidden units permuted
    perm = [2, 0, 1]
    onnx.save(mlp([W1[perm], W2[:, perm]], [B1[perm], B2]), same)
    onnx.save(mlp([W1, W2 * 1.5], [B1, B2]), other)
    return a, same, other


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def test_version():
    r = run("--version")
    assert r.exit_code == 0
    assert __version__ in r.stdout


def test_proved_exit_0_and_json(pair):
    a, same, _ = pair
    r = run("prove", a, same, "--domain", "-1:1", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["verdict"] == "proved"
    assert data["spec"] == {"mode": "strict"}
    assert data["counterexample"] is None
    assert data["domain"]["boxes"][0]["lower"] == [-1.0, -1.0]


def test_refuted_exit_1_with_counterexample_files(pair, tmp_path):
    a, _, other = pair
    npy = tmp_path / "cex.npy"
    r = run("prove", a, other, "--domain", "-1:1", "--json", "--counterexample", npy)
    assert r.exit_code == 1, r.output
    data = json.loads(r.stdout)
    assert data["verdict"] == "refuted"
    cex = data["counterexample"]
    assert cex["reproduces"] is True
    assert cex["onnxruntime"]["violated"] is True
    x = np.load(npy)
    assert x.dtype == np.float32 and list(x.astype(float)) == cex["input"]
    js = tmp_path / "cex.json"
    r2 = run("prove", a, other, "--domain", "-1:1", "--counterexample", js)
    assert r2.exit_code == 1
    assert json.loads(js.read_text())["input"]
    assert "REFUTED" in r2.stdout and "counterexample" in r2.stdout


def test_default_domain_is_stated(pair):
    a, same, _ = pair
    r = run("prove", a, same)
    assert r.exit_code == 0
    assert "default" in r.stdout and "[0, 1]" in r.stdout


def test_unknown_exit_3(tmp_path):
    rng = np.random.default_rng(0)
    ws = [rng.normal(0, 0.4, (40, 6)), rng.normal(0, 0.2, (40, 40)), rng.normal(0, 0.2, (40, 40)), rng.normal(0, 0.3, (3, 40))]
    bs = [rng.normal(0, 0.1, 40), rng.normal(0, 0.1, 40), rng.normal(0, 0.1, 40), rng.normal(0, 0.1, 3)]
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(mlp(ws, bs), a)
    # first-layer weights nudged by 2^-12 and one more hidden unit whose outgoing weights are 0:
    # within the tolerance, but no unit is shared and the shapes differ (no difference bounds),
    # so only the solver could prove it, and not within a second
    ws2 = [w.copy() for w in ws]
    bs2 = [x.copy() for x in bs]
    ws2[0] = np.vstack([ws2[0] + 2.0**-12, np.full((1, 6), 0.5)])
    bs2[0] = np.append(bs2[0], 0.25)
    ws2[1] = np.hstack([ws2[1], np.zeros((40, 1))])
    onnx.save(mlp(ws2, bs2), b)
    r = run("prove", a, b, "--domain", "-1:1", "--mode", "epsilon", "--tolerance", "0.5", "--timeout", "1", "--json")
    assert r.exit_code == 3, r.output
    data = json.loads(r.stdout)
    assert data["verdict"] == "unknown"
    assert "timeout" in data["reason"]


# ---- bad input: one line, exit code 4, never a traceback or a verdict ------------------------


def _one_line_error(r, *needles, code=4):
    assert r.exit_code == code, (r.exit_code, r.output)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("equivcheck: error:")
    assert "Traceback" not in r.output
    assert r.stdout == ""
    for n in needles:
        assert n in lines[0], lines[0]


def test_missing_file(pair, tmp_path):
    a, _, _ = pair
    _one_line_error(run("prove", a, tmp_path / "nope.onnx", "--json"), "nope.onnx", "no such file")


def test_corrupt_file(pair, tmp_path):
    a, _, _ = pair
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x0a\x05garbage\x12\xff\xff\xff")
    _one_line_error(run("prove", a, bad), "corrupt.onnx")


def test_unsupported_operator(pair, tmp_path):
    a, _, _ = pair
    nodes = [helper.make_node("Gemm", ["x", "W", "B"], ["g"], transB=1, name="fc"),
             helper.make_node("Softmax", ["g"], ["y"], name="probs")]
    p = tmp_path / "softmax.onnx"
    onnx.save(make_model(nodes, {"W": np.ones((1, 2)), "B": B2}, [1, 2], [1, 1]), p)
    _one_line_error(run("prove", a, p), "probs", "Softmax")
    p2 = tmp_path / "conv.onnx"
    onnx.save(make_model([helper.make_node("Gemm", ["x", "W", "B"], ["g"], transB=1),
                          helper.make_node("LpNormalization", ["g"], ["y"], name="norm1")],
                         {"W": np.ones((1, 2)), "B": B2}, [1, 2], [1, 1]), p2)
    _one_line_error(run("prove", a, p2), "norm1", "LpNormalization", "not supported")


def test_non_relu_activation(pair, tmp_path):
    a, _, _ = pair
    p = tmp_path / "tanh.onnx"
    onnx.save(make_model([helper.make_node("Gemm", ["x", "W", "B"], ["g"], transB=1),
                          helper.make_node("Tanh", ["g"], ["y"], name="act0")],
                         {"W": np.ones((1, 2)), "B": B2}, [1, 2], [1, 1]), p)
    _one_line_error(run("prove", a, p), "act0", "Tanh")


def test_nan_weights(pair, tmp_path):
    a, _, _ = pair
    w = W2.copy()
    w[0, 1] = np.nan
    p = tmp_path / "nan.onnx"
    onnx.save(mlp([W1, w], [B1, B2]), p)
    _one_line_error(run("prove", a, p), "nan.onnx", "W1", "nan")


def test_shape_mismatch(pair, tmp_path):
    a, _, _ = pair
    p = tmp_path / "three_inputs.onnx"
    onnx.save(mlp([np.ones((3, 3)), W2], [B1, B2]), p)
    _one_line_error(run("prove", a, p), "a.onnx takes 2 inputs", "three_inputs.onnx takes 3")


@pytest.mark.parametrize(
    "domain, needle",
    [("1:0", "inverted"), ("nan:1", "not a finite number"), ("0:inf", "not a finite number"),
     ("zero:one", "not a number"), ("missing.vnnlib", "no such"), ("missing.json", "no such")],
)
def test_bad_domain(pair, domain, needle):
    a, same, _ = pair
    _one_line_error(run("prove", a, same, "--domain", domain), needle)


def test_empty_vnnlib_box(pair, tmp_path):
    a, same, _ = pair
    p = tmp_path / "empty.vnnlib"
    p.write_text("(declare-const X_0 Real)\n(declare-const X_1 Real)\n"
                 "(assert (>= X_0 0.5))\n(assert (<= X_0 0.25))\n(assert (>= X_1 0))\n(assert (<= X_1 1))\n")
    _one_line_error(run("prove", a, same, "--domain", p), "X_0", "empty")


def test_json_domain_dimension_mismatch(pair, tmp_path):
    a, same, _ = pair
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"lower": [0, 0, 0], "upper": [1, 1, 1]}))
    _one_line_error(run("prove", a, same, "--domain", p), "3 inputs", "take 2")


def test_json_domain_ok(pair, tmp_path):
    a, same, _ = pair
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"lower": [-0.5, 0.1], "upper": [0.5, 0.3]}))
    r = run("prove", a, same, "--domain", p, "--json")
    assert r.exit_code == 0
    assert json.loads(r.stdout)["domain"]["boxes"][0]["upper"] == [0.5, 0.3]


def test_usage_error_is_exit_2(pair):
    a, _, _ = pair
    r = run("prove", a)
    assert r.exit_code == 2


def test_bad_mode_is_usage_error(pair):
    a, same, _ = pair
    assert run("prove", a, same, "--mode", "fuzzy").exit_code == 2


def test_tolerance_without_epsilon_mode(pair):
    a, same, _ = pair
    _one_line_error(run("prove", a, same, "--tolerance", "0.1"), "--tolerance", code=2)


def test_bounds_option(pair):
    a, same, _ = pair
    for method in ("interval", "symbolic", "lp", "exact"):
        r = run("prove", a, same, "--domain", "-1:1", "--bounds", method, "--json")
        assert r.exit_code == 0, (method, r.output)
        assert json.loads(r.stdout)["options"]["bound_method"] == method  # the options used
    _one_line_error(run("prove", a, same, "--bounds", "magic"), "--bounds", "interval", code=2)


def test_stability_table_names_the_bound_method(pair):
    a, _, other = pair
    for method, title in (("interval", "from interval bounds"), ("lp", "from LP-tightened bounds"),
                          ("exact", "from the exact stability analysis")):
        r = run("prove", a, other, "--domain", "-1:1", "--bounds", method)
        assert f"ReLU stability {title}" in r.stdout, (method, r.stdout)
        if method != "interval":
            assert "interval bounds" not in r.stdout


def test_compressed_example_reproves_with_exact_bounds():
    from .helpers import MODELS

    src, small = MODELS / "mnist_2x25_l1.onnx", MODELS / "mnist_2x25_l1.compressed.onnx"
    r = run("prove", src, small, "--domain", "0:1", "--bounds", "exact", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["verdict"] == "proved"


# ---- the progress line ---------------------------------------------------------------------------


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def slow_stage(line, clock, seconds: float, step: float = 0.5) -> None:
    """A stage that reports every ``step`` seconds for ``seconds`` seconds of the fake clock."""
    from equivcheck.core.progress import Progress

    while clock.now - 100.0 <= seconds:
        k = round((clock.now - 100.0) / step)
        line(Progress("search", done=10 * k, open=3, bound=0.25 / (k + 1), seconds_left=60 - k))
        clock.now += step


def test_progress_plain_line_per_interval():
    import io

    from equivcheck.cli.progress import PLAIN_INTERVAL, QUIET_SECONDS, ProgressLine

    clock, out = FakeClock(), io.StringIO()
    with ProgressLine(tty=False, stream=out, clock=clock) as line:
        slow_stage(line, clock, 0.9)
        assert out.getvalue() == ""  # nothing in the first second
        slow_stage(line, clock, 16.0)
    lines = out.getvalue().splitlines()
    # shown at 1 s, then once per interval: 1, 6, 11, 16
    assert len(lines) == 1 + int((16.0 - QUIET_SECONDS) // PLAIN_INTERVAL), lines
    assert lines[0] == "equivcheck: [1 s] search: 20 nodes done, 3 open, best bound 0.0833333, 58 s left"
    assert all(ln.startswith("equivcheck: [") for ln in lines)


def test_progress_quiet_and_closed_show_nothing():
    import io

    from equivcheck.cli.progress import ProgressLine

    for quiet, tty in ((True, False), (True, True)):
        clock, out = FakeClock(), io.StringIO()
        with ProgressLine(quiet=quiet, tty=tty, stream=out, clock=clock) as line:
            slow_stage(line, clock, 12.0)
        assert out.getvalue() == ""
    clock, out = FakeClock(), io.StringIO()
    line = ProgressLine(tty=False, stream=out, clock=clock)
    line.close()
    slow_stage(line, clock, 12.0)
    assert out.getvalue() == ""


def test_progress_terminal_line_is_drawn_then_cleared():
    import io

    from equivcheck.cli.progress import ProgressLine

    clock, out = FakeClock(), io.StringIO()
    line = ProgressLine(tty=True, stream=out, clock=clock)
    slow_stage(line, clock, 0.9)
    assert out.getvalue() == ""
    slow_stage(line, clock, 3.0)
    drawn = out.getvalue()
    assert "search: " in drawn and "nodes done" in drawn and "s left" in drawn
    assert "\n" not in drawn.rstrip("\n")  # redrawn in place, not one line per event
    clock.now = 103.0  # at the last event
    assert line.text().endswith(", 54 s left  [3 s]"), line.text()
    clock.now += 10.0  # no event for 10 s (a long solver call): the clocks still move
    assert line.text().endswith(", 44 s left  [13 s]"), line.text()
    line.close()
    assert "\x1b[" in out.getvalue()[len(drawn):]  # the line is erased at the end


@pytest.mark.parametrize("quiet", [False, True])
def test_progress_keeps_json_alone_on_stdout(pair, monkeypatch, quiet):
    import equivcheck.cli.progress as progress_mod
    import equivcheck.solve.prover as prover
    from equivcheck.core.progress import Progress

    real_prove = prover.prove

    def slow_prove(*args, progress=None, **kwargs):
        for k in range(3):
            progress(Progress("search", done=k, open=1, seconds_left=5.0))
        return real_prove(*args, progress=progress, **kwargs)

    monkeypatch.setattr(prover, "prove", slow_prove)
    monkeypatch.setattr(progress_mod, "QUIET_SECONDS", 0.0)
    monkeypatch.setattr(progress_mod, "PLAIN_INTERVAL", 0.0)
    a, same, _ = pair
    args = ["prove", a, same, "--domain", "-1:1", "--json"] + (["--quiet"] if quiet else [])
    r = run(*args)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["verdict"] == "proved"
    assert r.stdout.count("\n") == 1
    shown = [ln for ln in r.stderr.splitlines() if ln.startswith("equivcheck: [")]
    if quiet:
        assert shown == [], r.stderr
    else:  # the three reports, and the heartbeat's lines while the check ran on
        assert len([ln for ln in shown if "search: " in ln]) >= 3, r.stderr
    assert len(shown) == len(r.stderr.splitlines())  # nothing else on stderr


def test_progress_heartbeat_shows_a_silent_stage():
    """A stage that reports nothing for a while (a solver call) still shows a line: ``working``
    before the first report, then the latest report with its seconds left counting down."""
    import io

    from equivcheck.cli.progress import PLAIN_INTERVAL, ProgressLine
    from equivcheck.core.progress import Progress

    def wait_for(predicate, seconds=10.0):
        import time

        end = time.monotonic() + seconds
        while not predicate() and time.monotonic() < end:
            time.sleep(0.01)
        return predicate()

    clock, out = FakeClock(), io.StringIO()
    with ProgressLine(tty=False, stream=out, clock=clock, heartbeat=0.01) as line:
        clock.now += 0.5
        assert not wait_for(lambda: out.getvalue(), 0.3)  # quiet in the first second
        clock.now += 1.5
        assert wait_for(lambda: "working" in out.getvalue()), out.getvalue()
        assert out.getvalue().startswith("equivcheck: [2 s] working")
        clock.now += PLAIN_INTERVAL
        line(Progress("solver", done=1, open=2, unit="boxes", seconds_left=40.0))
        clock.now += PLAIN_INTERVAL + 3
        assert wait_for(lambda: "32 s left" in out.getvalue()), out.getvalue()
    lines = out.getvalue().splitlines()
    assert lines[-1] == "equivcheck: [15 s] solver: 1 boxes done, 2 open, 32 s left", lines
    closed = out.getvalue()
    clock.now += 60
    assert not wait_for(lambda: out.getvalue() != closed, 0.3)  # closed: the thread stopped



def test_progress_a_report_from_the_first_second_is_what_the_heartbeat_shows():
    """A search that reports in its first (quiet) second and then not again for a while shows
    that report at one second, not ``working (no progress report yet)``."""
    import io
    import time

    from equivcheck.cli.progress import ProgressLine
    from equivcheck.core.progress import Progress

    clock, out = FakeClock(), io.StringIO()
    with ProgressLine(tty=False, stream=out, clock=clock, heartbeat=0.01) as line:
        clock.now += 0.4
        line(Progress("search", done=123, open=92, bound=20.9, seconds_left=59.0))
        clock.now += 0.8
        end = time.monotonic() + 10.0
        while not out.getvalue() and time.monotonic() < end:
            time.sleep(0.01)
    first = out.getvalue().splitlines()[0]
    assert first == "equivcheck: [1 s] search: 123 nodes done, 92 open, best bound 20.9, 58 s left", first

# ---- plain output off a terminal -----------------------------------------------------------------


def test_plain_output_says_what_the_rich_output_says(pair, tmp_path):
    """Off a terminal, ``prove`` prints plain text (no rich, no wrapping); it holds the same
    words as the rich rendering, and long lines stay whole."""
    import io

    from rich.console import Console

    from equivcheck.report import render, render_text
    from equivcheck.solve.prover import prove

    a, _, other = pair
    deep = tmp_path / ("x" * 90)
    deep.mkdir()
    b = deep / "other.onnx"
    b.write_bytes(other.read_bytes())
    r = run("prove", a, b, "--domain", "-1:1")
    assert r.exit_code == 1, r.output
    assert f"  b: {b}\n" in r.stdout  # one line, however long
    assert "REFUTED" in r.stdout and "\ncounterexample\n" in r.stdout
    assert not set("┏┃│└") & set(r.stdout)
    result = prove(a, b, domain="-1:1")
    buf = io.StringIO()
    render(result, Console(file=buf, width=400, highlight=False))
    boxes = str.maketrans("", "", "┏┳┓┃┡╇┩│└┴┘━─")
    assert buf.getvalue().translate(boxes).split() == render_text(result).split()
