"""Layers with no nonzero weight (the zero maps the unit-stability analysis bounds a network
against) are not back-substituted: their forward bounds are already exact. The bounds stay
sound and tight, and the hidden layers' bounds are the ones a full refinement gives."""

from __future__ import annotations

import numpy as np

from equivcheck.core.network import Affine, Layer, Network
from equivcheck.engine import Boxes, PairModel, pair_bounds


def _net(rng, widths, zero_last: bool, bias: float) -> Network:
    layers = []
    for i, (m, n) in enumerate(zip(widths[1:], widths[:-1])):
        last = i == len(widths) - 2
        w = np.zeros((m, n)) if last and zero_last else rng.normal(size=(m, n))
        b = np.full(m, bias) if last else rng.normal(size=m)
        layers.append(Layer(Affine(w, b), not last))
    return Network(tuple(layers))


def test_zero_maps_are_flagged_and_their_bounds_are_exact():
    rng = np.random.default_rng(3)
    head = _net(rng, [3, 8, 8, 1], zero_last=True, bias=0.375)
    zero = _net(rng, [3, 1], zero_last=True, bias=-0.125)
    model = PairModel.build(head, zero)
    assert model.f[-1].zero and model.g[-1].zero and not any(lay.zero for lay in model.f[:-1])
    lo, hi = -np.ones((4, 3)), np.ones((4, 3))
    lo[1:] += rng.uniform(0, 1, (3, 3))
    pb = pair_bounds(model, Boxes(lo, hi, model.width), "all")
    assert np.all(pb.d_lo <= 0.5) and np.all(pb.d_hi >= 0.5)  # f - g = 0.375 + 0.125 exactly
    assert np.all(pb.d_hi - pb.d_lo <= 1e-12)
    # the hidden layers: as refined as with a nonzero last layer (the skip only drops the
    # zero map's own back-substitution)
    full = _net(np.random.default_rng(3), [3, 8, 8, 1], zero_last=False, bias=0.375)
    ref = pair_bounds(PairModel.build(full, zero), Boxes(lo, hi, model.width), "all")
    for k in range(2):
        assert np.array_equal(pb.hist.f_lo[k], ref.hist.f_lo[k])
        assert np.array_equal(pb.hist.f_hi[k], ref.hist.f_hi[k])
    # and they hold at sampled points
    x = lo[0] + rng.uniform(0, 1, (500, 3)) * (hi[0] - lo[0])
    h = x
    for k, lay in enumerate(head.layers[:2]):
        z = h @ lay.weight.T + lay.bias
        assert np.all(z >= pb.hist.f_lo[k][:, 0] - 1e-9) and np.all(z <= pb.hist.f_hi[k][:, 0] + 1e-9)
        h = np.maximum(z, 0.0)
