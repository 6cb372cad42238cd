"""Quantized networks in the core and the prover's quantized path: exact rounding, the
enclosure the engine proves with, and verdicts a reader can check by hand.

The enclosure's promise (bounds.enclosure): for every input x, the quantized network's exact
output equals the enclosure's at (x, e*) with e* the network's own rounding errors, which lie in
the noise box. The tests compute e* by exact evaluation and check the promise to the last bit.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from equivcheck.bounds.enclosure import enclose_pair
from equivcheck.core.domain import box_domain
from equivcheck.core.exact import affine_exact, relu_exact
from equivcheck.core.network import Affine, Layer, Network
from equivcheck.core.options import ProverOptions
from equivcheck.core.quantized import QuantizedNetwork, Quantizer
from equivcheck.core.result import Verdict
from equivcheck.core.spec import Spec
from equivcheck.errors import ModelValueError, ShapeMismatchError
from equivcheck.solve.prover import prove_networks
from tests.helpers import net, random_weights

F = Fraction


def q(n, scale, zp=0, qmin=-128, qmax=127) -> Quantizer:
    return Quantizer.uniform(n, F(scale), zp, qmin, qmax)


def identity_net(n: int = 1) -> Network:
    return Network((Layer(Affine(np.eye(n), np.zeros(n)), False, "id"),), source="id")


def rounding_errors(g: QuantizedNetwork, x) -> list[Fraction]:
    """The unclipped rounding errors s*round(v/s) - v of every quantizer along g's exact run."""
    errors = []
    h = np.array([F(v) for v in x], dtype=object)

    def step(quant, h):
        errors.extend(s * round(v / s) - v for v, s in zip(h, quant.scale))
        return quant.apply_exact(h)

    if g.input_quant is not None:
        h = step(g.input_quant, h)
    for layer, quant in zip(g.network.layers, g.quant):
        h = affine_exact(layer.affine, h)
        if layer.relu:
            h = relu_exact(h)
        if quant is not None:
            h = step(quant, h)
    return errors


# ---- the rounding itself ----------------------------------------------------------------------


def test_quantizer_rounds_half_to_even_and_clips_exactly():
    quant = q(6, F(1, 4), zp=2, qmin=0, qmax=10)  # grid step 1/4, values from -1/2 to 2
    x = [F(1, 8), F(3, 8), F(-3, 8), F(5, 8), F(100), F(-100)]
    # 1/8 / (1/4) = 1/2 -> 0 (even); 3/8 -> 3/2 -> 2; -3/8 -> -3/2 -> -2; 5/8 -> 5/2 -> 2
    assert list(quant.apply_exact(x)) == [0, F(1, 2), F(-1, 2), F(1, 2), 2, F(-1, 2)]
    assert quant.levels_exact(x) == [2, 4, 0, 4, 10, 0]
    floats = quant.apply_float(np.array([float(v) for v in x]))
    assert list(floats) == [float(v) for v in quant.apply_exact(x)]


@pytest.mark.parametrize("kwargs, error", [
    (dict(scale=[F(0)], zero_point=[0], qmin=0, qmax=255), ModelValueError),
    (dict(scale=[F(1)], zero_point=[300], qmin=0, qmax=255), ModelValueError),
    (dict(scale=[F(1)], zero_point=[0], qmin=5, qmax=1), ModelValueError),
    (dict(scale=[F(1), F(1)], zero_point=[0], qmin=0, qmax=255), ShapeMismatchError),
])
def test_bad_quantizers_are_refused(kwargs, error):
    with pytest.raises(error):
        Quantizer(**kwargs)


def test_quantized_network_is_not_a_network():
    g = QuantizedNetwork(identity_net(), (q(1, 0.25),))
    assert not isinstance(g, Network) and not hasattr(g, "layers")
    with pytest.raises(ShapeMismatchError):
        QuantizedNetwork(identity_net(), (None,))  # no quantizer at all
    with pytest.raises(ShapeMismatchError):
        QuantizedNetwork(identity_net(), (q(2, 0.25),))


# ---- the enclosure ------------------------------------------------------------------------------


def small_quantized(rng, widths, ranges):
    """A random float net and a copy with the input and every layer quantized on small
    integer ranges (so that clipping binds on the box)."""
    w, b = random_weights(rng, widths)
    f = net(w, b)
    quants = tuple(q(n, F(1, 2 ** int(rng.integers(1, 4))), zp, lo, hi)
                   for n, (zp, lo, hi) in zip(widths[1:], ranges[1:]))
    zp, lo, hi = ranges[0]
    return f, QuantizedNetwork(f, quants, q(widths[0], F(1, 8), zp, lo, hi))


