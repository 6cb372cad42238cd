"""The exact solver encoding of quantized networks (solve/quant_encode.py) and the interval
bounds through quantizers (bounds/quant_interval.py), on networks small enough to check by hand.

Quantizer used throughout unless said otherwise: scale 1/4, zero point 0, int8 [-128, 127], so
Q(x) = round_half_even(4 x) / 4 clipped to [-32, 31.75].
"""

from __future__ import annotations

from fractions import Fraction as F

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from equivcheck.bounds.quant_interval import (
    difference_intervals,
    quantize_interval,
    quantized_interval_bounds,
)
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Box
from equivcheck.core.exact import affine_exact, relu_exact
from equivcheck.core.network import Affine, Layer, Network
from equivcheck.core.options import SearchOutcome
from equivcheck.core.quantized import QuantizedNetwork, Quantizer
from equivcheck.core.spec import Spec
from equivcheck.solve.quant_encode import TOO_LARGE, decide_quantized
from tests.helpers import net

PROVED, REFUTED, UNKNOWN = SearchOutcome.PROVED, SearchOutcome.REFUTED, SearchOutcome.UNKNOWN
BUG = "does not check exactly"


def q8(n: int, scale=F(1, 4), zp: int = 0, name: str = "") -> Quantizer:
    return Quantizer.uniform(n, scale, zp, -128, 127, name)


def box(lo, hi) -> Box:
    return Box(tuple(F(v) for v in lo), tuple(F(v) for v in hi))


def decide(a, b, spec: Spec, bx: Box, seconds: float = 20.0):
    dec = decide_quantized(a, b, spec, bx, Deadline.start(seconds))
    assert BUG not in dec.reason, dec.reason  # a model that fails the exact check is a bug
    if dec.status is REFUTED:  # confirmed again here, independently of the module
        assert bx.contains(dec.point)
        assert not spec.holds(a.evaluate_exact(dec.point), b.evaluate_exact(dec.point))
    return dec


IDENTITY = net([[1.0]], [0.0])  # f(x) = x


def quantized_identity(scale=F(1, 4)) -> QuantizedNetwork:
    """g(x) = Q(x): the identity with its input quantized."""
    return QuantizedNetwork(IDENTITY, (None,), input_quant=q8(1, scale))


def eps(v) -> Spec:
    return Spec.make("epsilon", F(v))


# -- rounding ----------------------------------------------------------------------------------
def test_rounding_error_is_at_most_an_eighth():
    g = quantized_identity()
    assert decide(IDENTITY, g, eps(F(1, 8)), box([0], [1])).status is PROVED


def test_rounding_error_above_012_is_found_and_exact():
    g = quantized_identity()
    dec = decide(IDENTITY, g, eps("0.12"), box([0], [1]))
    assert dec.status is REFUTED
    (x,) = dec.point
    assert abs(x - g.evaluate_exact([x])[0]) > F(12, 100)  # within 1/8 of a tie: 4x - 1/2 is near an integer
    assert abs(x * 4 - round(x * 4)) > F(12, 25)


def test_strict_is_refuted_off_the_grid():
    dec = decide(IDENTITY, quantized_identity(), Spec.make("strict"), box([0], [1]))
    assert dec.status is REFUTED
    assert dec.point[0] * 4 != round(dec.point[0] * 4)


def test_ties_round_half_to_even():
    """Q(3/8) = Q(5/8) = 1/2 (1.5 and 2.5 round to 2), so Q is the constant 1/2 on the closed
    [3/8, 5/8] (rounding ties up or down would give 1/4 at 3/8 or 3/4 at 5/8); just below 3/8
    it is 1/4."""
    half = net([[0.0]], [0.5])
    g = quantized_identity()
    for x in (F(3, 8), F(5, 8)):
        assert decide(half, g, Spec.make("strict"), box([x], [x])).status is PROVED
    assert decide(half, g, Spec.make("strict"), box([F(3, 8)], [F(5, 8)])).status is PROVED
    dec = decide(half, g, Spec.make("strict"), box([F(3, 8) - F(1, 1000)], [F(5, 8)]))
    assert dec.status is REFUTED and dec.point[0] < F(3, 8)


def test_ties_inside_the_box_round_half_to_even():
    """The same ties where the encoding (not the bounds) must get them right: on [0, 1],
    (x, 3/8) and (Q(x), 3/8) pick class 0 on the same inputs (x >= 3/8: Q(3/8) = 1/2 > 3/8),
    and (5/8, x) and (5/8, Q(x)) pick class 1 on the same inputs (x > 5/8: Q(5/8) = 1/2).
    Rounding 3/8 down or 5/8 up would each give a counterexample."""
    argmax = Spec.make("argmax")
    for w, b in (([[1.0], [0.0]], [0.0, 0.375]), ([[0.0], [1.0]], [0.625, 0.0])):
        f = net([w], [b])
        g = QuantizedNetwork(f, (None,), input_quant=q8(1))
        dec = decide(f, g, argmax, box([0], [1]))
        assert dec.status is PROVED and "solver" in dec.reason


