"""The prover on real third-party models from ../shared/models/external (skipped when absent)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import equivcheck
from equivcheck import Verdict
from equivcheck.io.onnx_import import load_network

from .helpers import external_path

ACAS_BOX = "acasxu_box.json"
ACAS_LOWER = ["-0.328422877", "-0.5", "-0.5", "-0.5", "-0.5"]
ACAS_UPPER = ["0.679857769", "0.5", "0.5", "0.5", "0.5"]
ACAS_NETS = [f"ACASXU_run2a_{i}_{j}_batch_2000.onnx" for i in range(1, 6) for j in range(1, 10)]


@pytest.fixture
def acas_box(tmp_path):
    p = tmp_path / ACAS_BOX
    p.write_text(f'{{"lower": [{", ".join(ACAS_LOWER)}], "upper": [{", ".join(ACAS_UPPER)}]}}')
    return str(p)


@pytest.mark.parametrize("name", ACAS_NETS)
def test_acasxu_two_exports_proved_equivalent(name, acas_box):
    a = external_path(f"acasxu/{name}")
    b = external_path(f"acasxu_eran/{name}")
    r = equivcheck.prove(a, b, domain=acas_box, timeout=60)
    assert r.verdict is Verdict.PROVED, r.reason


def test_acasxu_different_networks_refuted_reproducibly():
    a = external_path("acasxu/ACASXU_run2a_1_1_batch_2000.onnx")
    b = external_path("acasxu/ACASXU_run2a_1_2_batch_2000.onnx")
    prop = external_path("acasxu/prop_3.vnnlib")
    r = equivcheck.prove(a, b, domain=str(prop), mode="epsilon", tolerance="0.05")
    assert r.verdict is Verdict.REFUTED
    cex = r.counterexample
    assert cex.reproduces
    assert cex.onnxruntime.margin > 0
    box = equivcheck.parse_domain(str(prop), 5).boxes[0]
    assert box.contains([Fraction(v) for v in cex.input])


def test_acasxu_union_domain_checked_box_by_box(acas_box):
    a = external_path("acasxu/ACASXU_run2a_1_1_batch_2000.onnx")
    b = external_path("acasxu_eran/ACASXU_run2a_1_1_batch_2000.onnx")
    r = equivcheck.prove(a, b, domain=str(external_path("acasxu/prop_6.vnnlib")))
    assert r.verdict is Verdict.PROVED
    assert len(r.boxes) == 2


def test_tiny_vs_nano():
    a = external_path("vnncomp_test/test_tiny.onnx")
    b = external_path("vnncomp_test/test_nano.onnx")
    assert equivcheck.prove(a, b, domain="-1:0").verdict is Verdict.PROVED
    r = equivcheck.prove(a, b, domain="-1:1")
    assert r.verdict is Verdict.REFUTED
    assert r.counterexample.reproduces


def test_test_small_is_affine_on_its_range():
    net = load_network(external_path("vnncomp_test/test_small.onnx"))
    for x in (-1.5, -1.0, 0.0, 0.75):
        assert net.evaluate_exact([Fraction(x)])[0] == pytest.approx(24 * x + 54.5, abs=1e-5)


def test_mnist_against_reexport(tmp_path):
    from equivcheck.io.onnx_export import export_network

    src = external_path("mnistfc/mnist-net_256x2.onnx")
    out = tmp_path / "re.onnx"
    assert export_network(load_network(src), out)
    r = equivcheck.prove(src, out, domain=str(external_path("mnistfc/prop_0_0.03.vnnlib")))
    assert r.verdict is Verdict.PROVED


@pytest.mark.slow
def test_mnist_one_weight_changed_refuted(tmp_path):
    import onnx
    from onnx import numpy_helper

    src = external_path("mnistfc/mnist-net_256x2.onnx")
    prop = str(external_path("mnistfc/prop_0_0.03.vnnlib"))
    net = load_network(src)
    box = equivcheck.parse_domain(prop, 784).boxes[0]
    lo, hi = box.lower_float(), box.upper_float()
    x = lo + np.random.default_rng(0).random((2000, 784)) * (hi - lo)
    unit = int(np.argmax(net.pre_activations(x)[0].mean(axis=0)))  # a unit that fires in the box
    model = onnx.load(str(src))
    init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))  # the 256x784 weight
    w = numpy_helper.to_array(init).copy()
    col = int(np.argmax(np.abs(w[unit]) * (hi - lo)))
    w[unit, col] *= 1.5
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    out = tmp_path / "changed.onnx"
    onnx.save(model, out)
    r = equivcheck.prove(src, out, domain=prop, timeout=60)
    assert r.verdict is Verdict.REFUTED
    assert r.counterexample.exact.violated and r.counterexample.reproduces


def test_engine_finds_a_violation_in_a_sliver_of_the_box():
    """ACAS Xu N4,6 against a copy with the 5% smallest-magnitude weights of each layer zeroed
    deviates by more than 0.05 over prop_1's box only on a sliver (about 1e-5 of the box:
    theta within 0.01 of 0, v_int within 0.015 of its lower bound), which no box the bounds
    find worst holds: the search must try points in every open box to refute it."""
    from equivcheck.core.deadline import Deadline
    from equivcheck.core.network import Affine, Layer
    from equivcheck.core.spec import Spec
    from equivcheck.engine import EngineOptions, Outcome, check_box

    f = load_network(external_path("acasxu/ACASXU_run2a_4_6_batch_2000.onnx"))
    layers = []
    for lay in f.layers:
        w = lay.weight.copy()
        w.ravel()[np.argsort(np.abs(w).ravel(), kind="stable")[:int(round(0.05 * w.size))]] = 0.0
        layers.append(Layer(Affine(w, lay.bias.copy()), lay.relu, lay.name))
    g = f.with_layers(layers, note="5% smallest weights zeroed")
    box = equivcheck.parse_domain(str(external_path("acasxu/prop_1.vnnlib")), 5).boxes[0]
    spec = Spec.make("epsilon", "0.05")
    res = check_box(f, g, spec, box, Deadline.start(600.0), EngineOptions(max_nodes=1500))
    assert res.outcome is Outcome.REFUTED, res.reason
    q = [Fraction(v) for v in res.point]
    assert box.contains(q)
    assert not spec.holds(f.evaluate_exact(q), g.evaluate_exact(q))
    assert res.exact_margin > 0
