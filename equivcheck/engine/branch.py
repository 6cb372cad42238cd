"""ReLU splitting: nodes that are (box, fixed ReLU phases), for high-dimensional inputs.

Why (measured, ``benchmarks/engine_mnist.py``): on MNIST's 784 inputs a bisection of one input
halves one of 784 widths and leaves the bounds as they were, so input splitting makes no
progress (256x2 10%-pruned, prop_0, epsilon 0.05: 73 boxes in 30 s, bound 0.0577 unchanged).
Fixing the phase of one unstable ReLU of f (or of g when the shapes differ) instead removes its
triangle relaxation from every later bound.

A phase is fixed through the frontier's inherited bounds (the packed rows of
:func:`equivcheck.engine.frontier.pack`, intersected with the new bounds before they are used by
:func:`~equivcheck.engine.bounds.pair_bounds`): "active" sets the unit's lower pre-activation
bound to 0, "inactive" its upper bound to 0. Every bound the engine then computes for the child
is a rigorous bound over the points of the box where the fixed phases hold (by induction over
the layers), and the two children cover the parent. So:

* a child is proved exactly as a box is (its bounds hold on its part of the box);
* a child whose lower bound of some quantity ends above its upper bound (:func:`empty_nodes`)
  has no point at all (a point would lie between them) and is closed as empty: this is the
  only place phases close a node, and it needs no tolerance.

The unit to split is the unstable one with the largest relaxation gap ``u (-l) / (u - l)`` (the
height of its triangle) times its sensitivity: ``|W|``-weighted paths to the outputs through the
units not fixed inactive (a BaBSR-like score that needs no extra back-substitution).
"""

from __future__ import annotations

import numpy as np

from equivcheck.core import matrix
from equivcheck.engine.model import PairModel

PRIOR_KEYS = ("f_lo", "f_hi", "g_lo", "g_hi", "dz_lo", "dz_hi")


class Layout:
    """Where each layer's bounds sit in a packed row (``[K, Q]``, see ``frontier.pack``)."""

    def __init__(self, model: PairModel):
        self.model = model
        keys = PRIOR_KEYS if model.same_shape else PRIOR_KEYS[:4]
        self.start: dict = {}
        at = 0
        for key in keys:
            layers = model.g if key.startswith("g") else model.f
            for k, lay in enumerate(layers):
                self.start[key, k] = at
                at += lay.out_dim
        self.width = at
        lo_cols, hi_cols = [], []
        for key in keys[::2]:
            layers = model.g if key.startswith("g") else model.f
            hkey = key[:-2] + "hi"
            for k, lay in enumerate(layers):
                lo_cols.append(np.arange(lay.out_dim) + self.start[key, k])
                hi_cols.append(np.arange(lay.out_dim) + self.start[hkey, k])
        self.lo_cols = np.concatenate(lo_cols)
        self.hi_cols = np.concatenate(hi_cols)
        # the units that may be split: hidden ReLU units of f, and of g unless g's bounds follow
        # from f's and the difference's (same-shaped pairs)
        nets = ("f",) if model.same_shape else ("f", "g")
        self.nets = nets

    def cols(self, net: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        layers = self.model.f if net == "f" else self.model.g
        m = layers[k].out_dim
        return (np.arange(m) + self.start[net + "_lo", k], np.arange(m) + self.start[net + "_hi", k])



def empty_nodes(packed: np.ndarray, layout: Layout) -> np.ndarray:
    """``[K]`` bool: nodes whose bounds contradict (some lower bound above its upper bound), so
    that no point of the box satisfies their fixed phases."""
    return np.any(packed[:, layout.lo_cols] > packed[:, layout.hi_cols], axis=1)


def split_scores(packed: np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """``[K, C]`` scores (0 where a unit is not unstable) and the ``[C, 2, 2]`` packed columns
    (network f then g; lower, upper) of the C candidate units (for pairs of different shapes each
    candidate is one network's unit: both rows name it)."""
    model = layout.model
    scores, cols = [], []
    for net in layout.nets:
        layers = model.f if net == "f" else model.g
        sens = np.ones((packed.shape[0], layers[-1].out_dim))
        per_layer = []
        for k in range(len(layers) - 1, 0, -1):
            # sensitivity of the outputs to the post-activation of layer k - 1
            lo_c, hi_c = layout.cols(net, k)
            if layers[k].relu:
                sens = sens * (packed[:, hi_c] > 0.0)  # units fixed inactive pass nothing on
            sens = matrix.left_multiply(sens, layers[k].aw)
            if layers[k - 1].relu:
                c = np.stack(layout.cols(net, k - 1), axis=1)  # [m, 2]
                gap = _gap(packed, c)
                if model.same_shape:  # the phases of f's and g's unit are fixed together
                    cg = np.stack(layout.cols("g", k - 1), axis=1)
                    gap_g = _gap(packed, cg)
                    # the width of delta's relaxation where either unit is unstable
                    d_lo, d_hi = layout.cols("dz", k - 1)
                    gap = np.where((gap > 0) | (gap_g > 0), packed[:, d_hi] - packed[:, d_lo], 0.0)
                    c = np.stack([c, cg], axis=1)
                else:
                    c = np.stack([c, c], axis=1)
                per_layer.append((gap * sens, c))
        for s, c in reversed(per_layer):
            scores.append(s)
            cols.append(c)
    if not scores:
        return np.zeros((packed.shape[0], 0)), np.zeros((0, 2, 2), dtype=np.int64)
    return np.concatenate(scores, axis=1), np.concatenate(cols, axis=0)


def _gap(packed: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The height ``u (-l) / (u - l)`` of each unit's triangle relaxation (0 if stable)."""
    lo, hi = packed[:, c[:, 0]], packed[:, c[:, 1]]
    unst = (lo < 0.0) & (hi > 0.0)
    return np.where(unst, hi * -lo / np.where(unst, hi - lo, 1.0), 0.0)


def relu_children(packed: np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split each node (row of ``packed``) on its best unit: ``(ok [K] bool, parent [J],
    children [J, Q])`` for the nodes that still have an unstable unit (``ok``). One network's
    unit gives two children (active, inactive); a same-shaped pair's unit ``i`` gives the phase
    combinations of f's and g's unit ``i`` that its bounds allow (up to four: with both phases
    fixed, ``delta_i`` is exact)."""
    score, cols = split_scores(packed, layout)
    if not score.shape[1]:
        return np.zeros(len(packed), bool), np.zeros(0, np.int64), packed[:0]
    best = score.argmax(axis=1)
    ok = score[np.arange(len(best)), best] > 0.0
    rows, unit = np.flatnonzero(ok), best[ok]
    c = cols[unit]  # [K', 2, 2]
    r = np.arange(len(rows))
    parents, kids = [], []
    for f_on in (True, False):
        for g_on in ((True, False) if layout.model.same_shape else (f_on,)):
            kid = packed[rows].copy()
            for net, on in ((0, f_on), (1, g_on)):
                if on:
                    kid[r, c[:, net, 0]] = np.maximum(kid[r, c[:, net, 0]], 0.0)
                else:
                    kid[r, c[:, net, 1]] = np.minimum(kid[r, c[:, net, 1]], 0.0)
            live = ~np.any(kid[r[:, None], c[:, :, 0]] > kid[r[:, None], c[:, :, 1]], axis=1)
            parents.append(rows[live])
            kids.append(kid[live])
    return ok, np.concatenate(parents), np.concatenate(kids)
