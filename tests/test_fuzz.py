"""Bounded fuzz run for CI (issue 8): ONNX graphs, VNN-LIB text, JSON domains and CLI arguments.

Each target draws cases with hypothesis (derandomized: the same cases on every run) and checks
every promise on each: exit code in {0, 1, 3, 4} (2 only for click usage errors), exactly one
stderr line and no verdict for bad input, no traceback, strict JSON, no file written but the
ones asked for and no input changed, the time limit, and every verdict against exact ground
truth (a REFUTED counterexample inside the domain, strict bounds honoured, and violating the
relation exactly; a PROVED pair with no exact violation among 1,000 domain points). See
``tests/fuzz/`` for the harness and ``benchmarks/fuzz_long.py`` for long local runs.

Shrinking is off here (a failure prints its full, reproducible example at once); set
``EQUIVCHECK_FUZZ_SHRINK=1`` to minimise failures. The whole file takes about 1-2 minutes.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings

from .fuzz.domains import DomainSpec, Interval
from .fuzz.nets import NetSpec, Rendering, net_from_arrays
from .fuzz.oracle import SpecChoice
from .fuzz.strategies import Mutation, Pair
from .fuzz.targets import TARGETS, CliCase, JsonCase, OnnxCase, VnnlibCase, check_onnx

# explicit cases: the reproductions of issue 8, run first on every CI run ------------------------
R = Rendering()
IDENTITY_1 = ([[1.0]], [0.0])


def _pair(a: NetSpec, b: NetSpec, relation: str = "hand-made") -> Pair:
    return Pair(a, b, relation, R, R)


# agree exactly at x = 7000673/10^7 (not a float), differ everywhere else (issue item 1)
KINK = _pair(net_from_arrays([[[1.0]], [[1e7]]], [[0.0], [-7000673.0]]),
             net_from_arrays([[[1.0]], [[0.0]]], [[0.0], [0.0]]))
# argmax: class 1 on [0, 0.5), a tie resolved to class 0 at x = 0.5 (issue item 2)
TIE = _pair(net_from_arrays([[[1.0]], [[1.0], [0.0]]], [[0.0], [0.0, 0.5]]),
            net_from_arrays([[[1.0]], [[0.0], [0.0]]], [[0.0], [0.0, 1.0]]))
# two different networks: every check of them is REFUTED
DIFFER = _pair(net_from_arrays([[[1.0]], [[1.0]]], [[0.0], [0.0]]),
               net_from_arrays([[[1.0]], [[2.0]]], [[0.0], [0.5]]))
# the same network twice: PROVED, so nothing would be written
SAME = _pair(DIFFER.a, DIFFER.a)
POINT = DomainSpec(((Interval("0.7000673", "0.7000673"),),))
HALF_OPEN = DomainSpec(((Interval("0", "0.5", hi_strict=True),),))
UNIT = DomainSpec(((Interval("0", "1"),),))
STRICT = SpecChoice("strict")


DEFAULT_EXTRA = {"prove": ("interval",), "audit": ("0.1", "0.05", ""), "compress": (),
                 "regions-bound": ("model",), "regions-count": ("100",)}


def _cli(command, output="", domain="none", extra=None, pair=DIFFER, model="ok",
         via="inprocess"):
    return CliCase(command, pair, model, domain, UNIT, STRICT, "3", output, ("--json",),
                   DEFAULT_EXTRA[command] if extra is None else extra, via)

PHASES = (Phase.explicit, Phase.reuse, Phase.generate) + (
    (Phase.shrink,) if os.environ.get("EQUIVCHECK_FUZZ_SHRINK") else ())


def _settings(examples: int):
    return settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                    phases=PHASES, suppress_health_check=list(HealthCheck),
                    report_multiple_bugs=True)


@pytest.mark.slow
@_settings(250)
@given(case=TARGETS["onnx"][0])
@example(OnnxCase(KINK, Mutation("gemm_alpha_nan", "a", 0, 0), UNIT, STRICT, "interval", 2.0))
@example(OnnxCase(KINK, Mutation("bn_negative_var", "b", 0, 0), UNIT, STRICT, "interval", 2.0))
@example(OnnxCase(KINK, Mutation("bn_training_mode", "a", 0, 0), UNIT, STRICT, "interval", 2.0))
@example(OnnxCase(KINK, Mutation("dropout_training", "a", 0, 0), UNIT, STRICT, "interval", 2.0))
@example(OnnxCase(KINK, Mutation("transpose_bad_perm", "a", 0, 1), UNIT, STRICT, "interval", 2.0))
@example(OnnxCase(KINK, Mutation("gemm_c_wrong_shape", "a", 0, 0), UNIT, STRICT, "interval", 2.0))
@example(OnnxCase(KINK, None, POINT, STRICT, "interval", 2.0))
def test_fuzz_onnx_graphs(case):
    """Random model pairs (8 relations, 5 layer styles, 10 pass-through constructs, float32 and
    float64) and broken models (24 mutations) through ``prove``."""
    check_onnx(case)


@pytest.mark.slow
@_settings(150)
@given(case=TARGETS["vnnlib"][0])
@example(VnnlibCase(TIE, HALF_OPEN, None, 0, True, 0, SpecChoice("argmax"), "interval"))
@example(VnnlibCase(KINK, POINT, None, 0, True, 0, STRICT, "interval"))
def test_fuzz_vnnlib_domains(case):
    """VNN-LIB boxes and unions with strict bounds, equalities, flipped comparisons, output
    constraints, non-float decimals and 16 kinds of mangled file."""
    TARGETS["vnnlib"][1](case)


@pytest.mark.slow
@_settings(100)
@given(case=TARGETS["json"][0])
@example(JsonCase(KINK, POINT, None, False, STRICT, "interval"))
@example(JsonCase(KINK, DomainSpec(((Interval("0", "1e400"),),)), None, True, STRICT, "interval"))
def test_fuzz_json_domains(case):
    """JSON domains (lists or one number, exact decimals, extreme values) and 13 kinds of
    mangled file."""
    TARGETS["json"][1](case)


@pytest.mark.slow
@_settings(150)
@given(case=TARGETS["cli"][0])
@example(_cli("prove", "cex.NPY"))
@example(_cli("prove", "d.json", domain="json"))
@example(_cli("prove", "nodir/cex.npy", pair=SAME))
@example(_cli("compress", "link.onnx"))
@example(_cli("audit", "d.json", domain="json"))
@example(_cli("audit", domain="text:0.3:0.3"))
@example(_cli("prove", domain="text:0:1e400"))
@example(_cli("regions-bound", extra=("784,100000,10",)))
@example(_cli("prove", model="fifo", via="subprocess"))
def test_fuzz_cli_arguments(case):
    """prove / compress / audit / regions with random option values, output paths that alias
    an input (same name, hard link), missing folders, FIFOs, wild timeouts."""
    TARGETS["cli"][1](case)


@pytest.mark.slow
@_settings(8)
@given(case=TARGETS["onnx"][0])
def test_fuzz_onnx_as_subprocess(case):
    """A few ONNX cases as real subprocesses: catches output printed outside Python's handler
    (native libraries, the solver child) and runs under a memory limit."""
    check_onnx(case, via="subprocess")


# the harness itself: each oracle must be able to fail ---------------------------------------


def test_oracle_flags_a_wrong_proved_verdict():
    from .fuzz.oracle import check_proved, recipe_truth

    a, b = recipe_truth(DIFFER.a, "a"), recipe_truth(DIFFER.b, "b")
    assert check_proved(UNIT, STRICT, a, b, n=50)[0].startswith("WRONG PROVED")
    assert check_proved(UNIT, STRICT, a, a, n=50) == []


def test_oracle_flags_counterexamples_outside_strict_bounds_and_non_violations():
    from .fuzz.oracle import check_refuted, recipe_truth

    a, b = recipe_truth(TIE.a, "a"), recipe_truth(TIE.b, "b")
    argmax = SpecChoice("argmax")
    at_half = {"input": [0.5], "input_exact": ["1/2"]}
    assert "outside the domain" in check_refuted(at_half, HALF_OPEN, argmax, a, b)[0]
    closed = DomainSpec(((Interval("0", "0.5"),),))
    assert check_refuted(at_half, closed, argmax, a, b) == []  # a real argmax violation
    inside = {"input": [0.25]}
    assert "holds exactly" in check_refuted(inside, HALF_OPEN, argmax, a, b)[0]
    # a float32 point run by onnxruntime outside the box while 'reproduces' is claimed
    point = DomainSpec(((Interval("0.1", "0.1"),),))
    cex = {"input": [0.1], "input_exact": ["1/10"], "reproduces": True}
    k = recipe_truth(KINK.a, "k")
    zero = recipe_truth(KINK.b, "z")
    assert any("reproduces" in p for p in check_refuted(cex, point, STRICT, k, zero, True))


def test_run_check_flags_overwritten_inputs_stray_files_and_bad_exit_4(tmp_path):
    from .fuzz.cli import Expect, Run, check_run

    run = Run(("prove",), 4, "", "equivcheck: error: one\nsecond line\n", 0.1, "inprocess")
    problems = check_run(run, {"a.onnx": "1"}, {"a.onnx": "2", "x.npy": "3"}, Expect())
    text = "\n".join(problems)
    assert "2 lines on stderr" in text
    assert "a.onnx was modified" in text
    assert "unexpected file written: x.npy" in text
    ok = Run(("prove",), 0, '{"verdict": "proved"}', "", 0.1, "inprocess")
    assert check_run(ok, {"a.onnx": "1"}, {"a.onnx": "1"}, Expect(json=True)) == []
    nan = Run(("prove",), 0, '{"margin": NaN}', "", 0.1, "inprocess")
    assert "not strict JSON" in check_run(nan, {}, {}, Expect(json=True))[0]
