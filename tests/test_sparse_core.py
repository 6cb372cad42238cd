"""Sparse weights (scipy ``csr_array``, the layers a CNN lowers to) through the core: exact
arithmetic, every bound method, the solver encoding, the canonical form and the region bounds
give what the dense network with the same weights gives, and a convolution far too large to
densify is handled with memory linear in its stored entries (issue 12).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import scipy.sparse as sp

import equivcheck
from equivcheck.bounds.difference import difference_bounds
from equivcheck.bounds.interval import affine_interval
from equivcheck.bounds.methods import bounds_pair, sound_bounds
from equivcheck.bounds.stability import analyze_stability
from equivcheck.core import matrix
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import box_domain
from equivcheck.core.exact import integer_affine, integer_entries
from equivcheck.core.network import Affine, Layer, Network
from equivcheck.core.options import BoundMethod, ProverOptions
from equivcheck.core.result import Verdict
from equivcheck.errors import UnsupportedModelError
from equivcheck.regions.bounds import refined_bound, theorem1_bound
from equivcheck.regions.counting import count_regions
from tests.helpers import f32, permute_hidden, random_net

# ---- builders ----------------------------------------------------------------------------------


def sparse_copy(net: Network) -> Network:
    """The same network (float weights) with every weight stored as a ``csr_array``."""
    return net.with_layers([Layer(Affine(matrix.as_csr(lay.weight), lay.bias), lay.relu, lay.name)
                            for lay in net.layers])


def dense_copy(net: Network) -> Network:
    return net.with_layers([Layer(Affine(matrix.dense(lay.weight), lay.bias), lay.relu, lay.name)
                            for lay in net.layers])


def conv_matrix(rng, c_in: int, h: int, w: int, c_out: int, k: int, stride: int):
    """A ``k x k`` convolution (no padding) of a ``c_in x h x w`` input as a ``csr_array``
    (rows: output channel, row, column in C order), float32 weights, and its bias."""
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    kern = f32(rng.normal(0, 1 / np.sqrt(c_in * k * k), (c_out, c_in, k, k)))
    co, i, j, ci, a, b = np.meshgrid(np.arange(c_out), np.arange(oh), np.arange(ow),
                                     np.arange(c_in), np.arange(k), np.arange(k), indexing="ij")
    rows = ((co * oh + i) * ow + j).ravel()
    cols = ((ci * h + i * stride + a) * w + j * stride + b).ravel()
    vals = kern[co, ci, a, b].ravel()
    m = sp.csr_array((vals, (rows, cols)), shape=(c_out * oh * ow, c_in * h * w))
    bias = f32(rng.normal(0, 0.1, c_out)).repeat(oh * ow)
    return m, bias


def conv_net(seed: int, c_in=1, h=12, w=12, c_out=8, k=2, stride=1, outputs=10) -> Network:
    """conv (sparse) -> ReLU -> dense ``outputs`` layer."""
    rng = np.random.default_rng(seed)
    m, b = conv_matrix(rng, c_in, h, w, c_out, k, stride)
    w2 = f32(rng.normal(0, 1 / np.sqrt(m.shape[0]), (outputs, m.shape[0])))
    b2 = f32(rng.normal(0, 0.1, outputs))
    return Network((Layer(Affine(m, b), True, "conv"), Layer(Affine(w2, b2), False, "fc")),
                   input_shape=(1, c_in, h, w), output_shape=(1, outputs), source=f"conv{seed}")


def two_conv_net(seed: int) -> Network:
    """conv 1x12x12 -> 4x11x11 -> ReLU -> conv -> 4x10x10 -> ReLU -> dense 3 (both convs sparse)."""
    rng = np.random.default_rng(seed)
    m1, b1 = conv_matrix(rng, 1, 12, 12, 4, 2, 1)
    m2, b2 = conv_matrix(rng, 4, 11, 11, 4, 2, 1)
    w3 = f32(rng.normal(0, 0.1, (3, m2.shape[0])))
    return Network((Layer(Affine(m1, b1), True), Layer(Affine(m2, b2), True),
                    Layer(Affine(w3, f32(rng.normal(0, 0.1, 3))), False)), source=f"2conv{seed}")


def scaled_head(net: Network, factor: float) -> Network:
    last = net.layers[-1]
    return net.with_layers(list(net.layers[:-1]) + [
        Layer(Affine(last.weight * factor, last.bias), last.relu, last.name)])


def exact_points(rng, n_in: int, count: int, lo=0.0, hi=1.0):
    return [[Fraction(float(v)) for v in f32(rng.uniform(lo, hi, n_in))] for _ in range(count)]


def assert_enclose(bounds, net: Network, points) -> None:
    for x in points:
        for lb, z in zip(bounds, net.pre_activations_exact(x)):
            assert all(Fraction(float(lo)) <= v <= Fraction(float(hi))
                       for lo, v, hi in zip(lb.lower, z, lb.upper))


@pytest.fixture(autouse=True)
def no_big_densify(monkeypatch):
    """Any attempt to densify a sparse matrix of more than MAX_DENSE_ENTRIES entries fails."""
    for cls in (sp.csr_array, sp.csc_array, sp.coo_array):
        orig = cls.toarray

        def guarded(self, *args, _orig=orig, **kw):
            rows, cols = self.shape
            assert rows * cols <= matrix.MAX_DENSE_ENTRIES, f"densified a {self.shape} matrix"
            return _orig(self, *args, **kw)

        monkeypatch.setattr(cls, "toarray", guarded)


# ---- exact arithmetic --------------------------------------------------------------------------


def test_row_counts_and_integer_forms_match_the_dense_matrix():
    rng = np.random.default_rng(1)
    w = f32(rng.normal(size=(6, 5)))
    w[w < 0.3] = 0.0
    s = matrix.as_csr(w)
    assert list(matrix.row_counts(s)) == list(np.count_nonzero(w, axis=1))
    assert list(matrix.row_counts(w)) == [5] * 6
    dense, sparse = Affine(w, f32(rng.normal(size=6))), None
    sparse = Affine(s, dense.bias)
    wd, bd, dd = integer_affine(dense)
    ws, bs, ds = integer_affine(sparse)
    assert dd == ds and np.array_equal(wd, ws) and np.array_equal(bd, bs)
    vals, _, den = integer_entries(sparse)
    assert den == dd and list(vals) == [wd[i, j] for i, j in zip(*s.nonzero())]


def test_exact_pre_activations_of_sparse_copies_equal_the_dense_ones():
    rng = np.random.default_rng(2)
    for widths in ([4, 8, 8, 3], [6, 5, 7, 2]):
        d = random_net(rng, widths)
        s = sparse_copy(d)
        pts = exact_points(rng, widths[0], 4) + [[Fraction(1, 3)] * widths[0]]  # dyadic + not
        for x in pts:
            for zd, zs in zip(d.pre_activations_exact(x), s.pre_activations_exact(x)):
                assert list(zd) == list(zs)


def test_exact_weights_of_a_sparse_layer_are_used_entry_by_entry():
    """A sparse layer whose exact weights are not its floats (1/3, -2/7) computes with them."""
    w = sp.csr_array(np.array([[1 / 3, 0.0, -2 / 7], [0.0, 0.5, 0.0]]))
    exact = np.array([Fraction(1, 3), Fraction(-2, 7), Fraction(1, 2)], dtype=object)
    s = Affine(w, np.zeros(2), exact_weight=exact)
    d = Affine(w.toarray(), np.zeros(2), exact_weight=s.dense_rational_weight())
    x = [Fraction(3), Fraction(1, 5), Fraction(7)]
    net_s = Network((Layer(s, False),))
    net_d = Network((Layer(d, False),))
    assert list(net_s.pre_activations_exact(x)[0]) == [Fraction(1) - 2, Fraction(1, 10)]
    assert list(net_s.pre_activations_exact(x)[0]) == list(net_d.pre_activations_exact(x)[0])


def test_same_as_compares_exact_sparse_weights_entry_by_entry():
    w = sp.csr_array(np.array([[1 / 3, 0.0, -2 / 7], [0.0, 0.5, 0.0]]))
    exact = np.array([Fraction(1, 3), Fraction(-2, 7), Fraction(1, 2)], dtype=object)
    s = Affine(w, np.zeros(2), exact_weight=exact)
    d = Affine(w.toarray(), np.zeros(2), exact_weight=s.dense_rational_weight())
    other = exact.copy()
    other[1] = Fraction(-2, 7) + Fraction(1, 10**30)  # the same nearest float, another value
    assert s.same_as(d) and d.same_as(s)
    assert s.same_as(Affine(w.copy(), np.zeros(2), exact_weight=exact.copy()))
    assert not s.same_as(Affine(w.copy(), np.zeros(2), exact_weight=other))


def test_conv_net_exact_forward_matches_float_and_dense_copy():
    c = conv_net(3)
    assert c.layers[0].affine.is_sparse and c.layers[0].weight.nnz == 8 * 11 * 11 * 4
    d = dense_copy(c)
    rng = np.random.default_rng(3)
    for x in exact_points(rng, c.in_dim, 3):
        ys, yd = c.evaluate_exact(x), d.evaluate_exact(x)
        assert ys == yd
        assert np.allclose([float(v) for v in ys], c.evaluate(np.array([float(v) for v in x])),
                           atol=1e-9)


# ---- bounds ------------------------------------------------------------------------------------


def test_interval_allowance_counts_stored_entries_per_row():
    """Sparse rows get the allowance of their own number of terms, which is never above the
    dense one (so the bounds are at least as tight) and still encloses."""
    rng = np.random.default_rng(4)
    w = f32(rng.normal(size=(3, 400)))
    w[:, 5:] = 0.0
    lo, hi = np.zeros(400), np.ones(400)
    dl, du = affine_interval(w, np.zeros(3), lo, hi)
    sl, su = affine_interval(matrix.as_csr(w), np.zeros(3), lo, hi)
    assert np.all(sl >= dl) and np.all(su <= du) and np.any(su < du)
    exact_hi = [sum(Fraction(float(v)) for v in row if v > 0) for row in w]
    assert all(Fraction(float(u)) >= e for u, e in zip(su, exact_hi))


@pytest.mark.parametrize("method", ["interval", "symbolic", "lp"])
def test_bounds_of_sparse_copies_match_dense_and_enclose(method):
    rng = np.random.default_rng(5)
    d = random_net(rng, [5, 10, 10, 3])
    s = sparse_copy(d)
    lo, hi = np.full(5, -0.5), np.full(5, 0.5)
    bd, bs = sound_bounds(d, lo, hi, method), sound_bounds(s, lo, hi, method)
    for x, y in zip(bd, bs):
        assert np.allclose(x.lower, y.lower, rtol=1e-9, atol=1e-12)
        assert np.allclose(x.upper, y.upper, rtol=1e-9, atol=1e-12)
    assert_enclose(bs, s, exact_points(rng, 5, 20, -0.5, 0.5))


def test_conv_net_bounds_enclose_and_match_its_dense_copy():
    c = conv_net(6)
    d = dense_copy(c)
    lo, hi = np.zeros(c.in_dim), np.ones(c.in_dim)
    rng = np.random.default_rng(6)
    pts = exact_points(rng, c.in_dim, 4)
    for method in ("interval", "symbolic", "lp"):
        bs, bd = sound_bounds(c, lo, hi, method), sound_bounds(d, lo, hi, method)
        assert_enclose(bs, c, pts)
        for x, y in zip(bd, bs):  # never looser than dense (smaller allowances), barely tighter
            assert np.all(y.lower >= x.lower - 1e-12) and np.all(y.upper <= x.upper + 1e-12)
            assert np.allclose(x.upper, y.upper, rtol=1e-9, atol=1e-9)


def test_two_conv_layers_bounds_chunked_or_not_match_the_dense_copy(monkeypatch):
    """Back-substitution through two sparse layers, in one chunk or in many, gives the dense
    copy's bounds (to rounding) and encloses; so do the difference bounds."""
    import equivcheck.bounds.symbolic as symbolic

    c, g = two_conv_net(20), scaled_head(two_conv_net(20), 1 + 2**-8)
    d = dense_copy(c)
    lo, hi = np.zeros(c.in_dim), np.full(c.in_dim, 0.5)
    pts = exact_points(np.random.default_rng(20), c.in_dim, 3, 0.0, 0.5)
    want = sound_bounds(d, lo, hi, "symbolic")
    one = sound_bounds(c, lo, hi, "symbolic")
    monkeypatch.setattr(symbolic, "SPARSE_CHUNK_ENTRIES", 2_000)  # 2 units per chunk
    many = sound_bounds(c, lo, hi, "symbolic")
    for x, y, z in zip(want, one, many):
        assert np.array_equal(y.lower, z.lower) and np.array_equal(y.upper, z.upper)
        assert np.allclose(x.lower, y.lower, rtol=1e-9, atol=1e-12)
    assert_enclose(many, c, pts)
    bg = sound_bounds(g, lo, hi, "symbolic")
    diff = difference_bounds(c, g, lo, hi, many, bg, symbolic=True)
    dense_diff = difference_bounds(d, dense_copy(g), lo, hi, want, bg, symbolic=True)
    assert np.allclose(diff[-1].pre_upper, dense_diff[-1].pre_upper, rtol=1e-9, atol=1e-12)
    for x in pts:
        ya, yb = c.evaluate_exact(x), g.evaluate_exact(x)
        assert all(Fraction(float(lo_)) <= u - v <= Fraction(float(hi_)) for lo_, u, v, hi_
                   in zip(diff[-1].post_lower, ya, yb, diff[-1].post_upper))


