"""Issue 8, the command line under adversarial input: output paths checked before any work (never
overwriting an input), exact output file names, strict JSON, honest reports of non-finite
outputs, bounded rendering, option validation, and region bounds of huge widths."""

from __future__ import annotations

import io
import json
import math
import os
import random
from dataclasses import replace
from decimal import Decimal
from fractions import Fraction

import numpy as np
import onnx
import pytest

from equivcheck.cli.paths import OutputPathError, check_outputs, onnx_external_files
from equivcheck.core.domain import box_domain
from equivcheck.core.result import (
    BoxResult,
    Counterexample,
    Evaluation,
    LayerStability,
    ProofResult,
    Verdict,
    fraction_text,
    int_text,
    json_safe,
    json_text,
    long_int_text,
)
from equivcheck.core.spec import Spec

from .helpers import assert_one_line_error, cli, mlp, pair_model, strict_json, write_pair


def exact(text: str) -> Fraction:
    """A rational written by the JSON rules, read back whatever its length."""
    with long_int_text():
        return Fraction(text)


@pytest.fixture
def pair(tmp_path):
    """(a, the same function, a different one) as ONNX files."""
    return write_pair(tmp_path)


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if prove, compress or audit starts: the checks must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("the analysis started before the output path was checked")

    monkeypatch.setattr("equivcheck.solve.prover.prove", refuse)
    monkeypatch.setattr("equivcheck.compress.pipeline.compress", refuse)
    monkeypatch.setattr("equivcheck.audit.auditor.audit", refuse)


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# ---- 1. output paths validated before any work --------------------------------------------------


def test_compress_output_hard_link_to_the_input_is_refused(pair, tmp_path, no_work):
    a, _, _ = pair
    link = tmp_path / "link.onnx"
    os.link(a, link)
    before = snapshot(tmp_path)
    assert_one_line_error(cli("compress", a, "-o", link), "link.onnx", "same file as the input", "a.onnx")
    assert snapshot(tmp_path) == before


def test_compress_output_symlink_to_the_input_is_refused(pair, tmp_path, no_work):
    a, _, _ = pair
    link = tmp_path / "sym.onnx"
    link.symlink_to(a)
    assert_one_line_error(cli("compress", a, "-o", link), "sym.onnx", "input")


def test_prove_counterexample_over_the_domain_file_is_refused(pair, tmp_path, no_work):
    a, _, other = pair
    d = tmp_path / "d.json"
    d.write_text(json.dumps({"lower": [-1, -1], "upper": [1, 1]}))
    before = snapshot(tmp_path)
    for option in ("--counterexample", "--output"):
        assert_one_line_error(cli("prove", a, other, "--domain", d, option, d), option, "d.json",
                              "refusing to overwrite an input")
    assert snapshot(tmp_path) == before


def test_prove_counterexample_over_a_model_is_refused(tmp_path, no_work):
    a = tmp_path / "model.json"  # an ONNX file with an odd name is still an input
    onnx.save(pair_model(), a)
    assert_one_line_error(cli("prove", a, a, "-o", a), "model.json", "input")


def test_audit_report_over_the_domain_file_is_refused(pair, tmp_path, no_work):
    a, _, other = pair
    d = tmp_path / "d.json"
    d.write_text(json.dumps({"lower": [-1, -1], "upper": [1, 1]}))
    before = snapshot(tmp_path)
    assert_one_line_error(cli("audit", a, other, "--domain", d, "--report", d), "--report", "d.json")
    assert snapshot(tmp_path) == before


def test_unwritable_output_is_found_before_the_proof(pair, tmp_path, no_work):
    a, _, other = pair
    missing = tmp_path / "no" / "such" / "cex.npy"
    assert_one_line_error(cli("prove", a, other, "-o", missing), "cex.npy", "does not exist")
    folder = tmp_path / "dir.npy"
    folder.mkdir()
    assert_one_line_error(cli("prove", a, other, "-o", folder), "is a folder")
    assert_one_line_error(cli("prove", a, other, "-o", a / "cex.npy"), "not a folder")
    assert_one_line_error(cli("compress", a, "-o", tmp_path / "nowhere" / "c.onnx"), "does not exist")
    assert_one_line_error(cli("audit", a, other, "--report", tmp_path / "nowhere" / "r.md"),
                   "does not exist")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root may write in a read-only folder")
