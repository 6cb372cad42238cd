"""Batched back-substitution (CROWN / DeepPoly style) of linear functions of the pair's units.

The upper bound of ``c . z_k`` (rows ``c`` on a layer's pre-activations) is obtained by
substituting the layers backwards to the input, relaxing each ReLU with the concrete bounds the
forward pass (:mod:`equivcheck.engine.bounds`) found for the earlier layers. For the difference of
a same-shaped pair two streams run together (as in NeuroDiff's and ``bounds.difference``): the
coefficients on ``delta_j = h_f,j - h_g,j`` and on ``h_f,j``, through

    dz_j = W_g delta_{j-1} + D h_f,{j-1} + db_j,     z_f,j = W_f h_f,{j-1} + b_f,j

with ``delta`` relaxed in terms of ``dz`` on the hull of ``{(dz, delta): delta between min(0, dz)
and max(0, dz)}``, and exactly (no relaxation) where both units are fixed: both inactive
(``delta = 0``), both active (``delta = dz``), f active and g inactive (``delta = z_f``), f
inactive and g active (``delta = dz - z_f``). A third, independent stream on ``h_g`` serves rows
that involve g alone; rows over both networks add the streams' input coefficients before the
input box is applied, so the shared input keeps them correlated.

Layout: coefficients are ``[B, R, m]`` (boxes, rows, units); each product with a weight matrix
is one GEMM over all boxes and rows.

Rigour (as in :func:`equivcheck.bounds.symbolic.back_substitute`): the substitution is a
chain of inequalities valid for *any* float coefficients; the float error of each computed
coefficient times a bound of the quantity it multiplies, and of each constant, is accumulated in
``mag`` and added as ``factor * mag`` at the end; exact error terms (``W_f - W_g`` not exact in
float, inexact weights) accumulate in ``slack``; underflow is covered by a tiny term scaled by the
sizes of all the quantities.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from equivcheck.core import matrix
from equivcheck.engine.model import PairModel
from equivcheck.engine.rounding import SLOPE_INFLATE, TINY, WEIGHT_ULP, gamma, sub_down, sub_up
from equivcheck.engine.rounding_noise import bias_interval


@dataclass(eq=False)
class History:
    """Concrete bounds of every layer computed so far (each ``[m, B]``): pre-activations of f,
    g and ``dz``, and bounds of the absolute values after the activation (``*_pm``)."""

    f_lo: list = field(default_factory=list)
    f_hi: list = field(default_factory=list)
    g_lo: list = field(default_factory=list)
    g_hi: list = field(default_factory=list)
    dz_lo: list = field(default_factory=list)
    dz_hi: list = field(default_factory=list)
    f_pm: list = field(default_factory=list)
    g_pm: list = field(default_factory=list)
    d_pm: list = field(default_factory=list)


def back_factor(model: PairModel) -> float:
    """The relative allowance of a whole back-substitution: every coefficient is a sum of at most
    ``2 * width`` products, and each is rounded a few times per layer."""
    depth = max(len(model.f), len(model.g))
    return 4.0 * gamma(2 * (model.width + 12 * depth + model.n_in + 24)) + WEIGHT_ULP


@dataclass(eq=False)
class Partial:
    """A back-substitution that has reached the input: ``value <= val + nu . x`` up to
    ``factor * mag + slack`` (each ``[B, R]``; ``nu`` is ``[B, R, n]``)."""

    val: np.ndarray
    mag: np.ndarray
    slack: np.ndarray
    nu: np.ndarray

    def __add__(self, other: "Partial") -> "Partial":
        return Partial(self.val + other.val, self.mag + other.mag, self.slack + other.slack,
                       self.nu + other.nu)


def concretize(p: Partial, boxes, fac: float, tiny: np.ndarray) -> np.ndarray:
    """Rigorous ``[B, R]`` upper bounds from a finished back-substitution over each box."""
    mid, rad, xmax1 = boxes.mid.T, boxes.rad.T, boxes.xmax1.T  # [B, n]
    anu = np.abs(p.nu)
    v = p.val + np.einsum("brn,bn->br", p.nu, mid) + np.einsum("brn,bn->br", anu, rad)
    mag = p.mag + np.einsum("brn,bn->br", anu, xmax1 + rad)
    ub = v + fac * mag + p.slack * (1.0 + fac) + tiny[:, None]
    return np.nextafter(ub, np.inf)


def _bmm(nu: np.ndarray, w, wt=None) -> np.ndarray:
    """``nu @ w`` for ``nu`` shaped ``[B, R, m]`` (or ``[R, m]``, the same for every box) and a
    dense or sparse weight ``w`` (``wt``: its transpose as a csr_array, when sparse): one
    product for all boxes and rows. (``W.T @ nu.T`` runs the sparse product row by row of
    ``W.T`` over contiguous rows of ``nu.T``: 1.5-2x faster than ``nu @ W`` on conv layers.)"""
    if wt is not None:
        flat = nu.reshape(-1, nu.shape[-1])
        out = (wt @ np.ascontiguousarray(flat.T)).T
        return out.reshape(*nu.shape[:-1], w.shape[1])
    if nu.ndim == 2 or matrix.is_sparse(w):
        return matrix.left_multiply(nu, w)
    b, r, m = nu.shape
    return (nu.reshape(b * r, m) @ w).reshape(b, r, w.shape[1])


def _dot_units(a: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``sum_m a[b, r, m] * v[m, b]`` -> ``[B, R]`` (``a`` may be ``[R, m]``)."""
    if a.ndim == 2:
        return (a @ v).T
    return np.matmul(a, np.ascontiguousarray(v.T)[:, :, None])[:, :, 0]


