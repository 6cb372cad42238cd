"""Function-preserving rewrites of small ReLU networks, for the canonical form's corpus.

Every network here has dyadic weights with few bits (multiples of 1/64 of small size), and every
rewrite keeps them so: the rewritten networks are exactly float64 and float32 networks, so their
ONNX exports are exact and onnxruntime runs exactly the weights the proof is about. Each rewrite
preserves the function on the pair's box; those marked "domain" only there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pytest

from equivcheck.core.network import Affine, Layer, Network
from equivcheck.core.result import Verdict

Stack = list  # [(W, b, relu)] with float64 arrays W (out, in), b (out,)
SCALES = (0.25, 0.5, 2.0, 4.0)


def dyadic(rng: np.random.Generator, shape, den: int = 8, top: int = 8) -> np.ndarray:
    """Random multiples of ``1/den`` in ``[-top/den, top/den]``."""
    return rng.integers(-top, top + 1, size=shape) / den


def random_base(rng: np.random.Generator) -> tuple[Stack, np.ndarray, np.ndarray]:
    """(layers, lo, hi): a random small network and its box. One unit of the first layer is
    planted always active on the box, one dead (trained networks have both)."""
    n_in = int(rng.integers(2, 6))
    widths = [n_in] + [int(rng.integers(2, 6)) for _ in range(int(rng.integers(1, 4)))]
    widths.append(int(rng.integers(1, 4)))
    lo = rng.choice([-1.0, -0.5, 0.0], n_in)
    hi = lo + rng.choice([0.5, 1.0, 2.0], n_in)
    stack = []
    for k in range(len(widths) - 1):
        w = dyadic(rng, (widths[k + 1], widths[k]))
        b = dyadic(rng, widths[k + 1])
        stack.append((w, b, k < len(widths) - 2))
    w0, b0, _ = stack[0]
    reach = np.abs(w0) @ np.maximum(np.abs(lo), np.abs(hi))
    if len(b0) >= 2:
        b0[0] = reach[0] + 0.125  # always active
        b0[1] = -reach[1] - 0.125  # dead
    return stack, lo, hi


def to_network(stack: Stack, name: str) -> Network:
    layers = tuple(Layer(Affine(np.array(w, dtype=np.float64), np.array(b, dtype=np.float64)), r,
                         f"l{k}") for k, (w, b, r) in enumerate(stack))
    return Network(layers, input_name="x", input_shape=(1, layers[0].in_dim), output_name="y",
                   output_shape=(1, layers[-1].out_dim), source=name)


def _hidden(stack: Stack) -> list[int]:
    return [k for k, (_, _, r) in enumerate(stack) if r and k + 1 < len(stack)]


def _copy(stack: Stack) -> Stack:
    return [(w.copy(), b.copy(), r) for w, b, r in stack]


# ---- the rewrites: (rng, stack, lo, hi) -> stack ------------------------------------------------

def permute(rng, s, lo, hi):
    k = int(rng.choice(_hidden(s)))
    (w, b, r), (w2, b2, r2) = s[k], s[k + 1]
    p = rng.permutation(len(b))
    s[k], s[k + 1] = (w[p], b[p], r), (w2[:, p], b2, r2)
    return s


def rescale(rng, s, lo, hi):
    k = int(rng.choice(_hidden(s)))
    (w, b, r), (w2, b2, r2) = s[k], s[k + 1]
    i, c = int(rng.integers(len(b))), float(rng.choice(SCALES))
    w, b, w2 = w.copy(), b.copy(), w2.copy()
    w[i] *= c
    b[i] *= c
    w2[:, i] /= c
    s[k], s[k + 1] = (w, b, r), (w2, b2, r2)
    return s


def split(rng, s, lo, hi):
    """One unit becomes two with positive multiples of its weights (merging, read backwards)."""
    k = int(rng.choice(_hidden(s)))
    (w, b, r), (w2, b2, r2) = s[k], s[k + 1]
    i, c = int(rng.integers(len(b))), float(rng.choice(SCALES))
    w = np.vstack([w, c * w[i]])
    b = np.append(b, c * b[i])
    col = w2[:, i].copy()
    w2 = np.hstack([w2, (col / 2 / c)[:, None]])
    w2[:, i] = col / 2
    s[k], s[k + 1] = (w, b, r), (w2, b2, r2)
    return s


def duplicate(rng, s, lo, hi):
    """A unit copied; the next layer reads the copy with a share of the weight."""
    k = int(rng.choice(_hidden(s)))
    (w, b, r), (w2, b2, r2) = s[k], s[k + 1]
    i = int(rng.integers(len(b)))
    col = w2[:, i].copy()
    w2 = np.hstack([w2, (col * 0.75)[:, None]])
    w2[:, i] = col * 0.25
    s[k], s[k + 1] = (np.vstack([w, w[i]]), np.append(b, b[i]), r), (w2, b2, r2)
    return s


def zero_column(rng, s, lo, hi):
    """A new unit that nothing reads."""
    k = int(rng.choice(_hidden(s)))
    (w, b, r), (w2, b2, r2) = s[k], s[k + 1]
    s[k] = (np.vstack([w, dyadic(rng, (1, w.shape[1]))]), np.append(b, dyadic(rng, 1)), r)
    s[k + 1] = (np.hstack([w2, np.zeros((w2.shape[0], 1))]), b2, r2)
    return s


def zero_row(rng, s, lo, hi):
    """A new unit with no input weights (the constant relu(c)), compensated in the next bias."""
    k = int(rng.choice(_hidden(s)))
    (w, b, r), (w2, b2, r2) = s[k], s[k + 1]
    c = float(rng.choice([-0.5, 0.25, 0.5, 1.0]))
    col = dyadic(rng, w2.shape[0])
    s[k] = (np.vstack([w, np.zeros((1, w.shape[1]))]), np.append(b, c), r)
    s[k + 1] = (np.hstack([w2, col[:, None]]), b2 - col * max(c, 0.0), r2)
    return s


def identity_relu_layer(rng, s, lo, hi):
    """A ReLU layer with the identity matrix after a ReLU layer (depth + 1)."""
    k = int(rng.choice(_hidden(s)))
    n = len(s[k][1])
    s.insert(k + 1, (np.eye(n), np.zeros(n), True))
    return s


def linear_factor(rng, s, lo, hi):
    """An affine layer written as two with no ReLU between them: W = (W/2 | W/2) (I ; I)
    (depth + 1)."""
    k = int(rng.integers(len(s)))
    w, b, r = s[k]
    n = w.shape[1]
    first = (np.vstack([np.eye(n), np.eye(n)]), np.zeros(2 * n), False)
    s[k:k + 1] = [first, (np.hstack([w / 2, w / 2]), b, r)]
    return s


def relu_pair_layer(rng, s, lo, hi):
    """The output layer y = W h + b written as y = relu(y) - relu(-y) (depth + 1)."""
    w, b, r = s[-1]
    if r:
        return s
    m = len(b)
    s[-1] = (np.vstack([w, -w]), np.concatenate([b, -b]), True)
    s.append((np.hstack([np.eye(m), -np.eye(m)]), np.zeros(m), False))
    return s


def dead_unit(rng, s, lo, hi):
    """A first-layer unit that is dead on the box, read by the next layer (domain)."""
    (w, b, r), (w2, b2, r2) = s[0], s[1]
    if not r:
        return s
    row = dyadic(rng, (1, w.shape[1]))
    reach = float((np.abs(row) @ np.maximum(np.abs(lo), np.abs(hi)))[0])
    s[0] = (np.vstack([w, row]), np.append(b, -reach - 0.25), r)
    s[1] = (np.hstack([w2, dyadic(rng, (w2.shape[0], 1))]), b2, r2)
    return s


def shifted_input_layer(rng, s, lo, hi):
    """A ReLU layer relu(x - lo) in front (the identity on the box), the shift moved into the
    first layer's bias (domain; depth + 1)."""
    w, b, r = s[0]
    n = len(lo)
    s[0] = (w, b + w @ lo, r)
    s.insert(0, (np.eye(n), -lo.copy(), True))
    return s