@pytest.mark.parametrize("sparse", [False, True])
def test_enclosure_reproduces_the_quantized_network_at_its_own_rounding_errors(sparse):
    rng = np.random.default_rng(3)
    f, g = small_quantized(rng, [3, 6, 5, 2], [(2, 0, 15), (0, 0, 9), (-3, -10, 7), (0, -3, 3)])
    if sparse:
        layers = tuple(Layer(Affine(sp.csr_array(la.weight), la.bias), la.relu, la.name)
                       for la in f.layers)
        f = Network(layers, source="sparse")
        g = QuantizedNetwork(f, g.quant, g.input_quant)
    lo, hi = np.full(3, -1.0), np.full(3, 2.0)
    pair = enclose_pair(f, g, lo, hi)
    assert pair.noise == 3 + 6 + 5 + 2 and pair.clip_units > 0  # the clips bind on this box
    for x in rng.uniform(-1, 2, (150, 3)):
        xs = [F(v) for v in x]
        e = rounding_errors(g, xs)
        assert all(abs(err) <= h for err, h in zip(e, pair.noise_half))
        assert pair.b.evaluate_exact(xs + e) == g.evaluate_exact(xs)
        assert pair.a.evaluate_exact(xs + e) == f.evaluate_exact(xs)


def test_clip_sides_that_cannot_bind_add_no_units():
    g = QuantizedNetwork(identity_net(2), (q(2, F(1, 4)),))  # range [-32, 31.75]
    pair = enclose_pair(identity_net(2), g, np.zeros(2), np.ones(2))
    assert pair.clip_units == 0 and len(pair.b.layers) == 2  # the layer, then noise added linearly
    pair = enclose_pair(identity_net(2), g, np.full(2, -40.0), np.full(2, 40.0))
    assert pair.clip_units == 4


# ---- verdicts by hand -----------------------------------------------------------------------------


def check(a, b, mode, tol=None, lo=0, hi=1, timeout=30):
    spec = Spec.make(mode, tol, "linf", None, False)
    return prove_networks(a, b, spec, box_domain([lo] * a.in_dim, [hi] * a.in_dim),
                          ProverOptions(timeout=timeout))


def test_rounding_to_quarters_moves_a_value_by_at_most_an_eighth():
    f = identity_net()
    g = QuantizedNetwork(f, (q(1, F(1, 4)),))
    assert check(f, g, "epsilon", "0.125").verdict is Verdict.PROVED  # the tie 1/8 -> 0: exactly 1/8
    r = check(f, g, "epsilon", "0.12")
    assert r.verdict is Verdict.REFUTED
    x = F(r.counterexample.input[0])
    assert abs(x - g.evaluate_exact([x])[0]) > F(12, 100)
    assert r.counterexample.float64.violated  # (no onnxruntime: these nets are not ONNX files)
    assert check(f, g, "strict").verdict is Verdict.REFUTED


def test_clipping_is_exact_and_counted():
    f = identity_net()
    g = QuantizedNetwork(f, (q(1, F(1, 4), zp=0, qmin=-128, qmax=127),))  # top value 31.75
    # on [0, 40] the largest error is at 40: 40 - 31.75 = 8.25
    assert check(f, g, "epsilon", "8.25", 0, 40).verdict is Verdict.PROVED
    r = check(f, g, "epsilon", "8.2", 0, 40)
    assert r.verdict is Verdict.REFUTED and r.counterexample.input[0] > 31.75 + 8.2


def test_the_same_quantized_network_twice_is_proved_at_once():
    rng = np.random.default_rng(5)
    _, g = small_quantized(rng, [2, 4, 2], [(0, 0, 255), (0, 0, 255), (0, -128, 127)])
    g2 = QuantizedNetwork(g.network, g.quant, g.input_quant)
    r = check(g, g2, "strict")
    assert r.verdict is Verdict.PROVED and "same quantizers" in r.reason
    other = QuantizedNetwork(g.network, g.quant, q(2, F(1, 16)))  # a finer input grid
    assert check(g, other, "strict", timeout=10).verdict is not Verdict.PROVED


def test_argmax_flips_where_rounding_moves_the_top_class():
    # f = (x, 0.3): class 0 wins when x > 0.3; g rounds x to quarters first: wins when x > 0.375
    f = Network((Layer(Affine(np.array([[1.0], [0.0]]), np.array([0.0, 0.3])), False),), source="f")
    g = QuantizedNetwork(f, (None,), q(1, F(1, 4)))
    assert check(f, g, "argmax", lo=0.5, hi=1).verdict is Verdict.PROVED
    r = check(f, g, "argmax", lo=0, hi=1)
    assert r.verdict is Verdict.REFUTED
    assert 0.3 < r.counterexample.input[0] <= 0.375


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["0.05", "0.3", "1"]))
def test_proved_pairs_have_no_violating_sample(seed, eps):
    rng = np.random.default_rng(seed)
    f, g = small_quantized(rng, [2, 3, 2], [(0, 0, 31), (0, 0, 31), (0, -16, 15)])
    r = check(f, g, "epsilon", eps, timeout=8)
    if r.verdict is Verdict.PROVED:
        tol = F(eps)
        for x in rng.uniform(0, 1, (300, 2)):
            xs = [F(v) for v in x]
            ya, yb = f.evaluate_exact(xs), g.evaluate_exact(xs)
            assert max(abs(u - v) for u, v in zip(ya, yb)) <= tol
    elif r.verdict is Verdict.REFUTED:
        assert r.counterexample.exact.violated


