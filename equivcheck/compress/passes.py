"""The compression passes: each takes the working layers and removes or folds stable units.

The working representation is a list of :class:`WorkingLayer` s: the weights of each layer (the
stored floats while they are unchanged, exact rationals once a fold recomputed them), the
original units it still holds, the sound bounds of their pre-activations on the domain and their
:class:`~equivcheck.core.options.UnitStability`. Every pass keeps the network's function on the
domain *exactly* (the rounding to stored floats happens later, in
:mod:`equivcheck.compress.rounding`):

* :func:`remove_inactive`: a stably inactive unit outputs 0 on the domain; drop it and the next
  layer's column for it;
* :func:`collapse`: when a hidden layer has no unit left, the output is the constant the
  remaining layers compute from 0;
* :func:`fold_dependent`: a stably active unit whose augmented row ``[w_i, b_i]`` is an exact
  rational combination of other active units' rows (and of ``[0, 1]``) equals that combination
  of their outputs on the domain, so the next layer absorbs it. Dependence is found modulo a
  prime (independence there implies independence over the rationals); every fold is verified in
  exact arithmetic;
* :func:`fold_layers`: a layer whose units are all stably active is a linear map on the domain;
  multiply it into the next layer when that does not increase the parameter count.

Sparse layers (lowered convolutions; :mod:`equivcheck.compress.sparse_weights`) stay sparse
through the removals (rows and columns deleted, exact values kept aligned); the folds need dense
exact arithmetic, so they touch a sparse layer only when its dense copy is small
(``FOLD_DENSE_ENTRIES``), else they skip it with a note.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from equivcheck.bounds.interval import LayerBounds
from equivcheck.bounds.stability_report import StabilityReport
from equivcheck.compress import sparse_weights as spw
from equivcheck.core.deadline import Deadline
from equivcheck.core.exact import (
    echelon_mod_p,
    exact_matmul,
    independent_rows_mod_p,
    relu_exact,
    scaled_integers,
    solve_exact,
)
from equivcheck.core.network import Affine, Layer, Network
from equivcheck.core.options import UnitStability
from equivcheck.core.rational import as_fraction_array, nearest_float_array

MAX_EXACT_BASIS = 160  # larger dependent sets are not folded (exact solve too slow)


@dataclass
class WorkingLayer:
    """One layer while the passes run (mutable: the passes edit it in place)."""

    # exact weights: float64 arrays while they are the stored floats (exact values, converted
    # to rationals only where a fold needs them), else object arrays of Fraction; or a sparse
    # csr_array of the stored floats, with ``exact`` its exact values when they differ
    w: np.ndarray  # (out, in)
    b: np.ndarray  # (out,)
    relu: bool
    name: str
    origin: int  # index of the original layer whose units these are
    units: list[int]  # original unit indices kept
    lower: np.ndarray  # sound bounds of the pre-activations on the domain (float)
    upper: np.ndarray
    status: list[UnitStability] | None  # ReLU layers only
    recomputed: bool = False  # weights changed from the stored ones
    exact: np.ndarray | None = None  # sparse ``w`` only: exact values aligned with ``w.data``


def working_layers(net: Network, report: StabilityReport,
                   bounds: list[LayerBounds]) -> list[WorkingLayer]:
    """The working copy of ``net`` with the analysis' verdicts and the sound ``bounds``."""
    out = []
    for k, layer in enumerate(net.layers):
        rep = report.layer(k) if layer.relu else None
        exact_float = layer.affine.is_exact_float
        sparse = layer.affine.is_sparse
        out.append(WorkingLayer(
            w=layer.weight.copy() if exact_float or sparse else layer.affine.rational_weight().copy(),
            b=layer.bias.copy() if exact_float else layer.affine.rational_bias().copy(),
            relu=layer.relu, name=layer.name or f"layer{k}", origin=k,
            units=list(range(layer.out_dim)), lower=bounds[k].lower.copy(),
            upper=bounds[k].upper.copy(),
            status=[UnitStability(s.value) for s in rep.status] if rep else None,
            exact=layer.affine.rational_weight().copy() if sparse and layer.affine.exact_weight is not None else None,
        ))
    return out


