"""ReLU splitting in the engine (equivcheck.engine.branch): soundness checks that can fail.

* bounds of a node with fixed phases enclose the exact outputs at every sampled point of the box
  that satisfies those phases (and the interval forward pass used with ReLU splitting does too);
* a node the engine closes as empty has no sampled point with its phases;
* ReLU-split searches: PROVED shows no violation at 10,000 random points, REFUTED points violate
  the spec exactly, and the verdicts agree with input splitting wherever both decide;
* the progress callback is called with the search's figures.
"""

from __future__ import annotations

import zlib
from fractions import Fraction

import numpy as np
import pytest

from equivcheck.core.deadline import Deadline
from equivcheck.core.progress import Progress
from equivcheck.core.spec import Spec
from equivcheck.engine import Boxes, EngineOptions, Outcome, PairModel, check_box, pair_bounds
from equivcheck.engine.branch import Layout, empty_nodes, relu_children
from equivcheck.engine.frontier import no_prior, pack, unpack
from tests.test_engine import (
    assert_sound,
    exact_out,
    random_box,
    random_pair,
    sample_points,
    sampled_deviation,
)


def _pre_activations(net, x):
    """Float64 pre-activations of every layer at the points ``x`` (rows)."""
    out, h = [], x
    for lay in net.layers:
        z = h @ lay.weight.T + lay.bias
        out.append(z)
        h = np.maximum(z, 0.0) if lay.relu else z
    return out


def _random_phases(rng, f, g, model, layout, box, count):
    """A packed prior row per node fixing the phases of three hidden units of f or g: mostly
    the phases at a random anchor point of the box (so most nodes have points), else random."""
    rows = no_prior(count, model)
    fixed = []
    anchors = sample_points(rng, box, count)[:count]
    units = [(net, k, i) for net, layers in (("f", model.f), ("g", model.g))
             for k, lay in enumerate(layers[:-1]) for i in range(lay.out_dim)]
    for r in range(count):
        zs = {"f": _pre_activations(f, anchors[r:r + 1]), "g": _pre_activations(g, anchors[r:r + 1])}
        picks = []
        for u in rng.choice(len(units), size=3, replace=False):
            net, k, i = units[u]
            on = bool(zs[net][k][0, i] > 0) if rng.random() < 0.75 else bool(rng.random() < 0.5)
            lo_c, hi_c = layout.cols(net, k)
            if on:
                rows[r, lo_c[i]] = 0.0
            else:
                rows[r, hi_c[i]] = 0.0
            picks.append((net, k, i, on))
        fixed.append(picks)
    return rows, fixed


def _satisfies(f, g, x, picks, margin=1e-9):
    zs = {"f": _pre_activations(f, x), "g": _pre_activations(g, x)}
    ok = np.ones(len(x), bool)
    for net, k, i, on in picks:
        z = zs[net][k][:, i]
        ok &= (z > margin) if on else (z < -margin)
    return ok


@pytest.mark.parametrize("kind", ["noise", "prune", "shape", "rational"])
def test_bounds_with_fixed_phases_enclose_exact_outputs_where_the_phases_hold(kind):
    rng = np.random.default_rng(zlib.crc32(kind.encode()))  # the same seed in every run
    f, g = random_pair(rng, [3, 8, 7, 3], kind)
    model = PairModel.build(f, g)
    layout = Layout(model)
    box = random_box(rng, 3)
    nodes = 30
    rows, fixed = _random_phases(rng, f, g, model, layout, box, nodes)
    lo = np.repeat(box.lower_float()[None], nodes, 0)
    hi = np.repeat(box.upper_float()[None], nodes, 0)
    pts = sample_points(rng, box, 2000)
    checked = empties = 0
    for symbolic in (True, False):
        pb = pair_bounds(model, Boxes(lo, hi, model.width), "all", unpack(rows, model), True, symbolic)
        empty = empty_nodes(pack(pb.hist, model.same_shape), layout)
        for r in range(nodes):
            inside = pts[_satisfies(f, g, pts, fixed[r])]
            if empty[r]:
                empties += 1
                assert len(inside) == 0, "a node with points was closed as empty"
                continue
            for x in inside[:15]:
                yf, yg = exact_out(f, x), exact_out(g, x)
                for j in range(3):
                    assert Fraction(pb.f_lo[r, j]) <= yf[j] <= Fraction(pb.f_hi[r, j])
                    assert Fraction(pb.g_lo[r, j]) <= yg[j] <= Fraction(pb.g_hi[r, j])
                    assert Fraction(pb.d_lo[r, j]) <= yf[j] - yg[j] <= Fraction(pb.d_hi[r, j])
                checked += 1
    assert checked > 50
    assert empties > 0  # random phases contradict often: the emptiness check is exercised


