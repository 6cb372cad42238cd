"""The canonical form on third-party models (issue 11): ACAS Xu and MNIST nets against rewritten
copies of themselves; benchmarks/canon_external.py runs all of them."""

from __future__ import annotations

import numpy as np
import pytest

from equivcheck.core.options import ProverOptions
from equivcheck.core.result import Verdict
from equivcheck.core.spec import Spec
from equivcheck.io.domains import parse_domain
from equivcheck.io.onnx_import import load_network
from equivcheck.solve.prover import prove_networks

from .test_canon_rewrites import (
    duplicate,
    identity_relu_layer,
    linear_factor,
    permute,
    relu_pair_layer,
    rescale,
    split,
    to_network,
)


def _rewrite(net, steps, lo, hi, seed=0):
    rng = np.random.default_rng(seed)
    stack = [(layer.weight.copy(), layer.bias.copy(), layer.relu) for layer in net.layers]
    for step in steps:
        stack = step(rng, stack, lo, hi)
    return to_network(stack, "rewritten")


def test_acas_against_a_rewritten_copy_of_itself(external):
    a = load_network(str(external("acasxu/ACASXU_run2a_2_7_batch_2000.onnx")))
    dom = parse_domain(str(external("acasxu/prop_1.vnnlib")), 5)
    lo, hi = dom.boxes[0].lower_float(), dom.boxes[0].upper_float()
    b = _rewrite(a, [identity_relu_layer, split, relu_pair_layer, permute, linear_factor], lo, hi)
    assert len(b.layers) > len(a.layers)
    res = prove_networks(a, b, Spec(), dom, ProverOptions(timeout=60))
    assert res.verdict is Verdict.PROVED, res.reason
    assert res.reason.startswith("canonical forms are equal") and "layer removed" in res.reason
    # the same copy with one weight changed is not proved by the form
    w = b.layers[-1].weight.copy()
    w[0, 0] += 0.25
    layers = list(b.layers)
    layers[-1] = type(layers[-1])(type(layers[-1].affine)(w, layers[-1].bias), False, "l")
    changed = b.with_layers(layers)
    res = prove_networks(a, changed, Spec(), dom, ProverOptions(timeout=60))
    assert not res.reason.startswith("canonical")


@pytest.mark.slow
def test_mnist_against_a_rewritten_copy_of_itself(external):
    a = load_network(str(external("mnistfc/mnist-net_256x2.onnx")))
    dom = parse_domain(str(external("mnistfc/prop_0_0.03.vnnlib")), 784)
    lo, hi = dom.boxes[0].lower_float(), dom.boxes[0].upper_float()
    b = _rewrite(a, [permute, rescale, duplicate, identity_relu_layer], lo, hi)
    res = prove_networks(a, b, Spec.make("argmax"), dom, ProverOptions(timeout=120))
    assert res.verdict is Verdict.PROVED and res.reason.startswith("canonical forms are equal")