def _split_apply(nu: np.ndarray, k_up, k_lo, q_up, q_lo):
    """``rho = nu * (k_up if nu > 0 else k_lo)`` and ``sum(nu * (q_up if nu > 0 else q_lo))``
    with few passes over the big ``[B, R, m]`` array: ``nu k = nu (k_up + k_lo) / 2 +
    |nu| (k_up - k_lo) / 2`` (the per-unit halves are ``[B, 1, m]``; their rounding is covered
    by the magnitude, which the caller takes as ``3 |nu| . max|z|``)."""
    anu = np.abs(nu)
    rho = nu * (0.5 * (k_up + k_lo))
    rho += anu * (0.5 * (k_up - k_lo))  # (in place: one big temporary fewer, same rounding)
    qc, qd = 0.5 * (q_up + q_lo), 0.5 * (q_up - q_lo)
    r = _dot_units(nu, np.ascontiguousarray(qc[:, 0, :].T)) + _dot_units(anu, np.ascontiguousarray(qd[:, 0, :].T))
    return rho, r, anu


def _bu(a: np.ndarray) -> np.ndarray:
    """``[m, B]`` -> ``[B, 1, m]`` (per-unit values broadcast over the rows)."""
    return a.T[:, None, :]


def _relu_relax(nu: np.ndarray, lo: np.ndarray, hi: np.ndarray, alpha: np.ndarray | None = None,
                trace: list | None = None):
    """CROWN: ``nu_i relu(z_i) <= rho_i z_i + r_i`` on ``[l_i, u_i]`` (``lo``/``hi`` are
    ``[m, B]``). The upper line is the chord (slope ``s >= u / (u - l)``), the lower one has slope
    1 or 0 (whichever is closer), or ``alpha`` (``[B, R, m]``, in [0, 1]: alpha-CROWN's optimised
    slopes, per row) where given; ``r`` is ``nu`` times the extreme of ``relu(z) - slope z`` at
    ``l``, ``u`` and 0 (for an unstable unit ``relu(z) >= a z`` for every ``a`` in [0, 1], with
    extreme 0 at the point 0 whatever ``a``, so the constants do not depend on ``alpha``).
    ``trace`` (a list) receives ``(nu, slope, constant, free)`` per unit for
    :mod:`equivcheck.engine.alpha`'s gradient. Returns ``(rho, r_sum [B, R], mag [B, R])``."""
    zl, zu = lo.T[:, None, :], hi.T[:, None, :]  # [B, 1, m]
    act = zl >= 0.0
    unst = ~act & (zu > 0.0)
    s = np.where(unst, zu / np.where(unst, zu - zl, 1.0), 0.0) * SLOPE_INFLATE
    a = np.where(unst, (zu > -zl).astype(np.float64), 0.0)
    k_up = np.where(act, 1.0, s)
    k_lo = np.where(act, 1.0, a)
    zero = np.zeros_like(zl)
    # extremes of relu(z) - k z over {zl, zu, 0} (0 only where it lies in [zl, zu])
    pts = (zl, zu, np.where(unst, 0.0, zl))
    q_up = np.maximum.reduce([np.maximum(p, zero) - k_up * p for p in pts])
    q_lo = np.minimum.reduce([np.maximum(p, zero) - k_lo * p for p in pts])
    if alpha is not None:
        k_lo = np.where(unst, alpha, k_lo)
    rho, r, anu = _split_apply(nu, k_up, k_lo, q_up, q_lo)
    if trace is not None:
        pos = nu > 0.0
        trace.append((nu, np.where(pos, k_up, k_lo), np.where(pos, q_up, q_lo), unst & (nu < 0.0)))
    zmax = np.maximum(np.abs(lo), np.abs(hi))
    return rho, r, _dot_units(anu, 6.0 * zmax)  # covers the rounding of rho and of r


