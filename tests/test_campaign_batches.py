"""Short instances on a Dask cluster (issue 14): batches of several instances per task, and the
imports a worker does once instead of in every forked child.

The bundled example pairs: ``tiny_original`` against ``tiny_pruned`` is proved (strict),
against ``tiny_perturbed`` refuted.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from equivcheck.campaign.cluster import BATCH_SECONDS, batches, run_dask
from equivcheck.campaign.instances import read_instances
from equivcheck.campaign.isolate import run_instance, warm

MODELS = Path(__file__).resolve().parent.parent / "models"
PAIRS = {"proved": "tiny_pruned.onnx", "refuted": "tiny_perturbed.onnx"}


def _csv(tmp_path, timeouts, verdicts=("proved", "refuted")):
    """A CSV of the example pairs, one row per timeout, alternating the expected verdicts;
    returns (instances, expected verdict per row)."""
    lines, expected = [], {}
    for k, t in enumerate(timeouts):
        want = verdicts[k % len(verdicts)]
        lines.append(f"{MODELS / 'tiny_original.onnx'},{MODELS / PAIRS[want]},0:1,strict,,{t:g}")
        expected[k + 1] = want
    path = tmp_path / "tiny.csv"
    path.write_text("\n".join(lines) + "\n")
    return read_instances(path), expected


def test_batches_keep_every_instance_once_in_order_within_the_limits(tmp_path):
    timeouts = [1, 2, 1, 30, 2, 2, 2, 2, 1, 6, 1, 1, 4, 4, 4]
    insts, _ = _csv(tmp_path, timeouts)
    runs = batches(insts, 3)
    assert [i.row for run in runs for i in run] == [i.row for i in insts]  # once each, in order
    for run in runs:
        assert len(run) <= 3
        if len(run) > 1:
            assert sum(i.timeout for i in run) <= BATCH_SECONDS
            assert all(i.timeout <= BATCH_SECONDS / 2 for i in run)
    assert [len(r) for r in runs if r[0].timeout == 30] == [1]  # a long instance runs alone
    assert max(len(r) for r in runs) == 3  # and short ones do share a task
    assert [len(r) for r in batches(insts, 1)] == [1] * len(insts)


def test_after_warm_a_check_imports_no_other_third_party_package(tmp_path):
    insts, expected = _csv(tmp_path, [5, 5])
    warm()
    before = set(sys.modules)
    for inst in insts:
        assert run_instance(inst)["verdict"] == expected[inst.row]
    new = {m.split(".")[0] for m in set(sys.modules) - before}
    third_party = new - set(sys.stdlib_module_names) - {"equivcheck"}
    assert not third_party, f"imported by every forked child again: {sorted(third_party)}"


@pytest.mark.parametrize("batch", [3, None])
def test_batched_tasks_give_every_record_once_with_its_verdict(tmp_path, batch):
    from distributed import Client, LocalCluster

    insts, expected = _csv(tmp_path, [2] * 9)
    got = []
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        run_dask(insts, "unused", 2, got.append, client=client, batch=batch)
    assert sorted(r["row"] for r in got) == sorted(expected)
    assert {r["row"]: r["verdict"] for r in got} == expected
