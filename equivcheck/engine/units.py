"""Unit stability questions decided by the engine's batched bounds over input sub-boxes.

A question ``(k, i, sign)`` asks whether ``sign * z_{k,i} > 0`` somewhere in the box (``z_{k,i}``
the pre-activation of unit ``i`` of layer ``k``). :func:`split_inputs` answers the open questions
of a stability analysis (:class:`~equivcheck.bounds.stability_state.AnalysisState`) for networks
with few inputs: a frontier of float sub-boxes (arrays ``[F, n]``) and, per sub-box, the mask of
the questions still open on it; each round bounds up to ``BATCH`` sub-boxes in one call of
:func:`~equivcheck.engine.bounds.pair_bounds` (rigorous for the exact weights, back-substitution
of every unstable unit), each sub-box starting from its parent's bounds of every layer (and the
analysis' proved bounds), closes a question on a sub-box when the bound of ``sign * z`` is
``<= 0`` there, and splits the sub-boxes that keep open questions at the midpoint of an input
chosen by two scores, each scaled to peak at 1 over the inputs and added (``SPLIT = "coef"``):
the input coefficients ``|nu|`` of the back-substituted bounds of the open questions of the
deepest layer asked (one more back-substitution of just those rows, per box, from the bounds
just computed), times the width, each question scaled to peak at 1; and the "smear": the open
questions' ``|w|`` propagated back through ``|W|``, skipping the units the sub-box's bounds show
stably inactive, times the width (``SPLIT = "smear"`` uses it alone). Measured on ACAS Xu over
prop_1 (sub-boxes and seconds to decide every unit, the two run side by side, 60 s limit):
N2,5 25,895 in 46 s (smear: 20 units open after 27,667 in 60 s), N2,4 8,975 in 10 s (88,071 in
35 s), N2,8 26,643 in 41 s (40,025 in 47 s), N1,9 6,935 (20,067); the coefficients alone split
one input down to nothing (N2,2, N2,7: one unit open after 65,000 sub-boxes); a look-ahead
(forward bounds of both halves along every input) halved the sub-boxes but doubled their cost;
the engine's alpha-CROWN slopes (2 steps) on the sub-boxes did not pay either, nor did ReLU
splitting for deep questions (a sub-box's child fixes the phase of the earlier unstable unit
whose triangle height times the questions' ``|W|`` sensitivity is largest, through its prior
bounds): on N4,6, after 40,338 sub-boxes, 12 units were open with it (778 ReLU splits, used past
the second budget when that gain beat 100x an input split's ``|nu| * width / 2``), 14 at 3x,
5 without; the units still open there look inactive (400,000 samples and long climbs: maxima
-0.7 to -8, minima in the hundreds). (Smear alone, on
N1,1: 2,957 sub-boxes; without the skipping 27,623; by width alone 92 units left open after
22,846.) Questions left open on more sub-boxes than a budget get multi-start climbs for their
witnesses (:func:`~equivcheck.bounds.stability_state.multi_start_search`, ``CLIMBS``): a short
one when the first budget is passed, a long one at the second or when a third of the time is
gone; they find units positive on a sliver of the box (N2,5 layer 5 unit 7, 0.02 at most)
that the splitting would otherwise chase to the end of its time. A question is proved (the
unit stable) when every sub-box of a cover of the box closed it; the split points are shared by both halves, so the float sub-boxes
cover the float box, which encloses the exact one. The centre and two random points of each
sub-box left open are witness candidates (checked exactly by the state). A question open on more
sub-boxes than the current budget (``SPLIT_BUDGETS``) is parked: its sub-boxes wait until no
sub-box has an unparked question, then the next budget applies, so easy questions are settled
before the hard ones use up the time, and no work is redone.

A sub-box's back-substituted bound of an open question is a line ``nu . x + c`` valid on the
whole sub-box (:class:`~equivcheck.engine.unit_lines.Lines`, one per question open there), so
it is reused on parts of the sub-box for free: before a sub-box is split, the slab at either
end of each input where the lines of every open question are ``<= 0`` is cut off (``SHAVE``:
the slab estimated from the line's peak and ``|nu_d|``, then proved by concretising the lines
over it); a sub-box shaved below ``SHAVE_UNSPLIT`` of its volume is bounded again unsplit;
after the split, a half drops the questions its parent's lines close over it, and is shaved
again by them (a half's lines peak lower). The corner where a line peaks is a witness
candidate (``WITNESS_PEAKS``), and questions open on more than the first budget's sub-boxes
get short climbs inside those sub-boxes from there (``PEAK_CLIMB``: unstable units positive
on a sliver). Measured on ACAS Xu over prop_1 (sub-boxes to decide every unit; CPU seconds of
the analysis, on a shared machine, so +-20%): N2,8 26,643 -> 8,663 (18.5 -> 9.7 s) with the
deepest layer's lines; N4,9 47,257 -> 31,332 (38 -> 27 s), with every layer's lines 29,373;
N1,6 5,017 -> 2,381, N2,6 5,593 -> 3,115 with the halves shaved too (2,516, 3,261 without);
N4,6 21,143 -> 17,602 with the peaks, 14,884 with the climbs (which took 7% of the time),
where 7 unstable units had cost 21,260 sub-box questions before their witnesses, then 6,768.
To decide every unit: N4,6 47,151 -> 14,884 sub-boxes (CPU 36 -> 18 s), N3,6 30,622 -> 15,835
(22 -> 17 s), N2,9 34,552 -> 15,179 (25 -> 17 s), N5,9 51,898 -> 22,775 (27 -> 17 s). compress
on all 45 nets (``benchmarks/compress_external.py --timeout 60``, with ``BATCH`` 128): every
unit decided on 45/45, mean 4.8 s (CPU 4.8; 5.6 s on a loaded machine), max 17.2 s, 264,279
sub-boxes in all (zero maps not back-substituted: see engine.model.LayerArrays.zero).

Why here and injected (not in :mod:`equivcheck.bounds.stability`): the batched bounds are the
engine's, and ``bounds/`` may not import ``engine/``. :func:`~equivcheck.bounds.stability.\
analyze_stability` therefore takes the exact stage for few inputs as a parameter (``splitter``);
``compress`` (a layer above both) passes :func:`split_inputs`. One network is bounded as the pair
(``net`` truncated after the deepest questioned layer, followed by a zero map, against a zero
map), so only ``net``'s own bounds are computed; the split coefficients re-run
:func:`~equivcheck.engine.backward.back_network` on the bounds that call returned.
"""

