"""Open nodes handed back by an UNKNOWN search, and taken again as a starting frontier.

:func:`~equivcheck.engine.search.check_box` stopped for time or nodes hands back (when asked:
``hand_back=True``) every node it left open (``extra["frontier"]``), so that a later call (``check_box(start=...)``, on this
machine or on a Dask worker) goes on where it stopped. The form is a tuple of arrays with one row
per node, picklable and cut into batches by rows (:func:`take`):

* input splitting: ``(lo [F, n], hi [F, n])``, float boxes;
* ReLU splitting: ``(lo [F, n], hi [F, n], phases [F, P] uint8, rows [F, Q])``, the node's box
  (the part's float enclosure: ReLU splitting does not cut boxes), the ReLU phases that hold on
  it, as bits (:func:`phases_of`: for each hidden ReLU unit of f and of g, "pre-activation >= 0"
  and "pre-activation <= 0"; about 130 bytes a node for MNIST 256x2), and the bounds it
  inherited (float64 rows, see :mod:`equivcheck.engine.branch`; 25 kB a node for MNIST 256x2).
  A start of three arrays (phases, no rows) is also taken: the same nodes, but their bounds are
  computed afresh, which loses what the ancestors' tighter bounds (optimised slopes) gave:
  measured on the 40-input pair of ``tests/test_engine_frontier.py``, nodes resumed from
  phases alone left a node the bounds could not close (0.0812 against a tolerance the one-shot
  search proved), so the rows are handed back too.

Why this is sound: a node's set of points is its box intersected with the phases fixed on its
path from the root (``z >= 0`` or ``z <= 0`` per unit split), and the bounds it carries (the
inherited rows, see :mod:`equivcheck.engine.branch`) hold on that set, so they may be handed
on with it and intersected again by the call that resumes it. :func:`phases_of` reads
the phases off those rows: every fixed phase is there (an "active" split set the lower bound to
at least 0, an "inactive" one the upper bound to at most 0, and rows only tighten), and every
other bit is a sign constraint the node's rigorous bounds already imply on its set. So the
node rebuilt by :func:`phase_rows` (no bounds but those signs) has exactly the same points, and
the open nodes handed back, with the nodes proved, cover what the search was given (phase
splits partition a node: ``z >= 0`` or ``z <= 0``).
"""

from __future__ import annotations

import numpy as np

from equivcheck.engine.backward import History
from equivcheck.engine.branch import PRIOR_KEYS, Layout
from equivcheck.engine.model import PairModel


def relu_columns(layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """The packed columns of the lower and of the upper pre-activation bounds of every hidden
    ReLU unit of f and g (same order in both)."""
    lo, hi = [], []
    model = layout.model
    for net, layers in (("f", model.f), ("g", model.g)):
        for k, lay in enumerate(layers):
            if lay.relu:
                c_lo, c_hi = layout.cols(net, k)
                lo.append(c_lo)
                hi.append(c_hi)
    if not lo:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(lo), np.concatenate(hi)


def phases_of(prior: np.ndarray | None, count: int, layout: Layout) -> np.ndarray:
    """``[count, P]`` uint8: the phase bits of ``count`` nodes whose inherited bound rows are
    ``prior`` (None: no phases fixed): for each ReLU unit, lower bound >= 0 ("active"), then for
    each, upper bound <= 0 ("inactive"), packed 8 to a byte."""
    lo_c, hi_c = relu_columns(layout)
    if prior is None:
        bits = np.zeros((count, 2 * len(lo_c)), bool)
    else:
        bits = np.concatenate([prior[:, lo_c] >= 0.0, prior[:, hi_c] <= 0.0], axis=1)
    return np.packbits(bits, axis=1)


def phase_rows(phases: np.ndarray, rows: np.ndarray, layout: Layout) -> np.ndarray:
    """``rows`` (bound rows that constrain nothing, ``[F, Q]``) with the ReLU signs of
    ``phases`` (see :func:`phases_of`) set: lower bound 0 for "active", upper bound 0 for
    "inactive"."""
    lo_c, hi_c = relu_columns(layout)
    u = len(lo_c)
    phases = np.asarray(phases, dtype=np.uint8)
    if phases.shape != (len(rows), (2 * u + 7) // 8):
        raise ValueError(f"phases of shape {phases.shape} do not fit {len(rows)} nodes of "
                         f"{u} ReLU units")
    bits = np.unpackbits(phases, axis=1, count=2 * u).astype(bool)
    rows = rows.copy()
    rows[:, lo_c] = np.where(bits[:, :u], np.maximum(rows[:, lo_c], 0.0), rows[:, lo_c])
    rows[:, hi_c] = np.where(bits[:, u:], np.minimum(rows[:, hi_c], 0.0), rows[:, hi_c])
    return rows


def count(frontier) -> int:
    """The number of nodes in a handed-back frontier (0 for None)."""
    return 0 if frontier is None else len(frontier[0])


def take(frontier, rows) -> tuple:
    """The nodes ``rows`` (indices or a slice) of a handed-back frontier, in the same form."""
    return tuple(np.asarray(a)[rows] for a in frontier)


def pack(hist: History, same: bool) -> np.ndarray:
    """Every layer's bounds of a batch as rows ``[B, Q]`` (children inherit them)."""
    keys = PRIOR_KEYS if same else PRIOR_KEYS[:4]
    return np.concatenate([np.concatenate(getattr(hist, key), axis=0) for key in keys], axis=0).T


def unpack(rows: np.ndarray, model: PairModel) -> History:
    """The inverse of :func:`pack` for the networks' layer widths."""
    hist = History()
    keys = PRIOR_KEYS if model.same_shape else PRIOR_KEYS[:4]
    cols = rows.T
    at = 0
    for key in keys:
        layers = model.g if key.startswith("g") else model.f
        out = getattr(hist, key)
        for lay in layers:
            out.append(cols[at:at + lay.out_dim])
            at += lay.out_dim
    return hist


def no_prior(count: int, model: PairModel) -> np.ndarray:
    """Rows that constrain nothing: -inf for every lower bound, +inf for every upper one."""
    hist = History()
    keys = PRIOR_KEYS if model.same_shape else PRIOR_KEYS[:4]
    for key in keys:
        layers = model.g if key.startswith("g") else model.f
        val = -np.inf if key.endswith("lo") else np.inf
        getattr(hist, key).extend(np.full((lay.out_dim, count), val) for lay in layers)
    return pack(hist, model.same_shape)


def handed(lo: np.ndarray, hi: np.ndarray, prior: np.ndarray | None, relu: bool,
           layout: Layout) -> tuple:
    """Nodes in the form :func:`~equivcheck.engine.search.check_box` takes as ``start``: their
    float boxes, and under ReLU splitting their phases and inherited bound rows (``prior``,
    ``[F, Q]``; None: nothing inherited, no phase fixed)."""
    if not relu:
        return lo, hi
    rows = no_prior(len(lo), layout.model) if prior is None else prior
    return lo, hi, phases_of(rows, len(lo), layout), rows
