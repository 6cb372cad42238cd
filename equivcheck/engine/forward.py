"""Forward symbolic bounds of a pair over many boxes at once (the cheap stage of the engine).

Every unit of each network carries, per box, a linear lower and an upper bound in the input ``x``
(:class:`Lin`, arrays shaped ``[units, inputs, boxes]``: ReluVal/Neurify symbolic intervals);
for same-shaped pairs the unit-wise difference ``delta = h_f - h_g`` carries its own linear
bounds (NeuroDiff's third stream), propagated through

    dz = W_g delta + D h_f + db          (D = W_f - W_g, db = b_f - b_g, with their exact errors)

and through ReLU by cases: both units stably inactive (delta = 0), both active (delta = dz), one
active and the other inactive (delta = z_f or -z_g), else ``delta`` between ``min(0, dz)`` and
``max(0, dz)`` (relu is monotone and 1-Lipschitz), relaxed by chords. Each layer's concrete
bounds are also intersected with interval arithmetic. Each product with a weight matrix is one
GEMM over all boxes (``W @ A.reshape(units, inputs * boxes)``): no Python loop over boxes or
units.

Rigour: see :mod:`equivcheck.engine.rounding`. Every step moves its constants outward by the
layer's factor times a magnitude (``|W| @ M`` with ``M`` bounding ``|A| . max|x| + |c|`` of the
incoming linear bounds), plus a tiny term for underflow where any product is nonzero; the exact
error terms of ``D`` and ``db`` and of weights that are not exact floats are added as bounds of
the actual values. Relaxation slopes are moved to their safe side. The bounds therefore enclose
the exact real values of the stored weights over every point of each float box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from equivcheck.engine.model import DiffArrays, LayerArrays
from equivcheck.engine.rounding import (
    SLOPE_INFLATE,
    TINY,
    factor,
    push_down,
    push_up,
    sub_down,
    sub_up,
)
from equivcheck.engine.rounding_noise import bias_interval


@dataclass(frozen=True, eq=False)
class Lin:
    """Linear lower/upper bounds ``al . x + cl <= v <= au . x + cu`` of ``m`` quantities over
    ``B`` boxes: ``al``/``au`` shaped ``[m, n, B]`` (boxes last, so sums over the inputs are
    vector operations), ``cl``/``cu`` shaped ``[m, B]``."""

    al: np.ndarray
    cl: np.ndarray
    au: np.ndarray
    cu: np.ndarray

    def magnitude(self, xmax1: np.ndarray) -> np.ndarray:
        """``[m, B]`` upper bounds of ``|a| . (max|x| + 1) + |c|`` over both bounds: their size
        for the rounding allowances, also a bound of ``|v|``; the ``+ 1`` makes it positive
        exactly where some coefficient is nonzero (no underflow)."""
        ml = np.einsum("mnb,nb->mb", np.abs(self.al), xmax1) + np.abs(self.cl)
        mu = np.einsum("mnb,nb->mb", np.abs(self.au), xmax1) + np.abs(self.cu)
        return np.maximum(ml, mu) * (1.0 + 2.0**-40)


@dataclass(frozen=True, eq=False)
class Boxes:
    """``B`` float boxes ``[lo, hi]`` (each enclosing the exact sub-box it stands for), given
    as ``[B, n]`` arrays and kept transposed (``[n, B]``) for the bounds."""

    lo: np.ndarray  # [B, n]
    hi: np.ndarray
    width: int = 0  # the widest layer of the networks (sets the length of the dot products)

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.lo, dtype=np.float64).T, np.asarray(self.hi, dtype=np.float64).T
        xmax = np.maximum(np.abs(lo), np.abs(hi))
        mid = 0.5 * lo + 0.5 * hi  # any float; the radius is rounded up around it
        rad = np.nextafter(np.maximum(sub_up(hi, mid), sub_up(mid, lo)), np.inf)
        put = object.__setattr__
        put(self, "tlo", np.ascontiguousarray(lo))
        put(self, "thi", np.ascontiguousarray(hi))
        put(self, "mid", np.ascontiguousarray(mid))
        put(self, "rad", np.ascontiguousarray(rad))
        put(self, "xmax", np.ascontiguousarray(xmax))  # [n, B]
        put(self, "xmax1", np.ascontiguousarray(xmax + 1.0))
        # absolute allowance for underflow: < 2**50 products of 2**-1075 each, times max|x|
        put(self, "tiny", 2.0 * TINY * (1.0 + xmax.sum(axis=0)))
        put(self, "fac", factor(lo.shape[0] + 2 * self.width))

    @property
    def count(self) -> int:
        return int(self.lo.shape[0])

    def lower(self, a: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Rigorous ``[m, B]`` lower bounds of ``a . x + c`` over each box (``a`` is
        ``[m, n, B]``): ``a . mid - |a| . rad + c`` with the radius rounded up."""
        aa = np.abs(a)
        v = np.einsum("mnb,nb->mb", a, self.mid) - np.einsum("mnb,nb->mb", aa, self.rad) + c
        mag = np.einsum("mnb,nb->mb", aa, self.xmax1 + self.rad) + np.abs(c)
        allow = self.fac * mag + self.tiny * (mag > 0)
        return push_down(v, allow)

    def upper(self, a: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Rigorous ``[m, B]`` upper bounds of ``a . x + c`` over each box."""
        return -self.lower(-a, -c)


@dataclass(frozen=True, eq=False)
class NetState:
    """One network's bounds at one layer: linear bounds, their magnitude (:meth:`Lin.magnitude`,
    positive exactly where a bound has a nonzero term), and concrete ``[m, B]`` bounds
    ``lo <= v <= hi``."""

    lin: Lin
    mag: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


def _gemm(p: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``p @ a`` over the unit axis of an ``[m, n, B]`` array: one GEMM for all boxes."""
    m, n, b = a.shape
    return (p @ a.reshape(m, n * b)).reshape(p.shape[0], n, b)


