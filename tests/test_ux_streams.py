"""Where output goes: the verdict and the human summary on stdout, only diagnostics and progress
on stderr, ``--json`` alone on stdout, and no hard wrapping when stdout is not a terminal."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from .helpers import MODELS, cli, strict_json
from .test_cli import pair  # noqa: F401  (the fixture)

TINY = MODELS / "tiny_original.onnx"


def _commands(a, same, other, tmp_path):
    """(name, arguments, first stdout line's start, words the summary holds) per command."""
    return [
        ("prove", ["prove", a, other, "--domain", "-1:1"], "REFUTED",
         ["counterexample", "domain: [-1, 1]^2"]),
        ("compress", ["compress", TINY, "--domain", "0:1", "-o", tmp_path / "c.onnx"],
         "equivcheck compress", ["hidden units removed", "proof: PROVED", "wrote"]),
        ("audit", ["audit", a, same, "--domain", "-1:1", "--timeout", "20"], "audit",
         ["strict", "PROVED", "time:"]),
        ("regions bound", ["regions", "bound", TINY, "--domain", "0:1"], "Linear-region bounds",
         ["Theorem 1", "exact values:"]),
        ("regions count", ["regions", "count", TINY, "--domain", "0:1"], str(TINY),
         ["linear regions (exact)"]),
    ]


@pytest.mark.parametrize("which", range(5))
def test_the_summary_is_on_stdout_and_nothing_else_is(pair, tmp_path, which):  # noqa: F811
    a, same, other = pair
    name, args, first, words = _commands(a, same, other, tmp_path)[which]
    quiet = [] if name == "regions bound" else ["--quiet"]
    r = cli(*args, *quiet)
    assert r.exit_code in (0, 1), (name, r.output)
    assert r.stderr == "", (name, r.stderr)  # no progress (--quiet), no error
    lines = r.stdout.splitlines()
    assert lines and lines[0].strip().startswith(first), (name, lines[:3])
    for word in words:
        assert word in r.stdout, (name, word, r.stdout)
    assert "\x1b[" not in r.stdout  # no colour codes off a terminal


@pytest.mark.parametrize("which", range(5))
def test_json_is_exactly_one_object_on_stdout(pair, tmp_path, which):  # noqa: F811
    a, same, other = pair
    name, args, _, _ = _commands(a, same, other, tmp_path)[which]
    r = cli(*args, "--json")
    assert r.exit_code in (0, 1), (name, r.output)
    data = strict_json(r.stdout)  # the whole of stdout is one JSON document
    assert isinstance(data, dict) and r.stdout.count("\n") == 1, name
    assert not any(line.startswith("{") for line in r.stderr.splitlines())


def test_audit_report_note_goes_with_the_summary(pair, tmp_path):  # noqa: F811
    a, same, _ = pair
    out = tmp_path / "r.md"
    r = cli("audit", a, same, "--domain", "-1:1", "-o", out, "--quiet", "--timeout", "20")
    assert r.exit_code == 0, r.output
    assert out.exists() and f"report written to {out}" in r.stdout and r.stderr == ""


def test_long_lines_are_not_wrapped_off_a_terminal(tmp_path):
    deep = tmp_path / ("d" * 150)
    deep.mkdir()
    model = deep / "model.onnx"
    model.write_bytes(TINY.read_bytes())
    out = deep / "small.onnx"
    r = cli("compress", model, "--domain", "0:1", "-o", out, "--quiet")
    assert r.exit_code == 0, r.output
    assert any(line.endswith(f"wrote {out}") for line in r.stdout.splitlines()), r.stdout
    r = cli("regions", "count", model, "--domain", "0:1", "--quiet")
    assert r.stdout.splitlines()[0].startswith(f"{model} on "), r.stdout


def test_a_vnnlib_output_constraint_is_a_note_on_stderr(tmp_path):
    a = tmp_path / "a.onnx"
    from .helpers import mlp

    onnx.save(mlp([np.array([[1.0]]), np.array([[2.0]])], [np.zeros(1), np.zeros(1)]), a)
    prop = tmp_path / "p.vnnlib"
    prop.write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
                    "(assert (or (and (>= X_0 -1) (<= X_0 1) (>= Y_0 100))))\n")
    r = cli("prove", a, a, "--domain", prop, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["verdict"] == "proved"
    assert r.stderr.startswith("equivcheck: note: ") and "(>= Y_0 100)" in r.stderr