def _delta_relax(nu: np.ndarray, dl, du, flo, fhi, glo, ghi):
    """``nu_i delta_i <= rho_i dz_i + r_i`` for ``delta = relu(z_f) - relu(z_g)``, ``dz = z_f - z_g``,
    from bounds ``[m, B]`` of ``dz``, ``z_f`` and ``z_g``.

    The pair ``(dz, delta)`` lies in the convex hull of a few vertices that depend on which
    units are fixed: both unstable, ``delta`` between ``min(0, dz)`` and ``max(0, dz)``
    (vertices ``(dl, dl), (dl, 0), (0, 0), (du, 0), (du, du)``); f active, ``delta = min(dz, z_f)``
    (between ``min(dz, l_f)`` and ``dz``); g active, ``delta = max(dz, -z_g)``; f inactive,
    ``delta = min(0, dz - z_f)``; g inactive, ``delta = max(0, dz + z_g)``. Both fixed: exact
    (``delta = dz`` when both active or f inactive and g active, the latter's ``-z_f`` part is
    moved to f's stream by the caller; ``delta`` = 0 or ``z_f`` otherwise, also moved). ``r`` is
    the extreme of ``nu (delta - slope dz)`` over the vertices, so any slope is valid; the slopes
    are the faces of the hull. Returns ``(rho, r_sum, mag)``."""
    zl, zu = _bu(dl), _bu(du)
    fl, fu, gl, gu = _bu(flo), _bu(fhi), _bu(glo), _bu(ghi)
    f_act, f_off, g_act, g_off = fl >= 0.0, fu <= 0.0, gl >= 0.0, gu <= 0.0
    f_unst, g_unst = ~(f_act | f_off), ~(g_act | g_off)
    zero = np.zeros_like(zl)
    # vertices (z_v, lowest delta_v, highest delta_v) at z = zl and z = zu, and the point (0, 0)
    lo_l, hi_l = np.minimum(zl, zero), np.maximum(zl, zero)
    lo_u, hi_u = np.minimum(zu, zero), np.maximum(zu, zero)
    use0 = (zl < 0.0) & (zu > 0.0) & f_unst & g_unst  # the generic hull's extra vertex
    # f active, g unstable: min(dz, l_f) <= delta <= dz
    c = f_act & g_unst
    lo_l, hi_l = np.where(c, np.minimum(zl, fl), lo_l), np.where(c, zl, hi_l)
    lo_u, hi_u = np.where(c, np.minimum(zu, fl), lo_u), np.where(c, zu, hi_u)
    # g active, f unstable: dz <= delta <= max(dz, -l_g)
    c = g_act & f_unst
    lo_l, hi_l = np.where(c, zl, lo_l), np.where(c, np.maximum(zl, -gl), hi_l)
    lo_u, hi_u = np.where(c, zu, lo_u), np.where(c, np.maximum(zu, -gl), hi_u)
    # f inactive, g unstable: min(0, dz - u_f) <= delta <= 0
    c = f_off & g_unst
    lo_l, hi_l = np.where(c, np.minimum(sub_down(zl, fu), 0.0), lo_l), np.where(c, 0.0, hi_l)
    lo_u, hi_u = np.where(c, np.minimum(sub_down(zu, fu), 0.0), lo_u), np.where(c, 0.0, hi_u)
    # g inactive, f unstable: 0 <= delta <= max(0, dz + u_g)
    c = g_off & f_unst
    lo_l, hi_l = np.where(c, 0.0, lo_l), np.where(c, np.maximum(sub_up(zl, -gu), 0.0), hi_l)
    lo_u, hi_u = np.where(c, 0.0, lo_u), np.where(c, np.maximum(sub_up(zu, -gu), 0.0), hi_u)
    # slopes: the hull's upper and lower faces (chords between the vertices at zl and zu)
    span = zu - zl
    wide = span > 0.0
    den = np.where(wide, span, 1.0)
    a_up = np.where(wide, (hi_u - hi_l) / den, 0.0)
    a_lo = np.where(wide, (lo_u - lo_l) / den, 0.0)
    q_up = np.maximum(hi_l - a_up * zl, hi_u - a_up * zu)
    q_lo = np.minimum(lo_l - a_lo * zl, lo_u - a_lo * zu)
    q_up = np.where(use0, np.maximum(q_up, 0.0), q_up)
    q_lo = np.where(use0, np.minimum(q_lo, 0.0), q_lo)
    # both fixed: exact, the slopes say it (dz kept with slope 1, or nothing). The cases are
    # told apart in exactly the order :func:`back_difference` uses to move ``z_f`` to f's
    # stream (a unit with bounds [0, 0] is both "active" and "inactive": both off wins, then f
    # only, then g only), so the slope here and the part moved there always describe one case.
    off = f_off & g_off
    f_only = f_act & g_off & ~off  # delta = z_f: slope 0 here, z_f moved by the caller
    g_only = f_off & g_act & ~off  # delta = dz - z_f: slope 1 here, -z_f moved by the caller
    keep = g_only | (f_act & g_act & ~(off | f_only))
    drop = off | f_only
    fixed = keep | drop
    a_up = np.where(keep, 1.0, np.where(drop, 0.0, a_up))
    a_lo = np.where(keep, 1.0, np.where(drop, 0.0, a_lo))
    q_up = np.where(fixed, 0.0, q_up)
    q_lo = np.where(fixed, 0.0, q_lo)
    rho, r, anu = _split_apply(nu, a_up, a_lo, q_up, q_lo)
    vmax = np.maximum.reduce([np.abs(lo_l), np.abs(hi_l), np.abs(lo_u), np.abs(hi_u), np.abs(zl), np.abs(zu)])
    return rho, r, _dot_units(anu, 8.0 * np.ascontiguousarray(vmax[:, 0, :].T))