def bias_through_active(rng, s, lo, hi):
    """The bias of the planted always-active unit moved by c, -c times its weights into the next
    bias (domain)."""
    (w, b, r), (w2, b2, r2) = s[0], s[1]
    reach = np.abs(w) @ np.maximum(np.abs(lo), np.abs(hi))
    active = [i for i in range(len(b)) if b[i] - reach[i] >= 0]
    if not r or not active:
        return s
    i, c = int(rng.choice(active)), float(rng.choice([0.25, 0.5, 1.0]))
    b = b.copy()
    b[i] += c
    s[0], s[1] = (w, b, r), (w2, b2 - c * w2[:, i], r2)
    return s


def merge_linear(rng, s, lo, hi):
    """Two consecutive affine layers (a ReLU layer that is linear: an identity layer on its
    nonnegative input) written as one product."""
    k = int(rng.choice(_hidden(s)))
    n = len(s[k][1])
    p = np.eye(n)[rng.permutation(n)] * float(rng.choice(SCALES))
    (w2, b2, r2) = s[k + 1]
    s.insert(k + 1, (p, np.zeros(n), False))
    s[k + 2] = (w2 @ np.linalg.inv(p), b2, r2)
    return s


REWRITES: dict[str, Callable] = {
    f.__name__: f for f in (permute, rescale, split, duplicate, zero_column, zero_row,
                            identity_relu_layer, linear_factor, relu_pair_layer, dead_unit,
                            shifted_input_layer, bias_through_active, merge_linear)
}