def test_chunked_back_substitution_stops_at_the_deadline(monkeypatch):
    import equivcheck.bounds.symbolic as symbolic

    c = two_conv_net(21)
    lo, hi = np.zeros(c.in_dim), np.full(c.in_dim, 0.5)
    monkeypatch.setattr(symbolic, "SPARSE_CHUNK_ENTRIES", 2_000)
    step = symbolic.chunk_rows(c, 1)
    assert 1 <= step < c.layers[1].out_dim
    got = symbolic.symbolic_layer(c, 1, sound_bounds(c, lo, hi, "interval"), lo, hi,
                                  Deadline.start(1e-9))
    assert np.all(np.isfinite(got.upper[:step])) and np.all(np.isinf(got.upper[step:]))


def test_sparse_vertex_extremes_equal_the_dense_ones():
    from equivcheck.bounds.stability_exact import sparse_vertex_extremes, vertex_extremes

    c = conv_net(22)
    dense_rational = dense_copy(c).layers[0].affine.rational_weight()
    box = box_domain([Fraction(-1, 3)] * c.in_dim, [Fraction(1, 7)] * c.in_dim).boxes[0]
    rows = list(range(0, c.layers[0].out_dim, 7))
    assert sparse_vertex_extremes(c.layers[0].affine, rows, box) == vertex_extremes(
        dense_rational, rows, box)
    w = c.layers[0].weight
    exact = np.empty(w.nnz, dtype=object)
    exact[:] = [Fraction(float(v)) + Fraction(1, 3) for v in w.data]  # not floats: Fractions
    s = Affine(w, c.layers[0].bias, exact_weight=exact)
    assert sparse_vertex_extremes(s, rows, box) == vertex_extremes(s.dense_rational_weight(),
                                                                   rows, box)


