"""ReLU-split searches hand back their open nodes and go on from them (issue 14, point 3).

The pair: a random 40-32-32-4 network and its 20%-pruned copy on a box of half-width 0.02 (40
inputs, so the engine fixes ReLU phases). At a tolerance between the sampled deviation and the
root's bound the one-shot search proves after a few dozen nodes; below the sampled deviation
the spec is violated. A first call stopped by a node limit hands back every open node (box and
phase bits); resuming from them, in one call or in batches that are stopped and resumed again,
must prove where the one-shot search proves and refute where it refutes, and every sampled
violating point must lie in some open node (its box, its phases).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Box
from equivcheck.core.spec import Spec
from equivcheck.engine import EngineOptions, Outcome, PairModel, check_box
from equivcheck.engine.branch import Layout
from equivcheck.engine.frontier import count, no_prior, phase_rows, phases_of, relu_columns, take
from tests.test_engine import assert_sound, random_pair, sample_points, sampled_deviation

HALF_WIDTH = 0.02


@pytest.fixture(scope="module")
def case():
    return _case()


def _case():
    """f, g, the box, the largest sampled deviation and the root's bound."""
    rng = np.random.default_rng(0)
    f, g = random_pair(rng, [40, 32, 32, 4], "prune")
    c = rng.uniform(-0.5, 0.5, 40)
    box = Box(tuple(Fraction(float(np.float32(v - HALF_WIDTH))) for v in c),
              tuple(Fraction(float(np.float32(v + HALF_WIDTH))) for v in c))
    dev = sampled_deviation(f, g, box, rng)
    root = check_box(f, g, Spec.make("epsilon", Fraction(dev)), box, Deadline.start(10),
                     EngineOptions(batch=4, max_nodes=1))
    return f, g, box, dev, root.stats.best_bound


def _resume_all(f, g, spec, box, front, options, calls: int = 40):
    """Search the handed-back nodes in batches of at most 8, each stopped by ``options``' node
    limit and its own open nodes queued again, until every batch is decided: the verdicts."""
    queue = [take(front, slice(k, k + 8)) for k in range(0, count(front), 8)]
    verdicts = []
    while queue and calls:
        calls -= 1
        res = check_box(f, g, spec, box, Deadline.start(20), options, start=queue.pop(0),
                        hand_back=True)
        if res.outcome is Outcome.UNKNOWN and res.reason.startswith("node limit"):
            assert len(res.extra["frontier"]) == 4
            queue.append(res.extra["frontier"])
            continue
        verdicts.append(res)
        if res.outcome is Outcome.REFUTED:
            break
    return verdicts, queue


def test_resumed_nodes_prove_where_the_one_shot_search_proves(case):
    f, g, box, dev, bound = case
    spec = Spec.make("epsilon", Fraction(dev + 0.9 * (bound - dev)))
    one = check_box(f, g, spec, box, Deadline.start(20), EngineOptions(batch=4))
    assert one.outcome is Outcome.PROVED and one.stats.nodes > 8, one.reason
    first = check_box(f, g, spec, box, Deadline.start(20), EngineOptions(batch=4, max_nodes=6),
                      hand_back=True)
    quiet = check_box(f, g, spec, box, Deadline.start(20), EngineOptions(batch=4, max_nodes=6))
    assert "frontier" not in quiet.extra  # only when asked for
    assert first.outcome is Outcome.UNKNOWN and first.reason.startswith("node limit")
    lo, hi, phases, rows = first.extra["frontier"]
    assert len(lo) == len(hi) == len(phases) == len(rows) == first.stats.open_nodes > 1
    assert phases.dtype == np.uint8 and len({p.tobytes() for p in phases}) == len(phases)
    # all at once
    again = check_box(f, g, spec, box, Deadline.start(20), EngineOptions(batch=4),
                      start=first.extra["frontier"])
    assert again.outcome is Outcome.PROVED, again.reason
    # in batches, each stopped after 4 nodes and resumed again
    verdicts, left = _resume_all(f, g, spec, box, first.extra["frontier"],
                                 EngineOptions(batch=2, max_nodes=4))
    assert not left and verdicts and all(v.outcome is Outcome.PROVED for v in verdicts)
    assert_sound(again, f, g, spec, box, np.random.default_rng(5), samples=3000)