def test_children_cover_the_parent():
    """Every point of a node satisfies the phases of one of its children."""
    rng = np.random.default_rng(4)
    f, g = random_pair(rng, [2, 6, 6, 2], "noise")
    model = PairModel.build(f, g)
    layout = Layout(model)
    box = random_box(rng, 2)
    pb = pair_bounds(model, Boxes(box.lower_float()[None], box.upper_float()[None], model.width), "all")
    packed = pack(pb.hist, True)
    ok, parent, kids = relu_children(packed, layout)
    assert ok.all() and len(kids) >= 2 and np.all(parent == 0)
    pts = sample_points(rng, box, 2000)
    zs = {"f": _pre_activations(f, pts), "g": _pre_activations(g, pts)}
    covered = np.zeros(len(pts), bool)
    for kid in kids:
        inside = np.ones(len(pts), bool)
        for net in ("f", "g"):
            for k in range(len(model.f) - 1):
                lo_c, hi_c = layout.cols(net, k)
                z = zs[net][k]
                inside &= np.all((z >= kid[lo_c] - 1e-9) & (z <= kid[hi_c] + 1e-9), axis=1)
        covered |= inside
    assert covered.all()


SPECS = [Spec.make("epsilon", "0.05"), Spec.make("epsilon", "0.2", "l1"), Spec.make("argmax")]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("spec", SPECS, ids=["linf", "l1", "argmax"])
def test_relu_split_verdicts_are_sound_and_agree_with_input_splitting(seed, spec):
    rng = np.random.default_rng(100 + seed)
    kind = ["noise", "prune", "shape", "rational", "noise"][seed]
    f, g = random_pair(rng, [3, 8, 8, 3], kind)
    box = random_box(rng, 3)
    relu = check_box(f, g, spec, box, Deadline.start(3.0), EngineOptions(branch="relu", batch=32))
    assert_sound(relu, f, g, spec, box, rng)
    ref = check_box(f, g, spec, box, Deadline.start(3.0), EngineOptions(branch="input", batch=64))
    if Outcome.UNKNOWN not in (relu.outcome, ref.outcome):
        assert relu.outcome is ref.outcome, (relu.reason, ref.reason)


def test_relu_split_refutes_a_violation_it_can_not_prove():
    rng = np.random.default_rng(3)
    f, g = random_pair(rng, [3, 8, 8, 2], "prune")
    box = random_box(rng, 3)
    seen = sampled_deviation(f, g, box, rng)
    spec = Spec.make("epsilon", Fraction(seen) / 2)
    res = check_box(f, g, spec, box, Deadline.start(10.0), EngineOptions(branch="relu"))
    assert res.outcome is Outcome.REFUTED
    assert_sound(res, f, g, spec, box, rng)
    # without the falsifier the closed nodes must not add up to a proof
    quiet = EngineOptions(branch="relu", falsify=False, max_nodes=3000)
    res = check_box(f, g, spec, box, Deadline.start(10.0), quiet)
    assert res.outcome is not Outcome.PROVED
    assert res.stats.best_bound >= seen * 0.999


def test_progress_is_reported():
    rng = np.random.default_rng(8)
    f, g = random_pair(rng, [3, 8, 8, 2], "noise")
    box = random_box(rng, 3)
    dev = sampled_deviation(f, g, box, rng)
    seen: list[Progress] = []
    res = check_box(f, g, Spec.make("epsilon", Fraction(dev * 1.05)), box, Deadline.start(10.0),
                    EngineOptions(root_samples=0, root_steps=0, batch=4), progress=seen.append)
    assert seen and all(p.stage == "search" and p.unit == "nodes" for p in seen)
    assert seen[0].done == 0 and seen[0].open == 1
    assert all(a.done <= b.done for a, b in zip(seen, seen[1:]))
    assert res.stats.rounds == len(seen) > 1
    assert all(p.bound is not None and p.seconds_left <= 10.0 for p in seen)