class IntervalView:
    """The boxes seen by the forward pass as plain intervals: linear bounds with no input
    coefficient (``[m, 0, B]``), so that the forward pass is interval arithmetic with the same
    rounding allowances (the constants then are the interval bounds). For many inputs (MNIST),
    where the symbolic ``[m, n, B]`` arrays cost most of a round and the back-substitution
    gives the bounds that matter anyway."""

    def __init__(self, boxes: Boxes):
        b = boxes.count
        self.lo, self.hi, self.tlo, self.thi = boxes.lo, boxes.hi, boxes.tlo, boxes.thi
        self.tiny, self.fac, self.width = boxes.tiny, boxes.fac, boxes.width
        self.xmax = self.xmax1 = self.mid = self.rad = np.zeros((0, b))
        self.interval = True

    @property
    def count(self) -> int:
        return int(self.lo.shape[0])

    lower = Boxes.lower
    upper = Boxes.upper


def input_state(boxes: Boxes) -> NetState:
    b, n = boxes.lo.shape
    if isinstance(boxes, IntervalView):  # x in [lo, hi]: no coefficient, constants lo and hi
        zero = np.zeros((n, 0, b))
        return NetState(Lin(zero, boxes.tlo, zero, boxes.thi), np.nextafter(np.maximum(
            np.abs(boxes.tlo), np.abs(boxes.thi)), np.inf), boxes.tlo, boxes.thi)
    eye = np.broadcast_to(np.eye(n)[:, :, None], (n, n, b)).copy()
    zero = np.zeros((n, b))
    lin = Lin(eye, zero, eye, zero)
    return NetState(lin, boxes.xmax1.copy(), boxes.tlo, boxes.thi)


def _inexact_tiny(layer: LayerArrays, mag: np.ndarray, boxes: Boxes) -> np.ndarray | float:
    """Absolute allowance for weights below the subnormal range of an inexact layer."""
    if layer.exact:
        return 0.0
    return 2.0 * TINY * (mag.sum(axis=0) + 1.0)[None, :] + boxes.tiny[None, :]


