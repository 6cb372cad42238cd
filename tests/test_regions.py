"""Linear regions: hand-checkable bounds and counts, properties on random networks, the CLI."""

from __future__ import annotations

import itertools
import json
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from equivcheck.core.domain import Box, Domain, box_domain
from equivcheck.core.network import Network
from equivcheck.errors import InputError
from equivcheck.io.onnx_export import export_network
from equivcheck.regions import (
    CountStatus,
    activation_pattern_bound,
    bounds_for_widths,
    count_regions,
    network_bounds,
    parse_widths,
    rank_upper_bound,
    refined_bound,
    scientific,
    shallow_bound,
    theorem1_bound,
)

from .helpers import cli as run
from .helpers import external_path
from .helpers import net as build_net


def make_net(weights, biases, relu_last: bool = False) -> Network:
    """A chain with a ReLU after every layer but the last, weights exactly as given (no float32
    rounding: they are small dyadic numbers or float64 samples)."""
    return build_net(weights, biases, relu_last=relu_last, snap=False)


# Four lines in general position in the plane: x+y=1, x-y=1/2, 2x+y=-1, x-3y=-2.
LINES_W = [[1, 1], [1, -1], [2, 1], [1, -3]]
LINES_B = [-1, -0.5, 1, 2]


def four_lines_net() -> Network:
    """2-4-1: the hidden units' hyperplanes are the four lines."""
    return make_net([LINES_W, [[1, 1, 1, 1]]], [LINES_B, [0]])


def sawtooth_net(depth: int) -> Network:
    """1-3-...-3-1 on [0, 7]: every ReLU layer folds its input into a zigzag with 4 pieces, each
    sweeping the whole input range of the next layer, so the region count multiplies by 4 per
    layer. Layer input t in [0, 7]; units relu(t-1), relu(t-3), relu(5-t); the zigzag
    g = -6 h1 + 4 h2 - 4 h3 + 20 takes the values 0, 4, 0, 4, 0 at t = 0, 1, 3, 5, 7, and the next
    layer reads t' = 1.75 g."""
    weights = [[[1], [1], [-1]]]
    biases = [[-1, -3, 5]]
    g = np.array([-6.0, 4.0, -4.0]) * 1.75
    for _ in range(depth - 1):
        weights.append([list(g), list(g), list(-g)])
        biases.append([35 - 1, 35 - 3, 5 - 35])
    weights.append([[1, 1, 1]])
    biases.append([0])
    return make_net(weights, biases)


def brute_theorem1(n0: int, widths: list[int]) -> int:
    """Theorem 1 straight from the slide: enumerate J and sum products of binomials."""
    total = 0
    for js in itertools.product(*(range(n + 1) for n in widths)):
        ok = all(
            js[i] <= min([n0, widths[i]] + [widths[k] - js[k] for k in range(i)])
            for i in range(len(widths))
        )
        if ok:
            total += math.prod(math.comb(n, j) for n, j in zip(widths, js))
    return total


