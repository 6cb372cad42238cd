"""Upper bounds on the number of linear regions of a ReLU network, as exact Python integers.

A *linear region* is an activation pattern (which ReLUs are active, layer by layer) whose set of
inputs has a non-empty interior. The bounds:

* :func:`theorem1_bound` (Serra, Tjandraatmadja and Ramalingam, ICML 2018, Theorem 1),
  :func:`activation_pattern_bound` (2^N) and :func:`shallow_bound` (one layer of N units);
* :func:`refined_bound` tightens Theorem 1 with what the weights say on a domain (stable units do
  not split regions; weight-matrix ranks limit the dimension each layer passes on), in the spirit
  of Serra and Ramalingam, AAAI 2020.

Only the layers followed by a ReLU are counted (``Network.hidden_widths``); a final affine layer
without a ReLU does not split the input space, so it is not part of the bounds. The exact count
itself is :func:`equivcheck.regions.counting.count_regions`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal

import numpy as np

from equivcheck.bounds.methods import sound_bounds
from equivcheck.core.domain import Box, Domain
from equivcheck.core.exact import integer_affine, rank_exact, rank_mod_p
from equivcheck.core.network import Network
from equivcheck.core.options import BoundMethod
from equivcheck.errors import InputError
from equivcheck.io.domains import parse_domain

MAX_WIDTH = 1_000_000  # input dimension and each ReLU layer
MAX_UNITS = 1_000_000  # ReLU units in all layers together (2^N then has 301,030 digits)
MAX_BOUND_WORK = 4 * 10**9  # big-integer work of the exact bounds, in cells x bits (~5 s)


def _check_widths(in_dim: int, widths: Sequence[int]) -> None:
    """Raise :class:`InputError` unless the widths are positive, at most :data:`MAX_WIDTH`
    each, at most :data:`MAX_UNITS` ReLU units in all, and the exact bounds cost at most
    :data:`MAX_BOUND_WORK` (see :func:`bound_work`)."""
    if int(in_dim) < 1:
        raise InputError(f"input dimension must be at least 1, got {in_dim}")
    for w in widths:
        if int(w) < 1:
            raise InputError(f"layer widths must be at least 1, got {list(widths)[:20]}")
    big = [int(w) for w in (in_dim, *widths) if int(w) > MAX_WIDTH]
    if big:
        raise InputError(f"width {big[0]:,} is above the maximum {MAX_WIDTH:,}")
    units = sum(int(w) for w in widths)
    if units > MAX_UNITS:
        raise InputError(f"{units:,} ReLU units in all: the maximum is {MAX_UNITS:,}")
    work = bound_work(in_dim, widths)
    if work > MAX_BOUND_WORK:
        raise InputError(
            f"input dimension {int(in_dim):,} with ReLU layers of {units:,} units: the exact "
            f"bounds are too large to compute (estimated work {work:.2g}, the maximum is "
            f"{MAX_BOUND_WORK:.2g}: use fewer or narrower layers)"
        )


def bound_work(in_dim: int, widths: Sequence[int]) -> int:
    """An estimate of the big-integer work of :func:`bounds_for_widths`: the cells of the
    tables :func:`_recursive_bound` and :func:`shallow_bound` fill, times the bits of the
    largest number (``N``, the ReLU units: every bound is at most ``2^N``)."""
    units = sum(int(w) for w in widths)
    cells = min(int(in_dim), units) + 1  # the shallow bound's binomials
    m = int(in_dim)
    for level, n in enumerate(int(w) for w in widths):
        cells += min(m, n) + 1 + (1 if level == 0 else m + 1)
        m = min(m, n)
    return cells * max(units, 1)


@dataclass(frozen=True)
class _LayerSpec:
    """What the recursive bound needs to know about one ReLU layer.

    ``split``: units that can split a region; ``split_rank``: an upper bound on the dimension of
    the space in which those units' hyperplanes act; ``pass_rank``: an upper bound on the
    dimension of the layer's output image; ``always_active``: units active wherever they matter.
    """

    split: int
    split_rank: int
    pass_rank: int
    always_active: int


def _recursive_bound(dim: int, layers: Sequence[_LayerSpec]) -> int:
    """``R_1(dim)`` with ``R_{L+1} = 1`` and, for layer ``l`` with u = split units,
    ``R_l(d) = sum_{j=0}^{min(d, split_rank, u)} C(u, j) R_{l+1}(min(d, pass_rank, a + u - j))``.

    With ``u = split_rank = pass_rank = n_l`` and ``a = 0`` this is Theorem 1 of Serra et al.
    (2018): ``j_l <= min(n_0, n_1 - j_1, ..., n_{l-1} - j_{l-1}, n_l)``.

    Exact integers, computed layer by layer from the last as a table of ``R_l(d)`` over the
    ``d`` that can reach layer ``l`` (``d <= min(dim, pass ranks before l)``; only ``d = dim``
    at the first layer). With ``D = min(d, pass_rank)`` the argument is ``D`` for
    ``j <= a + u - D`` and ``a + u - j`` after, so each ``R_l(d)`` is two prefix sums over
    ``j``: linear work per layer instead of the quadratic double sum.
    """
    dim = int(dim)
    caps = [dim]  # caps[l]: the largest d that reaches layer l
    for spec in layers:
        caps.append(min(caps[-1], int(spec.pass_rank)))
    nxt = [1] * (caps[-1] + 1)  # R_{L+1}(d) = 1
    for level in range(len(layers) - 1, -1, -1):
        spec = layers[level]
        u, a = int(spec.split), int(spec.always_active)
        sr, pr, cap = int(spec.split_rank), int(spec.pass_rank), caps[level]
        jmax = max(0, min(cap, sr, u))
        binom = [1] * (jmax + 1)  # C(u, j), j = 0..jmax
        for j in range(1, jmax + 1):
            binom[j] = binom[j - 1] * (u - j + 1) // j
        pc = list(itertools.accumulate(binom))  # pc[m] = sum_{j <= m} C(u, j)
        jlo = max(0, a + u - caps[level + 1])  # from here on R_{l+1}(a + u - j) is in the table
        pt = [0] * (jmax + 2)  # pt[m + 1] = sum_{jlo <= j <= m} C(u, j) R_{l+1}(a + u - j)
        for j in range(jmax + 1):
            pt[j + 1] = pt[j] + (binom[j] * nxt[a + u - j] if j >= jlo else 0)
        cur = []
        for d in range(cap + 1) if level else (cap,):
            big_d = min(d, pr)
            top = min(d, sr, u)
            k0 = a + u - big_d  # j <= k0: the argument is big_d
            total = nxt[big_d] * pc[min(top, k0)] if top >= 0 and k0 >= 0 else 0
            first = max(k0 + 1, 0)
            if first <= top:
                total += pt[top + 1] - pt[first]
            cur.append(total)
        nxt = cur
    return nxt[-1] if layers else 1


def theorem1_bound(in_dim: int, widths: Sequence[int]) -> int:
    """Theorem 1 of Serra, Tjandraatmadja and Ramalingam (ICML 2018), as an exact integer.

    The number of linear regions of a rectifier network with input dimension ``n_0 = in_dim`` and
    ReLU layers of widths ``n_1..n_L`` is at most ``sum_{j in J} prod_l C(n_l, j_l)`` with
    ``J = {j : 0 <= j_l <= min(n_0, n_1 - j_1, ..., n_{l-1} - j_{l-1}, n_l)}``. Tight for
    ``n_0 = 1``. ``widths`` are the ReLU layers only (no linear output layer).
    """
    _check_widths(in_dim, widths)
    specs = [_LayerSpec(n, n, n, 0) for n in widths]
    return _recursive_bound(int(in_dim), specs)


def activation_pattern_bound(widths: Sequence[int]) -> int:
    """``2^N`` with ``N`` the number of ReLUs: one region per activation pattern at most."""
    return 2 ** sum(int(w) for w in widths)


def shallow_bound(in_dim: int, units: int) -> int:
    """``sum_{j=0}^{n_0} C(N, j)``: the regions of N hyperplanes in general position in R^{n_0},
    i.e. the maximum for one hidden layer of ``N`` units (Zaslavsky's theorem)."""
    n, total, c = int(units), 0, 1
    for j in range(min(int(in_dim), n) + 1):
        total += c
        c = c * (n - j) // (j + 1)  # C(n, j + 1)
    return total


def scientific(n: int, digits: int = 3) -> str:
    """An exact integer in scientific notation, correctly rounded half-even (``1.234e+56``),
    in time that grows slowly with the size of ``n`` (no full decimal conversion)."""
    n = int(n)
    guard = digits + 6
    exp10 = int((abs(n).bit_length() - 1) * 0.30102999566398120)  # floor(log10 |n|), or one less
    shift = exp10 - guard
    if shift <= 0:
        return format(Decimal(n), f".{digits}e")
    q, r = divmod(abs(n), 10**shift)  # q has guard + 1 or + 2 digits
    sticky = 1 if r else 0  # a tenth digit that breaks ties the way the remainder does
    head = Decimal(q * 10 + sticky).scaleb(shift - 1)
    return format(head.copy_sign(Decimal(-1 if n < 0 else 1)), f".{digits}e")


# --------------------------------------------------------------------------------------------
# ranks

MAX_EXACT_RANK_ENTRIES = 10_000
MAX_SPARSE_DENSIFIED = 1_000_000  # a sparse layer of at most this many (rows x cols) entries is
# made dense for exact ranks and counting; a wider one (a convolution) gets structural ranks


def rank_upper_bound(m: np.ndarray) -> tuple[int, bool]:
    """``(r, exact)``: ``r`` is a certified upper bound on the rational rank of the integer matrix
    ``m``; ``exact`` says ``r`` is the rank itself.

    ``min(rows, cols)`` is always an upper bound; it is the rank when the rank modulo a prime
    (a lower bound) reaches it. Otherwise the rank is computed exactly when the matrix has at most
    ``MAX_EXACT_RANK_ENTRIES`` entries; past that, ``min(rows, cols)`` is returned unconfirmed.
    """
    rows, cols = m.shape
    full = min(rows, cols)
    if full == 0:
        return 0, True
    if rank_mod_p(m) == full:
        return full, True
    if rows * cols <= MAX_EXACT_RANK_ENTRIES:
        return rank_exact(m), True
    return full, False


def structural_rank_bound(w, rows: np.ndarray, cols: np.ndarray) -> tuple[int, bool]:
    """``(r, exact)`` for the submatrix ``w[rows][:, cols]`` of a sparse weight: ``r`` is the
    number of its non-empty rows or of its non-empty columns, whichever is smaller (a certified
    upper bound of its rank: a matrix has no more independent rows than non-zero ones, nor
    columns); ``exact`` only when ``r`` is 0. Linear in the stored entries, no dense matrix."""
    sub = w[np.asarray(rows, dtype=np.int64)][:, np.asarray(cols, dtype=np.int64)]
    sub = sub.tocsr()
    sub.eliminate_zeros()
    r = min(int(np.count_nonzero(np.diff(sub.indptr))), int(np.unique(sub.indices).size))
    return r, r == 0


# --------------------------------------------------------------------------------------------
# the domain-refined bound


@dataclass(frozen=True)
class LayerRefinement:
    """What the refined bound used for one ReLU layer on one box.

    ``split_rank`` bounds the rank of the weights from the live inputs (inputs that are not
    stably zero) to the unstable units; ``pass_rank`` the rank from the live inputs to the units
    that can be active. ``ranks_exact`` is False when a rank could not be confirmed and
    ``min(rows, cols)`` was used instead (still an upper bound).
    """

    width: int
    stably_active: int
    stably_inactive: int
    unstable: int
    split_rank: int
    pass_rank: int
    ranks_exact: bool

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RefinedBound:
    """The domain-refined upper bound: the sum over the domain's boxes of the per-box bound."""

    value: int
    domain: str
    boxes: tuple[tuple[LayerRefinement, ...], ...]
    input_dims: tuple[int, ...]  # free (non-degenerate) input coordinates of each box

    def to_dict(self) -> dict:
        return {
            "value": self.value,
            "scientific": scientific(self.value),
            "domain": self.domain,
            "boxes": [
                {"free_inputs": d, "layers": [lr.to_dict() for lr in layers]}
                for d, layers in zip(self.input_dims, self.boxes)
            ],
        }


def _box_refinement(
    net: Network, box: Box | None, method: BoundMethod
) -> tuple[int, list[LayerRefinement]]:
    relu_layers = [k for k, layer in enumerate(net.layers) if layer.relu]
    masks = {}  # per ReLU layer: (active, inactive) masks; every other unit counts as unstable
    if box is None:  # no domain: every unit unstable
        live = np.arange(net.in_dim)
        for k in relu_layers:
            masks[k] = (np.zeros(net.layers[k].out_dim, bool),) * 2
    else:
        live = np.array([i for i in range(box.dim) if box.lower[i] < box.upper[i]], dtype=int)
        lb = sound_bounds(net, box.lower_float(), box.upper_float(), method=method)
        for k in relu_layers:
            masks[k] = (lb[k].active, lb[k].inactive)
    dim = len(live)
    out: list[LayerRefinement] = []
    for k in range(len(net.layers)):
        layer = net.layers[k]
        if not layer.relu:
            # an affine layer without ReLU between ReLU layers: it passes its image on
            live = np.arange(layer.out_dim)
            continue
        is_active, is_inactive = masks[k]
        active, inactive = np.nonzero(is_active)[0], np.nonzero(is_inactive)[0]
        unstable = np.nonzero(~(is_active | is_inactive))[0]
        can_be_active = np.union1d(unstable, active)
        rows, cols = layer.weight.shape
        if layer.affine.is_sparse and rows * cols > MAX_SPARSE_DENSIFIED:
            split_rank, ex1 = structural_rank_bound(layer.weight, unstable, live)
            pass_rank, ex2 = structural_rank_bound(layer.weight, can_be_active, live)
        else:
            ints = integer_affine(layer.affine)[0]
            split_rank, ex1 = rank_upper_bound(ints[np.ix_(unstable, live)])
            pass_rank, ex2 = rank_upper_bound(ints[np.ix_(can_be_active, live)])
        out.append(
            LayerRefinement(
                width=layer.out_dim,
                stably_active=len(active),
                stably_inactive=len(inactive),
                unstable=len(unstable),
                split_rank=split_rank,
                pass_rank=pass_rank,
                ranks_exact=ex1 and ex2,
            )
        )
        live = can_be_active
    specs = [_LayerSpec(lr.unstable, lr.split_rank, lr.pass_rank, lr.stably_active) for lr in out]
    return _recursive_bound(dim, specs), out


def refined_bound(
    net: Network,
    domain: str | Domain | None = None,
    method: BoundMethod | str = BoundMethod.INTERVAL,
) -> RefinedBound:
    """Theorem 1 tightened by the weights and, given a domain, by unit stability on it.

    Rule (per box, per ReLU layer ``l``; ``U`` unstable, ``A`` stably active units by the rigorous
    bounds of :func:`equivcheck.bounds.methods.sound_bounds`; live inputs = inputs not stably zero):

    ``R_l(d) = sum_{j=0}^{min(d, r_l, |U|)} C(|U|, j) R_{l+1}(min(d, q_l, |A| + |U| - j))``

    with ``r_l`` = rank of ``W_l[U, live]`` and ``q_l`` = rank of ``W_l[A u U, live]`` (certified
    upper bounds, see :func:`rank_upper_bound`), starting from ``d`` = the number of non-degenerate
    input coordinates. Why it is an upper bound: inside a region of the earlier layers, whose image
    spans at most ``d`` dimensions, stable units keep one sign and cannot split it; the ``|U|``
    unstable hyperplanes act in the image of ``W_l[U, live]``, at most ``min(d, r_l)`` dimensions,
    so they cut at most ``sum_{j <= min(d, r_l)} C(|U|, j)`` pieces (Zaslavsky); at most
    ``C(|U|, j)`` pieces have exactly ``j`` unstable units inactive (one per sign vector), and such
    a piece is mapped into at most ``min(d, q_l, |A| + |U| - j)`` dimensions. The recursion is
    non-increasing in ``j``, so filling the small ``j`` first is the worst case. Without a domain
    every unit counts as unstable and only the ranks refine the bound. Never larger than
    :func:`theorem1_bound`. A union of boxes gets the sum of the per-box bounds. ``method`` is the
    bound method that decides stability (an unknown one raises :class:`InputError`).
    """
    method = BoundMethod.parse(method)
    if domain is None:
        value, layers = _box_refinement(net, None, method)
        return RefinedBound(value, "none (ranks only)", (tuple(layers),), (net.in_dim,))
    dom = parse_domain(domain, net.in_dim)
    total, boxes, dims = 0, [], []
    for box in dom.boxes:
        value, layers = _box_refinement(net, box, method)
        total += value
        boxes.append(tuple(layers))
        dims.append(sum(1 for lo, hi in zip(box.lower, box.upper) if lo < hi))
    return RefinedBound(total, dom.describe(), tuple(boxes), tuple(dims))


@dataclass(frozen=True)
class RegionBounds:
    """All upper bounds on the number of linear regions of one architecture (exact integers)."""

    in_dim: int
    widths: tuple[int, ...]  # ReLU layers only
    output_width: int | None  # the final affine layer without ReLU (not counted), if any
    theorem1: int
    activation_patterns: int
    shallow: int
    refined: RefinedBound | None = None
    source: str = "<widths>"

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "in_dim": self.in_dim,
            "relu_widths": list(self.widths),
            "output_width_not_counted": self.output_width,
            "theorem1": self.theorem1,
            "theorem1_scientific": scientific(self.theorem1),
            "activation_patterns": self.activation_patterns,
            "activation_patterns_scientific": scientific(self.activation_patterns),
            "shallow": self.shallow,
            "shallow_scientific": scientific(self.shallow),
            "refined": self.refined.to_dict() if self.refined is not None else None,
        }


