"""Rigorous bounds on the unit-wise difference of two networks of the same shape.

When ``a`` and ``b`` have the same layer widths (a pruned, quantized or fine-tuned copy), unit i
of layer l in ``a`` is compared with unit i of layer l in ``b``. Propagating bounds of
``delta = h_a - h_b`` directly, rather than subtracting two independent intervals, keeps the
correlation between the networks: nearly equal networks get nearly zero difference bounds
(ReluDiff / NeuroDiff style).

Affine step, with ``D = W_a - W_b``::

    z_a - z_b = W_b (h_a - h_b) + D h_a + (b_a - b_b)

ReLU step: ``relu(z_a) - relu(z_b)`` lies between ``min(0, dz)`` and ``max(0, dz)`` (relu is
monotone and 1-Lipschitz) and between the differences of the value ranges, with the exact cases
when both units are stable. With ``symbolic``, every layer is also bounded by back-substituting
two streams of linear coefficients (on ``delta`` and on ``h_a``) to the input.

Every float sum is rounded outward, every product is covered by an explicit ``gamma(n)``
allowance, and the float errors of ``W_a - W_b`` and ``b_a - b_b`` are carried exactly (TwoSum),
so the bounds enclose the exact differences of the stored weights over the exact box. Used by
the prover (epsilon proofs without search, implied constraints in the encoding) and by the audit
(certified deviation bounds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from equivcheck.bounds.interval import TINY, LayerBounds, affine_interval, gamma
from equivcheck.bounds.symbolic import (
    abs_weight,
    absolute,
    box_max,
    chunk_rows,
    relax_entries,
    relu_relaxation,
    sparse_relaxation,
    times,
    unit_rows,
)
from equivcheck.core import matrix
from equivcheck.core.deadline import Deadline
from equivcheck.core.matrix import csr, is_sparse
from equivcheck.core.network import Network
from equivcheck.core.rational import two_diff


@dataclass(frozen=True, eq=False)
class DiffBounds:
    """Bounds of ``z_a - z_b`` (pre-activation) and ``h_a - h_b`` (after the activation)."""

    pre_lower: np.ndarray
    pre_upper: np.ndarray
    post_lower: np.ndarray
    post_upper: np.ndarray


def _down(x: np.ndarray) -> np.ndarray:
    """One ulp down: below the exact result of the single rounded operation that gave ``x``."""
    return np.nextafter(x, -np.inf)


def _up(x: np.ndarray) -> np.ndarray:
    return np.nextafter(x, np.inf)


def same_shape(a: Network, b: Network) -> bool:
    """True when unit i of every layer of ``a`` can be compared with unit i of ``b``.

    Both networks must hold exact float weights (the error of ``W_a - W_b`` is then exact).
    """
    return len(a.layers) == len(b.layers) and all(
        la.weight.shape == lb.weight.shape and la.relu == lb.relu
        and la.affine.is_exact_float and lb.affine.is_exact_float
        for la, lb in zip(a.layers, b.layers)
    )


def weight_diff(wa, wb):
    """TwoSum of ``wa - wb`` (``(d, err)`` with ``d + err == wa - wb`` exactly, entrywise): dense
    for two dense weights, else two canonical ``csr_array`` s (every entry stored in neither is
    0 in both results, and each stored entry is the same float operation as in the dense
    case)."""
    if not (matrix.is_sparse(wa) or matrix.is_sparse(wb)):
        return two_diff(wa, wb)
    d, err = two_diff(matrix.as_csr(wa), matrix.as_csr(wb))
    return matrix.as_csr(d), matrix.as_csr(err)


def _plus(x, y):
    """``x + y`` for dense or sparse matrices of one shape (sparse only when both are)."""
    if is_sparse(x) and is_sparse(y):
        return csr(x + y)
    return np.asarray((x.toarray() if is_sparse(x) else x) + (y.toarray() if is_sparse(y) else y))


def _relu_difference(zl, zu, ba: LayerBounds, bb: LayerBounds) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of ``relu(z_a) - relu(z_b)`` from bounds of ``z_a - z_b`` and of each side."""
    al, au, bl, bu = ba.lower, ba.upper, bb.lower, bb.upper
    nl, nu = np.minimum(zl, 0.0), np.maximum(zu, 0.0)
    nl = np.maximum(nl, _down(np.maximum(al, 0.0) - np.maximum(bu, 0.0)))
    nu = np.minimum(nu, _up(np.maximum(au, 0.0) - np.maximum(bl, 0.0)))
    both_active = (al >= 0.0) & (bl >= 0.0)
    nl = np.where(both_active, np.maximum(nl, zl), nl)
    nu = np.where(both_active, np.minimum(nu, zu), nu)
    both_off = (au <= 0.0) & (bu <= 0.0)
    return np.where(both_off, 0.0, nl), np.where(both_off, 0.0, nu)