def affine_step(layer: LayerArrays, h: NetState, boxes: Boxes, pre=None) -> tuple[Lin, np.ndarray, np.ndarray]:
    """Linear bounds and concrete bounds of ``z = W h + b`` (symbolic, intersected with
    interval arithmetic). ``pre``: the previous layer's concrete pre-activation bounds
    ``(lo, hi)``, for a layer that reads rounded values (``layer.rounding``)."""
    wp, wn, bias = layer.wp, layer.wn, layer.b[:, None]
    shift, radius = rounding_terms(layer, pre)
    bias = bias + shift  # the rounding error's centre (its product's error is in the radius)
    al = _gemm(wp, h.lin.al) + _gemm(wn, h.lin.au)
    au = _gemm(wp, h.lin.au) + _gemm(wn, h.lin.al)
    cl = wp @ h.lin.cl + wn @ h.lin.cu + bias
    cu = wp @ h.lin.cu + wn @ h.lin.cl + bias
    nz = (layer.nzw @ (h.mag > 0) + (layer.b != 0)[:, None]) > 0
    extra = _inexact_tiny(layer, h.mag, boxes)
    allow = layer.fac * (layer.aw @ h.mag + layer.ab[:, None]) + boxes.tiny[None, :] * nz + extra
    allow = allow + radius + layer.fac * np.abs(shift)
    lin = Lin(al, push_down(cl, allow), au, push_up(cu, allow))
    lo, hi = boxes.lower(lin.al, lin.cl), boxes.upper(lin.au, lin.cu)
    # interval arithmetic on the concrete bounds of h
    hmax = np.maximum(np.abs(h.lo), np.abs(h.hi))
    il = wp @ h.lo + wn @ h.hi + bias
    iu = wp @ h.hi + wn @ h.lo + bias
    inz = (layer.nzw @ (hmax > 0) + (layer.b != 0)[:, None]) > 0
    iallow = layer.fac * (layer.aw @ hmax + layer.ab[:, None]) + 2.0 * TINY * inz + _inexact_tiny(layer, hmax, boxes)
    iallow = iallow + radius + layer.fac * np.abs(shift)
    lo = np.maximum(lo, push_down(il, iallow))
    hi = np.minimum(hi, push_up(iu, iallow))
    return lin, lo, hi


def rounding_terms(layer: LayerArrays, pre, with_br: bool = True) -> tuple:
    """``(shift, radius)`` of the layer's bias from its interval bias (``br``, unless not
    ``with_br``) and from the rounding of its inputs (``rounding``, with the previous
    pre-activation bounds ``pre``): 0.0 where there is none."""
    shift = 0.0
    radius = 0.0 if layer.br is None or not with_br else layer.br[:, None]
    if layer.rounding is not None:
        if pre is None:
            raise ValueError("a layer that reads rounded values needs the previous layer's bounds")
        shift, rad = bias_interval(layer.rounding, pre[0], pre[1], layer.fac)
        radius = radius + rad
    return shift, radius


def relu_step(z: Lin, zmag: np.ndarray, lo: np.ndarray, hi: np.ndarray, boxes: Boxes) -> NetState:
    """Linear bounds of ``relu(z)`` from those of ``z`` and its concrete bounds: the identity
    where stably active, 0 where stably inactive, else ``a z <= relu(z) <= s (z - l)`` with the
    chord slope ``s >= u / (u - l)`` and the parallel lower slope ``a = min(s, 1)``."""
    act = lo >= 0.0
    unst = ~act & (hi > 0.0)
    den = np.where(unst, hi - lo, 1.0)
    s = np.where(unst, hi / den, 0.0) * SLOPE_INFLATE
    a = np.minimum(s, 1.0)
    ku = np.where(act, 1.0, s)
    kl = np.where(act, 1.0, a)
    fac = boxes.fac
    tiny = boxes.tiny[None, :] * unst
    allow_u = np.where(unst, fac * s * (zmag + np.abs(lo)), 0.0) + tiny
    allow_l = np.where(unst, fac * a * zmag, 0.0) + tiny
    cu = push_up(ku * z.cu - np.where(unst, s * lo, 0.0), allow_u)
    cl = push_down(kl * z.cl, allow_l)
    lin = Lin(kl[:, None, :] * z.al, cl, ku[:, None, :] * z.au, cu)
    return NetState(lin, lin.magnitude(boxes.xmax1), np.maximum(lo, 0.0), np.maximum(hi, 0.0))


