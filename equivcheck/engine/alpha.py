"""Optimised lower relaxation slopes (alpha-CROWN) for the engine's back-substitution.

An unstable ReLU (``l < 0 < u``) satisfies ``relu(z) >= a z`` for *every* slope ``a`` in
[0, 1], so a back-substitution may use any such slope per unit and per bounded row (the
upper line stays the chord, which is pointwise best). :func:`optimise_rows` starts from CROWN's
choice (1 where ``u > -l``, else 0) and takes a few projected signed-gradient steps on the
rows' upper bounds. The gradient of a row's bound with respect to the slopes is exact for the
current signs: the back-substitution is linear in each layer's coefficients, so
``d bound / d a_i = nu_i * v_i``, with ``v_i`` unit ``i``'s pre-activation at the box vertex
the bound is attained at, pushed forward through the relaxed layers below unit ``i``'s (one
forward pass of ``[B, R, m]`` products, the cost of the back-substitution itself).

Where it is used (measured; see ``EngineOptions.alpha_steps`` in :mod:`equivcheck.engine.search`):
the rows of the hidden units of each network (f's alone for same-shaped pairs) when
:func:`~equivcheck.engine.bounds.pair_bounds` is given ``alpha_steps``; the search asks for it
only on nodes the plain bounds left open near the tolerance. On MNIST 256x4 vs its float16 copy
(prop_0's box) 4 steps take the output-difference bound from 0.086 to 0.051 (more steps: 0.0511)
and the unstable units from 439 to 333, at 3x the cost of the plain bounds; on the worst
sub-boxes of ACAS N3,8 (prop_1, a twentieth of each side) from 1.82 to 0.57. Not used: the
slopes of f's stream inside the difference back-substitution (output rows 0.567 -> 0.550 on
those ACAS boxes at 4x the cost; MNIST 256x2 vs its 30%-pruned copy 0.488 -> 0.487), and the
delta stream's relaxation has no free slope (its faces are chords).

Soundness does not depend on the optimisation: every bound computed (one per step) is a
rigorous bound for its own slopes, with the rounding allowances of
:func:`~equivcheck.engine.backward.concretize`; the result is their elementwise minimum, and
slopes are clipped to [0, 1] exactly.
"""

from __future__ import annotations

import numpy as np

from equivcheck.engine.backward import back_network, concretize

STEPS = 6  # gradient steps per optimisation
STEP0 = 0.5  # the first signed step on the slopes, then shrunk by SHRINK per step
SHRINK = 0.6


def _vertex(nu: np.ndarray, boxes) -> np.ndarray:
    """``[B, R, n]``: the box vertex at which the linear bound with input coefficients ``nu``
    is largest (the middle where a coefficient is 0)."""
    mid, rad = boxes.mid.T[:, None, :], boxes.rad.T[:, None, :]
    return mid + np.sign(nu) * rad


def _slope_gradient(layers, trace: dict, k: int, nu: np.ndarray, boxes) -> dict:
    """Per ReLU layer ``j < k`` with free slopes, ``[B, R, m_j]``: the derivative of each row's
    (unrounded) bound with respect to its lower slopes (0 where a slope is not used)."""
    v = _vertex(nu, boxes)
    grads = {}
    for j in range(k):
        lay = layers[j]
        z = lay.forward(v) + lay.b  # [B, R, m_j]
        if j in trace:
            lam, slope, const, free = trace[j]
            grads[j] = np.where(free, lam * z, 0.0)
            v = slope * z + const
        else:
            v = z
    return grads


def initial_slopes(lo_hist, hi_hist, layers, k: int, rows: int) -> dict:
    """CROWN's slopes (1 where ``u > -l``, else 0) for every ReLU layer below ``k``, one copy
    per row: layer -> ``[B, rows, m]``."""
    out = {}
    for j in range(k):
        if layers[j].relu:
            a = (hi_hist[j] > -lo_hist[j]).astype(np.float64).T[:, None, :]
            out[j] = np.repeat(a, rows, axis=1)
    return out


def optimise(run, layers, lo_hist, hi_hist, k: int, rows: int, boxes, fac: float,
             tiny: np.ndarray, steps: int = STEPS, alpha: dict | None = None, deadline=None):
    """Rigorous ``[B, R]`` upper bounds of ``rows`` quantities, each the best of ``steps + 1``
    back-substitutions ``run(alpha, trace) -> Partial`` whose lower slopes of the ReLU layers
    ``layers[:k]`` (with pre-activation bounds ``lo_hist``/``hi_hist``) are improved by
    projected signed gradient steps. ``alpha``: starting slopes (layer -> ``[B, R, m]``;
    CROWN's when None). Returns the bounds, the slopes of the last step, and the input
    coefficients of each row's best bound. Past ``deadline`` (a
    :class:`~equivcheck.core.deadline.Deadline` or None) no further step is taken: the best
    bound so far is kept (any slopes give rigorous bounds)."""
    if alpha is None:
        alpha = initial_slopes(lo_hist, hi_hist, layers, k, rows)
    best = best_nu = None
    step = STEP0
    for it in range(steps + 1):
        trace: dict = {}
        p = run(alpha, trace)
        ub = concretize(p, boxes, fac, tiny)
        nu = np.asarray(p.nu)
        if best is None:
            best, best_nu = ub, nu.copy()
        else:
            better = ub < best
            best = np.where(better, ub, best)
            best_nu = np.where(better[:, :, None], nu, best_nu)
        if it == steps or not alpha or (deadline is not None and deadline.expired()):
            break
        grads = _slope_gradient(layers, trace, k, nu, boxes)
        for j, gr in grads.items():
            alpha[j] = np.clip(alpha[j] - step * np.sign(gr), 0.0, 1.0)
        step *= SHRINK
    return best, alpha, best_nu


def optimise_rows(layers, lo_hist, hi_hist, pm_hist, k: int, c: np.ndarray, boxes, fac: float,
                  tiny: np.ndarray, steps: int = STEPS, alpha: dict | None = None,
                  deadline=None):
    """:func:`optimise` for rows ``c`` (``[R, m_k]`` or ``[B, R, m_k]``) of layer ``k``'s
    pre-activation of one network."""
    def run(a, trace):
        return back_network(layers, lo_hist, hi_hist, pm_hist, k, c, boxes.xmax, boxes.count,
                            a, trace)

    return optimise(run, layers, lo_hist, hi_hist, k, c.shape[-2], boxes, fac, tiny, steps, alpha,
                    deadline)