def back_network(layers, lo_hist, hi_hist, pm_hist, k: int, c: np.ndarray, xmax: np.ndarray,
                 nboxes: int, alpha: dict | None = None, trace: dict | None = None) -> Partial:
    """Back-substitute rows ``c`` (``[R, m_k]``) on layer ``k``'s pre-activation of one network.

    ``lo_hist``/``hi_hist``: concrete pre-activation bounds of layers ``< k``, ``pm_hist``
    bounds of their absolute values after the activation, ``xmax`` (``[n, B]``) of the input.
    ``alpha`` (layer -> ``[B, R, m]`` slopes in [0, 1]) replaces the lower relaxation slopes of
    unstable units; ``trace`` (a dict) receives each ReLU layer's relaxation (see
    :func:`_relu_relax`). The bound is valid for any such slopes."""
    rho = c
    val = np.zeros((nboxes, c.shape[-2]))
    mag = np.zeros_like(val)
    slack = np.zeros_like(val)
    for j in range(k, -1, -1):
        lay = layers[j]
        if j < k:
            if lay.relu:
                got = [] if trace is not None else None
                rho, r, m = _relu_relax(rho, lo_hist[j], hi_hist[j],
                                        None if alpha is None else alpha.get(j), got)
                if got:
                    trace[j] = got[0]
                val += r
                mag += m
        pm = pm_hist[j - 1] if j > 0 else xmax  # [m_{j-1}, B]
        arho = np.abs(rho)
        val += _as_br(rho @ lay.b, nboxes)
        mag += _dot_units(arho, lay.ab[:, None] + lay.aw @ pm)
        if lay.br is not None:  # an interval bias b +- br
            slack += _dot_units(arho, np.broadcast_to(lay.br[:, None], (lay.out_dim, nboxes)))
        if lay.rounding is not None and j > 0:  # the rounding of its inputs, on these boxes
            shift, rad = bias_interval(lay.rounding, lo_hist[j - 1], hi_hist[j - 1], lay.fac)
            val += _dot_units(rho, shift)
            mag += _dot_units(arho, np.abs(shift))
            slack += _dot_units(arho, rad)
        if not lay.exact:
            # weights below the subnormal range: at most 2**-1074 each, times sum |h_{j-1}|
            slack += _dot_units(arho, np.broadcast_to(2.0 * TINY * (1.0 + pm.sum(0))[None, :], (lay.out_dim, nboxes)))
        rho = _bmm(rho, lay.w, lay.wt)
    if rho.ndim == 2:
        rho = np.broadcast_to(rho, (nboxes,) + rho.shape)
    return Partial(val, mag, slack, rho)