def _drop_units(layers: list[WorkingLayer], k: int, keep: list[int]) -> None:
    """Keep only the units ``keep`` of layer ``k`` (and the next layer's columns for them)."""
    cur = layers[k]
    if spw.is_sparse(cur.w):
        cur.w, cur.exact = spw.select(cur.w, cur.exact, rows=keep)
    else:
        cur.w = cur.w[keep]
    cur.b = cur.b[keep]
    cur.units = [cur.units[i] for i in keep]
    cur.lower, cur.upper = cur.lower[keep], cur.upper[keep]
    cur.status = [cur.status[i] for i in keep] if cur.status is not None else None
    nxt = layers[k + 1]
    if spw.is_sparse(nxt.w):
        nxt.w, nxt.exact = spw.select(nxt.w, nxt.exact, cols=keep)
    else:
        nxt.w = nxt.w[:, keep]


def _densify(lay: WorkingLayer) -> None:
    """Replace a sparse working layer's weight by its dense exact copy (object array)."""
    if spw.is_sparse(lay.w):
        lay.w, lay.exact = spw.dense_exact(lay.w, lay.exact), None


def remove_inactive(layers: list[WorkingLayer]) -> dict[int, int]:
    """Drop every stably inactive unit; per original layer, how many went."""
    removed = {}
    for k, lay in enumerate(layers[:-1]):
        if not lay.relu:
            continue
        keep = [i for i, s in enumerate(lay.status) if s is not UnitStability.INACTIVE]
        removed[lay.origin] = len(lay.units) - len(keep)
        _drop_units(layers, k, keep)
    return removed


def collapse(layers: list[WorkingLayer], in_dim: int) -> list[WorkingLayer] | None:
    """If some hidden layer has no unit left, the network is constant on the domain: the one
    affine layer (zero weights) that outputs that constant, exactly; else None."""
    empty = [k for k, lay in enumerate(layers[:-1]) if lay.relu and len(lay.units) == 0]
    if not empty:
        return None
    k = empty[0]
    h = np.zeros(0, dtype=object)
    for lay in layers[k + 1:]:
        z = spw.exact_apply(lay.w, lay.exact, h) + as_fraction_array(lay.b)
        h = relu_exact(z) if lay.relu else z
    last = layers[-1]
    w = np.empty((len(h), in_dim), dtype=object)
    w.fill(Fraction(0))
    return [WorkingLayer(w=w, b=h, relu=False, name="constant", origin=last.origin,
                         units=last.units, lower=last.lower, upper=last.upper, status=None,
                         recomputed=any(lay.recomputed for lay in layers) or k + 1 < len(layers) - 1)]


def fold_dependent(layers: list[WorkingLayer], notes: list[str],
                   deadline: Deadline | None = None) -> dict[int, int]:
    """Fold stably active units whose augmented rows depend exactly on other active units
    (as many as ``deadline`` leaves time for; a fold is all or nothing per unit). Returns, per
    original layer, how many units were folded; ``notes`` get what was skipped and why."""
    folded = {}
    for k, lay in enumerate(layers[:-1]):
        if not lay.relu:
            continue
        active = [i for i, s in enumerate(lay.status) if s is UnitStability.ACTIVE]
        folded[lay.origin] = 0
        if not active:
            continue
        if deadline is not None and deadline.expired():
            notes.append(f"layer {lay.origin}: active units not examined for folding (time limit)")
            continue
        nxt = layers[k + 1]
        sparse = spw.is_sparse(lay.w) or spw.is_sparse(nxt.w)
        if sparse and not spw.small_enough((len(active), lay.w.shape[1] + 1), nxt.w.shape):
            notes.append(f"layer {lay.origin}: {len(active)} active unit(s) of a sparse layer not "
                         "examined for folding (the exact dependence search needs them dense)")
            continue
        if sparse:  # small: dense exact copies, kept only if a unit is folded
            saved = (lay.w, lay.exact, nxt.w, nxt.exact)
            _densify(lay)
            _densify(nxt)
        removed = _fold_layer(layers, k, active, notes, deadline)
        if sparse and not removed:
            lay.w, lay.exact, nxt.w, nxt.exact = saved
        elif sparse:  # the layers that were sparse stay sparse (exact values kept aligned)
            for layer, was in ((lay, saved[0]), (nxt, saved[2])):
                if spw.is_sparse(was):
                    layer.w, layer.exact = spw.from_dense_exact(layer.w)
        if removed:
            keep = [i for i in range(len(lay.units)) if i not in set(removed)]
            _drop_units(layers, k, keep)
            folded[lay.origin] = len(removed)
    return folded