def test_read_only_folder_is_found_before_the_proof(pair, tmp_path, no_work):
    a, _, other = pair
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert_one_line_error(cli("prove", a, other, "-o", ro / "cex.npy"), "not writable")
    finally:
        ro.chmod(0o700)


def test_refuted_verdict_still_written_when_the_path_is_fine(pair, tmp_path):
    a, _, other = pair
    out = tmp_path / "cex.json"
    r = cli("prove", a, other, "--domain", "-1:1", "--counterexample", out)
    assert r.exit_code == 1, r.output
    assert "REFUTED" in r.stdout
    assert strict_json(out.read_text())["input"]


def test_a_late_write_failure_keeps_the_verdict(pair, tmp_path, monkeypatch):
    a, _, other = pair

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", disk_full)
    r = cli("prove", a, other, "--domain", "-1:1", "--counterexample", tmp_path / "cex.npy",
            "--json")
    assert r.exit_code == 1, r.output
    assert strict_json(r.stdout)["verdict"] == "refuted"
    assert "warning: could not write the counterexample" in r.stderr
    assert "No space left on device" in r.stderr


def test_paths_with_rich_markup_characters_are_printed_verbatim(pair, tmp_path):
    a, same, _ = pair
    odd = tmp_path / "[" / "]x[bold].onnx"
    odd.parent.mkdir()
    odd.write_bytes(same.read_bytes())
    r = cli("prove", a, odd, "--domain", "-1:1")
    assert r.exit_code == 0, r.output
    assert "]x[bold].onnx" in r.stdout


def test_external_data_files_count_as_inputs(tmp_path):
    model = pair_model()
    path = tmp_path / "ext.onnx"
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.onnx", size_threshold=0)
    weights = tmp_path / "weights.onnx"
    assert weights.exists()
    assert [p.name for p in onnx_external_files(path)] == ["weights.onnx"]
    before = weights.read_bytes()
    assert_one_line_error(cli("compress", path, "-o", weights), "weights.onnx", "input")
    assert weights.read_bytes() == before


def test_check_outputs_refuses_two_outputs_on_one_file(tmp_path):
    out = tmp_path / "x.json"
    with pytest.raises(OutputPathError, match="same file"):
        check_outputs([("--a", out), ("--b", tmp_path / "." / "x.json")], [])
    assert not out.exists()  # the check writes nothing
    assert list(tmp_path.iterdir()) == []


# ---- 2. --counterexample x.NPY writes exactly x.NPY ---------------------------------------------


@pytest.mark.parametrize("name, option", [("cex.NPY", "--counterexample"),
                                          ("cex.Npy", "--cex"), ("cex.npy", "-o")])
def test_counterexample_written_at_exactly_the_given_name(pair, tmp_path, name, option):
    """``-o FILE.npy`` is the deprecated spelling: it still writes the counterexample, with a
    warning on stderr."""
    a, _, other = pair
    out = tmp_path / name
    r = cli("prove", a, other, "--domain", "-1:1", option, out)
    assert r.exit_code == 1, r.output
    assert sorted(p.name for p in tmp_path.iterdir() if "cex" in p.name) == [name]
    with open(out, "rb") as f:
        x = np.load(f)
    assert x.dtype == np.float32 and x.shape == (2,)
    assert f"written to {out}" in " ".join(r.stdout.split())
    assert ("deprecated" in r.stderr) == (option == "-o")


# ---- 3. strict JSON -----------------------------------------------------------------------------


def test_json_text_has_no_nan_or_infinity_and_says_which():
    text = json_text({"m": math.nan, "v": [math.inf, -math.inf, 1.5], "n": np.float64("nan")})
    assert strict_json(text) == {"m": "nan", "v": ["inf", "-inf", 1.5], "n": "nan"}


