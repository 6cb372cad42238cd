"""``prove_distributed`` (issue 14, point 3): one check's branch and bound as Dask tasks, with
the same verdicts as the one-machine prover; the first refuted part stops the others.

The pairs are a random 3-16-16-2 network and its copy with the output biases moved by 0.5: the
difference is the same at every input, so epsilon 0.1 is refuted everywhere, epsilon 0.75 is
proved, and epsilon equal to the exact largest bias change is a tie the engine's (outward
rounded) bounds cannot close: its parts are left open and decided by this machine's prover.
"""

from __future__ import annotations

import sys
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

from equivcheck.campaign.distributed import prove_distributed
from equivcheck.campaign.farm import engine_part
from equivcheck.core.result import Verdict
from equivcheck.core.spec import Spec
from equivcheck.engine import EngineOptions
from equivcheck.io.domains import parse_domain
from equivcheck.solve.prover import prove

from .helpers import random_net, save_onnx
from .test_campaign import _shifted


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist")
    f = random_net(np.random.default_rng(3), [3, 16, 16, 2])
    g = _shifted(f, 0.5)
    tie = max(abs(Fraction(float(x)) - Fraction(float(y)))
              for x, y in zip(f.layers[-1].bias, g.layers[-1].bias))
    return save_onnx(f, folder / "f.onnx"), save_onnx(g, folder / "g.onnx"), tie


@pytest.mark.parametrize("tolerance, verdict", [("0.1", Verdict.REFUTED),
                                                ("0.75", Verdict.PROVED), ("tie", Verdict.PROVED)])
def test_the_cluster_gives_the_one_machine_verdict(client, pair, tolerance, verdict):
    a, b, tie = pair
    tol = str(Decimal(tie.numerator) / Decimal(tie.denominator)) if tolerance == "tie" \
        else tolerance
    kw = dict(domain="-1:1", mode="epsilon", tolerance=tol, timeout=40)
    here = prove(a, b, **kw)
    there = prove_distributed(a, b, **kw, client=client, first_seconds=0)
    assert here.verdict is there.verdict is verdict, (here.reason, there.reason)
    assert any("parts as Dask tasks on 2 worker threads" in n for n in there.notes), there.notes
    if verdict is Verdict.REFUTED:
        cex = there.counterexample
        assert cex.exact.violated and cex.reproduces  # re-run on the original files
    if tolerance == "tie":
        assert "open parts" in there.reason, there.reason


def test_strict_mode_is_decided_on_this_machine(client, pair):
    a, b, _ = pair
    res = prove_distributed(a, a, domain="-1:1", timeout=30, client=client)
    assert res.verdict is Verdict.PROVED
    assert "strict mode" in res.notes[-1] and "Dask tasks" not in " ".join(res.notes)


def test_a_task_stops_when_the_answer_is_known(client, pair):
    from distributed import Event

    from equivcheck.io.onnx_import import load_network

    a, b, _ = pair
    f, g = load_network(a), load_network(b)
    box = parse_domain("-1:1", 3).boxes[0]
    spec = Spec.make("epsilon", "0.75")
    Event("stop-now", client=client).set()
    stopped = client.submit(engine_part, f, g, spec, box, 30.0, EngineOptions(), "stop-now",
                            pure=False).result(timeout=120)
    assert stopped is None
    ran = client.submit(engine_part, f, g, spec, box, 30.0, EngineOptions(), "not-set",
                        pure=False).result(timeout=120)
    assert ran is not None and ran.outcome.value == "proved"


def test_progress_reports_every_part_as_it_finishes(client, pair):
    a, b, _ = pair
    events = []
    res = prove_distributed(a, b, domain="-1:1", mode="epsilon", tolerance="0.75", timeout=40,
                            client=client, first_seconds=0, progress=events.append)
    assert res.verdict is Verdict.PROVED
    parts = [e for e in events if e.stage == "cluster"]
    assert parts and all(e.unit == "parts" for e in parts)
    total = parts[0].done + parts[0].open
    assert parts[0].done == 0 and total == 2  # one part per worker thread, none done yet
    assert [e.done for e in parts] == list(range(total + 1))  # one report per finished part
    assert parts[-1].open == 0 and "Dask worker threads" in parts[-1].detail


def test_an_instance_decided_in_the_first_slice_reports_no_cluster_stage(client, pair):
    a, b, _ = pair
    events = []
    res = prove_distributed(a, b, domain="-1:1", mode="epsilon", tolerance="0.1", timeout=40,
                            client=client, progress=events.append)
    assert res.verdict is Verdict.REFUTED and "first slice" in res.reason, res.reason
    assert "0 parts as Dask tasks" in res.notes[-1]
    assert all(e.stage != "cluster" for e in events)  # decided here: no task was submitted


