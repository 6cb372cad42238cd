"""A float pre-check that tells, in milliseconds, when the canonical forms cannot match.

Building the canonical forms converts every weight to an exact rational; on MNIST 256x2 against a
float16-rounded copy that took 1.6-4 s only to find that the first layers share no unit, where the
engine then proves the pair in 0.2 s. Both forms need, for each unit of a first layer that is
unstable on the box and feeds the next layer, a unit of the other first layer with the same
pre-activation up to a positive factor (or its twin, up to a negative one: ``relu(-p) =
relu(p) - p``); :mod:`equivcheck.canon.build` stops with :class:`~equivcheck.canon.build.NoMatch`
when one is missing. :func:`first_layers_differ` looks for such a unit in float64, so that the
exact build is not started for it.

Only a pre-check: it never proves anything and never refutes anything. It names a difference
only when the evidence is clear (a unit unstable with a margin of 1e-6 of its scale, no row of
the other layer within 1e-6 of its normalised weights), so a pair the exact forms would prove is
not turned away by float rounding; a miss only means the exact build runs as before.
"""

from __future__ import annotations

import numpy as np

from equivcheck.core.domain import Box
from equivcheck.core.network import Network

TOLERANCE = 1e-6  # normalised rows this close are "maybe the same unit" (the exact build decides)
MOSTLY = 0.75  # outside strict mode: the share of a first layer's units without a partner ...
AT_LEAST = 3  # ... and their least number, for the pre-check to speak


def first_layers_differ(a: Network, b: Network, box: Box, strict: bool = True) -> str | None:
    """A reason why the canonical forms of ``a`` and ``b`` on ``box`` cannot settle the pair,
    or None when this quick look cannot tell (then only the exact build can).

    ``strict`` (strict mode: the forms must be equal): one unit without a partner is enough.
    Otherwise (epsilon, argmax) the forms may differ by units that reach the outputs only
    linearly (an epsilon difference bounded exactly, a shift common to all outputs), so only a
    first layer where most units are without a partner (:data:`MOSTLY`, at least
    :data:`AT_LEAST` of them: a rounded, pruned or fine-tuned copy, not a rewrite) counts."""
    if len(a.layers) < 2 or len(b.layers) < 2 or a.in_dim != b.in_dim:
        return None
    if not (a.layers[0].relu and b.layers[0].relu):
        return None
    lo, hi = np.asarray(box.lower_float()), np.asarray(box.upper_float())
    ra, rb = _ranges(a, lo, hi), _ranges(b, lo, hi)
    for net, other, mine, theirs in ((a, b, ra, rb), (b, a, rb, ra)):
        lonely, total = _lonely_units(net, other, mine, theirs)
        if lonely and (strict or (lonely >= AT_LEAST and lonely >= MOSTLY * total)):
            return (f"layer 0 of {net.source} has {lonely} unit(s) unstable on the box whose "
                    "weights no unit of the other network's layer 0 has, up to a factor "
                    "(float pre-check)")
    return None


def _rows(net: Network) -> np.ndarray:
    """Layer 0's rows ``[w | b]`` divided by their largest magnitude (zero rows stay zero)."""
    lay = net.layers[0]
    rows = np.hstack([lay.weight, lay.bias[:, None]])
    scale = np.abs(rows).max(axis=1, keepdims=True)
    return rows / np.where(scale > 0, scale, 1.0)


def _lonely_units(net: Network, other: Network, mine_ranges, other_ranges) -> tuple[int, int]:
    """How many units of ``net``'s layer 0 are clearly unstable on the box (``mine_ranges``,
    ``other_ranges``: :func:`_ranges` of ``net`` and ``other``), feed layer 1,
    have no row of ``other``'s layer 0 within :data:`TOLERANCE` (either sign), and cannot reach a
    deeper layer of ``other`` either: their row is not in the span of the rows ``other`` can pass
    on linearly (units that may be always active, twins ``relu(p) - relu(-p) = p``, the
    constant), and of how many clearly unstable units that feed the outputs."""
    zlo, zhi, margin = mine_ranges
    feeds = _feeds(net)
    todo = np.flatnonzero((zlo < -margin) & (zhi > margin) & feeds)
    if not len(todo):
        return 0, 0
    mine, theirs = _rows(net)[todo], _rows(other)
    missing = ~_has_match(mine, np.vstack([theirs, -theirs]))
    if not missing.any():
        return 0, len(todo)
    olo, _, omargin = other_ranges
    linear = (olo >= -omargin) | _has_match(-theirs, theirs)
    basis = np.vstack([theirs[linear], np.eye(theirs.shape[1])[-1:]]).T  # [n + 1, k]
    cand = mine[missing].T
    coef, *_ = np.linalg.lstsq(basis, cand, rcond=None)
    residual = np.abs(basis @ coef - cand).max(axis=0)
    return int(np.count_nonzero(residual > 1e3 * TOLERANCE)), len(todo)


def _feeds(net: Network) -> np.ndarray:
    """Which units of layer 0 the outputs can depend on: a path of nonzero weights from the
    unit to an output, through units that are read themselves. Linear layers are first merged
    into the layer after them (signed products: a permutation and its inverse cancel); an
    entry below 1e-9 of its matrix's largest counts as 0 (a doubtful unit counts as not read,
    which only makes the pre-check say less)."""
    mats = []
    m = None
    for lay in net.layers[1:]:
        m = lay.weight if m is None else lay.weight @ m
        if lay.relu or lay is net.layers[-1]:
            mats.append(np.abs(m))
            m = None
    read = np.ones(mats[-1].shape[0], dtype=bool)
    for a in reversed(mats):
        cut = 1e-9 * max(float(a.max(initial=0.0)), 1e-300)
        read = (a[read] > cut).any(axis=0)
    return read


def _ranges(net: Network, lo: np.ndarray, hi: np.ndarray):
    """Layer 0's pre-activation range on the box (interval arithmetic, float) and the margin
    below which a bound is treated as touching 0."""
    w, bias = net.layers[0].weight, net.layers[0].bias
    zlo = np.maximum(w, 0) @ lo + np.minimum(w, 0) @ hi + bias
    zhi = np.maximum(w, 0) @ hi + np.minimum(w, 0) @ lo + bias
    margin = TOLERANCE * (np.abs(w) @ np.maximum(np.abs(lo), np.abs(hi)) + np.abs(bias)) + 1e-300
    return zlo, zhi, margin


def _has_match(queries: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Per query row, whether some row of ``pool`` is within :data:`TOLERANCE` of it (max norm):
    candidates by a sorted random projection, then the rows compared."""
    out = np.zeros(len(queries), dtype=bool)
    if not len(pool):
        return out
    r = np.random.default_rng(0).uniform(-1.0, 1.0, queries.shape[1])
    reach = 2 * TOLERANCE * np.abs(r).sum()
    proj = pool @ r
    order = np.argsort(proj)
    ranked = proj[order]
    q = queries @ r
    left = np.searchsorted(ranked, q - reach, side="left")
    right = np.searchsorted(ranked, q + reach, side="right")
    for i in range(len(queries)):
        cand = order[left[i]:right[i]]
        out[i] = bool(len(cand)) and np.abs(pool[cand] - queries[i]).max(axis=1).min() <= TOLERANCE
    return out
