"""A quantized network against its copy with dead units removed: the same function, structurally.

``compress`` of a statically quantized model removes the units whose value after their ReLU and
quantizer is 0 on the whole domain, and keeps every other weight, bias and quantizer (in order).
:func:`same_quantized_units` recognises such a pair on a box without any search: each unit of
``b`` is the next not-yet-matched unit of ``a`` with exactly the same row (over the inputs both
networks keep), bias, activation and quantizer, and every unit of ``a`` that ``b`` does not have is
dead on the box (:func:`~equivcheck.bounds.quant_dead.dead_units`: with its pre-activation in
rigorous bounds ``[l, u]``, ``Q(f(l)) = Q(f(u)) = 0`` for its activation ``f``, ReLU or none;
``Q(f(.))`` is monotone, so the unit's value is exactly 0 everywhere on the box), and
the columns that read it in the next layer contribute nothing: both networks compute their
outputs through the same units, exactly. The output layer keeps every unit, in order. Dynamic
quantizers (their scale depends on every value of the tensor) are not taken: the check answers
no, and the prover goes on.
"""

from __future__ import annotations

import numpy as np

from equivcheck.bounds.quant_dead import dead_units, domain_bounds
from equivcheck.core import matrix
from equivcheck.core.domain import Box, Domain
from equivcheck.core.quantized import QuantizedNetwork, Quantizer, float_layers


def same_quantized_units(a, b, box: Box) -> tuple[bool, int, int]:
    """``(same, shared, dead)``: whether ``b`` is ``a`` with units removed that are dead on
    ``box`` (see the module doc), how many units of ``b`` are units of ``a``, and how many of
    ``a``'s were found dead. Any doubt (a dynamic quantizer, a mismatch) is
    ``(False, 0, 0)``."""
    if not (isinstance(a, QuantizedNetwork) and isinstance(b, QuantizedNetwork)):
        return False, 0, 0
    qa, qb = (a.input_quant, *a.quant), (b.input_quant, *b.quant)
    if any(q is not None and not isinstance(q, Quantizer) for q in qa + qb):
        return False, 0, 0
    fa, fb = float_layers(a).layers, float_layers(b).layers
    if len(fa) != len(fb) or a.in_dim != b.in_dim or a.out_dim != b.out_dim:
        return False, 0, 0
    if not _same_unit_quant(a.input_quant, b.input_quant, np.arange(a.in_dim), np.arange(b.in_dim)):
        return False, 0, 0
    dom = Domain((box,), "<box>")
    dead_masks, _ = dead_units(a, domain_bounds(a, dom)[0], dom)
    kept = np.arange(a.in_dim)  # a's units (of the layer before) that b keeps, in b's order
    shared = dead_count = 0
    for k, (la, lb) in enumerate(zip(fa, fb)):
        if la.relu != lb.relu:
            return False, 0, 0
        last = k == len(fa) - 1
        dead = dead_masks[k]
        match = _match_rows(la, lb, kept, dead, a.quant[k], b.quant[k])
        if match is None or (last and not np.array_equal(match, np.arange(la.out_dim))):
            return False, 0, 0
        shared += len(match)
        dead_count += la.out_dim - len(match)
        kept = match
    return True, shared, dead_count


def _same_unit_quant(qa: Quantizer | None, qb: Quantizer | None, ia, ib) -> bool:
    """Whether ``qa`` on units ``ia`` and ``qb`` on units ``ib`` round alike (or both are None)."""
    if qa is None or qb is None:
        return qa is None and qb is None
    return (qa.qmin == qb.qmin and qa.qmax == qb.qmax
            and bool(np.all(qa.scale[ia] == qb.scale[ib]))
            and bool(np.array_equal(qa.zero_point[ia], qb.zero_point[ib])))


def _values(layer) -> tuple:
    """The layer's weights (dense rows, or values aligned with a sparse weight's stored entries)
    and biases, as exact values: the floats when they are exact, else rationals."""
    aff = layer.affine
    if aff.is_exact_float:
        return (aff.weight.data if aff.is_sparse else aff.weight), aff.bias
    return aff.rational_weight(), aff.rational_bias()


def _row(w, vals, i: int, pos: np.ndarray) -> tuple[np.ndarray, list]:
    """Row ``i`` of ``w`` (values ``vals``) over the columns ``pos`` maps to b's columns (``-1``:
    dropped), as sorted (columns, values) with zeros left out."""
    if matrix.is_sparse(w):
        lo, hi = w.indptr[i], w.indptr[i + 1]
        cols, row = pos[w.indices[lo:hi]], vals[lo:hi]
    else:
        cols, row = pos, vals[i]
    keep = np.flatnonzero((cols >= 0) & np.array([v != 0 for v in row], dtype=bool))
    order = keep[np.argsort(cols[keep], kind="stable")]
    return cols[order], [row[k] for k in order]


def _match_rows(la, lb, kept: np.ndarray, dead: np.ndarray, qa, qb) -> np.ndarray | None:
    """For each unit of ``lb`` in order, the index of the next unit of ``la`` with the same row
    over the kept inputs, bias and quantizer; every unit of ``la`` passed over must be ``dead``.
    None when that fails."""
    pos = np.full(la.in_dim, -1, dtype=np.int64)
    pos[kept] = np.arange(len(kept))
    ident = np.arange(lb.in_dim)
    (wa, ba), (wb, bb) = _values(la), _values(lb)
    match = np.empty(lb.out_dim, dtype=np.int64)
    i = 0
    for j in range(lb.out_dim):
        cb, vb = _row(lb.weight, wb, j, ident)
        while True:
            if i >= la.out_dim:
                return None
            ca, va = _row(la.weight, wa, i, pos)
            if (ba[i] == bb[j] and np.array_equal(ca, cb) and va == vb
                    and _same_unit_quant(qa, qb, [i], [j])):
                break
            if not dead[i]:
                return None
            i += 1
        match[j] = i
        i += 1
    if not dead[i:].all():
        return None
    return match
