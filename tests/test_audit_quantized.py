"""The audit of a float model against a quantized copy: bounds that hold, verdicts by hand."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from equivcheck.audit.auditor import audit
from equivcheck.core.network import Affine, Layer, Network
from equivcheck.core.quantized import QuantizedNetwork, Quantizer
from equivcheck.core.result import Verdict

F = Fraction


def pair():
    """f(x) = (x, 1 - x) on [0, 1]; g rounds x to quarters first (int8, zero point 0): the
    largest deviation is 1/8, reached exactly at the ties x = 1/8, 3/8, ... (and near them)."""
    f = Network((Layer(Affine(np.array([[1.0], [-1.0]]), np.array([0.0, 1.0])), False, "l0"),),
                input_shape=(1, 1), output_shape=(1, 2), source="f")
    g = QuantizedNetwork(f, (None,), Quantizer.uniform(1, F(1, 4), 0, -128, 127))
    return f, g


def test_bounds_enclose_the_true_deviation_and_verdicts_follow():
    f, g = pair()
    r = audit(f, g, "0:1", epsilons=("0.1", "0.125", "1"), timeout=60, samples=200)
    dev = r.deviation
    assert F(1, 10) < dev.lower <= F(1, 8) <= dev.upper  # the witness is exact, the bound certified
    x = dev.witness_exact or tuple(F(v) for v in dev.witness)
    assert max(abs(u - v) for u, v in zip(f.evaluate_exact(x), g.evaluate_exact(x))) == dev.lower
    verdicts = {c.name: c.verdict for c in r.checks}
    assert verdicts["strict"] is Verdict.REFUTED and verdicts["epsilon 0.1"] is Verdict.REFUTED
    assert verdicts["epsilon 1"] is Verdict.PROVED
    assert verdicts["epsilon 0.125"] is not Verdict.REFUTED  # 1/8 is the exact maximum
    assert verdicts["argmax"] is Verdict.REFUTED  # the classes swap at 1/2 for f, at 3/8 or 5/8 for g
    assert r.layers == () and r.units == () and any("units are not compared" in n for n in r.notes)
    for out in r.per_output:
        assert out.lower <= F(1, 8) <= out.upper


def test_a_quantized_model_against_itself_is_strictly_equal():
    _, g = pair()
    r = audit(g, QuantizedNetwork(g.network, g.quant, g.input_quant), "0:1", timeout=30,
              samples=50)
    assert r.deviation.upper == 0 and r.deviation.lower == 0
    assert {c.verdict for c in r.checks} == {Verdict.PROVED}