def _fold_layer(layers: list[WorkingLayer], k: int, active: list[int], notes: list[str],
                deadline: Deadline | None) -> list[int]:
    """Fold the dependent ``active`` units of layer ``k`` into layer ``k + 1`` (edited in
    place); the indices of the units folded (the caller drops them)."""
    lay = layers[k]
    n_in = lay.w.shape[1]
    const = np.array([Fraction(0)] * n_in + [Fraction(1)], dtype=object)
    w_act, b_act = as_fraction_array(lay.w[active]), as_fraction_array(lay.b[active])
    rows = [const] + [np.concatenate([w_act[r], [b_act[r]]]) for r in range(len(active))]
    ints = np.array([scaled_integers(row)[0] for row in rows], dtype=object)
    brows = independent_rows_mod_p(ints)  # row 0, the constant, is always one of them
    dependent = sorted(set(range(len(rows))) - set(brows))
    if not dependent:
        return []
    if len(brows) > MAX_EXACT_BASIS:
        notes.append(f"layer {lay.origin}: {len(dependent)} possibly dependent active units not "
                     f"folded (exact basis of {len(brows)} rows too large)")
        return []
    # the basis rows restricted to these columns are nonsingular mod p, hence over Q
    pivs = echelon_mod_p(ints[brows])
    m = [[rows[br][p] for br in brows] for p in pivs]
    removed = []
    next_w = as_fraction_array(layers[k + 1].w).copy()
    next_b = as_fraction_array(layers[k + 1].b).copy()
    for r in dependent:
        if deadline is not None and deadline.expired():
            notes.append(f"layer {lay.origin}: folding stopped by the time limit")
            break
        a = solve_exact(m, [rows[r][p] for p in pivs])
        if a is None:
            continue
        combo = sum((a[t] * rows[br] for t, br in enumerate(brows)), np.zeros(n_in + 1, dtype=object))
        if not all(x == y for x, y in zip(combo, rows[r])):
            continue  # dependent modulo p only
        i = active[r - 1]
        col = next_w[:, i].copy()
        for t, br in enumerate(brows):
            if a[t] == 0:
                continue
            if br == 0:
                next_b = next_b + a[t] * col
            else:
                j = active[br - 1]
                next_w[:, j] = next_w[:, j] + a[t] * col
        removed.append(i)
    if removed:
        layers[k + 1].w, layers[k + 1].b = next_w, next_b
        layers[k + 1].recomputed = True
    return removed