def test_exact_stability_analysis_decides_the_same_units():
    rng = np.random.default_rng(7)
    d = random_net(rng, [4, 12, 12, 2])
    s = sparse_copy(d)
    dom = box_domain([0] * 4, [1] * 4)
    rd = analyze_stability(d, dom, timeout=20)
    rs = analyze_stability(s, dom, timeout=20)
    assert [lay.status for lay in rd.layers] == [lay.status for lay in rs.layers]
    assert rs.undecided == rd.undecided
    ba, bb = bounds_pair(d, s, np.zeros(4), np.ones(4), BoundMethod.EXACT, Deadline.start(20))
    assert_enclose(bb, s, exact_points(rng, 4, 10))


def test_difference_bounds_of_sparse_pairs_match_dense_and_enclose():
    rng = np.random.default_rng(8)
    f, g = random_net(rng, [4, 8, 8, 3]), random_net(rng, [4, 8, 8, 3])
    lo, hi = np.zeros(4), np.ones(4)
    bf, bg = sound_bounds(f, lo, hi, "symbolic"), sound_bounds(g, lo, hi, "symbolic")
    want = difference_bounds(f, g, lo, hi, bf, bg, symbolic=True)
    for a, b in ((sparse_copy(f), sparse_copy(g)), (f, sparse_copy(g))):
        got = difference_bounds(a, b, lo, hi, bf, bg, symbolic=True)
        for x, y in zip(want, got):
            assert np.allclose(x.pre_lower, y.pre_lower, rtol=1e-9, atol=1e-12)
            assert np.allclose(x.post_upper, y.post_upper, rtol=1e-9, atol=1e-12)
    for x in exact_points(rng, 4, 10):
        za, zb = f.pre_activations_exact(x), g.pre_activations_exact(x)
        for db, p, q in zip(got, za, zb):
            assert all(Fraction(float(lo_)) <= u - v <= Fraction(float(hi_))
                       for lo_, u, v, hi_ in zip(db.pre_lower, p, q, db.pre_upper))