# ---- the interval-bias enclosure the engine proves with ---------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.booleans(), st.booleans())
def test_engine_bounds_with_interval_biases_enclose_the_quantized_network(seed, sparse, wide):
    """On boxes where the clips bind (narrow integer ranges; with ``wide``, the input
    quantizer's too), the engine's bounds of the interval-bias enclosure hold every exact output
    of the quantized network."""
    from equivcheck.bounds.bias_enclosure import bias_enclosure
    from equivcheck.core.domain import Box
    from equivcheck.engine import Boxes, PairModel, pair_bounds

    rng = np.random.default_rng(seed)
    ranges = [(1, 0, 15), (0, 0, 6), (-2, -5, 4), (0, -3, 3)]
    f, g = small_quantized(rng, [2, 4, 3, 2], ranges)
    if sparse:
        layers = tuple(Layer(Affine(sp.csr_array(la.weight), la.bias), la.relu, la.name)
                       for la in f.layers)
        f = Network(layers, source="sparse")
        g = QuantizedNetwork(f, g.quant, g.input_quant)
    a, z = (F(-1, 2), F(5, 2)) if wide else (F(-1, 8), F(3, 2))  # the input grid: [-1/8, 14/8]
    box = Box((a, a), (z, z))
    enc = bias_enclosure(f, g, box)
    assert enc is not None and enc.rounded_layers == 4
    model = PairModel.build(enc.f, enc.g, enc.radius, enc.rounding)
    assert model.same_shape
    lo, hi = box.lower_float(), box.upper_float()
    pb = pair_bounds(model, Boxes(lo[None], hi[None], model.width), "all", None, True, True)
    g_lo, g_hi = pb.hist.g_lo[-1][:, 0], pb.hist.g_hi[-1][:, 0]
    f_lo, f_hi = pb.hist.f_lo[-1][:, 0], pb.hist.f_hi[-1][:, 0]
    for x in rng.uniform(float(a), float(z), (200, 2)):
        xs = [F(v) for v in x]
        yg = np.array([float(v) for v in g.evaluate_exact(xs)])
        yf = np.array([float(v) for v in f.evaluate_exact(xs)])
        assert np.all(g_lo <= yg) and np.all(yg <= g_hi)
        assert np.all(f_lo <= yf) and np.all(yf <= f_hi)
    # tiny boxes: the rounding is nearly fixed there, and the bounds nearly exact
    for x in rng.uniform(float(a), float(z) - 1e-6, (30, 2)):
        pb = pair_bounds(model, Boxes(x[None], (x + 1e-6)[None], model.width), "all", None, True, True)
        for pt in (x, x + 1e-6, x + 5e-7):
            xs = [F(v) for v in pt]
            yg = np.array([float(v) for v in g.evaluate_exact(xs)])
            assert np.all(pb.hist.g_lo[-1][:, 0] <= yg) and np.all(yg <= pb.hist.g_hi[-1][:, 0])
            d = np.array([float(u - v) for u, v in zip(f.evaluate_exact(xs), g.evaluate_exact(xs))])
            assert np.all(pb.hist.dz_lo[-1][:, 0] <= d) and np.all(d <= pb.hist.dz_hi[-1][:, 0])
    # the float network's enclosure is itself: it evaluates to f exactly
    for x in rng.uniform(float(a), float(z), (20, 2)):
        xs = [F(v) for v in x]
        assert enc.f.evaluate_exact(xs) == f.evaluate_exact(xs)


def test_pairs_of_different_shapes_are_enclosed_each_on_its_own():
    """The rounded copy has one more layer (a quantized identity map that clips): no shared
    shape, two streams, and the bounds still hold every exact output."""
    from equivcheck.bounds.bias_enclosure import bias_enclosure
    from equivcheck.core.domain import Box
    from equivcheck.engine import Boxes, PairModel, pair_bounds

    rng = np.random.default_rng(11)
    f, g = small_quantized(rng, [2, 4, 3, 2], [(1, 0, 15), (0, 0, 6), (-2, -5, 4), (0, -3, 3)])
    extra = Layer(Affine(np.eye(2), np.zeros(2)), False, "copy")
    longer = QuantizedNetwork(f.with_layers(list(f.layers) + [extra]), g.quant + (q(2, F(1, 4), 0, -2, 2),),
                              g.input_quant)
    box = Box((F(-1, 2), F(-1, 2)), (F(5, 2), F(5, 2)))
    enc = bias_enclosure(f, longer, box)
    model = PairModel.build(enc.f, enc.g, enc.radius, enc.rounding)
    assert not model.same_shape and enc.clip_units > 0
    lo, hi = box.lower_float(), box.upper_float()
    pb = pair_bounds(model, Boxes(lo[None], hi[None], model.width), "all", None, True, True)
    for x in rng.uniform(-0.5, 2.5, (200, 2)):
        y = np.array([float(v) for v in longer.evaluate_exact([F(v) for v in x])])
        assert np.all(pb.hist.g_lo[-1][:, 0] <= y) and np.all(y <= pb.hist.g_hi[-1][:, 0])