def fold_layers(layers: list[WorkingLayer], deadline: Deadline | None = None,
                notes: list[str] | None = None) -> tuple[list[WorkingLayer], set[int]]:
    """Fold every hidden layer whose units are all stably active into the next layer (while
    ``deadline`` leaves time, and when that does not add parameters); the new layers and the
    original indices of the folded ones. Two sparse layers compose into a sparse one (exact
    product, at most ``FOLD_PRODUCT_TERMS`` products); a sparse layer with a dense one only
    when the dense product is small (``FOLD_DENSE_ENTRIES``). Folds skipped for their size get
    a note in ``notes``."""
    out = list(layers)
    folded: set[int] = set()
    k = 0
    while k < len(out) - 1:
        lay, nxt = out[k], out[k + 1]
        if deadline is not None and deadline.expired():
            break
        if lay.relu and lay.status and all(s is UnitStability.ACTIVE for s in lay.status):
            merged = _fold_pair(lay, nxt, notes)
            if merged is not None:
                folded.add(lay.origin)
                out[k:k + 2] = [merged]
                continue
        k += 1
    return out, folded


def _fold_pair(lay: WorkingLayer, nxt: WorkingLayer, notes: list[str] | None) -> WorkingLayer | None:
    """``nxt`` after the linear map ``lay`` (all units active) as one exact layer, or None."""
    n_out, n_mid, n_in = nxt.w.shape[0], lay.w.shape[0], lay.w.shape[1]
    before = _entries(lay.w) + lay.b.size + _entries(nxt.w) + nxt.b.size
    lb, nb = as_fraction_array(lay.b), as_fraction_array(nxt.b)
    if spw.is_sparse(lay.w) and spw.is_sparse(nxt.w):
        prod = spw.exact_product(nxt.w, nxt.exact, lay.w, lay.exact)
        if prod is None:
            if notes is not None:
                notes.append(f"layer {lay.origin}: all units stably active, not folded into the "
                             "next layer (the exact sparse product needs too many products)")
            return None
        if prod[0].nnz + n_out > before:
            return None
        w, exact = prod
        b = spw.exact_apply(nxt.w, nxt.exact, lb) + nb
    elif n_out * n_in + n_out > before:
        return None
    elif (spw.is_sparse(lay.w) or spw.is_sparse(nxt.w)) and not spw.small_enough(
            (n_out, n_in), lay.w.shape, nxt.w.shape):
        if notes is not None:
            notes.append(f"layer {lay.origin}: all units stably active, not folded into the next "
                         f"layer (a dense {n_out:,} x {n_in:,} exact product is too large)")
        return None
    else:
        nw, lw = spw.dense_exact(nxt.w, nxt.exact), spw.dense_exact(lay.w, lay.exact)
        w, exact = exact_matmul(nw, lw), None
        b = exact_matmul(nw, lb.reshape(-1, 1)).ravel() + nb if n_mid else nb
    return WorkingLayer(w=w, b=b, relu=nxt.relu, name=f"{lay.name}+{nxt.name}", origin=nxt.origin,
                        units=nxt.units, lower=nxt.lower, upper=nxt.upper, status=nxt.status,
                        recomputed=True, exact=exact)


def _entries(w) -> int:
    """Stored entries of a working weight (every entry of a dense one)."""
    return int(w.nnz) if spw.is_sparse(w) else int(w.size)


def to_network(net: Network, layers: list[WorkingLayer]) -> Network:
    """The working layers as a :class:`Network` with ``net``'s interface: exact rational weights
    are kept exactly (with their nearest floats) where they are not floats already."""
    out = []
    for lay in layers:
        if spw.is_sparse(lay.w):
            out.append(Layer(spw.sparse_affine(lay.w, lay.exact, lay.b), lay.relu, lay.name))
            continue
        if lay.w.dtype != object and lay.b.dtype != object:  # the stored floats: exact
            out.append(Layer(Affine(lay.w.copy(), lay.b.copy()), lay.relu, lay.name))
            continue
        wf, bf = nearest_float_array(lay.w), nearest_float_array(lay.b)
        exact = all(Fraction(float(x)) == x for x in lay.w.ravel()) and all(
            Fraction(float(x)) == x for x in lay.b.ravel())
        aff = Affine(wf, bf) if exact else Affine(wf, bf, lay.w, lay.b)
        out.append(Layer(aff, lay.relu, lay.name))
    return net.with_layers(out, note=None)
