"""The bound methods by name: sound pre-activation bounds of a network, or of a pair, over a box.

Every method returns bounds that enclose the exact values, so the prover may rely on them; the
methods differ in how hard they work (see :class:`~equivcheck.core.options.BoundMethod`). Bounds
already *proved* elsewhere (``known``, e.g. by the stability analysis that ``compress`` ran) are
passed in explicitly and intersected; nothing is remembered between calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from equivcheck.bounds.interval import LayerBounds, intersect_all, interval_bounds
from equivcheck.bounds.lp import lp_bounds
from equivcheck.bounds.stability import InputSplitter, analyze_stability
from equivcheck.bounds.symbolic import symbolic_bounds
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Box, Domain
from equivcheck.core.network import Network, same_widths
from equivcheck.core.options import DEFAULT_TIMEOUT, BoundMethod

BOUND_METHODS: tuple[BoundMethod, ...] = tuple(BoundMethod)

Known = Sequence[LayerBounds] | None  # bounds proved for the same network over a superset box


def exact_stability_bounds(net: Network, lo: np.ndarray, hi: np.ndarray,
                           timeout: float | Deadline = DEFAULT_TIMEOUT,
                           deadline: Deadline | None = None, known: Known = None,
                           box: Box | None = None,
                           splitter: InputSplitter | None = None) -> list[LayerBounds]:
    """Symbolic bounds clipped at 0 wherever the exact stability analysis proved a unit stable.

    Every clip rests on a rigorous proof (see :mod:`equivcheck.bounds.stability`), so the result
    is still an enclosure; units the analysis left undecided keep their symbolic bounds.
    ``timeout`` (seconds, or a :class:`Deadline`) bounds the analysis, ``deadline`` everything
    (the analysis included); with no time for an analysis the result is the LP bounds. With
    ``known`` (bounds already proved for this network over the box) no analysis runs: the result
    is the symbolic bounds intersected with them. The analysis runs on ``box`` when given, else
    on the float box ``[lo, hi]`` (which encloses the caller's box); ``splitter`` is its input
    splitting stage (injected by a caller above this layer, e.g.
    :func:`equivcheck.engine.units.split_inputs`; None: none).
    """
    analysis = Deadline.of(timeout, "the stability analysis' timeout", allow_zero=True)
    if deadline is not None:
        analysis = deadline.sub(seconds=analysis.remaining())
    if known is not None:
        return intersect_all(symbolic_bounds(net, lo, hi, deadline=deadline), known)
    if analysis.expired():
        return lp_bounds(net, lo, hi, deadline)
    if box is None:
        box = Box(tuple(Fraction(float(v)) for v in lo), tuple(Fraction(float(v)) for v in hi))
    report = analyze_stability(net, Domain((box,), "<bounds>"), timeout=analysis, splitter=splitter)
    base = report.bounds if report.bounds is not None else symbolic_bounds(net, lo, hi,
                                                                           deadline=deadline)
    return report.clip(base)


def sound_bounds(net: Network, lo: np.ndarray, hi: np.ndarray,
                 method: BoundMethod | str = BoundMethod.INTERVAL,
                 deadline: Deadline | None = None, known: Known = None) -> list[LayerBounds]:
    """Rigorous pre-activation bounds of every layer over the float box ``[lo, hi]``.

    ``method`` (a :class:`BoundMethod` or its value; anything else raises an
    :class:`~equivcheck.errors.InputError`) names how hard to work: INTERVAL (cheapest),
    SYMBOLIC (CROWN-style back-substitution, intersected with intervals), LP (symbolic, then
    every unstable unit tightened by an LP whose bound is certified from its dual); AUTO, for one
    network, INTERVAL (pairs: see :meth:`BoundMethod.resolve`). EXACT here (a box of its own,
    e.g. a part of the prover's box) runs no stability analysis and gives
    the LP bounds; :func:`bounds_pair` and :func:`exact_stability_bounds` run the analysis.
    ``known`` bounds (proved over a superset of the box) are intersected with the result.
    ``deadline`` stops the costly methods early: past it they finish with cheaper (still
    rigorous) bounds.
    """
    method = BoundMethod.parse(method)
    if method in (BoundMethod.INTERVAL, BoundMethod.AUTO):  # (one network: AUTO is INTERVAL)
        out = interval_bounds(net, lo, hi)
    elif method is BoundMethod.SYMBOLIC:
        out = symbolic_bounds(net, lo, hi, deadline=deadline)
    else:  # LP, and EXACT without an analysis
        out = lp_bounds(net, lo, hi, deadline)
    return out if known is None else intersect_all(out, known)


def bounds_pair(a: Network, b: Network, lo: np.ndarray, hi: np.ndarray, method: BoundMethod | str,
                deadline: Deadline, known_a: Known = None, known_b: Known = None,
                share: float | None = None, box: Box | None = None,
                splitter: InputSplitter | None = None,
                ) -> tuple[list[LayerBounds], list[LayerBounds]]:
    """:func:`sound_bounds` of both networks over the same box.

    For the costly methods each network gets ``share`` of the time then left (the caller's
    choice: :meth:`~equivcheck.core.options.ProverOptions.bound_share`; None: all of it). EXACT runs a real stability analysis of each network on this box
    (see :func:`exact_stability_bounds`; the prover uses it for the whole box, not for its
    parts) unless that network's bounds are ``known``. ``known_a``/``known_b`` are bounds
    already proved for ``a``/``b`` over a superset of the box, intersected with the result.
    ``splitter``: the analysis' input splitting stage (see :func:`exact_stability_bounds`).
    AUTO is resolved by the pair's shapes (:meth:`BoundMethod.resolve`).
    """
    method = BoundMethod.parse(method).resolve(same_widths(a, b))
    out = []
    for net, known in ((a, known_a), (b, known_b)):
        if method is BoundMethod.EXACT:
            out.append(exact_stability_bounds(net, lo, hi, deadline.sub(share), deadline, known,
                                              box, splitter))
        elif method is BoundMethod.LP:
            got = lp_bounds(net, lo, hi, deadline.sub(share))
            out.append(got if known is None else intersect_all(got, known))
        else:
            out.append(sound_bounds(net, lo, hi, method, deadline, known))
    return out[0], out[1]
