"""SMT-LIB encoding of "two networks disagree somewhere in a box" in linear real arithmetic.

Both networks read the same input variables. Every weight is written as the exact rational of
the stored value (``float.as_integer_ratio``, never a decimal string). A ReLU is encoded by what
sound bounds say about it: stably inactive units are the constant 0 and vanish from the next
layer, stably active units are the identity, and only unstable units get the disjunction
``h >= 0, h >= z, (h <= 0 or h <= z)`` (plus their bounds). Layers that are identical at the start
of both networks are encoded once and shared. Finally the negation of the spec is asserted, so
*unsat* means the networks agree on the whole box and a model is a counterexample (for top1, a
candidate: its confidence condition is relaxed to a necessary linear one, see :func:`_confident`).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from equivcheck.bounds.difference import DiffBounds
from equivcheck.bounds.interval import LayerBounds, StabilityCode
from equivcheck.core.domain import Box
from equivcheck.core.network import Network
from equivcheck.core.spec import Mode, Norm, Spec, exp_lower, tangent_points


def num(v) -> str:
    """SMT-LIB literal of the exact value of a float or Fraction."""
    if isinstance(v, Fraction):
        p, q = v.numerator, v.denominator
    else:
        p, q = float(v).as_integer_ratio()
    body = str(abs(p)) if q == 1 else f"(/ {abs(p)} {q})"
    return f"(- {body})" if p < 0 else body


def shared_prefix(a: Network, b: Network) -> int:
    """Number of leading layers that are exactly the same in both networks."""
    k = 0
    for la, lb in zip(a.layers, b.layers):
        if la.relu != lb.relu or not la.affine.same_as(lb.affine):
            break
        k += 1
    return k


@dataclass(frozen=True)
class Encoding:
    """The SMT-LIB text and the names a model is read back from."""

    text: str
    inputs: tuple[str, ...]
    unstable: int
    shared_units: int  # units of network b encoded by a unit of network a
    same_outputs: bool  # both networks' outputs are the same expressions: nothing to solve


Ref = "tuple[str, Fraction] | None"  # a unit's value: scale * variable, or the constant 0 (None)


class _Writer:
    """Writes declarations and assertions; units with proportional expressions are written once."""

    def __init__(self, text: bool = True) -> None:
        self.text = text  # False: only which units are shared (no SMT text is written)
        self.lines: list[str] = []
        self.unstable = 0
        self.shared = 0
        # approximate key -> [(ref, norm, vars, coefs, bias)] for exact confirmation
        self._units: dict[tuple, list[tuple]] = {}

    def declare(self, name: str) -> None:
        self.lines.append(f"(declare-const {name} Real)")

    def bound(self, name: str, lo, hi, lo_strict: bool = False, hi_strict: bool = False) -> None:
        self.lines.append(f"(assert ({'<' if lo_strict else '<='} {num(lo)} {name}))")
        self.lines.append(f"(assert ({'<' if hi_strict else '<='} {name} {num(hi)}))")

    def _lookup(self, key, norm, names, coefs, bias):
        for ref, norm0, names0, coefs0, bias0 in self._units.get(key, ()):
            if names0 != names:
                continue
            if _same_ratio(coefs, bias, norm, coefs0, bias0, norm0):
                if ref is None:
                    return True, None
                scale = ref[1] * Fraction(norm) / Fraction(norm0)
                return True, (ref[0], scale)
        return False, None

    def layer(self, prefix: str, layer, h_in: list, bounds: LayerBounds) -> list:
        """Encode one layer; returns each unit's value as (variable, positive scale) or None (0).

        A unit whose pre-activation is a positive multiple c of a unit already written (same
        input variables, exactly proportional coefficients and bias), with the same activation,
        is c times that unit, because relu(c z) = c relu(z) for c > 0. So identical prefixes,
        permuted units, positively rescaled units and units left alone by removing others are
        all encoded once. Proportionality is confirmed in exact arithmetic.
        """
        exact = not layer.affine.is_exact_float
        w = layer.affine.rational_weight() if exact else (
            layer.weight.data if layer.affine.is_sparse else layer.weight)
        b = layer.affine.rational_bias() if exact else layer.bias
        live = sorted((j for j, h in enumerate(h_in) if h is not None), key=lambda j: h_in[j][0])
        names_all = tuple(h_in[j][0] for j in live)
        scales = [h_in[j][1] for j in live]
        unit_scales = all(sc == 1 for sc in scales)
        stab = bounds.stability() if layer.relu else np.full(layer.out_dim, StabilityCode.ACTIVE)
        sparse = layer.affine.is_sparse
        if sparse:  # each unit's sum runs over its row's stored entries only
            pos = np.full(layer.in_dim, -1, dtype=np.int64)
            pos[live] = np.arange(len(live))
            indptr, indices = layer.weight.indptr, layer.weight.indices
        out: list = []
        for i in range(layer.out_dim):
            if sparse:
                ks = pos[indices[indptr[i]:indptr[i + 1]]]
                vals = w[indptr[i]:indptr[i + 1]]
                keep = np.flatnonzero(ks >= 0)
                order = keep[np.argsort(ks[keep], kind="stable")]
                nz = [int(ks[o]) for o in order if vals[o] != 0]
                cz = [vals[o] if unit_scales else Fraction(vals[o]) * scales[int(ks[o])]
                      for o in order if vals[o] != 0]
            else:
                row = w[i][live] if live else w[i][:0]
                if unit_scales:
                    coefs = row
                else:
                    coefs = np.array([Fraction(row[k]) * scales[k] for k in range(len(live))], dtype=object)
                nz = [k for k in range(len(live)) if coefs[k] != 0]
                cz = [coefs[k] for k in nz]
            names = tuple(names_all[k] for k in nz)
            bias = b[i]
            norm = abs(cz[0]) if cz else (abs(bias) if bias != 0 else 1)
            fnorm = float(norm)
            key = (layer.relu, names, tuple(float(c) / fnorm for c in cz), float(bias) / fnorm)
            hit, ref = self._lookup(key, norm, names, cz, bias)
            if hit:
                out.append(ref)
                self.shared += 1
                continue
            entry = self._units.setdefault(key, [])
            if layer.relu and stab[i] == StabilityCode.INACTIVE:
                entry.append((None, norm, names, cz, bias))
                out.append(None)
                continue
            if not self.text:
                ref = (f"{prefix}_{i}", Fraction(1))
                entry.append((ref, norm, names, cz, bias))
                out.append(ref)
                continue
            terms = [f"(* {num(c)} {v})" for v, c in zip(names, cz)] + [num(bias)]
            expr = terms[0] if len(terms) == 1 else "(+ " + " ".join(terms) + ")"
            lo, hi = bounds.lower[i], bounds.upper[i]
            if not layer.relu or stab[i] == StabilityCode.ACTIVE:
                name = f"{prefix}_{i}"
                self.declare(name)
                self.lines.append(f"(assert (= {name} {expr}))")
                self.bound(name, lo, hi)
            else:
                z, name = f"z{prefix}_{i}", f"{prefix}_{i}"
                self.declare(z)
                self.declare(name)
                self.lines.append(f"(assert (= {z} {expr}))")
                self.bound(z, lo, hi)
                self.lines.append(f"(assert (>= {name} 0))")
                self.lines.append(f"(assert (>= {name} {z}))")
                self.lines.append(f"(assert (<= {name} {num(max(hi, 0.0))}))")
                self.lines.append(f"(assert (or (<= {name} 0) (<= {name} {z})))")
                self.unstable += 1
            ref = (name, Fraction(1))
            entry.append((ref, norm, names, cz, bias))
            out.append(ref)
        return out


def _same_ratio(c1, b1, n1, c0, b0, n0) -> bool:
    """Exactly (c1, b1) / n1 == (c0, b0) / n0 (n positive)."""
    if n1 == n0 and all(x == y for x, y in zip(c1, c0)) and b1 == b0:
        return True
    q1, q0 = Fraction(n1), Fraction(n0)
    if Fraction(b1) * q0 != Fraction(b0) * q1:
        return False
    return all(Fraction(x) * q0 == Fraction(y) * q1 for x, y in zip(c1, c0))


def _ref(ref) -> str:
    if ref is None:
        return "0"
    name, scale = ref
    return name if scale == 1 else f"(* {num(scale)} {name})"


def same_units(a: Network, b: Network, bounds_a: list[LayerBounds], bounds_b: list[LayerBounds]
               ) -> tuple[bool, int]:
    """Whether both networks compute their outputs through the same units over the box of the
    (sound) bounds, as :func:`encode_disagreement` finds it (``Encoding.same_outputs``), and how
    many units of ``b`` are units of ``a``; without writing the SMT text (a model against its copy
    with stable units removed: PROVED with no solver)."""
    wr = _Writer(text=False)
    ha: list = [(f"x_{i}", Fraction(1)) for i in range(a.in_dim)]
    hb = list(ha)
    for li, layer in enumerate(a.layers):
        ha = wr.layer(f"a{li}", layer, ha, bounds_a[li])
    wr.shared = 0
    for li, layer in enumerate(b.layers):
        hb = wr.layer(f"b{li}", layer, hb, bounds_b[li])
    return ha == hb, wr.shared


def encode_disagreement(
    a: Network,
    b: Network,
    box: Box,
    bounds_a: list[LayerBounds],
    bounds_b: list[LayerBounds],
    spec: Spec,
    diff: list[DiffBounds] | None = None,
) -> Encoding:
    """SMT-LIB text that is satisfiable iff some x in ``box`` violates ``spec``.

    Sound as long as ``bounds_a``/``bounds_b`` (and ``diff``, sound bounds of the unit-wise
    difference of same-shaped networks) are sound over ``box``: they are only used to drop
    impossible ReLU phases and as implied constraints.
    """
    wr = _Writer()
    inputs = tuple(f"x_{i}" for i in range(box.dim))
    for name, lo, hi, ls, us in zip(inputs, box.lower, box.upper, box.lower_strict, box.upper_strict):
        wr.declare(name)
        wr.bound(name, lo, hi, ls, us)
    ha: list = [(x, Fraction(1)) for x in inputs]
    per_layer_a = []
    for li, layer in enumerate(a.layers):
        ha = wr.layer(f"a{li}", layer, ha, bounds_a[li])
        per_layer_a.append(ha)
    wr.shared = 0
    hb: list = [(x, Fraction(1)) for x in inputs]
    for li, layer in enumerate(b.layers):
        hb = wr.layer(f"b{li}", layer, hb, bounds_b[li])
        if diff is not None:
            for ra, rb, lo, hi in zip(per_layer_a[li], hb, diff[li].post_lower, diff[li].post_upper):
                if ra != rb:  # implied: the difference of the two units lies within its bounds
                    d = f"(- {_ref(ra)} {_ref(rb)})"
                    wr.lines.append(f"(assert (<= {num(lo)} {d}))")
                    wr.lines.append(f"(assert (<= {d} {num(hi)}))")
    wr.lines.append(_negated_spec([_ref(v) for v in ha], [_ref(v) for v in hb], spec, wr))
    return Encoding("\n".join(wr.lines) + "\n", inputs, wr.unstable, wr.shared, ha == hb)


# For other encodings (the quantized one of :mod:`equivcheck.solve.quant_encode`) that write
# their layers and their negated spec exactly as this module does.
Writer = _Writer
ref_text = _ref


def negated_spec(ya: list[str], yb: list[str], spec: Spec, wr: _Writer) -> str:
    """The SMT-LIB assertion(s) "the outputs ``ya`` and ``yb`` (expressions) violate ``spec``",
    declaring what they need through ``wr``; the same text :func:`encode_disagreement` ends with."""
    return _negated_spec(ya, yb, spec, wr)


def _negated_spec(ya: list[str], yb: list[str], spec: Spec, wr: _Writer) -> str:
    n = len(ya)
    if spec.mode is Mode.STRICT:
        return "(assert (or " + " ".join(f"(not (= {p} {q}))" for p, q in zip(ya, yb)) + " false))"
    if spec.mode is Mode.EPSILON:
        eps = num(spec.tolerance)
        if spec.norm is Norm.LINF:
            parts = [f"(> (- {p} {q}) {eps}) (< (- {p} {q}) (- {eps}))" for p, q in zip(ya, yb)]
            return "(assert (or " + " ".join(parts) + "))"
        ts = []
        for j, (p, q) in enumerate(zip(ya, yb)):
            t = f"t_{j}"
            wr.declare(t)
            wr.lines.append(f"(assert (or (= {t} (- {p} {q})) (= {t} (- {q} {p}))))")
            ts.append(t)
        total = ts[0] if len(ts) == 1 else "(+ " + " ".join(ts) + ")"
        return f"(assert (> {total} {eps}))"
    # argmax and top1: class variables chosen as numpy.argmax chooses (first maximal index)
    lines = []
    for tag, y in (("ca", ya), ("cb", yb)):
        lines.append(f"(declare-const {tag} Int)")
        lines.append(f"(assert (and (<= 0 {tag}) (< {tag} {n})))")
        for i in range(n):
            conds = [f"(> {y[i]} {y[j]})" for j in range(i)] + [
                f"(>= {y[i]} {y[j]})" for j in range(i + 1, n)
            ]
            body = "(and " + " ".join(conds) + " true)"
            lines.append(f"(assert (=> (= {tag} {i}) {body}))")
    lines.append("(assert (not (= ca cb)))")
    if spec.mode is Mode.TOP1:
        lines.extend(_confident(ya, spec, wr))
    return "\n".join(lines)


def _confident(y: list[str], spec: Spec, wr: _Writer) -> list[str]:
    """top1: "f's softmax confidence in its class i = ca is at least DELTA", relaxed to linear
    conditions that every confident point meets (so unsat is a proof; a model may still fall
    short of the confidence, and is only a counterexample once the real softmax confirms it).

    With d_j = y_j - y_i, confidence >= DELTA is sum_{j != i} exp(d_j) <= r = (1 - DELTA) / DELTA.
    Written: (1) the logit-margin condition y_i - y_j >= ln(DELTA / (1 - DELTA)), with
    :meth:`Spec.logit_margin` below the logarithm: strictly (``>``: the logarithm of a rational
    other than 1 is irrational) or ``>=`` when it is exact (DELTA = 1/2); (2) variables
    u_j >= 0 with sum u_j <= r, each above tangents of exp at rational points t from below,
    u_j >= e(t) (1 + d_j - t) with e(t) <= exp(t) (:func:`~equivcheck.core.spec.exp_lower`),
    since exp(d) >= exp(t) (1 + d - t) >= e(t) (1 + d - t) where 1 + d - t >= 0, and
    e(t) (1 + d - t) <= 0 < exp(d) elsewhere.
    """
    n = len(y)
    margin = spec.logit_margin()
    low, op = num(margin), ">=" if spec.confidence == Fraction(1, 2) else ">"
    r = (1 - spec.confidence) / spec.confidence
    tangents = [(t, exp_lower(t)) for t in tangent_points(r, n)]
    lines = []
    for i in range(n):
        conds = [f"({op} (- {y[i]} {y[j]}) {low})" for j in range(n) if j != i]
        us = []
        for j in range(n):
            if j == i:
                continue
            u = f"u_{i}_{j}"
            wr.declare(u)
            us.append(u)
            conds.append(f"(>= {u} 0)")
            for t, e in tangents:
                conds.append(f"(>= {u} (* {num(e)} (+ 1 (- {y[j]} {y[i]}) {num(-t)})))")
        total = us[0] if len(us) == 1 else "(+ " + " ".join(us) + ")"
        conds.append(f"(<= {total} {num(r)})")
        lines.append(f"(assert (=> (= ca {i}) (and {' '.join(conds)})))")
    return lines
