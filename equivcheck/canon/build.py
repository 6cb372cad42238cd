"""One network into the shared unit table: its outputs as exact expressions over canonical units.

Layer by layer, each unit's pre-activation is written as an exact expression over the canonical
sources (the previous layer's expressions combined with the stored weights, taken exactly); a
layer with no ReLU stays an expression (so stacks of affine layers merge), and a ReLU goes
through :meth:`UnitTable.relu`. What each unit became is counted
in a :class:`Rewrites`, the rewrites recognised.

The arithmetic is on integers, never one ``Fraction`` per weight: a layer is an integer matrix
over one denominator (:func:`~equivcheck.canon.exact.integer_layer`: float weights are dyadic),
the previous layer's expressions an integer matrix over theirs, and each row of the product is
brought to lowest terms with one gcd (MNIST 256x6 against a rewritten copy: under 1 s of CPU,
where one Fraction per weight took 12 s and more).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from itertools import compress, repeat
from operator import floordiv

import numpy as np

from equivcheck.bounds.interval import LayerBounds
from equivcheck.canon.exact import IntLayer, int_matmul, integer_layer
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
    they are used, exactly, only to prove units stable. With ``second``, a ReLU layer whose
    units the table already knows (:meth:`UnitTable.knows`) asks ``bounds`` (when it has a
    ``cheap`` method) for cheap bounds only: the other network's facts settle those units.
    Raises :class:`BudgetExceeded` once the table's work passes ``MAX_WORK`` or ``deadline``
    passes. With ``second`` (the table already holds the other network), raises
    :class:`NoMatch` when a ReLU layer adds many new units (:func:`_check_new_units`).
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
        ints = integer_layer(layer.affine)
        pre = _layer_expressions(ints, h, table, deadline)
        table.read.update(s for e in h for s in e.srcs if s >= table.n_inputs)
        for i, z in enumerate(pre):
            pre[i], n = table.cancel_twins(z)
            counts["linearised"] += n
        if second and layer.relu and hasattr(bounds, "cheap") and all(map(table.knows, pre)):
            bounds.cheap(k)  # every unit is settled by the first network's facts
        lb = bounds[k] if bounds is not None else None
        near = _near_zero(lb) if lb is not None else ()
        exact = (_exact_step(ints, near, _input_ranges(net, k, bounds, table, h, prev_exact))
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
    table.read.update(s for e in h for s in e.srcs if s >= table.n_inputs)
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


def _exact_step(layer: IntLayer, rows: list[int], ranges) -> dict[int, tuple[Fraction, Fraction]]:
    """Exact interval bounds of ``w @ h + b`` on the rows ``rows`` for ``h`` in ``ranges``
    (integer dot products over the lcm of the ranges' denominators)."""
    den = math.lcm(1, *(q.denominator for r in ranges for q in r))
    low = np.array([r[0].numerator * (den // r[0].denominator) for r in ranges] + [den],
                   dtype=object)
    high = np.array([r[1].numerator * (den // r[1].denominator) for r in ranges] + [den],
                    dtype=object)
    out = {}
    for i in rows:
        n = np.append(layer.n[i], layer.nb[i])
        pos = n > 0
        lo = n[pos].dot(low[pos]) + n[~pos].dot(high[~pos])
        hi = n[pos].dot(high[pos]) + n[~pos].dot(low[~pos])
        out[i] = (Fraction(int(lo), layer.den * den), Fraction(int(hi), layer.den * den))
    return out


def _layer_expressions(layer: IntLayer, h: list[Lin], table: UnitTable,
                       deadline: Deadline | None = None) -> list[Lin]:
    """``w @ h + b`` for the exact layer ``layer`` and expressions ``h``, one per row, in
    integer arithmetic: ``h`` over one common denominator as an integer matrix over the sources
    it reads (a column scaling when every input is one source or a constant, the common case,
    else an exact product, :func:`int_matmul`). :class:`BudgetExceeded` once ``deadline``
    passes."""
    rows = layer.n.shape[0]
    den = math.lcm(1, *(e.den for e in h))
    srcs = sorted({s for e in h for s in e.srcs})
    consts = np.array([e.cnum * (den // e.den) for e in h], dtype=object)
    pc = layer.nb * den + (layer.n.dot(consts) if any(e.cnum for e in h) else 0)
    simple = all(len(e.nums) <= 1 for e in h)
    if simple:
        cols = [j for j, e in enumerate(h) if e.nums]
        order = sorted(cols, key=lambda j: h[j].srcs[0])
        scale = np.array([h[j].nums[0] * (den // h[j].den) for j in order], dtype=object)
        if order == list(range(layer.n.shape[1])):
            p = layer.n
        else:
            p = layer.n[:, order] if order else np.zeros((rows, 0), dtype=object)
        if any(x != 1 for x in scale):
            p = p * scale[None, :]
        keys = [h[j].srcs[0] for j in order]
        if len(set(keys)) < len(keys):  # a source read twice (a merged unit): add its columns
            starts = [k for k in range(len(keys)) if k == 0 or keys[k] != keys[k - 1]]
            p = np.add.reduceat(p, starts, axis=1)
        table.work += rows * len(order)
    else:
        index = {s: k for k, s in enumerate(srcs)}
        mat = np.zeros((len(h), len(srcs)), dtype=np.int64).astype(object)
        for j, e in enumerate(h):
            f = den // e.den
            for s, n in zip(e.srcs, e.nums):
                mat[j, index[s]] = n * f
        if deadline is not None and deadline.expired():
            raise BudgetExceeded("time")
        p = int_matmul(layer, mat)
        table.work += rows * sum(len(e.nums) for e in h)
    total = layer.den * den
    out = []
    for i, row in enumerate(p.tolist()):  # each row in lowest terms (C-level loops over ints)
        if deadline is not None and i % 64 == 0 and deadline.expired():
            raise BudgetExceeded("time")
        nums = tuple(filter(None, row))
        cnum = int(pc[i])
        g = math.gcd(cnum, total, *nums)
        if g == 1:
            out.append(Lin(tuple(compress(srcs, row)), nums, cnum, total))
        else:
            out.append(Lin(tuple(compress(srcs, row)), tuple(map(floordiv, nums, repeat(g))),
                           cnum // g, total // g))
    return out
