"""Sparse (csr_array) weights through the engine, compress and audit (issue 12).

Every network here exists twice: with dense weights and with the same weights as sparse
``csr_array`` layers (convolutions lowered to sparse matrices, or random pairs converted). The
checks that can fail:

* the engine's batched bounds of a sparse pair enclose the exact outputs at random points and
  agree with the dense copy's bounds (same allowances: they differ by float summation order
  only); a pruned copy whose zeros are not stored gets the difference on the union pattern;
* ``check_box`` gives the same verdicts on both copies (epsilon proved and refuted, argmax);
* a conv-like pair (1x16x16 input, 3x3 convolution with 8 channels, ReLU, 10 outputs; g with
  10% of the kernel zeroed) is proved at a large epsilon and refuted at a tiny one, with a
  counterexample that violates the spec in exact arithmetic and in onnxruntime (the pair built
  as an ONNX Conv graph);
* ``compress`` keeps sparse layers sparse and proves the result; the few-input stability search
  (``engine.units``) decides the same units on both copies;
* ``audit`` of a conv pair certifies an upper bound at or above the sampled deviation, and counts
  the zeroed kernel entries.
"""

from __future__ import annotations

import zlib
from fractions import Fraction

import numpy as np
import pytest
import scipy.sparse as sp

from equivcheck.core import matrix
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Box, Domain
from equivcheck.core.network import Affine, Layer, Network
from equivcheck.core.spec import Spec
from equivcheck.engine import Boxes, Outcome, PairModel, check_box, pair_bounds
from equivcheck.engine.rounding import two_diff
from equivcheck.io.onnx_affine import DENSE_LAYER_ENTRIES
from tests.test_engine import assert_bounds_enclose, random_box, random_pair, sampled_deviation


def limit() -> Deadline:
    """The time limit of every engine call here (each decides in well under a second)."""
    return Deadline.start(20.0)


# ---- builders ------------------------------------------------------------------------------------


def _f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def conv_matrix(kernel: np.ndarray, in_shape: tuple[int, int, int]) -> sp.csr_array:
    """The (out_units, in_units) csr matrix of a valid, stride-1 2-D convolution with
    ``kernel`` [co, ci, kh, kw] on a [ci, h, w] input (C order); zero kernel entries are stored
    (explicit zeros), as a lowering keeps the kernel's pattern."""
    co, ci, kh, kw = kernel.shape
    _, h, w = in_shape
    oh, ow = h - kh + 1, w - kw + 1
    o, y, x = np.meshgrid(np.arange(co), np.arange(oh), np.arange(ow), indexing="ij")
    out_idx = ((o * oh + y) * ow + x).ravel()
    rows, cols, vals = [], [], []
    for i in range(ci):
        for dy in range(kh):
            for dx in range(kw):
                rows.append(out_idx)
                cols.append(((i * h + y + dy) * w + x + dx).ravel())
                vals.append(np.broadcast_to(kernel[:, i, dy, dx][:, None, None], o.shape).ravel())
    m = sp.csr_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                     shape=(co * oh * ow, ci * h * w))
    m.sum_duplicates()
    return m


def conv_pair(seed: int = 0, side: int = 16, ch: int = 8, prune: float = 0.1, classes: int = 10):
    """(f, g, parts): conv(1 x side x side -> ch channels, 3x3) + ReLU + dense ``classes``;
    g has the ``prune`` fraction of smallest-magnitude kernel entries zeroed. ``parts`` holds
    the kernels and biases (for the ONNX copy)."""
    rng = np.random.default_rng(seed)
    k = _f32(rng.normal(0, 1 / 3, (ch, 1, 3, 3)))
    kg = k.copy()
    cut = np.sort(np.abs(k).ravel())[int(prune * k.size)]
    kg[np.abs(kg) < cut] = 0.0
    per = (side - 2) ** 2
    bc = _f32(rng.normal(0, 0.1, ch))
    w2 = _f32(rng.normal(0, 1 / np.sqrt(ch * per), (classes, ch * per)))
    b2 = _f32(rng.normal(0, 0.1, classes))

    def build(kernel, name):
        conv = Layer(Affine(conv_matrix(kernel, (1, side, side)), np.repeat(bc, per)), True, "conv")
        return Network((conv, Layer(Affine(w2.copy(), b2.copy()), False, "fc")),
                       input_shape=(1, 1, side, side), output_shape=(1, classes), source=name)

    return build(k, "f"), build(kg, "g"), dict(k=k, kg=kg, bc=bc, w2=w2, b2=b2, side=side)