from __future__ import annotations

import numpy as np

from equivcheck.bounds.stability_state import AnalysisState, multi_start_search
from equivcheck.core import matrix
from equivcheck.core.network import Affine, Layer, Network
from equivcheck.core.options import UnitStability
from equivcheck.core.progress import Progress, ProgressFn, report
from equivcheck.engine import Boxes, PairModel, pair_bounds
from equivcheck.engine.backward import (  # ``prior``'s type; the questions' linear bounds
    History,
    Partial,
    back_factor,
    back_network,
    underflow_allowance,
)
from equivcheck.engine.forward import bisect
from equivcheck.engine.unit_lines import Lines, climb_peaks, unanswered

SPLIT_BUDGETS = (64, 1024, 16384, 262144)  # sub-boxes a question may stay open on, level by level
BATCH = 128  # sub-boxes bounded per call (ACAS Xu N4,9, N2,7, N3,8: 10-25% less CPU than 512 ...
# for as many sub-boxes: the arrays stay in cache) ...
BATCH_FLOATS = 6_000_000  # and few enough that [units, inputs, boxes] arrays stay this small
SPLIT = "coef"  # how the split input is chosen (see the module doc): "coef" or "smear"
CLIMBS = ((4, 30), (16, 60))  # multi-start climbs (starts, rounds) as budgets 1, 2 begin ...
CLIMB_TIME = (0.0, 2.0 / 3.0)  # ... or when only this share of the time is left
WITNESS_SAMPLES = 2  # random points per open sub-box offered as witnesses (with its centre)
WITNESS_PEAKS = True  # and the corners where its questions' lines peak
PEAK_CLIMB = 2048  # climbs inside open sub-boxes per round (0: none; see climb_peaks) ...
PEAK_ROUNDS = 8  # ... of this many annealed moves
SHAVE = True  # cut off the slabs of a sub-box that its questions' linear bounds close
LINES_ALL_LAYERS = True  # lines of every open question (else of the deepest layer's only)
SHAVE_HALVES = True  # shave the halves too, with their parent's lines
SHAVE_UNSPLIT = 0.5  # a sub-box shaved to less than this share of its volume is bounded again unsplit


