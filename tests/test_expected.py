"""A table of expected results (pysmt-style): tiny pairs whose verdict is derived by hand, in every
mode, run against every decision path.

Each row is ``Example(name, a, b, spec, domain, expected)`` with the derivation in a comment; a
REFUTED row also names a ``witness``, a point of the domain where the relation fails. Every row
runs

* through :func:`equivcheck.prove` with each bound method (interval, symbolic, lp, exact), with
  the falsifier on and off (off: a REFUTED verdict must come from the solver);
* through :func:`equivcheck.solve.prover.prove_networks` on the ``Spec`` and ``Domain`` objects;
* through the command line (``equivcheck prove ... --bounds METHOD --json``) on ONNX exports.

``test_the_table_is_right`` checks the table itself without the prover: each witness violates
the relation in exact arithmetic, and no sampled point violates a PROVED row.

Networks are written with ``relu(x) - relu(-x) = x`` to pass an input through a ReLU layer;
every weight is dyadic, so the float32 exports hold exactly these functions. The domain applies
to every input (``LO:HI``).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pytest

import equivcheck
from equivcheck.core.network import Network
from equivcheck.core.options import BoundMethod, ProverOptions
from equivcheck.core.result import Verdict
from equivcheck.core.spec import Mode, Spec
from equivcheck.io.domains import parse_domain
from equivcheck.solve.prover import prove_networks

from .helpers import (
    PAIR_B1,
    PAIR_B2,
    PAIR_W1,
    PAIR_W2,
    box_points,
    cli,
    net,
    permute_hidden,
    save_onnx,
    strict_json,
)

TIMEOUT = 30.0  # seconds per check: each takes well under one on these pairs
PROVED, REFUTED = Verdict.PROVED, Verdict.REFUTED
EXIT_CODE = {PROVED: 0, REFUTED: 1}


@dataclass(frozen=True)
class Example:
    """One row: networks ``a`` and ``b``, the relation, the domain (``LO:HI`` on every input),
    the verdict, and for REFUTED a point of the domain where the relation fails."""

    name: str
    a: Network
    b: Network
    spec: Spec
    domain: str
    expected: Verdict
    witness: tuple[Fraction, ...] | None = None

    def __post_init__(self) -> None:
        assert (self.witness is not None) == (self.expected is REFUTED), self.name

    def cli_args(self) -> list[str]:
        """The relation as ``equivcheck prove`` options."""
        args = ["--mode", self.spec.mode.value]
        if self.spec.mode is Mode.EPSILON:
            args += ["--tolerance", str(self.spec.tolerance), "--norm", self.spec.norm.value]
        return args


def hidden(w1, b1, w2, b2) -> Network:
    """One ReLU layer: ``w2 relu(w1 x + b1) + b2``."""
    return net([w1, w2], [b1, b2])


def at(*x) -> tuple[Fraction, ...]:
    return tuple(Fraction(v) for v in x)


STRICT = Spec.make("strict")
ARGMAX = Spec.make("argmax")


def linf(tol: str) -> Spec:
    return Spec.make("epsilon", tol, "linf")


def l1(tol: str) -> Spec:
    return Spec.make("epsilon", tol, "l1")


# ---- one input, one output ------------------------------------------------------------------------
RELU = hidden([[1]], [0], [[1]], [0])  # relu(x)
RELU_2X_HALF = hidden([[2]], [0], [[0.5]], [0])  # relu(2x)/2 = relu(x)
RELU_SCALED = hidden([[1]], [0], [[1.25]], [0])  # 1.25 relu(x)
RELU_UP = hidden([[1]], [0], [[1]], [0.0625])  # relu(x) + 1/16
RELU_UP_TINY = hidden([[1]], [0], [[1]], [2.0**-20])  # relu(x) + 2^-20 (~9.54e-7)
RELU_KNEE = hidden([[1], [1]], [0, -0.75], [[1, 0.5]], [0])  # relu(x) + relu(x - 3/4)/2
RELU_2X_SHIFT = hidden([[2]], [-0.5], [[1]], [0])  # relu(2x - 1/2)
ABS = hidden([[1], [-1]], [0, 0], [[1, 1]], [0])  # relu(x) + relu(-x) = |x|
ABS_REWRITTEN = hidden([[-0.5], [4]], [0, 0], [[2, 0.25]], [0])  # 2 relu(-x/2) + relu(4x)/4 = |x|
IDENT = hidden([[1], [-1]], [0, 0], [[1, -1]], [0])  # relu(x) - relu(-x) = x
DEAD_UNIT = hidden([[1], [-1]], [0, -1], [[1, 3]], [0])  # relu(x) + 3 relu(-x - 1)
CLIPPED = hidden([[1], [1]], [0, -1], [[1, -1]], [0])  # relu(x) - relu(x - 1) = min(x, 1) on x >= 0
DEEP = net([[[1]], [[1]], [[1]]], [[0], [-0.5], [0]])  # relu(relu(x) - 1/2)
RELU_MINUS_HALF = hidden([[1]], [-0.5], [[1]], [0])  # relu(x - 1/2)
RELU_MINUS_QUARTER = hidden([[1]], [-0.25], [[1]], [0])  # relu(x - 1/4)
NEG_RELU = hidden([[1]], [0], [[-1]], [0])  # -relu(x)

# ---- one input, two outputs (argmax) --------------------------------------------------------------
X_0 = hidden([[1], [-1]], [0, 0], [[1, -1], [0, 0]], [0, 0])  # (x, 0)
X2_0 = hidden([[1], [-1]], [0, 0], [[2, -2], [0, 0]], [0, 0])  # (2x, 0)
XQ_0 = hidden([[1], [-1]], [0, 0], [[1, -1], [0, 0]], [-0.25, 0])  # (x - 1/4, 0)
X_HALF = hidden([[1], [-1]], [0, 0], [[1, -1], [0, 0]], [0, 0.5])  # (x, 1/2)
ZERO_ONE = hidden([[1], [-1]], [0, 0], [[0, 0], [0, 0]], [0, 1])  # (0, 1)
SPLIT = hidden([[1], [-1]], [0, 0], [[1, 0], [0, 1]], [0, 0])  # (relu(x), relu(-x))
X_NEGX = hidden([[1], [-1]], [0, 0], [[1, -1], [-1, 1]], [0, 0])  # (x, -x)

# ---- two inputs ------------------------------------------------------------------------------------
PASS2 = [[1, 0], [-1, 0], [0, 1], [0, -1]]  # relu(+-x1), relu(+-x2): x1 and x2 pass through
ID2 = hidden(PASS2, [0] * 4, [[1, -1, 0, 0], [0, 0, 1, -1]], [0, 0])  # (x1, x2)
SWAP2 = hidden(PASS2, [0] * 4, [[0, 0, 1, -1], [1, -1, 0, 0]], [0, 0])  # (x2, x1)
RELU2 = hidden([[1, 0], [0, 1]], [0, 0], [[1, 0], [0, 1]], [0, 0])  # (relu(x1), relu(x2))
RELU2_SHIFTED = hidden([[1, 0], [0, 1]], [0, 0], [[1, 0], [0, 1]], [0.125, -0.125])  # + (1/8, -1/8)
RELU2_SCALED = hidden([[1, 0], [0, 1]], [0, 0], [[1.25, 0], [0, 1.25]], [0, 0])  # 1.25 (relu(x1), relu(x2))
MAX_A = hidden([[1, -1], [0, 1], [0, -1]], [0] * 3, [[1, 1, -1]], [0])  # x2 + relu(x1 - x2)
MAX_B = hidden([[-1, 1], [1, 0], [-1, 0]], [0] * 3, [[1, 1, -1]], [0])  # x1 + relu(x2 - x1)
MAX_C = hidden(PASS2 + [[1, -1], [-1, 1]], [0] * 6,  # (x1 + x2)/2 + |x1 - x2|/2
               [[0.5, -0.5, 0.5, -0.5, 0.5, 0.5]], [0])
SUM2 = hidden([[1, 0], [0, 1]], [0, 0], [[1, 1]], [0])  # relu(x1) + relu(x2)
THREE = hidden(PASS2, [0] * 4, [[1, -1, 0, 0], [0, 0, 1, -1], [0, 0, 0, 0]], [0, 0, 0])  # (x1, x2, 0)
THREE_AFFINE = hidden(PASS2, [0] * 4, [[2, -2, 0, 0], [0, 0, 2, -2], [0, 0, 0, 0]], [1, 1, 1])  # 2(x1, x2, 0) + 1

# ---- the 2-3-1 pair of the command-line tests -----------------------------------------------------
PAIR = net([PAIR_W1, PAIR_W2], [PAIR_B1, PAIR_B2])
PAIR_PERMUTED = permute_hidden(PAIR, 0, [2, 0, 1])
PAIR_OUT_SCALED = net([PAIR_W1, PAIR_W2 * 1.5], [PAIR_B1, PAIR_B2])

EXAMPLES = [
    # ---- strict ----------------------------------------------------------------------------------
    # a positive factor passes through a ReLU: relu(2x)/2 = relu(x) for every x
    Example("relu-rescaled", RELU, RELU_2X_HALF, STRICT, "-1:1", PROVED),
    # 2 relu(-x/2) = relu(-x) and relu(4x)/4 = relu(x): both are |x|, units listed the other way
    Example("abs-rewritten", ABS, ABS_REWRITTEN, STRICT, "-1:1", PROVED),
    # |x| = x when x >= 0
    Example("abs-is-x-on-positives", ABS, IDENT, STRICT, "0:1", PROVED),
    # |-1| = 1 but x = -1
    Example("abs-is-not-x", ABS, IDENT, STRICT, "-1:1", REFUTED, at(-1)),
    # -x - 1 <= -1 < 0 on [0, 1]: the extra unit is dead, 3 relu(-x - 1) = 0
    Example("dead-unit", RELU, DEAD_UNIT, STRICT, "0:1", PROVED),
    # at x = -2 the extra unit is live: relu(1) = 1, so b = 3 and a = 0
    Example("dead-unit-revived", RELU, DEAD_UNIT, STRICT, "-2:1", REFUTED, at(-2)),
    # max(x1, x2) = x2 + relu(x1 - x2) = x1 + relu(x2 - x1)
    Example("max-two-ways", MAX_A, MAX_B, STRICT, "-1:1", PROVED),
    # max(x1, x2) = (x1 + x2)/2 + |x1 - x2|/2
    Example("max-mean-plus-half-gap", MAX_A, MAX_C, STRICT, "-1:1", PROVED),
    # at (1, 1): max = 1, relu(1) + relu(1) = 2
    Example("max-is-not-sum", MAX_A, SUM2, STRICT, "0:1", REFUTED, at(1, 1)),
    # relu(x - 1) = 0 on [0, 1], so min(x, 1) = relu(x) there
    Example("clip-inactive", CLIPPED, RELU, STRICT, "0:1", PROVED),
    # at x = 2: min(2, 1) = 1 but relu(2) = 2
    Example("clip-active", CLIPPED, RELU, STRICT, "0:2", REFUTED, at(2)),
    # the same hidden units listed in another order
    Example("permuted-units", PAIR, PAIR_PERMUTED, STRICT, "-1:1", PROVED),
    # at (1, 1) the hidden layer is (0, 1/4, 5/4) and W2 h = 1/8 - 5/16 = -3/16 != 0, so 1.5 W2 h differs
    Example("output-weights-scaled", PAIR, PAIR_OUT_SCALED, STRICT, "-1:1", REFUTED, at(1, 1)),
    # x <= 0: relu(relu(x) - 1/2) = relu(-1/2) = 0 = relu(x - 1/2); x > 0: the same expression
    Example("two-layers-one-layer", DEEP, RELU_MINUS_HALF, STRICT, "-1:1", PROVED),
    # at x = 1: relu(1 - 1/2) = 1/2 but relu(1 - 1/4) = 3/4
    Example("two-layers-other-knee", DEEP, RELU_MINUS_QUARTER, STRICT, "-1:1", REFUTED, at(1)),
    # the domain is the one point 1/2: relu(1/2) = 1/2 = relu(2 * 1/2 - 1/2)
    Example("point-domain", RELU, RELU_2X_SHIFT, STRICT, "0.5:0.5", PROVED),
    # at 3/4: relu(3/4) = 3/4 but relu(3/2 - 1/2) = 1
    Example("beyond-the-point", RELU, RELU_2X_SHIFT, STRICT, "0.5:0.75", REFUTED, at(0.75)),
    # the outputs differ by 2^-20 everywhere
    Example("bias-off-by-2^-20", RELU, RELU_UP_TINY, STRICT, "0:1", REFUTED, at(0)),
    # x = 0: relu(0), relu(-0) = (0, 0) vs (0, -0) = (0, 0); x = -1: (0, 1) vs (-1, 1)
    Example("split-is-not-x-negx", SPLIT, X_NEGX, STRICT, "-1:1", REFUTED, at(-1)),
    # ---- epsilon, L-inf --------------------------------------------------------------------------
    # the outputs differ by exactly 1/16 <= 0.1 everywhere
    Example("shift-within", RELU, RELU_UP, linf("0.1"), "-1:1", PROVED),
    # 1/16 > 0.05 everywhere
    Example("shift-beyond", RELU, RELU_UP, linf("0.05"), "-1:1", REFUTED, at(0)),
    # a tolerance of 0 is strict
    Example("shift-tolerance-0", RELU, RELU_UP, linf("0"), "-1:1", REFUTED, at(0)),
    # 2^-20 = 9.5367431640625e-7 <= 1e-6, read exactly
    Example("tiny-shift-within-1e-6", RELU, RELU_UP_TINY, linf("1e-6"), "0:1", PROVED),
    # 2^-20 > 9.5e-7
    Example("tiny-shift-beyond-9.5e-7", RELU, RELU_UP_TINY, linf("9.5e-7"), "0:1", REFUTED, at(0)),
    # |1.25 relu(x) - relu(x)| = x/4 <= 1/4 on [0, 1], equal at x = 1 (the bound is inclusive)
    Example("scale-tight", RELU, RELU_SCALED, linf("0.25"), "0:1", PROVED),
    # at x = 1 the gap is 1/4 > 1/5
    Example("scale-beyond", RELU, RELU_SCALED, linf("0.2"), "0:1", REFUTED, at(1)),
    # the gap relu(x - 3/4)/2 is at most (1 - 3/4)/2 = 1/8 on [0, 1]
    Example("knee-within", RELU, RELU_KNEE, linf("0.125"), "0:1", PROVED),
    # at x = 3/2 the gap is (3/4)/2 = 3/8 > 1/8
    Example("knee-beyond", RELU, RELU_KNEE, linf("0.125"), "0:1.5", REFUTED, at(1.5)),
    # each output moves by 1/8: the L-inf gap is 1/8
    Example("two-shifts-linf", RELU2, RELU2_SHIFTED, linf("0.125"), "0:1", PROVED),
    # 1/8 > 1/10
    Example("two-shifts-linf-beyond", RELU2, RELU2_SHIFTED, linf("0.1"), "0:1", REFUTED, at(0, 0)),
    # the L-inf gap of the scaled pair is max(x1, x2)/4 <= 1/4 < 0.3
    Example("two-scales-linf", RELU2, RELU2_SCALED, linf("0.3"), "0:1", PROVED),
    # ---- epsilon, L1 -----------------------------------------------------------------------------
    # each output moves by 1/8: the L1 gap is 1/4
    Example("two-shifts-l1", RELU2, RELU2_SHIFTED, l1("0.25"), "0:1", PROVED),
    # 1/4 > 1/8 (the same pair and tolerance pass in L-inf)
    Example("two-shifts-l1-beyond", RELU2, RELU2_SHIFTED, l1("0.125"), "0:1", REFUTED, at(0, 0)),
    # the L1 gap is (x1 + x2)/4 <= 1/2 on [0, 1]^2
    Example("two-scales-l1", RELU2, RELU2_SCALED, l1("0.5"), "0:1", PROVED),
    # at (1, 1) the L1 gap is 1/2 > 0.3 (the same tolerance passes in L-inf)
    Example("two-scales-l1-beyond", RELU2, RELU2_SCALED, l1("0.3"), "0:1", REFUTED, at(1, 1)),
    # one output: L1 = L-inf, the gap is x/4 <= 1/4
    Example("scale-l1-one-output", RELU, RELU_SCALED, l1("0.25"), "0:1", PROVED),
    # ---- argmax ----------------------------------------------------------------------------------
    # (x, 0) and (2x, 0) pick class 0 for x >= 0 (the tie at 0 goes to the lowest index) and 1 below
    Example("argmax-scaled", X_0, X2_0, ARGMAX, "-1:1", PROVED),
    # at x = 1/8: (1/8, 0) picks 0, (-1/8, 0) picks 1
    Example("argmax-shifted", X_0, XQ_0, ARGMAX, "0:1", REFUTED, at(0.125)),
    # x <= 1/4 < 1/2: (x, 1/2) picks 1, as (0, 1) does
    Example("argmax-below-tie", X_HALF, ZERO_ONE, ARGMAX, "0:0.25", PROVED),
    # at x = 1/2 (x, 1/2) ties and picks 0; (0, 1) picks 1 (only the solver sees an exact tie)
    Example("argmax-at-tie", X_HALF, ZERO_ONE, ARGMAX, "0:0.5", REFUTED, at(0.5)),
    # (relu(x), relu(-x)) and (x, -x) order their outputs alike (0 at the tie x = 0)
    Example("argmax-split", SPLIT, X_NEGX, ARGMAX, "-1:1", PROVED),
    # one output: both always pick class 0
    Example("argmax-one-output", RELU, NEG_RELU, ARGMAX, "-1:1", PROVED),
    # at (1, 0): (1, 0) picks 0, (0, 1) picks 1
    Example("argmax-swapped", ID2, SWAP2, ARGMAX, "0:1", REFUTED, at(1, 0)),
    # y -> 2y + 1 is increasing and keeps ties, so the top class is the same
    Example("argmax-affine-three-classes", THREE, THREE_AFFINE, ARGMAX, "-1:1", PROVED),
]
METHODS = list(BoundMethod)
IDS = [ex.name for ex in EXAMPLES]


def check_result(ex: Example, result, solver_only: bool = False) -> None:
    """The verdict is the expected one; a counterexample lies in the domain and violates the
    relation exactly (and was found by the solver when ``solver_only``)."""
    assert result.verdict is ex.expected, (ex.name, result.verdict, result.reason)
    if ex.expected is REFUTED:
        cex = result.counterexample
        assert cex is not None and cex.exact.violated, ex.name
        point = cex.exact_input or tuple(Fraction(v) for v in cex.input)
        assert parse_domain(ex.domain, ex.a.in_dim).boxes[0].contains(point)
        if solver_only:
            assert cex.found_by == "solver", (ex.name, cex.found_by)


# ---- the table itself ---------------------------------------------------------------------------


def test_the_table_has_every_mode_and_both_verdicts():
    kinds = {(ex.spec.mode.value, ex.spec.norm.value if ex.spec.mode is Mode.EPSILON else "",
              ex.expected) for ex in EXAMPLES}
    for mode in (("strict", ""), ("epsilon", "linf"), ("epsilon", "l1"), ("argmax", "")):
        assert {(*mode, PROVED), (*mode, REFUTED)} <= kinds, mode
    assert len(EXAMPLES) >= 30 and len(set(IDS)) == len(IDS)


@pytest.mark.parametrize("ex", EXAMPLES, ids=IDS)
def test_the_table_is_right(ex):
    """Without the prover: the witness of a REFUTED row violates the relation exactly; no
    sampled point (uniform and corners, float32) violates a PROVED row."""
    box = parse_domain(ex.domain, ex.a.in_dim).boxes[0]
    if ex.expected is REFUTED:
        assert box.contains(ex.witness)
        assert not ex.spec.holds(ex.a.evaluate_exact(ex.witness), ex.b.evaluate_exact(ex.witness))
        return
    lo, hi = box.lower_float(), box.upper_float()
    for x in box_points(np.random.default_rng(0), lo, hi, 100):
        q = [Fraction(float(v)) for v in x]
        assert ex.spec.holds(ex.a.evaluate_exact(q), ex.b.evaluate_exact(q)), (ex.name, x)


# ---- the decision paths -------------------------------------------------------------------------


@pytest.mark.parametrize("falsify", [True, False], ids=["falsifier", "solver-only"])
@pytest.mark.parametrize("method", METHODS, ids=[m.value for m in METHODS])
@pytest.mark.parametrize("ex", EXAMPLES, ids=IDS)
def test_prove(ex, method, falsify):
    options = ProverOptions(timeout=TIMEOUT, bound_method=method, falsify=falsify)
    spec = ex.spec
    result = equivcheck.prove(ex.a, ex.b, domain=ex.domain, mode=spec.mode.value,
                              tolerance=spec.tolerance, norm=spec.norm.value, options=options)
    check_result(ex, result, solver_only=not falsify)


@pytest.mark.parametrize("ex", EXAMPLES, ids=IDS)
def test_prove_networks(ex):
    domain = parse_domain(ex.domain, ex.a.in_dim)
    result = prove_networks(ex.a, ex.b, ex.spec, domain, ProverOptions(timeout=TIMEOUT))
    check_result(ex, result)


@pytest.mark.parametrize("method", METHODS, ids=[m.value for m in METHODS])
@pytest.mark.parametrize("ex", EXAMPLES, ids=IDS)
def test_command_line(ex, method, tmp_path):
    a = save_onnx(ex.a, tmp_path / "a.onnx")
    b = save_onnx(ex.b, tmp_path / "b.onnx")
    r = cli("prove", a, b, "--domain", ex.domain, *ex.cli_args(), "--bounds", method.value,
            "--timeout", TIMEOUT, "--json")
    assert r.exit_code == EXIT_CODE[ex.expected], (ex.name, r.exit_code, r.output)
    assert strict_json(r.stdout)["verdict"] == ex.expected.label