def make_state(lin: Lin, lo, hi, boxes: Boxes) -> NetState:
    return NetState(lin, lin.magnitude(boxes.xmax1), lo, hi)


def diff_affine_step(dl: DiffArrays, lg: LayerArrays, delta: NetState, hf: NetState,
                 boxes: Boxes, lf: LayerArrays | None = None, pre_f=None, pre_g=None
                 ) -> tuple[Lin, np.ndarray, np.ndarray]:
    """Bounds of ``dz = W_g delta + D h_f + db`` (linear, and concrete intersected with
    interval arithmetic)."""
    gp, gn, dp, dn = lg.wp, lg.wn, dl.dp, dl.dn
    # (the interval biases br are in db_err already; only the per-node rounding is added here)
    sf, rf = rounding_terms(lf, pre_f, False) if lf is not None else (0.0, 0.0)
    sg, rg = rounding_terms(lg, pre_g, False)
    db = dl.db[:, None] + (sf - sg)
    round_rad = rf + rg
    al = _gemm(gp, delta.lin.al) + _gemm(gn, delta.lin.au) + _gemm(dp, hf.lin.al) + _gemm(dn, hf.lin.au)
    au = _gemm(gp, delta.lin.au) + _gemm(gn, delta.lin.al) + _gemm(dp, hf.lin.au) + _gemm(dn, hf.lin.al)
    cl = gp @ delta.lin.cl + gn @ delta.lin.cu + dp @ hf.lin.cl + dn @ hf.lin.cu + db
    cu = gp @ delta.lin.cu + gn @ delta.lin.cl + dp @ hf.lin.cu + dn @ hf.lin.cl + db
    hmax = np.minimum(hf.mag, np.maximum(np.abs(hf.lo), np.abs(hf.hi)))
    dmax = np.minimum(delta.mag, np.maximum(np.abs(delta.lo), np.abs(delta.hi)))
    fac = max(lg.fac, boxes.fac)
    nz = (lg.nzw @ (delta.mag > 0) + dl.nzd @ (hf.mag > 0) + (dl.db != 0)[:, None]) > 0
    allow = fac * (lg.aw @ delta.mag + dl.ad @ hf.mag + dl.adb[:, None]) + boxes.tiny[None, :] * nz
    if dl.has_err:  # exact error terms of D, db and of inexact W_g, times bounds of |h_f|, |delta|
        extra = dl.d_err @ hmax + dl.db_err[:, None] + dl.g_err @ dmax
        enz = (dl.nz_err @ (hmax > 0) + (dl.db_err != 0)[:, None]) > 0
        allow = allow + extra * (1.0 + fac) + 2.0 * TINY * (enz | (not lg.exact))
        if not lg.exact:
            allow = allow + _inexact_tiny(lg, dmax, boxes)
    allow = allow + round_rad + fac * np.abs(sf - sg)
    lin = Lin(al, push_down(cl, allow), au, push_up(cu, allow))
    lo, hi = boxes.lower(lin.al, lin.cl), boxes.upper(lin.au, lin.cu)
    il = gp @ delta.lo + gn @ delta.hi + dp @ hf.lo + dn @ hf.hi + db
    iu = gp @ delta.hi + gn @ delta.lo + dp @ hf.hi + dn @ hf.lo + db
    iabs = np.maximum(np.abs(delta.lo), np.abs(delta.hi))
    habs = np.maximum(np.abs(hf.lo), np.abs(hf.hi))
    inz = (lg.nzw @ (iabs > 0) + dl.nzd @ (habs > 0) + (dl.db != 0)[:, None]) > 0
    iallow = fac * (lg.aw @ iabs + dl.ad @ habs + dl.adb[:, None]) + 2.0 * TINY * inz
    if dl.has_err:
        iallow = iallow + (dl.d_err @ habs + dl.db_err[:, None] + dl.g_err @ iabs) * (1.0 + fac)
        iallow = iallow + 2.0 * TINY * (1.0 + habs.sum(0) + iabs.sum(0))[None, :]
    iallow = iallow + round_rad + fac * np.abs(sf - sg)
    lo = np.maximum(lo, push_down(il, iallow))
    hi = np.minimum(hi, push_up(iu, iallow))
    return lin, lo, hi