def sampled_patterns(net: Network, lo, hi, n: int, seed: int) -> set:
    """Activation patterns seen at random points where no pre-activation is near 0."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(lo, hi, size=(n, net.in_dim))
    pre = [z for z, layer in zip(net.pre_activations(x), net.layers) if layer.relu]
    z = np.hstack(pre)
    clear = np.all(np.abs(z) > 1e-7, axis=1)
    return {tuple(row) for row in (z[clear] > 0).astype(int)}


def flat(pattern) -> tuple:
    return tuple(b for layer in pattern for b in layer)


# ---------------------------------------------------------------------------------------------
# bounds


def test_hand_checkable_bounds():
    assert theorem1_bound(2, [4]) == 1 + 4 + 6 == 11
    assert shallow_bound(2, 4) == 11
    assert activation_pattern_bound([4]) == 16
    # n0 = 5, widths (2, 2): j1=0 -> 1*(1+2+1); j1=1 -> 2*(1+2); j1=2 -> 1*1
    assert theorem1_bound(5, [2, 2]) == 4 + 6 + 1 == 11
    # n0 = 1: (n1 + 1)(n2 + 1) when every width is at least 2
    assert theorem1_bound(1, [3, 3]) == 16
    assert theorem1_bound(1, [3, 3, 3]) == 64
    # input dimension at least the number of units: every pattern is possible
    assert theorem1_bound(784, [22]) == 2**22


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.lists(st.integers(1, 6), min_size=1, max_size=4))
def test_theorem1_matches_the_formula_on_the_slide(n0, widths):
    t1 = theorem1_bound(n0, widths)
    assert t1 == brute_theorem1(n0, widths)
    assert t1 <= activation_pattern_bound(widths)
    if len(widths) == 1:
        assert t1 == shallow_bound(n0, widths[0])


def test_bounds_are_exact_big_integers():
    b = bounds_for_widths(784, [256] * 6)
    assert isinstance(b.theorem1, int) and b.theorem1 > 10**300
    assert b.activation_patterns == 2**1536
    assert scientific(2**10) == "1.024e+3"
    assert scientific(b.theorem1) == format(__import__("decimal").Decimal(b.theorem1), ".3e")


def test_parse_widths():
    assert parse_widths("784,22,10") == (784, (22,), 10)
    assert parse_widths("5, 50,50 ,5") == (5, (50, 50), 5)
    for bad in ("784", "a,b", "3,0,1", ""):
        with pytest.raises(InputError):
            parse_widths(bad)


def test_rank_upper_bound_exact_and_modular():
    m = np.array([[1, 2, 3], [2, 4, 6], [1, 0, 1]], dtype=object)
    assert rank_upper_bound(m) == (2, True)
    full = np.array([[3, 1], [1, 2]], dtype=object)
    assert rank_upper_bound(full) == (2, True)
    # a matrix that is singular over Q but not modulo most small primes is still found singular
    big = 2**40 + 1
    m2 = np.array([[big, 1], [big * 3, 3]], dtype=object)
    assert rank_upper_bound(m2) == (1, True)


def test_refined_bound_uses_rank_and_stability():
    # four parallel lines x = c: rank 1 -> at most 1 + 4 regions, and there are exactly 5
    net = make_net([[[1, 0], [1, 0], [1, 0], [1, 0]], [[1, 1, 1, 1]]], [[-1, -2, -3, -4], [0]])
    ref = refined_bound(net, "0:5")
    assert ref.value == 5 < theorem1_bound(2, [4])
    assert ref.boxes[0][0].split_rank == 1
    assert count_regions(net, "0:5").count == 5
    # on [0, 2.5]^2 only the lines x=1 and x=2 cross the box: units 3, 4 are stably inactive
    ref2 = refined_bound(net, "0:2.5")
    assert (ref2.boxes[0][0].unstable, ref2.boxes[0][0].stably_inactive) == (2, 2)
    assert ref2.value == 3 == count_regions(net, "0:2.5").count


# ---------------------------------------------------------------------------------------------
# counting: hand-checkable


def test_four_lines_in_general_position_give_eleven_regions():
    # the six intersection points lie inside the box [-10, 10]^2, so the box sees every region
    w = [[Fraction(v) for v in row] for row in LINES_W]
    b = [Fraction(v).limit_denominator() for v in LINES_B]
    for i, j in itertools.combinations(range(4), 2):
        det = w[i][0] * w[j][1] - w[i][1] * w[j][0]
        assert det != 0  # no two lines parallel
        x = (-b[i] * w[j][1] + b[j] * w[i][1]) / det
        y = (-w[i][0] * b[j] + w[j][0] * b[i]) / det
        assert -10 < x < 10 and -10 < y < 10
        others = [k for k in range(4) if k not in (i, j)]
        assert all(w[k][0] * x + w[k][1] * y + b[k] != 0 for k in others)  # no three concurrent
    net = four_lines_net()
    bounds = network_bounds(net, "-10:10")
    result = count_regions(net, "-10:10")
    assert bounds.theorem1 == 11 and bounds.refined.value == 11
    assert result.status is CountStatus.COMPLETE and result.count == 11
    assert len({r.pattern for r in result.regions}) == 11
    for region in result.regions:  # every witness reproduces its pattern in float too
        z = net.pre_activations(np.array([[float(v) for v in region.witness]]))[0][0]
        assert tuple(int(v > 0) for v in z) == region.pattern[0]


def test_small_box_sees_fewer_regions():
    # inside [0.2, 0.3]^2 no line passes (checked by hand): one region
    net = four_lines_net()
    assert count_regions(net, "0.2:0.3").count == 1
    assert refined_bound(net, "0.2:0.3").value == 1


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_input_dimension_one_bound_is_tight(depth):
    net = sawtooth_net(depth)
    result = count_regions(net, "0:7")
    assert theorem1_bound(1, net.hidden_widths) == 4**depth
    assert result.exact and result.count == 4**depth


def test_degenerate_coordinate_and_union_of_boxes():
    net = four_lines_net()
    # the segment y = 0, -10 <= x <= 10 crosses the lines at x = 1, 0.5, -0.5, -2: 5 pieces
    line = box_domain([-10, 0], [10, 0])
    result = count_regions(net, line)
    assert result.exact and result.count == 5
    assert all(r.witness[1] == 0 for r in result.regions)
    # two halves of the big box: 11 patterns, the ones that straddle x = 0 counted once
    halves = Domain(
        (
            Box((Fraction(-10), Fraction(-10)), (Fraction(0), Fraction(10))),
            Box((Fraction(0), Fraction(-10)), (Fraction(10), Fraction(10))),
        ),
        "halves",
    )
    assert count_regions(net, halves).count == 11


def test_one_ulp_wide_box_and_network_without_relu():
    # no float lies strictly inside [1, 1 + 2^-52]: the witness is the exact rational midpoint
    net = make_net([[[1.0]]], [[0.0]], relu_last=True)
    result = count_regions(net, box_domain([1.0], [1.0 + 2.0**-52]))
    assert result.exact and result.count == 1
    assert result.regions[0].witness == (1 + Fraction(1, 2**53),)
    affine = make_net([[[2.0, 1.0]]], [[0.5]])
    assert count_regions(affine, "0:1").count == 1 == theorem1_bound(2, [])


def test_dead_unit_does_not_hide_regions():
    # a fifth unit with zero weights and bias is 0 everywhere: inactive, no split, still 11
    net = make_net([LINES_W + [[0, 0]], [[1, 1, 1, 1, 1]]], [LINES_B + [0], [0]])
    result = count_regions(net, "-10:10")
    assert result.exact and result.count == 11
    assert all(r.pattern[0][4] == 0 for r in result.regions)
    # a second-layer unit fed only by a unit that is dead on part of the domain
    net2 = make_net([[[1]], [[1]], [[1]]], [[0], [-1], [0]])
    r2 = count_regions(net2, "-2:2")  # x<0: (0,0); 0<x<1: (1,0); x>1: (1,1)
    assert r2.exact and sorted(r.pattern for r in r2.regions) == [
        ((0,), (0,)),
        ((1,), (0,)),
        ((1,), (1,)),
    ]


def test_coincident_hyperplanes_need_an_exact_certificate():
    # a trained unit that never fired keeps bias 0: z = -0.7 * relu(z1) has the hyperplane of z1,
    # so "z1 > 0 and z > 0" is empty with an LP optimum of exactly 0; pruning it needs exact
    # multipliers (1 and 1/0.123456789), which the float duals only approximate
    w2 = -0.123456789
    net = make_net([LINES_W, [[w2, 0, 0, 0]], [[1]]], [LINES_B, [0], [0]])
    result = count_regions(net, "-10:10")
    assert result.exact and result.unresolved == 0
    assert {r.pattern[1][0] for r in result.regions} == {0}
    assert result.count == 11
    seen = sampled_patterns(net, -10.0, 10.0, 20000, 0)
    assert seen <= {flat(r.pattern) for r in result.regions}
    line = make_net([[[1.0]], [[w2]], [[1]]], [[0.0], [0], [0]])
    result = count_regions(line, "-1:1")
    assert result.exact and sorted(r.pattern for r in result.regions) == [
        ((0,), (0,)),
        ((1,), (0,)),
    ]


def test_cap_and_timeout_give_lower_bounds():
    net = sawtooth_net(3)
    capped = count_regions(net, "0:7", cap=10)
    assert capped.status is CountStatus.CAP and capped.count == 10 and not capped.exact
    timed = count_regions(net, "0:7", timeout=1e-9)
    assert timed.status is CountStatus.TIMEOUT and timed.count < 64


def test_progress_reports_fractions():
    seen = []
    count_regions(sawtooth_net(2), "0:7", progress=lambda done, n: seen.append((done, n)))
    assert seen and seen[-1] == (1.0, 16)
    assert all(0.0 <= d <= 1.0 for d, _ in seen)


def test_count_rejects_bad_input():
    net = four_lines_net()
    with pytest.raises(InputError):
        count_regions(net, "0:1:2")
    with pytest.raises(InputError):
        count_regions(net, box_domain([0], [1]))  # wrong dimension
    with pytest.raises(InputError):
        count_regions(net, "0:1", cap=0)


# ---------------------------------------------------------------------------------------------
# properties on random small networks

weights_st = st.integers(-12, 12).map(lambda v: v / 4)  # dyadic: degenerate cases do occur


@st.composite
def small_nets(draw):
    n0 = draw(st.integers(1, 3))
    widths = draw(st.lists(st.integers(1, 4), min_size=1, max_size=2))
    dims = [n0] + widths + [1]
    ws, bs = [], []
    for a, b in zip(dims[:-1], dims[1:]):
        ws.append([[draw(weights_st) for _ in range(a)] for _ in range(b)])
        bs.append([draw(weights_st) for _ in range(b)])
    return make_net(ws, bs)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_nets(), st.integers(0, 2**16))
def test_count_between_sampling_and_bounds(net, seed):
    result = count_regions(net, "-2:2")
    assert result.status is CountStatus.COMPLETE
    t1 = theorem1_bound(net.in_dim, net.hidden_widths)
    ref = refined_bound(net, "-2:2").value
    assert result.count <= ref <= t1
    assert refined_bound(net).value <= t1
    seen = sampled_patterns(net, -2.0, 2.0, 4000, seed)
    counted = {flat(r.pattern) for r in result.regions}
    assert seen <= counted
    assert len(counted) == result.count


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**16))
def test_count_on_random_gaussian_nets(seed):
    rng = np.random.default_rng(seed)
    n0, w1, w2 = 2, 5, 4
    net = make_net(
        [rng.normal(size=(w1, n0)), rng.normal(size=(w2, w1)), rng.normal(size=(1, w2))],
        [rng.normal(size=w1), rng.normal(size=w2), [0.0]],
    )
    result = count_regions(net, "-3:3")
    assert result.exact
    assert result.count <= refined_bound(net, "-3:3").value <= theorem1_bound(n0, [w1, w2])
    assert {flat(r.pattern) for r in result.regions} >= sampled_patterns(net, -3, 3, 20000, seed)


# ---------------------------------------------------------------------------------------------
# the command line

def test_cli_bound_widths_json_is_exact_integer():
    res = run("regions", "bound", "--widths", "784,256,256,256,256,256,256,10", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["theorem1"] == theorem1_bound(784, [256] * 6)
    assert isinstance(data["theorem1"], int)
    assert data["relu_widths"] == [256] * 6 and data["output_width_not_counted"] == 10
    assert data["activation_patterns"] == 2**1536
    assert data["refined"] is None


def test_cli_bound_human_output_prints_full_integers():
    res = run("regions", "bound", "--widths", "2,4,1")
    assert res.exit_code == 0
    assert res.stderr == ""
    assert "Theorem 1" in res.stdout and "1.100e+1" in res.stdout and ": 11" in res.stdout


def test_cli_bound_and_count_on_a_model(tmp_path):
    path = tmp_path / "lines.onnx"
    export_network(four_lines_net(), path)
    res = run("regions", "bound", str(path), "--domain", "-10:10", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["theorem1"] == 11 and data["refined"]["value"] == 11
    res = run("regions", "count", str(path), "--domain", "-10:10", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert (data["count"], data["exact"], data["status"]) == (11, True, "complete")
    res = run("regions", "count", str(path), "--domain", "-10:10", "--cap", "4", "--json")
    assert res.exit_code == 3
    data = json.loads(res.stdout)
    assert (data["count"], data["exact"], data["status"]) == (4, False, "cap")
    res = run("regions", "count", str(path), "--domain", "-10:10")
    assert res.exit_code == 0 and res.stderr == "" and "11 linear regions (exact)" in res.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["regions", "bound"], "either a model or --widths"),
        (["regions", "bound", "x.onnx", "--widths", "2,3,1"], "either a model or --widths"),
        (["regions", "bound", "--widths", "2,x,1"], "--widths"),
        (["regions", "bound", "--widths", "2,3,1", "--domain", "0:1"], "--domain needs a model"),
        (["regions", "bound", "/nonexistent/net.onnx"], "no such file"),
        (["regions", "count", "/nonexistent/net.onnx"], "no such file"),
    ],
)
def test_cli_bad_input_is_one_line_exit_4(args, message):
    res = run(*args)
    usage = message in ("either a model or --widths", "--domain needs a model")
    assert res.exit_code == (2 if usage else 4)  # a wrong combination of options: usage
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("equivcheck: error:") and message in lines[0]
    assert res.stdout == ""


def test_cli_bad_domain_and_cap(tmp_path):
    path = tmp_path / "lines.onnx"
    export_network(four_lines_net(), path)
    for extra in (
        ["--domain", "1:0"],
        ["--domain", "0:1", "--cap", "0"],
        ["--domain", "zz"],
        ["--timeout", "-1"],
    ):
        res = run("regions", "count", str(path), *extra)
        usage = "--cap" in extra or "--timeout" in extra  # bad option values: usage errors
        assert res.exit_code == (2 if usage else 4), (extra, res.output)
        assert len(res.stderr.strip().splitlines()) == 1
    res = run("regions", "bound", str(path), "--domain", "nan:1")
    assert res.exit_code == 4 and "not a finite number" in res.stderr
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not onnx at all")
    res = run("regions", "count", str(corrupt))
    assert res.exit_code == 4 and "not a valid ONNX model" in res.stderr


# ---------------------------------------------------------------------------------------------
# real third-party models


def test_vnncomp_test_small_regions():
    # test_small: h = relu(x + 1.5) twice, then relu(2 h1 + 2 h2 + 2.5) twice: the only
    # hyperplane is x = -1.5, so one region on [-1, 1] and two on [-10, 10]
    path = external_path("vnncomp_test/test_small.onnx")
    res = run("regions", "count", str(path), "--domain", "-1:1", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["count"] == 1
    res = run("regions", "count", str(path), "--domain", "-10:10", "--json")
    data = json.loads(res.stdout)
    assert data["count"] == 2 and data["exact"] and data["count"] <= data["refined_bound"] <= 9


def test_mnist_bound_matches_library():
    from equivcheck.io.onnx_import import load_network

    path = external_path("mnistfc/mnist-net_256x2.onnx")
    res = run("regions", "bound", str(path), "--json")
    assert res.exit_code == 0
    data = json.loads(res.stdout)
    assert data["theorem1"] == theorem1_bound(784, [256, 256])
    assert load_network(path).hidden_widths == (256, 256)


def test_acasxu_refined_bound_on_property_box():
    from equivcheck.io.onnx_import import load_network

    net = load_network(external_path("acasxu/ACASXU_run2a_1_1_batch_2000.onnx"))
    box = external_path("acasxu/prop_3.vnnlib")
    b = network_bounds(net, str(box))
    assert b.refined.value < b.theorem1 == theorem1_bound(5, [50] * 6)
    first = b.refined.boxes[0][0]
    assert first.unstable + first.stably_active + first.stably_inactive == 50
    assert first.unstable < 50
