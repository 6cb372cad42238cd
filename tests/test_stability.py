"""Exact stability analysis: verdicts are proved (stable) or witnessed exactly (unstable)."""

from __future__ import annotations

import time
from fractions import Fraction

import numpy as np
import pytest

from equivcheck.bounds.propagation import interval_bounds
from equivcheck.bounds.stability import (
    Stage,
    UnitStatus,
    _branch_and_bound,
    _input_split,
    _State,
    analyze_stability,
    exact_preactivations,
)
from equivcheck.core.domain import box_domain
from equivcheck.core.network import Affine, Layer, Network
from equivcheck.io.domains import parse_domain
from equivcheck.io.onnx_import import load_network

from .conftest import MODELS


def hand_net() -> Network:
    """x in [-1, 1]. Layer 0: x, -x, x+2, x-2, x-1, 0. Layer 1: |x|-1.5, |x|-0.5, relu(x+2)-0.5."""
    w0 = np.array([[1.0], [-1.0], [1.0], [1.0], [1.0], [0.0]])
    b0 = np.array([0.0, 0.0, 2.0, -2.0, -1.0, 0.0])
    w1 = np.zeros((3, 6))
    w1[0, :2] = 1.0
    w1[1, :2] = 1.0
    w1[2, 2] = 1.0
    b1 = np.array([-1.5, -0.5, -0.5])
    w2 = np.ones((1, 3))
    return Network((Layer(Affine(w0, b0), True), Layer(Affine(w1, b1), True),
                    Layer(Affine(w2, np.zeros(1)), False)))


def check_witnesses(net, report, domain):
    box = domain.boxes[0]
    for rep in report.layers:
        for i, status in enumerate(rep.status):
            if status is not UnitStatus.UNSTABLE:
                continue
            for idx, sign in ((rep.witness_active[i], 1), (rep.witness_inactive[i], -1)):
                x = report.witnesses[idx]
                assert box.contains(x)
                z = exact_preactivations(net, [Fraction(v) for v in x])[rep.layer][i]
                assert sign * z > 0


def test_hand_net_verdicts_and_stages():
    net = hand_net()
    dom = box_domain([-1], [1])
    rep = analyze_stability(net, dom, timeout=30)
    l0, l1 = rep.layer(0), rep.layer(1)
    assert l0.status == (UnitStatus.UNSTABLE, UnitStatus.UNSTABLE, UnitStatus.ACTIVE,
                         UnitStatus.INACTIVE, UnitStatus.INACTIVE, UnitStatus.INACTIVE)
    # x - 1 reaches exactly 0: the rigorous float bounds cannot tell, the exact vertex can
    assert l0.stage[4] is Stage.EXACT
    assert l0.stage[2] is Stage.INTERVAL and l0.stage[3] is Stage.INTERVAL
    assert l1.status == (UnitStatus.INACTIVE, UnitStatus.UNSTABLE, UnitStatus.ACTIVE)
    assert l1.stage[0] is not Stage.INTERVAL  # |x| - 1.5 <= 0 needs more than intervals
    assert rep.undecided == ()
    check_witnesses(net, rep, dom)


def test_branch_and_bound_proves_what_intervals_cannot():
    net = hand_net()
    dom = box_domain([-1], [1])
    st = _State(net, dom.boxes[0], time.monotonic() + 30)
    bounds = interval_bounds(net, st.lo, st.hi)
    assert bounds[1].upper[0] > 0  # intervals say |x| - 1.5 may be positive
    _branch_and_bound(st, bounds, 1, 0, 1)
    assert st.status[1][0] is UnitStatus.INACTIVE and st.stage[1][0] is Stage.EXACT
    assert bounds[1].upper[0] <= 0  # the proved fact is recorded for later questions
    # an unstable unit is never proved stable: branch and bound finds a witness instead
    _branch_and_bound(st, bounds, 1, 1, 1)
    assert st.status[1][1] is UnitStatus.UNDECIDED and st.w_pos[1][1] is not None


def test_input_splitting_proves_and_witnesses():
    net = hand_net()
    dom = box_domain([-1], [1])
    st = _State(net, dom.boxes[0], time.monotonic() + 30)
    bounds = interval_bounds(net, st.lo, st.hi)
    st.record_bounds(bounds, Stage.INTERVAL)
    _input_split(st, bounds)
    assert st.status[1][0] is UnitStatus.INACTIVE
    assert st.status[1][1] is UnitStatus.UNSTABLE
    assert st.status[0][0] is UnitStatus.UNSTABLE


def test_timeout_leaves_units_undecided_and_kept():
    net = hand_net()
    rep = analyze_stability(net, box_domain([-1], [1]), timeout=0.0)
    assert rep.undecided  # nothing beyond the bound stages had time to run
    for layer, unit in rep.undecided:
        assert rep.layer(layer).stage[unit] is Stage.TIMEOUT
    # whatever was decided is still right
    assert rep.layer(0).status[3] is UnitStatus.INACTIVE


def test_union_of_boxes_combines_verdicts():
    net = hand_net()
    # on [-1, -0.5] u [0.5, 1] the unit x is inactive on one box and active on the other
    from equivcheck.core.domain import Box, Domain

    dom = Domain((Box((Fraction(-1),), (Fraction(-1, 2),)), Box((Fraction(1, 2),), (Fraction(1),))), "two")
    rep = analyze_stability(net, dom, timeout=30)
    assert rep.layer(0).status[0] is UnitStatus.UNSTABLE
    assert rep.layer(0).status[2] is UnitStatus.ACTIVE
    check_witnesses_union(net, rep, dom)


def check_witnesses_union(net, rep, dom):
    for layer in rep.layers:
        for i, status in enumerate(layer.status):
            if status is UnitStatus.UNSTABLE:
                for idx, sign in ((layer.witness_active[i], 1), (layer.witness_inactive[i], -1)):
                    x = rep.witnesses[idx]
                    assert any(b.contains(x) for b in dom.boxes)
                    assert sign * exact_preactivations(net, [Fraction(v) for v in x])[layer.layer][i] > 0


def test_trained_mnist_model_verdicts_agree_with_samples():
    path = MODELS / "mnist_2x25_l1.onnx"
    if not path.exists():
        pytest.skip("models/mnist_2x25_l1.onnx not committed yet")
    net = load_network(path)
    dom = parse_domain("0:1", net.in_dim)
    rep = analyze_stability(net, dom, timeout=60)
    assert rep.undecided == ()
    check_witnesses(net, rep, dom)
    rng = np.random.default_rng(0)
    pts = np.vstack([rng.random((3000, 784)), (rng.random((3000, 784)) < 0.5).astype(float)])
    zs = net.pre_activations(pts)
    for layer in rep.layers:
        z = zs[layer.layer]
        for i, status in enumerate(layer.status):
            if status is UnitStatus.INACTIVE:
                assert z[:, i].max() <= 1e-9
            elif status is UnitStatus.ACTIVE:
                assert z[:, i].min() >= -1e-9
    counts = rep.stage_counts()
    assert sum(v["stable"] for v in counts.values()) + sum(v["unstable"] for v in counts.values()) == 50