def test_resumed_nodes_refute_where_the_one_shot_search_refutes(case):
    f, g, box, dev, _ = case
    spec = Spec.make("epsilon", Fraction(0.9 * dev))
    one = check_box(f, g, spec, box, Deadline.start(20), EngineOptions(batch=4))
    assert one.outcome is Outcome.REFUTED
    quiet = EngineOptions(batch=4, max_nodes=6, falsify=False)
    first = check_box(f, g, spec, box, Deadline.start(20), quiet, hand_back=True)
    assert first.outcome is Outcome.UNKNOWN and first.reason.startswith("node limit")
    verdicts, _ = _resume_all(f, g, spec, box, first.extra["frontier"], EngineOptions(batch=4))
    assert verdicts[-1].outcome is Outcome.REFUTED
    assert_sound(verdicts[-1], f, g, spec, box, np.random.default_rng(6))




def test_every_violating_point_lies_in_an_open_node_with_its_phases(case):
    f, g, box, dev, _ = case
    tol = 0.9 * dev
    spec = Spec.make("epsilon", Fraction(tol))
    res = check_box(f, g, spec, box, Deadline.start(20),
                    EngineOptions(batch=4, max_nodes=24, falsify=False), hand_back=True)
    assert res.outcome is Outcome.UNKNOWN and res.reason.startswith("node limit")
    lo, hi, phases, _ = res.extra["frontier"]
    layout = Layout(PairModel.build(f, g))
    u = len(relu_columns(layout)[0])
    bits = np.unpackbits(phases, axis=1, count=2 * u).astype(bool)
    assert bits.any(axis=1).all()  # every node has phases fixed (the root was split)
    x = sample_points(np.random.default_rng(2), box, 20_000)
    bad = x[np.abs(f.evaluate(x) - g.evaluate(x)).max(axis=1) > tol * (1 + 1e-9)]
    assert len(bad) > 10
    # each point's signs, in relu_columns' order: f's hidden units, then g's
    z = np.concatenate([zs for net in (f, g) for zs, lay in
                        zip(net.pre_activations(bad), net.layers) if lay.relu], axis=1)
    on = (z >= -1e-9)[:, None, :] | ~bits[None, :, :u]
    off = (z <= 1e-9)[:, None, :] | ~bits[None, :, u:]
    inside = np.all((bad[:, None, :] >= lo[None]) & (bad[:, None, :] <= hi[None]), axis=2)
    held = on.all(axis=2) & off.all(axis=2) & inside  # [points, nodes]
    assert held.any(axis=1).all(), int((~held.any(axis=1)).sum())
    # and the phases split the points: some node does not hold every violating point
    assert not held.all(axis=0).all()


def test_phase_bits_round_trip_and_need_relu_splitting(case):
    f, g, box, _, _ = case
    layout = Layout(PairModel.build(f, g))
    lo_c, hi_c = relu_columns(layout)
    assert len(lo_c) == 2 * (32 + 32)  # the hidden units of f and of g
    rng = np.random.default_rng(4)
    rows = no_prior(5, PairModel.build(f, g))
    rows[:, lo_c] = rng.normal(size=(5, len(lo_c)))
    rows[:, hi_c] = rows[:, lo_c] + rng.random((5, len(lo_c)))
    bits = phases_of(rows, 5, layout)
    rebuilt = phase_rows(bits, no_prior(5, PairModel.build(f, g)), layout)
    assert np.array_equal(phases_of(rebuilt, 5, layout), bits)
    assert np.array_equal(rebuilt[:, lo_c] == 0.0, rows[:, lo_c] >= 0.0)
    assert not phases_of(None, 3, layout).any()
    with pytest.raises(ValueError):
        check_box(f, g, Spec.make("epsilon", "1"), box, Deadline.start(5),
                  EngineOptions(branch="input"), start=(rows[:1, :40], rows[:1, :40], bits[:1]))