def densified(n: Network) -> Network:
    """The same network with every weight dense (exact values kept)."""
    layers = []
    for lay in n.layers:
        a = lay.affine
        exact = None if a.exact_weight is None else a.dense_rational_weight()
        layers.append(Layer(Affine(matrix.dense(a.weight), a.bias.copy(), exact, a.exact_bias),
                            lay.relu, lay.name))
    return n.with_layers(layers)


def sparsified(n: Network, drop_zeros: bool = True) -> Network:
    """The same network with every weight a csr_array (zeros not stored unless ``drop_zeros``
    is False; exact values aligned with the stored entries)."""
    layers = []
    for lay in n.layers:
        a = lay.affine
        w = matrix.dense(a.weight)
        mask = (w != 0) if drop_zeros else np.ones_like(w, dtype=bool)
        r, c = np.nonzero(mask)
        csr = sp.csr_array((w[r, c], (r, c)), shape=w.shape)
        exact = None
        if a.exact_weight is not None:
            full = a.dense_rational_weight()
            exact = np.array([full[i, j] for i, j in zip(r, c)], dtype=object)  # C order = csr order
        layers.append(Layer(Affine(csr, a.bias.copy(), exact, a.exact_bias), lay.relu, lay.name))
    return n.with_layers(layers)


def conv_box(n: int, rng, radius: float) -> Box:
    c = _f32(rng.uniform(0.1, 0.9, n))
    return Box(tuple(Fraction(float(v)) for v in _f32(c - radius)),
               tuple(Fraction(float(v)) for v in _f32(c + radius)))


def _bounds(model, boxes, refine):
    lo = np.array([b.lower_float() for b in boxes])
    hi = np.array([b.upper_float() for b in boxes])
    mode, hidden, interval = refine.split("+")[0], "hidden" in refine, refine.endswith("interval")
    return pair_bounds(model, Boxes(lo, hi, model.width), mode, hidden_diff=hidden,
                       symbolic=not interval)


# ---- bounds ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["noise", "prune", "rational", "shape", "mixed"])
@pytest.mark.parametrize("refine", ["none", "all+hidden", "all+hidden+interval"])
def test_sparse_bounds_enclose_and_match_dense(kind, refine):
    rng = np.random.default_rng(zlib.crc32(f"{kind} {refine}".encode()))  # the same every run
    f, g = random_pair(rng, [3, 8, 7, 6, 3], "prune" if kind == "mixed" else kind)
    sf, sg = sparsified(f), sparsified(g)
    if kind == "mixed":  # f sparse against a dense g of its shape
        sg = g
    boxes = [random_box(rng, 3) for _ in range(4)]
    dense = _bounds(PairModel.build(f, g), boxes, refine)
    model = PairModel.build(sf, sg)
    assert any(matrix.is_sparse(lay.w) for lay in model.f)
    sparse = _bounds(model, boxes, refine)
    assert_bounds_enclose(sparse, sf, sg, boxes, rng, 25)
    for name in ("f_lo", "f_hi", "g_lo", "g_hi", "d_lo", "d_hi"):
        a, b = getattr(dense, name), getattr(sparse, name)
        assert np.allclose(a, b, rtol=1e-9, atol=1e-12), name


