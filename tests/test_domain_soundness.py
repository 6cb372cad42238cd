"""Regression tests: a counterexample must lie in the domain exactly, strict bounds included.

Each case gave a wrong REFUTED (or a crash) before the fix: a point domain whose bound is not a
float, a VNN-LIB strict bound read as non-strict, outputs that are not finite judged as violated,
and bounds or tolerances beyond the float range.
"""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

import equivcheck
from equivcheck.core.domain import Box
from equivcheck.core.result import Verdict
from equivcheck.core.spec import Spec
from equivcheck.errors import DomainError, InputError, SoundnessError
from equivcheck.io.domains import parse_domain
from equivcheck.solve.witness import build_counterexample, exact_evaluation

from .helpers import mlp

POINT = Fraction(7000673, 10**7)  # not a float64 (nor float32) number


def _scale_vs_constant():
    """f(x) = 10^7 x and g(x) = 7000673: equal exactly at x = 7000673/10^7, nowhere else."""
    a = mlp([np.array([[1e7]])], [np.array([0.0])], dtype=np.float64)
    b = mlp([np.array([[0.0]])], [np.array([7000673.0])], dtype=np.float64)
    return a, b


@pytest.mark.parametrize("form", ["interval", "box", "json", "vnnlib"])
def test_point_domain_that_is_not_a_float_is_proved(tmp_path, form):
    a, b = _scale_vs_constant()
    if form == "interval":
        domain = "0.7000673:0.7000673"
    elif form == "box":
        domain = "0.7000673:0.70006730000000001"
    elif form == "json":
        path = tmp_path / "d.json"
        path.write_text('{"lower": [0.7000673], "upper": [0.7000673]}')
        domain = str(path)
    else:
        path = tmp_path / "d.vnnlib"
        path.write_text("(declare-const X_0 Real)\n(assert (>= X_0 0.7000673))\n(assert (<= X_0 0.7000673))\n")
        domain = str(path)
    result = equivcheck.prove(a, b, domain=domain, timeout=20)
    if form == "box":
        # the box [0.7000673, 0.70006730000000001] holds float64 points where f != g
        assert result.verdict is Verdict.REFUTED
        cex = result.counterexample
        dom = parse_domain(domain, 1)
        assert dom.boxes[0].contains(cex.exact_input)
        assert cex.exact_input[0] != POINT
    else:
        assert result.verdict is Verdict.PROVED, result.reason


def test_point_domain_refuted_at_the_exact_point_when_they_differ_there():
    # f(x) = 10^7 x vs g(x) = 7000672: they differ at the only point of the domain, which no
    # float represents, so the counterexample is the exact rational point and does not claim to
    # reproduce in float.
    a = mlp([np.array([[1e7]])], [np.array([0.0])], dtype=np.float64)
    b = mlp([np.array([[0.0]])], [np.array([7000672.0])], dtype=np.float64)
    result = equivcheck.prove(a, b, domain="0.7000673:0.7000673", timeout=20)
    assert result.verdict is Verdict.REFUTED
    cex = result.counterexample
    assert cex.exact_input == (POINT,)
    assert cex.exact.violated and cex.exact.exact_margin == 1
    assert not cex.float_input_in_domain and not cex.reproduces
    assert "input_exact" in cex.to_dict() and cex.to_dict()["input_exact"] == [str(POINT)]


def _tie_at_half():
    """f = (x, 1/2) and g = (0, 1): the same argmax (class 1) on [0, 1/2), different at x = 1/2
    (f ties and picks class 0)."""
    a = mlp([np.array([[1.0], [0.0]])], [np.array([0.0, 0.5])], dtype=np.float64)
    b = mlp([np.array([[0.0], [0.0]])], [np.array([0.0, 1.0])], dtype=np.float64)
    return a, b


@pytest.mark.parametrize("strict", [True, False])
def test_vnnlib_strict_bound_is_honoured(tmp_path, strict):
    a, b = _tie_at_half()
    path = tmp_path / "half.vnnlib"
    op = "<" if strict else "<="
    path.write_text(f"(declare-const X_0 Real)\n(assert (>= X_0 0.0))\n(assert ({op} X_0 0.5))\n")
    result = equivcheck.prove(a, b, domain=str(path), mode="argmax", timeout=20)
    if strict:
        assert result.verdict is Verdict.PROVED, result.reason
    else:
        assert result.verdict is Verdict.REFUTED
        assert result.counterexample.exact_input == (Fraction(1, 2),)


