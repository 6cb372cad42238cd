"""The engine's fixed costs on easy instances, cut without changing what it finds.

* the falsifier's ascent computes each point's margin from the forward pass it takes the
  gradient from: the margins it hands to ``confirm`` must be exactly ``Network.evaluate``'s;
* the whole-box sampling runs only once the first round has left the root open: a root the
  bounds close is proved without it, and a violation is still found.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from equivcheck.core.spec import Spec, batch_margin
from equivcheck.engine import EngineOptions, Outcome, check_box
from equivcheck.engine.falsify import Falsifier
from tests.test_engine import assert_sound, random_box, random_pair, sampled_deviation


@pytest.mark.parametrize("spec", [Spec.make("epsilon", "0.01"), Spec.make("argmax"),
                                  Spec.make("epsilon", "0.02", norm="l1")])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ascent_margins_are_the_networks_own(seed, spec):
    rng = np.random.default_rng(seed)
    f, g = random_pair(rng, [3, 8, 8, 3], "noise")
    box = random_box(rng, 3)
    fals = Falsifier(f, g, spec, box, seed)
    slo, shi = fals.sample
    lo = np.repeat(slo[None], 5, axis=0)
    hi = np.repeat(shi[None], 5, axis=0)
    x0 = lo + rng.random(lo.shape) * (hi - lo)
    best, m = fals.ascend(x0, lo, hi, 6)
    expected = batch_margin(spec, f.evaluate(best), g.evaluate(best))
    assert np.array_equal(m, expected)
    assert np.all(m >= batch_margin(spec, f.evaluate(x0), g.evaluate(x0)))  # never worse
    # the margins confirm reuses are the ones it would compute
    cand = fals.candidates(lo[:2], hi[:2], None, 3, random=2)
    assert fals._known is not None and fals._known[0] is cand
    assert np.array_equal(fals._known[1], fals.margins(cand))


def test_a_root_its_bounds_close_is_proved_without_sampling():
    rng = np.random.default_rng(4)
    f, g = random_pair(rng, [2, 6, 6, 2], "same")
    box = random_box(rng, 2)
    res = check_box(f, g, Spec.make("epsilon", "0.001"), box)
    assert res.outcome is Outcome.PROVED and res.stats.nodes == 1
    assert res.stats.witness == -np.inf  # the falsifier never ran
    assert res.stats.exact_checks == 0


def test_the_whole_box_is_still_sampled_when_the_root_is_open():
    rng = np.random.default_rng(3)
    f, g = random_pair(rng, [2, 6, 6, 2], "prune")
    box = random_box(rng, 2)
    seen = sampled_deviation(f, g, box, rng)
    spec = Spec.make("epsilon", Fraction(seen) / 4)
    # no falsifying in the rounds: only the whole-box sampling can find the violation
    res = check_box(f, g, spec, box, options=EngineOptions(falsify_boxes=0))
    assert res.outcome is Outcome.REFUTED, res.reason
    assert res.stats.nodes >= 1 and res.exact_margin > 0
    assert_sound(res, f, g, spec, box, rng)