# ---- the farm: parts whose slice ran out come back cut, idle workers take them ---------------


@pytest.fixture(scope="module")
def tweaked():
    """A pair whose difference varies over the box (one first-layer weight moved): epsilon just
    above its largest difference needs a few dozen nodes, below it is refuted."""
    from .test_campaign import _tweaked

    f = random_net(np.random.default_rng(3), [3, 16, 16, 2])
    g = _tweaked(f)
    x = np.random.default_rng(0).uniform(-1, 1, (50_000, 3))
    return f, g, float(np.abs(f.evaluate(x) - g.evaluate(x)).max())


def _farm(client, f, g, tolerance, seconds, max_nodes, falsify=True):
    import uuid

    from equivcheck.campaign.farm import farm
    from equivcheck.core.deadline import Deadline
    from equivcheck.engine import PairModel
    from equivcheck.engine.parallel import cut_box

    box = parse_domain("-1:1", 3).boxes[0]
    spec = Spec.make("epsilon", tolerance)
    model = PairModel.build(f, g)
    parts, _ = cut_box(box, 2, model, spec)
    remote = client.scatter([f, g], broadcast=True, hash=False)
    res = farm(client, remote, spec, parts, model, 2, Deadline.start(seconds),
               EngineOptions(max_nodes=max_nodes, falsify=falsify),
               f"test-stop-{uuid.uuid4().hex}")
    return box, res


def _volume(box) -> Fraction:
    v = Fraction(1)
    for lo, hi in zip(box.lower, box.upper):
        v *= hi - lo
    return v


def _assert_exact_cover(box, parts):
    """``parts`` lie in ``box``, their interiors are disjoint and their volumes add up to the
    box's, exactly: a cover of the box (up to shared faces, which both neighbours hold)."""
    assert all(all(bl <= pl and pu <= bu for bl, pl, pu, bu in
                   zip(box.lower, p.lower, p.upper, box.upper)) for p in parts)
    for i, p in enumerate(parts):
        for q in parts[i + 1:]:
            assert any(pu <= ql or qu <= pl for pl, pu, ql, qu in
                       zip(p.lower, p.upper, q.lower, q.upper)), (p, q)
    assert sum(_volume(p) for p in parts) == _volume(box)


def test_the_farm_goes_on_after_slices_run_out_until_every_part_is_proved(client, tweaked):
    f, g, d = tweaked
    box, res = _farm(client, f, g, str(round(1.02 * d, 6)), 120, max_nodes=4)
    assert res.refuted is None and not res.open, res
    # slices ran out (4 nodes each): parts were cut again, or their open nodes handed on
    assert res.cuts + res.handed_on >= 2 and res.tasks >= 3
    assert len(res.overhead) == res.tasks and res.nodes >= res.tasks
    if not res.handed_on:  # parts only cut: the parts proved are exactly a cover of the box
        assert res.generations >= 2
        _assert_exact_cover(box, res.proved)


def test_parts_left_open_hold_every_point_that_violates_the_spec(client, tweaked):
    f, g, d = tweaked  # below the largest difference, and no falsifier: some parts stay open
    tol = 0.9 * d
    box, res = _farm(client, f, g, str(round(tol, 6)), 4, max_nodes=4, falsify=False)
    assert res.refuted is None and res.open
    x = np.random.default_rng(1).uniform(-1, 1, (20_000, 3))
    bad = x[np.abs(f.evaluate(x) - g.evaluate(x)).max(axis=1) > tol + 1e-6]
    assert len(bad) > 0
    for point in bad:  # what was not proved is returned open
        assert any(p.contains(point) for p in res.open), point
    if not res.handed_on:
        _assert_exact_cover(box, res.proved + res.open)


