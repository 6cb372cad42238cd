"""Linear regions of ReLU networks: the Serra et al. upper bounds and exact counting.

A *linear region* is an activation pattern (which ReLUs are active, layer by layer) whose set of
inputs has a non-empty interior. This module gives

* upper bounds, as exact Python integers:
  :func:`theorem1_bound` (Serra, Tjandraatmadja and Ramalingam, ICML 2018, Theorem 1),
  :func:`activation_pattern_bound` (2^N) and :func:`shallow_bound` (one layer of N units);
  :func:`refined_bound` tightens Theorem 1 with what the weights say on a domain (stable units do
  not split regions; weight-matrix ranks limit the dimension each layer passes on), in the spirit
  of Serra and Ramalingam, AAAI 2020;
* :func:`count_regions`: the exact number of linear regions of a small network on a box, by a
  depth-first search over activation patterns.

Only the layers followed by a ReLU are counted (``Network.hidden_widths``); a final affine layer
without a ReLU does not split the input space, so it is not part of the bounds or the count.

Soundness of the count. The search uses a float LP (HiGHS) only as an oracle; every decision it
takes is re-checked exactly on the stored weights, which are converted to integers times a common
denominator without rounding:

* a partial pattern is kept only with a *witness point* at which every decided pre-activation is
  exactly (in integer arithmetic) strictly on its side and which lies strictly inside the box;
* a partial pattern is pruned only with an exact *Farkas certificate*: non-negative multipliers
  ``y`` (the LP's duals, read as exact rationals) such that ``sum_r y_r g_r(x) <= 0`` for every
  ``x`` in the box, where the ``g_r`` are the strict inequalities of the pattern and of the open
  box; then no point satisfies all of them;
* each counted region's witness is re-evaluated with the network's own exact rational evaluation
  (``Network`` weights as ``Fraction``) and must reproduce the pattern.

A pre-activation whose gradient is exactly zero on the current region (a dead or constant unit) is
classified by its constant value (active iff > 0) and does not split the region. When the LP cannot
be confirmed either way the branch is *unresolved*; the count is then reported as a lower bound,
as it is when the cap or the timeout stop the search.
"""

from __future__ import annotations

import enum
import itertools
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from fractions import Fraction

import numpy as np

from equivcheck.core.domain import Box, Domain
from equivcheck.core.network import Network, _exact_matvec
from equivcheck.errors import InputError
from equivcheck.io.domains import parse_domain

# ---------------------------------------------------------------------------------------------
# Upper bounds


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
# exact integer views of the weights and ranks


@dataclass(frozen=True, eq=False)
class _IntLayer:
    """One layer's exact weights as Python integers over a common denominator ``den > 0``."""

    weight: np.ndarray  # object array (out, in) of int
    bias: np.ndarray  # object array (out,) of int
    den: int


