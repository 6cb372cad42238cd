"""solve.padding: a smaller copy laid out in its original's shape computes exactly the copy's
function, and the prover uses it to decide a model against its compressed copy whose file rounds
the kept weights (the case of VNN-COMP's resnet_2b: UNKNOWN after 60 s before, PROVED in 8 s)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import equivcheck
from equivcheck.core.exact import pre_activations_exact
from equivcheck.core.network import Affine, Layer, Network
from equivcheck.solve.padding import pad_to


def _original(rng, dead: int) -> Network:
    """A 4-12-12-2 net of float64 thirds whose first ``dead`` units of each hidden layer are
    dead on [0, 1]^4 (bias -40, weights below 1 in size)."""
    layers = []
    dims = [4, 12, 12, 2]
    for k in range(3):
        w = rng.uniform(-1, 1, size=(dims[k + 1], dims[k])) / 3.0
        b = rng.normal(size=dims[k + 1]) / 3.0
        if k < 2:
            b[:dead] = -40.0
        layers.append(Layer(Affine(w, b), k < 2, f"l{k}"))
    return Network(tuple(layers), input_shape=(1, 4), output_shape=(1, 2))


def _copy(a: Network, drop: int, perm_seed: int | None = None) -> Network:
    """``a`` without the first ``drop`` units of each hidden layer, the kept weights rounded to
    float32, the kept units of each hidden layer permuted when ``perm_seed`` is given."""
    rng = np.random.default_rng(perm_seed)
    keep_prev = np.arange(a.in_dim)
    layers = []
    for k, lay in enumerate(a.layers):
        rows = np.arange(lay.out_dim) if k == len(a.layers) - 1 else np.arange(drop, lay.out_dim)
        if perm_seed is not None and k < len(a.layers) - 1:
            rows = rng.permutation(rows)
        w = lay.weight[np.ix_(rows, keep_prev)].astype(np.float32).astype(np.float64)
        b = lay.bias[rows].astype(np.float32).astype(np.float64)
        layers.append(Layer(Affine(w, b), lay.relu, lay.name))
        keep_prev = rows
    return Network(tuple(layers), input_shape=(1, 4), output_shape=(1, 2))


@pytest.mark.parametrize("perm_seed", [None, 3])
def test_the_padded_copy_computes_the_copy_exactly_and_sits_where_its_units_were(perm_seed):
    rng = np.random.default_rng(1)
    a = _original(rng, dead=3)
    b = _copy(a, drop=3, perm_seed=perm_seed)
    p = pad_to(a, b)
    assert p is not None
    assert [lay.weight.shape for lay in p.layers] == [lay.weight.shape for lay in a.layers]
    for k in range(2):  # each kept unit sits at its own place, the others are zero units
        assert np.all(p.layers[k].bias[:3] == 0) and not np.any(p.layers[k].weight[:3])
        assert np.array_equal(p.layers[k].bias[3:], a.layers[k].bias[3:].astype(np.float32))
    for x in rng.uniform(0, 1, size=(10, 4)):
        q = [Fraction(float(v)) for v in x]
        assert pre_activations_exact(p.layers, q)[-1].tolist() == pre_activations_exact(b.layers, q)[-1].tolist()


def test_no_padding_for_a_copy_that_is_not_a_smaller_copy():
    rng = np.random.default_rng(2)
    a = _original(rng, dead=3)
    assert pad_to(a, a.with_layers(a.layers[:-1] + (a.layers[-1],))) is not None  # same shape
    changed = _copy(a, drop=3)
    w = changed.layers[0].weight.copy()
    w[0, 0] += 0.25  # a unit of b no unit of a rounds to
    changed = changed.with_layers((Layer(Affine(w, changed.layers[0].bias), True, "l0"),)
                                  + changed.layers[1:])
    assert pad_to(a, changed) is None
    assert pad_to(_copy(a, drop=3), a) is None  # b larger than a
    shallow = Network(a.layers[1:], input_shape=(1, 12), output_shape=(1, 2))
    assert pad_to(a, shallow) is None


def test_prove_decides_a_rounded_compressed_copy_with_the_padded_pair():
    rng = np.random.default_rng(4)
    a = _original(rng, dead=3)
    b = _copy(a, drop=3, perm_seed=5)
    res = equivcheck.prove(a, b, domain="0:1", mode="epsilon", tolerance="1e-5", timeout=60)
    assert res.verdict is equivcheck.Verdict.PROVED, res.reason
    assert "padded" in res.reason
    # a removed unit that is alive on the domain: no proof, the difference is found
    alive = _original(np.random.default_rng(4), dead=3)
    lay = alive.layers[0]
    bias = lay.bias.copy()
    bias[0] = 5.0  # unit 0 of the first layer now fires on the whole box
    alive = alive.with_layers((Layer(Affine(lay.weight, bias), True, "l0"),) + alive.layers[1:])
    res = equivcheck.prove(alive, b, domain="0:1", mode="epsilon", tolerance="1e-5", timeout=60)
    assert res.verdict is equivcheck.Verdict.REFUTED, res.reason