@dataclass(frozen=True)
class Case:
    """One corpus pair: networks ``a`` and ``b``, their box, the rewrites from ``a`` to ``b``."""

    a: Network
    b: Network
    lo: np.ndarray
    hi: np.ndarray
    rewrites: tuple[str, ...]
    mode: str = "strict"
    tolerance: Fraction | None = None


def output_transform(rng, s: Stack, mode: str, lo=None, hi=None) -> tuple[Stack, Fraction | None]:
    """argmax: outputs scaled by a positive factor and shifted by a common affine amount;
    epsilon: a small change of the output layer, and a tolerance twice its exact interval
    bound."""
    w, b, r = s[-1]
    if mode == "argmax" and not r and rng.random() < 0.4:
        knots = _shared_range_knots(rng, s, lo, hi)
        if knots is not None:
            return monotone_map(rng, s, knots), None
    if mode == "argmax" and not r:
        c = float(rng.choice(SCALES))
        shift_row, shift = dyadic(rng, (1, w.shape[1])), float(dyadic(rng, 1)[0])
        s[-1] = (c * w + shift_row, c * b + shift, r)
        return s, None
    if mode == "epsilon" and not r:
        d = dyadic(rng, w.shape, den=1024, top=4)
        s[-1] = (w + d, b, r)
        return s, None
    return s, None


def _shared_range_knots(rng, s: Stack, lo, hi) -> tuple[float, float] | None:
    """Two dyadic knots that every output reaches on sampled points of the box (so no unit of
    the map is stable on the domain), or None when the outputs' sampled ranges do not overlap."""
    net = to_network(s, "tmp")
    ys = net.evaluate(lo + rng.random((64, len(lo))) * (hi - lo))
    low, high = float(np.max(ys.min(axis=0))), float(np.min(ys.max(axis=0)))
    if len(s[-1][1]) < 2 or high - low < 1 / 16:
        return None
    t1 = np.ceil((low + (high - low) / 4) * 64) / 64
    t2 = np.floor((high - (high - low) / 4) * 64) / 64
    return (float(t1), float(t2)) if low < t1 <= t2 < high else None