def test_difference_bounds_of_a_conv_net_and_itself_are_zero():
    c = conv_net(9)
    lo, hi = np.zeros(c.in_dim), np.ones(c.in_dim)
    b = sound_bounds(c, lo, hi, "symbolic")
    diff = difference_bounds(c, conv_net(9), lo, hi, b, b, symbolic=True)
    assert all(np.all(np.abs(d.post_upper) < 1e-250) and np.all(np.abs(d.post_lower) < 1e-250)
               for d in diff)


# ---- the prover --------------------------------------------------------------------------------


SOLVER_ONLY = ProverOptions(canonical=False, engine=False, falsify=False)


def _pairs():
    rng = np.random.default_rng(10)
    a = random_net(rng, [4, 8, 8, 3])
    shifted = a.with_layers(list(a.layers[:-1]) + [Layer(Affine(a.layers[-1].weight,
                                                                 a.layers[-1].bias + 0.25), False)])
    return [
        ("strict", None, permute_hidden(a, 1, np.random.default_rng(0).permutation(8)), a,
         Verdict.PROVED),
        ("strict", None, scaled_head(a, 1 + 2**-10), a, Verdict.REFUTED),
        ("argmax", None, shifted, a, Verdict.PROVED),
        ("argmax", None, scaled_head(a, -1.0), a, Verdict.REFUTED),
        ("epsilon", Fraction(1, 4), shifted, a, Verdict.PROVED),
        ("epsilon", Fraction(1, 5), shifted, a, Verdict.REFUTED),
    ]


