"""The API reference builds from the docstrings, offline (docs/build_api.py, pdoc)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_api_reference_builds_from_the_docstrings(tmp_path):
    assert importlib.util.find_spec("pdoc") is not None, "pdoc is in the dev extra"
    out = tmp_path / "api"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "NO_PROXY": "*",
           "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}  # no network
    done = subprocess.run([sys.executable, str(REPO / "docs" / "build_api.py"), str(out)],
                          capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pages written" in done.stdout
    page = (out / "equivcheck" / "core" / "result.html").read_text()
    assert "Verdict" in page and "the weakest of several is" in page  # a docstring, rendered
    index = (out / "equivcheck.html").read_text()
    assert "prove" in index
    for module in ("equivcheck/testing.html", "equivcheck/solve/prover.html",
                   "equivcheck/cli/prove.html", "equivcheck/pytest_plugin.html"):
        assert (out / module).exists(), module
