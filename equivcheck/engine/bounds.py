"""Batched differential bounds of a pair of networks over many input boxes at once.

:func:`pair_bounds` runs the forward symbolic pass (:mod:`equivcheck.engine.forward`) layer by
layer and, with ``refine``, tightens the units whose relaxation matters by back-substitution
(:mod:`equivcheck.engine.backward`, CROWN/DeepPoly style, two streams for the difference) from
the concrete bounds of the earlier layers; the output differences are always back-substituted
then. For same-shaped pairs g's hidden bounds come from ``z_g = z_f - dz``. Pairs of different
shapes get bounds of f and g separately, and their output difference by back-substituting both
networks and adding the input coefficients before the box is applied (the shared input keeps
them correlated).

Why this mix (measured on ACAS Xu vs float16 copies, prop_1's box, epsilon 0.05, one worker;
``benchmarks/engine_acas.py --ablation``): forward symbolic bounds cost ~0.35 ms per box but
their looseness grows like ``|W|`` per layer (on sub-boxes a tenth of prop_1's the difference
bound is ~7000x the sampled difference, 0.034 vs 4.6e-6), so N1,1 needed 12,919 boxes (4.7 s)
and N2,3, N3,5 were not decided in 10 s; back-substituting every unstable unit is tight on those
boxes (5.6e-6) at ~2 ms per box: N1,1 in 295 boxes (0.6 s), N2,3 in 1,699 (2.6 s), N3,5 in
2,957 (5.0 s). Back-substituting the hidden differences too (``hidden_diff``) needed up to 2.8x
fewer boxes but cost 2-3x more per box with that split (0.8 s, 2.3 s and > 10 s). With the
look-ahead split (:mod:`equivcheck.engine.search`) it pays, and the search turns it on: prop_1,
epsilon 0.05, nodes N1,1 169 -> 125, N1,9 141 -> 75, N5,4 517 -> 213, N3,5 proved in 691 (not
in 1,347); prop_3 N4,2 111 -> 11; 5%-pruned prop_3 N1,1 proved in 203 (not in 1,401); the
undecided N2,7, N3,8, N5,9 end 5-13x closer (bound 4.8 -> 0.87, 3.8 -> 0.28, 4.8 -> 0.73).

Rows are gathered per box (each box back-substitutes only its own unstable units) when that is
cheaper than the union over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from equivcheck.engine.allocator import tune
from equivcheck.engine.alpha import optimise_rows
from equivcheck.engine.backward import (
    History,
    back_difference,
    back_factor,
    back_network,
    concretize,
    underflow_allowance,
)
from equivcheck.engine.forward import (
    Boxes,
    IntervalView,
    Lin,
    NetState,
    affine_step,
    diff_affine_step,
    diff_relu_step,
    input_state,
    lin_difference,
    make_state,
    relu_step,
)
from equivcheck.engine.model import PairModel
from equivcheck.engine.rounding import sub_down, sub_up


@dataclass(frozen=True, eq=False)
class PairBounds:
    """Bounds over ``B`` boxes of the outputs of f, of g and of ``d = f - g``.

    ``*_lo``/``*_hi`` are ``[B, out]``; ``*_lin`` the linear bounds (``[out, n, B]``) they were
    concretised from (with ``*_mag`` their magnitudes), for bounds of linear combinations of
    the outputs (:func:`row_upper`). ``unstable`` counts, per box, the ReLUs of either network
    that the bounds could not fix."""

    boxes: Boxes
    f_lo: np.ndarray
    f_hi: np.ndarray
    g_lo: np.ndarray
    g_hi: np.ndarray
    d_lo: np.ndarray
    d_hi: np.ndarray
    f_lin: Lin
    g_lin: Lin
    d_lin: Lin
    f_mag: np.ndarray
    g_mag: np.ndarray
    d_mag: np.ndarray
    unstable: np.ndarray
    model: PairModel
    hist: History
    d_nu: np.ndarray | None  # [B, 2 out, n]: input coefficients of the bounds of +-(f_i - g_i)


def _selector(idx: np.ndarray, m: int) -> np.ndarray:
    """Rows ``+e_i`` then ``-e_i`` for the units ``idx`` of a layer of ``m`` units."""
    r = len(idx)
    c = np.zeros((2 * r, m))
    c[np.arange(r), idx] = 1.0
    c[r + np.arange(r), idx] = -1.0
    return c


def _tighten(lo, hi, idx, ub):
    """Intersect ``[m, B]`` bounds of units ``idx`` with back-substituted ``[B, 2r]`` ones."""
    r = len(idx)
    lo, hi = lo.copy(), hi.copy()
    lo[idx] = np.maximum(lo[idx], -ub[:, r:].T)
    hi[idx] = np.minimum(hi[idx], ub[:, :r].T)
    return lo, hi


def _refine_units(mask: np.ndarray, lo, hi, run, width: int = 0, deadline=None):
    """Tighten the ``[m, B]`` bounds of the units ``mask`` selects (per box) with
    ``run(rows) -> [B, 2R]`` upper bounds of the rows ``+e_i`` then ``-e_i``.

    When the boxes need few units each but different ones, the rows are gathered per box
    (``[B, 2R, m]`` with R the largest count), so the work follows each box's own units rather
    than their union over the batch. Rows are bounded independently of each other, so they are
    run in chunks that keep the ``[B, rows, units]`` coefficients near ``ROW_FLOATS`` floats
    (``width``: the widest layer they pass through, 0 for one chunk; wide convolutional layers
    have thousands of unstable units): the same bounds, in bounded memory. Once ``deadline``
    (a :class:`~equivcheck.core.deadline.Deadline`, or None) has expired, the chunks left are
    not run (nor the first, when it has expired before: on the int8 Convnet_maxpool each chunk
    takes 0.5 s and a bounding call runs one per layer and stream): their units keep the bounds
    they came with (sound, only looser), so one bounding call on a wide CNN does not run far
    past the time limit."""
    m, nb = mask.shape
    union = np.flatnonzero(mask.any(1))
    if not len(union):
        return lo, hi
    per = max(1, ROW_FLOATS // (2 * nb * width)) if width else m  # units per chunk
    r_box = int(mask.sum(0).max())
    if 2 * r_box >= len(union) or nb == 1:
        for at in range(0, len(union), per):
            if deadline is not None and deadline.expired():
                break
            part = union[at:at + per]
            lo, hi = _tighten(lo, hi, part, run(_selector(part, m)))
        return lo, hi
    order = np.argsort(~mask, axis=0, kind="stable")[:r_box]  # [R, B]: each box's units first
    for at in range(0, r_box, per):
        if deadline is not None and deadline.expired():
            break
        lo, hi = _refine_gathered(lo, hi, mask, order[at:at + per], run)
    return lo, hi


def _refine_gathered(lo, hi, mask, order, run):
    """:func:`_refine_units` for the units ``order`` (``[R, B]``, per box; some not asked for)."""
    m, nb = mask.shape
    r_box = order.shape[0]
    valid = np.take_along_axis(mask, order, 0)
    c = np.zeros((nb, 2 * r_box, m))
    bi = np.broadcast_to(np.arange(nb)[None, :], order.shape)
    ri = np.broadcast_to(np.arange(r_box)[:, None], order.shape)
    c[bi, ri, order] = valid
    c[bi, ri + r_box, order] = -valid.astype(np.float64)
    ub = run(c)
    lo, hi = lo.copy(), hi.copy()
    cur_lo = np.take_along_axis(lo, order, 0)
    cur_hi = np.take_along_axis(hi, order, 0)
    np.put_along_axis(lo, order, np.where(valid, np.maximum(cur_lo, -ub[:, r_box:].T), cur_lo), 0)
    np.put_along_axis(hi, order, np.where(valid, np.minimum(cur_hi, ub[:, :r_box].T), cur_hi), 0)
    return lo, hi


ROW_FLOATS = 8_000_000  # coefficients of one chunk of back-substituted rows (64 MB per array)


class _Refiner:
    """Back-substitution of the units whose forward bounds are not good enough."""

    def __init__(self, model: PairModel, boxes: Boxes, hist: History, alpha_steps: int = 0,
                 deadline=None):
        self.model, self.boxes, self.hist = model, boxes, hist
        self.deadline = deadline  # hidden units' refinement stops here (the outputs' does not)
        self.alpha_steps = alpha_steps
        self.fac = back_factor(model)
        self.out_nu = None  # input coefficients of the back-substituted output differences

    def tiny(self):
        return underflow_allowance(self.hist, self.boxes.xmax)

    def network(self, which: str, k: int, lo, hi, all_units: bool):
        layers = self.model.f if which == "f" else self.model.g
        h = self.hist
        lo_h, hi_h, pm_h = (h.f_lo, h.f_hi, h.f_pm) if which == "f" else (h.g_lo, h.g_hi, h.g_pm)
        mask = np.ones_like(lo, dtype=bool) if all_units else (lo < 0) & (hi > 0)

        def run(c):
            if self.alpha_steps:
                return optimise_rows(layers, lo_h, hi_h, pm_h, k, c, self.boxes, self.fac,
                                     self.tiny(), self.alpha_steps, deadline=self.deadline)[0]
            p = back_network(layers, lo_h, hi_h, pm_h, k, c, self.boxes.xmax, self.boxes.count)
            return concretize(p, self.boxes, self.fac, self.tiny())

        return _refine_units(mask, lo, hi, run, self.model.width,
                             None if all_units else self.deadline)

    def difference(self, k: int, dl, du, flo, fhi, glo, ghi, all_units: bool):
        if all_units:
            mask = np.ones_like(dl, dtype=bool)
        else:  # units whose delta is relaxed (not fixed by the stability of both units)
            fixed = ((fhi <= 0) | (flo >= 0)) & ((ghi <= 0) | (glo >= 0))
            mask = ~fixed & (dl < du)

        def run(c):
            p = back_difference(self.model, self.hist, k, c, None, self.boxes.xmax, self.boxes.count)
            if all_units:  # the output rows (+e_i, -e_i: few, in one chunk)
                self.out_nu = np.asarray(p.nu)
            return concretize(p, self.boxes, self.fac, self.tiny())

        # (the output rows in one chunk: ``out_nu`` keeps all of them, and they are few)
        return _refine_units(mask, dl, du, run, 0 if all_units else self.model.width,
                             None if all_units else self.deadline)

    def outputs(self, d_lo, d_hi):
        """Output differences of a pair of different shapes: f's and g's streams added before
        the box is applied (rows ``+-(f_i - g_i)``)."""
        m, h, nb = self.model, self.hist, self.boxes.count
        out = d_lo.shape[0]
        c = _selector(np.arange(out), out)
        p = back_network(m.f, h.f_lo, h.f_hi, h.f_pm, len(m.f) - 1, c, self.boxes.xmax, nb)
        p = p + back_network(m.g, h.g_lo, h.g_hi, h.g_pm, len(m.g) - 1, -c, self.boxes.xmax, nb)
        self.out_nu = np.asarray(p.nu)
        return _tighten(d_lo, d_hi, np.arange(out), concretize(p, self.boxes, self.fac, self.tiny()))


def pair_bounds(model: PairModel, boxes: Boxes, refine: str = "all",
                prior: History | None = None, hidden_diff: bool = False,
                symbolic: bool = True, alpha_steps: int = 0, deadline=None) -> PairBounds:
    """Bounds of f, g and f - g on their outputs over every box of ``boxes`` at once.

    ``refine``: "none" (forward symbolic bounds only), "output" (the output bounds also by
    back-substitution), "all" (every unit whose relaxation matters, and the outputs, by
    back-substitution from the bounds of the earlier layers). ``prior``: sound bounds of every
    layer over boxes that contain these (a parent box's, one column per box), intersected with
    the new ones before they are used. ``hidden_diff``: with "all", back-substitute the hidden
    differences too (tighter, about twice the cost; measured not to pay on ACAS Xu, see
    ``benchmarks/engine_acas.py``). For same-shaped pairs g's hidden bounds are not
    back-substituted: ``z_g = z_f - dz`` gives them from f's and the difference's.
    ``symbolic=False`` (only with a ``refine``): the forward pass is interval arithmetic
    (:class:`~equivcheck.engine.forward.IntervalView`), the back-substitution does the rest.
    ``alpha_steps`` (with a ``refine``): each network's hidden units are back-substituted with
    lower slopes optimised by that many gradient steps (:mod:`equivcheck.engine.alpha`; any
    slopes give rigorous bounds, the best of the steps is kept). ``deadline``: past it, hidden
    units not yet back-substituted keep their forward bounds (see :func:`_refine_units`)."""
    tune()  # (once per process: the temporaries below stay off mmap, see engine.allocator)
    real = boxes
    if not symbolic and refine != "none":
        boxes = IntervalView(real)
    inp = input_state(boxes)
    hf = hg = inp
    same = model.same_shape
    hist = History()
    ref = _Refiner(model, real, hist, alpha_steps, deadline) if refine != "none" else None
    delta = None
    if same:
        n, b = inp.lo.shape
        z3, z2 = np.zeros((n, inp.lin.al.shape[1], b)), np.zeros((n, b))
        delta = NetState(Lin(z3, z2, z3, z2), z2, z2, z2)
    unstable = np.zeros(boxes.count, dtype=np.int64)
    nf, ng = len(model.f), len(model.g)

    def meet(lo, hi, which: str, k: int):
        if prior is None:
            return lo, hi
        plo, phi = getattr(prior, which + "_lo"), getattr(prior, which + "_hi")
        return np.maximum(lo, plo[k]), np.minimum(hi, phi[k])

    for k in range(max(nf, ng)):
        zf = zg = None
        if k < nf:
            pre = (hist.f_lo[k - 1], hist.f_hi[k - 1]) if k > 0 else None
            lin, flo, fhi = affine_step(model.f[k], hf, boxes, pre)
            flo, fhi = meet(flo, fhi, "f", k)
            last = k == nf - 1
            if (ref is not None and k > 0 and (refine == "all" or last) and not (last and same)
                    and not model.f[k].zero):  # (a zero map's forward bounds are exact)
                flo, fhi = ref.network("f", k, flo, fhi, last)
            f_lin = lin
            hist.f_lo.append(flo)
            hist.f_hi.append(fhi)
        if k < ng:
            pre = (hist.g_lo[k - 1], hist.g_hi[k - 1]) if k > 0 else None
            lin, glo, ghi = affine_step(model.g[k], hg, boxes, pre)
            glo, ghi = meet(glo, ghi, "g", k)
            last = k == ng - 1
            if (ref is not None and k > 0 and (refine == "all" or last) and not same
                    and not model.g[k].zero):
                glo, ghi = ref.network("g", k, glo, ghi, last)
            g_lin = lin
        if same:
            pre_f = (hist.f_lo[k - 1], hist.f_hi[k - 1]) if k > 0 else None
            pre_g = (hist.g_lo[k - 1], hist.g_hi[k - 1]) if k > 0 else None
            dz_lin, dl, du = diff_affine_step(model.diff[k], model.g[k], delta, hf, boxes,
                                              model.f[k], pre_f, pre_g)
            dl, du = meet(dl, du, "dz", k)
            dl = np.maximum(dl, sub_down(flo, ghi))
            du = np.minimum(du, sub_up(fhi, glo))
            glo = np.maximum(glo, sub_down(flo, du))  # z_g = z_f - dz
            ghi = np.minimum(ghi, sub_up(fhi, dl))
            last = k == nf - 1
            if ref is not None and k > 0 and ((refine == "all" and hidden_diff) or last):
                dl, du = ref.difference(k, dl, du, flo, fhi, glo, ghi, last)
                glo = np.maximum(glo, sub_down(flo, du))
                ghi = np.minimum(ghi, sub_up(fhi, dl))
            flo = np.maximum(flo, sub_down(glo, -dl))  # z_f = z_g + dz (fixed phases of g)
            fhi = np.minimum(fhi, sub_up(ghi, -du))
            hist.f_lo[-1], hist.f_hi[-1] = flo, fhi
            hist.dz_lo.append(dl)
            hist.dz_hi.append(du)
        if k < ng:
            hist.g_lo.append(glo)
            hist.g_hi.append(ghi)
        if k < nf:
            zf = make_state(f_lin, flo, fhi, boxes)
        if k < ng:
            zg = make_state(g_lin, glo, ghi, boxes)
        if same:
            dz_mag = dz_lin.magnitude(boxes.xmax1)
            if model.f[k].relu:
                delta = diff_relu_step(dz_lin, dz_mag, dl, du, zf.lin, zf.lo, zf.hi, zg.lin, zg.lo, zg.hi, boxes)
            else:
                delta = NetState(dz_lin, dz_mag, dl, du)
            hist.d_pm.append(np.maximum(np.abs(delta.lo), np.abs(delta.hi)))
        if zf is not None:
            hf, n_unstable = _post_activation(zf, model.f[k].relu, hist.f_pm, boxes)
            unstable += n_unstable
        if zg is not None:
            hg, n_unstable = _post_activation(zg, model.g[k].relu, hist.g_pm, boxes)
            unstable += n_unstable
    if same:
        d_lin, d_mag, d_lo, d_hi = delta.lin, delta.mag, delta.lo, delta.hi
    else:
        d_lin = lin_difference(hf.lin, hf.mag, hg.lin, hg.mag, boxes)
        d_mag = d_lin.magnitude(boxes.xmax1)
        d_lo, d_hi = boxes.lower(d_lin.al, d_lin.cl), boxes.upper(d_lin.au, d_lin.cu)
    d_lo = np.maximum(d_lo, sub_down(hf.lo, hg.hi))
    d_hi = np.minimum(d_hi, sub_up(hf.hi, hg.lo))
    if ref is not None and not same and not (model.f[-1].zero and model.g[-1].zero):
        d_lo, d_hi = ref.outputs(d_lo, d_hi)  # (two zero maps: f - g = b_f - b_g, exactly bounded)
    return PairBounds(
        real, hf.lo.T, hf.hi.T, hg.lo.T, hg.hi.T, d_lo.T, d_hi.T, hf.lin, hg.lin, d_lin,
        hf.mag, hg.mag, d_mag, unstable, model, hist, None if ref is None else ref.out_nu,
    )


def _post_activation(z: NetState, relu: bool, post_max: list, boxes: Boxes):
    """One network's layer output from its pre-activation state ``z``: the ReLU relaxation (or
    ``z`` itself for a linear layer). Appends the bound of ``|h|`` to ``post_max``; returns the
    output state and the per-box count of unstable units."""
    if not relu:
        post_max.append(np.maximum(np.abs(z.lo), np.abs(z.hi)))
        return z, 0
    post_max.append(np.maximum(z.hi, 0.0))
    return relu_step(z.lin, z.mag, z.lo, z.hi, boxes), ((z.lo < 0) & (z.hi > 0)).sum(0)