@pytest.mark.parametrize("mode,tol,b,a,expected", _pairs())
def test_prove_verdicts_on_sparse_pairs_equal_the_dense_ones(mode, tol, b, a, expected):
    for opts in (SOLVER_ONLY, ProverOptions()):
        got = [equivcheck.prove(x, y, mode=mode, tolerance=tol, timeout=30, options=opts)
               for x, y in ((a, b), (sparse_copy(a), sparse_copy(b)), (a, sparse_copy(b)))]
        assert [r.verdict for r in got] == [expected] * 3, [r.reason for r in got]
        for r in got:
            if expected is Verdict.REFUTED:
                assert r.counterexample is not None and r.counterexample.exact.violated


def test_conv_net_against_changed_copies():
    c = conv_net(11)
    near = scaled_head(c, 1 + 2**-12)
    r = equivcheck.prove(c, near, mode="epsilon", tolerance=0.01, timeout=30)
    assert r.verdict is Verdict.PROVED
    r = equivcheck.prove(c, scaled_head(c, -1.0), mode="argmax", timeout=30)
    assert r.verdict is Verdict.REFUTED and r.counterexample.exact.violated
    r = equivcheck.prove(c, sparse_copy(dense_copy(c)), mode="strict", timeout=30)
    assert r.verdict is Verdict.PROVED