def diff_relu_step(dz: Lin, dzmag, dl, du, zf: Lin, lf, uf, zg: Lin, lg, ug, boxes: Boxes) -> NetState:
    """Linear and concrete bounds of ``delta = relu(z_f) - relu(z_g)`` by the stability cases of
    the two units (see the module docstring)."""
    off = (uf <= 0.0) & (ug <= 0.0)
    on = (lf >= 0.0) & (lg >= 0.0)
    f_only = (lf >= 0.0) & (ug <= 0.0) & ~off
    g_only = (uf <= 0.0) & (lg >= 0.0) & ~off
    gen = ~(off | on | f_only | g_only)
    pos = gen & (dl >= 0.0)
    neg = gen & (du <= 0.0) & ~pos
    mix = gen & ~(pos | neg)
    den = np.where(mix, du - dl, 1.0)
    su = np.where(mix, du / den, 0.0) * SLOPE_INFLATE  # max(0, dz) <= su (dz - dl)
    t = np.where(mix, -dl / den, 0.0) * SLOPE_INFLATE  # min(0, dz) >= t (dz - du)
    fac, tiny = boxes.fac, boxes.tiny[None, :] * mix
    zero3 = np.zeros_like(dz.al)

    def pick3(cases):
        out = zero3
        for mask, arr in cases:
            out = np.where(mask[:, None, :], arr, out)
        return out

    def pick2(cases):
        out = np.zeros_like(dl)
        for mask, arr in cases:
            out = np.where(mask, arr, out)
        return out

    au = pick3([(on | pos, dz.au), (f_only, zf.au), (g_only, -zg.al), (mix, su[:, None, :] * dz.au)])
    al = pick3([(on | neg, dz.al), (f_only, zf.al), (g_only, -zg.au), (mix, t[:, None, :] * dz.al)])
    cu = pick2([(on | pos, dz.cu), (f_only, zf.cu), (g_only, -zg.cl),
                (mix, push_up(su * dz.cu - su * dl, fac * su * (dzmag + np.abs(dl)) + tiny))])
    cl = pick2([(on | neg, dz.cl), (f_only, zf.cl), (g_only, -zg.cu),
                (mix, push_down(t * dz.cl - t * du, fac * t * (dzmag + np.abs(du)) + tiny))])
    lin = Lin(al, cl, au, cu)
    # concrete bounds: by case, intersected with relu(l_f) - relu(u_g) <= delta <= relu(u_f) - relu(l_g)
    lo = pick2([(on, dl), (f_only, lf), (g_only, -ug), (gen, np.minimum(dl, 0.0))])
    hi = pick2([(on, du), (f_only, uf), (g_only, -lg), (gen, np.maximum(du, 0.0))])
    lo = np.maximum(lo, np.where(off, 0.0, sub_down(np.maximum(lf, 0.0), np.maximum(ug, 0.0))))
    hi = np.minimum(hi, np.where(off, 0.0, sub_up(np.maximum(uf, 0.0), np.maximum(lg, 0.0))))
    return make_state(lin, lo, hi, boxes)


def lin_difference(a: Lin, amag, b: Lin, bmag, boxes: Boxes) -> Lin:
    """Linear bounds of ``a - b`` from those of ``a`` and ``b`` (same quantities' count)."""
    allow = boxes.fac * (amag + bmag) + boxes.tiny[None, :]
    return Lin(a.al - b.au, push_down(a.cl - b.cu, allow), a.au - b.al, push_up(a.cu - b.cl, allow))


def bisect(lo: np.ndarray, hi: np.ndarray, dim: np.ndarray, mid: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """Each box ``[lo[b], hi[b]]`` (rows) cut at ``mid[b, dim[b]]`` on input ``dim[b]``: the
    ``[2B, n]`` bounds of the lower halves, then the upper halves. The halves share the cut
    (a float), so together they cover each box."""
    r = np.arange(len(dim))
    cut = mid[r, dim]
    left_hi = hi.copy()
    left_hi[r, dim] = cut
    right_lo = lo.copy()
    right_lo[r, dim] = cut
    return np.concatenate([lo, right_lo]), np.concatenate([left_hi, hi])