def difference_bounds(
    a: Network,
    b: Network,
    lo: np.ndarray,
    hi: np.ndarray,
    bounds_a: list[LayerBounds],
    bounds_b: list[LayerBounds],
    symbolic: bool = False,
    deadline: Deadline | None = None,
) -> list[DiffBounds] | None:
    """Sound bounds of ``z_a - z_b`` and ``h_a - h_b`` on every layer, or None.

    ``lo``/``hi`` enclose the input box and ``bounds_a``/``bounds_b`` are sound pre-activation
    bounds over it. With ``symbolic``, each layer's interval is intersected with a linear
    back-substitution bound (tighter, slower) until ``deadline`` passes. None when the networks
    do not have the same shape (see :func:`same_shape`).
    """
    if not same_shape(a, b):
        return None
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    h_lo, h_hi = lo, hi
    d_lo = d_hi = np.zeros(len(lo))
    diffs: dict = {}  # per layer of a sparse pair: the TwoSums and |.| the chunks all read
    pre: list[tuple[np.ndarray, np.ndarray]] = []
    post: list[tuple[np.ndarray, np.ndarray]] = []
    out: list[DiffBounds] = []
    for k, (la, lb) in enumerate(zip(a.layers, b.layers)):
        d_w, err = weight_diff(la.weight, lb.weight)
        exact_dw = not np.any(matrix.values(err))
        db = la.bias - lb.bias
        zero_b = np.zeros(la.out_dim)
        t1l, t1u = affine_interval(lb.weight, zero_b, d_lo, d_hi)
        t2l, t2u = affine_interval(d_w, zero_b, h_lo, h_hi, exact_weights=exact_dw)
        zl = _down(_down(t1l + t2l) + _down(db))
        zu = _up(_up(t1u + t2u) + _up(db))
        ba, bb = bounds_a[k], bounds_b[k]
        zl = np.maximum(zl, _down(ba.lower - bb.upper))
        zu = np.minimum(zu, _up(ba.upper - bb.lower))
        if symbolic and k > 0 and not (deadline is not None and deadline.expired()):
            n = la.out_dim
            if not (la.affine.is_sparse or lb.affine.is_sparse):
                eye = np.eye(n)
                ub = _diff_back_substitute(a, b, k, np.vstack([eye, -eye]), bounds_a, bounds_b,
                                           pre, post, lo, hi)
                zl, zu = np.maximum(zl, -ub[n:]), np.minimum(zu, ub[:n])
            else:  # chunks of units with sparse coefficients (see bounds.symbolic), until the
                # deadline (the units left keep their interval bounds)
                step = chunk_rows(a, k)
                for s0 in range(0, n, step):
                    if s0 and deadline is not None and deadline.expired():
                        break
                    m = min(step, n - s0)
                    ub = _diff_back_substitute(a, b, k, unit_rows(n, s0, s0 + m), bounds_a,
                                               bounds_b, pre, post, lo, hi, diffs)
                    zl[s0:s0 + m] = np.maximum(zl[s0:s0 + m], -ub[m:])
                    zu[s0:s0 + m] = np.minimum(zu[s0:s0 + m], ub[:m])
        pre.append((zl, zu))
        if la.relu:
            d_lo, d_hi = _relu_difference(zl, zu, ba, bb)
        else:
            d_lo, d_hi = zl, zu
        post.append((d_lo, d_hi))
        out.append(DiffBounds(zl, zu, d_lo, d_hi))
        h_lo, h_hi = (np.maximum(ba.lower, 0.0), np.maximum(ba.upper, 0.0)) if la.relu else (ba.lower, ba.upper)
    return out


