"""``prove-many``'s option checks (issue 14): mistakes in the options are refused in one line
before any instance runs: ``--resume`` without ``--out`` is a usage error (exit 2), and an HTML
report without matplotlib (the ``report`` extra) is said before the work, not after it."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import equivcheck.cli.campaign  # noqa: F401  (registers prove-many on the app)

from .helpers import assert_one_line_error, cli, random_net, save_onnx


@pytest.fixture
def csv(tmp_path):
    """A one-row campaign that would run (and write its results) if it were allowed to."""
    a = save_onnx(random_net(np.random.default_rng(5), [2, 4, 1]), tmp_path / "a.onnx")
    path = tmp_path / "runs.csv"
    path.write_text(f"{a.name},{a.name},0:1,strict,,10\n")
    return path


def _one_usage_line(r, needle: str) -> None:
    assert r.exit_code == 2, (r.exit_code, r.output)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("equivcheck: error:"), r.stderr
    assert needle in lines[0] and "Traceback" not in r.output


def test_resume_without_out_is_a_usage_error(csv):
    r = cli("prove-many", csv, "--resume", "--quiet")
    _one_usage_line(r, "--resume needs --out")


def test_a_report_that_is_not_html_is_a_usage_error(csv, tmp_path):
    out = tmp_path / "r.jsonl"
    r = cli("prove-many", csv, "--out", out, "--report", tmp_path / "campaign.md")
    _one_usage_line(r, "campaign.md")
    assert not out.exists()  # refused before any instance ran


def test_a_report_without_matplotlib_is_refused_before_any_work(csv, tmp_path, monkeypatch):
    real = importlib.util.find_spec

    def without_matplotlib(name, *args, **kwargs):
        return None if name.split(".")[0] == "matplotlib" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", without_matplotlib)
    out, report = tmp_path / "r.jsonl", tmp_path / "campaign.html"
    r = cli("prove-many", csv, "--out", out, "--report", report)
    assert_one_line_error(r, "matplotlib", "equivcheck[report]")
    assert not out.exists() and not report.exists()  # said before any work


def test_with_matplotlib_the_same_campaign_runs_and_writes_its_report(csv, tmp_path):
    out, report = tmp_path / "r.jsonl", tmp_path / "campaign.html"
    r = cli("prove-many", csv, "--out", out, "--report", report, "--workers", "1", "--quiet")
    assert r.exit_code == 0, r.output
    assert out.read_text().count("\n") == 1 and "<svg" in report.read_text()
