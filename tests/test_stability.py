"""Exact stability analysis: verdicts are proved (stable) or witnessed exactly (unstable)."""

from __future__ import annotations

import time
from fractions import Fraction

import numpy as np
import pytest

from equivcheck.bounds.interval import interval_bounds
from equivcheck.bounds.methods import sound_bounds
from equivcheck.bounds.stability import ExactSearch, analyze_stability
from equivcheck.bounds.stability_report import Stage
from equivcheck.core.domain import box_domain
from equivcheck.core.exact import pre_activations_exact
from equivcheck.core.network import Affine, Layer, Network
from equivcheck.core.options import BoundMethod, UnitStability
from equivcheck.engine.units import split_inputs
from equivcheck.errors import InputError
from equivcheck.io.domains import parse_domain
from equivcheck.io.onnx_import import load_network

from .helpers import MODELS, random_net


def hand_net() -> Network:
    """x in [-1, 1]. Layer 0: x, -x, x+2, x-2, x-1, 0. Layer 1: |x|-1.5, |x|-0.5, relu(x+2)-0.5."""
    w0 = np.array([[1.0], [-1.0], [1.0], [1.0], [1.0], [0.0]])
    b0 = np.array([0.0, 0.0, 2.0, -2.0, -1.0, 0.0])
    w1 = np.zeros((3, 6))
    w1[0, :2] = 1.0
    w1[1, :2] = 1.0
    w1[2, 2] = 1.0
    b1 = np.array([-1.5, -0.5, -0.5])
    w2 = np.ones((1, 3))
    return Network((Layer(Affine(w0, b0), True), Layer(Affine(w1, b1), True),
                    Layer(Affine(w2, np.zeros(1)), False)))


def check_witnesses(net, report, domain):
    box = domain.boxes[0]
    for rep in report.layers:
        for i, status in enumerate(rep.status):
            if status is not UnitStability.UNSTABLE:
                continue
            for idx, sign in ((rep.witness_active[i], 1), (rep.witness_inactive[i], -1)):
                x = report.witnesses[idx]
                assert box.contains(x)
                z = pre_activations_exact(net.layers, [Fraction(v) for v in x])[rep.layer][i]
                assert sign * z > 0


def test_hand_net_verdicts_and_stages():
    net = hand_net()
    dom = box_domain([-1], [1])
    rep = analyze_stability(net, dom, timeout=30)
    l0, l1 = rep.layer(0), rep.layer(1)
    assert l0.status == (UnitStability.UNSTABLE, UnitStability.UNSTABLE, UnitStability.ACTIVE,
                         UnitStability.INACTIVE, UnitStability.INACTIVE, UnitStability.INACTIVE)
    # x - 1 reaches exactly 0: the rigorous float bounds cannot tell, the exact vertex can
    assert l0.stage[4] is Stage.EXACT
    assert l0.stage[2] is Stage.INTERVAL and l0.stage[3] is Stage.INTERVAL
    assert l1.status == (UnitStability.INACTIVE, UnitStability.UNSTABLE, UnitStability.ACTIVE)
    assert l1.stage[0] is not Stage.INTERVAL  # |x| - 1.5 <= 0 needs more than intervals
    assert rep.undecided == ()
    check_witnesses(net, rep, dom)


NARROW = 2.0**-20


def twin_net() -> Network:
    """x in [-1, 1]. Layer 0: x, x, x - 0.5, 0.5 - x. Layer 1: relu(x) - relu(x) - 0.1 (never
    positive, but every relaxation that treats the two copies of x apart says it may be),
    2 relu(x) - 0.5 (unstable), 2^-20 - |x - 0.5| (positive only within 2^-20 of 0.5)."""
    w0 = np.array([[1.0], [1.0], [1.0], [-1.0]])
    b0 = np.array([0.0, 0.0, -0.5, 0.5])
    w1 = np.array([[1.0, -1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, -1.0, -1.0]])
    b1 = np.array([-0.1, -0.5, NARROW])
    return Network((Layer(Affine(w0, b0), True), Layer(Affine(w1, b1), True),
                    Layer(Affine(np.ones((1, 3)), np.zeros(1)), False)))


def test_cheap_stages_cannot_prove_what_the_exact_stage_must():
    net = twin_net()
    dom = box_domain([-1], [1])
    lo, hi = dom.boxes[0].lower_float(), dom.boxes[0].upper_float()
    for method in BoundMethod:  # EXACT here, without an analysis, is the LP bounds
        assert sound_bounds(net, lo, hi, method)[1].upper[0] > 0
    rep = analyze_stability(net, dom, timeout=30, exact=ExactSearch.NONE)
    assert rep.layer(1).status[0] is UnitStability.UNDECIDED
    assert rep.layer(1).stage[0] is Stage.TIMEOUT
    assert rep.layer(1).status[1] is UnitStability.UNSTABLE


