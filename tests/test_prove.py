"""The prover on hand-checkable and random pairs, cross-checked by exact sampling."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import equivcheck
from equivcheck import Verdict
from equivcheck.core.network import Affine, Layer, Network
from equivcheck.core.spec import Spec

from .helpers import (
    exact_sample_check,
    f32,
    net,
    onnx_of,
    permute_hidden,
    random_net,
    with_extra_unit,
)

# ---- hand-checkable pairs ---------------------------------------------------------------------

RELU_X = net([[1.0], [1.0]], [[0.0], [0.0]], name="relu(x)")          # y = relu(x)
RELU_HALF = net([[0.5], [1.0]], [[0.0], [0.0]], name="relu(x/2)")     # y = relu(x/2)


def test_relu_vs_half_relu_proved_on_negative_inputs():
    r = equivcheck.prove(onnx_of(RELU_X), onnx_of(RELU_HALF), domain="-1:0")
    assert r.verdict is Verdict.PROVED
    assert r.counterexample is None


def test_relu_vs_half_relu_refuted_on_positive_inputs():
    r = equivcheck.prove(onnx_of(RELU_X), onnx_of(RELU_HALF), domain="-1:1")
    assert r.verdict is Verdict.REFUTED
    cex = r.counterexample
    x = cex.input[0]
    assert 0 < x <= 1
    assert cex.exact.exact_margin == Fraction(x) / 2  # relu(x) - relu(x/2) = x/2 for x > 0
    assert cex.reproduces


def test_network_against_itself_needs_no_search():
    a = random_net(np.random.default_rng(0), [4, 8, 8, 3])
    r = equivcheck.prove(a, a, domain="-1:1")
    assert r.verdict is Verdict.PROVED
    assert "same layers" in r.reason
    assert all(s.shared for s in r.stability)


def test_permuted_hidden_units_proved():
    a = random_net(np.random.default_rng(1), [3, 6, 5, 2])
    b = permute_hidden(a, 0, [5, 3, 1, 0, 2, 4])
    r = equivcheck.prove(a, b, domain="-1:1", timeout=60)
    assert r.verdict is Verdict.PROVED, r.reason
    assert "layer permuted" in r.reason  # units matched through the permutation, no search


def test_removing_stably_inactive_unit_proved():
    rng = np.random.default_rng(2)
    a = random_net(rng, [3, 6, 2])
    w0, b0 = a.layers[0].weight.copy(), a.layers[0].bias.copy()
    w0[4] = f32([0.25, -0.125, 0.5])
    b0[4] = -3.0  # <= 0.875 - 3 < 0 on [-1, 1]^3: never fires
    a = a.with_layers([Layer(Affine(w0, b0), True), a.layers[1]])
    keep = [0, 1, 2, 3, 5]
    b = a.with_layers([
        Layer(Affine(w0[keep], b0[keep]), True),
        Layer(Affine(a.layers[1].weight[:, keep], a.layers[1].bias), False),
    ])
    r = equivcheck.prove(onnx_of(a), onnx_of(b), domain="-1:1")
    assert r.verdict is Verdict.PROVED, r.reason
    assert r.stability[0].inactive >= 1


def test_perturbed_weight_refuted_with_reproducing_counterexample():
    rng = np.random.default_rng(3)
    a = random_net(rng, [5, 10, 10, 3])
    w = a.layers[2].weight.copy()
    live = int(np.argmax((a.pre_activations(np.random.default_rng(0).random((1000, 5)))[1] > 0).mean(axis=0)))
    w[1, live] += 0.01  # a weight out of a unit that fires on the domain
    b = a.with_layers([a.layers[0], a.layers[1], Layer(Affine(f32(w), a.layers[2].bias), False)])
    r = equivcheck.prove(onnx_of(a), onnx_of(b), domain="0:1")
    assert r.verdict is Verdict.REFUTED
    cex = r.counterexample
    assert cex.exact.violated and cex.exact.exact_margin > 0
    assert cex.float64.violated and cex.onnxruntime is not None and cex.onnxruntime.violated
    assert cex.reproduces
    # the reported outputs are the networks' outputs at the reported input
    np.testing.assert_allclose(cex.float64.output_a, a.evaluate(np.array(cex.input)))


def test_shared_prefix_is_reported():
    rng = np.random.default_rng(4)
    a = random_net(rng, [3, 5, 5, 2])
    last = a.layers[2]
    b = a.with_layers([a.layers[0], a.layers[1], Layer(Affine(f32(last.weight * 0.5), last.bias), False)])
    r = equivcheck.prove(a, b, domain="-1:1")
    assert r.boxes[0].shared_layers == 2
    assert r.verdict is Verdict.REFUTED


# ---- modes --------------------------------------------------------------------------------------


def _scaled_output(a: Network, delta: float) -> Network:
    last = a.layers[-1]
    return a.with_layers(list(a.layers[:-1]) + [Layer(Affine(last.weight, f32(last.bias + delta)), False)])


def test_epsilon_linf_and_l1():
    a = random_net(np.random.default_rng(5), [3, 6, 3])
    b = _scaled_output(a, 0.125)  # every output shifted by exactly 1/8
    assert equivcheck.prove(a, b, domain="-1:1", mode="epsilon", tolerance="0.125").verdict is Verdict.PROVED
    r = equivcheck.prove(a, b, domain="-1:1", mode="epsilon", tolerance="0.124")
    assert r.verdict is Verdict.REFUTED
    # L1: the three shifts add up to 3/8
    assert equivcheck.prove(a, b, domain="-1:1", mode="epsilon", norm="l1", tolerance="0.375").verdict is Verdict.PROVED
    r1 = equivcheck.prove(a, b, domain="-1:1", mode="epsilon", norm="l1", tolerance="0.37")
    assert r1.verdict is Verdict.REFUTED
    assert r1.counterexample.exact.exact_margin == Fraction(3, 8) - Fraction("0.37")


def test_epsilon_solver_proves_what_sampling_cannot_refute():
    rng = np.random.default_rng(6)
    a = random_net(rng, [2, 6, 6, 2])
    b = random_net(np.random.default_rng(6), [2, 6, 6, 2])  # same weights, fresh objects
    b = b.with_layers([b.layers[0], b.layers[1], Layer(Affine(f32(b.layers[2].weight * (1 + 2**-10)), b.layers[2].bias), False)])
    b = with_extra_unit(b, 1)  # a different shape: no unit-wise difference bounds
    from equivcheck.core.options import ProverOptions

    # (canonical=False: the canonical forms would settle this pair before any search)
    r = equivcheck.prove(a, b, domain="-1:1", mode="epsilon", tolerance="0.5",
                         options=ProverOptions(canonical=False))
    assert r.verdict is Verdict.PROVED
    assert "solver" in r.reason  # shapes differ: the solver's first try, sharing units
    r = equivcheck.prove(a, b, domain="-1:1", mode="epsilon", tolerance="0.5",
                         options=ProverOptions(engine=False, canonical=False))
    assert r.verdict is Verdict.PROVED and "solver" in r.reason


def test_argmax_mode():
    a = random_net(np.random.default_rng(7), [3, 6, 4])
    last = a.layers[-1]
    # biases on a 2^-10 grid, so that adding 1 below is exact in float32
    a = a.with_layers([a.layers[0], Layer(Affine(last.weight, np.round(last.bias * 1024) / 1024), False)])
    b = _scaled_output(a, 1.0)  # adding the same constant to every logit keeps the top-1 class
    r = equivcheck.prove(a, b, domain="-1:1", mode="argmax")
    assert r.verdict is Verdict.PROVED, r.reason
    last = a.layers[-1]
    bias = last.bias.copy()
    bias[0] += 3.0
    c = a.with_layers(list(a.layers[:-1]) + [Layer(Affine(last.weight, bias), False)])
    r2 = equivcheck.prove(a, c, domain="-1:1", mode="argmax")
    assert r2.verdict is Verdict.REFUTED
    ya = a.evaluate(np.array(r2.counterexample.input))
    yc = c.evaluate(np.array(r2.counterexample.input))
    assert np.argmax(ya) != np.argmax(yc)


def test_argmax_ties_go_to_lowest_index():
    spec = Spec.make("argmax")
    assert spec.holds([Fraction(1), Fraction(1)], [Fraction(2), Fraction(1)])  # both pick 0
    assert not spec.holds([Fraction(1), Fraction(1)], [Fraction(1), Fraction(2)])


def test_timeout_gives_unknown_with_reason():
    a = random_net(np.random.default_rng(8), [6, 40, 40, 40, 3])
    # every first-layer weight nudged by 2^-12: no unit of b is a unit of a, the deviation is far
    # below the tolerance, and only the solver could show it, over 240 unstable ReLUs
    l0 = a.layers[0]
    b = a.with_layers([Layer(Affine(l0.weight + 2.0**-12, l0.bias), True)] + list(a.layers[1:]))
    b = with_extra_unit(b, 1)  # a different shape: no unit-wise difference bounds
    r = equivcheck.prove(a, b, domain="-1:1", mode="epsilon", tolerance="0.5", timeout=0.3, falsify_seconds=0.0)
    assert r.verdict is Verdict.UNKNOWN
    assert "timeout" in r.reason
    assert r.seconds < 3.0  # the limit is hard: the solver process is killed


# ---- random pairs, cross-checked -----------------------------------------------------------


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    widths=st.lists(st.integers(1, 5), min_size=1, max_size=2),
    change=st.sampled_from(["none", "permute", "perturb", "bias"]),
    mode=st.sampled_from(["strict", "epsilon", "argmax"]),
)
def test_random_pairs_agree_with_sampling(seed, widths, change, mode):
    rng = np.random.default_rng(seed)
    dims = [2] + widths + [2]
    a = random_net(rng, dims)
    if change == "permute":
        b = permute_hidden(a, 0, list(rng.permutation(dims[1])))
    elif change == "perturb":
        w = a.layers[0].weight.copy()
        w[0, 0] += float(rng.normal(0, 0.3))
        b = a.with_layers([Layer(Affine(f32(w), a.layers[0].bias), a.layers[0].relu)] + list(a.layers[1:]))
    elif change == "bias":
        b = _scaled_output(a, float(rng.choice([0.0, 0.5])))
    else:
        b = random_net(np.random.default_rng(seed), dims)
    tol = "0.25" if mode == "epsilon" else None
    r = equivcheck.prove(onnx_of(a), onnx_of(b), domain="-1:1", mode=mode, tolerance=tol, timeout=60)
    spec = Spec.make(mode, tol)
    assert r.verdict is not Verdict.UNKNOWN, r.reason
    if r.verdict is Verdict.PROVED:
        assert exact_sample_check(a, b, spec, -1, 1, seed=seed)
    else:
        cex = r.counterexample
        x = list(cex.exact_input)  # the exact point (a rational one when the solver found it)
        assert all(-1 <= v <= 1 for v in x)
        assert not spec.holds(a.evaluate_exact(x), b.evaluate_exact(x))
        if cex.exact_input == tuple(Fraction(v) for v in cex.input):
            assert cex.float_input_in_domain


@pytest.mark.parametrize("bad", ["1:0", "nan:1", "0:inf", "abc", "0:", ":1"])
def test_bad_domains_raise_input_error(bad):
    a = random_net(np.random.default_rng(0), [2, 3, 1])
    with pytest.raises(equivcheck.InputError):
        equivcheck.prove(a, a, domain=bad)


def test_positively_rescaled_units_proved_without_search():
    from equivcheck.core.rational import fraction_array, nearest_float_array

    a = random_net(np.random.default_rng(9), [3, 6, 5, 2])
    l0, l1, l2 = a.layers
    c = np.array([3, 1, 2, 5, 1, 7], dtype=float)  # relu(c z) = c relu(z) for c > 0
    w0 = l0.weight * c[:, None]  # exact in float64: 24-bit mantissas times small integers
    b0 = l0.bias * c
    w1q = fraction_array(l1.weight) / np.array([int(v) for v in c], dtype=object)[None, :]
    b = a.with_layers([
        Layer(Affine(w0, b0), True),
        Layer(Affine(nearest_float_array(w1q), l1.bias, exact_weight=w1q, exact_bias=fraction_array(l1.bias)), True),
        l2,
    ])
    r = equivcheck.prove(a, b, domain="-1:1")
    assert r.verdict is Verdict.PROVED
    assert "units rescaled" in r.reason
    # a rescaling by a negative factor is a different function: not shared, and refuted
    w0n = l0.weight.copy()
    w0n[0] *= -1
    c2 = a.with_layers([Layer(Affine(w0n, l0.bias), True), l1, l2])
    assert equivcheck.prove(a, c2, domain="-1:1").verdict is not Verdict.PROVED


def _bump(scale_log2: int, heights=(1.0, -2.0, 1.0)) -> Network:
    """A triangle bump of height 1 on x in (0.5, 0.5 + 2**(1 - scale_log2)), zero elsewhere.

    u = relu(x - 0.5), then relu(s u), relu(s u - 1), relu(s u - 2) with s = 2**scale_log2:
    every weight and bias is a float32, so the ONNX file stores exactly this function.
    """
    s = 2.0**scale_log2
    return net([[[1.0]], [[s], [s], [s]], [list(heights)]], [[-0.5], [0.0, -1.0, -2.0], [0.0]])


def test_solver_finds_a_needle_the_falsifier_misses():
    a = _bump(20)  # nonzero on (0.5, 0.5 + 2^-19): 31 float32 points
    b = _bump(20, heights=(0.0, 0.0, 0.0))
    r = equivcheck.prove(onnx_of(a), onnx_of(b), domain="0:1", falsify_seconds=0.0)
    assert r.verdict is Verdict.REFUTED
    cex = r.counterexample
    assert cex.found_by == "solver"
    assert 0.5 < cex.input[0] < 0.5 + 2**-19
    assert cex.reproduces  # a float32 point inside the needle was found and runs in onnxruntime


def test_violation_below_float32_resolution_is_labelled():
    a = _bump(40)  # nonzero only on (0.5, 0.5 + 2^-39): no float32 point there
    b = _bump(40, heights=(0.0, 0.0, 0.0))
    r = equivcheck.prove(onnx_of(a), onnx_of(b), domain="0:1", falsify_seconds=0.0)
    assert r.verdict is Verdict.REFUTED  # true in exact arithmetic on the stored weights
    cex = r.counterexample
    assert cex.exact.violated
    assert not cex.reproduces
    assert cex.onnxruntime is not None and not cex.onnxruntime.violated
    assert "DOES NOT REPRODUCE" in cex.note and "onnxruntime" in cex.note


def test_difference_bounds_prove_nudged_twins_and_enclose_sampled_deviation():
    from equivcheck.bounds.difference import difference_bounds
    from equivcheck.bounds.interval import interval_bounds

    a = random_net(np.random.default_rng(11), [6, 30, 30, 3])
    l0 = a.layers[0]
    b = a.with_layers([Layer(Affine(l0.weight + 2.0**-12, l0.bias), True)] + list(a.layers[1:]))
    r = equivcheck.prove(a, b, domain="-1:1", mode="epsilon", tolerance="0.05")
    assert r.verdict is Verdict.PROVED and "difference bounds" in r.reason
    lo, hi = -np.ones(6), np.ones(6)
    diff = difference_bounds(a, b, lo, hi, interval_bounds(a, lo, hi), interval_bounds(b, lo, hi))
    xs = np.random.default_rng(0).uniform(-1, 1, (200, 6)).astype(np.float32)
    for x in xs[:20]:
        xq = [Fraction(float(v)) for v in x]
        d = [ya - yb for ya, yb in zip(a.evaluate_exact(xq), b.evaluate_exact(xq))]
        assert all(Fraction(lo_) <= v <= Fraction(hi_) for v, lo_, hi_ in zip(d, diff[-1].post_lower, diff[-1].post_upper))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), width=st.integers(1, 6), scale=st.sampled_from([2.0**-8, 2.0**-2, 1.0]),
       symbolic=st.booleans())
def test_difference_bounds_enclose_exact_differences(seed, width, scale, symbolic):
    from equivcheck.bounds.difference import difference_bounds
    from equivcheck.bounds.interval import interval_bounds

    rng = np.random.default_rng(seed)
    a = random_net(rng, [3, width, width, 2])
    b = a.with_layers([
        Layer(Affine(f32(lay.weight + rng.normal(0, scale, lay.weight.shape)), f32(lay.bias + rng.normal(0, scale, lay.out_dim))), lay.relu)
        for lay in a.layers
    ])
    lo, hi = np.array([-1.0, 0.0, -0.5]), np.array([1.0, 0.5, 0.25])
    ba, bb = interval_bounds(a, lo, hi), interval_bounds(b, lo, hi)
    diff = difference_bounds(a, b, lo, hi, ba, bb, symbolic=symbolic)
    for x in rng.uniform(lo, hi, (10, 3)).astype(np.float32):
        xq = [Fraction(float(v)) for v in x]
        za, zb = _exact_pre(a, xq), _exact_pre(b, xq)
        for k, layer in enumerate(a.layers):
            for i in range(layer.out_dim):
                dz = za[k][i] - zb[k][i]
                dh = (max(za[k][i], 0) - max(zb[k][i], 0)) if layer.relu else dz
                assert Fraction(diff[k].pre_lower[i]) <= dz <= Fraction(diff[k].pre_upper[i])
                assert Fraction(diff[k].post_lower[i]) <= dh <= Fraction(diff[k].post_upper[i])


def _exact_pre(n: Network, x):
    """Exact pre-activations of every layer."""
    out, h = [], list(x)
    for layer in n.layers:
        w, b = layer.affine.rational_weight(), layer.affine.rational_bias()
        z = [sum((w[i][j] * h[j] for j in range(len(h))), Fraction(0)) + b[i] for i in range(layer.out_dim)]
        out.append(z)
        h = [max(v, Fraction(0)) for v in z] if layer.relu else z
    return out


def test_branch_and_bound_proves_what_the_whole_box_cannot():
    a = random_net(np.random.default_rng(8), [6, 10, 10, 3])
    l0 = a.layers[0]
    b = a.with_layers([Layer(Affine(l0.weight + 2.0**-12, l0.bias), True)] + list(a.layers[1:]))
    # the whole-box difference bound is about 0.0054; the true deviation about 0.0015
    r = equivcheck.prove(a, b, domain="-1:1", mode="epsilon", tolerance="0.003", timeout=120)
    assert r.verdict is Verdict.PROVED, r.reason
    assert "branch and bound" in r.reason and r.boxes[0].parts > 1
    assert exact_sample_check(a, b, Spec.make("epsilon", "0.003"), -1, 1)


# ---- the core API: prove_networks, ProverOptions, KnownBounds --------------------------------


def test_prove_networks_is_the_core_and_results_carry_their_inputs():
    from equivcheck.core.domain import box_domain
    from equivcheck.core.options import BoundMethod, ProverOptions
    from equivcheck.solve.prover import prove_networks

    spec = Spec.make("strict")
    dom = box_domain([-1], [1])
    opts = ProverOptions(timeout=30, bound_method=BoundMethod.SYMBOLIC)
    r = prove_networks(RELU_X, RELU_HALF, spec, dom, opts)
    assert r.verdict is Verdict.REFUTED
    assert r.spec == spec and r.domain == dom and r.options == opts  # objects, not dicts
    assert r.counterexample.onnxruntime is None  # no ONNX models given: nothing to run
    data = r.to_dict()
    assert data["spec"] == {"mode": "strict"} and data["domain"]["source"] == "<api>"
    assert data["options"]["bound_method"] == "symbolic" and data["options"]["timeout"] == 30
    # prove() is the loader around it: the same verdict from ONNX models and domain text
    via_prove = equivcheck.prove(onnx_of(RELU_X), onnx_of(RELU_HALF), domain="-1:1",
                                 options=opts)
    assert via_prove.verdict is Verdict.REFUTED and via_prove.options == opts
    assert via_prove.counterexample.onnxruntime is not None


def test_choices_are_validated_as_input_errors():
    from equivcheck.core.options import BoundMethod, ProverOptions

    a = random_net(np.random.default_rng(0), [2, 3, 1])
    with pytest.raises(equivcheck.InputError, match="bound method"):
        equivcheck.prove(a, a, domain="0:1", bounds="magic")
    for bad in ({"bound_method": "magic"}, {"falsify_share": -0.5}, {"falsify_share": float("nan")},
                {"timeout": float("inf")}, {"max_split_dim": -1}, {"seed": 1.5},
                {"falsify": "no"}, {"engine": 1}, {"engine_share": 2.0}):
        with pytest.raises(equivcheck.InputError):
            ProverOptions(**bad)
    assert ProverOptions(bound_method="lp").bound_method is BoundMethod.LP
    assert ProverOptions().bound_share() is None
    assert ProverOptions(bound_method="exact").bound_share() == ProverOptions().exact_bound_share


def test_without_the_falsifier_the_solver_refutes():
    from equivcheck.core.options import ProverOptions

    r = equivcheck.prove(onnx_of(RELU_X), onnx_of(RELU_HALF), domain="-1:1",
                         options=ProverOptions(falsify=False))
    assert r.verdict is Verdict.REFUTED
    assert r.counterexample.found_by == "solver"
    assert r.options.falsify is False


def test_known_bounds_are_intersected_with_the_computed_ones():
    from equivcheck.bounds.symbolic import symbolic_bounds
    from equivcheck.core.domain import box_domain
    from equivcheck.core.options import ProverOptions
    from equivcheck.solve.prover import KnownBounds, prove_networks

    a = random_net(np.random.default_rng(6), [3, 8, 8, 2])
    b = permute_hidden(a, 0, [1, 0, 2, 3, 4, 5, 6, 7])
    dom = box_domain([-1] * 3, [1] * 3)
    spec = Spec.make("strict")
    plain = prove_networks(a, b, spec, dom, ProverOptions())  # interval bounds only
    assert plain.verdict is Verdict.PROVED

    def unstable(result, tag):
        return [s.unstable for s in result.stability if s.network == tag]

    # symbolic bounds on the domain are tighter than interval ones in layer 1 here: handed in
    # as known bounds of a, the prover's (interval) bounds of a are intersected with them
    known = symbolic_bounds(a, -np.ones(3), np.ones(3))
    r = prove_networks(a, b, spec, dom, ProverOptions(), KnownBounds(a=known))
    assert r.verdict is Verdict.PROVED
    assert unstable(plain, "a") == [7, 8] and unstable(r, "a") == [7, 7]
    assert unstable(r, "b") == unstable(plain, "b")  # b had none
    with pytest.raises(equivcheck.InputError, match="known bounds of network b"):
        prove_networks(a, b, spec, dom, ProverOptions(), KnownBounds(b=known[:1]))


def test_no_state_survives_between_calls():
    """The same exact-bounds check twice in a process: the second takes no shortcut (no hidden
    cache), so both give the same verdict with the same work."""
    from equivcheck.core.options import ProverOptions

    a = random_net(np.random.default_rng(4), [3, 6, 6, 2])
    b = with_extra_unit(a, 0)
    opts = ProverOptions(bound_method="exact", timeout=60)
    first = equivcheck.prove(a, b, domain="-1:1", options=opts)
    second = equivcheck.prove(a, b, domain="-1:1", options=opts)
    assert first.verdict is second.verdict is Verdict.PROVED
    assert first.stability == second.stability
    assert [x.parts for x in first.boxes] == [x.parts for x in second.boxes]


def test_a_verdict_prints_as_its_label_and_has_no_truth_value():
    assert str(Verdict.PROVED) == "proved" and f"{Verdict.UNKNOWN}" == "unknown"
    assert f"{Verdict.REFUTED:>8}" == " refuted"
    with pytest.raises(TypeError, match="no truth value"):
        bool(Verdict.UNKNOWN)
    assert min(Verdict.PROVED, Verdict.UNKNOWN) is Verdict.UNKNOWN  # the order is kept