def _int_layer(net: Network, k: int) -> _IntLayer:
    affine = net.layers[k].affine
    if affine.is_exact_float:
        pairs_w = [float(v).as_integer_ratio() for v in affine.weight.ravel()]
        pairs_b = [float(v).as_integer_ratio() for v in affine.bias.ravel()]
    else:
        pairs_w = [(q.numerator, q.denominator) for q in affine.rational_weight().ravel()]
        pairs_b = [(q.numerator, q.denominator) for q in affine.rational_bias().ravel()]
    den = 1
    for d in {d for _, d in pairs_w + pairs_b}:
        den = den * d // math.gcd(den, d)
    w = np.empty(len(pairs_w), dtype=object)
    w[:] = [n * (den // d) for n, d in pairs_w]
    b = np.empty(len(pairs_b), dtype=object)
    b[:] = [n * (den // d) for n, d in pairs_b]
    return _IntLayer(w.reshape(affine.weight.shape), b, den)


_PRIME = 2_147_483_647  # 2^31 - 1: products of two residues fit in int64
MAX_EXACT_RANK_ENTRIES = 10_000


def _rank_mod_p(m: np.ndarray) -> int:
    """Rank of an integer matrix modulo a prime: a certified *lower* bound on its rational rank."""
    a = np.array([int(v) % _PRIME for v in m.ravel()], dtype=np.int64).reshape(m.shape)
    rows, cols = a.shape
    rank = 0
    for col in range(cols):
        if rank == rows:
            break
        nz = np.nonzero(a[rank:, col])[0]
        if len(nz) == 0:
            continue
        piv = rank + int(nz[0])
        if piv != rank:
            a[[rank, piv]] = a[[piv, rank]]
        inv = pow(int(a[rank, col]), _PRIME - 2, _PRIME)
        a[rank] = (a[rank] * inv) % _PRIME
        below = a[rank + 1 :, col].copy()
        if np.any(below):
            a[rank + 1 :] = (a[rank + 1 :] - (below[:, None] * a[rank]) % _PRIME) % _PRIME
        rank += 1
    return rank


def _rank_exact(m: np.ndarray) -> int:
    """Rank over the rationals by Gaussian elimination on ``Fraction`` s (small matrices only)."""
    a = [[Fraction(int(v)) for v in row] for row in m]
    rows, cols = len(a), len(a[0]) if a else 0
    rank = 0
    for col in range(cols):
        piv = next((r for r in range(rank, rows) if a[r][col] != 0), None)
        if piv is None:
            continue
        a[rank], a[piv] = a[piv], a[rank]
        for r in range(rank + 1, rows):
            if a[r][col] != 0:
                f = a[r][col] / a[rank][col]
                a[r] = [x - f * y for x, y in zip(a[r], a[rank])]
        rank += 1
        if rank == rows:
            break
    return rank


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
    if _rank_mod_p(m) == full:
        return full, True
    if rows * cols <= MAX_EXACT_RANK_ENTRIES:
        return _rank_exact(m), True
    return full, False


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
    net: Network, box: Box | None, method: str
) -> tuple[int, list[LayerRefinement]]:
    from equivcheck.bounds.propagation import sound_bounds

    relu_layers = [k for k, layer in enumerate(net.layers) if layer.relu]
    if box is None:
        live = np.arange(net.in_dim)
        stab = {k: np.zeros(net.layers[k].out_dim, dtype=np.int8) for k in relu_layers}
    else:
        live = np.array([i for i in range(box.dim) if box.lower[i] < box.upper[i]], dtype=int)
        lb = sound_bounds(net, box.lower_float(), box.upper_float(), method=method)
        stab = {k: lb[k].stability() for k in relu_layers}
    dim = len(live)
    out: list[LayerRefinement] = []
    for k in range(len(net.layers)):
        layer = net.layers[k]
        if not layer.relu:
            # an affine layer without ReLU between ReLU layers: it passes its image on
            live = np.arange(layer.out_dim)
            continue
        s = stab[k]
        unstable = np.nonzero(s == 0)[0]
        active = np.nonzero(s == 1)[0]
        inactive = np.nonzero(s == -1)[0]
        ints = _int_layer(net, k).weight
        split_rank, ex1 = rank_upper_bound(ints[np.ix_(unstable, live)])
        can_be_active = np.union1d(unstable, active)
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
    net: Network, domain: str | Domain | None = None, method: str = "interval"
) -> RefinedBound:
    """Theorem 1 tightened by the weights and, given a domain, by unit stability on it.

    Rule (per box, per ReLU layer ``l``; ``U`` unstable, ``A`` stably active units by the rigorous
    bounds of :func:`equivcheck.bounds.propagation.sound_bounds`; live inputs = inputs not stably zero):

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
    :func:`theorem1_bound`. A union of boxes gets the sum of the per-box bounds.
    """
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
    net: Network, domain: str | Domain | None = None, method: str = "interval"
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


# --------------------------------------------------------------------------------------------
# Exact counting


class CountStatus(str, enum.Enum):
    COMPLETE = "complete"  # every branch decided exactly: the count is exact
    CAP = "cap"  # stopped at the cap: lower bound
    TIMEOUT = "timeout"  # stopped by the timeout: lower bound
    UNRESOLVED = "unresolved"  # some branch could not be decided exactly: lower bound


@dataclass(frozen=True)
class Region:
    """One counted linear region: its pattern (0/1 per ReLU, layer by layer) and an exactly
    verified interior witness (the full input vector, as exact rationals)."""

    pattern: tuple[tuple[int, ...], ...]
    witness: tuple[Fraction, ...]


@dataclass(frozen=True)
class RegionCount:
    """The result of :func:`count_regions`. ``count`` is exact iff ``status`` is COMPLETE; it is
    always a certified lower bound (every counted region has a verified witness)."""

    count: int
    status: CountStatus
    domain: str
    regions: tuple[Region, ...]
    nodes: int
    lp_calls: int
    unresolved: int
    elapsed: float
    theorem1: int
    refined: int | None

    @property
    def exact(self) -> bool:
        return self.status is CountStatus.COMPLETE

    def to_dict(self) -> dict:
        return {
            "count": self.count,
            "exact": self.exact,
            "status": self.status.value,
            "lower_bound": self.count,
            "domain": self.domain,
            "theorem1": self.theorem1,
            "refined_bound": self.refined,
            "nodes": self.nodes,
            "lp_calls": self.lp_calls,
            "unresolved_branches": self.unresolved,
            "elapsed_s": round(self.elapsed, 3),
        }


class _Stop(Exception):
    def __init__(self, status: CountStatus):
        self.status = status


def _quiet_highs():
    """A silent HiGHS instance (its banner is printed on C-level stdout at construction)."""
    import highspy

    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:
        saved = None
    if saved is None:
        h = highspy.Highs()
    else:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 1)
            h = highspy.Highs()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(devnull)
    h.setOptionValue("output_flag", False)
    return h


class _SlackLP:
    """max t s.t. G x + g0 >= norms * t, lo + t <= x <= hi - t, x in [lo, hi], t <= tcap."""

    def __init__(self, lo: np.ndarray, hi: np.ndarray):
        import highspy

        self.hs = highspy
        self.h = _quiet_highs()
        for name, value in (
            ("primal_feasibility_tolerance", 1e-10),
            ("dual_feasibility_tolerance", 1e-10),
        ):
            self.h.setOptionValue(name, value)
        self.lo, self.hi = lo, hi
        self.tcap = float(np.max(hi - lo)) / 2.0
        self.calls = 0

    def solve(self, g: np.ndarray, g0: np.ndarray, norms: np.ndarray):
        """(t, x, y) or None when HiGHS does not report an optimum. ``y`` are the row duals,
        constraint rows first, then the d rows ``x - t >= lo`` and the d rows ``-x - t >= -hi``."""
        hs = self.hs
        self.calls += 1
        d = len(self.lo)
        eye = np.eye(d)
        a = np.vstack(
            [
                np.hstack([g, -norms[:, None]]),
                np.hstack([eye, -np.ones((d, 1))]),
                np.hstack([-eye, -np.ones((d, 1))]),
            ]
        )
        lp = hs.HighsLp()
        lp.num_col_ = d + 1
        lp.num_row_ = a.shape[0]
        lp.col_cost_ = np.r_[np.zeros(d), -1.0]
        lp.col_lower_ = np.r_[self.lo, -hs.kHighsInf]
        lp.col_upper_ = np.r_[self.hi, self.tcap]
        lp.row_lower_ = np.r_[-g0, self.lo, -self.hi]
        lp.row_upper_ = np.full(a.shape[0], hs.kHighsInf)
        csc = a.T
        starts, index, value = [0], [], []
        for col in csc:
            nz = np.nonzero(col)[0]
            index.extend(nz.tolist())
            value.extend(col[nz].tolist())
            starts.append(len(index))
        lp.a_matrix_.format_ = hs.MatrixFormat.kColwise
        lp.a_matrix_.start_ = starts
        lp.a_matrix_.index_ = index
        lp.a_matrix_.value_ = value
        lp.a_matrix_.num_col_ = d + 1
        lp.a_matrix_.num_row_ = a.shape[0]
        self.h.clearModel()
        self.h.passModel(lp)
        self.h.run()
        if self.h.getModelStatus() != hs.HighsModelStatus.kOptimal:
            return None
        sol = self.h.getSolution()
        x = np.array(sol.col_value, dtype=np.float64)
        return float(x[d]), x[:d], np.array(sol.row_dual, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class _Row:
    """A decided unit: ``sign * (a . X + c * K) > 0`` exactly, for a point X/K (den > 0)."""

    sign: int
    a: np.ndarray  # object ints (d,)
    c: int
    den: int
    af: np.ndarray  # float a/den * sign
    cf: float  # float c/den * sign
    norm: float


def _as_scaled_ints(x: np.ndarray) -> tuple[np.ndarray, int]:
    """A float vector as (integers, K) with x = ints / K exactly (K a power of two)."""
    pairs = [float(v).as_integer_ratio() for v in x]
    k = max(d for _, d in pairs) if pairs else 1
    out = np.empty(len(pairs), dtype=object)
    out[:] = [n * (k // d) for n, d in pairs]
    return out, k


class _BoxCounter:
    """Depth-first enumeration of the activation patterns of ``net`` on one box."""

    def __init__(
        self,
        net: Network,
        box: Box,
        layers: list[_IntLayer],
        relu_idx: list[int],
        deadline: float | None,
        cap: int | None,
        found: dict,
        on_progress,
        rng,
        samples: int,
    ):
        self.net, self.box, self.layers, self.relu_idx = net, box, layers, relu_idx
        self.deadline, self.cap, self.found, self.on_progress = deadline, cap, found, on_progress
        self.free = [i for i in range(box.dim) if box.lower[i] < box.upper[i]]
        self.fixed = [i for i in range(box.dim) if box.lower[i] == box.upper[i]]
        self.lo_q = [box.lower[i] for i in self.free]
        self.hi_q = [box.upper[i] for i in self.free]
        kden = 1
        for q in self.lo_q + self.hi_q:
            kden = kden * q.denominator // math.gcd(kden, q.denominator)
        self.box_k = kden  # the box corners as integers over kden, for exact range checks
        self.lo_int = np.array([int(q * kden) for q in self.lo_q] or [0], dtype=object)[
            : len(self.free)
        ]
        self.hi_int = np.array([int(q * kden) for q in self.hi_q] or [0], dtype=object)[
            : len(self.free)
        ]
        self.lo = np.array([float(v) for v in self.lo_q])
        self.hi = np.array([float(v) for v in self.hi_q])
        self.nodes = 0
        self.unresolved = 0
        self.done = 0.0
        self.lp = _SlackLP(self.lo, self.hi) if self.free else None
        self.rng = rng
        self.samples = samples
        self._last_report = 0.0

    # -- exact maps --------------------------------------------------------------------------

    def _first_map(self):
        """Pre-activations of the first ReLU layer as (A, c, den): z = (A u + c) / den."""
        first = self.layers[self.relu_idx[0]]
        w, b, den = first.weight, first.bias, first.den
        fdens = [self.box.lower[i].denominator for i in self.fixed]
        fden = 1
        for d in fdens:
            fden = fden * d // math.gcd(fden, d)
        a = w[:, self.free] * fden if self.free else np.empty((w.shape[0], 0), dtype=object)
        xf = np.empty(len(self.fixed), dtype=object)
        xf[:] = [int(self.box.lower[i] * fden) for i in self.fixed]
        c = (w[:, self.fixed].dot(xf) if self.fixed else 0) + b * fden
        c = np.asarray(c, dtype=object)
        return a, c, den * fden

    def _next_map(self, level: int, a, c, den, active: np.ndarray):
        """Pre-activations of ReLU layer ``level + 1`` given the active mask of ``level``."""
        nxt = self.layers[self.relu_idx[level + 1]]
        w = nxt.weight[:, active]
        d = a.shape[1]
        if active.any():
            a2 = w.dot(a[active]) if d else np.empty((w.shape[0], 0), dtype=object)
            c2 = w.dot(c[active]) + nxt.bias * den
        else:
            a2 = np.zeros((w.shape[0], d), dtype=object)
            a2[:] = 0
            c2 = nxt.bias * den
        return np.asarray(a2, dtype=object), np.asarray(c2, dtype=object), nxt.den * den

    # -- exact checks ------------------------------------------------------------------------

    def _strictly_inside(self, x: np.ndarray) -> bool:
        return all(lo < Fraction(float(v)) < hi for v, lo, hi in zip(x, self.lo_q, self.hi_q))

    def _certified_empty(self, rows: list[_Row], y: np.ndarray) -> bool:
        """Exact Farkas check of the LP duals ``y``: some multipliers ``q >= 0``, not all 0, with
        ``sum_r q_r g_r(x) <= 0`` on the whole box prove that no point of the open box satisfies
        every ``g_r(x) > 0``. The float duals are tried as they are (as exact rationals), then
        rounded to nearby simple fractions, which repairs the exact certificates of degenerate
        cases (an optimum of exactly 0) that float duals miss by a rounding error."""
        y = np.maximum(np.nan_to_num(y, nan=0.0, posinf=0.0), 0.0)
        if not np.any(y > 0):
            return False
        y = y / float(np.max(y))
        y = np.where(y > 1e-12, y, 0.0)
        if self._farkas_holds(rows, [Fraction(float(v)) for v in y]):
            return True
        for den in (10**6, 10**4, 1000, 100, 12, 4, 1):
            q = [Fraction(float(v)).limit_denominator(den) for v in y]
            if any(q) and self._farkas_holds(rows, q):
                return True
        return self._nullspace_certificate(rows, y)

    def _nullspace_certificate(self, rows: list[_Row], y: np.ndarray) -> bool:
        """Exact multipliers for a degenerate optimum (the LP's best slack is exactly 0, e.g. two
        coincident hyperplanes with opposite sides, as a dead unit ``w * z`` with ``w < 0`` gives):
        on the rows the float duals use, plus the box faces, find exactly ``q >= 0`` with
        ``sum_r q_r grad g_r = 0``; then ``sum_r q_r g_r`` is a constant, checked to be <= 0."""
        d = len(self.free)
        n = len(rows)
        support = [k for k in range(len(y)) if y[k] > 0]
        if not support or len(support) > d + 2:
            return False
        cols = []
        for k in support:
            if k < n:
                r = rows[k]
                cols.append([Fraction(int(v) * r.sign, r.den) for v in r.a])
            elif k < n + d:
                cols.append([Fraction(int(i == k - n)) for i in range(d)])
            else:
                cols.append([Fraction(-int(i == k - n - d)) for i in range(d)])
        for v in _nullspace([[cols[j][i] for j in range(len(cols))] for i in range(d)], len(cols)):
            if all(x <= 0 for x in v):
                v = [-x for x in v]
            if any(x < 0 for x in v) or not any(v):
                continue
            q = [Fraction(0)] * len(y)
            for k, x in zip(support, v):
                q[k] = x
            if self._farkas_holds(rows, q):
                return True
        return False

    def _farkas_holds(self, rows: list[_Row], y: list[Fraction]) -> bool:
        d = len(self.free)
        coef = [Fraction(0)] * d
        const = Fraction(0)
        for r, yr in zip(rows, y[: len(rows)]):
            if not yr:
                continue
            q = yr * r.sign / r.den
            for i in range(d):
                if r.a[i]:
                    coef[i] += q * r.a[i]
            const += q * r.c
        ylo = y[len(rows) : len(rows) + d]
        yhi = y[len(rows) + d :]
        for i in range(d):
            if ylo[i]:
                coef[i] += ylo[i]
                const -= ylo[i] * self.lo_q[i]
            if yhi[i]:
                coef[i] -= yhi[i]
                const += yhi[i] * self.hi_q[i]
        top = const + sum(c * (self.hi_q[i] if c > 0 else self.lo_q[i]) for i, c in enumerate(coef))
        return top <= 0

    def _box_excludes(self, a, c, sign: int) -> bool:
        """Exact: ``sign * (a . x + c) <= 0`` on the whole box, so no point of the current region
        (a subset of the box) is strictly on the ``sign`` side. Costs no LP."""
        if not len(a):
            return sign * c <= 0
        positive = np.array([v > 0 for v in a], dtype=bool)
        if sign > 0:
            corner = np.where(positive, self.hi_int, self.lo_int)
        else:
            corner = np.where(positive, self.lo_int, self.hi_int)
        return sign * (a.dot(corner) + c * self.box_k) <= 0

    def _row_sign(self, a, c, xs: np.ndarray, k: int) -> int:
        v = (a.dot(xs) if len(xs) else 0) + c * k
        return (v > 0) - (v < 0)

    # -- search ------------------------------------------------------------------------------

    def _tick(self, count: int) -> None:
        self.nodes += 1
        now = time.monotonic()
        if self.deadline is not None and now > self.deadline:
            raise _Stop(CountStatus.TIMEOUT)
        if self.on_progress is not None and now - self._last_report > 0.1:
            self._last_report = now
            self.on_progress(self.done, count)

    def _initial_pool(self) -> list[tuple]:
        """The box centre and random points strictly inside the box, with their exact ints."""
        d = len(self.free)
        pool = [_exact_point([(lo + hi) / 2 for lo, hi in zip(self.lo_q, self.hi_q)])]
        if self.samples and d:
            u = self.rng.uniform(0.0, 1.0, size=(self.samples, d))
            pts = self.lo + u * (self.hi - self.lo)
            pool.extend(_point(p) for p in pts if self._strictly_inside(p))
        return pool

    def run(self) -> None:
        n_relu = len(self.relu_idx)
        if n_relu == 0:
            self._leaf((), (), self._initial_pool()[0], ())
            self.done = 1.0
            return
        a, c, den = self._first_map()
        pool = self._initial_pool()
        # stack items: (level, unit, A, c, den, bits (tuple), rows (tuple), pool, weight, consts)
        stack = [(0, 0, a, c, den, (), (), pool, 1.0, ())]
        widths = [self.layers[k].weight.shape[0] for k in self.relu_idx]
        offsets = np.cumsum([0] + widths)
        while stack:
            self._tick(len(self.found))
            level, unit, a, c, den, bits, rows, pool, weight, consts = stack.pop()
            if unit == widths[level]:
                if level + 1 == n_relu:
                    self._leaf(self._split_bits(bits, widths), rows, pool[0], consts)
                    self.done += weight
                    continue
                active = np.array(bits[offsets[level] :], dtype=bool)
                a2, c2, den2 = self._next_map(level, a, c, den, active)
                stack.append((level + 1, 0, a2, c2, den2, bits, rows, pool, weight, consts))
                continue
            arow, crow = a[unit], c[unit]
            flat = offsets[level] + unit
            if not any(arow):
                bit = 1 if crow > 0 else 0
                stack.append(
                    (
                        level,
                        unit + 1,
                        a,
                        c,
                        den,
                        bits + (bit,),
                        rows,
                        pool,
                        weight,
                        consts + (flat,),
                    )
                )
                continue
            sides: dict[int, list] = {1: [], -1: []}
            for item in pool:
                s = self._row_sign(arow, crow, item[1], item[2])
                if s:
                    sides[s].append(item)
            children = []
            af = _floats(arow, den)
            norm = float(np.linalg.norm(af)) or 1e-300
            for s in (-1, 1):
                row = _Row(s, arow, int(crow), den, s * af, s * (int(crow) / den), norm)
                new_rows = rows + (row,)
                child_pool = sides[s]
                if not child_pool:
                    status, witness = (
                        ("empty", None)
                        if self._box_excludes(arow, crow, s)
                        else self._decide(new_rows)
                    )
                    if status == "empty":
                        self.done += weight / 2
                        continue
                    if status == "unresolved":
                        self.unresolved += 1
                        self.done += weight / 2
                        continue
                    child_pool = [_point(witness)]
                children.append(
                    (
                        level,
                        unit + 1,
                        a,
                        c,
                        den,
                        bits + ((1 if s > 0 else 0),),
                        new_rows,
                        child_pool,
                        weight / 2,
                        consts,
                    )
                )
            stack.extend(children)

    @staticmethod
    def _split_bits(bits, widths):
        out, k = [], 0
        for w in widths:
            out.append(tuple(bits[k : k + w]))
            k += w
        return tuple(out)

    def _decide(self, rows: tuple[_Row, ...]):
        """("feasible", witness) | ("empty", None) | ("unresolved", None), all exactly checked."""
        g = np.array([r.af for r in rows])
        g0 = np.array([r.cf for r in rows])
        norms = np.array([r.norm for r in rows])
        res = self.lp.solve(g, g0, norms)
        if res is None:
            return "unresolved", None
        t, x, y = res
        if t > 0:
            x = np.clip(x, self.lo, self.hi)
            if self._strictly_inside(x) and self._satisfies(rows, x):
                return "feasible", x
        if self._certified_empty(list(rows), y):
            return "empty", None
        return "unresolved", None

    def _satisfies(self, rows, x) -> bool:
        xs, k = _as_scaled_ints(x)
        return all(self._row_sign(r.a, r.c, xs, k) == r.sign for r in rows)

    def _leaf(self, pattern, rows, point: tuple, consts) -> None:
        """Verify the witness with the network's exact evaluation, then count the region."""
        x = [Fraction(0)] * self.box.dim
        _, xs, k = point
        for i, v in zip(self.free, xs):
            x[i] = Fraction(int(v), k)
        for i in self.fixed:
            x[i] = self.box.lower[i]
        inside = all(lo < x[i] < hi for i, lo, hi in zip(self.free, self.lo_q, self.hi_q))
        if not (self.box.contains(x) and inside):
            self.unresolved += 1
            return
        if not _verify_pattern(self.net, x, pattern, set(consts)):
            self.unresolved += 1
            return
        if pattern not in self.found:
            self.found[pattern] = Region(pattern, tuple(x))
            if self.cap is not None and len(self.found) >= self.cap:
                raise _Stop(CountStatus.CAP)


def _nullspace(m: list[list[Fraction]], ncols: int) -> list[list[Fraction]]:
    """A basis of the null space of the rational matrix ``m`` (rows of length ``ncols``)."""
    a = [row[:] for row in m]
    pivots: list[int] = []
    r = 0
    for c in range(ncols):
        piv = next((i for i in range(r, len(a)) if a[i][c] != 0), None)
        if piv is None:
            continue
        a[r], a[piv] = a[piv], a[r]
        p = a[r][c]
        a[r] = [x / p for x in a[r]]
        for i in range(len(a)):
            if i != r and a[i][c] != 0:
                f = a[i][c]
                a[i] = [x - f * y for x, y in zip(a[i], a[r])]
        pivots.append(c)
        r += 1
        if r == len(a):
            break
    basis = []
    for free in (c for c in range(ncols) if c not in pivots):
        v = [Fraction(0)] * ncols
        v[free] = Fraction(1)
        for i, pc in enumerate(pivots):
            v[pc] = -a[i][free]
        basis.append(v)
    return basis


def _point(x: np.ndarray) -> tuple:
    """A pool entry ``(floats, ints, k)``: the point is exactly ``ints / k``."""
    xs, k = _as_scaled_ints(x)
    return (x, xs, k)


def _exact_point(q: list[Fraction]) -> tuple:
    """A pool entry for an exact rational point (its floats are only approximations)."""
    k = 1
    for v in q:
        k = k * v.denominator // math.gcd(k, v.denominator)
    xs = np.empty(len(q), dtype=object)
    xs[:] = [int(v * k) for v in q]
    return (np.array([float(v) for v in q], dtype=np.float64), xs, k)


def _floats(a: np.ndarray, den: int) -> np.ndarray:
    return np.array([int(v) / den for v in a], dtype=np.float64)


def _verify_pattern(net: Network, x: list[Fraction], pattern, constant_units: set[int]) -> bool:
    """Exact re-evaluation: every ReLU pre-activation has the pattern's strict sign at ``x``
    (a unit found constant on the region may be exactly 0, and is then inactive)."""
    h = np.empty(len(x), dtype=object)
    h[:] = x
    level, flat = 0, 0
    for layer in net.layers:
        if not layer.relu:
            if level == len(pattern):
                break
            h = _exact_matvec(layer.affine, h)
            continue
        z = _exact_matvec(layer.affine, h)
        bits = pattern[level]
        for j, (zj, bit) in enumerate(zip(z, bits)):
            if bit == 1 and not zj > 0:
                return False
            if bit == 0 and not (zj < 0 or (zj == 0 and flat + j in constant_units)):
                return False
        flat += len(bits)
        level += 1
        h = np.array([v if v > 0 else Fraction(0) for v in z], dtype=object)
    return level == len(pattern)


def count_regions(
    net: Network,
    domain: str | Domain | None = None,
    cap: int | None = None,
    timeout: float | None = None,
    progress: Callable[[float, int], None] | None = None,
    samples: int = 64,
    seed: int = 0,
    with_bounds: bool = True,
) -> RegionCount:
    """Count the linear regions of ``net`` on ``domain`` (default [0, 1]^n).

    A region is an activation pattern of the ReLU layers whose set of inputs in the domain has a
    point strictly inside the (non-degenerate coordinates of the) box at which every
    pre-activation is strictly non-zero, except pre-activations that are exactly constant on the
    region, which count as inactive when <= 0. Every counted region has an exactly verified
    witness, so ``count`` is always a lower bound; it is the exact number when ``status`` is
    COMPLETE (every pruned branch carries an exact infeasibility certificate). ``cap`` and
    ``timeout`` (seconds, checked between search steps) stop early with a lower bound.
    ``progress(fraction_of_pattern_tree_done, regions_so_far)`` is called now and then.
    For a union of boxes the patterns of all boxes are merged (a pattern counts once).
    """
    if cap is not None and cap < 1:
        raise InputError(f"--cap must be at least 1, got {cap}")
    if timeout is not None and timeout <= 0:
        raise InputError(f"--timeout must be positive, got {timeout}")
    dom = parse_domain(domain, net.in_dim)
    relu_idx = [k for k, layer in enumerate(net.layers) if layer.relu]
    for k in relu_idx[1:]:
        if not net.layers[k - 1].relu:
            raise InputError(
                f"{net.source}: layer {k - 1} has no ReLU but is followed by ReLU layers; "
                "counting supports ReLU layers followed by one final affine layer"
            )
    start = time.monotonic()
    deadline = start + timeout if timeout is not None else None
    layers = {k: _int_layer(net, k) for k in relu_idx}
    ints = [layers.get(k) for k in range(len(net.layers))]
    found: dict = {}
    status = CountStatus.COMPLETE
    nodes = lp_calls = unresolved = 0
    rng = np.random.default_rng(seed)
    nbox = len(dom.boxes)
    for b, box in enumerate(dom.boxes):

        def report(done, count, _b=b):
            if progress is not None:
                progress((_b + done) / nbox, count)

        counter = _BoxCounter(net, box, ints, relu_idx, deadline, cap, found, report, rng, samples)
        try:
            counter.run()
        except _Stop as stop:
            status = stop.status
        nodes += counter.nodes
        lp_calls += counter.lp.calls if counter.lp is not None else 0
        unresolved += counter.unresolved
        if status is not CountStatus.COMPLETE:
            break
    if status is CountStatus.COMPLETE and unresolved:
        status = CountStatus.UNRESOLVED
    if progress is not None and status is CountStatus.COMPLETE:
        progress(1.0, len(found))
    elapsed = time.monotonic() - start
    theorem1 = theorem1_bound(net.in_dim, net.hidden_widths) if net.hidden_widths else 1
    refined = refined_bound(net, dom).value if with_bounds else None
    return RegionCount(
        count=len(found),
        status=status,
        domain=dom.describe(),
        regions=tuple(found.values()),
        nodes=nodes,
        lp_calls=lp_calls,
        unresolved=unresolved,
        elapsed=elapsed,
        theorem1=theorem1,
        refined=refined,
    )
