"""Exact SMT-LIB encoding of quantized networks, and one exact query on one box.

Either network may be a plain :class:`~equivcheck.core.network.Network` or a
:class:`~equivcheck.core.quantized.QuantizedNetwork`. Affine maps and ReLUs are written as
:mod:`equivcheck.solve.encode` writes them (exact rational weights; a disjunction only for ReLUs
the bounds leave unstable; units of b equal to units of a written once), and the negated spec is
its very text. A quantized unit ``Q(v) = s * (clip(round_half_even(v / s) + zp, qmin, qmax) - zp)``
becomes, in mixed integer/real arithmetic,

* an Int ``n`` with ``|2 v - 2 s n| <= s`` (``n`` is a nearest integer of ``v / s``) and, at a tie
  ``|2 v - 2 s n| = s``, ``n = 2 e`` for an Int ``e`` (half to even), every constraint multiplied
  through by the denominators of ``s`` and of ``v``'s coefficient, so that only integer
  coefficients appear;
* ``m = clip(n, qmin - zp, qmax - zp)`` as ``ite`` terms, only for the sides that can bind by
  the interval bounds of ``v`` (:mod:`equivcheck.bounds.quant_interval`), which also bound ``n``;
  a unit whose level is the same over the whole box is that constant, with no variable;
* the value ``s * m``, which the next layer reads.

For two networks with the same affine layers (a float network and its quantized copy, or two
quantizations of one network), sound bounds of the difference of each pair of corresponding
values are asserted as well (implied constraints, from
:func:`~equivcheck.bounds.quant_interval.difference_intervals`).

Dynamically quantized networks (:class:`~equivcheck.core.quantized.DynamicQuantizer`) are
declined (:data:`DYNAMIC_DECLINED`): their rounding is nonlinear in the values.

The bounds only drop cases that cannot occur, so *unsat* is a proof in exact arithmetic on the
stored weights and scales; a *sat* model is a counterexample only once both networks, evaluated
exactly on it, violate the spec (:func:`decide_quantized` checks that).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from equivcheck.bounds.interval import LayerBounds
from equivcheck.bounds.quant_interval import (
    difference_intervals,
    float_parts,
    level_range,
    post_bounds,
    quantized_interval_bounds,
)
from equivcheck.core import matrix
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Box
from equivcheck.core.options import SearchOutcome
from equivcheck.core.quantized import QuantizedNetwork, Quantizer
from equivcheck.core.spec import Mode, Spec
from equivcheck.solve.encode import Writer, negated_spec, num, ref_text
from equivcheck.solve.search import Decision
from equivcheck.solve.solver import SolveStatus, solve

# The exact quantized encoding is for small residues. Past these sizes the query is refused at
# once (UNKNOWN, "too large for the exact quantized encoding") instead of spending the deadline
# on it. Measured (2 shared cores, the installed z3 5.4.1, 20-30 s limits): a quantized MNIST
# 2x25 (784 inputs, 19,900 weights, per-tensor int8 after every layer, uint8 input) against its
# float network on a box of radius 0.001 around an input: 415 integer variables, 0 unstable
# ReLUs, epsilon 0.5 proved in 1.2 s, argmax proved in 12 s, epsilon 0.05 timeout at 30 s; the
# quantized ACAS Xu 1_1 (6 x 50) against its float network: radius 0.002 (18 integer
# variables, 2 unstable ReLUs) proved / refuted in 0.4-0.6 s, radius 0.003 (72 and 36) timeout at
# 20 s in both epsilon 0.1 and argmax. Unstable ReLUs are what costs: past the limit below the
# solver was not seen to finish.
MAX_INTEGER_VARIABLES = 1000  # quantized units whose level is not fixed by the bounds
MAX_UNSTABLE_RELUS = 48
MAX_PARAMETERS = 200_000  # weights and biases of both networks
TOO_LARGE = "too large for the exact quantized encoding"
# A dynamic quantizer's scale s is computed from the whole vector, and its values s * level are
# products of two unknowns: not the linear integer arithmetic this encoding writes.
DYNAMIC_DECLINED = ("the exact quantized encoding does not take dynamically quantized networks (the "
                    "scale is computed from the values, so the rounding is nonlinear in them)")

# Z3's default preprocessing substitutes every defined unit into the next layer (solve-eqs),
# which multiplies out the long rational coefficients of deep chains: with it off, ACAS Xu 1_1
# (5 inputs, 6 x 50) with its input quantized against its float network went from 10.9 s to
# 0.11 s (epsilon 0.1, proved), a quantized MNIST 2x25 on a box of 784 inputs from a timeout at
# 25 s to 4.7 s (argmax, proved). On
# tiny networks (the tests' ones) it costs ~20%, so it is only set from this many weights on.
SOLVER_OPTIONS_PARAMS = 1_000
SOLVER_OPTIONS = "(set-option :smt.solve_eqs false)"


def model_bounds(net, box: Box, deadline: Deadline | None = None) -> list[LayerBounds]:
    """Sound bounds of every layer's pre-activation of ``net`` (a Network or a
    QuantizedNetwork) over ``box``: CROWN-style bounds intersected with intervals for each run
    of layers between quantizers, exact level ranges through the quantizers."""
    return quantized_interval_bounds(net, box.lower_float(), box.upper_float(), symbolic=True,
                                     deadline=deadline)


@dataclass(frozen=True)
class QuantEncoding:
    """The SMT-LIB text, the input names a model is read back from, and its size."""

    text: str
    inputs: tuple[str, ...]
    unstable: int  # ReLUs written with a disjunction
    integers: int  # quantized units with an integer level variable
    shared_units: int  # units (and quantized units) of b that are units of a
    same_outputs: bool  # both outputs are the same expressions: nothing to solve
    too_large: str = ""  # why the query was not written (past the module's limits), or ""


class _QuantWriter(Writer):
    """The layer writer of :mod:`equivcheck.solve.encode`, plus quantizers."""

    def __init__(self) -> None:
        super().__init__()
        self.integers = 0
        self._quantized: dict[tuple, object] = {}  # (ref, s, zp, qmin, qmax) -> ref

    def declare_int(self, name: str) -> None:
        self.lines.append(f"(declare-const {name} Int)")

    def quantize(self, prefix: str, refs: list, q: Quantizer, lo: np.ndarray, hi: np.ndarray) -> list:
        """Encode ``Q`` on each unit ``refs[i]`` (a value in ``[lo[i], hi[i]]``, sound bounds);
        returns the quantized units as refs (variable, scale), or None for the constant 0."""
        nl, nu = level_range(q, lo, hi)
        out = []
        for i, ref in enumerate(refs):
            s, zp = q.scale[i], int(q.zero_point[i])
            key = (ref, s, zp, q.qmin, q.qmax)
            if key in self._quantized:
                out.append(self._quantized[key])
                self.shared += 1
                continue
            got = self._unit(f"{prefix}_{i}", ref, s, q.qmin - zp, q.qmax - zp, nl[i], nu[i], lo[i], hi[i])
            self._quantized[key] = got
            out.append(got)
        return out

    def _unit(self, tag: str, ref, s: Fraction, lo_m: int, hi_m: int, nl, nu, v_lo, v_hi):
        if ref is None:  # Q(0) = 0: the zero point is representable
            return None
        if nl is None or nu is None:
            raise _TooLarge(f"a quantized unit has unbounded values ({tag})")
        cl, cu = min(max(nl, lo_m), hi_m), min(max(nu, lo_m), hi_m)
        if cl == cu:  # the same level over the whole box
            if cl == 0:
                return None
            name = f"c{tag}"
            self.declare(name)
            self.lines.append(f"(assert (= {name} {num(s * cl)}))")
            return (name, Fraction(1))
        self.integers += 1
        var, scale = ref
        n = f"n{tag}"
        self.declare_int(n)
        self.lines.append(f"(assert (<= {nl} {n}))")
        self.lines.append(f"(assert (<= {n} {nu}))")
        # |2 scale var - 2 s n| <= s, times the common denominator d: |A var - B n| <= C
        a2, b2 = 2 * Fraction(scale), 2 * s
        d = math.lcm(a2.denominator, b2.denominator, s.denominator)
        big_a, big_b, big_c = int(a2 * d), int(b2 * d), int(s * d)
        e = f"(- {var if big_a == 1 else f'(* {big_a} {var})'} (* {big_b} (to_real {n})))"
        self.lines.append(f"(assert (<= (- {big_c}) {e}))")
        self.lines.append(f"(assert (<= {e} {big_c}))")
        if _tie_possible(Fraction(float(v_lo)), Fraction(float(v_hi)), s):
            even = f"e{tag}"
            self.declare_int(even)
            self.lines.append(f"(assert (or (and (< (- {big_c}) {e}) (< {e} {big_c})) (= {n} (* 2 {even}))))")
        m = n
        if nu > hi_m:
            m = f"(ite (>= {n} {hi_m}) {hi_m} {m})"
        if nl < lo_m:
            m = f"(ite (<= {n} {lo_m}) {lo_m} {m})"
        name = f"q{tag}"
        self.declare(name)
        self.lines.append(f"(assert (= {name} (to_real {m})))")
        self.bound(name, Fraction(cl), Fraction(cu))
        return (name, s)


class _TooLarge(Exception):
    """The query exceeds what the exact quantized encoding takes (internal)."""


def _tie_possible(v_lo: Fraction, v_hi: Fraction, s: Fraction) -> bool:
    """True when some ``v`` in ``[v_lo, v_hi]`` has ``v / s`` exactly halfway between integers."""
    return math.ceil(v_lo / s - Fraction(1, 2)) <= math.floor(v_hi / s - Fraction(1, 2))


def _encode_model(wr: _QuantWriter, tag: str, net, box: Box, bounds: list[LayerBounds],
                  inputs: tuple[str, ...]) -> list[list]:
    """Each layer's values (after its ReLU and quantizer) as refs."""
    float_net, in_q, quant = float_parts(net)
    values = []
    h: list = [(x, Fraction(1)) for x in inputs]
    if in_q is not None:
        h = wr.quantize(f"{tag}i", h, in_q, box.lower_float(), box.upper_float())
    for k, (layer, q) in enumerate(zip(float_net.layers, quant)):
        h = wr.layer(f"{tag}{k}", layer, h, bounds[k])
        if q is not None:
            lo, hi = post_bounds(net, k, bounds)
            h = wr.quantize(f"{tag}q{k}", h, q, lo, hi)
        values.append(h)
    return values