def _relax_difference(nu: np.ndarray, dl: np.ndarray, du: np.ndarray, both_active: np.ndarray,
                      both_off: np.ndarray):
    """``nu_i delta_i <= rho_i dz_i + r_i`` for ``delta = relu(a) - relu(b)``, ``dz = a - b``.

    ``delta`` lies between 0 and ``dz`` (relu is monotone and 1-Lipschitz), so (dz, delta) lies
    in the hull of (dl, dl), (dl, 0), (0, 0), (du, 0), (du, du); ``r`` is the maximum of the
    linear function ``nu delta - rho dz`` over these points, valid for any ``rho`` (chosen as the
    chord of ``max(dz, 0)`` or ``min(dz, 0)``). Both units active: ``delta = dz``; both
    inactive: ``delta = 0``."""
    rho, r = _relax_difference_entries(nu, dl, du, both_active, both_off)
    dmax = np.maximum(np.abs(dl), np.abs(du))
    return rho, r.sum(axis=1), (np.abs(nu) + np.abs(rho)) @ dmax


def _relax_difference_entries(nu, dl, du, both_active, both_off):
    """Entrywise ``(rho, r)`` of :func:`_relax_difference` (the vectors broadcast to ``nu``)."""
    unst = (dl < 0.0) & (du > 0.0)
    den = np.where(unst, du - dl, 1.0)
    a_up = np.where(dl >= 0.0, 1.0, np.where(du <= 0.0, 0.0, du / den))
    a_lo = np.where(dl >= 0.0, 0.0, np.where(du <= 0.0, 1.0, -dl / den))
    rho = np.where(nu > 0.0, nu * a_up, nu * a_lo)
    rho = np.where(both_active, nu, np.where(both_off, 0.0, rho))
    zero = np.zeros_like(dl)
    r = None
    for dz, d in ((dl, dl), (dl, zero), (zero, zero), (du, zero), (du, du)):
        cand = nu * d - rho * dz
        r = cand if r is None else np.maximum(r, cand)
    return rho, np.where(both_active | both_off, 0.0, r)


def _layer_diffs(f: Network, g: Network, j: int, cache: dict | None):
    """``(D, D_err, |D|, |D_err|, d_b, b_err)`` of layer ``j`` (TwoSums of ``W_f - W_g`` and
    ``b_f - b_g``), kept in ``cache`` when one is given."""
    if cache is not None and j in cache:
        return cache[j]
    fj, gj = f.layers[j], g.layers[j]
    d_w, d_err = weight_diff(fj.weight, gj.weight)
    d_b, b_err = two_diff(fj.bias, gj.bias)
    got = (d_w, d_err, absolute(d_w), absolute(d_err), d_b, b_err)
    if cache is not None:
        cache[j] = got
    return got


