"""The prover's default bound method (AUTO): interval bounds for same-shaped pairs, symbolic
bounds for pairs of different shapes, so a model is proved against its copy with stable units
removed unit by unit even when interval bounds cannot see that a removed unit is stable."""

from __future__ import annotations

import numpy as np
import pytest

from equivcheck.core.domain import Domain, box_domain
from equivcheck.core.network import Affine, Layer, Network, same_widths
from equivcheck.core.options import BoundMethod, ProverOptions
from equivcheck.core.spec import Spec
from equivcheck.errors import InputError
from equivcheck.report import render_text
from equivcheck.solve.prover import prove_networks

SAME_UNITS = "compute their outputs through the same units"


def _pair(gap: float) -> tuple[Network, Network]:
    """``a``: two copies of the active unit relu(x) on x in [1, 2], then a unit
    relu(h1 - h2 - gap) (interval bounds: [-1 - gap, 1 - gap], unstable for gap < 1; symbolic
    bounds: exactly -gap, inactive for gap > 0) and an output that reads both hidden layers'
    units. ``b``: the same network without that unit."""
    l1 = Layer(Affine(np.array([[1.0], [1.0]]), np.zeros(2)), True, "l1")
    l2a = Layer(Affine(np.array([[1.0, -1.0], [1.0, 0.0]]), np.array([-gap, 0.0])), True, "l2")
    out_a = Layer(Affine(np.array([[3.0, 1.0]]), np.array([0.5])), False, "out")
    l2b = Layer(Affine(np.array([[1.0, 0.0]]), np.array([0.0])), True, "l2")
    out_b = Layer(Affine(np.array([[1.0]]), np.array([0.5])), False, "out")
    return Network((l1, l2a, out_a), source="a"), Network((l1, l2b, out_b), source="b")


def _domain() -> Domain:
    return box_domain([1.0], [2.0])


def test_auto_resolves_by_shape():
    assert BoundMethod.AUTO.resolve(True) is BoundMethod.INTERVAL
    assert BoundMethod.AUTO.resolve(False) is BoundMethod.SYMBOLIC
    for method in (BoundMethod.INTERVAL, BoundMethod.SYMBOLIC, BoundMethod.LP, BoundMethod.EXACT):
        assert method.resolve(False) is method and method.resolve(True) is method
    assert ProverOptions().bound_method is BoundMethod.AUTO
    assert BoundMethod.parse("auto") is BoundMethod.AUTO
    with pytest.raises(InputError, match="auto"):  # the choices name it
        BoundMethod.parse("magic")


def test_same_widths():
    a, b = _pair(0.5)
    assert same_widths(a, a) and not same_widths(a, b)


def test_removed_unit_stable_only_by_symbolic_bounds_is_proved_unit_by_unit():
    a, b = _pair(0.5)
    spec = Spec.make("strict")
    opts = ProverOptions(timeout=30, canonical=False, engine=False, falsify=False)
    res = prove_networks(a, b, spec, _domain(), opts)
    assert res.proved and SAME_UNITS in res.reason
    assert res.bounds is BoundMethod.SYMBOLIC and res.options.bound_method is BoundMethod.AUTO
    assert "ReLU stability from symbolic bounds" in render_text(res)
    # interval bounds leave the removed unit unstable: no unit-by-unit proof (the solver decides)
    res_i = prove_networks(a, b, spec, _domain(), ProverOptions(
        timeout=30, canonical=False, engine=False, falsify=False, bound_method="interval"))
    assert res_i.proved and SAME_UNITS not in res_i.reason and res_i.bounds is BoundMethod.INTERVAL


def test_the_removed_unit_matters_when_it_is_not_stable():
    a, b = _pair(-0.5)  # relu(h1 - h2 + 0.5) = 0.5 everywhere: a's output is b's plus 1.5
    res = prove_networks(a, b, Spec.make("strict"), _domain(), ProverOptions(timeout=30))
    assert not res.proved and res.counterexample is not None


def test_same_shaped_pairs_keep_interval_bounds():
    a, _ = _pair(0.5)
    res = prove_networks(a, a, Spec.make("strict"), _domain(), ProverOptions(timeout=30, canonical=False))
    assert res.proved and res.bounds is BoundMethod.INTERVAL


def test_same_units_without_the_smt_text():
    from equivcheck.bounds.methods import sound_bounds
    from equivcheck.solve.encode import encode_disagreement, same_units

    dom = _domain()
    box = dom.boxes[0]
    lo, hi = box.lower_float(), box.upper_float()
    for gap, method, expected in ((0.5, "symbolic", True), (0.5, "interval", False),
                                  (-0.5, "symbolic", False)):
        a, b = _pair(gap)
        ba, bb = sound_bounds(a, lo, hi, method), sound_bounds(b, lo, hi, method)
        same, shared = same_units(a, b, ba, bb)
        enc = encode_disagreement(a, b, box, ba, bb, Spec.make("strict"))
        assert same is expected and same == enc.same_outputs and shared == enc.shared_units
