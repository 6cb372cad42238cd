"""Campaigns (issue 14): many instances on worker processes or a Dask cluster, resumable, with a
bad row refused before any work; the HTML summary.

Twenty small instances are built here: random 3-8-8-2 networks against themselves (strict:
proved), against a copy whose output bias moved by 0.5 (epsilon 0.1: refuted at every input;
epsilon 1: proved) and against a copy with one hidden weight changed (argmax: decided either
way). Every verdict must be decisive (no unknown), so equal verdicts mean something.
"""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

import equivcheck.cli.campaign  # noqa: F401  (registers prove-many on the app)
from equivcheck.campaign.html import write_report
from equivcheck.campaign.instances import CampaignFileError, CampaignRowError, read_instances
from equivcheck.campaign.runner import run_campaign
from equivcheck.core.network import Affine, Layer

from .helpers import cli, random_net, save_onnx

N = 20
TIMEOUT = 30


def _shifted(net, delta):
    last = net.layers[-1]
    bias = (last.bias + np.float32(delta)).astype(np.float32).astype(np.float64)
    return net.with_layers([*net.layers[:-1], Layer(Affine(last.weight, bias), last.relu,
                                                           last.name)])


def _tweaked(net):
    first = net.layers[0]
    w = first.weight.copy()
    w[0, 0] = np.float32(w[0, 0] + 0.75)
    return net.with_layers([Layer(Affine(w, first.bias), first.relu, first.name),
                            *net.layers[1:]])


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """(csv path, expected verdict per row or None where either verdict is right)."""
    folder = tmp_path_factory.mktemp("campaign")
    rng = np.random.default_rng(14)
    rows, expected = [], {}
    for k in range(N):
        f = random_net(rng, [3, 8, 8, 2])
        a = save_onnx(f, folder / f"n{k}.onnx")
        kind = k % 4
        if kind == 0:
            b, spec, want = a, "strict,", "proved"
        elif kind in (1, 2):
            b = save_onnx(_shifted(f, 0.5), folder / f"n{k}_shift.onnx")
            spec, want = ("epsilon,0.1", "refuted") if kind == 1 else ("epsilon,1", "proved")
        else:
            b, spec, want = save_onnx(_tweaked(f), folder / f"n{k}_tweak.onnx"), "argmax,", None
        rows.append(f"{a.name},{b.name},-1:1,{spec},{TIMEOUT},kind{kind}")
        expected[k + 2] = want  # line numbers: a comment line comes first
    csv = folder / "instances.csv"
    csv.write_text("# a,b,domain,mode,tolerance,timeout,family\n" + "\n".join(rows) + "\n")
    return csv, expected


def _verdicts(records):
    return {r["row"]: r["verdict"] for r in records}


def _check(records, expected):
    got = _verdicts(records)
    assert sorted(got) == sorted(expected), "every row exactly once"
    for row, want in expected.items():
        assert got[row] in ((want,) if want else ("proved", "refuted")), (row, got[row])
    return got


@pytest.fixture(scope="module")
def serial(campaign):
    csv, expected = campaign
    res = run_campaign(read_instances(csv), workers=1)
    return _check(res.records, expected)


def test_one_and_two_workers_and_a_local_cluster_agree(campaign, serial, tmp_path):
    csv, expected = campaign
    out = tmp_path / "r.jsonl"
    two = run_campaign(read_instances(csv), out=out, workers=2)
    assert _check(two.records, expected) == serial
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["row"] for r in lines) == sorted(expected)
    assert all("boxes" in r and "options" in r for r in lines)  # the prove --json object
    dask = run_campaign(read_instances(csv), workers=2, scheduler="local")
    assert _check(dask.records, expected) == serial
    assert dask.summary.finished == N and dict(dask.summary.counts)["unknown"] == 0


def test_a_killed_dask_worker_loses_no_instance(campaign, serial):
    from distributed import Client, LocalCluster

    from equivcheck.campaign.cluster import run_dask

    csv, expected = campaign
    got, killed = [], []
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        pids = client.run(os.getpid)

        def emit(rec):
            got.append(rec)
            if not killed:  # kill a worker that is running an instance now
                busy = [w for w, keys in client.processing().items() if keys and w in pids]
                if busy:
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    killed.append(busy[0])

        run_dask(read_instances(csv), "unused", 2, emit, client=client)
    assert killed, "no worker was busy to be killed"
    rows = [r["row"] for r in got]
    assert len(rows) == len(set(rows)) == N
    assert _check(got, expected) == serial