def big_conv(seed: int) -> Network:
    """3x64x64 input, 4x4 convolution with stride 2 and 16 channels: 15,376 x 12,288 (189
    million entries dense, 738k stored), then 10 outputs."""
    return conv_net(seed, c_in=3, h=64, w=64, c_out=16, k=4, stride=2)


def test_wide_conv_net_is_proved_against_itself_without_densifying():
    a, b = big_conv(12), big_conv(12)  # built twice: equal values, distinct objects
    w = a.layers[0].weight
    assert w.shape[0] * w.shape[1] > matrix.MAX_DENSE_ENTRIES and w.shape[0] <= 100_000
    r = equivcheck.prove(a, b, domain="0:1", mode="strict", timeout=30)
    assert r.verdict is Verdict.PROVED and r.seconds < 10
    near = scaled_head(a, 1 + 2**-12)
    r = equivcheck.prove(a, near, domain="0:0.01", mode="epsilon", tolerance=0.01, timeout=30)
    assert r.verdict is Verdict.PROVED and "difference bounds" in r.reason
    assert any("canonical form not built" in n for n in r.notes)


def permuted_units(net: Network, seed: int) -> Network:
    """The same function, the units of hidden layer 0 listed in a random order."""
    l0, l1 = net.layers[0], net.layers[1]
    perm = np.random.default_rng(seed).permutation(l0.out_dim)
    return net.with_layers([Layer(Affine(l0.weight[perm], l0.bias[perm]), True, l0.name),
                            Layer(Affine(l1.weight[:, perm], l1.bias), l1.relu, l1.name),
                            *net.layers[2:]])


def test_wide_conv_net_with_its_channels_reordered_is_proved_without_densifying():
    from equivcheck.canon.permuted import permuted_match

    a = big_conv(18)
    b = permuted_units(a, 1)
    assert permuted_match(a, b) == 1
    r = equivcheck.prove(a, b, domain="0:1", mode="strict", timeout=30)
    assert r.verdict is Verdict.PROVED and "order of the units in 1 hidden layer" in r.reason
    c = two_conv_net(19)
    assert permuted_match(c, permuted_units(c, 2)) == 1
    w = c.layers[1].weight.copy()
    w.data[5] = np.nextafter(w.data[5], 1.0)  # one weight one ulp away: not the same network
    changed = c.with_layers([c.layers[0], Layer(Affine(w, c.layers[1].bias), True), c.layers[2]])
    assert permuted_match(c, changed) is None
    assert permuted_match(c, scaled_head(c, -1.0)) is None


def test_wide_conv_net_ends_in_an_honest_unknown_without_the_solver():
    """15,376 ReLUs: the solver is not handed 1.8 million weights (it took 1.9 GB only to time
    out); the verdict is UNKNOWN at once, saying why."""
    a = big_conv(13)
    r = equivcheck.prove(a, scaled_head(a, 1 + 2**-12), domain="0:0.01", mode="epsilon",
                         tolerance=1e-9, timeout=20, options=SOLVER_ONLY)
    assert r.verdict is Verdict.UNKNOWN and "solver not started" in r.reason
    assert r.seconds < 15