@pytest.mark.parametrize("exact", [ExactSearch.BRANCH_AND_BOUND, ExactSearch.INPUT_SPLIT])
def test_exact_stage_proves_what_relaxations_cannot(exact):
    net = twin_net()
    dom = box_domain([-1], [1])
    splitter = split_inputs if exact is ExactSearch.INPUT_SPLIT else None
    rep = analyze_stability(net, dom, timeout=30, exact=exact, splitter=splitter)
    l0, l1 = rep.layer(0), rep.layer(1)
    assert l1.status[0] is UnitStability.INACTIVE and l1.stage[0] is Stage.EXACT
    assert rep.bounds[1].upper[0] <= 0  # the proved fact is in the bounds later questions use
    # unstable units are never proved stable: they get exactly checked witnesses instead
    assert l1.status[1] is UnitStability.UNSTABLE and l1.status[2] is UnitStability.UNSTABLE
    assert l0.status[0] is UnitStability.UNSTABLE
    assert rep.undecided == ()
    check_witnesses(net, rep, dom)


def test_branch_and_bound_finds_witnesses_that_sampling_misses():
    # 2^-20 - |x - 0.5| > 0 only on a sliver: the sampling stages miss it, the LP point of
    # branch and bound (x = 0.5) is checked exactly and makes the unit unstable
    net = twin_net()
    dom = box_domain([-1], [1])
    cheap = analyze_stability(net, dom, timeout=30, use_lp=False, exact=ExactSearch.NONE)
    assert cheap.layer(1).status[2] is UnitStability.UNDECIDED
    rep = analyze_stability(net, dom, timeout=30, use_lp=False,
                            exact=ExactSearch.BRANCH_AND_BOUND)
    assert rep.layer(1).status[2] is UnitStability.UNSTABLE
    assert rep.layer(1).stage[2] is Stage.EXACT
    check_witnesses(net, rep, dom)


def test_clip_returns_new_bounds_and_leaves_the_callers_alone():
    net = twin_net()
    dom = box_domain([-1], [1])
    rep = analyze_stability(net, dom, timeout=30)
    mine = interval_bounds(net, dom.boxes[0].lower_float(), dom.boxes[0].upper_float())
    before = [(b.lower.copy(), b.upper.copy()) for b in mine]
    ids = [id(b) for b in mine]
    clipped = rep.clip(mine)
    assert clipped is not mine and [id(b) for b in mine] == ids
    for b, (lo, hi) in zip(mine, before):
        assert np.array_equal(b.lower, lo) and np.array_equal(b.upper, hi)
    assert mine[1].upper[0] > 0 and clipped[1].upper[0] <= 0


def test_input_split_needs_the_engine_splitter():
    with pytest.raises(InputError, match="splitter"):
        analyze_stability(twin_net(), box_domain([-1], [1]), timeout=1, exact=ExactSearch.INPUT_SPLIT)


def test_input_split_finds_witnesses_on_a_sliver():
    # 2^-20 - |x - 0.5| > 0 only within 2^-20 of 0.5: the sub-box centres find it
    net = twin_net()
    dom = box_domain([-1], [1])
    rep = analyze_stability(net, dom, timeout=30, use_lp=False, exact=ExactSearch.INPUT_SPLIT,
                            splitter=split_inputs)
    assert rep.layer(1).status[2] is UnitStability.UNSTABLE
    assert rep.layer(1).status[0] is UnitStability.INACTIVE
    check_witnesses(net, rep, dom)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_input_split_verdicts_agree_with_sampling(seed):
    """Random deep nets with few inputs: every unit decided by the engine's batched input
    splitting, no unit proved stable shows the other sign at 20,000 random points or at the
    box's corners, and every unstable unit has two exactly checked witnesses."""
    rng = np.random.default_rng(seed)
    net = random_net(rng, [3, 16, 16, 16, 16, 2])
    lo, hi = [-0.5, 0.0, -1.0], [0.5, 0.25, 0.0]
    dom = box_domain(lo, hi)
    rep = analyze_stability(net, dom, timeout=30, splitter=split_inputs)
    assert rep.undecided == ()
    assert sum(s is UnitStability.UNSTABLE for lay in rep.layers for s in lay.status) > 0
    assert sum(rep.stage_counts()["exact"].values()) > 0  # the splitting had questions to settle
    check_witnesses(net, rep, dom)
    corners = np.array(np.meshgrid(*zip(lo, hi))).reshape(3, -1).T
    pts = np.vstack([np.array(lo) + rng.random((20000, 3)) * (np.array(hi) - np.array(lo)), corners])
    zs = net.pre_activations(pts)
    for layer in rep.layers:
        z = zs[layer.layer]
        for i, status in enumerate(layer.status):
            if status is UnitStability.INACTIVE:
                assert z[:, i].max() <= 1e-12, (layer.layer, i)
            elif status is UnitStability.ACTIVE:
                assert z[:, i].min() >= -1e-12, (layer.layer, i)