def test_huge_rationals_serialise_exactly_past_the_4300_digit_limit():
    q = Fraction(1, 3**12000)  # a denominator of 5,726 digits
    assert exact(strict_json(json_text({"q": q}))["q"]) == q
    assert fraction_text(Fraction(7, 2)) == "7/2" and int_text(-12) == "-12"
    # a to_dict that writes a rational with str() (as audit.py does) works too
    class Obj:
        def to_dict(self):
            return {"upper_exact": str(q)}

    assert exact(strict_json(json_text(Obj()))["upper_exact"]) == q
    # beyond 100,000 digits: a marked approximation, never a false exact value
    assert fraction_text(Fraction(1, 3**300000)).startswith("~")
    # integers too long for json.loads are strings, exact
    n = 7**6000  # 5,071 digits
    got = strict_json(json_text([n]))[0]
    assert isinstance(got, str) and Decimal(got) == Decimal(n)


# ---- 4. non-finite outputs ----------------------------------------------------------------------


def _ev(backend, ya, yb, margin, violated, error=None):
    return Evaluation(backend, tuple(ya), tuple(yb), margin, violated, error=error)


def test_inf_outputs_never_reproduce_and_render_honestly():
    from equivcheck.report import counterexample_lines

    exact = Evaluation("exact", (1e40,), (2e40,), 1e40, True, exact_margin=Fraction(10**40))
    f64 = _ev("float64", [1e40], [2e40], 1e40, True)
    ort = _ev("onnxruntime", [math.inf], [math.inf], math.nan, True)  # the old judgement
    cex = Counterexample((1.0,), 0, "falsifier", exact, f64, ort)
    assert not ort.finite and f64.finite
    assert cex.reproduces is False
    data = strict_json(json_text(cex))
    assert data["onnxruntime"]["margin"] == "nan"
    assert data["onnxruntime"]["output_a"] == ["inf"] and data["reproduces"] is False
    text = "\n".join(counterexample_lines(cex))
    assert "outputs not finite" in text and "VIOLATED" not in text.split("onnxruntime")[-1]
    assert "reproduces in float64 and onnxruntime: NO" in text


def test_cli_overflow_in_onnxruntime_is_not_a_reproduction(tmp_path):
    # float32 onnxruntime overflows both outputs to inf; exactly (and in float64) they differ
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(mlp([np.array([[1e20]]), np.array([[1e20]])], [np.zeros(1), np.zeros(1)]), a)
    onnx.save(mlp([np.array([[1e20]]), np.array([[2e20]])], [np.zeros(1), np.zeros(1)]), b)
    r = cli("prove", a, b, "--domain", "1:1", "--json")
    assert r.exit_code == 1, r.output
    data = strict_json(r.stdout)
    cex = data["counterexample"]
    assert cex["exact"]["violated"] is True
    assert cex["onnxruntime"]["output_a"] == ["inf"] and cex["onnxruntime"]["margin"] == "nan"
    assert cex["reproduces"] is False
    r = cli("prove", a, b, "--domain", "1:1")
    assert "outputs not finite" in r.stdout
    assert "reproduces in float64 and onnxruntime: NO" in r.stdout


# ---- 5. long results render briefly -------------------------------------------------------------


def _many_boxes(n: int, not_proved: dict[int, Verdict]) -> ProofResult:
    stab = (LayerStability("a", 0, 8, 3, 4, 1), LayerStability("b", 0, 8, 3, 4, 1))
    boxes = tuple(
        BoxResult(i, not_proved.get(i, Verdict.PROVED), "r", stab) for i in range(n)
    )
    return ProofResult(verdict=Verdict.UNKNOWN, reason="2 boxes unknown", model_a="a.onnx",
                       model_b="b.onnx", spec=Spec.make("strict"), domain=box_domain([0], [1]),
                       counterexample=None, boxes=boxes, seconds=1.0)


