"""The equivcheck pytest plugin, run the way users run it (pytester)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from equivcheck.io.onnx_export import export_network

from .test_testing import base, hard_pair, rescaled, shifted

pytest_plugins = ["pytester"]


@pytest.fixture
def project(pytester):
    """A user project: four model files in the test directory."""
    hard_a, hard_b = hard_pair()
    for name, n in (("base", base()), ("rescaled", rescaled()), ("shifted", shifted()),
                    ("hard_a", hard_a), ("hard_b", hard_b)):
        export_network(n, pytester.path / f"{name}.onnx")
    return pytester


PASS_AND_FAIL = """
from equivcheck.testing import assert_equivalent

def test_rescaled_is_equivalent():
    assert_equivalent("base.onnx", "rescaled.onnx", domain="-1:1")

def test_shifted_differs(equivcheck):
    equivcheck.assert_equivalent("base.onnx", "shifted.onnx", domain="-1:1", mode="epsilon",
                                 tolerance=0.1)
"""

UNKNOWN = """
import pytest
from equivcheck.testing import assert_equivalent

def test_hard():
    assert_equivalent("hard_a.onnx", "hard_b.onnx", domain="-1:1", mode="epsilon",
                      tolerance=0.5)
"""


def test_passing_and_failing_checks_with_report_section(project):
    project.makepyfile(PASS_AND_FAIL)
    res = project.runpytest()
    res.assert_outcomes(passed=1, failed=1)
    out = res.stdout.str()
    # the assertion message and the report section of the failing test
    assert "NotEquivalentError: models are NOT equivalent (REFUTED)" in out
    assert "||a(x) - b(x)||_inf = 0.25 > tolerance 0.1" in out
    assert "reproduces in onnxruntime: yes" in out
    res.stdout.fnmatch_lines(["*- equivcheck -*",
                              "check 1: REFUTED (epsilon 0.1) in * s: base.onnx vs shifted.onnx",
                              "  counterexample found by sampling and local search",
                              "  counterexample x (2 values; full input saved to *.npy):",
                              "  reproduces in onnxruntime: yes*"])
    # pytest hides the library's frames: the traceback points at the user's line
    assert "raise NotEquivalentError" not in out
    res.stdout.fnmatch_lines(["*reproduce: equivcheck prove base.onnx shifted.onnx --domain -1:1 "
                              "--mode epsilon --tolerance 0.1 --timeout 60*"])
    res.stdout.fnmatch_lines(["equivcheck: 2 check(s): 1 proved, 1 refuted, 0 unknown"])


def test_fixture_call_and_results(project):
    project.makepyfile("""
        def test_fixture(equivcheck):
            r = equivcheck("base.onnx", "rescaled.onnx", domain="-1:1")
            assert r.proved
            assert [x.verdict.label for x in equivcheck.results] == ["proved"]
    """)
    project.runpytest().assert_outcomes(passed=1)


def test_unknown_fails_by_default(project):
    project.makepyfile(UNKNOWN)
    res = project.runpytest("--equivcheck-timeout=0.5")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*EquivalenceUnknownError: equivalence could not be decided (UNKNOWN)*"])
    res.stdout.fnmatch_lines(["*--timeout 0.5*"])
    res.stdout.fnmatch_lines(["equivcheck: 1 check(s): 0 proved, 0 refuted, 1 unknown"])


@pytest.mark.parametrize("how", ["option", "ini", "marker"])
def test_unknown_can_skip_or_xfail(project, how):
    args = ["--equivcheck-timeout=0.5"]
    source = UNKNOWN
    if how == "option":
        args.append("--equivcheck-unknown=skip")
        expected = {"skipped": 1}
    elif how == "ini":
        project.makeini("[pytest]\nequivcheck_unknown = xfail\nequivcheck_timeout = 0.5\n")
        args = []
        expected = {"xfailed": 1}
    else:
        # the marker wins over the command line
        args.append("--equivcheck-unknown=fail")
        source = UNKNOWN.replace("def test_hard", "@pytest.mark.equivcheck(unknown='skip')\n"
                                 "def test_hard")
        expected = {"skipped": 1}
    project.makepyfile(source)
    res = project.runpytest(*args, "-rsx")
    res.assert_outcomes(**expected)
    res.stdout.fnmatch_lines(["*UNKNOWN*"])


def test_marker_sets_timeout_and_check_options(project):
    project.makeini("[pytest]\nequivcheck_timeout = 30\n")
    project.makepyfile("""
        import pytest
        from equivcheck.testing import assert_equivalent

        @pytest.mark.equivcheck(timeout=7, domain="-1:1", mode="epsilon", tolerance=0.2)
        def test_marked():
            assert_equivalent("base.onnx", "shifted.onnx")

        def test_unmarked():
            assert_equivalent("base.onnx", "shifted.onnx", domain="-1:1")
    """)
    res = project.runpytest("--equivcheck-timeout=12")
    res.assert_outcomes(failed=2)
    out = res.stdout.str()
    assert "--domain -1:1 --mode epsilon --tolerance 0.2 --timeout 7" in out  # marker
    assert "--domain -1:1 --mode strict --timeout 12" in out  # command line over ini


def test_ini_timeout_applies_without_option(project):
    project.makeini("[pytest]\nequivcheck_timeout = 9\n")
    project.makepyfile(PASS_AND_FAIL)
    res = project.runpytest()
    assert "--tolerance 0.1 --timeout 9" in res.stdout.str()


@pytest.mark.parametrize("args, ini, message", [
    (["--equivcheck-timeout=abc"], None, "invalid float value"),
    (["--equivcheck-timeout=-1"], None, "the timeout must be positive"),
    ([], "equivcheck_timeout = soon", "equivcheck_timeout: 'soon' is not a number of seconds"),
    ([], "equivcheck_unknown = ignore", "equivcheck_unknown: 'ignore' is not one of"),
])
def test_bad_options_are_usage_errors(project, args, ini, message):
    project.makepyfile(PASS_AND_FAIL)
    if ini:
        project.makeini(f"[pytest]\n{ini}\n")
    res = project.runpytest(*args)
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert message in res.stderr.str()


def test_bad_unknown_choice_is_rejected(project):
    project.makepyfile(PASS_AND_FAIL)
    res = project.runpytest("--equivcheck-unknown=ignore")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert "invalid choice" in res.stderr.str()


def test_marker_with_unknown_option_is_an_error(project):
    project.makepyfile("""
        import pytest
        from equivcheck.testing import assert_equivalent

        @pytest.mark.equivcheck(timout=3)
        def test_typo():
            assert_equivalent("base.onnx", "rescaled.onnx", domain="-1:1")
    """)
    res = project.runpytest()
    assert res.ret != 0
    assert "unknown option(s) timout" in res.stdout.str() + res.stderr.str()


def test_options_and_marker_are_declared(project):
    res = project.runpytest("--help")
    res.stdout.fnmatch_lines(["*equivalence checks of ONNX models*",
                              "*--equivcheck-timeout=SECONDS*",
                              "*--equivcheck-unknown={fail,skip,xfail}*"])
    assert "equivcheck_timeout" in res.stdout.str()
    markers = project.runpytest("--markers")
    markers.stdout.fnmatch_lines(["@pytest.mark.equivcheck(timeout=None, unknown=None*"])


def test_explicit_plugin_without_autoload(project, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    project.makepyfile(PASS_AND_FAIL)
    res = project.runpytest_subprocess("-p", "equivcheck.pytest_plugin")
    res.assert_outcomes(passed=1, failed=1)
    res.stdout.fnmatch_lines(["equivcheck: 2 check(s): 1 proved, 1 refuted, 0 unknown"])


def test_loading_the_plugin_imports_nothing_heavy():
    code = (
        "import sys, equivcheck.pytest_plugin\n"
        "heavy = [m for m in ('onnx', 'onnxruntime', 'z3', 'torch', 'scipy', 'matplotlib',"
        " 'highspy') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