def test_unknown_exact_search_is_an_input_error():
    with pytest.raises(InputError, match="unknown exact search"):
        analyze_stability(twin_net(), box_domain([-1], [1]), timeout=1, exact="magic")
    assert ExactSearch.parse(True) is ExactSearch.AUTO
    assert ExactSearch.parse(False) is ExactSearch.NONE


def test_timeout_leaves_units_undecided_and_kept():
    net = hand_net()
    rep = analyze_stability(net, box_domain([-1], [1]), timeout=0.0)
    assert rep.undecided  # nothing beyond the bound stages had time to run
    for layer, unit in rep.undecided:
        assert rep.layer(layer).stage[unit] is Stage.TIMEOUT
    # whatever was decided is still right
    assert rep.layer(0).status[3] is UnitStability.INACTIVE


def test_union_of_boxes_combines_verdicts():
    net = hand_net()
    # on [-1, -0.5] u [0.5, 1] the unit x is inactive on one box and active on the other
    from equivcheck.core.domain import Box, Domain

    dom = Domain((Box((Fraction(-1),), (Fraction(-1, 2),)), Box((Fraction(1, 2),), (Fraction(1),))), "two")
    rep = analyze_stability(net, dom, timeout=30)
    assert rep.layer(0).status[0] is UnitStability.UNSTABLE
    assert rep.layer(0).status[2] is UnitStability.ACTIVE
    check_witnesses_union(net, rep, dom)


def check_witnesses_union(net, rep, dom):
    for layer in rep.layers:
        for i, status in enumerate(layer.status):
            if status is UnitStability.UNSTABLE:
                for idx, sign in ((layer.witness_active[i], 1), (layer.witness_inactive[i], -1)):
                    x = rep.witnesses[idx]
                    assert any(b.contains(x) for b in dom.boxes)
                    assert sign * pre_activations_exact(net.layers, [Fraction(v) for v in x])[layer.layer][i] > 0


def test_trained_mnist_model_verdicts_agree_with_samples():
    path = MODELS / "mnist_2x25_l1.onnx"
    if not path.exists():
        pytest.skip("models/mnist_2x25_l1.onnx not committed yet")
    net = load_network(path)
    dom = parse_domain("0:1", net.in_dim)
    rep = analyze_stability(net, dom, timeout=60)
    assert rep.undecided == ()
    check_witnesses(net, rep, dom)
    rng = np.random.default_rng(0)
    pts = np.vstack([rng.random((3000, 784)), (rng.random((3000, 784)) < 0.5).astype(float)])
    zs = net.pre_activations(pts)
    for layer in rep.layers:
        z = zs[layer.layer]
        for i, status in enumerate(layer.status):
            if status is UnitStability.INACTIVE:
                assert z[:, i].max() <= 1e-9
            elif status is UnitStability.ACTIVE:
                assert z[:, i].min() >= -1e-9
    counts = rep.stage_counts()
    assert sum(v["stable"] for v in counts.values()) + sum(v["unstable"] for v in counts.values()) == 50


def test_a_regions_count_first_does_not_break_later_lps():
    # HiGHS' thread pool is global to a process and fixed by the first model that runs: when a
    # regions count ran first with another thread count, every later LP of the stability
    # analysis failed and units were left undecided. A fresh process shows it.
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from tests.test_stability import twin_net\n"
        "from equivcheck.core.domain import box_domain\n"
        "from equivcheck.regions import count_regions\n"
        "from equivcheck.bounds.stability import analyze_stability, ExactSearch\n"
        "from equivcheck.core.options import UnitStability\n"
        "net = twin_net(); dom = box_domain([-1], [1])\n"
        "count_regions(net, dom, timeout=30)\n"
        "rep = analyze_stability(net, dom, timeout=30, exact=ExactSearch.BRANCH_AND_BOUND)\n"
        "print(rep.layer(1).status[0].value)\n"
    )
    from .helpers import REPO

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == UnitStability.INACTIVE.value, out.stderr[-500:]