def test_render_shows_at_most_20_boxes_non_proved_first():
    from rich.console import Console

    from equivcheck.report import render

    result = _many_boxes(2000, {1500: Verdict.UNKNOWN, 1999: Verdict.UNKNOWN})
    buf = io.StringIO()
    render(result, Console(file=buf, width=120, highlight=False))
    text = buf.getvalue()
    assert len(text.splitlines()) < 80, len(text.splitlines())
    assert "... and 1980 more boxes (all PROVED)" in text
    shown = {int(ln.split()[1]) for ln in text.splitlines() if ln.startswith("│") and
             ln.split()[1].isdigit()}
    assert {1500, 1999} <= shown and len(shown) == 20
    assert len(result.to_dict()["boxes"]) == 2000  # --json keeps every box
    many_unknown = _many_boxes(30, {i: Verdict.UNKNOWN for i in range(25)})
    buf = io.StringIO()
    render(many_unknown, Console(file=buf, width=120))
    assert "... and 10 more boxes (5 UNKNOWN, 5 PROVED)" in buf.getvalue()


# ---- 6. option validation -----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e12", "0", "-1"])
def test_bad_timeout_is_one_line_exit_2_before_any_work(pair, tmp_path, no_work, value):
    a, same, _ = pair
    assert_usage_error(cli("prove", a, same, "--timeout", value), "--timeout")
    assert_usage_error(cli("compress", a, "-o", tmp_path / "c.onnx", "--timeout", value), "--timeout")
    assert_usage_error(cli("audit", a, same, "--timeout", value), "--timeout")
    assert_usage_error(cli("regions", "count", a, "--timeout", value), "--timeout")
    assert not (tmp_path / "c.onnx").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_bad_gap_is_one_line_exit_2(pair, no_work, value):
    a, same, _ = pair
    assert_usage_error(cli("audit", a, same, "--gap", value), "--gap")


@pytest.mark.parametrize("value", ["abc", "-1", "1e400"])
def test_bad_epsilons_are_one_line_exit_2(pair, no_work, value):
    a, same, _ = pair
    assert_usage_error(cli("audit", a, same, "--epsilons", f"0.1,{value}"), "--epsilons", value)


def test_tolerance_beyond_float_range_is_one_line(pair):
    a, same, _ = pair
    assert_usage_error(cli("prove", a, same, "--mode", "epsilon", "--tolerance", "1e400"),
                       "tolerance")


def assert_usage_error(r, *needles) -> None:
    """A bad option value: exit 2, no stdout, one stderr line ``equivcheck: error: ...`` holding
    every needle, no traceback."""
    assert r.exit_code == 2, (r.exit_code, r.output)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("equivcheck: error:"), r.stderr
    assert r.stdout == "" and "Traceback" not in r.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_tiny_tolerance_is_not_printed_as_zero(pair):
    a, same, _ = pair
    r = cli("prove", a, same, "--domain", "-1:1", "--mode", "epsilon", "--tolerance", "1e-400")
    assert r.exit_code == 0, r.output
    assert "tolerance 1e-400" in r.stdout and "tolerance 0," not in r.stdout


# ---- 7. region bounds of huge widths ------------------------------------------------------------


def test_regions_bound_of_a_100000_wide_layer():
    from equivcheck.regions.bounds import theorem1_bound

    r = cli("regions", "bound", "--widths", "784,100000,10")
    assert r.exit_code == 0, r.output
    assert "9.990e+30102" in r.stdout and "1.458e+1988" in r.stdout
    assert "not printed" in r.stdout
    r = cli("regions", "bound", "--widths", "784,100000,10", "--json")
    assert r.exit_code == 0, r.output
    data = strict_json(r.stdout)
    assert data["theorem1"] == theorem1_bound(784, [100000])  # 1,989 digits: a JSON number
    assert data["activation_patterns_scientific"] == "9.990e+30102"
    assert int(Decimal(data["activation_patterns"])) == 2**100000  # 30,103 digits: text


@pytest.mark.parametrize(
    "widths, needle",
    [("784,2000000,10", "maximum 1,000,000"), ("10,600000,600000,10", "ReLU units"),
     ("60000,60000,10", "too large"), ("784,0,10", "at least 1"), ("784,1e5,10", "integers"),
     ("9" * 5000 + ",1,1", "--widths")],
)
def test_regions_bound_refuses_widths_beyond_the_maxima(widths, needle):
    r = cli("regions", "bound", "--widths", widths)
    assert_one_line_error(r, needle)