def _mv(a: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``sum_m a[b, r, m] * v[b, m, 0]`` -> ``[B, R]`` (``a`` may be ``[R, m]``)."""
    if a.ndim == 2:
        return (a @ v)[:, :, 0].reshape(v.shape[0], a.shape[0])
    return np.matmul(a, v)[:, :, 0]


def _as_br(v: np.ndarray, nboxes: int) -> np.ndarray:
    return np.broadcast_to(v, (nboxes,) + v.shape[-1:]) if v.ndim == 1 else v


def back_difference(model: PairModel, hist: History, k: int, c_d: np.ndarray,
                    c_f: np.ndarray | None, xmax: np.ndarray, nboxes: int) -> Partial:
    """Back-substitute rows ``c_d . dz_k + c_f . z_f,k`` (each ``[R, m_k]`` or ``[B, R, m_k]``)
    of a same-shaped pair through the two streams ``delta`` and ``h_f``. (The delta stream's
    relaxation in ``dz`` has no free slope: its faces are chords of a convex and a concave
    function, pointwise best. Optimised slopes of f's stream here were measured not to pay:
    see :mod:`equivcheck.engine.alpha`.)"""
    rd = c_d
    rf = c_f if c_f is not None else np.zeros_like(c_d)
    val = np.zeros((nboxes, c_d.shape[-2]))
    mag = np.zeros_like(val)
    slack = np.zeros_like(val)
    for j in range(k, -1, -1):
        lf, lg, dj = model.f[j], model.g[j], model.diff[j]
        if j < k and lf.relu:
            flo, fhi, glo, ghi = hist.f_lo[j], hist.f_hi[j], hist.g_lo[j], hist.g_hi[j]
            off = (fhi <= 0.0) & (ghi <= 0.0)
            f_only = (flo >= 0.0) & (ghi <= 0.0) & ~off  # delta = z_f
            g_only = (fhi <= 0.0) & (glo >= 0.0) & ~off  # delta = -z_g = dz - z_f
            rho_d, r_d, m_d = _delta_relax(rd, hist.dz_lo[j], hist.dz_hi[j], flo, fhi, glo, ghi)
            rho_f, r_f, m_f = _relu_relax(rf, flo, fhi)
            val += r_d + r_f
            mag += m_d + m_f
            # a unit whose delta (z_f, or -z_g) is known more tightly than dz is a constant
            # between its bounds (else its exact value moves to f's stream)
            d_lo = np.where(f_only, flo, -ghi)
            d_hi = np.where(f_only, fhi, -glo)
            const = (f_only | g_only) & (sub_up(d_hi, d_lo) <= sub_down(hist.dz_hi[j], hist.dz_lo[j]))
            if const.any():
                cl, cu = np.where(const, d_lo, 0.0).T, np.where(const, d_hi, 0.0).T  # [B, m]
                ccen, crad = (0.5 * (cl + cu))[:, :, None], (0.5 * (cu - cl))[:, :, None]
                ard = np.abs(rd)
                val += _mv(rd, ccen) + _mv(ard, crad)
                mag += 3.0 * _mv(ard, np.maximum(np.abs(cl), np.abs(cu))[:, :, None])
                rho_d = rho_d * ~const.T[:, None, :]  # g only: _delta_relax kept dz's slope 1
                f_only, g_only = f_only & ~const, g_only & ~const
            moving = f_only | g_only
            if moving.any():  # the exact cases that involve z_f
                move = (f_only.astype(np.float64) - g_only.astype(np.float64)).T[:, None, :]
                rho_f = rho_f + rd * move
                zfmax = np.maximum(np.abs(flo), np.abs(fhi)) * moving
                mag += 3.0 * _dot_units(np.abs(rd), zfmax) + _dot_units(np.abs(rho_f), zfmax)
            rd, rf = rho_d, rho_f
        hm = hist.f_pm[j - 1] if j > 0 else xmax
        dm = hist.d_pm[j - 1] if j > 0 else None
        ad, af = np.abs(rd), np.abs(rf)
        val += _as_br(rd @ dj.db, nboxes) + _as_br(rf @ lf.b, nboxes)
        size_d = dj.adb[:, None] + dj.ad @ hm + (lg.aw @ dm if dm is not None else 0.0)
        mag += _dot_units(ad, size_d) + _dot_units(af, lf.ab[:, None] + lf.aw @ hm)
        if lf.br is not None:  # f's interval bias (both radii are in db_err for the difference)
            slack += _dot_units(af, np.broadcast_to(lf.br[:, None], (lf.out_dim, nboxes)))
        if j > 0 and (lf.rounding is not None or lg.rounding is not None):
            sf = rf_ = sg = rg_ = 0.0
            if lf.rounding is not None:
                sf, rf_ = bias_interval(lf.rounding, hist.f_lo[j - 1], hist.f_hi[j - 1], lf.fac)
                val += _dot_units(rf, sf)
                mag += _dot_units(af, np.abs(sf))
                slack += _dot_units(af, rf_)
            if lg.rounding is not None:
                sg, rg_ = bias_interval(lg.rounding, hist.g_lo[j - 1], hist.g_hi[j - 1], lg.fac)
            shape = (lf.out_dim, nboxes)
            val += _dot_units(rd, np.broadcast_to(sf - sg, shape))
            mag += _dot_units(ad, np.broadcast_to(np.abs(sf) + np.abs(sg), shape))
            slack += _dot_units(ad, np.broadcast_to(rf_ + rg_, shape))
        if dj.has_err or not lf.exact:
            err = dj.d_err @ hm + dj.db_err[:, None] + (dj.g_err @ dm if dm is not None else 0.0)
            sizes = 2.0 * TINY * (1.0 + hm.sum(0) + (0.0 if dm is None else dm.sum(0)))
            slack += _dot_units(ad, err) + _dot_units(ad + af, np.broadcast_to(sizes[None, :], (lf.out_dim, nboxes)))
        nf = _bmm(rd, dj.d, dj.dt) + _bmm(rf, lf.w, lf.wt)
        rd = _bmm(rd, lg.w, lg.wt) if j > 0 else None
        rf = nf
    if rf.ndim == 2:
        rf = np.broadcast_to(rf, (nboxes,) + rf.shape)
    return Partial(val, mag, slack, rf)


def underflow_allowance(hist: History, xmax: np.ndarray) -> np.ndarray:
    """``[B]``: bounds the effect of every underflowed product of a back-substitution (each
    at most 2**-1075, fewer than 2**50 per coefficient, times the size of what it multiplies)."""
    total = 1.0 + xmax.sum(0)
    for lst in (hist.f_pm, hist.g_pm, hist.d_pm):
        for pm in lst:
            total = total + pm.sum(0)
    return 8.0 * TINY * total
