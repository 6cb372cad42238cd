"""The engine's bounds on pairs where one network has units zeroed out (weights and bias 0), as a
pruned copy has: such a unit's pre-activation bounds are [0, 0], "active" and "inactive" at once,
and every part of the bounds must treat it as one case. (A mismatch between the backward
difference relaxation and the part it moves to f's stream once gave bounds of f - g that excluded
the true difference on MNIST 256x2 with one unit zeroed.) Checks that can fail: the batched
bounds enclose the exact differences at sampled points, and an epsilon just below a sampled
deviation is never PROVED (the engine's falsifier off, so only its bounds speak).
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from equivcheck.core.domain import Box
from equivcheck.core.network import Affine, Layer, Network
from equivcheck.core.spec import Spec
from equivcheck.engine import Boxes, EngineOptions, Outcome, PairModel, check_box, pair_bounds


def _net(ws, bs) -> Network:
    return Network(tuple(Layer(Affine(w, b), relu=k < len(ws) - 1, name=f"l{k}")
                         for k, (w, b) in enumerate(zip(ws, bs))))


def _pair(seed: int, n_in: int, widths: tuple[int, ...], zero_in: str):
    """f random (float32 values), g = f with about a third of its hidden units zeroed (rows and
    biases; ``zero_in`` "g", "f" or "both": which network loses them); some units are pushed to be
    stably active or inactive so every combination of phases with a [0, 0] unit occurs."""
    rng = np.random.default_rng(seed)
    dims = (n_in,) + widths + (3,)
    ws = [rng.normal(0, 1.0 / np.sqrt(dims[k]), (dims[k + 1], dims[k])).astype(np.float32)
          .astype(np.float64) for k in range(len(dims) - 1)]
    bs = [rng.normal(0, 0.3, dims[k + 1]).astype(np.float32).astype(np.float64)
          for k in range(len(dims) - 1)]
    for k in range(len(widths)):
        push = rng.choice([-3.0, 0.0, 3.0], widths[k])  # stably inactive / mixed / active
        bs[k] = bs[k] + push
    wf, bf = [w.copy() for w in ws], [b.copy() for b in bs]
    wg, bg = [w.copy() for w in ws], [b.copy() for b in bs]
    for k in range(len(widths)):
        cut = rng.random(widths[k]) < 0.35
        sides = {"g": [(wg, bg)], "f": [(wf, bf)], "both": [(wf, bf), (wg, bg)]}[zero_in]
        for w, b in sides:
            w[k][cut] = 0.0
            b[k][cut] = 0.0
        # and perturb g a little elsewhere, so the difference is not only the zeroed units
        wg[k + 1] = wg[k + 1] + rng.normal(0, 0.01, wg[k + 1].shape)
    return _net(wf, bf), _net(wg, bg), rng


CASES = [(seed, n_in, widths, side) for seed in range(6)
         for (n_in, widths) in [(3, (6, 5)), (5, (8, 8, 6))] for side in ("g", "f", "both")]


@pytest.mark.parametrize("seed,n_in,widths,side", CASES)
def test_bounds_enclose_differences_with_zeroed_units(seed, n_in, widths, side):
    f, g, rng = _pair(zlib.crc32(f"{seed}{n_in}{side}".encode()), n_in, widths, side)
    model = PairModel.build(f, g)
    lo = rng.uniform(-1.0, 0.0, (16, n_in))
    hi = lo + rng.uniform(0.05, 1.0, (16, n_in))
    x = lo[:, None, :] + rng.random((16, 200, n_in)) * (hi - lo)[:, None, :]
    diff = np.stack([f.evaluate(xb) - g.evaluate(xb) for xb in x])  # [B, P, out]
    for refine in ("none", "output", "all"):
        for hidden in (False, True):
            for sym in (True, False):
                if refine == "none" and not sym:
                    continue
                pb = pair_bounds(model, Boxes(lo, hi, model.width), refine, hidden_diff=hidden,
                                 symbolic=sym)
                tol = 1e-9
                assert np.all(pb.d_lo <= diff.min(axis=1) + tol), (refine, hidden, sym)
                assert np.all(pb.d_hi >= diff.max(axis=1) - tol), (refine, hidden, sym)


@pytest.mark.parametrize("seed,n_in,widths,side", CASES[::4])
def test_no_proof_below_a_sampled_deviation(seed, n_in, widths, side):
    f, g, rng = _pair(zlib.crc32(f"p{seed}{n_in}{side}".encode()), n_in, widths, side)
    box = Box((-1,) * n_in, (1,) * n_in)
    x = rng.uniform(-1.0, 1.0, (4000, n_in))
    worst = float(np.abs(f.evaluate(x) - g.evaluate(x)).max())
    if worst <= 0.0:
        return
    spec = Spec.make("epsilon", worst * 0.999)
    res = check_box(f, g, spec, box, options=EngineOptions(max_nodes=1_500, falsify=False))
    assert res.outcome is not Outcome.PROVED