def monotone_map(rng, s: Stack, knots: tuple[float, float]) -> Stack:
    """Every output y_i through one strictly increasing map
    ``alpha (relu(y) - relu(-y)) + c1 relu(y - t1) + c2 relu(y - t2) + beta`` (a ReLU layer of
    four units per output, depth + 1): argmax keeps its class."""
    w, b, _ = s[-1]
    m = len(b)
    t1, t2 = knots
    alpha, c1, c2 = (float(rng.choice([0.25, 0.5, 1.0, 2.0])) for _ in range(3))
    rows, bias, out = [], [], np.zeros((m, 4 * m))
    for i in range(m):
        rows += [w[i], -w[i], w[i], w[i]]
        bias += [b[i], -b[i], b[i] - t1, b[i] - t2]
        out[i, 4 * i:4 * i + 4] = [alpha, -alpha, c1, c2]
    s[-1] = (np.array(rows), np.array(bias), True)
    s.append((out, np.full(m, float(dyadic(rng, 1)[0])), False))
    return s


def make_case(seed: int, n_rewrites: int | None = None, mode: str | None = None) -> Case:
    """The corpus pair number ``seed``: a random base, 1-4 random rewrites, an output transform
    for argmax/epsilon; ``a`` and ``b`` swapped on odd seeds (so splits are also merges)."""
    rng = np.random.default_rng(seed)
    base, lo, hi = random_base(rng)
    mode = mode or str(rng.choice(["strict"] * 6 + ["argmax", "epsilon"]))
    s = _copy(base)
    names = []
    for _ in range(n_rewrites or int(rng.integers(1, 5))):
        name = str(rng.choice(sorted(REWRITES)))
        s = REWRITES[name](rng, s, lo, hi)
        names.append(name)
    s, _ = output_transform(rng, s, mode, lo, hi)
    a, b = to_network(base, f"base{seed}"), to_network(s, f"rewritten{seed}")
    tol = None
    if mode == "epsilon":
        tol = 2 * max(exact_interval_gap(a, b, lo, hi), Fraction(1, 2**20))
    if seed % 2:
        a, b = b, a
    return Case(a, b, lo, hi, tuple(names), mode, tol)


def exact_interval_gap(a: Network, b: Network, lo, hi) -> Fraction:
    """An upper bound of max |a(x) - b(x)| on the box by exact interval arithmetic on each
    network (plain and loose, but exact)."""
    ia, ib = _exact_interval(a, lo, hi), _exact_interval(b, lo, hi)
    return max(max(ha - lb_, hb - la) for (la, ha), (lb_, hb) in zip(ia, ib))


def _exact_interval(net: Network, lo, hi) -> list[tuple[Fraction, Fraction]]:
    box = [(Fraction(float(x)), Fraction(float(y))) for x, y in zip(lo, hi)]
    for layer in net.layers:
        w, b = layer.affine.rational_weight(), layer.affine.rational_bias()
        out = []
        for i in range(layer.out_dim):
            lo_i = hi_i = b[i]
            for c, (p, q) in zip(w[i], box):
                lo_i += c * (p if c > 0 else q)
                hi_i += c * (q if c > 0 else p)
            out.append((max(lo_i, 0), max(hi_i, 0)) if layer.relu else (lo_i, hi_i))
        box = out
    return box


def perturb(rng: np.random.Generator, net: Network) -> Network:
    """``net`` with one random weight or bias changed by a multiple of 1/8 (dyadic stays exact)."""
    layers = list(net.layers)
    k = int(rng.integers(len(layers)))
    w, b = layers[k].weight.copy(), layers[k].bias.copy()
    delta = float(rng.choice([-0.5, -0.25, -0.125, 0.125, 0.25, 0.5]))
    if rng.random() < 0.25:
        b[int(rng.integers(len(b)))] += delta
    else:
        w[int(rng.integers(w.shape[0])), int(rng.integers(w.shape[1]))] += delta
    layers[k] = Layer(Affine(w, b), layers[k].relu, layers[k].name)
    return net.with_layers(layers)


def case_domain(case: Case):
    from equivcheck.core.domain import Box, Domain

    box = Box(tuple(Fraction(float(v)) for v in case.lo), tuple(Fraction(float(v)) for v in case.hi))
    return Domain((box,), "corpus box")


def case_spec(case: Case):
    from equivcheck.core.spec import Spec

    return Spec.make(case.mode, case.tolerance)


