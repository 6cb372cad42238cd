"""``prove_distributed`` (issue 14, point 3): one check's branch and bound as Dask tasks, with
the same verdicts as the one-machine prover; the first refuted part stops the others.

The pairs are a random 3-16-16-2 network and its copy with the output biases moved by 0.5: the
difference is the same at every input, so epsilon 0.1 is refuted everywhere, epsilon 0.75 is
proved, and epsilon equal to the exact largest bias change is a tie the engine's (outward
rounded) bounds cannot close: its parts are left open and decided by this machine's prover.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

from equivcheck.campaign.distributed import engine_part, prove_distributed
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
