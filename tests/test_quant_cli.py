"""A float model against its int8 copy made by onnxruntime.quantization, as a user runs it:
the CLI and the pytest plugin's ``assert_equivalent``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from equivcheck.core.result import Verdict
from equivcheck.testing import assert_equivalent

from .helpers import MODELS, cli
from .quant_models import quantize

MODEL = MODELS / "mnist_2x25_l1.onnx"


@pytest.fixture(scope="module")
def int8(tmp_path_factory):
    return quantize(MODEL, tmp_path_factory.mktemp("q") / "int8.onnx", (1, 784), "qdq")


@pytest.fixture(scope="module")
def ball(tmp_path_factory):
    x = np.random.default_rng(3).random(784)
    path = tmp_path_factory.mktemp("d") / "ball.json"
    json.dump({"lower": np.clip(x - 0.01, 0, 1).tolist(), "upper": np.clip(x + 0.01, 0, 1).tolist()},
              open(path, "w"))
    return path


def test_cli_refutes_a_small_tolerance_with_a_counterexample_that_reproduces(int8, ball):
    r = cli("prove", str(MODEL), str(int8), "--domain", str(ball), "--mode", "epsilon",
            "--tolerance", "0.01", "--timeout", "60", "--json")
    assert r.exit_code == 1, r.output
    out = json.loads(r.stdout)
    assert out["verdict"] == "refuted"
    cex = out["counterexample"]
    assert cex["reproduces"] and cex["onnxruntime"]["margin"] > 0


def test_plugin_passes_a_large_tolerance_and_fails_a_small_one(int8, ball):
    res = assert_equivalent(str(MODEL), str(int8), domain=str(ball), mode="epsilon",
                            tolerance=50, timeout=60)
    assert res.verdict is Verdict.PROVED
    with pytest.raises(AssertionError, match="REFUTED"):
        assert_equivalent(str(MODEL), str(int8), domain=str(ball), mode="epsilon",
                          tolerance=0.01, timeout=60)


def test_compress_removes_the_int8_copys_dead_units(int8, ball):
    """compress takes a statically quantized model (tests/test_quant_compress.py checks it in
    depth): dead units removed, a QDQ file written, the structural proof."""
    out = int8.parent / "x.onnx"
    r = cli("compress", str(int8), "--domain", str(ball), "-o", str(out), "-q")
    assert r.exit_code == 0, r.output
    assert "dead removed" in r.stdout and "PROVED" in r.stdout and out.exists()