def test_open_nodes_become_exact_parts_of_the_part_and_groups_of_neighbours():
    from equivcheck.campaign.farm import batches, frontier_parts
    from equivcheck.core.domain import Box

    part = Box((Fraction(-1, 3), Fraction(0)), (Fraction(1), Fraction(2)), (True, False),
               (False, True))
    lo = np.array([[-1.0, 0.0], [0.0, 1.0], [0.5, 2.0], [-0.5, -1.0]])
    hi = np.array([[0.0, 1.0], [1.5, 2.5], [0.75, 3.0], [0.25, 0.0]])
    parts = frontier_parts(part, (lo, hi))
    # the third holds only points on the part's strict upper face, so none; the fourth touches
    # the part on its closed lower face in input 1 (x1 = 0): a flat part, kept
    assert len(parts) == 3
    first, second, fourth = parts
    assert first.lower == (Fraction(-1, 3), 0) and first.lower_strict == (True, False)
    assert second.upper == (1, 2) and second.upper_strict == (False, True)
    assert fourth.lower == (Fraction(-1, 3), 0) and fourth.upper == (Fraction(1, 4), 0)
    for p in parts:
        assert all(lo_ >= pl for lo_, pl in zip(p.lower, part.lower))
    assert frontier_parts(part, None) is None
    many = [Box((Fraction(k), Fraction(0)), (Fraction(k + 1), Fraction(1))) for k in range(20)]
    groups = batches(many[::-1], 3, Box((0, 0), (20, 1)))
    assert len(groups) == 2  # at most 20 // MIN_BATCH groups of neighbours
    assert sorted(b.lower for _, g in groups for b in g) == sorted(b.lower for b in many)
    for hull, group in groups:
        assert all(hull.contains(b.lower) and hull.contains(b.upper) for b in group)
    assert groups[0][0].upper[0] <= groups[1][0].lower[0]  # neighbours together


def test_a_refuted_part_stops_the_farm_with_its_point(client, tweaked):
    f, g, d = tweaked
    box, res = _farm(client, f, g, str(round(0.9 * d, 6)), 120, max_nodes=4)
    assert res.refuted is not None and box.contains(res.refuted.point)
    assert res.refuted.exact_margin > 0


def test_local_cluster_workers_run_without_the_nannys_malloc_setting():
    import os

    from equivcheck.campaign.cluster import connect
    from equivcheck.campaign.malloc import tune_malloc, worker_environ

    assert worker_environ({"MALLOC_TRIM_THRESHOLD_": 65536, "OMP_NUM_THREADS": 1}) == \
        {"OMP_NUM_THREADS": 1}
    with connect("local", 1) as c:
        env = c.run(lambda: (os.environ.get("MALLOC_TRIM_THRESHOLD_"),
                             os.environ.get("OMP_NUM_THREADS")))
    assert list(env.values()) == [(None, "1")]
    assert tune_malloc() is sys.platform.startswith("linux")


def _relu_farm(client, spec, seconds, options):
    """The farm on the 40-input pair of tests/test_engine_frontier.py (ReLU splitting)."""
    import uuid

    from equivcheck.campaign.farm import farm
    from equivcheck.core.deadline import Deadline
    from equivcheck.engine import PairModel

    from .test_engine_frontier import _case

    f, g, box, dev, bound = _case()
    model = PairModel.build(f, g)
    remote = client.scatter([f, g], broadcast=True, hash=False)
    res = farm(client, remote, spec(dev, bound), [box], model, 2, Deadline.start(seconds),
               options, f"test-stop-{uuid.uuid4().hex}")
    return f, g, box, dev, res


def test_relu_split_nodes_are_handed_on_until_the_part_is_proved(client):
    from fractions import Fraction

    f, g, box, _, res = _relu_farm(
        client, lambda dev, bound: Spec.make("epsilon", Fraction(dev + 0.9 * (bound - dev))),
        60, EngineOptions(batch=2, max_nodes=4))
    assert res.refuted is None and not res.open and res.proved == [box], res
    assert res.handed_on >= 2 and res.cuts == 0 and res.tasks >= 3


def test_relu_split_batches_left_open_leave_the_part_open(client):
    from fractions import Fraction

    f, g, box, dev, res = _relu_farm(client, lambda dev, _: Spec.make("epsilon", Fraction(0.9 * dev)),
                                     3, EngineOptions(batch=2, max_nodes=4, falsify=False))
    assert res.refuted is None and res.open == [box] and not res.proved, res
    assert res.handed_on >= 1


def test_relu_split_first_slice_hands_its_nodes_to_the_cluster(client, tmp_path):
    from fractions import Fraction

    from .test_engine_frontier import _case

    f, g, box, dev, bound = _case()
    a, b = save_onnx(f, tmp_path / "f.onnx"), save_onnx(g, tmp_path / "g.onnx")
    from equivcheck.core.domain import Domain

    domain = Domain((box,), "the 40-input box")
    tol = repr(float(Fraction(dev + 0.9 * (bound - dev))))
    kw = dict(domain=domain, mode="epsilon", tolerance=tol, timeout=60)
    here = prove(a, b, **kw)
    # (a slice of a few ms: on an idle machine 0.05 s proved the whole box, 27 nodes, here)
    there = prove_distributed(a, b, **kw, client=client, first_seconds=0.003)
    assert here.verdict is there.verdict is Verdict.PROVED, (here.reason, there.reason)
    assert "Dask tasks" in there.reason and "0 parts cut again" in there.reason, there.reason
