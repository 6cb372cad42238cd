"""The linear bounds the input splitting of unit stability questions reuses
(:class:`equivcheck.engine.units._Lines`): a parent's back-substituted bound closes questions on
its halves (``close``) and cuts off slabs of its box (``shave``). Every point they let go must
satisfy the question's bound in exact arithmetic, and the whole analysis with them must still
call a unit stable only when it is."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from equivcheck.bounds.stability import analyze_stability
from equivcheck.core.domain import box_domain
from equivcheck.core.exact import pre_activations_exact
from equivcheck.core.options import UnitStability
from equivcheck.engine.forward import bisect
from equivcheck.engine.units import _Bounder, split_inputs

from .helpers import random_net


def _lines_on_boxes(seed: int, boxes: int = 48, width: float = 0.4, single: bool = True):
    """A random deep net, ``boxes`` random sub-boxes of [-1, 1]^3, the bounds of every layer
    up to layer 3 on each, and the lines of layer 3's questions ``z > 0`` (all units) where
    the bounds leave them open (``single``: on each box only the one closest to being proved,
    as late in a search). Returns what the checks need."""
    rng = np.random.default_rng(seed)
    net = random_net(rng, [3, 10, 10, 10, 8, 2])
    c = rng.uniform(-1 + width / 2, 1 - width / 2, (boxes, 3))
    lo, hi = c - width / 2, c + width / 2
    b = _Bounder(net)
    upto, last = 3, np.arange(8)
    q_layer, q_unit, q_sign = np.full(8, 3), np.arange(8), np.ones(8)
    prior = np.concatenate([np.full(b.size, -np.inf), np.full(b.size, np.inf)])[None, :]
    out = b.bounds(upto, last, lo, hi, np.repeat(prior, boxes, axis=0))
    top = out[:, b.size + b.offsets[upto] + q_unit]
    open_q = top > 0.0
    if single:
        nearest = np.argmin(np.where(open_q, top, np.inf), axis=1)
        open_q = open_q & (np.arange(8)[None, :] == nearest[:, None])
    keep = open_q.any(axis=1)
    _, lines = b.lines(upto, last, q_layer, q_unit, q_sign, keep, open_q[keep], lo[keep], hi[keep])
    return net, lo[keep], hi[keep], open_q[keep], lines, rng


def _exact_z(net, x: np.ndarray, layer: int) -> list[Fraction]:
    return pre_activations_exact(net.layers, [Fraction(float(v)) for v in x])[layer]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shaved_slabs_hold_only_points_where_every_open_question_is_proved(seed):
    """Points of a box that ``shave`` cut off (random ones and the corners of each slab) have
    ``z <= 0`` in exact arithmetic for every question open on the box; and something is cut
    (else the test would check nothing)."""
    net, lo, hi, open_q, lines, rng = _lines_on_boxes(seed)
    nlo, nhi, gone, share = lines.shave(open_q, lo, hi)
    assert np.all(nlo >= lo) and np.all(nhi <= hi)
    assert np.all((share >= 0) & (share <= 1))
    cut = gone | (nlo > lo).any(axis=1) | (nhi < hi).any(axis=1)
    assert cut.sum() >= 2, "nothing was shaved: the check below would be empty"
    checked = 0
    for bx in np.flatnonzero(cut):
        pts = lo[bx] + rng.random((400, 3)) * (hi[bx] - lo[bx])
        if not gone[bx]:  # the points outside the shaved box
            pts = pts[np.any((pts < nlo[bx]) | (pts > nhi[bx]), axis=1)]
        z = net.pre_activations(pts)[3][:, open_q[bx]]
        # the float values first (all of them), then the worst few exactly
        assert np.all(z <= 1e-9), (bx, z.max())
        for j in np.argsort(-z.max(axis=1))[:3]:
            ez = _exact_z(net, pts[j], 3)
            assert all(ez[i] <= 0 for i in np.flatnonzero(open_q[bx]))
            checked += 1
    assert checked > 0


@pytest.mark.parametrize("seed", [0, 3])
def test_halves_closed_by_the_parents_lines_hold_no_positive_point(seed):
    """``close`` removes a question from a half only where the parent's line proves it there:
    random points of such halves have ``z <= 0`` (the worst checked exactly)."""
    net, lo, hi, open_q, lines, rng = _lines_on_boxes(seed, width=0.25)
    dim = np.argmax(hi - lo + rng.random(lo.shape) * 1e-3, axis=1)
    clo, chi = bisect(lo, hi, dim, 0.5 * lo + 0.5 * hi)
    parent = np.tile(np.arange(len(lo)), 2)
    cmask = lines.close(np.concatenate([open_q, open_q]), clo, chi, parent)
    closed = np.concatenate([open_q, open_q]) & ~cmask
    assert closed.any(), "no half was closed: the check below would be empty"
    for c in np.flatnonzero(closed.any(axis=1)):
        pts = clo[c] + rng.random((300, 3)) * (chi[c] - clo[c])
        z = net.pre_activations(pts)[3][:, closed[c]]
        assert np.all(z <= 1e-9)
        ez = _exact_z(net, pts[int(np.argmax(z.max(axis=1)))], 3)
        assert all(ez[i] <= 0 for i in np.flatnonzero(closed[c]))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=hs.integers(0, 10_000), shave=hs.booleans())
def test_units_called_stable_are_stable_at_random_points(seed, shave):
    """Random deep nets and boxes with few inputs, input splitting with and without shaving:
    no unit called stable shows the other sign at 5,000 random points (the largest checked
    exactly), and every unstable unit's two witnesses are in the box with the right signs in
    exact arithmetic."""
    import equivcheck.engine.units as units

    old = units.SHAVE
    units.SHAVE = shave
    try:
        rng = np.random.default_rng(seed)
        net = random_net(rng, [3, 12, 12, 12, 2])
        lo = rng.uniform(-1, 0.5, 3)
        hi = lo + rng.uniform(0.1, 0.8, 3)
        dom = box_domain(list(lo), list(hi))
        rep = analyze_stability(net, dom, timeout=20, use_lp=False, splitter=split_inputs)
    finally:
        units.SHAVE = old
    assert rep.undecided == ()  # (about a second each; the limit is far)
    box = dom.boxes[0]
    pts = lo + rng.random((5000, 3)) * (hi - lo)
    zs = net.pre_activations(pts)
    for layer in rep.layers:
        z = zs[layer.layer]
        for i, status in enumerate(layer.status):
            if status.stable:
                sign = 1.0 if status is UnitStability.INACTIVE else -1.0
                worst = pts[int(np.argmax(sign * z[:, i]))]
                assert sign * _exact_z(net, worst, layer.layer)[i] <= 0, (layer.layer, i, status)
            elif status is UnitStability.UNSTABLE:
                for idx, s in ((layer.witness_active[i], 1), (layer.witness_inactive[i], -1)):
                    x = rep.witnesses[idx]
                    assert box.contains(x)
                    assert s * _exact_z(net, np.array(x), layer.layer)[i] > 0


def test_climbs_from_the_peaks_find_a_unit_positive_on_a_sliver():
    """A unit positive only where ``|x0 - 0.5| + |x1 - 0.5| < 0.02`` (0.08% of the box, away
    from every corner): random points and the box's corners miss it; the climbs inside the
    sub-boxes still asking it, from the corners where their lines peak, find a point that the
    analysis state checks exactly."""
    import time

    from equivcheck.bounds.stability_state import AnalysisState
    from equivcheck.core.network import Affine, Layer, Network
    from equivcheck.engine.unit_lines import climb_peaks, unanswered

    w0 = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    b0 = np.array([-0.5, 0.5, -0.5, 0.5])
    net = Network((Layer(Affine(w0, b0), True), Layer(Affine(-np.ones((1, 4)), np.array([0.02])), True),
                   Layer(Affine(np.ones((1, 1)), np.zeros(1)), False)))
    dom = box_domain([0.0, 0.0], [1.0, 1.0])
    st = AnalysisState(net, dom.boxes[0], time.monotonic() + 30.0)
    rng = np.random.default_rng(0)
    assert net.pre_activations(rng.random((200, 2)))[1][:, 0].max() < 0
    questions = [(1, 0, 1)]
    # two sub-boxes still asking the question, the sliver inside the first, far from its corners
    lo = np.array([[0.3, 0.3], [0.0, 0.0]])
    hi = np.array([[1.0, 1.0], [0.3, 1.0]])
    b = _Bounder(net)
    prior = np.concatenate([np.full(b.size, -np.inf), np.full(b.size, np.inf)])[None, :]
    b.bounds(1, np.array([0]), lo, hi, np.repeat(prior, 2, axis=0))
    open_q = np.ones((2, 1), dtype=bool)
    _, lines = b.lines(1, np.array([0]), np.array([1]), np.array([0]), np.array([1.0]),
                       np.ones(2, dtype=bool), open_q, lo, hi)
    st.try_witnesses(lines.peaks(lo, hi))
    assert st.w_pos[1][0] is None  # the corners alone do not reach it
    left = climb_peaks(st, questions, lines, lo, hi, unanswered(st, questions), np.array([100]),
                       after=64, most=64, rounds=12)
    assert not left[0]
    x = st.witnesses[st.w_pos[1][0]]
    assert _exact_z(net, np.array(x), 1)[0] > 0
    # below the budget, no climb is made
    st2 = AnalysisState(net, dom.boxes[0], time.monotonic() + 30.0)
    assert climb_peaks(st2, questions, lines, lo, hi, unanswered(st2, questions), np.array([10]),
                       after=64, most=64, rounds=12)[0]