class _Bounder:
    """Rigorous pre-activation bounds of ``net``'s layers up to ``upto`` over many boxes, each
    box with its own prior bounds (rows of :attr:`offsets`-packed layer bounds)."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.models: dict[int, PairModel] = {}
        widths = [lay.out_dim for lay in net.layers]
        self.offsets = np.concatenate([[0], np.cumsum(widths)]).astype(int)
        self.size = int(self.offsets[-1])

    def model(self, upto: int, last: np.ndarray) -> PairModel:
        """``net``'s layers before ``upto``, then layer ``upto``'s units ``last`` (the others
        need no bounds), then a zero map; against a zero map."""
        key = (upto, last.tobytes())
        if key not in self.models:
            if len(self.models) > 64:
                self.models.clear()
            top = self.net.layers[upto]
            sel = Layer(Affine(top.weight[last], top.bias[last]), top.relu)
            head = Network(tuple(self.net.layers[:upto]) + (sel, Layer(
                Affine(np.zeros((1, len(last))), np.zeros(1)), False)))
            zero = Network((Layer(Affine(np.zeros((1, self.net.in_dim)), np.zeros(1)), False),))
            self.models[key] = PairModel.build(head, zero)
        return self.models[key]

    def lines(self, upto: int, last: np.ndarray, q_layer, q_unit, q_sign, keep: np.ndarray,
              open_q: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, Lines | None]:
        """For the boxes ``keep`` of the last :meth:`bounds` call (``lo``, ``hi`` their bounds):
        ``[B, Q, n]`` ``|nu|``, the input coefficients of the back-substituted upper bound of
        ``sign * z`` of each question of layer ``upto`` open there (``open_q`` ``[B, Q]``), from
        that call's bounds of the earlier layers, 0 for the other questions; and the linear
        bounds of every open question of layer ``upto`` and (``LINES_ALL_LAYERS``) of the
        earlier layers (:class:`Lines`, None when there are none)."""
        model, hist = self.last
        b, n = lo.shape
        out = np.zeros((b, len(q_unit), n))
        cols = [h[:, keep] for h in hist.f_lo[:upto]], [h[:, keep] for h in hist.f_hi[:upto]]
        pm = [h[:, keep] for h in hist.f_pm[:upto]]
        boxes = Boxes(lo, hi, model.width)
        layers = self.model(upto, last).f
        parts, all_qs, all_valid = [], [], []
        for k in sorted(set(q_layer[open_q.any(axis=0)].tolist()), reverse=True):
            if k != upto and not LINES_ALL_LAYERS:
                continue
            qsel = np.flatnonzero((q_layer == k) & (np.isin(q_unit, last) if k == upto else True))
            om = open_q[:, qsel]
            r = int(om.sum(axis=1).max()) if len(qsel) else 0
            if r == 0:
                continue
            order = np.argsort(~om, axis=1, kind="stable")[:, :r]  # [B, R]: each box's open first
            valid = np.take_along_axis(om, order, 1)
            qs = qsel[order]
            units = np.searchsorted(last, q_unit[qs]) if k == upto else q_unit[qs]
            c = np.zeros((b, r, len(last) if k == upto else self.net.layers[k].out_dim))
            bi = np.broadcast_to(np.arange(b)[:, None], qs.shape)
            c[bi, np.arange(r)[None, :], units] = q_sign[qs] * valid
            p = back_network(layers, cols[0], cols[1], pm, k, c, boxes.xmax, b)
            if k == upto:
                out[bi, qs] = np.where(valid[:, :, None], np.abs(np.asarray(p.nu)), 0.0)
            parts.append(p)
            all_qs.append(qs)
            all_valid.append(valid)
        if not parts:
            return out, None
        p = Partial(*(np.concatenate([getattr(q, f) if f != "nu" else np.asarray(q.nu) for q in parts], axis=1)
                      for f in ("val", "mag", "slack", "nu")))
        # the allowance for underflow of these products (as pair_bounds' own, from the same bounds)
        tiny = underflow_allowance(History(f_pm=pm), boxes.xmax)
        return out, Lines(p, np.concatenate(all_qs, axis=1), np.concatenate(all_valid, axis=1), tiny,
                           back_factor(model), model.width)

    def pack(self, bounds) -> np.ndarray:
        """Layer bounds (one :class:`LayerBounds` per layer) as one row ``[2 * units]``."""
        return np.concatenate([np.concatenate([b.lower for b in bounds]),
                               np.concatenate([b.upper for b in bounds])])

    def bounds(self, upto: int, last: np.ndarray, lo: np.ndarray, hi: np.ndarray,
               prior: np.ndarray) -> np.ndarray:
        """Bounds of every layer ``k < upto`` and of the units ``last`` of layer ``upto`` on
        each box, intersected with the box's ``prior`` (``[B, 2 * units]`` packed sound bounds
        over a box containing it); returned packed the same way (the rest keeps its prior)."""
        model = self.model(upto, last)
        off, size = self.offsets, self.size
        cols = [np.arange(off[k], off[k + 1]) for k in range(upto)] + [off[upto] + last]
        hist = History()
        for c in cols:
            hist.f_lo.append(prior[:, c].T)
            hist.f_hi.append(prior[:, size + c].T)
        inf = np.full((1, 1), np.inf)
        hist.f_lo.append(-inf)
        hist.f_hi.append(inf)
        hist.g_lo.append(-inf)
        hist.g_hi.append(inf)
        pb = pair_bounds(model, Boxes(lo, hi, model.width), "all", hist)
        out = prior.copy()
        for k, c in enumerate(cols):
            out[:, c] = pb.hist.f_lo[k].T
            out[:, size + c] = pb.hist.f_hi[k].T
        self.last = (model, pb.hist)
        return out


def split_inputs(st: AnalysisState, progress: ProgressFn | None = None) -> None:
    """Decide the open questions of ``st`` by batched input splitting (see the module doc).
    Proved questions are recorded with :meth:`AnalysisState.proved_stable`; witnesses go
    through :meth:`AnalysisState.try_witnesses` (exact check). Stops at the state's deadline;
    questions not settled by then stay open (their units UNDECIDED)."""
    if st.open_units() and st.time_left() > 0:
        _split(st, _Bounder(st.net), progress)


def _open_questions(st: AnalysisState) -> list[tuple[int, int, int]]:
    out = []
    for k, (pos, neg) in st.needs().items():
        out.extend((k, int(i), 1) for i in np.flatnonzero(pos))
        out.extend((k, int(i), -1) for i in np.flatnonzero(neg))
    return out


def _question_rows(net: Network, questions) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per layer: the questions asked there and their rows ``|w_i|``, scaled so that each
    question's ``|w|`` propagated back through ``|W|`` peaks at 1 (questions weigh alike)."""
    out = {}
    by_layer: dict[int, list[int]] = {}
    for j, (k, _, _) in enumerate(questions):
        by_layer.setdefault(k, []).append(j)
    for k, idx in by_layer.items():
        rows = np.abs(matrix.rows_of(net.layers[k].weight, [questions[j][1] for j in idx]))
        g = rows
        for m in range(k - 1, -1, -1):
            g = matrix.left_multiply(g, matrix.absolute(net.layers[m].weight))
        out[k] = (np.array(idx), rows / np.maximum(g.max(axis=1, keepdims=True), 1e-300))
    return out