def test_strict_bounds_are_parsed_and_described(tmp_path):
    path = tmp_path / "s.vnnlib"
    path.write_text(
        "(declare-const X_0 Real)\n(declare-const X_1 Real)\n"
        "(assert (> X_0 0))\n(assert (<= X_0 1))\n(assert (>= X_0 0))\n"  # > wins over >= at 0
        "(assert (>= X_1 -1))\n(assert (< X_1 2))\n(assert (< X_1 3))\n"
    )
    box = parse_domain(str(path), 2).boxes[0]
    assert box.lower == (0, -1) and box.upper == (1, 2)
    assert box.lower_strict == (True, False) and box.upper_strict == (False, True)
    assert not box.contains([0.0, 0.0]) and box.contains([1e-300, 0.0])
    assert not box.contains([0.5, 2.0]) and box.contains([0.5, -1.0])
    assert "(0, 1]" in box.describe() and "[-1, 2)" in box.describe()
    lo32, hi32 = box.float32_box()
    assert lo32[0] > 0 and hi32[1] < 2
    left, right = box.halves(0)
    assert left.lower_strict[0] and not left.upper_strict[0] and right.upper_strict[1]


def test_strict_bound_that_empties_the_box_is_refused(tmp_path):
    path = tmp_path / "e.vnnlib"
    path.write_text("(declare-const X_0 Real)\n(assert (>= X_0 0.5))\n(assert (< X_0 0.5))\n")
    with pytest.raises(DomainError, match="empty range"):
        parse_domain(str(path), 1)


def test_counterexample_outside_the_box_is_refused():
    a, b = _scale_vs_constant()
    na, nb = equivcheck.load_network(a), equivcheck.load_network(b)
    spec = Spec.make("strict")
    box = parse_domain("0.7000673:0.7000673", 1).boxes[0]
    x = [0.7000673]  # the nearest float64: outside the one-point box
    ex = exact_evaluation(na, nb, spec, [Fraction(v) for v in x])
    assert ex.violated
    with pytest.raises(SoundnessError):
        build_counterexample(na, nb, spec, x, 0, "falsifier", None, box=box)


def test_counterexample_that_does_not_violate_is_refused():
    a, b = _scale_vs_constant()
    na, nb = equivcheck.load_network(a), equivcheck.load_network(b)
    box = parse_domain("0.7000673:0.7000673", 1).boxes[0]
    with pytest.raises(SoundnessError):
        build_counterexample(na, nb, Spec.make("strict"), [POINT], 0, "solver", None, box=box)


@pytest.mark.parametrize(
    "text",
    ["0:1e400", "1e300:1e301", "-1e39:0", "0:1e999999999", "1e-999999999:1"],
)
def test_bounds_beyond_float32_range_are_refused(text):
    # refused at once: 1e999999999 is never built as an integer, 1e-999999999 never rounded to 0
    with pytest.raises(DomainError, match="float32 range|exponent"):
        parse_domain(text, 2)


def test_zero_with_any_exponent_is_zero():
    assert parse_domain("0e-99999:1", 1).boxes[0].lower == (0,)


def test_json_and_vnnlib_bounds_beyond_range_are_refused(tmp_path):
    j = tmp_path / "d.json"
    j.write_text('{"lower": [0], "upper": [1e400]}')
    with pytest.raises(DomainError, match="float32 range"):
        parse_domain(str(j), 1)
    v = tmp_path / "d.vnnlib"
    v.write_text("(declare-const X_0 Real)\n(assert (>= X_0 0))\n(assert (<= X_0 1e400))\n")
    with pytest.raises(DomainError, match="float32 range"):
        parse_domain(str(v), 1)


def test_vnnlib_huge_variable_index_is_refused_without_allocating(tmp_path):
    v = tmp_path / "big.vnnlib"
    v.write_text("(declare-const X_99999999999 Real)\n(assert (>= X_99999999999 0))\n")
    with pytest.raises(DomainError, match="X_99999999999"):
        parse_domain(str(v), 5)
    v.write_text("(declare-const X_0 Real)\n(declare-const X_7 Real)\n(assert (>= X_7 0))\n")
    with pytest.raises(DomainError, match="X_7 is out of range"):
        parse_domain(str(v), 5)


def test_negative_constants_in_smtlib_form(tmp_path):
    v = tmp_path / "neg.vnnlib"
    v.write_text("(declare-const X_0 Real)\n(assert (>= X_0 (- 0.5)))\n(assert (<= X_0 0.25))\n")
    box = parse_domain(str(v), 1).boxes[0]
    assert box.lower == (Fraction(-1, 2),) and box.upper == (Fraction(1, 4),)


