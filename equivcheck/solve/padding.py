"""A smaller network laid out in the shape of a larger one: :func:`pad_to`.

A model and its copy with units removed (``compress``, by hand) have different shapes, so the
engine bounds them as two separate streams, which are loose on a CNN: when the copy's file also
rounds the kept weights (composed convolutions and residual sums that float32 cannot store), the
prover's unit sharing (:func:`equivcheck.solve.encode.same_units`) does not apply either, and
the proof timed out (VNN-COMP's resnet_2b against its compressed copy: UNKNOWN after 60 s).

:func:`pad_to` puts each unit of ``b`` at the position of the unit of ``a`` whose weights (on the
units ``b`` kept) and bias round to ``b``'s, and gives every other position a zero unit: zero
weights, zero bias and zero outgoing weights. A zero unit outputs ``relu(0) = 0`` and contributes
nothing, so the padded network computes exactly ``b``'s function **whatever the matching**: the
matching only decides how close the pair is unit by unit, hence how tight the engine's
differential bounds of the same-shaped pair are. A claim proved or refuted for ``(a, padded)`` is
the same claim for ``(a, b)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from equivcheck.core import matrix
from equivcheck.core.network import Affine, Layer, Network
from equivcheck.errors import UnsupportedModelError


def pad_to(a: Network, b: Network) -> Network | None:
    """``b`` with zero units where ``a`` has units ``b`` lacks, each unit of ``b`` at the place
    of the unit of ``a`` that rounds to it (float32 or float64); None when the depths, inputs,
    outputs or activations differ, when ``b`` is not smaller, when a layer of ``b`` holds weights
    that are not its floats (exact rationals of a composition), when some unit of ``b`` matches
    no unit of ``a``, or when a layer is too large to compare densely."""
    if (len(a.layers) != len(b.layers) or a.in_dim != b.in_dim or a.out_dim != b.out_dim
            or any(la.relu != lb.relu for la, lb in zip(a.layers, b.layers))
            or any(lb.out_dim > la.out_dim for la, lb in zip(a.layers, b.layers))
            or any(lb.affine.exact_weight is not None or lb.affine.exact_bias is not None
                   for lb in b.layers)):
        return None
    prev = np.arange(a.in_dim)  # where each input of b's layer sits among a's
    places = []
    last = len(a.layers) - 1
    for k, (la, lb) in enumerate(zip(a.layers, b.layers)):
        if k == last:
            place = np.arange(lb.out_dim)  # outputs are not permuted
        else:
            try:
                wa = matrix.dense(la.weight)[:, prev]
                wb = matrix.dense(lb.weight)
            except UnsupportedModelError:  # too large to compare densely
                return None
            place = _match(wa, la.bias, wb, lb.bias)
            if place is None:
                return None
        places.append(place)
        prev = place
    return place_units(a, b, places)


def place_units(shape: Network, stored: Network, places: Sequence[Sequence[int]]) -> Network | None:
    """``stored`` in the shape of ``shape``: its units of layer ``k`` at the positions
    ``places[k]`` of ``shape``'s layer ``k``, zero units (zero weights and bias, zero outgoing
    weights) everywhere else; the same function as ``stored``, exactly. Sparse layers stay
    sparse (their stored entries move to their new rows and columns: memory linear in them).
    None when a sparse layer of ``stored`` holds weights that are not its floats (their exact
    values would have to move too)."""
    out = []
    prev = np.arange(shape.in_dim, dtype=np.int64)
    for units, st, orig in zip(places, stored.layers, shape.layers):
        units = np.asarray(units, dtype=np.int64)
        b = np.zeros(orig.out_dim)
        b[units] = st.bias
        if matrix.is_sparse(st.weight) or matrix.is_sparse(orig.weight):
            if not st.affine.is_exact_float:
                return None
            sw = matrix.as_csr(st.weight).tocoo()
            w = matrix.csr((sw.data, (units[sw.row], prev[sw.col])), shape=orig.weight.shape)
        else:
            w = np.zeros_like(orig.weight, dtype=np.float64)
            w[np.ix_(units, prev)] = st.weight
        out.append(Layer(Affine(w, b), st.relu, st.name))
        prev = units
    return stored.with_layers(out)


def _match(wa: np.ndarray, ba: np.ndarray, wb: np.ndarray, bb: np.ndarray) -> np.ndarray | None:
    """For each row of ``(wb, bb)`` a distinct row of ``(wa, ba)`` that rounds to it (to
    float32, or equal in float64), or None."""
    free: dict[bytes, list[int]] = {}
    a32 = np.ascontiguousarray(np.c_[wa, ba].astype(np.float32))
    a64 = np.ascontiguousarray(np.c_[wa, ba])
    for i in range(len(a32)):
        free.setdefault(b"32" + a32[i].tobytes(), []).append(i)
        free.setdefault(b"64" + a64[i].tobytes(), []).append(i)
    used = np.zeros(len(a32), bool)
    out = np.empty(len(wb), dtype=np.int64)
    rows = np.c_[wb, bb]
    for j, row in enumerate(rows):
        r32 = row.astype(np.float32)
        key = b"32" + np.ascontiguousarray(r32).tobytes() if np.array_equal(r32, row) else None
        cands = (free.get(key, []) if key is not None else []) + free.get(
            b"64" + np.ascontiguousarray(row).tobytes(), [])
        pick = next((i for i in cands if not used[i]), None)
        if pick is None:
            return None
        used[pick] = True
        out[j] = pick
    return out