def test_solver_times_out_honestly_on_a_sparse_query(monkeypatch):
    import equivcheck.solve.search as search

    c = two_conv_net(17)
    r = equivcheck.prove(c, scaled_head(c, 1 + 2**-12), domain="0:1", mode="epsilon",
                         tolerance=1e-12, timeout=3, options=SOLVER_ONLY)
    assert r.verdict in (Verdict.UNKNOWN, Verdict.REFUTED) and r.seconds < 6
    if r.verdict is Verdict.UNKNOWN:
        assert "time" in r.reason
    monkeypatch.setattr(search, "SPARSE_SOLVER_PARAMS", 1_000)
    r = equivcheck.prove(c, scaled_head(c, 1 + 2**-12), domain="0:1", mode="epsilon",
                         tolerance=1e-12, timeout=3, options=SOLVER_ONLY)
    assert r.verdict is Verdict.UNKNOWN and "solver not started" in r.reason


# ---- canon and regions -------------------------------------------------------------------------


def test_canonical_form_proves_a_small_sparse_rewrite():
    rng = np.random.default_rng(14)
    a = random_net(rng, [4, 6, 6, 2])
    b = sparse_copy(permute_hidden(a, 0, np.random.default_rng(1).permutation(6)))
    r = equivcheck.prove(a, b, mode="strict", timeout=30, options=ProverOptions(engine=False))
    assert r.verdict is Verdict.PROVED and "canonical forms are equal" in r.reason


def test_region_bounds_on_sparse_layers():
    rng = np.random.default_rng(15)
    d = random_net(rng, [3, 6, 5, 2])
    s = sparse_copy(d)
    assert refined_bound(s, "0:1").value == refined_bound(d, "0:1").value
    assert count_regions(s, "0:1", timeout=30).count == count_regions(d, "0:1", timeout=30).count
    c = big_conv(16)
    assert theorem1_bound(c.in_dim, c.hidden_widths) > 0
    refined = refined_bound(c, "0:0.01")
    assert 0 < refined.value <= 2 ** c.num_relus
    with pytest.raises(UnsupportedModelError, match="exact region counting"):
        count_regions(c, "0:0.01", timeout=5)


def test_solver_goes_first_on_different_shapes_but_not_on_wide_sparse_pairs():
    """Pairs of different shapes go to the solver first (it sees the units both share), except
    those with sparse (convolution) layers and many unstable units: there z3's child took 1 GB
    for nothing on a small CNN against its compressed pruned copy, and the engine proved it on
    one node."""
    from types import SimpleNamespace

    from equivcheck.core.options import ProverOptions
    from equivcheck.engine import PairModel
    from equivcheck.solve.search import solver_goes_first

    rng = np.random.default_rng(21)
    w1, w2 = rng.normal(size=(6, 4)), rng.normal(size=(2, 6))
    a = Network((Layer(Affine(w1, np.zeros(6)), True), Layer(Affine(w2, np.zeros(2)), False)))
    b = Network((Layer(Affine(w1[:5], np.zeros(5)), True), Layer(Affine(w2[:, :5], np.zeros(2)), False)))
    sa, sb = (Network(tuple(Layer(Affine(matrix.as_csr(lay.weight), lay.bias), lay.relu)
                            for lay in n.layers)) for n in (a, b))
    opts = ProverOptions()
    many = [SimpleNamespace(unstable=opts.solver_first_unstable + 1)]
    few = [SimpleNamespace(unstable=0)]
    assert solver_goes_first(PairModel.build(a, b), many, opts)  # dense, different shapes
    assert not solver_goes_first(PairModel.build(sa, sb), many, opts)  # sparse, many unstable
    assert solver_goes_first(PairModel.build(sa, sb), few, opts)  # few unstable: the solver
    assert not solver_goes_first(PairModel.build(a, a), many, opts)  # same shape
