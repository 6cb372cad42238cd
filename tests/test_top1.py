"""Confidence-based top-1 (``--mode top1 --confidence DELTA``), on pairs whose answers are worked
out by hand.

The pair used throughout: one input x in [-1, 1], hidden units relu(x) and relu(-x), logits
a(x) = (x, -x) and b(x) = (x - 1/4, -x). a picks class 0 for x >= 0 (numpy's argmax takes the
first of a tie), b picks class 0 for x >= 1/8, so they disagree exactly on [0, 1/8). There a's
confidence is softmax(x, -x)_0 = 1 / (1 + exp(-2x)), at most 1 / (1 + exp(-1/4)) = 0.56218...
So the pair holds for DELTA = 0.6 and fails for DELTA = 0.55, on the points
x >= ln(0.55 / 0.45) / 2 = 0.100335... of [0, 1/8).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from equivcheck.core.domain import box_domain
from equivcheck.core.options import ProverOptions
from equivcheck.core.result import Verdict
from equivcheck.core.spec import Mode, Spec, batch_margin, confidence_gap, exp_lower, tangent_points
from equivcheck.errors import InputError
from equivcheck.solve.encode import encode_disagreement
from equivcheck.solve.prover import prove_networks

from .helpers import net

HIDDEN = ([[1.0], [-1.0]], [0.0, 0.0])
A = net([HIDDEN[0], [[1.0, -1.0], [-1.0, 1.0]]], [HIDDEN[1], [0.0, 0.0]], name="a")
B = net([HIDDEN[0], [[1.0, -1.0], [-1.0, 1.0]]], [HIDDEN[1], [-0.25, 0.0]], name="b")
DOMAIN = box_domain([-1.0], [1.0])
EDGE = math.log(0.55 / 0.45) / 2  # a's confidence is 0.55 at x = EDGE


def _prove(delta, *, falsify: bool = True, domain=DOMAIN):
    spec = Spec.make("top1", confidence=delta)
    # the engine does not judge top1 (see docs): the prover's falsifier and solver do
    opts = ProverOptions(engine=False, falsify=falsify, timeout=60)
    return prove_networks(A, B, spec, domain, opts)


# -- the spec's values ---------------------------------------------------------------------------
def test_make_reads_the_confidence_exactly_and_refuses_bad_ones():
    assert Spec.make("top1", confidence="0.9").confidence == Fraction(9, 10)
    assert Spec.make(Mode.TOP1, confidence=0.5).confidence == Fraction(1, 2)
    for bad in (0, 1, "1.5", "-0.1"):
        with pytest.raises(InputError, match="strictly between 0 and 1"):
            Spec.make("top1", confidence=bad)
    with pytest.raises(InputError, match="--confidence DELTA"):
        Spec.make("top1")
    with pytest.raises(InputError, match="only applies to --mode top1"):
        Spec.make("argmax", confidence="0.9")
    with pytest.raises(InputError, match="only applies to --mode epsilon"):
        Spec.make("top1", tolerance="0.1", confidence="0.9")
    assert Spec.make("top1", confidence="0.9").to_dict() == {"mode": "top1", "confidence": 0.9,
                                                            "confidence_exact": "9/10"}


def test_logit_margin_is_rounded_down_and_close():
    # ln(0.9 / 0.1) = ln 9 = 2.19722457733621938279...
    low = Spec.make("top1", confidence="0.9").logit_margin()
    assert Fraction("2.197224577336219382") < low < Fraction("2.197224577336219383")
    # ln(0.25 / 0.75) = -ln 3 = -1.09861228866810969139...
    low = Spec.make("top1", confidence="0.25").logit_margin()
    assert Fraction("-1.098612288668109692") < low < Fraction("-1.098612288668109691")
    assert Spec.make("top1", confidence="0.5").logit_margin() == 0  # ln 1, exactly


def test_confidence_gap_exact_sign_and_value():
    # softmax(1, 0)_0 = e / (1 + e) = 0.7310585786300049...
    assert confidence_gap([Fraction(1), Fraction(0)], Fraction("0.731")) > 0
    assert confidence_gap([Fraction(1), Fraction(0)], Fraction("0.7311")) < 0
    gap = confidence_gap([Fraction(1), Fraction(0)], Fraction("0.7"))
    assert abs(gap - Fraction("0.0310585786300049")) < Fraction(1, 10**15)
    # a three-way tie: softmax is exactly 1/3 each, a rational: decided exactly
    assert confidence_gap([Fraction(2)] * 3, Fraction(1, 3)) == 0
    assert confidence_gap([Fraction(2)] * 3, Fraction(1, 3) + Fraction(1, 10**40)) < 0
    # softmax(0, -d)_0 = 1 / (1 + exp(-d)) is 2/3 exactly at d = ln 2 = 0.693147180559945309417
    # 2321458176568075500...: 38 digits below and above it decide the sign either way
    below, above = Fraction("0.69314718055994530941723212145817656807"), \
        Fraction("0.69314718055994530941723212145817656808")
    assert confidence_gap([Fraction(0), -below], Fraction(2, 3)) < 0  # exp(-below) > 1/2
    assert confidence_gap([Fraction(0), -above], Fraction(2, 3)) > 0
    # floats: float64 softmax
    assert confidence_gap([1.0, 0.0], Fraction("0.7")) == pytest.approx(0.0310585786300049)


def test_holds_and_margin_follow_the_real_softmax():
    spec = Spec.make("top1", confidence="0.55")
    just_in = Fraction(EDGE) + Fraction(1, 10**6)
    just_out = Fraction(EDGE) - Fraction(1, 10**6)
    for x, violated in ((just_in, True), (just_out, False), (Fraction(-1, 2), False),
                        (Fraction(1, 5), False)):
        ya, yb = A.evaluate_exact([x]), B.evaluate_exact([x])
        assert spec.holds(ya, yb) is not violated, x
        assert (spec.margin(ya, yb) >= 0) is violated, x
    # the float64 batch margin agrees on points away from the edge
    xs = np.array([[0.11], [0.09], [-0.5], [0.2]])
    m = batch_margin(spec, A.evaluate(xs), B.evaluate(xs))
    assert list(m > 0) == [True, False, False, False]


def test_encoding_states_the_logit_margin_for_a_class():
    spec = Spec.make("top1", confidence="0.9")
    from equivcheck.bounds.methods import bounds_pair
    from equivcheck.core.deadline import Deadline
    from equivcheck.core.options import BoundMethod

    box = DOMAIN.boxes[0]
    ba, bb = bounds_pair(A, B, box.lower_float(), box.upper_float(), BoundMethod.SYMBOLIC,
                         Deadline.start(10))
    text = encode_disagreement(A, B, box, ba, bb, spec).text
    low = spec.logit_margin()
    assert f"(> (- a1_0 a1_1) (/ {low.numerator} {low.denominator}))" in text
    assert "(assert (not (= ca cb)))" in text


# -- the prover, by hand --------------------------------------------------------------------------
@pytest.mark.parametrize("falsify", [True, False])
def test_confident_enough_nowhere_they_disagree_is_proved(falsify):
    res = _prove("0.6", falsify=falsify)
    assert res.verdict is Verdict.PROVED, res.reason


@pytest.mark.parametrize("falsify", [True, False])
def test_confident_disagreement_is_refuted_with_the_real_softmax(falsify):
    res = _prove("0.55", falsify=falsify)
    assert res.verdict is Verdict.REFUTED, res.reason
    x = res.counterexample.exact_input[0]
    assert Fraction(EDGE) < x < Fraction(1, 8)
    z = float(x)
    assert 1 / (1 + math.exp(-2 * z)) >= 0.55  # a is confident ...
    assert z - 0.25 < -z  # ... and b picks class 1


def test_argmax_refutes_where_top1_proves():
    opts = ProverOptions(engine=False, timeout=60)
    res = prove_networks(A, B, Spec.make("argmax"), DOMAIN, opts)
    assert res.verdict is Verdict.REFUTED
    assert 0 <= res.counterexample.exact_input[0] < Fraction(1, 8)


def test_a_domain_where_they_agree_is_proved_whatever_the_confidence():
    res = _prove("0.51", domain=box_domain([0.125], [1.0]))
    assert res.verdict is Verdict.PROVED, res.reason


# -- three classes: the logit margin alone is not enough -----------------------------------------
# a = (x, 0, 0), b = (x - 1, 0, 0) for x in [-2, 2]: a picks class 0 for x >= 0, b for x >= 1.
# a's confidence is e^x / (e^x + 2): at least 0.6 only for x >= ln 3 = 1.0986 (beyond the
# disagreement [0, 1)), at least 0.55 for x >= ln(22/9) = 0.8938. The logit margin alone,
# x >= ln(0.6 / 0.4) = 0.405, would let the solver return points of [0.405, 1) that are not
# confident; the tangent cuts of the encoding exclude them.
A3 = net([HIDDEN[0], [[1.0, -1.0], [0.0, 0.0], [0.0, 0.0]]], [HIDDEN[1], [0.0, 0.0, 0.0]], name="a3")
B3 = net([HIDDEN[0], [[1.0, -1.0], [0.0, 0.0], [0.0, 0.0]]], [HIDDEN[1], [-1.0, 0.0, 0.0]], name="b3")
DOMAIN3 = box_domain([-2.0], [2.0])


@pytest.mark.parametrize("falsify", [True, False])
def test_three_classes_proved_where_only_the_even_split_rules_out_confidence(falsify):
    opts = ProverOptions(engine=False, falsify=falsify, timeout=60)
    res = prove_networks(A3, B3, Spec.make("top1", confidence="0.6"), DOMAIN3, opts)
    assert res.verdict is Verdict.PROVED, res.reason


@pytest.mark.parametrize("falsify", [True, False])
def test_three_classes_refuted_on_the_confident_part(falsify):
    opts = ProverOptions(engine=False, falsify=falsify, timeout=60)
    res = prove_networks(A3, B3, Spec.make("top1", confidence="0.55"), DOMAIN3, opts)
    assert res.verdict is Verdict.REFUTED, res.reason
    x = float(res.counterexample.exact_input[0])
    assert math.log(22 / 9) <= x < 1.0


def test_tangent_cuts_are_below_exp():
    for t in (Fraction(-7, 2), Fraction(0), Fraction(1, 3), Fraction(-40)):
        e = exp_lower(t)
        assert e <= Fraction(math.exp(float(t))) * (1 + Fraction(1, 10**12))
        assert Fraction(math.exp(float(t))) * (1 - Fraction(1, 10**12)) < e
    pts = tangent_points(Fraction(2, 3), 3)
    assert Fraction(-70, 64) in pts  # round(64 ln(1/3)) = -70: the even split of two rivals