def test_resume_after_an_interrupt_runs_only_the_missing_rows(campaign, serial, tmp_path):
    csv, expected = campaign
    out = tmp_path / "r.jsonl"
    seen = []

    def interrupt_after_five(rec):
        seen.append(rec["row"])
        if len(seen) == 5:
            raise KeyboardInterrupt

    first = run_campaign(read_instances(csv), out=out, workers=2, on_record=interrupt_after_five)
    assert first.interrupted and len(first.ran) == 5
    kept = out.read_text().splitlines()
    assert len(kept) == 5
    out.write_text("\n".join(kept) + "\n" + kept[0][:40])  # and a line cut short by a crash
    report = tmp_path / "campaign.html"
    again = cli("prove-many", csv, "--out", out, "--resume", "--workers", "2", "--quiet",
                "--report", report)
    assert again.exit_code == 0, again.output
    assert f"finished {N - 5} of {N - 5}" in " ".join(again.stderr.split())
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert _check(records, expected) == serial
    _check_report(report, expected)
    resumed = run_campaign(read_instances(csv), out=out, resume=True)
    assert resumed.ran == () and len(resumed.skipped) == N  # nothing left to run


def test_a_results_file_of_another_campaign_is_refused(campaign, tmp_path):
    csv, _ = campaign
    out = tmp_path / "r.jsonl"
    out.write_text(json.dumps({"row": 2, "verdict": "proved", "instance": {"key": "x"}}) + "\n")
    with pytest.raises(CampaignFileError, match="other inputs"):
        run_campaign(read_instances(csv), out=out, resume=True)


@pytest.mark.parametrize("bad, needle", [
    ("missing.onnx,{b},0:1,strict,,10", "model a missing.onnx: no such file"),
    ("{a},{b},0:1,epsilom,,10", "unknown mode"),
    ("{a},{b},0:1,epsilon,abc,10", "tolerance"),
    ("{a},{b},0:1,strict,0.1,10", "only applies"),
    ("{a},{b},0:1,strict,,-3", "timeout must be positive"),
    ("{a},{b},1:0,strict,,10", "domain"),
    ("{a},{b},box.vnnlib,strict,,10", "domain box.vnnlib: no such file"),
])
def test_a_bad_row_is_exit_4_naming_the_row_before_any_work(campaign, tmp_path, bad, needle):
    csv, _ = campaign
    good = []
    for line in csv.read_text().splitlines()[1:4]:
        cells = line.split(",")
        good.append(",".join([str(csv.parent / cells[0]), str(csv.parent / cells[1]), *cells[2:]]))
    a, b = good[0].split(",")[:2]
    text = "\n".join([*good, bad.format(a=a, b=b), *good]) + "\n"
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text(text)
    out = tmp_path / "r.jsonl"
    r = cli("prove-many", bad_csv, "--out", out)
    assert r.exit_code == 4, r.output
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "bad.csv:4: " in lines[0] and needle in lines[0], r.stderr
    assert not out.exists()  # nothing ran, nothing was written
    with pytest.raises(CampaignRowError):
        read_instances(bad_csv)


def _check_report(report, expected):
    """A table per family, the cactus plot, a link to each counterexample file."""
    page = report.read_text()
    for kind in range(4):
        assert f"Family kind{kind}" in page
    assert "<svg" in page
    for row in (row for row, v in expected.items() if v == "refuted"):
        link = f"campaign_counterexamples/row_{row}.json"
        assert link in page
        cex = json.loads((report.parent / link).read_text())
        assert cex["row"] == row and cex["counterexample"]["exact"]["violated"] is True


def test_write_report_without_counterexamples(tmp_path):
    recs = [{"row": 1, "family": "f", "verdict": "unknown", "seconds": 0.5, "reason": "<x>",
             "model_a": "a.onnx", "model_b": "b.onnx"}]
    page = write_report(tmp_path / "r.html", recs).read_text()
    assert "&lt;x&gt;" in page and "counterexamples" not in os.listdir(tmp_path)


def test_an_instance_that_fails_to_load_is_an_error_record_and_the_others_run(campaign,
                                                                             tmp_path):
    csv, _ = campaign
    first = csv.read_text().splitlines()[1].split(",")
    a, b = csv.parent / first[0], csv.parent / first[1]
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    rows = tmp_path / "mixed.csv"
    rows.write_text(f"{garbage},{b},-1:1,strict,,10\n{a},{b},-1:1,strict,,10\n")
    out = tmp_path / "r.jsonl"
    r = cli("prove-many", rows, "--out", out, "--quiet")
    assert r.exit_code == 4, r.output
    recs = {x["row"]: x for x in map(json.loads, out.read_text().splitlines())}
    assert recs[1]["verdict"] == "error" and "garbage.onnx" in recs[1]["reason"]
    assert recs[2]["verdict"] == "proved"