@pytest.mark.parametrize("split", ["coef", "smear"])
def test_both_split_choices_decide_every_unit_soundly(split, monkeypatch):
    """The split input only steers the search: either choice decides every unit of a random
    deep net, and no unit proved stable shows the other sign at random points."""
    import equivcheck.engine.units as units

    monkeypatch.setattr(units, "SPLIT", split)
    rng = np.random.default_rng(7)
    net = random_net(rng, [4, 12, 12, 12, 2])
    lo, hi = np.array([-1.0, 0.0, -0.5, 0.25]), np.array([0.0, 0.5, 0.5, 0.5])
    dom = box_domain(list(lo), list(hi))
    rep = analyze_stability(net, dom, timeout=30, use_lp=False, splitter=split_inputs)
    assert rep.undecided == ()
    assert sum(rep.stage_counts()["exact"].values()) > 0
    check_witnesses(net, rep, dom)
    zs = net.pre_activations(lo + rng.random((20000, 4)) * (hi - lo))
    for layer in rep.layers:
        for i, status in enumerate(layer.status):
            if status is UnitStability.INACTIVE:
                assert zs[layer.layer][:, i].max() <= 1e-12
            elif status is UnitStability.ACTIVE:
                assert zs[layer.layer][:, i].min() >= -1e-12


def test_multi_start_search_finds_a_positive_corner_that_sampling_misses():
    """Layer 1 unit: 0.03 - |x1 - 0.3| - |x2 + 0.2| - |x3 - 0.7|, positive on about 1e-6 of
    the box: 200 random points miss it, the climbs from the best of them reach it, and the
    witness is checked exactly."""
    from equivcheck.bounds.stability_state import AnalysisState, multi_start_search

    a = np.array([0.3, -0.2, 0.7])
    w0 = np.vstack([np.eye(3), -np.eye(3)])
    b0 = np.concatenate([-a, a])
    w1 = -np.ones((1, 6))
    net = Network((Layer(Affine(w0, b0), True), Layer(Affine(w1, np.array([0.03])), True),
                   Layer(Affine(np.ones((1, 1)), np.zeros(1)), False)))
    st = AnalysisState(net, box_domain([-1, -1, -1], [1, 1, 1]).boxes[0], time.monotonic() + 30.0)
    rng = np.random.default_rng(0)
    pool = rng.uniform(-1, 1, (200, 3))
    assert net.pre_activations(pool)[1][:, 0].max() < 0
    multi_start_search(st, np.random.default_rng(1), pool=200, starts=8)
    idx = st.w_pos[1][0]
    assert idx is not None
    x = st.witnesses[idx]
    assert pre_activations_exact(net.layers, [Fraction(v) for v in x])[1][0] > 0


def test_split_coefficients_are_the_gradient_where_every_earlier_unit_is_stable():
    """On a box so small that no unit below the questioned layer changes phase, the
    back-substituted bound is the unit's own linear map: the coefficients the split uses are
    ``|d z / d x|`` there."""
    from equivcheck.core.ascent import vjp
    from equivcheck.engine.units import _Bounder

    rng = np.random.default_rng(3)
    net = random_net(rng, [4, 10, 10, 10, 2])
    x = rng.uniform(-1, 1, 4)
    lo, hi = (x - 1e-9)[None, :], (x + 1e-9)[None, :]
    b = _Bounder(net)
    prior = np.concatenate([np.full(b.size, -np.inf), np.full(b.size, np.inf)])[None, :]
    last = np.arange(10)
    b.bounds(2, last, lo, hi, prior)
    q_layer, q_unit = np.array([2, 2, 1]), np.array([3, 7, 0])
    q_sign = np.array([1.0, -1.0, 1.0])
    got, lines = b.lines(2, last, q_layer, q_unit, q_sign, np.array([True]),
                         np.ones((1, 3), dtype=bool), lo, hi)
    assert sorted(lines.qs[0][lines.valid[0]]) == [0, 1, 2]  # a line for every open question
    for j in range(2):
        c = np.zeros((1, 10))
        c[0, q_unit[j]] = 1.0
        want = np.abs(vjp(net, x[None, :], c, layer=2))[0]
        assert np.allclose(got[0, j], want, rtol=1e-9, atol=1e-12)
    assert not got[0, 2].any()  # a question of an earlier layer has no coefficients here
    # its line is its own linear map too (the unit's index in its full layer, its sign)
    r = int(np.flatnonzero(lines.qs[0] == 2)[0])
    c = np.zeros((1, 10))
    c[0, 0] = 1.0
    want = vjp(net, x[None, :], c, layer=1)[0]
    assert np.allclose(np.asarray(lines.part.nu)[0, r], want, rtol=1e-9, atol=1e-12)


