"""One network into the shared unit table: its outputs as exact expressions over canonical units.

Layer by layer, each unit's pre-activation is written as an exact expression over the canonical
sources (the previous layer's expressions combined with the stored weights, taken exactly); a
layer with no ReLU stays an expression (so stacks of affine layers merge), and a ReLU goes
through :meth:`UnitTable.relu`. What each unit became is counted
in a :class:`Rewrites`, the rewrites recognised.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from equivcheck.bounds.interval import LayerBounds
from equivcheck.canon.table import ONE, ZERO, Lin, UnitTable
from equivcheck.core.deadline import Deadline
from equivcheck.core.network import Network

MAX_WORK = 20_000_000  # coefficient operations per comparison before it gives up
NEAR = 1e-6  # float bounds this close to 0 (relative) are re-done in exact arithmetic


class NoMatch(Exception):
    """Internal: a layer of the second network is mostly units the first one does not have, so
    the forms will not match (the comparison stops early; nothing is concluded)."""


class BudgetExceeded(Exception):
    """Internal: the canonical form took more work or time than its budget (never reaches a user:
    the comparison is then simply not conclusive)."""


@dataclass(frozen=True)
class Rewrites:
    """What bringing one network to the canonical form took (counts of units and layers)."""

    affine_merged: int = 0  # hidden layers without ReLU, composed into the next layer
    layers_removed: int = 0  # ReLU layers all of whose units were folded away
    active_folded: int = 0  # units proved always active on the domain: the identity
    dead_removed: int = 0  # units proved dead on the domain: zero
    constant_folded: int = 0  # units whose pre-activation is a constant (zero rows, fixed inputs)
    merged: int = 0  # units that are another unit of the same network (duplicates, splits)
    rescaled: int = 0  # units with a positive factor (moved into the next layer)
    negated: int = 0  # units whose pre-activation leads with a negative coefficient (not a
    # rewrite between two networks: their canonical unit is the same either way)
    linearised: int = 0  # pairs c relu(p) + d relu(-p) read as (c + d) relu(p) - d p
    fixed_inputs: int = 0  # inputs with one value on the domain
    unused: int = 0  # canonical units of this network the outputs do not depend on

    def phrases(self) -> list[str]:
        """The non-zero counts as short phrases (``"2 identity layers removed"``)."""
        table = [
            (self.layers_removed, "layer removed", "layers removed"),
            (self.affine_merged, "affine layer merged", "affine layers merged"),
            (self.active_folded, "always-active unit folded", "always-active units folded"),
            (self.dead_removed, "dead unit removed", "dead units removed"),
            (self.constant_folded, "constant unit folded", "constant units folded"),
            (self.merged, "unit merged", "units merged"),
            (self.rescaled, "unit rescaled", "units rescaled"),
            (self.linearised, "relu(z) - relu(-z) pair made linear",
             "relu(z) - relu(-z) pairs made linear"),
            (self.fixed_inputs, "fixed input substituted", "fixed inputs substituted"),
            (self.unused, "unused unit dropped", "unused units dropped"),
        ]
        return [f"{n} {one if n == 1 else many}" for n, one, many in table if n]


@dataclass(frozen=True)
class Canonical:
    """One network in canonical form: its outputs over the table's sources, the rewrites, and
    the canonical unit ids of each ReLU layer in order (for spotting permuted layers)."""

    outputs: tuple[Lin, ...]
    rewrites: Rewrites
    layer_units: tuple[tuple[int, ...], ...]
    unit_refs: tuple[tuple[int, Fraction, bool], ...]  # per unit kept: (canonical id, scale, negated)


def build(net: Network, table: UnitTable, bounds: list[LayerBounds] | None,
          deadline: Deadline | None = None, second: bool = False) -> Canonical:
    """:func:`build_steps` run to the end."""
    steps = build_steps(net, table, bounds, deadline, second)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def build_steps(net: Network, table: UnitTable, bounds: list[LayerBounds] | None,
                deadline: Deadline | None = None, second: bool = False):
    """A generator: yields after each ReLU layer how many units it kept, and returns (as its
    ``StopIteration`` value) the :class:`Canonical` form of ``net``: its outputs as exact
    expressions over ``table``'s sources, equal to ``net``'s outputs at every point of the
    table's box.

    ``bounds`` are sound float bounds of every layer's pre-activations over the box (or None);
    they are used, exactly, only to prove units stable. Raises :class:`BudgetExceeded` once the
    table's work passes ``MAX_WORK`` or ``deadline`` passes. With ``second`` (the table already
    holds the other network), raises :class:`NoMatch` when a ReLU layer adds many new units
    (:func:`_check_new_units`).
    """
    counts: Counter[str] = Counter()
    h: list[Lin] = []
    for i, (lo, hi) in enumerate(zip(table.input_lower, table.input_upper)):
        if lo == hi:
            h.append(Lin.constant(lo))
            counts["fixed_inputs"] += 1
        else:
            h.append(Lin.source(i))
    layer_units: list[tuple[int, ...]] = []
    refs: list[tuple[int, Fraction, bool]] = []
    last = len(net.layers) - 1
    prev_exact: dict[int, tuple[Fraction, Fraction]] = {}
    for k, layer in enumerate(net.layers):
        if deadline is not None and deadline.expired():
            raise BudgetExceeded("time")
        w = layer.affine.rational_weight()
        b = layer.affine.rational_bias()
        pre = _layer_expressions(w, b, h, table, deadline)
        for i, z in enumerate(pre):
            pre[i], n = table.cancel_twins(z)
            counts["linearised"] += n
        lb = bounds[k] if bounds is not None else None
        near = _near_zero(lb) if lb is not None else ()
        exact = (_exact_step(w, b, near, _input_ranges(net, k, bounds, table, h, prev_exact))
                 if near else {})
        prev_exact = exact
        if not layer.relu:
            if k != last:
                counts["affine_merged"] += 1
            h = pre
            continue
        out: list[Lin] = []
        before = len(table.defs)
        ids: list[int] = []
        seen: set[int] = set()
        for i, z in enumerate(pre):
            zl = _exact(lb.lower[i]) if lb is not None else None
            zu = _exact(lb.upper[i]) if lb is not None else None
            if i in exact:
                el, eu = exact[i]
                zl = el if zl is None else max(zl, el)
                zu = eu if zu is None else min(zu, eu)
            r = table.relu(z, zl, zu)
            out.append(r.value)
            if r.kind == "unit":
                if r.unit in seen:
                    counts["merged"] += 1
                seen.add(r.unit)
                ids.append(r.unit)
                refs.append((r.unit, r.scale, r.negated))
                counts["rescaled"] += r.scale != ONE
                counts["negated"] += r.negated
            else:
                counts[{"active": "active_folded", "dead": "dead_removed",
                        "constant": "constant_folded"}[r.kind]] += 1
        if second and k < last - 1:  # (the last hidden layer may be an output map: argmax)
            _check_new_units(table, before, len(ids), f"layer {k} of {net.source}")
        yield len(seen)
        if not seen:
            counts["layers_removed"] += 1
        layer_units.append(tuple(ids))
        h = out
        if table.work > MAX_WORK:
            raise BudgetExceeded("work")
    outputs = []
    for e in h:
        e, n = table.cancel_twins(e)
        counts["linearised"] += n
        outputs.append(e)
    outputs = tuple(outputs)
    used = table.used_units(outputs)
    created = {u for units in layer_units for u in units}
    counts["unused"] = len(created - used)
    return Canonical(outputs, Rewrites(**counts), tuple(layer_units), tuple(refs))


def _exact(v) -> Fraction | None:
    """The exact value of a float bound, None when it is not finite."""
    f = float(v)
    return Fraction(f) if math.isfinite(f) else None


def _check_new_units(table: UnitTable, before: int, kept: int, where: str) -> None:
    """:class:`NoMatch` when the units created since ``before`` (twins relu(p), relu(-p) set
    aside: they may cancel into a linear map) number more than ``max(4, kept / 2)``, ``kept``
    the units the layer kept."""
    paired = set(table.twin) | set(table.twin.values())
    new = [u for u in range(table.n_inputs + before, table.n_inputs + len(table.defs))
           if u not in paired]
    if len(new) > max(4, kept // 2):
        raise NoMatch(f"{where} has {len(new)} units the other network does not have")


def _near_zero(lb: LayerBounds) -> list[int]:
    """The units whose float bounds straddle 0 by no more than rounding allowances could
    account for (an identity ReLU on a ReLU's output has float lower bound -1e-16, say)."""
    lo, hi = np.asarray(lb.lower), np.asarray(lb.upper)
    scale = np.maximum(np.abs(lo), np.abs(hi)) + 1e-300
    near = (lo < 0) & (hi > 0) & ((-lo <= NEAR * scale) | (hi <= NEAR * scale))
    return [int(i) for i in np.nonzero(near)[0]]


def _input_ranges(net: Network, k: int, bounds, table: UnitTable,
                  h: list[Lin], prev_exact: dict) -> list[tuple[Fraction, Fraction]]:
    """Exact sound ranges of layer ``k``'s inputs ``h``: the box for layer 0, else the
    intersection of the previous layer's float bounds taken exactly (after its ReLU: at least 0,
    exactly), the exact bounds ``prev_exact`` computed for some of its units, and the exact
    interval of each input's canonical expression."""
    if k == 0:
        return list(zip(table.input_lower, table.input_upper))
    prev = bounds[k - 1]
    relu = net.layers[k - 1].relu
    out = []
    for j, (lo, hi, e) in enumerate(zip(prev.lower, prev.upper, h)):
        ql, qh = table.interval(e)  # of the value after the ReLU
        fl, fh = _exact(lo), _exact(hi)
        if j in prev_exact:
            fl = prev_exact[j][0] if fl is None else max(fl, prev_exact[j][0])
            fh = prev_exact[j][1] if fh is None else min(fh, prev_exact[j][1])
        if relu:
            fl = ZERO if fl is None else max(fl, ZERO)
            fh = None if fh is None else max(fh, ZERO)
        out.append((ql if fl is None else max(ql, fl), qh if fh is None else min(qh, fh)))
    return out


def _exact_step(w, b, rows: list[int], ranges) -> dict[int, tuple[Fraction, Fraction]]:
    """Exact interval bounds of ``w @ h + b`` on the rows ``rows`` for ``h`` in ``ranges``."""
    out = {}
    for i in rows:
        lo = hi = b[i]
        for c, (p, q) in zip(w[i], ranges):
            if c > 0:
                lo += c * p
                hi += c * q
            elif c < 0:
                lo += c * q
                hi += c * p
        out[i] = (lo, hi)
    return out


def _layer_expressions(w, b, h: list[Lin], table: UnitTable,
                       deadline: Deadline | None = None) -> list[Lin]:
    """``w @ h + b`` for exact weights ``w``/``b`` and expressions ``h``, one per row (inputs
    that are one source times a coefficient, the common case, take a short path).
    :class:`BudgetExceeded` once ``deadline`` passes."""
    rows = w.shape[0]
    simple = [(j, e.terms[0][0], e.terms[0][1]) for j, e in enumerate(h)
              if len(e.terms) == 1 and e.const == 0]
    other = [(j, e) for j, e in enumerate(h) if not (len(e.terms) <= 1 and e.const == 0)]
    out = []
    for i in range(rows):
        if deadline is not None and i % 16 == 0 and deadline.expired():
            raise BudgetExceeded("time")
        row = w[i]
        acc: dict[int, Fraction] = {}
        const = b[i]
        for j, src, c in simple:
            v = row[j]
            if v:
                x = v if c == 1 else v * c
                if src in acc:
                    acc[src] += x
                else:
                    acc[src] = x
        for j, e in other:
            v = row[j]
            if not v:
                continue
            for src, c in e.terms:
                x = v * c
                if src in acc:
                    acc[src] += x
                else:
                    acc[src] = x
            if e.const:
                const += v * e.const
            table.work += len(e.terms)
        out.append(Lin.of(acc, const))
    table.work += rows * len(simple)
    return out
