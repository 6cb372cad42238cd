"""SMT-LIB encoding of "two networks disagree somewhere in a box" in linear real arithmetic.

Both networks read the same input variables. Every weight is written as the exact rational of
the stored value (``float.as_integer_ratio``, never a decimal string). A ReLU is encoded by what
sound bounds say about it: stably inactive units are the constant 0 and vanish from the next
layer, stably active units are the identity, and only unstable units get the disjunction
``h >= 0, h >= z, (h <= 0 or h <= z)`` (plus their bounds). Layers that are identical at the start
of both networks are encoded once and shared. Finally the negation of the spec is asserted, so
*unsat* means the networks agree on the whole box and a model is a counterexample.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .bounds import LayerBounds, Stability
from .domain import Box
from .network import Network
from .spec import Mode, Norm, Spec


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


class _Writer:
    """Writes declarations and assertions; units with the same expression are written once."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.unstable = 0
        self.shared = 0
        self._units: dict[tuple[str, bool], str | None] = {}

    def declare(self, name: str) -> None:
        self.lines.append(f"(declare-const {name} Real)")

    def bound(self, name: str, lo, hi) -> None:
        self.lines.append(f"(assert (<= {num(lo)} {name}))")
        self.lines.append(f"(assert (<= {name} {num(hi)}))")

    def layer(self, prefix: str, layer, h_in: list[str | None], bounds: LayerBounds) -> list[str | None]:
        """Encode one layer; returns the output names (``None`` for a constant 0).

        A unit whose pre-activation is the same linear expression (same input variables, same
        exact coefficients) as a unit already written, and with the same activation, *is* that
        unit: it reuses its variable (or its constant 0). This shares identical prefixes, units
        permuted between the networks, and units left unchanged by removing others.
        """
        w = layer.affine.rational_weight() if not layer.affine.is_exact_float else layer.weight
        b = layer.affine.rational_bias() if not layer.affine.is_exact_float else layer.bias
        live = [j for j, h in enumerate(h_in) if h is not None]
        stab = bounds.stability() if layer.relu else np.full(layer.out_dim, Stability.ACTIVE)
        out: list[str | None] = []
        for i in range(layer.out_dim):
            row = w[i]
            pairs = sorted((h_in[j], num(row[j])) for j in live if row[j] != 0)
            terms = [f"(* {c} {v})" for v, c in pairs] + [num(b[i])]
            expr = terms[0] if len(terms) == 1 else "(+ " + " ".join(terms) + ")"
            key = (expr, layer.relu)
            if key in self._units:
                out.append(self._units[key])
                self.shared += 1
                continue
            if layer.relu and stab[i] == Stability.INACTIVE:
                self._units[key] = None
                out.append(None)
                continue
            lo, hi = bounds.lower[i], bounds.upper[i]
            if not layer.relu or stab[i] == Stability.ACTIVE:
                name = f"{prefix}_{i}"
                self.declare(name)
                self.lines.append(f"(assert (= {name} {expr}))")
                self.bound(name, lo, hi)
                self._units[key] = name
                out.append(name)
                continue
            z, h = f"z{prefix}_{i}", f"{prefix}_{i}"
            self.declare(z)
            self.declare(h)
            self.lines.append(f"(assert (= {z} {expr}))")
            self.bound(z, lo, hi)
            self.lines.append(f"(assert (>= {h} 0))")
            self.lines.append(f"(assert (>= {h} {z}))")
            self.lines.append(f"(assert (<= {h} {num(max(hi, 0.0))}))")
            self.lines.append(f"(assert (or (<= {h} 0) (<= {h} {z})))")
            self.unstable += 1
            self._units[key] = h
            out.append(h)
        return out


def _ref(name: str | None) -> str:
    return name if name is not None else "0"


def encode_disagreement(
    a: Network,
    b: Network,
    box: Box,
    bounds_a: list[LayerBounds],
    bounds_b: list[LayerBounds],
    spec: Spec,
) -> Encoding:
    """SMT-LIB text that is satisfiable iff some x in ``box`` violates ``spec``.

    Sound as long as ``bounds_a``/``bounds_b`` are sound bounds over ``box`` (they are only
    used to drop impossible ReLU phases and as implied constraints).
    """
    wr = _Writer()
    inputs = tuple(f"x_{i}" for i in range(box.dim))
    for name, lo, hi in zip(inputs, box.lower, box.upper):
        wr.declare(name)
        wr.bound(name, lo, hi)
    ha: list[str | None] = list(inputs)
    for li, layer in enumerate(a.layers):
        ha = wr.layer(f"a{li}", layer, ha, bounds_a[li])
    wr.shared = 0
    hb: list[str | None] = list(inputs)
    for li, layer in enumerate(b.layers):
        hb = wr.layer(f"b{li}", layer, hb, bounds_b[li])
    wr.lines.append(_negated_spec([_ref(v) for v in ha], [_ref(v) for v in hb], spec, wr))
    return Encoding("\n".join(wr.lines) + "\n", inputs, wr.unstable, wr.shared, ha == hb)


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
    # argmax: class variables chosen as numpy.argmax chooses (first maximal index)
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
    return "\n".join(lines)