def test_pruned_pattern_difference_is_on_the_union():
    rng = np.random.default_rng(3)
    f, _ = random_pair(rng, [4, 12, 9, 3], "same")
    g_layers = []
    for lay in f.layers:
        w = lay.weight.copy()
        w[np.abs(w) < np.quantile(np.abs(w), 0.3)] = 0.0  # pruned: these zeros are not stored
        w[0, 0] = _f32(w[0, 0] + 0.25)  # and one entry changed
        g_layers.append(Layer(Affine(w, lay.bias.copy()), lay.relu, lay.name))
    g = f.with_layers(g_layers)
    sf, sg = sparsified(f), sparsified(g)
    model = PairModel.build(sf, sg)
    for k, (lf, lg) in enumerate(zip(f.layers, g.layers)):
        d = model.diff[k]
        exact_d, _ = two_diff(lf.weight, lg.weight)
        assert matrix.is_sparse(d.d)
        assert np.array_equal(d.d.toarray(), exact_d)  # every pruned entry is a difference entry
        assert d.d.nnz == sf.layers[k].weight.nnz  # g's pattern lies inside f's: the union is f's
        assert not np.any(d.d_err.toarray())  # exact floats: no error terms
    boxes = [random_box(rng, 4) for _ in range(3)]
    assert_bounds_enclose(_bounds(model, boxes, "all+hidden"), sf, sg, boxes, rng, 30)


# ---- verdicts ------------------------------------------------------------------------------------


def _assert_refutation(res, f, g, spec, box):
    assert res.outcome is Outcome.REFUTED
    assert box.contains(res.point)
    q = [Fraction(v) for v in res.point]
    assert not spec.holds(f.evaluate_exact(q), g.evaluate_exact(q))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_check_box_verdicts_match_dense(seed):
    rng = np.random.default_rng(100 + seed)
    f, g = random_pair(rng, [3, 10, 8, 3], "noise")
    sf, sg = sparsified(f), sparsified(g)
    box = random_box(rng, 3)
    dev = sampled_deviation(f, g, box, rng, 2000)
    for spec in (Spec.make("epsilon", 4 * dev + 0.05), Spec.make("epsilon", dev / 2),
                 Spec.make("argmax")):
        rd, rs = check_box(f, g, spec, box, limit()), check_box(sf, sg, spec, box, limit())
        assert rd.outcome is rs.outcome, (spec, rd.reason, rs.reason)
        if rs.outcome is Outcome.REFUTED:
            _assert_refutation(rs, sf, sg, spec, box)