def test_clipping_at_the_highest_level():
    """On [0, 40] Q saturates at 127/4 = 31.75: the error at 40 is 8.25."""
    g = quantized_identity()
    bx = box([0], [40])
    assert decide(IDENTITY, g, eps("8.25"), bx).status is PROVED
    dec = decide(IDENTITY, g, eps(F(33, 4) - F(1, 1024)), bx)
    assert dec.status is REFUTED
    assert dec.point[0] > 40 - F(1, 1024)
    assert g.evaluate_exact(dec.point) == [F(127, 4)]


def test_zero_point_and_lowest_level():
    """uint8 with zero point 128 and scale 1/2: Q ranges over [-64, 63.5]; on [-70, 0] the
    error is 6 at -70 (clipped to -64)."""
    g = QuantizedNetwork(IDENTITY, (None,), input_quant=Quantizer.uniform(1, F(1, 2), 128, 0, 255))
    bx = box([-70], [0])
    assert decide(IDENTITY, g, eps(6), bx).status is PROVED
    dec = decide(IDENTITY, g, eps(F(6) - F(1, 64)), bx)
    assert dec.status is REFUTED and dec.point[0] < -64


# -- deeper networks ------------------------------------------------------------------------------
def test_requantizing_on_the_grid_changes_nothing():
    """h = relu((2 Q(x) - 1/2, 1 - Q(x))) lies on the 1/4 grid, so quantizing it again is the identity."""
    base = net([[[2.0], [-1.0]]], [[-0.5, 1.0]], relu_last=True)
    two = Network(base.layers + (Layer(Affine(np.array([[1.0, 3.0]]), np.array([0.25])), False, "out"),))
    f = QuantizedNetwork(two, (None, None), input_quant=q8(1))
    g = QuantizedNetwork(two, (q8(2), None), input_quant=q8(1))
    dec = decide(f, g, Spec.make("strict"), box([-3], [3]))
    assert dec.status is PROVED
    assert "solver" in dec.reason  # g's extra quantizer is encoded, not shared away
    # with a grid of 1/2 instead, the quantized hidden units differ (2 Q(x) - 1/2 at x = 1/4)
    h = QuantizedNetwork(two, (q8(2, F(1, 2)), None), input_quant=q8(1))
    assert decide(f, h, Spec.make("strict"), box([-3], [3])).status is REFUTED


def test_identical_quantized_networks_share_everything():
    f = QuantizedNetwork(net([[[1.0, -2.0], [0.5, 1.0]]], [[0.1, 0.0]]), (q8(2),), input_quant=q8(2))
    dec = decide(f, f, Spec.make("strict"), box([-1, -1], [1, 1]))
    assert dec.status is PROVED and "no search needed" in dec.reason


def test_argmax_against_the_quantized_copy():
    """f = (x, 5/16), g = (Q(x), 5/16). f picks class 0 iff x >= 5/16 (ties pick the lower
    index); g iff Q(x) >= 5/16, i.e. x >= 3/8 (Q(3/8) = 1/2). They differ exactly on [5/16, 3/8)."""
    f = net([[[1.0], [0.0]]], [[0.0, 0.3125]])
    g = QuantizedNetwork(f, (None,), input_quant=q8(1))
    argmax = Spec.make("argmax")
    assert decide(f, g, argmax, box([0.4], [1])).status is PROVED
    assert decide(f, g, argmax, box([0], [0.3])).status is PROVED
    dec = decide(f, g, argmax, box([0], [1]))
    assert dec.status is REFUTED
    assert F(5, 16) <= dec.point[0] < F(3, 8)
    assert decide(f, g, argmax, box([F(3, 8)], [1])).status is PROVED  # the tie goes to class 0


def test_output_quantizer_against_float():
    """A quantized output layer against the float one: the output error is at most s/2."""
    f = net([[[1.0, 1.0], [1.0, -1.0]]], [[0.0, 0.0]])
    g = QuantizedNetwork(f, (q8(2, F(1, 8)),))
    bx = box([-1, -1], [1, 1])
    assert decide(f, g, eps(F(1, 16)), bx).status is PROVED
    assert decide(f, g, eps(F(1, 17)), bx).status is REFUTED


def test_too_large_is_refused_at_once():
    rng = np.random.default_rng(0)
    big = net([rng.normal(size=(700, 2)), rng.normal(size=(1, 700))], [np.zeros(700), [0.0]])
    g = QuantizedNetwork(big, (q8(700, F(1, 1024)), None))
    dec = decide_quantized(big, g, eps("0.001"), box([-1, -1], [1, 1]), Deadline.start(10))
    assert dec.status is UNKNOWN and TOO_LARGE in dec.reason


