"""`prove` of a quantized model against its copy with dead units removed (what `compress` writes):
recognised structurally (:mod:`equivcheck.solve.quant_units`), and only when it is true."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from equivcheck.compress.quantized import compress_quantized
from equivcheck.core.domain import box_domain
from equivcheck.core.network import Affine, Layer, Network
from equivcheck.core.options import ProverOptions
from equivcheck.core.quantized import DynamicQuantizer, QuantizedNetwork, Quantizer
from equivcheck.core.spec import Spec
from equivcheck.io.domains import parse_domain
from equivcheck.io.onnx_import import load_network
from equivcheck.solve.prover import prove_networks
from equivcheck.solve.quant_units import same_quantized_units

from .helpers import REPO
from .quant_models import quantize

MNIST = REPO / "models" / "mnist_2x25_l1.onnx"
SAME = "compute their outputs through the same units"


def _tiny(w1: float = 1.0) -> QuantizedNetwork:
    """x in R -> units relu(x - 1), relu(w1 * x), relu(-x) quantized with scale 1/4 -> sum."""
    l1 = Layer(Affine(np.array([[1.0], [w1], [-1.0]]), np.array([-1.0, 0.0, 0.0])), True, "l1")
    out = Layer(Affine(np.array([[1.0, 2.0, 3.0]]), np.zeros(1)), False, "out")
    q = Quantizer.uniform(3, Fraction(1, 4), 0, -128, 127, "q1")
    return QuantizedNetwork(Network((l1, out), source="tiny"), (q, None), None)


def _without(net: QuantizedNetwork, drop: int, w1: float = 1.0) -> QuantizedNetwork:
    """``net`` (built by :func:`_tiny`) without hidden unit ``drop``."""
    keep = [i for i in range(3) if i != drop]
    l1 = net.network.layers[0]
    w = np.array([[1.0], [w1], [-1.0]])[keep]
    lay = Layer(Affine(w, l1.bias[keep]), True, "l1")
    out = Layer(Affine(net.network.layers[1].weight[:, keep], np.zeros(1)), False, "out")
    q = Quantizer.uniform(2, Fraction(1, 4), 0, -128, 127, "q1")
    return QuantizedNetwork(Network((lay, out), source="tiny_small"), (q, None), None)


def test_a_unit_dead_on_the_box_may_go():
    a = _tiny()
    box = box_domain([0.0], [1.0]).boxes[0]  # x - 1 <= 0 there: unit 0 is dead
    assert same_quantized_units(a, _without(a, 0), box) == (True, 3, 1)
    assert same_quantized_units(a, a, box) == (True, 4, 0)


def test_below_half_a_step_is_dead_above_it_is_not():
    a = _tiny()
    # relu(x - 1) <= 1/8 (half of the step 1/4) on [0, 1.125]: rounds to 0, ties to even
    assert same_quantized_units(a, _without(a, 0), box_domain([0.0], [1.125]).boxes[0])[0]
    # up to 1.1251: 0.1251 rounds to the level 1/4, the unit is alive
    assert not same_quantized_units(a, _without(a, 0), box_domain([0.0], [1.1251]).boxes[0])[0]


def test_alive_or_changed_units_are_not_the_same():
    a = _tiny()
    box = box_domain([0.0], [1.0]).boxes[0]
    assert not same_quantized_units(a, _without(a, 1), box)[0]  # relu(x) is alive
    assert not same_quantized_units(a, _without(a, 0, w1=0.5), box)[0]  # a changed weight
    assert not same_quantized_units(_without(a, 0), a, box)[0]  # b larger than a
    dyn = QuantizedNetwork(a.network, (DynamicQuantizer(3), None), None)
    assert not same_quantized_units(dyn, dyn, box)[0]  # dynamic quantizers are not taken


def test_prove_takes_the_structural_route_only_when_it_holds():
    a = _tiny()
    opts = ProverOptions(timeout=30)
    res = prove_networks(a, _without(a, 0), Spec.make("strict"), box_domain([0.0], [1.0]), opts)
    assert res.proved and SAME in res.reason and "the 1 others of a" in res.reason
    res = prove_networks(a, _without(a, 0), Spec.make("strict"), box_domain([0.0], [2.0]), opts)
    assert not res.proved and SAME not in res.reason  # unit 0 fires on (1.125, 2]
    assert res.counterexample is not None


@pytest.mark.parametrize("fmt", ["qdq", "qop"])
def test_an_int8_mlp_against_its_compressed_copy(tmp_path, fmt):
    path = quantize(MNIST, tmp_path / f"mnist_{fmt}.onnx", (1, 784), fmt)
    net = load_network(path, quantized_ok=True)
    res = compress_quantized(net, "0.3:0.35", original=path, output=tmp_path / "small.onnx")
    removed = sum(len(r) for r in res.removed)
    assert removed > 0
    small = load_network(tmp_path / "small.onnx", quantized_ok=True)
    box = parse_domain("0.3:0.35", 784).boxes[0]
    same, shared, dead = same_quantized_units(net, small, box)
    assert same and dead == removed and shared == sum(la.out_dim for la in small.network.layers)
    # on a box where the removed units fire, the copy is not the same function
    wide = parse_domain("0:1", 784).boxes[0]
    assert not same_quantized_units(net, small, wide)[0]
