"""Domains: LO:HI, VNN-LIB (boxes, unions, zero-width), JSON; exact bounds; outward rounding."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from equivcheck.core.domain import Box
from equivcheck.errors import DomainError, ShapeMismatchError
from equivcheck.io.domains import parse_domain, read_vnnlib_domain


def test_interval_is_exact_decimal():
    d = parse_domain("-0.1:0.3", 2)
    assert d.boxes[0].lower == (Fraction(-1, 10),) * 2
    assert d.boxes[0].upper == (Fraction(3, 10),) * 2


def test_float_enclosure_is_outward():
    box = parse_domain("0.1:0.3", 1).boxes[0]
    assert Fraction(box.lower_float()[0]) <= Fraction(1, 10)
    assert Fraction(box.upper_float()[0]) >= Fraction(3, 10)
    lo32, hi32 = box.float32_box()
    assert Fraction(1, 10) <= Fraction(lo32[0]) and Fraction(hi32[0]) <= Fraction(3, 10)
    assert np.float32(lo32[0]) == lo32[0]


def test_default_domain():
    d = parse_domain(None, 3)
    assert d.is_default and d.boxes[0].upper == (1, 1, 1) and "default" in d.describe()


def test_vnnlib_box_and_output_constraints_ignored(tmp_path):
    p = tmp_path / "p.vnnlib"
    p.write_text("""; comment
(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(assert (<= X_0 0.30353115613746867))
(assert (>= X_0 -0.5))
(assert (>= 0.25 X_1))
(assert (<= -0.25 X_1))
(assert (or (and (<= Y_0 1)) (and (>= Y_0 2))))
""")
    d = read_vnnlib_domain(p)
    (box,) = d.boxes
    assert box.upper[0] == Fraction("0.30353115613746867")
    assert box.lower == (Fraction(-1, 2), Fraction(-1, 4))
    assert box.upper[1] == Fraction(1, 4)


def test_vnnlib_union_of_boxes(external):
    d = read_vnnlib_domain(external("acasxu/prop_6.vnnlib"))
    assert len(d.boxes) == 2
    assert d.boxes[0].lower[1] == Fraction("0.11140846")
    assert d.boxes[1].upper[1] == Fraction("-0.11140846")


def test_vnnlib_zero_width(external):
    d = read_vnnlib_domain(external("acasxu/prop_4.vnnlib"))
    (box,) = d.boxes
    assert box.lower[2] == box.upper[2] == 0


def test_vnnlib_missing_bound(tmp_path):
    p = tmp_path / "p.vnnlib"
    p.write_text("(declare-const X_0 Real)\n(assert (<= X_0 1))\n")
    with pytest.raises(DomainError, match="X_0 has no lower bound"):
        read_vnnlib_domain(p)


def test_vnnlib_unbalanced(tmp_path):
    p = tmp_path / "p.vnnlib"
    p.write_text("(declare-const X_0 Real)\n(assert (<= X_0 1)\n")
    with pytest.raises(DomainError, match="unbalanced"):
        read_vnnlib_domain(p)


def test_json_domain(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"lower": [0.1, -1], "upper": 2}))
    box = parse_domain(str(p), 2).boxes[0]
    assert box.lower == (Fraction(1, 10), Fraction(-1))  # JSON decimals read exactly
    assert box.upper == (2, 2)


@pytest.mark.parametrize("text", ['{"lower": [0], "upper": [NaN]}', '{"lower": [1], "upper": [0]}',
                                  '{"lower": []}', "[1, 2]", "{bad json"])
def test_json_domain_errors(tmp_path, text):
    p = tmp_path / "d.json"
    p.write_text(text)
    with pytest.raises(DomainError):
        parse_domain(str(p), 1)


def test_dimension_mismatch():
    with pytest.raises(ShapeMismatchError):
        parse_domain(parse_domain("0:1", 3), 2)


def test_box_validation():
    with pytest.raises(DomainError, match="inverted"):
        Box((Fraction(1),), (Fraction(0),))
    with pytest.raises(DomainError, match="empty"):
        Box((), ())


# ---- VNN-LIB: output and mixed constraints are left out, with a note ------------------------


def _read_with_notes(path, n):
    import warnings

    from equivcheck.io.domains import IgnoredConstraintWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dom = read_vnnlib_domain(path, n)
    notes = [str(w.message) for w in caught if issubclass(w.category, IgnoredConstraintWarning)]
    return dom, notes


def test_vnnlib_branches_mixing_inputs_and_outputs_keep_their_input_boxes(tmp_path):
    p = tmp_path / "mixed.vnnlib"
    p.write_text("""
(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(assert (<= X_1 2))
(assert (>= X_1 (- 2)))
(assert (or
    (and (>= X_0 -1) (<= X_0 0) (>= Y_0 Y_1))
    (and (> X_0 0) (<= X_0 1) (<= Y_0 100) (>= Y_1 3))
    (and (>= X_0 -1) (<= X_0 0) (<= Y_1 0))
))
(assert (<= Y_0 X_0))
""")
    dom, notes = _read_with_notes(p, 2)
    assert [(b.lower, b.upper) for b in dom.boxes] == [
        ((-1, -2), (0, 2)), ((0, -2), (1, 2))]  # the third branch's box equals the first
    assert dom.boxes[1].lower_strict == (True, False)  # (> X_0 0) stays strict
    assert len(notes) == 1 and "5 constraint(s) on the outputs ignored" in notes[0]
    assert "(>= Y_0 Y_1)" in notes[0] and str(p) in notes[0]


def test_vnnlib_without_output_constraints_says_nothing(tmp_path):
    p = tmp_path / "box.vnnlib"
    p.write_text("(declare-const X_0 Real)\n(assert (>= X_0 0))\n(assert (<= X_0 1))\n")
    dom, notes = _read_with_notes(p, 1)
    assert notes == [] and dom.boxes[0].upper == (1,)


def test_vnnlib_input_constraint_between_two_inputs_is_still_refused(tmp_path):
    p = tmp_path / "rel.vnnlib"
    p.write_text("(declare-const X_0 Real)\n(declare-const X_1 Real)\n"
                 "(assert (<= X_0 X_1))\n")
    with pytest.raises(DomainError, match="unsupported input constraint"):
        read_vnnlib_domain(p, 2)


def test_vnncomp_test_tiny_reads_its_input_box(external):
    dom, notes = _read_with_notes(external("vnncomp_test/test_tiny.vnnlib"), 1)
    assert [(b.lower, b.upper) for b in dom.boxes] == [((-1,), (1,))]
    assert len(notes) == 1 and "(>= Y_0 100)" in notes[0]