# -- soundness of the bounds through quantizers ---------------------------------------------------
def _pre_activations_exact(qn: QuantizedNetwork, x) -> list[np.ndarray]:
    h = np.empty(len(x), dtype=object)
    h[:] = [F(v) for v in x]
    if qn.input_quant is not None:
        h = qn.input_quant.apply_exact(h)
    out = []
    for layer, q in zip(qn.network.layers, qn.quant):
        z = affine_exact(layer.affine, h)
        out.append(z)
        h = relu_exact(z) if layer.relu else z
        if q is not None:
            h = q.apply_exact(h)
    return out


def _random_quantized(rng, widths, quantize_input=True) -> QuantizedNetwork:
    ws = [rng.normal(size=(m, n)) for n, m in zip(widths, widths[1:])]
    bs = [rng.normal(size=m) * 0.3 for m in widths[1:]]
    base = net(ws, bs)
    quant = tuple(
        Quantizer(np.array([F(float(np.float32(rng.uniform(0.02, 0.5)))) for _ in range(m)], dtype=object),
                  rng.integers(-3, 4, size=m), -8, 7) if rng.random() < 0.8 else None
        for m in widths[1:])
    in_q = q8(widths[0], F(1, 8)) if quantize_input else None
    if in_q is None and all(q is None for q in quant):
        in_q = q8(widths[0], F(1, 8))
    return QuantizedNetwork(base, quant, input_quant=in_q)


def test_quantize_interval_is_exact_at_ties():
    q = Quantizer.uniform(3, F(1, 4), 0, -128, 127)
    lo, hi = quantize_interval(q, np.array([0.375, 0.625, -0.125]), np.array([0.375, 0.625, 100.0]))
    assert list(lo) == [0.5, 0.5, 0.0] and list(hi) == [0.5, 0.5, 31.75]


