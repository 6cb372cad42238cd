"""The canonical form (issue 11): its exact rewrites, what it may and may not conclude, and the
prover's use of it. The generated corpus is in tests/test_canon_rewrites.py."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from equivcheck.canon import canonical_check
from equivcheck.canon.table import Lin, UnitTable
from equivcheck.core.domain import Box, Domain
from equivcheck.core.options import ProverOptions
from equivcheck.core.result import Verdict
from equivcheck.core.spec import Spec
from equivcheck.solve.prover import prove_networks

from .helpers import net
from .test_canon_rewrites import Case, sampled_ok


def domain(lo, hi) -> Domain:
    return Domain((Box(tuple(Fraction(v) for v in lo), tuple(Fraction(v) for v in hi)),), "box")


W1 = [[1.0, -2.0], [0.5, 0.5], [-1.0, 1.0]]
B1 = [0.25, -1.0, 0.0]
W2 = [[1.0, -1.0, 2.0]]
B2 = [0.125]


def base():
    return net([W1, W2], [B1, B2])


def test_relu_of_z_minus_relu_of_minus_z_is_z_exactly():
    t = UnitTable([Fraction(-1)] * 2, [Fraction(1)] * 2)
    z = Lin.of({0: Fraction(3), 1: Fraction(-1, 3)}, Fraction(1, 7))
    plus, minus = t.relu(z), t.relu(z.scaled(Fraction(-2)))
    assert plus.unit != minus.unit and minus.negated and not plus.negated
    # relu(z) - relu(-2z)/2 == z, once relu(-p) is read as relu(p) - p
    e, n = t.cancel_twins(plus.value.minus(minus.value.scaled(Fraction(1, 2))))
    assert n == 1 and e == z


def test_a_positive_multiple_is_the_same_unit_and_a_stable_one_is_folded():
    t = UnitTable([Fraction(0)] * 2, [Fraction(1)] * 2)
    z = Lin.of({0: Fraction(1), 1: Fraction(-1)})
    assert t.relu(z).unit == t.relu(z.scaled(Fraction(5, 3))).unit
    active = t.relu(Lin.of({0: Fraction(1), 1: Fraction(2)}, Fraction(1, 4)))
    assert active.kind == "active" and active.value == Lin.of({0: Fraction(1), 1: Fraction(2)},
                                                              Fraction(1, 4))
    assert t.relu(Lin.of({0: Fraction(-1)}, Fraction(-1, 2))).kind == "dead"


def test_identical_networks_and_permuted_units_are_proved_without_search():
    a = base()
    b = net([np.array(W1)[[2, 0, 1]], W2[0:1] and np.array(W2)[:, [2, 0, 1]]],
            [np.array(B1)[[2, 0, 1]], B2])
    res = canonical_check(a, b, Spec(), domain([-1, -1], [1, 1]))
    assert res.proved and "1 layer permuted" in res.reason


def test_a_unit_dead_only_on_the_domain_is_removed_only_there():
    # unit 1 (0.5 x0 + 0.5 x1 - 1) is dead on [0, 1]^2 and not on [0, 2]^2
    w1 = np.array(W1)[[0, 2]]
    b = net([w1, np.array(W2)[:, [0, 2]]], [np.array(B1)[[0, 2]], B2])
    small, large = domain([0, 0], [1, 1]), domain([0, 0], [2, 2])
    ok = canonical_check(base(), b, Spec(), small)
    assert ok.proved and "1 dead unit removed (on a)" in ok.reason
    assert not canonical_check(base(), b, Spec(), large).proved
    res = prove_networks(base(), b, Spec(), large, ProverOptions(timeout=30))
    assert res.verdict is Verdict.REFUTED


def test_an_identity_relu_layer_and_a_split_unit_are_recognised():
    a = base()
    eye = np.eye(3)
    # the identity layer after the ReLU layer, then unit 0 split into 2 z and z/2
    w_id = np.vstack([eye, 0.5 * eye[0]])
    w_out = np.array([[0.25, -1.0, 2.0, 1.5]])
    b = net([W1, w_id, w_out], [B1, [0, 0, 0, 0], B2])
    res = canonical_check(a, b, Spec(), domain([-1, -1], [1, 1]))
    assert res.proved, res.reason
    assert "layer removed" in res.reason and "always-active units folded" in res.reason


def test_argmax_accepts_positive_scaling_and_shifts_but_not_a_negative_factor():
    w2 = np.array([[1.0, -1.0, 2.0], [0.5, 0.25, -1.0]])
    a = net([W1, w2], [B1, [0.125, 0.0]])
    shift = np.array([[0.25, 0.5, -0.75]])
    b = net([W1, 4 * w2 + shift], [B1, [0.5 + 1, 0.0 + 1]])
    dom = domain([-1, -1], [1, 1])
    res = canonical_check(a, b, Spec.make("argmax"), dom)
    assert res.proved and "outputs scaled by 4" in res.reason and "shifted" in res.reason
    assert not canonical_check(a, b, Spec(), dom).proved
    flipped = net([W1, -w2], [B1, [-0.125, 0.0]])
    assert not canonical_check(a, flipped, Spec.make("argmax"), dom).proved


def test_epsilon_bounds_an_affine_output_difference_exactly():
    a = base()
    b = net([W1, np.array(W2) + [[2**-10, 0, 0]]], [B1, [B2[0] + 2**-12]])
    dom = domain([-1, -1], [1, 1])
    # unit 0 is relu(x0 - 2 x1 + 1/4) <= 3.25 on the box: |diff| <= 3.25/1024 + 1/4096
    bound = Fraction(13, 4) / 1024 + Fraction(1, 4096)
    # the units' bounds are sound float bounds taken exactly: a hair above 3.25
    ok = canonical_check(a, b, Spec.make("epsilon", bound * Fraction(1001, 1000)), dom)
    assert ok.proved and "bounded exactly" in ok.reason
    assert not canonical_check(a, b, Spec.make("epsilon", bound / 2), dom).proved
    assert sampled_ok(Case(a, b, np.array([-1.0, -1.0]), np.array([1.0, 1.0]), (), "epsilon",
                           bound))


@pytest.mark.parametrize("mode", ["strict", "argmax", "epsilon"])
def test_the_prover_reports_the_rewrites_and_searches_when_forms_differ(mode):
    a = base()
    # unit 0 rescaled by 2, compensated in the next layer
    b = net([np.array(W1) * [[2.0], [1], [1]], np.array(W2) * [[0.5, 1, 1]]],
            [np.array(B1) * [2.0, 1, 1], B2])
    dom = domain([-1, -1], [1, 1])
    res = prove_networks(a, b, Spec.make(mode), dom, ProverOptions(timeout=30))
    assert res.verdict is Verdict.PROVED and res.reason.startswith("canonical forms are equal")
    assert "1 unit rescaled" in res.reason or mode == "argmax"
    assert all(bx.reason == res.reason for bx in res.boxes)
    same = prove_networks(a, base(), Spec.make(mode), dom, ProverOptions(timeout=30))
    assert same.verdict is Verdict.PROVED and "the same layers" in same.reason
    c = net([W1, np.array(W2) + [[0.5, 0, 0]]], [B1, B2])
    res = prove_networks(a, c, Spec.make(mode), dom, ProverOptions(timeout=30))
    if mode == "argmax":  # one output: the top class is 0 for every network
        assert res.verdict is Verdict.PROVED and "one output" in res.reason
        return
    assert not res.reason.startswith("canonical")
    if mode == "strict":
        assert res.verdict is Verdict.REFUTED


def test_every_box_of_a_union_must_match():
    w1 = np.array(W1)[[0, 2]]
    b = net([w1, np.array(W2)[:, [0, 2]]], [np.array(B1)[[0, 2]], B2])
    one = Box((Fraction(0), Fraction(0)), (Fraction(1), Fraction(1)))
    two = Box((Fraction(0), Fraction(0)), (Fraction(2), Fraction(2)))
    assert canonical_check(base(), b, Spec(), Domain((one,), "u")).proved
    assert not canonical_check(base(), b, Spec(), Domain((one, two), "u")).proved


def test_a_fixed_input_is_substituted():
    # x1 fixed at 1/2: a unit reading only x1 is the constant relu(x1 - 1/4) = 1/4
    a = net([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 2.0]]], [[0.0, -0.25], [0.0]])
    b = net([[[1.0, 0.0]], [[1.0]]], [[0.0], [0.5]])
    res = canonical_check(a, b, Spec(), domain([0, Fraction(1, 2)], [1, Fraction(1, 2)]))
    assert res.proved and "1 constant unit folded (on a)" in res.reason
    assert not canonical_check(a, b, Spec(), domain([0, 0], [1, 1])).proved


def _through_map(w, b, knots, coefs, alpha=1.0, beta=0.25):
    """The output layer (w, b) followed by y -> alpha (relu(y) - relu(-y)) + sum c relu(y - t)
    + beta on every output (a ReLU layer of 2 + len(knots) units per output)."""
    m = len(b)
    per = 2 + len(knots)
    rows, bias, out = [], [], np.zeros((m, per * m))
    for i in range(m):
        rows += [w[i], -w[i]] + [w[i]] * len(knots)
        bias += [b[i], -b[i]] + [b[i] - t for t in knots]
        out[i, per * i:per * i + per] = [alpha, -alpha] + list(coefs)
    return np.array(rows), np.array(bias), out, np.full(m, beta)


def test_argmax_peels_one_strictly_increasing_map_of_all_outputs():
    w2 = np.array([[1.0, -1.0, 2.0], [0.5, 0.25, -1.0], [-1.0, 0.5, 0.5]])
    b2 = np.array([0.125, 0.0, 0.25])
    a = net([W1, w2], [B1, b2])
    dom = domain([-1, -1], [1, 1])
    rows, bias, out, beta = _through_map(w2, b2, [0.25, 0.5], [0.5, 1.0])
    b = net([W1, rows, out], [B1, bias, beta])
    res = canonical_check(a, b, Spec.make("argmax"), dom)
    assert res.proved and "strictly increasing map" in res.reason, res.reason
    assert not canonical_check(a, b, Spec(), dom).proved
    # a map that decreases after its second knot (slope 1 + 0.5 - 2 < 0) is not peeled
    rows, bias, out, beta = _through_map(w2, b2, [0.25, 0.5], [0.5, -2.0])
    bad = net([W1, rows, out], [B1, bias, beta])
    assert not canonical_check(a, bad, Spec.make("argmax"), dom).proved


def test_float_pre_check_names_a_rounded_copy_and_leaves_rewrites_alone():
    """canon.quick: a copy whose first layer is rounded (every unit without a partner) is
    turned away before the exact build, in every mode; a copy with one extra unit only in
    strict mode (an epsilon form may absorb it); rescaled and permuted units never."""
    from equivcheck.canon.quick import first_layers_differ

    rng = np.random.default_rng(3)
    w1, b1 = rng.normal(size=(8, 5)), rng.normal(0, 0.1, 8)
    w2, b2 = rng.normal(size=(3, 8)), np.zeros(3)
    a = net([w1, w2], [b1, b2])
    box = Box((-1,) * 5, (1,) * 5)
    rounded = net([w1.astype(np.float16).astype(np.float64), w2], [b1, b2])
    for strict in (True, False):
        assert first_layers_differ(a, rounded, box, strict) is not None
    order = rng.permutation(8)
    scale = rng.choice([0.5, 2.0, 4.0], 8)
    moved = net([w1[order] * scale[:, None], w2[:, order] / scale], [b1[order] * scale, b2])
    assert first_layers_differ(a, moved, box, True) is None
    extra = net([np.vstack([w1, rng.normal(size=(1, 5))]), np.hstack([w2, np.ones((3, 1))])],
                [np.append(b1, 0.0), b2])
    assert first_layers_differ(a, extra, box, True) is not None
    assert first_layers_differ(a, extra, box, False) is None


def test_bias_moved_through_a_wide_always_active_unit():
    """An always-active unit of more than FOLD_TERMS inputs stays a unit at first; when the forms
    then differ, canon folds every always-active unit and compares again."""
    from equivcheck.canon.table import FOLD_TERMS

    rng = np.random.default_rng(5)
    n = FOLD_TERMS + 16

    def dyadic(*shape, scale=1.0):  # on a 2^-10 grid: the sums below are exact in float32
        return np.round(rng.normal(0, scale, shape) * 1024) / 1024

    w1, b1 = dyadic(6, n, scale=0.1), dyadic(6, scale=0.1)
    b1[0] = 50.0  # always active on [-1, 1]^n: |w1[0]| . 1 is far below 50
    w2, b2 = dyadic(4, 6), dyadic(4)
    w3, b3 = dyadic(2, 4), np.zeros(2)
    a = net([w1, w2, w3], [b1, b2, b3])
    c = 0.25
    b1m, b2m = b1.copy(), b2 + w2[:, 0] * c  # exact: dyadic c, values far from float64's edge
    b1m[0] -= c
    b = net([w1, w2, w3], [b1m, b2m, b3])
    dom = domain([-1] * n, [1] * n)
    res = canonical_check(a, b, Spec.make("strict"), dom)
    assert res.proved, res.reason
    # and a bias moved by the wrong amount is not proved
    bad = net([w1, w2, w3], [b1m, b2 + w2[:, 0] * (c / 2), b3])
    assert not canonical_check(a, bad, Spec.make("strict"), dom).proved
