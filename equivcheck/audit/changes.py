"""What pruning changed, layer by layer and unit by unit, and whether each removed or changed
hidden unit was stably inactive on the domain (harmless) by sound bounds."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from equivcheck.audit.results import ChangeKind, LayerChange, UnitChange
from equivcheck.bounds.methods import sound_bounds
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Domain
from equivcheck.core.network import Network
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
    for k, (lf, lg) in enumerate(zip(f.layers, g.layers)):
        wf, wg = lf.affine.rational_weight(), lg.affine.rational_weight()
        same_w = wf == wg
        zeroed = int(np.sum((wg == 0) & (wf != 0)))
        changed_w = int(np.sum(~same_w)) - zeroed
        row_changed = ~np.all(same_w, axis=1) | (lf.affine.rational_bias() != lg.affine.rational_bias())
        if lf.relu:
            in_gone = np.all(wg == 0, axis=1) & ~np.all(wf == 0, axis=1)
            nxt_f = f.layers[k + 1].affine.rational_weight()
            nxt_g = g.layers[k + 1].affine.rational_weight()
            out_gone = np.all(nxt_g == 0, axis=0) & ~np.all(nxt_f == 0, axis=0)
            removed = in_gone | out_gone
            bias_g = lg.affine.rational_bias()
            n_rem = n_rem_ok = n_chg = n_chg_ok = 0
            for i in range(lf.out_dim):
                orig = st_f[k][i]
                if removed[i]:
                    # incoming gone: the pruned unit is the constant relu(b); 0 iff b <= 0
                    pruned_zero = bool(out_gone[i]) or bias_g[i] <= 0
                    ok = orig is inactive and pruned_zero
                    reach = None if ok else _reach(up_f[k][i], bias_g[i], bool(out_gone[i]),
                                                   nxt_f[:, i], nxt_g[:, i])
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
        layers.append(LayerChange(k, lf.out_dim, lf.relu, int(wf.size), zeroed, changed_w,
                                  n_rem, n_rem_ok, n_chg, n_chg_ok))
    return tuple(layers), tuple(units), None
