"""Lossless compression: each transformation on hand-made nets, the proof, ONNX output,
agreement in onnxruntime, idempotence, the CLI."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import onnx
import pytest

import equivcheck.compress.pipeline as pipeline
from equivcheck.compress import compress
from equivcheck.core.domain import box_domain
from equivcheck.core.result import Verdict
from equivcheck.core.spec import Mode
from equivcheck.io.onnx_import import load_network

from .helpers import MODELS, assert_exact_agree, box_points, cli, mlp, ort_outputs


def grid(n_in: int) -> np.ndarray:
    """200 float32 points of [0, 1]^n_in and 200 of its corners."""
    return box_points(np.random.default_rng(0), np.zeros(n_in), np.ones(n_in), 200)


def test_removes_stably_inactive_units_and_proves_strictly():
    w1 = np.array([[1, 1], [-1, -1], [1, -1], [-1, 1]], dtype=float)
    b1 = np.array([1, -1, 0, 0], dtype=float)
    w2 = np.array([[1, 2, 3, 4], [0.5, -1, 1, 2]], dtype=float)
    model = mlp([w1, w2], [b1, np.zeros(2)])
    res = compress(model, domain="0:1", timeout=60)
    row = res.table[0]
    assert (row.units_before, row.removed_inactive, row.folded_active, row.units_after) == (4, 1, 0, 3)
    assert res.exact and res.epsilon is None
    assert res.proof.verdict is Verdict.PROVED and res.proof.spec.mode is Mode.STRICT
    orig = load_network(model)
    assert_exact_agree(orig, res.compressed, grid(2))
    assert res.compressed.num_parameters == orig.num_parameters - 5  # 2 weights + bias + 2 columns


def test_folds_linearly_dependent_active_units_with_a_proved_epsilon():
    third = float(np.float32(1 / 3))
    w1 = np.array([[1, 1], [third, third], [0, 0], [1, -1]], dtype=float)
    b1 = np.array([1, third, 3, 0], dtype=float)  # unit 1 = unit 0 / 3, unit 2 = the constant 3
    w2 = np.array([[0.1, 0.7, 0.3, 1.0]], dtype=float)
    model = mlp([w1, w2], [b1, np.array([0.2])])
    res = compress(model, domain="0:1", timeout=60)
    row = res.table[0]
    assert (row.removed_inactive, row.folded_active, row.units_after) == (0, 2, 2)
    assert not res.exact and res.epsilon is not None and 0 < res.epsilon < Fraction(1, 10**5)
    assert res.proof.verdict is Verdict.PROVED and res.proof.spec.mode is Mode.EPSILON
    assert res.proof.spec.tolerance == res.epsilon
    orig = load_network(model)
    assert_exact_agree(orig, res.compressed, grid(2), tol=res.epsilon)


def test_folds_an_all_active_layer_into_the_next():
    w1 = np.array([[1.0, 0.0], [0.0, 1.0]])
    b1 = np.array([2.0, 2.0])  # both always active on [0, 1]^2
    w2 = np.array([[1.0, -1.0], [-1.0, 1.0], [0.5, 0.5]])
    b2 = np.array([0.0, 0.0, -2.5])
    w3 = np.array([[1.0, 2.0, 3.0]])
    model = mlp([w1, w2, w3], [b1, b2, np.zeros(1)])
    res = compress(model, domain="0:1", timeout=60)
    assert res.table[0].folded_into_next
    assert res.compressed.hidden_widths == (3,)
    assert res.proof.verdict is Verdict.PROVED
    assert_exact_agree(load_network(model), res.compressed, grid(2))


def test_collapses_to_a_constant_when_a_layer_is_all_inactive():
    w1 = np.array([[-1.0, -1.0], [-2.0, 0.0]])
    b1 = np.array([-0.5, 0.0])  # <= 0 on [0, 1]^2 (the second one reaches 0 exactly)
    w2 = np.array([[1.0, 1.0], [2.0, -1.0]])
    b2 = np.array([0.75, -1.0])
    w3 = np.array([[1.0, 1.0]])
    model = mlp([w1, w2, w3], [b1, b2, np.array([0.125])])
    res = compress(model, domain="0:1", timeout=60)
    assert res.collapsed
    assert res.compressed.hidden_widths == ()
    assert res.compressed.evaluate(np.zeros(2))[0] == 0.875
    assert res.proof.verdict is Verdict.PROVED
    assert_exact_agree(load_network(model), res.compressed, grid(2))


def test_onnx_interface_and_onnxruntime_agreement(tmp_path):
    path = MODELS / "mnist_2x25_l1.onnx"
    out = tmp_path / "small.onnx"
    res = compress(path, domain="0:1", output=out, timeout=120)
    assert res.proof.verdict is Verdict.PROVED
    a, b = onnx.load(str(path)), onnx.load(str(out))
    onnx.checker.check_model(b)
    for xa, xb in ((a.graph.input[0], b.graph.input[0]), (a.graph.output[0], b.graph.output[0])):
        assert xa.name == xb.name
        assert xa.type.tensor_type.elem_type == xb.type.tensor_type.elem_type
        assert [d.dim_value for d in xa.type.tensor_type.shape.dim] == [d.dim_value for d in xb.type.tensor_type.shape.dim]
    rng = np.random.default_rng(1)
    x = np.vstack([rng.random((300, 784)), (rng.random((200, 784)) < 0.3)]).astype(np.float32)
    ya, yb = ort_outputs(a, x), ort_outputs(b, x)
    assert np.max(np.abs(ya - yb)) <= 1e-5 * (1 + np.max(np.abs(ya)))
    assert res.compressed.num_parameters < load_network(path).num_parameters


def test_compressing_a_compressed_model_removes_nothing():
    path = MODELS / "mnist_2x25_l1.compressed.onnx"
    res = compress(path, domain="0:1", timeout=120, verify=False)
    for row in res.table:
        assert row.removed_inactive == 0 and row.folded_active == 0 and not row.folded_into_next
        assert row.units_after == row.units_before
    assert res.compressed.num_parameters == load_network(path).num_parameters


def test_compress_is_idempotent_on_hand_nets():
    w1 = np.array([[1, 1], [-1, -1], [1, -1], [-1, 1], [2, 2]], dtype=float)
    b1 = np.array([1, -1, 0, 0, 2], dtype=float)
    w2 = np.array([[1, 2, 3, 4, 5]], dtype=float)
    first = compress(mlp([w1, w2], [b1, np.zeros(1)]), domain="0:1", timeout=60)
    second = compress(first.onnx_model, domain="0:1", timeout=60)
    assert first.compressed.description != "2-5-1"
    assert second.compressed.description == first.compressed.description
    assert all(r.removed_inactive == 0 and r.folded_active == 0 for r in second.table)


def test_cli_json_and_table(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(mlp([np.array([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]]), np.array([[1.0, 1.0, 1.0]])],
                  [np.array([0.5, -0.5, 0.0]), np.zeros(1)]), src)
    out = tmp_path / "small.onnx"
    res = cli("compress", src, "--domain", "0:1", "-o", out, "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["hidden_units_before"] == 3 and data["hidden_units_after"] == 2
    assert data["proof"]["verdict"] == "proved"
    assert out.exists()
    res = cli("compress", src, "--domain", "0:1", "-o", out)
    assert res.exit_code == 0
    assert "inactive" in res.stdout and "kept" in res.stdout  # the table's header
    assert "1 of 3 hidden units removed" in res.stdout.replace("\n", " ")
    assert "PROVED" in res.stdout
    assert res.stderr == ""


@pytest.mark.parametrize("args, needle", [
    (["compress", "missing.onnx", "-o", "x.onnx"], "no such file"),
    (["compress", "{src}", "--domain", "1:0", "-o", "{out}"], "inverted"),
    (["compress", "{src}", "-o", "{src}"], "overwrite"),
    (["compress", "{src}", "-o", "out.txt"], ".onnx"),
])
def test_cli_bad_input_is_one_line_and_exit_4(tmp_path, args, needle):
    src = tmp_path / "m.onnx"
    onnx.save(mlp([np.eye(2)], [np.zeros(2)]), src)
    args = [a.format(src=src, out=tmp_path / "o.onnx") for a in args]
    res = cli(*args)
    assert res.exit_code == (2 if needle == ".onnx" else 4)  # a bad suffix: a usage error
    assert needle in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_folds_are_dropped_when_their_epsilon_cannot_be_proved(monkeypatch):
    monkeypatch.setattr(pipeline, "FOLD_MAX_RELATIVE_EPSILON", 0.0)  # no epsilon is small enough
    third = float(np.float32(1 / 3))
    w1 = np.array([[1, 1], [third, third], [1, -1]], dtype=float)
    b1 = np.array([1, third, 0], dtype=float)
    w2 = np.array([[0.1, 0.7, 1.0]], dtype=float)
    model = mlp([w1, w2], [b1, np.array([0.2])])
    res = compress(model, domain="0:1", timeout=60)
    assert res.table[0].folded_active == 0 and res.table[0].units_after == 3
    assert res.exact and res.epsilon is None
    assert res.proof.verdict is Verdict.PROVED and res.proof.spec.mode is Mode.STRICT
    assert any("folds were dropped" in n for n in res.notes)


@pytest.mark.slow
def test_acas_network_over_a_small_box(external):
    src = external("acasxu/ACASXU_run2a_1_1_batch_2000.onnx")
    # a small box inside prop_1's region: analysis and proof finish quickly
    lo = [0.62, -0.05, -0.05, 0.46, -0.49]
    hi = [0.64, 0.05, 0.05, 0.48, -0.47]
    res = compress(src, domain=box_domain(lo, hi), timeout=20)
    assert res.proof.verdict is Verdict.PROVED
    assert res.hidden_after < res.hidden_before
    rng = np.random.default_rng(0)
    x = (np.array(lo) + rng.random((500, 5)) * (np.array(hi) - np.array(lo))).astype(np.float32)
    ya = ort_outputs(onnx.load(str(src)), x)
    yb = ort_outputs(res.onnx_model, x)
    tol = 0.0 if res.epsilon is None else float(res.epsilon)
    assert np.max(np.abs(ya - yb)) <= tol + 1e-5 * (1 + np.max(np.abs(ya)))


def rounding_net() -> onnx.ModelProto:
    """4 inputs in [0, 1]. Layer 0: three independent stably active units, two active units that
    are exact combinations of them (u3 = u0 + 2 u1, u4 = u1 - u2 + 8: folding them makes the
    next layer's weights sums that float32 cannot store exactly), and two unstable units. Layer
    1: 6 units, some unstable. Output: 3 values."""
    rng = np.random.default_rng(3)
    w = np.round(rng.normal(0, 1, (3, 4)) * 8) / 8  # multiples of 1/8: sums below stay exact
    act = np.vstack([w, w[0] + 2 * w[1], w[1] - w[2]])
    b_act = np.array([4.0, 4.0, 4.0, 12.0, 8.0])
    unst = np.array([[1.0, -1.0, 0.5, 0.0], [-0.5, 1.0, 0.0, -1.0]])
    w0 = np.vstack([act, unst])
    b0 = np.concatenate([b_act, [0.0, 0.25]])
    w1 = rng.normal(0, 0.5, (6, 7)).astype(np.float32)
    b1 = rng.normal(0, 0.5, 6).astype(np.float32)
    w2 = rng.normal(0, 0.5, (3, 6)).astype(np.float32)
    return mlp([w0, w1, w2], [b0, b1, np.zeros(3)])


def test_folds_are_kept_and_proved_by_the_engine_where_rounding_matters():
    model = rounding_net()
    seen = []
    res = compress(model, domain="0:1", timeout=60, progress=seen.append)
    assert res.table[0].folded_active == 2 and res.table[0].units_after == 5
    assert not res.exact and res.epsilon is not None and res.epsilon > 0  # the rounding is real
    assert res.proof.verdict is Verdict.PROVED and res.proof.spec.mode is Mode.EPSILON
    assert res.proof.spec.tolerance == res.epsilon
    assert all("engine" in box.reason for box in res.proof.boxes)
    assert not any("dropped" in n for n in res.notes)
    # the network as stored in the ONNX file, re-imported: within epsilon of the original,
    # in exact arithmetic and in onnxruntime
    orig = load_network(model)
    stored = load_network(res.onnx_model)
    rng = np.random.default_rng(4)
    pts = box_points(rng, np.zeros(4), np.ones(4), 300)
    assert_exact_agree(orig, stored, pts, tol=res.epsilon)
    x = rng.random((2000, 4)).astype(np.float32)
    gap = np.max(np.abs(ort_outputs(model, x) - ort_outputs(res.onnx_model, x)))
    assert gap <= float(res.epsilon) + 1e-5
    # the progress callback heard every stage, and the analysis ended with nothing open
    stages = [p.stage for p in seen]
    assert "stability" in stages and "proof" in stages
    last = [p for p in seen if p.stage == "stability"][-1]
    assert last.open == 0 and last.done == orig.num_relus


def test_padded_network_computes_the_stored_function_exactly():
    from equivcheck.bounds.stability import analyze_stability
    from equivcheck.compress.fold_proof import padded
    from equivcheck.core.domain import box_domain as bd

    model = rounding_net()
    res = compress(model, domain="0:1", timeout=60, verify=False)
    orig = load_network(model)
    dom = bd([0] * 4, [1] * 4)
    rep = analyze_stability(orig, dom, timeout=30)
    cand = pipeline._build(orig, rep, pipeline._report_bounds(orig, dom, rep), dom, True, [], "c")
    pad = padded(orig, cand.stored, cand.layers)
    assert pad is not None
    assert [lay.weight.shape for lay in pad.layers] == [lay.weight.shape for lay in orig.layers]
    assert res.compressed.description == cand.stored.description
    assert_exact_agree(cand.stored, pad, box_points(np.random.default_rng(5), np.zeros(4), np.ones(4), 100))


def test_a_removal_whose_weights_the_file_rounds_is_proved_by_the_engine(monkeypatch):
    """Units removed, none folded, but the written file cannot store the original weights (here
    float64 thirds in a float32 file; composed convolutions and residual sums in practice, e.g.
    VNN-COMP's resnet_2b): the epsilon of the rounding is proved by the engine on the padded,
    same-shaped pair, not left to the prover (whose separate bounds time out on a CNN)."""
    from equivcheck.core.network import Affine, Layer, Network

    def no_prover(*args, **kwargs):
        raise AssertionError("the prover was asked; the engine's epsilon proof should have done it")

    rng = np.random.default_rng(4)
    w1 = rng.normal(size=(8, 3)) / 3.0  # not float32 numbers
    b1 = np.r_[np.full(4, -9.0), rng.normal(size=4) / 3.0]  # units 0-3 dead on [0, 1]^3
    w2, b2 = rng.normal(size=(2, 8)) / 3.0, rng.normal(size=2) / 3.0
    net = Network((Layer(Affine(w1, b1), True, "l0"), Layer(Affine(w2, b2), False, "l1")),
                  input_shape=(1, 3), output_shape=(1, 2))
    monkeypatch.setattr(pipeline, "prove_networks", no_prover)
    res = compress(net, domain="0:1", timeout=60)
    assert res.table[0].removed_inactive >= 4 and res.table[0].folded_active == 0
    assert not res.exact and res.epsilon is not None and 0 < res.epsilon < Fraction(1, 10**5)
    assert res.proof.verdict is Verdict.PROVED and res.proof.spec.mode is Mode.EPSILON
    assert "engine" in res.proof.reason
    assert_exact_agree(net, res.compressed, grid(3), tol=res.epsilon)
