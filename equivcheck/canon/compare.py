"""Comparing two networks through their canonical forms, box by box, in exact arithmetic.

Both networks are brought into one :class:`~equivcheck.canon.table.UnitTable` per box of the
domain (:func:`~equivcheck.canon.build.build`), then their output expressions are compared by the
spec's mode:

* every mode: the expressions are equal, term by term (the same function on the box; each
  relation a :class:`Spec` states holds between equal outputs);
* argmax: the differences ``y_j - y_0`` of one network are a positive multiple of the other's
  (argmax, first index on ties, depends only on those differences, and a positive factor keeps
  their order), so outputs scaled by ``s > 0`` or shifted by a common amount are recognised,
  also after one strictly increasing map of all outputs is peeled off
  (:mod:`~equivcheck.canon.monotone`);
* epsilon: the difference of the outputs is an affine expression over canonical units and
  inputs; exact interval bounds of it over the box (every unit's range sound) within the
  tolerance prove the relation.

Soundness: every expression equals its network's output at every point of the box (the only
facts used about the box are sound bounds, taken exactly), so equal forms are equal functions on
the domain. A form that does not match proves nothing and refutes nothing: the caller searches as
it would have without it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from equivcheck.bounds.interval import LayerBounds, intersect, interval_step
from equivcheck.bounds.symbolic import symbolic_layer
from equivcheck.canon.build import (
    BudgetExceeded,
    Canonical,
    NoMatch,
    Rewrites,
    build,
    build_steps,
)
from equivcheck.canon.monotone import peel
from equivcheck.canon.permuted import permuted_match
from equivcheck.canon.quick import first_layers_differ
from equivcheck.canon.table import FOLD_TERMS, ZERO, Lin, UnitTable
from equivcheck.core import matrix
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Box, Domain
from equivcheck.core.network import Affine, Layer, Network
from equivcheck.core.rational import format_rational
from equivcheck.core.spec import Mode, Norm, Spec

MAX_PASSES = 4
MAX_SPARSE_DENSIFIED = 1_000_000  # a sparse layer of at most this many (rows x cols) entries is
# made dense for the form; a wider one (a convolution) makes the form decline at once


@dataclass(frozen=True)
class CanonResult:
    """The outcome of :func:`canonical_check`: ``proved`` (the relation holds on the whole
    domain, exactly) or not (nothing is known), and a one-line reason naming the rewrites."""

    proved: bool
    reason: str
    seconds: float = 0.0
    note: str | None = None  # said in the check's notes (e.g. why the forms were not built)


@dataclass(frozen=True)
class _Forms:
    a: Canonical
    b: Canonical
    table: UnitTable


def canonical_forms(a: Network, b: Network, box: Box, deadline: Deadline | None = None,
                    fold_terms: int | None = FOLD_TERMS) -> _Forms:
    """Both networks in canonical form over ``box`` (one shared table), repeated while a pass
    learns a fact that changes an expression built before it (``UnitTable.stale``: a unit
    proved stable, a twin relu(p) of a unit relu(-p) already read), at most ``MAX_PASSES``.
    Raises :class:`BudgetExceeded` when it takes too long, :class:`NoMatch` (with ``kept_wide``:
    how many always-active units ``fold_terms`` kept as units) when a unit has no partner.
    ``fold_terms``: see :class:`UnitTable`."""
    lo, hi = box.lower_float(), box.upper_float()
    ba, bb = _LazyBounds(a, lo, hi, deadline), _LazyBounds(b, lo, hi, deadline)
    table = UnitTable(box.lower, box.upper, fold_terms)
    try:
        for step in range(MAX_PASSES):
            table.stale = False
            if step == 0:
                fa, fb = _first_pass(a, b, table, ba, bb, deadline)
            else:
                fa = build(a, table, ba, deadline)
                fb = build(b, table, bb, deadline, second=True)
            if not table.stale:
                break
    except NoMatch as exc:
        exc.kept_wide = table.kept_wide
        raise
    return _Forms(fa, fb, table)


class _LazyBounds:
    """Sound float bounds of a network's layers over a box, each computed when first read (with
    the layers before it): back-substitution (:func:`symbolic_layer`) intersected with interval
    bounds for ReLU layers; interval bounds alone for layer 0, for layers without a ReLU (the
    form reads those only to bound their successors; ``symbolic_bounds`` back-substitutes them
    too, costly on the wide linear layers of a factored copy), for layers marked
    :meth:`cheap` and once ``deadline`` has passed."""

    def __init__(self, net: Network, lo, hi, deadline: Deadline | None) -> None:
        self.net, self.deadline = net, deadline
        self.lo, self.hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
        self.layers: list[LayerBounds] = []
        self.interval_only: set[int] = set()

    def cheap(self, k: int) -> None:
        """Layer ``k``, when it is computed, gets interval bounds only (still sound)."""
        self.interval_only.add(k)

    def __getitem__(self, k: int) -> LayerBounds:
        while len(self.layers) <= k:
            j, net = len(self.layers), self.net
            b = interval_step(net, j, self.layers, self.lo, self.hi)
            if (j > 0 and net.layers[j].relu and j not in self.interval_only
                    and not (self.deadline is not None and self.deadline.expired())):
                b = intersect(b, symbolic_layer(net, j, self.layers, self.lo, self.hi))
            self.layers.append(b)
        return self.layers[k]


def _first_pass(a: Network, b: Network, table: UnitTable, ba, bb,
                deadline: Deadline | None) -> tuple[Canonical, Canonical]:
    """Both forms, ``a`` built only up to its first ReLU layer that keeps units before ``b``
    starts: so a pair whose first such layers differ stops there (:class:`NoMatch`), without
    the cost of all of ``a``."""
    ga = build_steps(a, table, ba, deadline)
    gb = build_steps(b, table, bb, deadline, second=True)
    fa = _run_until_units(ga)
    fb = _run_until_units(gb)
    return fa or _run_until_units(ga, to_end=True), fb or _run_until_units(gb, to_end=True)


def _run_until_units(steps, to_end: bool = False) -> Canonical | None:
    """Advance a :func:`build_steps` generator past its next layer that keeps units (or to its
    end with ``to_end``); its form once it has finished, else None."""
    while True:
        try:
            kept = next(steps)
        except StopIteration as done:
            return done.value
        if kept and not to_end:
            return None


def canonical_check(a: Network, b: Network, spec: Spec, domain: Domain,
                    deadline: Deadline | None = None) -> CanonResult:
    """Whether the canonical forms of ``a`` and ``b`` prove ``spec`` on every box of ``domain``.

    ``proved`` True is a proof in exact arithmetic on the stored weights (see the module
    docstring); False means only that the forms did not settle it (or the budget ran out), and
    ``reason`` says where they differ.
    """
    t0 = time.monotonic()
    if len(a.layers) == len(b.layers) and all(
            la.relu == lb.relu and la.affine.same_as(lb.affine) for la, lb in zip(a.layers, b.layers)):
        return CanonResult(True, "the networks have the same layers, exactly (no search needed)",
                           time.monotonic() - t0)
    wide = _wide_sparse_layer(a) or _wide_sparse_layer(b)
    if wide is not None:  # only the same layers up to an order of the units, entry by entry
        permuted = permuted_match(a, b, deadline)
        if permuted is not None:
            return CanonResult(True, "the networks have the same layers, exactly, up to the "
                               f"order of the units in {permuted} hidden layer"
                               f"{'s' if permuted != 1 else ''} (no search needed)",
                               time.monotonic() - t0)
        why = f"canonical form not built: {wide}"
        return CanonResult(False, why, time.monotonic() - t0, note=why)
    a, b = _dense_copy(a), _dense_copy(b)
    reasons = []
    for index, box in enumerate(domain.boxes):
        quick = first_layers_differ(a, b, box, strict=spec.mode is Mode.STRICT)
        if quick is not None:
            return CanonResult(False, f"canonical forms differ: {quick}", time.monotonic() - t0)
        for fold in (FOLD_TERMS, None):  # wide always-active units kept, then folded too
            try:
                forms = canonical_forms(a, b, box, deadline, fold)
            except BudgetExceeded as exc:
                return CanonResult(False, f"canonical form not built ({exc} budget)",
                                   time.monotonic() - t0)
            except NoMatch as exc:
                if fold is not None and getattr(exc, "kept_wide", 0):
                    continue
                return CanonResult(False, f"canonical forms differ: {exc}", time.monotonic() - t0)
            ok, why = _compare(forms, spec)
            if ok or fold is None or not forms.table.kept_wide:
                break
        if not ok:
            where = f" (box {index})" if len(domain.boxes) > 1 else ""
            return CanonResult(False, why + where, time.monotonic() - t0)
        reasons.append(why)
    reason = reasons[0] if len(reasons) == 1 else f"{reasons[0]} (on all {len(reasons)} boxes)"
    return CanonResult(True, reason, time.monotonic() - t0)


def _wide_sparse_layer(net: Network) -> str | None:
    """Why ``net`` is out of the canonical form's reach, or None: the form's exact arithmetic
    works on dense integer layers, so a sparse layer past :data:`MAX_SPARSE_DENSIFIED`
    entries (a convolution) is declined at once rather than densified."""
    for k, layer in enumerate(net.layers):
        rows, cols = layer.weight.shape
        if layer.affine.is_sparse and rows * cols > MAX_SPARSE_DENSIFIED:
            return (f"layer {k} of {net.source} is a sparse {rows:,} x {cols:,} layer (a "
                    f"convolution, say); the form handles dense layers of up to "
                    f"{MAX_SPARSE_DENSIFIED:,} entries made from sparse ones")
    return None


def _dense_copy(net: Network) -> Network:
    """``net`` with its (small, see :func:`_wide_sparse_layer`) sparse layers made dense: the
    same values, so the same function and the same exact weights."""
    if not any(layer.affine.is_sparse for layer in net.layers):
        return net
    layers = []
    for layer in net.layers:
        aff = layer.affine
        if aff.is_sparse:
            exact = None if aff.exact_weight is None else aff.dense_rational_weight()
            aff = Affine(matrix.dense(aff.weight, "the canonical form"), aff.bias, exact,
                         aff.exact_bias)
        layers.append(Layer(aff, layer.relu, layer.name))
    return net.with_layers(layers)


def _compare(forms: _Forms, spec: Spec) -> tuple[bool, str]:
    ya, yb = forms.a.outputs, forms.b.outputs
    differ = next((j for j, (p, q) in enumerate(zip(ya, yb)) if p != q), None)
    if differ is None:  # the same function on the box: every relation of Spec holds on equal outputs
        return True, _describe(forms, "")
    if spec.mode is Mode.ARGMAX:
        return _compare_argmax(forms)
    if spec.mode is Mode.EPSILON:
        return _compare_epsilon(forms, spec)
    return False, f"canonical forms differ at output {differ}"


def _compare_argmax(forms: _Forms) -> tuple[bool, str]:
    if len(forms.a.outputs) == 1:
        return True, _describe(forms, "one output: the top class is always 0")
    # each network's outputs as they are, or with a strictly increasing map peeled off
    pa, pb = peel(forms.a.outputs, forms.table), peel(forms.b.outputs, forms.table)
    for ya, yb, which in ((forms.a.outputs, forms.b.outputs, ""), (pa, forms.b.outputs, "a"),
                          (forms.a.outputs, pb, "b"), (pa, pb, "a and b")):
        if ya is None or yb is None:
            continue
        got = _argmax_match(ya, yb)
        if got is not None:
            if which:
                got.insert(0, f"outputs of {which} through a strictly increasing map")
            return True, _describe(forms, ", ".join(got))
    return False, "canonical output differences are not positive multiples of each other"


def _argmax_match(ya: tuple[Lin, ...], yb: tuple[Lin, ...]) -> list[str] | None:
    """The phrases for ``yb = s ya + (a common amount)`` with ``s > 0``, or None."""
    da = [y.minus(ya[0]) for y in ya[1:]]
    db = [y.minus(yb[0]) for y in yb[1:]]
    ratio = _positive_ratio(da, db)
    if ratio is None:
        return None
    extra = []
    if ratio != 1:
        extra.append(f"outputs scaled by {format_rational(ratio)}")
    if any(p.minus(q.scaled(Fraction(1) / ratio)) != Lin() for p, q in zip(ya, yb)):
        extra.append("outputs shifted by a common amount")
    return extra


def _positive_ratio(da: list[Lin], db: list[Lin]) -> Fraction | None:
    """``s > 0`` with ``db == s * da`` term by term (1 when both are zero), else None."""
    ratio = None
    for p, q in zip(da, db):
        if p.nums and q.nums:
            ratio = q.coef(0) / p.coef(0)
            break
        if p.const and q.const:
            ratio = q.const / p.const
            break
        if p != q:  # one is zero where the other is not
            return None
    if ratio is None:
        return Fraction(1)
    if ratio <= 0:
        return None
    return ratio if all(q == p.scaled(ratio) for p, q in zip(da, db)) else None


def _compare_epsilon(forms: _Forms, spec: Spec) -> tuple[bool, str]:
    diffs = [p.minus(q) for p, q in zip(forms.a.outputs, forms.b.outputs)]
    if all(d == Lin() for d in diffs):
        return True, _describe(forms, "")
    sups = []
    for d in diffs:
        lo, hi = forms.table.interval(d)
        sups.append(max(abs(lo), abs(hi)))
    total = max(sups) if spec.norm is Norm.LINF else sum(sups, ZERO)
    if total > spec.tolerance:
        return False, (f"exact bounds of the affine output difference give "
                       f"{format_rational(total)} > {format_rational(spec.tolerance)}")
    n_units = len({s for d in diffs for s in d.srcs if s >= forms.table.n_inputs})
    what = f"{n_units} units" if n_units else "the inputs"
    return True, _describe(forms, f"the output difference is affine in {what} and bounded "
                                  f"exactly by {format_rational(total)}")


def _describe(forms: _Forms, extra: str) -> str:
    """``"canonical forms are equal: b = a up to: ..."``: the rewrites one network needed and
    the other did not (normalisations both needed alike are not rewrites between them)."""
    side_a, side_b = relative_rewrites(forms.a, forms.b)
    ra, rb = side_a.phrases(), side_b.phrases()
    permuted = _permuted_layers(forms.a.layer_units, forms.b.layer_units)
    if permuted:
        rb.append(f"{permuted} layer{'s' if permuted > 1 else ''} permuted")
    if ra and rb:
        parts = f"{', '.join(rb)} (on b); {', '.join(ra)} (on a)"
    elif ra:
        parts = f"{', '.join(ra)} (on a)"
    else:
        parts = ", ".join(rb) or "nothing (the same units)"
    text = f"canonical forms are equal: b = a up to: {parts}"
    if extra:
        text += f"; {extra}"
    return text + " (no search needed)"


def relative_rewrites(fa: Canonical, fb: Canonical) -> tuple[Rewrites, Rewrites]:
    """(what a needed beyond b, what b needed beyond a): the counts of :class:`Rewrites` where
    one network has more, and unit by unit the copies merged and the factors by which the two
    networks use the same canonical unit differently."""
    counts = {name: (getattr(fa.rewrites, name), getattr(fb.rewrites, name))
              for name in ("affine_merged", "layers_removed", "active_folded", "dead_removed",
                           "constant_folded", "fixed_inputs", "unused", "linearised")}
    ua: dict[int, list] = {}
    ub: dict[int, list] = {}
    for refs, into in ((fa.unit_refs, ua), (fb.unit_refs, ub)):
        for uid, scale, negated in refs:
            into.setdefault(uid, []).append((scale, negated))
    merged = [0, 0]
    rescaled = [0, 0]
    for uid in ua.keys() & ub.keys():
        pa, pb = ua[uid], ub[uid]
        if len(pa) != len(pb):
            merged[len(pb) > len(pa)] += abs(len(pa) - len(pb))
        elif sorted(s for s, _ in pa) != sorted(s for s, _ in pb):
            rescaled[1] += 1
    out = []
    for side in (0, 1):
        fields = {name: max(c[side] - c[1 - side], 0) for name, c in counts.items()}
        out.append(Rewrites(merged=merged[side], rescaled=rescaled[side], **fields))
    return out[0], out[1]


def _permuted_layers(la: tuple[tuple[int, ...], ...], lb: tuple[tuple[int, ...], ...]) -> int:
    """How many ReLU layers of b hold the units of a layer of a in another order."""
    by_set = {frozenset(u): u for u in la if u}
    return sum(1 for u in lb if u and frozenset(u) in by_set and by_set[frozenset(u)] != u
               and len(by_set[frozenset(u)]) == len(u) == len(set(u)))