def _diff_back_substitute(f: Network, g: Network, k: int, c: np.ndarray, bf, bg, pre, post,
                          lo: np.ndarray, hi: np.ndarray, cache: dict | None = None) -> np.ndarray:
    """Rigorous upper bounds of the rows of ``c @ (z_f,k - z_g,k)`` over ``[lo, hi]``.

    Back-substitutes two streams of coefficients, on ``delta_j = h_f,j - h_g,j`` and on
    ``h_f,j``, through ``dz_j = W_g delta_{j-1} + D_j h_f,{j-1} + db_j`` and
    ``z_f,j = W_f h_f,{j-1} + b_f,j``, relaxing each ReLU with :func:`_relax_difference` and
    :func:`~equivcheck.bounds.symbolic.relu_relaxation` (from the sound bounds ``pre``/``post`` of the differences and ``bf`` of
    f). As in :func:`equivcheck.bounds.symbolic.back_substitute`, every float product and sum is covered
    by ``gamma(N)`` times a magnitude accumulated in ``mag``; the float errors of ``W_f - W_g``
    and ``b_f - b_g`` (exact, from TwoSum) are added as ``slack``. The result holds for the
    exact network whatever the float coefficients came out as.
    """
    xmax = np.maximum(np.abs(lo), np.abs(hi))

    def hmax(j: int) -> np.ndarray:  # bound of |h_f,j| (j = -1: the input)
        return xmax if j < 0 else np.maximum(bf[j].upper, 0.0)

    def dmax(j: int) -> np.ndarray:  # bound of |delta_j|
        return np.zeros_like(xmax) if j < 0 else np.maximum(np.abs(post[j][0]), np.abs(post[j][1]))

    c = csr(c, dtype=np.float64) if is_sparse(c) else np.atleast_2d(np.asarray(c, dtype=np.float64))
    lg = g.layers[k]
    d_w, d_err, abs_dw, abs_err, d_b, b_err = _layer_diffs(f, g, k, cache)
    abs_c = absolute(c)
    val = np.asarray(c @ d_b)
    mag = np.asarray(abs_c @ np.abs(d_b))
    slack = abs_c @ np.abs(b_err) + times(abs_c, abs_err) @ hmax(k - 1)
    nu_d, nu_h = times(c, lg.weight), times(c, d_w)
    mag += times(abs_c, abs_weight(lg)) @ dmax(k - 1) + times(abs_c, abs_dw) @ hmax(k - 1)
    ops = matrix.stored_entries(lg.weight) + matrix.stored_entries(d_w)  # terms of the products
    for j in range(k - 1, -1, -1):
        fj, gj = f.layers[j], g.layers[j]
        dl, du = pre[j]
        fb, gb = bf[j], bg[j]
        both_active = (fb.lower >= 0.0) & (gb.lower >= 0.0)
        both_off = (fb.upper <= 0.0) & (gb.upper <= 0.0)
        if is_sparse(nu_d):
            rho_d, r_d, m_d = relax_entries(nu_d, _relax_difference_entries, dl, du,
                                            both_active, both_off)
        else:
            rho_d, r_d, m_d = _relax_difference(nu_d, dl, du, both_active, both_off)
        relax = sparse_relaxation if is_sparse(nu_h) else relu_relaxation
        rho_h, r_h, m_h = relax(nu_h, fb.lower, fb.upper)  # CROWN relaxation
        val += r_d + r_h
        mag += m_d + m_h
        d_w, d_err, abs_dw, abs_err, d_b, b_err = _layer_diffs(f, g, j, cache)
        abs_d, abs_h = absolute(rho_d), absolute(rho_h)
        val += rho_d @ d_b + rho_h @ fj.bias
        mag += abs_d @ np.abs(d_b) + abs_h @ np.abs(fj.bias)
        slack += abs_d @ np.abs(b_err) + times(abs_d, abs_err) @ hmax(j - 1)
        nu_d = times(rho_d, gj.weight)
        nu_h = _plus(times(rho_d, d_w), times(rho_h, fj.weight))
        mag += times(abs_d, abs_weight(gj)) @ dmax(j - 1)
        mag += (times(abs_d, abs_dw) @ hmax(j - 1)
                + times(abs_h, abs_weight(fj)) @ hmax(j - 1))
        ops += (matrix.stored_entries(fj.weight) + matrix.stored_entries(gj.weight)
                + matrix.stored_entries(d_w) + 8 * fj.out_dim)
    val += box_max(nu_h, lo, hi)
    mag += absolute(nu_h) @ xmax
    n = max(max(layer.in_dim, layer.out_dim) for layer in f.layers) + 12 * len(f.layers) + 24
    factor = 4.0 * gamma(2 * n)
    return val + factor * (mag + slack) + slack + 8.0 * (ops + len(lo)) * TINY