def _smear(net: Network, rows, weight: np.ndarray, upper: list[np.ndarray]) -> np.ndarray:
    """``[B, n]``: per box, how strongly each input can move the questions ``weight`` selects
    (``[B, Q]``): their ``|w|`` propagated back through ``|W|``, skipping the units the box's
    bounds show stably inactive (``upper[k]`` ``[B, m]``: upper bounds of layer ``k``)."""
    g = None
    for k in range(len(upper) - 1, -1, -1):
        if k in rows:
            idx, r = rows[k]
            add = weight[:, idx] @ r  # [B, m_{k-1}] (rows act on layer k's inputs)
            g = add if g is None else g + add
        if g is None or k == 0:
            continue
        g = matrix.left_multiply(g * (upper[k - 1] > 0.0), matrix.absolute(net.layers[k - 1].weight))
    return g


def _split(st: AnalysisState, bounder: _Bounder, progress: ProgressFn | None) -> None:
    """The search: one frontier; a question over its budget is parked (its boxes wait) until no
    box has an eligible question, then the next budget applies (no work is redone)."""
    net = st.net
    questions = _open_questions(st)
    if not questions:
        return
    nq = len(questions)
    q_layer = np.array([q[0] for q in questions])
    q_unit = np.array([q[1] for q in questions])
    q_sign = np.array([q[2] for q in questions], dtype=np.float64)
    q_col = np.where(q_sign > 0, bounder.size + bounder.offsets[q_layer] + q_unit,
                     bounder.offsets[q_layer] + q_unit)  # the packed column bounding sign * z
    rows = _question_rows(net, questions)
    off, size = bounder.offsets, bounder.size
    span = np.where(st.hi > st.lo, st.hi - st.lo, 1.0)
    width = max(lay.out_dim for lay in net.layers)
    batch = max(1, min(BATCH, BATCH_FLOATS // (width * (net.in_dim + 1))))
    lo, hi = st.lo[None, :].copy(), st.hi[None, :].copy()
    prior = bounder.pack(st.bounds)[None, :]
    mask = np.ones((1, nq), dtype=bool)  # [F, Q]: questions open on each frontier box
    count = np.zeros(nq, dtype=np.int64)  # sub-boxes each question stayed open on
    unsettled = np.zeros(nq, dtype=bool)  # cannot be proved (too small to split, or time)
    level = 0
    rng = np.random.default_rng(0)
    live = unanswered(st, questions)
    nodes = 0
    climbs = 0  # multi-start climbs done
    climb_at = [CLIMB_TIME[j] * st.time_left() for j in range(len(CLIMBS))]
    while len(lo):
        if st.time_left() <= 0:
            unsettled |= mask.any(axis=0)  # open somewhere when the time ran out
            break
        if climbs < len(CLIMBS) and (level > climbs or st.time_left() < climb_at[climbs]):
            # the questions left are harder (parked, or the time goes): climb for witnesses
            multi_start_search(st, rng, starts=CLIMBS[climbs][0], rounds=CLIMBS[climbs][1])
            live = unanswered(st, questions)
            climbs += 1
        active = live & ~unsettled
        eligible = active & (count <= SPLIT_BUDGETS[level])
        mask &= active[None, :]
        has = mask.any(axis=1)
        lo, hi, mask, prior = lo[has], hi[has], mask[has], prior[has]
        boxes_eligible = (mask & eligible[None, :]).any(axis=1)
        if not boxes_eligible.any():
            if not len(lo):
                break
            if level + 1 == len(SPLIT_BUDGETS):
                unsettled |= mask.any(axis=0)
                break
            level += 1
            continue
        # the largest boxes first (as a breadth-first search: every part of the box is seen)
        cand = np.flatnonzero(boxes_eligible)
        vol = np.sum(np.log((hi[cand] - lo[cand]) / span + 1e-300), axis=1)
        take = min(batch, len(cand))
        sel = cand[np.argpartition(-vol, take - 1)[:take]] if take < len(cand) else cand
        rest = np.ones(len(lo), dtype=bool)
        rest[sel] = False
        blo, bhi, bmask, bprior = lo[sel], hi[sel], mask[sel], prior[sel]
        lo, hi, mask, prior = lo[rest], hi[rest], mask[rest], prior[rest]
        nodes += len(blo)
        asked = bmask.any(axis=0)
        upto = int(q_layer[asked].max())
        last = np.unique(q_unit[asked & (q_layer == upto)])
        bprior = bounder.bounds(upto, last, blo, bhi, bprior)
        top = bprior[:, q_col]  # [B, Q]: bounds of sign * z (upper) or of z (lower)
        bmask &= np.where(q_sign[None, :] > 0, top, -top) > 0.0
        keep = bmask.any(axis=1)
        blo, bhi, bmask, bprior = blo[keep], bhi[keep], bmask[keep], bprior[keep]
        if not len(blo):
            continue
        lines = None
        if SPLIT == "coef" or SHAVE:  # before the boxes are filtered again: rows are per box
            coef, lines = bounder.lines(upto, last, q_layer, q_unit, q_sign, keep, bmask, blo, bhi)
        pts = [0.5 * blo + 0.5 * bhi]
        pts += [blo + rng.random(blo.shape) * (bhi - blo) for _ in range(WITNESS_SAMPLES)]
        if lines is not None and WITNESS_PEAKS:  # where each open question's line peaks
            pts.append(lines.peaks(blo, bhi))
        st.try_witnesses(np.vstack(pts))
        live = unanswered(st, questions)
        if lines is not None and PEAK_CLIMB:
            live = climb_peaks(st, questions, lines, blo, bhi, live, count, SPLIT_BUDGETS[0],
                               PEAK_CLIMB, PEAK_ROUNDS)
        bmask &= live[None, :]
        count += bmask.sum(axis=0)
        keep = bmask.any(axis=1)
        blo, bhi, bmask, bprior = blo[keep], bhi[keep], bmask[keep], bprior[keep]
        if lines is not None:
            coef, lines = coef[keep], lines.take(keep)
        if lines is not None and SHAVE:  # cut off what the lines prove; small enough: again
            blo, bhi, gone, share = lines.shave(bmask, blo, bhi)
            again = ~gone & (share < SHAVE_UNSPLIT)
            lo, hi = np.concatenate([lo, blo[again]]), np.concatenate([hi, bhi[again]])
            mask, prior = np.concatenate([mask, bmask[again]]), np.concatenate([prior, bprior[again]])
            go = ~(gone | again)
            blo, bhi, bmask, bprior, coef, lines = blo[go], bhi[go], bmask[go], bprior[go], coef[go], lines.take(go)
        if not len(blo):
            continue
        wid = bhi - blo
        elig = bmask & (count <= SPLIT_BUDGETS[level])[None, :]
        weight = np.where(elig.any(axis=1, keepdims=True), elig, bmask).astype(np.float64)
        upper = [bprior[:, size + off[k]:size + off[k + 1]] for k in range(upto + 1)]
        smear = _smear(net, rows, weight, upper) * wid
        if SPLIT == "coef" and lines is not None:
            smear = _coef(coef, weight, wid, smear)
        mid = 0.5 * blo + 0.5 * bhi
        splittable = (mid > blo) & (mid < bhi)
        smear = np.where(splittable, smear, -1.0)
        flat = smear.max(axis=1) <= 0.0
        if flat.any():
            smear[flat] = np.where(splittable, wid / span, -1.0)[flat]
        dim = smear.argmax(axis=1)
        ok = splittable[np.arange(len(dim)), dim]
        if not ok.all():  # too small to split: its questions cannot be settled here
            unsettled |= bmask[~ok].any(axis=0)
            blo, bhi, bmask, bprior, dim, mid = blo[ok], bhi[ok], bmask[ok], bprior[ok], dim[ok], mid[ok]
            if lines is not None:
                lines = lines.take(ok)
        clo, chi = bisect(blo, bhi, dim, mid)
        cmask = np.concatenate([bmask, bmask])
        cprior = np.concatenate([bprior, bprior])
        if lines is not None:  # a half its parent's lines close for every question: not bounded
            parent = np.tile(np.arange(len(blo)), 2)
            cmask = lines.close(cmask, clo, chi, parent)
            if SHAVE and SHAVE_HALVES:  # a half's lines peak lower: they may cut off more of it
                clo, chi, gone, _ = lines.take(parent).shave(cmask, clo, chi)
                cmask[gone] = False
            open_c = cmask.any(axis=1)
            clo, chi, cmask, cprior = clo[open_c], chi[open_c], cmask[open_c], cprior[open_c]
        lo, hi = np.concatenate([lo, clo]), np.concatenate([hi, chi])
        mask = np.concatenate([mask, cmask])
        prior = np.concatenate([prior, cprior])
        if progress is not None:
            open_units = st.open_units()
            report(progress, Progress("stability", st.net.num_relus - open_units, open_units, "units",
                                      seconds_left=st.time_left(),
                                      detail=f"{nodes} sub-boxes bounded, {len(lo)} open"))
    live = unanswered(st, questions)
    for j in np.flatnonzero(live & ~unsettled):
        k, i, sign = questions[j]
        if st.status[k][i] is UnitStability.UNDECIDED:
            st.proved_stable(k, i, sign)
    if progress is not None:  # the final count (the last batches may have closed every box)
        open_units = st.open_units()
        report(progress, Progress("stability", st.net.num_relus - open_units, open_units, "units",
                                  seconds_left=st.time_left(),
                                  detail=f"{nodes} sub-boxes bounded, {len(lo)} open"))


def _coef(coef: np.ndarray, weight: np.ndarray, wid: np.ndarray, smear: np.ndarray) -> np.ndarray:
    """``[B, n]`` split scores: from the back-substituted bounds of the open questions
    (``coef`` ``[B, Q, n]``, see :meth:`_Bounder.lines`), ``|nu| * width`` per question
    scaled to peak at 1 and summed over the questions ``weight`` selects, plus ``smear``
    (``[B, n]``), each scaled to peak at 1 per box (all-zero rows stay 0)."""
    c = coef * wid[:, None, :]
    peak = c.max(axis=2)  # [B, Q]
    w = weight * (peak > 0)
    score = np.einsum("bqn,bq->bn", c, w / np.maximum(peak, 1e-300))
    score /= np.maximum(score.max(axis=1, keepdims=True), 1e-300)
    return score + smear / np.maximum(smear.max(axis=1, keepdims=True), 1e-300)
