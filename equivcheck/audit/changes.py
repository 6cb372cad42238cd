"""What pruning changed, layer by layer and unit by unit, and whether each removed or changed
hidden unit was stably inactive on the domain (harmless) by sound bounds.

Sparse layers (``csr_array`` weights, :mod:`equivcheck.core.matrix`) are compared entry by entry
on the union of the two stored patterns (an entry neither network stores is 0 in both), in
exact arithmetic, with memory linear in the stored entries; a layer's weight count is then the
number of entries either network stores.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from equivcheck.audit.results import ChangeKind, LayerChange, UnitChange
from equivcheck.bounds.methods import sound_bounds
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Domain
from equivcheck.core.network import Affine, Network
from equivcheck.core.options import BoundMethod, UnitStability


def domain_stability(net: Network, domain: Domain, method: BoundMethod | str = BoundMethod.INTERVAL,
                     deadline: Deadline | None = None) -> list[list[UnitStability]]:
    """Per layer, the stability of each unit on the whole domain by sound bounds: active or
    inactive only when so on every box, else unstable."""
    return domain_bounds(net, domain, method, deadline)[0]


def domain_bounds(net: Network, domain: Domain, method: BoundMethod | str = BoundMethod.INTERVAL,
                  deadline: Deadline | None = None
                  ) -> tuple[list[list[UnitStability]], list[np.ndarray]]:
    """:func:`domain_stability`, and per layer a sound upper bound of each unit's
    pre-activation over the whole domain (the largest over its boxes)."""
    per_box, uppers = [], []
    for box in domain.boxes:
        bl = sound_bounds(net, box.lower_float(), box.upper_float(), BoundMethod.parse(method),
                          deadline)
        per_box.append([np.sign(lb.stability()) for lb in bl])  # -1 inactive, 0, 1 active
        uppers.append([lb.upper for lb in bl])
    out = []
    for k in range(len(net.layers)):
        st = np.vstack([pb[k] for pb in per_box])
        code = np.where(np.all(st == st[0], axis=0), st[0], 0)
        out.append([_BY_SIGN[int(c)] for c in code])
    return out, [np.max(np.vstack([u[k] for u in uppers]), axis=0)
                 for k in range(len(net.layers))]


def _reach(upper: float, bias_g: Fraction, out_gone: bool, w_f: np.ndarray,
           w_g: np.ndarray) -> float:
    """A bound, rounded up, on how far removing one unit moves any next-layer pre-activation:
    the original unit outputs r in [0, upper]; the pruned one 0 (outgoing weights gone) or the
    constant relu(bias_g); its outgoing weights are ``w_f`` and ``w_g`` (exact rationals). The
    shift ``w_g c - w_f r`` is linear in r, so its largest size is at r = 0 or r = upper."""
    r_hi = Fraction(max(float(upper), 0.0))
    c = Fraction(0) if out_gone else max(bias_g, Fraction(0))
    worst = max((abs(wg * c - wf * r) for wf, wg in zip(w_f, w_g) for r in (Fraction(0), r_hi)),
                default=Fraction(0))
    near = float(worst)
    return float(np.nextafter(near, np.inf)) if Fraction(near) < worst else near


_BY_SIGN = {-1: UnitStability.INACTIVE, 0: UnitStability.UNSTABLE, 1: UnitStability.ACTIVE}


def unit_changes(f: Network, g: Network, domain: Domain,
                 method: BoundMethod | str = BoundMethod.INTERVAL,
                 deadline: Deadline | None = None
                 ) -> tuple[tuple[LayerChange, ...], tuple[UnitChange, ...], str | None]:
    """Compare the networks layer by layer: per layer the weights zeroed/changed, and every
    hidden unit whose incoming weights are all zero in ``g`` (or whose outgoing weights are all
    zero) — *removed* — or whose incoming weights or bias changed — *changed*. Returns
    (layers, units, note); the note says why nothing was compared when the architectures differ.
    """
    if len(f.layers) != len(g.layers) or any(
        lf.weight.shape != lg.weight.shape or lf.relu != lg.relu
        for lf, lg in zip(f.layers, g.layers)
    ):
        return (), (), (
            f"architectures differ ({f.description} vs {g.description}): no unit-by-unit "
            "comparison"
        )
    st_f, up_f = domain_bounds(f, domain, method, deadline)
    st_g = domain_stability(g, domain, method, deadline)
    inactive = UnitStability.INACTIVE
    layers, units = [], []
    nxt = _Entries(f.layers[0].affine, g.layers[0].affine)
    for k, (lf, lg) in enumerate(zip(f.layers, g.layers)):
        cur = nxt
        nxt = _Entries(f.layers[k + 1].affine, g.layers[k + 1].affine) if k + 1 < len(f.layers) else None
        row_changed = cur.rows_changed() | (lf.affine.rational_bias() != lg.affine.rational_bias())
        if lf.relu:
            in_gone = cur.rows_zero("g") & ~cur.rows_zero("f")
            out_gone = nxt.cols_zero("g") & ~nxt.cols_zero("f")
            removed = in_gone | out_gone
            bias_g = lg.affine.rational_bias()
            n_rem = n_rem_ok = n_chg = n_chg_ok = 0
            for i in range(lf.out_dim):
                orig = st_f[k][i]
                if removed[i]:
                    # incoming gone: the pruned unit is the constant relu(b); 0 iff b <= 0
                    pruned_zero = bool(out_gone[i]) or bias_g[i] <= 0
                    ok = orig is inactive and pruned_zero
                    reach = None
                    if not ok:
                        nf, ng = nxt.column(i)
                        reach = _reach(up_f[k][i], bias_g[i], bool(out_gone[i]), nf, ng)
                    units.append(UnitChange(k, i, ChangeKind.REMOVED, orig, ok, reach))
                    n_rem += 1
                    n_rem_ok += ok
                elif row_changed[i]:
                    ok = orig is inactive and st_g[k][i] is inactive
                    units.append(UnitChange(k, i, ChangeKind.CHANGED, orig, ok))
                    n_chg += 1
                    n_chg_ok += ok
        else:
            n_rem = n_rem_ok = n_chg_ok = 0
            n_chg = int(np.sum(row_changed))
        layers.append(LayerChange(k, lf.out_dim, lf.relu, cur.count, cur.zeroed(),
                                  cur.changed(), n_rem, n_rem_ok, n_chg, n_chg_ok))
    return tuple(layers), tuple(units), None


class _Entries:
    """The exact weights of one layer of both networks, entry by entry: every entry of a dense
    pair (as before), or, when either weight is sparse, the union of the stored patterns (an
    entry outside it is 0 in both). ``vf``/``vg`` are exact (floats when both layers' floats are
    their exact weights, else Fractions), at positions ``rows``/``cols``."""

    def __init__(self, af: Affine, ag: Affine) -> None:
        self.shape = af.weight.shape
        if not (af.is_sparse or ag.is_sparse):
            wf, wg = af.rational_weight(), ag.rational_weight()
            self.dense = True
            self.vf, self.vg = wf, wg
            self.count = int(wf.size)
            return
        self.dense = False
        exact = af.is_exact_float and ag.is_exact_float
        pf, pg = _stored(af, exact), _stored(ag, exact)
        cols = self.shape[1]
        keys = np.union1d(pf[0], pg[0])
        zero = 0.0 if exact else Fraction(0)
        self.vf = np.full(len(keys), zero, dtype=np.float64 if exact else object)
        self.vg = self.vf.copy()
        self.vf[np.searchsorted(keys, pf[0])] = pf[1]
        self.vg[np.searchsorted(keys, pg[0])] = pg[1]
        self.rows, self.cols = keys // cols, keys % cols
        self.count = len(keys)

    def zeroed(self) -> int:
        return int(np.sum((self.vg == 0) & (self.vf != 0)))

    def changed(self) -> int:
        return int(np.sum(self.vf != self.vg)) - self.zeroed()

    def rows_changed(self) -> np.ndarray:
        diff = self.vf != self.vg
        if self.dense:
            return ~np.all(~diff, axis=1)
        return np.bincount(self.rows[diff], minlength=self.shape[0]) > 0

    def rows_zero(self, which: str) -> np.ndarray:
        v = self.vf if which == "f" else self.vg
        if self.dense:
            return np.all(v == 0, axis=1)
        return np.bincount(self.rows[v != 0], minlength=self.shape[0]) == 0

    def cols_zero(self, which: str) -> np.ndarray:
        v = self.vf if which == "f" else self.vg
        if self.dense:
            return np.all(v == 0, axis=0)
        return np.bincount(self.cols[v != 0], minlength=self.shape[1]) == 0

    def column(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Column ``i``'s exact weights in f and g (the stored entries only, when sparse: the
        others are 0 in both and move nothing)."""
        if self.dense:
            return self.vf[:, i], self.vg[:, i]
        at = self.cols == i
        return self.vf[at], self.vg[at]


def _stored(aff: Affine, exact: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(keys, values)`` of a layer's stored entries (``row * cols + col``, sorted, and their
    exact values: floats when ``exact``, else Fractions); a dense weight's nonzero entries."""
    w = aff.weight
    if not aff.is_sparse:
        vals = w if exact else aff.rational_weight()
        r, c = np.nonzero(vals != 0)
        return r.astype(np.int64) * w.shape[1] + c, vals[r, c]
    # (Affine keeps a sparse weight canonical: sorted, aligned with its exact values)
    r = np.repeat(np.arange(w.shape[0], dtype=np.int64), np.diff(w.indptr))
    vals = w.data if exact else aff.rational_weight()
    return r * w.shape[1] + w.indices, vals
