"""What "the spec holds on a box" means in terms of the bounds, per mode.

:func:`judge` turns the :class:`~equivcheck.engine.bounds.PairBounds` of a batch of boxes into,
per box: whether the bounds prove the spec there (``closed``), by how much they fail to
(``score`` > 0: the priority of the box in the search; <= 0 when closed), a rigorous upper bound
of the spec's measure (``measure``: ``||f - g||`` in epsilon and strict mode, the worst pairwise
bound in argmax mode) and the input coefficients of the linear bound that is worst (``[B, n]``,
for choosing the input to split and the vertex to try).

* strict:  closed iff every output difference is exactly 0 (only an exact zero propagates).
* epsilon, L-inf: closed iff ``max_i max(hi_i, -lo_i) <= eps``.
* epsilon, L1: the upper bound of ``max_s s . (f - g)`` over sign vectors ``s`` (outputs up to
  ``MAX_SIGN_OUTPUTS``), else the sum of the per-output bounds.
* argmax: for every ordered pair of classes ``i != k``, "f picks i and g picks k" needs
  ``f_i - f_k >= 0`` and ``g_k - g_i >= 0``; the pair is excluded on the box when the upper bound
  of one of ``f_i - f_k``, ``g_k - g_i`` or their sum ``d_i - d_k`` (the difference stream) is
  below 0, or when f never picks ``i`` there (``f_i - f_j`` below 0 for some ``j``) or g never
  picks ``k``. Ties go to the lowest index in :class:`~equivcheck.core.spec.Spec`, but all
  these inequalities hold at a tie too, so excluding them is enough. (The class exclusions
  decide the pairs of two classes that are not f's top one: on CNN boxes where f's class is
  fixed, ``f_i - f_k`` and ``g_k - g_i`` of two other classes each reach 0 somewhere.)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from equivcheck.core.rational import float_down
from equivcheck.core.spec import Mode, Norm, Spec
from equivcheck.engine.backward import (
    back_difference,
    back_factor,
    back_network,
    concretize,
    underflow_allowance,
)
from equivcheck.engine.bounds import PairBounds
from equivcheck.engine.rounding import sub_up

MAX_SIGN_OUTPUTS = 8  # L1 by sign vectors up to 2**8 rows


@dataclass(frozen=True, eq=False)
class Judgement:
    closed: np.ndarray  # [B] bool
    score: np.ndarray  # [B] float: how far the bound is from proving (> 0: not proved)
    measure: np.ndarray  # [B] float: rigorous upper bound of the spec's measure on the box
    coef: np.ndarray  # [B, n]: input coefficients of the worst linear bound


def tolerance_down(spec: Spec) -> float:
    """The largest float <= the exact tolerance (0 outside epsilon mode)."""
    return float_down(spec.tolerance) if spec.mode is Mode.EPSILON else 0.0


def output_rows(pb: PairBounds, c_d=None, c_f=None, c_g=None) -> tuple[np.ndarray, np.ndarray]:
    """Rigorous ``[B, R]`` upper bounds of ``c_d . (f - g) + c_f . f + c_g . g`` (rows ``[R, out]``,
    any may be None) by back-substitution from the outputs, and the input coefficients
    ``[B, R, n]`` of the linear bounds (f's and g's streams added before the box is applied)."""
    model, hist, boxes = pb.model, pb.hist, pb.boxes
    nb = boxes.count
    parts = []
    if model.same_shape:
        if c_d is not None or c_f is not None:
            cd = c_d if c_d is not None else np.zeros_like(c_f)
            parts.append(back_difference(model, hist, len(model.f) - 1, cd, c_f, boxes.xmax, nb))
        if c_g is not None:
            parts.append(back_network(model.g, hist.g_lo, hist.g_hi, hist.g_pm, len(model.g) - 1, c_g, boxes.xmax, nb))
    else:
        cf = _add(c_f, c_d)
        cg = _add(c_g, None if c_d is None else -c_d)
        if cf is not None:
            parts.append(back_network(model.f, hist.f_lo, hist.f_hi, hist.f_pm, len(model.f) - 1, cf, boxes.xmax, nb))
        if cg is not None:
            parts.append(back_network(model.g, hist.g_lo, hist.g_hi, hist.g_pm, len(model.g) - 1, cg, boxes.xmax, nb))
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    ub = concretize(total, boxes, back_factor(model), underflow_allowance(hist, boxes.xmax))
    return ub, np.asarray(total.nu)


def _add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def judge(spec: Spec, pb: PairBounds, eps_down: float) -> Judgement:
    """Per box of the batch: closed, score, measure and coefficients (see the module doc)."""
    if spec.mode is Mode.ARGMAX:
        return _judge_argmax(pb)
    dev = np.maximum(pb.d_hi, -pb.d_lo)  # [B, out]: bound of |f_i - g_i|
    out = dev.shape[1]
    if spec.mode is Mode.STRICT:
        closed = np.all((pb.d_lo >= 0.0) & (pb.d_hi <= 0.0), axis=1)
        measure = dev.max(axis=1)
        score = np.where(closed, -1.0, measure)
        worst = dev.argmax(axis=1)
        return Judgement(closed, score, measure, _coef_of_output(pb, worst))
    if spec.norm is Norm.LINF:
        measure = dev.max(axis=1)
        worst = dev.argmax(axis=1)
        coef = _coef_of_output(pb, worst)
    else:
        measure = np.abs(dev).sum(axis=1)
        coef = _coef_of_output(pb, dev.argmax(axis=1))
        if out <= MAX_SIGN_OUTPUTS:
            signs = np.array(list(itertools.product((1.0, -1.0), repeat=out)))
            ub, nu = output_rows(pb, c_d=signs)
            best = ub.argmax(axis=1)
            sign_bound = ub[np.arange(len(ub)), best]
            better = sign_bound < measure
            measure = np.where(better, sign_bound, measure)
            coef = np.where(better[:, None], nu[np.arange(len(ub)), best], coef)
    closed = measure <= eps_down
    return Judgement(closed, measure - eps_down, measure, coef)


def _coef_of_output(pb: PairBounds, idx: np.ndarray) -> np.ndarray:
    """Input coefficients of the linear bounds of output ``idx[b]`` of ``f - g`` (the side,
    upper or lower, that is worse) in box ``b``."""
    rows = np.arange(len(idx))
    up = pb.d_hi[rows, idx] >= -pb.d_lo[rows, idx]
    if pb.d_nu is not None:  # from the back-substitution of the outputs: [B, 2 out, n]
        out = pb.d_hi.shape[1]
        return np.where(up[:, None], pb.d_nu[rows, idx], pb.d_nu[rows, out + idx])
    au = pb.d_lin.au[idx, :, rows]
    al = pb.d_lin.al[idx, :, rows]
    return np.where(up[:, None], au, al)


def _pair_rows(out: int):
    pairs = [(i, k) for i in range(out) for k in range(out) if i != k]
    c = np.zeros((len(pairs), out))
    for r, (i, k) in enumerate(pairs):
        c[r, i], c[r, k] = 1.0, -1.0
    return pairs, c


def _judge_argmax(pb: PairBounds) -> Judgement:
    out = pb.f_lo.shape[1]
    nb = pb.boxes.count
    if out == 1:  # a single class never changes
        z = np.zeros(nb)
        return Judgement(np.ones(nb, bool), z - 1.0, z, np.zeros((nb, pb.boxes.lo.shape[1])))
    pairs, c = _pair_rows(out)
    # cheap exclusions first from the output intervals
    first, second = [i for i, _ in pairs], [k for _, k in pairs]
    f_gap = sub_up(pb.f_hi[:, first], pb.f_lo[:, second])
    g_gap = sub_up(pb.g_hi[:, second], pb.g_lo[:, first])
    ub_f, nu_f = output_rows(pb, c_f=c)
    ub_g, nu_g = output_rows(pb, c_g=-c)
    ub_d, nu_d = output_rows(pb, c_d=c)
    bf, bg = np.minimum(ub_f, f_gap), np.minimum(ub_g, g_gap)  # of f_i - f_k, g_k - g_i
    # a class f never picks on the box: f_i - f_j < 0 for some j (any j, not only the pair's k,
    # since f picking i needs f_i >= f_j for every j, ties included); likewise for g
    index = np.full((out, out), -1)
    index[first, second] = np.arange(len(pairs))
    f_cls, f_arg = _class_exclusion(bf, index)  # [B, out]: min_j bound of f_i - f_j
    g_cls, g_arg = _class_exclusion(bg, index.T)  # min_j bound of g_k - g_j (pair (j, k))
    stack = np.stack([bf, bg, ub_d, f_cls[:, first], g_cls[:, second]])  # [5, B, P]
    which = stack.argmin(axis=0)  # the best exclusion per pair
    pair_bound = stack.min(axis=0)  # [B, P]: < 0 means the pair is excluded
    measure = pair_bound.max(axis=1)
    closed = measure < 0.0
    worst = pair_bound.argmax(axis=1)
    rows = np.arange(nb)
    i, k = np.array(first)[worst], np.array(second)[worst]
    nus = np.stack([nu_f[rows, worst], nu_g[rows, worst], nu_d[rows, worst],
                    nu_f[rows, f_arg[rows, i]], nu_g[rows, g_arg[rows, k]]])  # [5, B, n]
    coef = nus[which[rows, worst], rows]
    return Judgement(closed, measure, measure, coef)


def _class_exclusion(bounds: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per box and class ``i``: the smallest of ``bounds[:, index[i, j]]`` over ``j != i``
    (``[B, out]``) and the pair (column of ``bounds``) it comes from."""
    out = index.shape[0]
    cols = np.array([[index[i, j] for j in range(out) if j != i] for i in range(out)])  # [out, out-1]
    vals = bounds[:, cols]  # [B, out, out - 1]
    at = vals.argmin(axis=2)
    return np.take_along_axis(vals, at[:, :, None], 2)[:, :, 0], np.take_along_axis(
        np.broadcast_to(cols, vals.shape), at[:, :, None], 2)[:, :, 0]