def _points(rng, lo, hi, n: int = 40) -> list:
    """Random points of the box, points on ties of the 1/8 input grid, and the corners."""
    pts = [rng.uniform(lo, hi) for _ in range(n)]
    pts += [np.array([(round(v * 8) + 0.5) / 8 for v in p]).clip(lo, hi) for p in pts[: n // 2]]
    return [[F(float(v)) for v in p] for p in pts + [lo, hi]]


def _values_exact(net, x) -> list[np.ndarray]:
    """Each layer's exact values after its ReLU and quantizer."""
    plain = net.network if isinstance(net, QuantizedNetwork) else net
    quant = net.quant if isinstance(net, QuantizedNetwork) else (None,) * len(plain.layers)
    h = np.empty(len(x), dtype=object)
    h[:] = x
    if isinstance(net, QuantizedNetwork) and net.input_quant is not None:
        h = net.input_quant.apply_exact(h)
    out = []
    for layer, q in zip(plain.layers, quant):
        h = affine_exact(layer.affine, h)
        h = relu_exact(h) if layer.relu else h
        h = q.apply_exact(h) if q is not None else h
        out.append(h)
    return out


@pytest.mark.parametrize("symbolic", [False, True])
def test_bounds_enclose_exact_values_at_random_points_and_ties(symbolic):
    rng = np.random.default_rng(7)
    for _ in range(20):
        qn = _random_quantized(rng, [2, 4, 3, 2])
        if rng.random() < 0.5:  # runs of unquantized layers, where symbolic bounds work
            qn = QuantizedNetwork(qn.network, (None,) + qn.quant[1:], q8(2, F(1, 8)))
        lo, hi = np.array([-1.0, -0.5]), np.array([1.0, 0.75])
        bounds = quantized_interval_bounds(qn, lo, hi, symbolic=symbolic)
        for p in _points(rng, lo, hi):
            for z, b in zip(_pre_activations_exact(qn, p), bounds):
                assert all(F(float(b.lower[i])) <= z[i] <= F(float(b.upper[i])) for i in range(len(z)))


def test_difference_bounds_enclose_exact_differences():
    """The per-layer bounds of h_a - h_b (a float network and its quantized copy, or two
    quantizations of one network) hold at random points, grid ties and corners, clips included."""
    rng = np.random.default_rng(11)
    checked = 0
    for k in range(30):
        b = _random_quantized(rng, [2, 4, 3, 2], quantize_input=k % 2 == 0)
        a = b.network if k % 3 else QuantizedNetwork(b.network, tuple(
            None if q is None else Quantizer(q.scale * 2, q.zero_point, q.qmin, q.qmax) for q in b.quant),
            q8(2, F(1, 4)))
        lo, hi = np.array([-1.0, -0.5]), np.array([1.0, 0.75])
        ba, bb = quantized_interval_bounds(a, lo, hi), quantized_interval_bounds(b, lo, hi)
        diff = difference_intervals(a, b, lo, hi, ba, bb)
        assert diff is not None and len(diff) == 3
        for p in _points(rng, lo, hi, 30):
            for ha, hb, (d_lo, d_hi) in zip(_values_exact(a, p), _values_exact(b, p), diff):
                for i in range(len(ha)):
                    assert F(float(d_lo[i])) <= ha[i] - hb[i] <= F(float(d_hi[i]))
                    checked += 1
    assert checked > 10_000
    # a ReLU can close a difference bounded away from 0: on [0.13, 0.2], Q(x) = 1/4, so
    # z_a - z_b = Q(x) - x lies in [0.05, 0.12], but relu(0.2 - x) - relu(-0.05) is 0 at x = 0.2
    f = net([[-1.0]], [0.2], relu_last=True)
    g = QuantizedNetwork(f, (None,), q8(1))
    lo, hi = np.array([0.13]), np.array([0.2])
    (d_lo, d_hi), = difference_intervals(f, g, lo, hi, quantized_interval_bounds(f, lo, hi),
                                         quantized_interval_bounds(g, lo, hi))
    assert d_lo[0] <= 0 <= d_hi[0] and d_hi[0] >= float(F(7, 100))
    other = _random_quantized(rng, [2, 4, 3, 2])
    lo, hi = np.array([-1.0, -0.5]), np.array([1.0, 0.75])
    assert difference_intervals(other, b, lo, hi, ba, bb) is None  # different weights


# -- random tiny pairs against exact sampling --------------------------------------------------------
def _violations(a, b, spec: Spec, bx: Box, rng, n: int = 150) -> list:
    lo, hi = [float(v) for v in bx.lower], [float(v) for v in bx.upper]
    pts = [[F(float(np.float32(rng.uniform(a, b)))) for a, b in zip(lo, hi)] for _ in range(n)]
    pts += [[F(round(float(v) * 8)) / 8 + F(1, 16) for v in p] for p in pts[: n // 3]]  # input ties
    pts = [p for p in pts if bx.contains(p)]
    return [p for p in pts if not spec.holds(a.evaluate_exact(p), b.evaluate_exact(p))]


def _requantized(qn: QuantizedNetwork) -> QuantizedNetwork:
    """``qn`` with one more layer: the identity, quantized as ``qn``'s output is (the same
    function, since Q(Q(v)) = Q(v); with an unquantized output, it is quantized to 1/8)."""
    n = qn.out_dim
    last = qn.quant[-1] or q8(n, F(1, 8))
    eye = Layer(Affine(np.eye(n), np.zeros(n)), False, "again")
    return QuantizedNetwork(Network(qn.network.layers + (eye,)), qn.quant + (last,), qn.input_quant)


def _sampled_error(a, b, bx: Box, rng, n: int = 60) -> F:
    pts = [[F(float(rng.uniform(float(lo), float(hi)))) for lo, hi in zip(bx.lower, bx.upper)]
           for _ in range(n)]
    return max(max(abs(p - q) for p, q in zip(a.evaluate_exact(x), b.evaluate_exact(x))) for x in pts)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1), dims=st.tuples(st.integers(1, 3), st.integers(1, 4),
                                                       st.integers(1, 3)),
       mode=st.sampled_from(["strict", "epsilon", "argmax"]), against_float=st.booleans())
def test_random_pairs_agree_with_exact_sampling(seed, dims, mode, against_float):
    """PROVED pairs show no violation at sampled points (ties of the input grid included);
    REFUTED points violate exactly (checked by :func:`decide`). Strict pairs are a quantized
    net against itself re-quantized (the same function) or against its float network; epsilon
    tolerances lie near the sampled largest error, so both verdicts occur."""
    rng = np.random.default_rng(seed)
    n_in, width, n_out = dims
    if mode == "argmax" and n_out == 1:
        n_out = 2
    b = _random_quantized(rng, [n_in, width, n_out], quantize_input=rng.random() < 0.5)
    bx = box([-1] * n_in, [1] * n_in)
    if mode == "strict":
        a = b.network if against_float else _requantized(b)
        spec = Spec.make("strict")
    else:
        a = b.network if against_float else _random_quantized(rng, [n_in, width, n_out])
        tol = _sampled_error(a, b, bx, rng) * F(float(np.float32(rng.uniform(0.9, 1.5))))
        spec = Spec.make("epsilon", tol) if mode == "epsilon" else Spec.make("argmax")
    dec = decide(a, b, spec, bx)
    if dec.status is UNKNOWN:  # only ever for time (under load: z3 on 8 unstable ReLUs took 20 s)
        assert dec.reason.startswith("timeout"), dec.reason
        return
    if dec.status is PROVED:
        assert _violations(a, b, spec, bx, rng) == []