def encode_quantized(a, b, box: Box, bounds_a: list[LayerBounds], bounds_b: list[LayerBounds],
                     spec: Spec, options: bool = False) -> QuantEncoding:
    """SMT-LIB text that is satisfiable iff some x in ``box`` violates ``spec`` for ``a`` and
    ``b`` (each a Network or a QuantizedNetwork), as the module doc describes. Sound as long as
    ``bounds_a``/``bounds_b`` are sound pre-activation bounds over ``box`` (see
    :func:`model_bounds`). ``options``: start with :data:`SOLVER_OPTIONS`. Past the module's
    size limits, the encoding has no text and ``too_large`` says why."""
    if _dynamic(a) or _dynamic(b):
        return QuantEncoding("", (), 0, 0, 0, False, DYNAMIC_DECLINED)
    try:
        return _encode(a, b, box, bounds_a, bounds_b, spec, options)
    except _TooLarge as exc:
        return QuantEncoding("", (), 0, 0, 0, False, str(exc))


def _encode(a, b, box: Box, bounds_a: list[LayerBounds], bounds_b: list[LayerBounds], spec: Spec,
            options: bool) -> QuantEncoding:
    wr = _QuantWriter()
    if options:
        wr.lines.append(SOLVER_OPTIONS)
    inputs = tuple(f"x_{i}" for i in range(box.dim))
    for name, lo, hi, ls, us in zip(inputs, box.lower, box.upper, box.lower_strict, box.upper_strict):
        wr.declare(name)
        wr.bound(name, lo, hi, ls, us)
    va = _encode_model(wr, "a", a, box, bounds_a, inputs)
    wr.shared = 0
    vb = _encode_model(wr, "b", b, box, bounds_b, inputs)
    ha, hb = va[-1], vb[-1]
    diff = difference_intervals(a, b, box.lower_float(), box.upper_float(), bounds_a, bounds_b)
    for la, lb, (d_lo, d_hi) in zip(va, vb, diff or ()):
        for ra, rb, lo, hi in zip(la, lb, d_lo, d_hi):
            if ra != rb:  # implied: the difference of the two values lies within its bounds
                d = f"(- {ref_text(ra)} {ref_text(rb)})"
                wr.lines.append(f"(assert (<= {num(lo)} {d}))")
                wr.lines.append(f"(assert (<= {d} {num(hi)}))")
    if wr.integers > MAX_INTEGER_VARIABLES:
        raise _TooLarge(f"{wr.integers} quantized units with an integer variable, more than "
                        f"{MAX_INTEGER_VARIABLES}")
    if wr.unstable > MAX_UNSTABLE_RELUS:
        raise _TooLarge(f"{wr.unstable} unstable ReLUs, more than {MAX_UNSTABLE_RELUS}")
    wr.lines.append(negated_spec([ref_text(v) for v in ha], [ref_text(v) for v in hb], spec, wr))
    return QuantEncoding("\n".join(wr.lines) + "\n", inputs, wr.unstable, wr.integers, wr.shared,
                         ha == hb)