def test_wide_networks_hold_a_bounded_number_of_witness_candidates(monkeypatch):
    """The witness stage evaluates every candidate point on every hidden unit at once, and the
    climbs one start per missing witness: on a CNN (57,888 units, 25,000 vertices) that took
    14 GB. Both are capped by candidates x units; the analysis stays sound with fewer."""
    import equivcheck.bounds.stability as stability
    import equivcheck.bounds.stability_state as state

    seen = []
    real_try, real_ascend = state.AnalysisState.try_witnesses, state.ascend

    def spy_try(self, pts, *args, **kwargs):
        seen.append(("points", len(np.atleast_2d(pts))))
        return real_try(self, pts, *args, **kwargs)

    def spy_ascend(objective, starts, *args, **kwargs):
        seen.append(("climbs", len(starts)))
        return real_ascend(objective, starts, *args, **kwargs)

    monkeypatch.setattr(state.AnalysisState, "try_witnesses", spy_try)
    monkeypatch.setattr(state, "ascend", spy_ascend)
    monkeypatch.setattr(stability, "WITNESS_ENTRIES", 64 * 200)
    monkeypatch.setattr(state, "CLIMB_ENTRIES", 64 * 200)
    net = random_net(np.random.default_rng(5), [20, 120, 80, 3])  # 200 hidden units
    report = analyze_stability(net, "-1:1", timeout=30, use_lp=False)
    assert seen and all(n <= 64 for kind, n in seen), seen  # 64 = max(64, 12,800 // 200)
    x = np.random.default_rng(1).uniform(-1, 1, (2000, 20))
    zs = net.pre_activations(x)
    for k, layer in enumerate(report.layers):
        for i, s in enumerate(layer.status):
            if s is UnitStability.ACTIVE:
                assert zs[k][:, i].min() >= 0
            elif s is UnitStability.INACTIVE:
                assert zs[k][:, i].max() <= 0


def test_progress_reports_each_stage_and_the_same_verdicts():
    """``progress`` hears of every stage (units decided and open, adding up to every unit, the
    decided count never falling), and reporting changes no verdict."""
    from equivcheck.core.progress import Progress

    net = random_net(np.random.default_rng(11), [6, 20, 20, 20, 2])
    dom = box_domain([-1] * 6, [1] * 6)
    events: list[Progress] = []
    quiet = analyze_stability(net, dom, timeout=30, exact="branch-and-bound")
    told = analyze_stability(net, dom, timeout=30, exact="branch-and-bound", progress=events.append)
    assert [lay.status for lay in told.layers] == [lay.status for lay in quiet.layers]
    assert events and all(e.stage == "stability" and e.unit == "units" for e in events)
    assert all(e.done + e.open == net.num_relus for e in events)
    done = [e.done for e in events]
    assert done == sorted(done)
    details = " | ".join(e.detail for e in events)
    for stage in ("interval bounds", "symbolic bounds, layer 1", "witness points"):
        assert stage in details, details


def test_witness_membership_and_signs_are_those_of_exact_arithmetic():
    """The witness check's float shortcuts agree with rational arithmetic: membership of float
    points in a box with a strict bound and a bound no float equals, and the sign of every
    pre-activation the interval bounds of the point decide."""
    import time as _time

    from equivcheck.bounds.stability_state import AnalysisState
    from equivcheck.core.domain import Box
    from equivcheck.core.rational import float_down, float_up

    third = Fraction(1, 3)
    box = Box((Fraction(0), Fraction(-1)), (third, Fraction(1)), lower_strict=(True, False),
              upper_strict=(False, True))
    net = random_net(np.random.default_rng(5), [2, 30, 30, 2])
    st = AnalysisState(net, box, _time.monotonic() + 60)
    tiny = float(np.nextafter(0.0, 1.0))
    for x in ([0.0, 0.0], [tiny, 0.0], [float_down(third), -1.0], [float_up(third), 0.0],
              [0.1, 1.0], [0.1, float(np.nextafter(1.0, 0.0))], [0.2, -1.5]):
        assert st._inside(np.array(x)) == box.contains(x), x
    rng = np.random.default_rng(6)
    for x in rng.uniform([0, -1], [float_down(third), 1], size=(20, 2)):
        signs = st._signs(x)
        exact = pre_activations_exact(net.layers, [Fraction(float(v)) for v in x])
        for k in st.relu_layers:
            truth = np.array([(v > 0) - (v < 0) for v in exact[k]])
            decided = signs[k] != 0
            assert np.array_equal(signs[k][decided], truth[decided])
            assert decided.mean() > 0.9  # a point's interval bounds decide nearly every unit