def test_domain_to_dict_keeps_exact_bounds_and_strictness(tmp_path):
    v = tmp_path / "s.vnnlib"
    v.write_text("(declare-const X_0 Real)\n(assert (> X_0 0.1))\n(assert (<= X_0 0.5))\n")
    d = parse_domain(str(v), 1).to_dict()
    box = d["boxes"][0]
    assert box["lower_exact"] == ["1/10"] and box["lower_strict"] == [True]
    json.dumps(d, allow_nan=False)


@pytest.mark.parametrize("tol, shown", [("1e-400", "1e-400"), ("0.05", "0.05"), ("1/3", "0.333333")])
def test_tolerance_is_described_exactly(tol, shown):
    spec = Spec.make("epsilon", tol)
    from equivcheck.report import spec_text

    assert spec_text(spec) == f"epsilon (tolerance {shown}, linf)"
    assert spec.tolerance == Fraction(tol)


@pytest.mark.parametrize("tol", ["1e400", "nan", "inf", "-1", "abc", "1e999999999"])
def test_bad_tolerances_are_input_errors(tol):
    with pytest.raises(InputError):
        Spec.make("epsilon", tol)


def test_non_finite_float_outputs_never_count_as_violations():
    from equivcheck.solve.witness import _float_evaluation

    spec = Spec.make("strict")
    ev = _float_evaluation("onnxruntime", spec, np.array([np.inf]), np.array([np.inf]))
    assert not ev.violated and ev.error and "not finite" in ev.error
    ev = _float_evaluation("float64", spec, np.array([1.0]), np.array([np.nan]))
    assert not ev.violated


def test_float_box_has_only_points_inside():
    box = Box((Fraction(1, 3),), (Fraction(1, 3) + Fraction(1, 10**12),), (True,), (False,))
    lo, hi = box.float32_box() or (None, None)
    assert lo is None  # the box is far thinner than a float32 step at 1/3
    lo, hi = box.float64_box()
    assert box.contains(lo) and box.contains(hi)


def test_domain_text_too_long_for_a_file_name_is_read_as_an_interval():
    with pytest.raises(DomainError, match="float32 range"):
        parse_domain("0:1" + "0" * 300, 2)  # a file-name check used to raise OSError (exit 5)


def test_float32_rounding_of_either_model_is_checked_against_the_domain(tmp_path):
    # a (float64 input) runs the point itself, b (float32 input) runs float32(0.1), which lies
    # above the domain's open upper bound: the counterexample must not claim it reproduces there
    a = mlp([np.array([[1.0]])], [np.array([0.0])], dtype=np.float64)
    b = mlp([np.array([[0.0]])], [np.array([0.0])], dtype=np.float32)
    path = tmp_path / "thin.vnnlib"
    path.write_text("(declare-const X_0 Real)\n(assert (> X_0 0.1))\n(assert (< X_0 0.10000000000000001))\n")
    result = equivcheck.prove(a, b, domain=str(path), timeout=20)
    assert result.verdict is Verdict.REFUTED
    cex = result.counterexample
    assert parse_domain(str(path), 1).boxes[0].contains(cex.exact_input)
    assert not cex.float_input_in_domain and not cex.reproduces
    assert "outside the domain" in cex.note


def test_audit_epsilons_are_range_checked_like_the_tolerance():
    from equivcheck.audit.auditor import audit

    a = mlp([np.array([[1.0]])], [np.array([0.0])])
    with pytest.raises(InputError, match="epsilon"):
        audit(a, a, domain="0:1", epsilons=("1e400",), timeout=10)


def test_describing_a_large_union_formats_only_what_it_shows(monkeypatch):
    # the text of 100 boxes x 784 inputs was built in full (1.1 s) before being cut to a count
    import equivcheck.core.domain as dmod
    from equivcheck.core.domain import Domain

    calls = []
    real = dmod.format_rational
    monkeypatch.setattr(dmod, "format_rational", lambda q, *a: calls.append(q) or real(q, *a))
    rng = np.random.default_rng(0)
    boxes = []
    for _ in range(100):
        c = rng.uniform(0.1, 0.9, 784)
        boxes.append(Box(tuple(Fraction(v - 0.01) for v in c), tuple(Fraction(v + 0.01) for v in c)))
    text = Domain(tuple(boxes), "many.vnnlib").describe()
    assert text == "100 box(es) over 784 inputs (from many.vnnlib)"
    assert len(calls) < 100