def _dynamic(net) -> bool:
    return isinstance(net, QuantizedNetwork) and net.dynamic


def _params(net) -> int:
    float_net = float_parts(net)[0]
    return sum(matrix.stored_entries(layer.weight) + layer.bias.size for layer in float_net.layers)


def decide_quantized(a, b, spec: Spec, box: Box, deadline: Deadline,
                     bounds_a: list[LayerBounds] | None = None,
                     bounds_b: list[LayerBounds] | None = None) -> Decision:
    """One exact query: does some input of ``box`` violate ``spec`` for ``a`` and ``b`` (each a
    Network or a QuantizedNetwork)? Decided by ``deadline``.

    PROVED only on an unsat answer of the exact encoding (or when both outputs are the same
    expressions); REFUTED only with a rational point of ``box`` at which exact evaluation of
    both networks violates ``spec``; otherwise UNKNOWN with the reason (timeout, a query larger
    than the limits of this module, or a model that does not check, which would be a bug).
    ``bounds_a``/``bounds_b``: sound pre-activation bounds over ``box`` (interval bounds through
    the quantizers when not given; tighter sound ones make a smaller query).
    """
    if deadline.expired():
        return Decision(SearchOutcome.UNKNOWN, "timeout: no time left for the solver")
    if _dynamic(a) or _dynamic(b):
        return Decision(SearchOutcome.UNKNOWN, DYNAMIC_DECLINED)
    params = _params(a) + _params(b)
    if params > MAX_PARAMETERS:
        return Decision(SearchOutcome.UNKNOWN, f"{TOO_LARGE}: {params:,} weights and biases, more "
                        f"than {MAX_PARAMETERS:,}")
    bounds_a = model_bounds(a, box, deadline) if bounds_a is None else bounds_a
    bounds_b = model_bounds(b, box, deadline) if bounds_b is None else bounds_b
    enc = encode_quantized(a, b, box, bounds_a, bounds_b, spec, params >= SOLVER_OPTIONS_PARAMS)
    if enc.too_large:
        return Decision(SearchOutcome.UNKNOWN, f"{TOO_LARGE}: {enc.too_large}")
    stats = {"unstable": enc.unstable, "shared_units": enc.shared_units}
    if enc.same_outputs:
        return Decision(SearchOutcome.PROVED, "both networks compute their outputs through the "
                        f"same units ({enc.shared_units} units of b are units of a); no search needed",
                        **stats)
    out = solve(enc.text, enc.inputs, deadline.remaining(), deadline)
    what = f"{enc.integers} quantized units, {enc.unstable} unstable ReLUs encoded"
    if out.status is SolveStatus.UNSAT:
        return Decision(SearchOutcome.PROVED, f"solver: no input in the box violates the spec "
                        f"(exact quantized encoding, {what})", **stats, solver_calls=1)
    if out.status is SolveStatus.SAT:
        x = tuple(out.model[n] for n in enc.inputs)
        if box.contains(x) and not spec.holds(a.evaluate_exact(x), b.evaluate_exact(x)):
            return Decision(SearchOutcome.REFUTED, "solver found an input that violates the spec "
                            f"(exact quantized encoding, {what})", x, **stats, solver_calls=1)
        if spec.mode is Mode.TOP1 and box.contains(x):  # the encoding relaxes the confidence
            return Decision(SearchOutcome.UNKNOWN, "the solver's point meets the linear relaxation "
                            "of a's confidence condition, but a's softmax confidence there is below "
                            f"{float(spec.confidence):g}: undecided", **stats, solver_calls=1)
        return Decision(SearchOutcome.UNKNOWN, "solver returned a model that does not check "
                        "exactly (please report)", **stats, solver_calls=1)
    timed_out = out.status is SolveStatus.TIMEOUT
    why = f"solver timed out after {out.seconds:.3g} s" if timed_out else out.reason
    return Decision(SearchOutcome.UNKNOWN, f"{'timeout' if timed_out else 'solver gave up'}: {why}",
                    **stats, solver_calls=1)