def _onnx_conv_pair(parts):
    """f and g of :func:`conv_pair` as ONNX Conv graphs, run in onnxruntime: x -> (y_f, y_g)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    side = parts["side"]
    sessions = []
    for k in (parts["k"], parts["kg"]):
        inits = [numpy_helper.from_array(k.astype(np.float32), "K"),
                 numpy_helper.from_array(parts["bc"].astype(np.float32), "BC"),
                 numpy_helper.from_array(parts["w2"].astype(np.float32), "W2"),
                 numpy_helper.from_array(parts["b2"].astype(np.float32), "B2")]
        nodes = [helper.make_node("Conv", ["x", "K", "BC"], ["c"]),
                 helper.make_node("Relu", ["c"], ["r"]),
                 helper.make_node("Flatten", ["r"], ["fl"]),
                 helper.make_node("Gemm", ["fl", "W2", "B2"], ["y"], transB=1)]
        graph = helper.make_graph(
            nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, side, side])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, len(parts["b2"])])], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        sessions.append(ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]))

    def run(x):
        x = np.asarray(x, np.float32).reshape(1, 1, side, side)
        return tuple(s.run(None, {"x": x})[0][0].astype(np.float64) for s in sessions)

    return run


def test_conv_pair_proved_and_refuted_like_its_dense_copy():
    f, g, parts = conv_pair()
    assert f.layers[0].affine.is_sparse and f.layers[0].weight.nnz == 8 * 14 * 14 * 9
    rng = np.random.default_rng(5)
    box = conv_box(f.in_dim, rng, 0.02)
    dev = sampled_deviation(f, g, box, rng, 1000)
    assert dev > 0
    big = check_box(f, g, Spec.make("epsilon", 1.0), box, limit())
    assert big.outcome is Outcome.PROVED and big.stats.best_bound >= dev
    assert check_box(densified(f), densified(g), Spec.make("epsilon", 1.0), box, limit()).outcome is Outcome.PROVED
    spec = Spec.make("epsilon", dev / 4)
    res = check_box(f, g, spec, box, limit())
    _assert_refutation(res, f, g, spec, box)
    yf, yg = _onnx_conv_pair(parts)(res.point)  # the violation reproduces in onnxruntime
    assert np.abs(yf - yg).max() > float(spec.tolerance)
    assert np.allclose(yf, f.evaluate(np.array(res.point)), atol=1e-4)


def test_conv_pair_argmax_on_a_small_box():
    f, g, _ = conv_pair(seed=2)
    box = conv_box(f.in_dim, np.random.default_rng(9), 0.005)
    dense = check_box(densified(f), densified(g), Spec.make("argmax"), box, limit())
    sparse = check_box(f, g, Spec.make("argmax"), box, limit())
    assert dense.outcome is Outcome.PROVED and sparse.outcome is Outcome.PROVED
    (lo, hi), _ = box.sample_box()
    x = lo + np.random.default_rng(2).random((2000, f.in_dim)) * (hi - lo)
    assert np.array_equal(f.evaluate(x).argmax(1), g.evaluate(x).argmax(1))


# ---- compress and audit ----------------------------------------------------------------------------


def test_compress_keeps_a_conv_layer_sparse_and_proves_it():
    from equivcheck.compress.pipeline import compress

    # 3 x 22 x 22 units on 24 x 24 inputs: 1,452 x 576 = 836k entries dense, so the exported and
    # re-imported compressed layer stays sparse (the importer keeps layers under 65,536 dense)
    f, _, _ = conv_pair(side=24, ch=3)
    box = conv_box(f.in_dim, np.random.default_rng(4), 0.02)
    res = compress(f, Domain((box,), "box"), timeout=60)
    assert res.proof is not None and res.proof.proved, res.proof
    c = res.compressed
    assert c.layers[0].affine.is_sparse
    assert c.layers[0].out_dim < f.layers[0].out_dim  # stably inactive units removed
    assert res.table[0].params_after <= res.table[0].params_before == f.layers[0].weight.nnz + f.layers[0].out_dim
    (lo, hi), _ = box.sample_box()
    for x in lo + np.random.default_rng(1).random((5, f.in_dim)) * (hi - lo):
        q = [Fraction(float(v)) for v in x]
        assert c.evaluate_exact(q) == f.evaluate_exact(q)


def test_compress_with_few_inputs_decides_the_same_units_sparse_and_dense():
    from equivcheck.compress.pipeline import compress

    rng = np.random.default_rng(11)
    f, _ = random_pair(rng, [4, 24, 16, 3], "same")
    sf = sparsified(f)
    dom = Domain((random_box(rng, 4),), "box")
    rd, rs = compress(f, dom, timeout=30), compress(sf, dom, timeout=30)
    assert rs.proof is not None and rs.proof.proved
    assert [r.removed_inactive for r in rs.table] == [r.removed_inactive for r in rd.table]
    assert [r.folded_active for r in rs.table] == [r.folded_active for r in rd.table]
    assert sum(r.folded_active for r in rs.table) > 0  # a fold through sparse layers ...
    # ... the compressed network is exported and read back: the importer stores layers this
    # small dense (test_compress_keeps_a_conv_layer_sparse_and_proves_it covers a large one)
    assert all(lay.affine.is_sparse or lay.weight.size <= DENSE_LAYER_ENTRIES
               for lay in rs.compressed.layers)
    assert rs.compressed.description == rd.compressed.description
    assert rs.epsilon == rd.epsilon  # the same rounding (to float32) as the ONNX export's


def test_audit_of_a_conv_pair_bounds_the_sampled_deviation():
    from equivcheck.audit.auditor import audit

    f, g, parts = conv_pair(side=8, ch=4)
    rng = np.random.default_rng(6)
    box = conv_box(f.in_dim, rng, 0.05)
    r = audit(f, g, Domain((box,), "box"), timeout=10)
    dev = sampled_deviation(f, g, box, rng, 3000)
    assert float(r.deviation.upper) >= dev
    assert float(r.deviation.lower) <= float(r.deviation.upper)
    zeroed_kernel = int(np.sum((parts["kg"] == 0) & (parts["k"] != 0)))
    assert r.layers[0].weights_zeroed == zeroed_kernel * 6 * 6  # each kernel entry, every position
    assert r.layers[0].weights == f.layers[0].weight.nnz


def test_compress_folds_an_active_sparse_layer_into_the_next_sparse_one():
    from equivcheck.compress.pipeline import compress

    rng = np.random.default_rng(8)
    side = 8
    scale = sp.csr_array(sp.diags_array(np.full(side * side, 0.5)))  # a 1x1 convolution ...
    first = Layer(Affine(scale, np.full(side * side, 0.25)), True, "pointwise")  # ... always active
    box = conv_box(side * side, rng, 0.01)  # (inputs >= 0)
    kernel = conv_matrix(_f32(rng.normal(0, 0.3, (2, 1, 3, 3))), (1, side, side))
    centre = 0.5 * np.array([float(v) for v in box.lower]) + 0.3  # the first layer's value there
    bias = _f32(-(kernel @ centre) + rng.normal(0, 0.3, 2 * 36))  # some units near 0: unstable
    conv = Layer(Affine(kernel, bias), True, "conv")
    head = Layer(Affine(_f32(rng.normal(0, 0.2, (3, 2 * 36))), _f32(rng.normal(0, 0.1, 3))), False, "fc")
    f = Network((first, conv, head), input_shape=(1, 1, side, side), source="f")
    res = compress(f, Domain((box,), "box"), timeout=30)
    assert res.table[0].folded_into_next  # the always-active layer is gone ...
    assert len(res.compressed.layers) == 2  # ... folded into the conv, whose pattern it keeps
    # (exported and read back, a layer this small is stored dense: count its nonzeros)
    assert np.count_nonzero(matrix.dense(res.compressed.layers[0].weight)) <= conv.weight.nnz
    assert res.proof is not None and res.proof.proved, res.proof
    (lo, hi), _ = box.sample_box()
    x = lo + np.random.default_rng(2).random((200, f.in_dim)) * (hi - lo)
    bound = float(res.epsilon) if res.epsilon is not None else 0.0
    assert np.abs(res.compressed.evaluate(x) - f.evaluate(x)).max() <= bound + 1e-9


def test_bounds_past_the_deadline_skip_hidden_refinement_and_stay_sound(monkeypatch):
    """A wide conv layer's units are back-substituted in chunks; once the deadline has passed
    the chunks left are skipped (one bounding call on a CNN ran 18-50 s past its limit). The
    bounds then are looser but still enclose the exact outputs."""
    import equivcheck.engine.bounds as eb

    monkeypatch.setattr(eb, "ROW_FLOATS", 200)  # many small chunks
    rng = np.random.default_rng(12)
    f, g = (sparsified(n) for n in random_pair(rng, [6, 30, 40, 3], "noise"))
    boxes = [random_box(rng, 6) for _ in range(2)]
    lo = np.array([b.lower_float() for b in boxes])
    hi = np.array([b.upper_float() for b in boxes])
    model = PairModel.build(f, g)
    full = pair_bounds(model, Boxes(lo, hi, model.width), "all")
    late = pair_bounds(model, Boxes(lo, hi, model.width), "all", deadline=Deadline.start(1e-9))
    for pb in (full, late):
        assert_bounds_enclose(pb, f, g, boxes, rng, 10)
    assert np.all(late.d_hi >= full.d_hi) and np.all(late.d_lo <= full.d_lo)
    assert np.any(late.f_hi > full.f_hi + 1e-9)  # something was skipped
