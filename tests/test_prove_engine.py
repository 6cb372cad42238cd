"""The prover with the branch-and-bound engine wired in (solve.search.search): which stage
decides a box, and that each route keeps the promises.

* sub-boxes the engine's bounds leave (its residue) go to the solver part by part, each
  clipped to the exact box;
* the engine's counterexample becomes a full counterexample (exact, float64, onnxruntime);
* the engine decides pairs the whole-box solver query cannot (many unstable ReLUs);
* ``progress`` receives the engine's reports;
* the engine's verdicts equal the solver-only path's on random pairs where both decide.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np
import pytest

import equivcheck
from equivcheck.core.domain import Box
from equivcheck.core.network import Affine, Layer
from equivcheck.core.options import ProverOptions
from equivcheck.core.progress import Progress
from equivcheck.core.result import Verdict
from equivcheck.core.spec import Spec
from equivcheck.engine import EngineOptions, Outcome
from equivcheck.solve import search as search_module
from equivcheck.solve.search import clip
from tests.helpers import exact_sample_check, f32, onnx_of, random_net


def _shift_output(a, delta: float):
    last = a.layers[-1]
    aff = Affine(last.weight, f32(last.bias + delta))
    return a.with_layers(list(a.layers[:-1]) + [Layer(aff, last.relu, last.name)])


def _residue_engine(monkeypatch, cuts: int = 2):
    """Make the engine leave the whole box to the solver as ``cuts`` float slices along input 0
    (its residue), as it does for sub-boxes its bounds cannot close by splitting."""
    real = search_module.check_box

    def fake(f, g, spec, box, deadline=None, options=EngineOptions(), model=None, **kw):
        res = real(f, g, spec, box, deadline, dataclasses.replace(options, max_nodes=1),
                   model=model, **kw)
        lo, hi = box.lower_float(), box.upper_float()
        edges = np.linspace(lo[0], hi[0], cuts + 1)
        residue = []
        for left, right in zip(edges[:-1], edges[1:]):
            plo, phi = lo.copy(), hi.copy()
            plo[0], phi[0] = left, right
            residue.append((plo, phi, 1.0))
        return dataclasses.replace(res, outcome=Outcome.UNKNOWN, extra={"residue": residue},
                                   stats=dataclasses.replace(res.stats, open_nodes=len(residue)))

    monkeypatch.setattr(search_module, "check_box", fake)


def test_the_engines_residue_goes_to_the_solver_part_by_part(monkeypatch):
    _residue_engine(monkeypatch, cuts=3)
    a = random_net(np.random.default_rng(3), [3, 20, 20, 2])  # > solver_first_unstable ReLUs
    l0 = a.layers[0]
    b = a.with_layers([Layer(Affine(f32(l0.weight * (1 + 2**-10)), l0.bias), True)] + list(a.layers[1:]))
    opts = ProverOptions(solver_first_unstable=0)
    # (the whole-box difference bound is about 0.0069: not enough for 0.005)
    r = equivcheck.prove(a, b, domain="-1:1", mode="epsilon", tolerance="0.005", timeout=60,
                         options=opts)
    assert r.verdict is Verdict.PROVED, r.reason
    assert "the solver on the 3 they could not close" in r.reason
    # a violation inside one part: the solver's point lies in the box and violates exactly
    r = equivcheck.prove(a, _shift_output(a, 0.25), domain="-1:1", mode="epsilon",
                         tolerance="0.2", timeout=60, options=opts)
    assert r.verdict is Verdict.REFUTED, r.reason
    cex = r.counterexample
    assert cex.exact.violated and all(-1 <= v <= 1 for v in cex.exact_input)


def test_an_engine_counterexample_is_checked_on_three_backends():
    rng = np.random.default_rng(5)
    a = random_net(rng, [4, 30, 30, 3])
    w = a.layers[1].weight.copy()
    w[:5] *= 1.5  # a visible change in the second layer
    b = a.with_layers([a.layers[0], Layer(Affine(f32(w), a.layers[1].bias), True), a.layers[2]])
    r = equivcheck.prove(onnx_of(a), onnx_of(b), domain="-1:1", mode="epsilon", tolerance="0.01",
                         timeout=60)
    assert r.verdict is Verdict.REFUTED, r.reason
    assert "branch and bound" in r.reason
    cex = r.counterexample
    assert cex.exact.violated and cex.reproduces and cex.onnxruntime.violated
    assert all(-1 <= v <= 1 for v in cex.input)


def test_the_engine_proves_what_the_whole_box_query_cannot_and_reports_progress():
    a = random_net(np.random.default_rng(8), [5, 40, 40, 3])
    l0 = a.layers[0]
    b = a.with_layers([Layer(Affine(f32(l0.weight * (1 + 2**-9)), l0.bias), True)] + list(a.layers[1:]))
    seen: list[Progress] = []
    r = equivcheck.prove(a, b, domain="-1:1", mode="epsilon", tolerance="0.01", timeout=60,
                         progress=seen.append)
    assert r.verdict is Verdict.PROVED, r.reason
    assert "branch and bound" in r.reason and r.boxes[0].parts > 1
    assert exact_sample_check(a, b, Spec.make("epsilon", "0.01"), -1, 1, n=200)
    assert seen and all(p.stage == "search" for p in seen)
    solver = equivcheck.prove(a, b, domain="-1:1", mode="epsilon", tolerance="0.01", timeout=4,
                              options=ProverOptions(engine=False))
    assert solver.verdict is Verdict.UNKNOWN  # 160 unstable ReLUs: the whole-box query times out


@pytest.mark.parametrize("seed", range(6))
def test_engine_and_solver_only_agree_on_random_pairs(seed):
    rng = np.random.default_rng(100 + seed)
    a = random_net(rng, [2, 6, 6, 2])
    w = a.layers[0].weight.copy()
    w[0, 0] += float(rng.normal(0, 0.2))
    b = a.with_layers([Layer(Affine(f32(w), a.layers[0].bias), True)] + list(a.layers[1:]))
    for mode, tol in (("epsilon", "0.1"), ("argmax", None)):
        with_engine = equivcheck.prove(a, b, domain="-1:1", mode=mode, tolerance=tol, timeout=30,
                                       options=ProverOptions(solver_first_unstable=0))
        solver = equivcheck.prove(a, b, domain="-1:1", mode=mode, tolerance=tol, timeout=30,
                                  options=ProverOptions(engine=False))
        if Verdict.UNKNOWN not in (with_engine.verdict, solver.verdict):
            assert with_engine.verdict is solver.verdict, (mode, with_engine.reason, solver.reason)


def test_clip_keeps_the_strict_faces_of_the_box():
    box = Box((Fraction(0), Fraction(0)), (Fraction(1), Fraction(1)), (True, False), (False, True))
    part = clip(box, np.array([-1.0, 0.5]), np.array([0.5, 2.0]))
    assert part.lower == (0, Fraction(1, 2)) and part.upper == (Fraction(1, 2), 1)
    assert part.lower_strict == (True, False) and part.upper_strict == (False, True)
    assert clip(box, np.array([-1.0, -1.0]), np.array([0.0, 1.0])) is None  # only x0 = 0: excluded
    assert clip(box, np.array([2.0, 0.0]), np.array([3.0, 1.0])) is None