def _direct_bound(dim, layers):
    """The double sum of ``regions._recursive_bound``'s docstring, term by term."""
    memo = {}

    def r(level, d):
        if level == len(layers):
            return 1
        if (level, d) not in memo:
            s = layers[level]
            memo[level, d] = sum(
                math.comb(s.split, j) * r(level + 1, min(d, s.pass_rank, s.always_active + s.split - j))
                for j in range(min(d, s.split_rank, s.split) + 1)
            )
        return memo[level, d]

    return r(0, dim)


def test_fast_recursive_bound_equals_the_double_sum():
    from equivcheck.regions.bounds import _LayerSpec, _recursive_bound

    rng = random.Random(8)
    for _ in range(1500):
        dim = rng.randint(0, 12)
        specs = [_LayerSpec(rng.randint(0, 10), rng.randint(0, 12), rng.randint(0, 14),
                            rng.randint(0, 6)) for _ in range(rng.randint(0, 4))]
        assert _recursive_bound(dim, specs) == _direct_bound(dim, specs), (dim, specs)


def test_scientific_is_correctly_rounded_for_any_size():
    from equivcheck.regions.bounds import scientific

    rng = random.Random(3)
    cases = [2**100000, -(3**5000), 10**60, 125 * 10**40, 1235 * 10**50, 1245 * 10**50 + 1]
    cases += [rng.randrange(1, 10 ** rng.randint(1, 200)) for _ in range(500)]
    for n in cases:
        for digits in (0, 2, 3):
            assert scientific(n, digits) == format(Decimal(n), f".{digits}e"), n
    assert scientific(2**1000000) == "9.901e+301029"


# ---- 8. audit --json with one unchanged output --------------------------------------------------


def _pair_342(tmp_path):
    rng = np.random.default_rng(1)
    w1, b1 = rng.normal(0, 0.7, (4, 3)), rng.normal(0, 0.3, 4)
    w2, b2 = rng.normal(0, 0.7, (2, 4)), rng.normal(0, 0.3, 2)
    w2b = w2.copy()
    w2b[0, 1] = 0.0  # output 1 is the same function in both nets
    a, b = tmp_path / "a342.onnx", tmp_path / "b342.onnx"
    onnx.save(mlp([w1, w2], [b1, b2]), a)
    onnx.save(mlp([w1, w2b], [b1, b2]), b)
    return a, b


def test_audit_json_with_an_unchanged_output_is_strict(tmp_path):
    a, b = _pair_342(tmp_path)
    r = cli("audit", a, b, "--json", "--timeout", "3")
    assert r.exit_code == 0, r.output
    data = strict_json(r.stdout)
    assert Fraction(data["per_output"][1]["lower_exact"]) == 0
    assert Fraction(data["per_output"][1]["upper_exact"]) >= 0


def test_audit_json_and_report_survive_a_5726_digit_bound(tmp_path, monkeypatch):
    import equivcheck.audit.auditor as audit_mod

    real = audit_mod.audit
    tiny = Fraction(1, 3**12000)

    def audit_with_a_tiny_bound(*args, **kwargs):
        res = real(*args, **kwargs)
        per = list(res.per_output)
        per[1] = replace(per[1], lower=Fraction(0), upper=tiny)
        return replace(res, per_output=tuple(per))

    monkeypatch.setattr(audit_mod, "audit", audit_with_a_tiny_bound)
    a, b = _pair_342(tmp_path)
    report = tmp_path / "r.json"
    r = cli("audit", a, b, "--json", "--timeout", "2", "--report", report)
    assert r.exit_code == 0, r.output
    for text in (r.stdout, report.read_text()):
        assert exact(strict_json(text)["per_output"][1]["upper_exact"]) == tiny


def test_json_safe_refuses_unknown_objects():
    with pytest.raises(TypeError):
        json_safe({"x": object()})


@pytest.mark.parametrize("value", ["nan", "inf", "1e12", "-inf"])
def test_pytest_plugin_refuses_non_finite_or_huge_timeouts(value):
    from equivcheck.pytest_plugin import _timeout

    with pytest.raises(pytest.UsageError, match="equivcheck_timeout"):
        _timeout(value, "equivcheck_timeout")
    assert _timeout("2.5", "equivcheck_timeout") == 2.5