def bounds_for_widths(
    in_dim: int, widths: Sequence[int], output_width: int | None = None, source: str = "<widths>"
) -> RegionBounds:
    """Theorem 1, 2^N and the shallow bound for input dimension ``in_dim`` and ReLU ``widths``."""
    widths = tuple(int(w) for w in widths)
    _check_widths(in_dim, widths)
    return RegionBounds(
        in_dim=int(in_dim),
        widths=widths,
        output_width=output_width,
        theorem1=theorem1_bound(in_dim, widths),
        activation_patterns=activation_pattern_bound(widths),
        shallow=shallow_bound(in_dim, sum(widths)),
        source=source,
    )


def network_bounds(
    net: Network,
    domain: str | Domain | None = None,
    method: BoundMethod | str = BoundMethod.INTERVAL,
) -> RegionBounds:
    """The bounds of :func:`bounds_for_widths` for ``net``, plus :func:`refined_bound` on
    ``domain`` when one is given. Widths are ``net.hidden_widths``; a final layer without ReLU is
    reported as ``output_width`` and not counted."""
    last = net.layers[-1]
    base = bounds_for_widths(
        net.in_dim,
        net.hidden_widths,
        output_width=None if last.relu else last.out_dim,
        source=net.source,
    )
    if domain is None:
        return base
    return RegionBounds(**{**base.__dict__, "refined": refined_bound(net, domain, method)})


def parse_widths(text: str) -> tuple[int, tuple[int, ...], int]:
    """``"784,22,10"`` -> (input dim 784, ReLU widths (22,), output width 10).

    The first number is the input dimension, the last the output layer (affine, no ReLU, not
    counted), the ones between the ReLU layers. Raises :class:`InputError` on anything else, and
    beyond the maxima of :func:`_check_widths` (each width at most :data:`MAX_WIDTH`, at most
    :data:`MAX_UNITS` ReLU units, exact bounds of bounded cost).
    """
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise InputError(
            f"--widths {text!r}: expected comma-separated integers like 784,22,10"
        ) from None
    if len(values) < 2:
        raise InputError(f"--widths {text!r}: give at least the input and output widths")
    if any(v < 1 for v in values):
        raise InputError(f"--widths {text!r}: every width must be at least 1")
    if values[-1] > MAX_WIDTH:
        raise InputError(f"--widths: width {values[-1]:,} is above the maximum {MAX_WIDTH:,}")
    try:
        _check_widths(values[0], values[1:-1])
    except InputError as exc:
        raise InputError(f"--widths: {exc}") from None
    return values[0], tuple(values[1:-1]), values[-1]
