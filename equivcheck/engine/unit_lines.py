"""The linear bounds that the input splitting of unit stability questions
(:mod:`equivcheck.engine.units`) reuses on parts of a sub-box, and the climbs for witnesses
inside the sub-boxes that stay open.

A sub-box's back-substituted bound of a question ``sign * z_{k,i} > 0`` is a line
``nu . x + c`` that holds on the whole sub-box (its earlier layers' bounds do), so it bounds the
question on any part of the sub-box too: :class:`Lines` concretises it over slabs (to cut them
off, :meth:`Lines.shave`) and over the halves of a split (:meth:`Lines.close`), with the
engine's rounding allowance for the part's own points; its corners of peak value are witness
candidates (:meth:`Lines.peaks`, :func:`climb_peaks`), which the analysis checks exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from equivcheck.bounds.stability_state import AnalysisState
from equivcheck.core.ascent import ANNEALED, ascend, preactivation_objective
from equivcheck.core.options import UnitStability
from equivcheck.engine.backward import Partial, concretize
from equivcheck.engine.forward import Boxes


def unanswered(st: AnalysisState, questions) -> np.ndarray:
    """Which questions still lack their answer (no witness of that sign, unit undecided)."""
    out = np.zeros(len(questions), dtype=bool)
    for j, (k, i, sign) in enumerate(questions):
        have = st.w_pos[k][i] if sign > 0 else st.w_neg[k][i]
        out[j] = st.status[k][i] is UnitStability.UNDECIDED and have is None
    return out


@dataclass(frozen=True, eq=False)
class Lines:
    """Per sub-box, the back-substituted linear upper bounds of ``sign * z`` of the questions
    open on it (of every layer asked): row ``r`` of box ``b`` bounds question ``qs[b, r]``
    (where ``valid[b, r]``) for every point of the box, from the bounds computed for the box
    (each earlier layer's bounds hold on the whole box, so the line does too). Over any part
    of the box, :func:`~equivcheck.engine.backward.concretize` of the line is a rigorous bound:
    its rounding allowance is the part's (``|x|`` there), the line's own terms (``mag``,
    ``slack``, the underflow ``tiny``) were computed for the whole box and hold on any part."""

    part: Partial
    qs: np.ndarray  # [B, R] question indices
    valid: np.ndarray  # [B, R]
    tiny: np.ndarray  # [B]
    fac: float
    width: int

    def take(self, sel: np.ndarray) -> Lines:
        """The lines of the boxes ``sel`` (a mask or indices)."""
        p = self.part
        return Lines(Partial(p.val[sel], p.mag[sel], p.slack[sel], np.asarray(p.nu)[sel]),
                      self.qs[sel], self.valid[sel], self.tiny[sel], self.fac, self.width)

    def upper(self, lo: np.ndarray, hi: np.ndarray, parent: np.ndarray) -> np.ndarray:
        """``[P, R]``: rigorous upper bounds of box ``parent[j]``'s lines over the part
        ``[lo[j], hi[j]]`` of that box (rows ``~valid`` mean nothing)."""
        sub = self.take(parent)
        return concretize(sub.part, Boxes(lo, hi, self.width), self.fac, sub.tiny)

    def peaks(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """The corner of each box where each of its lines peaks (witness candidates: the bound
        is attained there, the question's own value is often highest near it)."""
        nu = np.asarray(self.part.nu)
        return np.where(nu > 0, hi[:, None, :], lo[:, None, :])[self.valid]

    def close(self, mask: np.ndarray, lo: np.ndarray, hi: np.ndarray, parent: np.ndarray) -> np.ndarray:
        """``mask`` (``[P, Q]``, the questions open on the parts ``[lo, hi]`` of the boxes
        ``parent``) without the questions their parent's line closes there."""
        shut = self.valid[parent] & (self.upper(lo, hi, parent) <= 0.0)
        if shut.any():
            mask = mask.copy()
            rows = np.broadcast_to(np.arange(len(parent))[:, None], shut.shape)
            mask[rows[shut], self.qs[parent][shut]] = False
        return mask

    def shave(self, mask: np.ndarray, lo: np.ndarray, hi: np.ndarray):
        """Cut off, along each input, the slab at either end of each box where the lines of
        every question open on the box (``mask`` ``[B, Q]``) are ``<= 0``: the slab of input
        ``d`` is first estimated (a line ``nu . x + c`` with maximum ``u > 0`` on the box is
        ``<= 0`` where ``x_d`` is farther than ``u / |nu_d|`` from the end that maximises it),
        then kept only if :meth:`upper` proves every line ``<= 0`` on it. Boxes with an open
        question without a line keep their size. Returns the shaved ``(lo, hi)``, which boxes
        are wholly covered by their slabs (closed), and each box's remaining share of volume.
        Sound: every removed point lies in a slab where each open question is proved."""
        b, n = lo.shape
        nu = np.asarray(self.part.nu)
        have = np.zeros_like(mask)
        rows = np.broadcast_to(np.arange(b)[:, None], self.qs.shape)
        have[rows[self.valid], self.qs[self.valid]] = True
        full = ~(mask & ~have).any(axis=1)
        top = np.where(self.valid, np.maximum(self.upper(lo, hi, np.arange(b)), 0.0), 0.0)
        anu = np.abs(nu)
        reach = np.full(nu.shape, np.inf)  # [B, R, n]: how far from the maximising end
        np.divide(top[:, :, None], anu, out=reach, where=anu > 0)
        on = self.valid[:, :, None]
        cut_lo = np.where(on, np.where(nu > 0, hi[:, None, :] - reach, lo[:, None, :]), np.inf).min(axis=1)
        cut_hi = np.where(on, np.where(nu < 0, lo[:, None, :] + reach, hi[:, None, :]), -np.inf).max(axis=1)
        cut_lo = np.where(full[:, None], np.clip(cut_lo, lo, hi), lo)
        cut_hi = np.where(full[:, None], np.clip(cut_hi, lo, hi), hi)
        slo = np.repeat(lo[:, None, :], 2 * n, axis=1)  # [B, 2n, n]: the lower slabs, the upper
        shi = np.repeat(hi[:, None, :], 2 * n, axis=1)
        d = np.arange(n)
        shi[:, d, d] = cut_lo
        slo[:, n + d, d] = cut_hi
        ub = self.upper(slo.reshape(-1, n), shi.reshape(-1, n), np.repeat(np.arange(b), 2 * n))
        proved = np.all((ub <= 0.0) | ~np.repeat(self.valid, 2 * n, axis=0), axis=1).reshape(b, 2 * n)
        new_lo = np.where(proved[:, :n] & (cut_lo > lo), cut_lo, lo)
        new_hi = np.where(proved[:, n:] & (cut_hi < hi), cut_hi, hi)
        gone = (new_lo >= new_hi).any(axis=1)  # the two slabs of an input cover it
        span = np.where(hi > lo, hi - lo, 1.0)
        share = np.where(gone, 0.0, np.prod(np.where(gone[:, None], 1.0, (new_hi - new_lo) / span), axis=1))
        return new_lo, new_hi, gone, share


def climb_peaks(st: AnalysisState, questions, lines: Lines, lo: np.ndarray, hi: np.ndarray,
                live: np.ndarray, count: np.ndarray, after: int, most: int, rounds: int) -> np.ndarray:
    """For the open questions already open on more than ``after`` sub-boxes (``count``; a
    question that is in fact unstable may be so only on a sliver, which the splitting would
    chase for long): a short annealed climb of ``sign * z`` inside each sub-box still asking it,
    from the corner where its line peaks (``rounds`` moves, at most ``most`` climbs: every
    question's first sub-box, then the next ones); the points that reach the sign go to the exact
    check. Returns the questions still lacking their answer (:func:`unanswered`)."""
    rows = lines.valid & live[lines.qs] & (count[lines.qs] > after)
    if not rows.any() or st.time_left() <= 0:
        return live
    b, r = np.nonzero(rows)
    if len(b) > most:  # a sub-box of as many questions as possible first
        pick = np.sort(np.unique(lines.qs[b, r], return_index=True)[1])
        rest = np.setdiff1d(np.arange(len(b)), pick)[:max(0, most - len(pick))]
        keep = np.sort(np.concatenate([pick, rest]))[:most]
        b, r = b[keep], r[keep]
    q = lines.qs[b, r]
    k, i, sign = (np.array([questions[j][c] for j in q]) for c in range(3))
    nu = np.asarray(lines.part.nu)[b, r]
    rlo, rhi = lo[b], hi[b]
    start = np.where(nu > 0, rhi, rlo)

    def project(x: np.ndarray) -> np.ndarray:
        return st.project(np.clip(x, rlo, rhi))

    x, value = ascend(preactivation_objective(st.net, k, i, sign.astype(np.float64)), start, project,
                      rhi - rlo, st.deadline, replace(ANNEALED, rounds=rounds), goal=0.0)
    if np.any(value > 0):
        st.try_witnesses(x[value > 0])
        return unanswered(st, questions)
    return live