def perturbed_case(seed: int) -> Case:
    """:func:`make_case` with one weight of ``b`` perturbed after the rewrites."""
    case = make_case(seed)
    rng = np.random.default_rng(10_000 + seed)
    return Case(case.a, perturb(rng, case.b), case.lo, case.hi, case.rewrites + ("perturb",),
                case.mode, case.tolerance)


def prove_case(case: Case, timeout: float = 30.0, onnx: bool = False):
    """``prove_networks`` on the pair (with their exact ONNX exports for the onnxruntime re-check
    of counterexamples when ``onnx``)."""
    from equivcheck.core.options import ProverOptions
    from equivcheck.io.onnx_export import to_onnx
    from equivcheck.solve.prover import prove_networks

    models = None
    if onnx:
        (pa, ea), (pb, eb) = to_onnx(case.a), to_onnx(case.b)
        assert ea and eb, "corpus weights are float32 numbers"
        models = (pa, pb)
    return prove_networks(case.a, case.b, case_spec(case), case_domain(case),
                          ProverOptions(timeout=timeout), onnx_models=models)


def sampled_ok(case: Case, n: int = 200, seed: int = 0) -> bool:
    """True when no sampled float32 point of the box (uniform points and corners) violates the
    pair's spec in exact arithmetic."""
    rng = np.random.default_rng(seed)
    spec = case_spec(case)
    pts = rng.uniform(case.lo, case.hi, (n, len(case.lo)))
    corners = np.where(rng.random((n, len(case.lo))) < 0.5, case.lo, case.hi)
    for x in np.vstack([pts, corners]).astype(np.float32):
        q = [Fraction(float(v)) for v in x]
        if not spec.holds(case.a.evaluate_exact(q), case.b.evaluate_exact(q)):
            return False
    return True


# ---- the tests ---------------------------------------------------------------------------------

CI_PAIRS = 400
CI_PERTURBED = 100


@pytest.mark.parametrize("name", sorted(REWRITES))
def test_each_rewrite_preserves_the_function_on_the_box(name):
    changed = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        base, lo, hi = random_base(rng)
        s = REWRITES[name](rng, _copy(base), lo, hi)
        a, b = to_network(base, "a"), to_network(s, "b")
        changed += a.description != b.description or any(
            not (np.array_equal(p.weight, q.weight) and np.array_equal(p.bias, q.bias))
            for p, q in zip(a.layers, b.layers))
        case = Case(a, b, lo, hi, (name,))
        assert sampled_ok(case, n=40, seed=seed), f"{name} changed the function (seed {seed})"
    assert changed >= 6, f"{name} left the network alone too often"


def test_the_corpus_uses_at_least_twelve_kinds_and_changes_depth():
    kinds = Counter(n for seed in range(CI_PAIRS) for n in make_case(seed).rewrites)
    assert len(kinds) >= 12
    depths = sum(len(make_case(s).a.layers) != len(make_case(s).b.layers) for s in range(60))
    assert depths >= 10


def test_every_rewritten_pair_is_proved_by_the_canonical_form():
    bad = []
    modes = Counter()
    for seed in range(CI_PAIRS):
        case = make_case(seed)
        res = prove_case(case)
        modes[case.mode] += 1
        by_form = res.reason.startswith(("canonical forms are equal", "the networks have the same"))
        if res.verdict is not Verdict.PROVED or not by_form:
            bad.append((seed, case.rewrites, res.verdict, res.reason))
    assert not bad, bad[:5]
    assert modes["argmax"] >= 20 and modes["epsilon"] >= 20


def test_perturbed_pairs_are_refuted_with_reproducing_counterexamples_or_truly_equivalent():
    outcome = Counter()
    for seed in range(CI_PERTURBED):
        case = perturbed_case(seed)
        res = prove_case(case, onnx=True)
        assert res.verdict is not Verdict.UNKNOWN, (seed, case.rewrites, res.reason)
        if res.verdict is Verdict.REFUTED:
            assert res.counterexample.reproduces, (seed, case.rewrites)
            outcome["refuted"] += 1
        else:
            assert sampled_ok(case), (seed, case.rewrites, res.reason)
            outcome["proved"] += 1
    assert outcome["refuted"] >= CI_PERTURBED // 3 and outcome["proved"] >= 1
