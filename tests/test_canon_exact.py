"""canon.exact and the integer Lin: the canonical form's integer arithmetic equals the same
computation done one Fraction at a time (the reference the fast path replaced)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from equivcheck.canon.build import _exact_step, _layer_expressions
from equivcheck.canon.exact import IntLayer, dyadic_ints, int_matmul, integer_layer
from equivcheck.canon.table import Lin, UnitTable, primitive
from equivcheck.core.network import Affine


def _wild_floats(rng, shape) -> np.ndarray:
    """Floats over a wide range of exponents, with zeros, negatives, float32 and subnormals."""
    x = rng.standard_normal(shape) * 2.0 ** rng.integers(-60, 40, size=shape)
    x[rng.random(shape) < 0.1] = 0.0
    x.flat[0] = 5e-324  # the smallest subnormal
    x.flat[-1] = float(np.float32(1 / 3))
    return x


@pytest.mark.parametrize("seed", range(4))
def test_dyadic_ints_are_the_exact_values_of_the_floats(seed):
    x = _wild_floats(np.random.default_rng(seed), (7, 9))
    ints, den = dyadic_ints(x)
    assert den & (den - 1) == 0  # a power of two
    assert all(Fraction(int(n), den) == Fraction(float(v)) for n, v in zip(ints.ravel(), x.ravel()))
    small, den_small = dyadic_ints(np.array([[0.5, -0.25], [3.0, 0.0]]))
    assert den_small == 4 and small.tolist() == [[2, -1], [12, 0]]


@pytest.mark.parametrize("k", [1, 5, 300, 3000])
def test_int_matmul_is_exact_on_large_and_small_integers(k):
    rng = np.random.default_rng(k)
    a = np.array([[int(v) << int(s) for v, s in zip(rng.integers(-2**40, 2**40, k),
                                                    rng.integers(0, 80, k))] for _ in range(3)],
                 dtype=object)
    b = np.array([[int(v) for v in rng.integers(-2**62, 2**62, 4)] for _ in range(k)],
                 dtype=object)
    b[0, 0] = 3**70  # beyond int64
    assert (int_matmul(a, b) == a.dot(b)).all()
    layer = IntLayer(a, np.zeros(3, dtype=object), 1)
    assert (int_matmul(layer, b) == a.dot(b)).all()
    a[1, 0] = -(1 << 900) - 1  # too many limbs: the object product
    assert (int_matmul(a, b) == a.dot(b)).all()


def test_lin_keeps_lowest_terms_so_equal_expressions_are_equal_fields():
    z = Lin.of({3: Fraction(2, 6), 1: Fraction(-4)}, Fraction(1, 2))
    assert (z.srcs, z.nums, z.cnum, z.den) == ((1, 3), (-24, 2), 3, 6)
    assert z.terms == ((1, Fraction(-4)), (3, Fraction(1, 3))) and z.const == Fraction(1, 2)
    same = Lin.of({1: Fraction(-8)}, Fraction(1)).scaled(Fraction(1, 2)).minus(
        Lin.of({3: Fraction(-1, 3)}))
    assert same == z and hash(same) == hash(z)
    key, scale = primitive(z)
    assert (key.ints, key.const, scale) == ((-24, 2), 3, Fraction(1, 6))
    assert z.negated().negated() == z and z.minus(z) == Lin()


def _reference(w, b, h):
    """``w @ h + b`` one Fraction at a time."""
    out = []
    for i in range(w.shape[0]):
        acc, const = {}, Fraction(b[i])
        for j, e in enumerate(h):
            c = Fraction(float(w[i, j]))
            for s, q in e.terms:
                acc[s] = acc.get(s, Fraction(0)) + c * q
            const += c * e.const
        out.append(Lin.of(acc, const))
    return out


@pytest.mark.parametrize("kind", ["simple", "repeated", "general"])
def test_layer_expressions_equal_the_fraction_reference(kind):
    rng = np.random.default_rng(len(kind))
    w, b = _wild_floats(rng, (6, 5)), _wild_floats(rng, (6,))
    if kind == "simple":
        h = [Lin.source(j + 2, Fraction(int(rng.integers(1, 9)), 2 ** int(rng.integers(0, 9))))
             for j in range(5)]
        h[1] = Lin.constant(Fraction(3, 10))  # a fixed input
    elif kind == "repeated":  # a source read through two inputs (a merged unit)
        h = [Lin.source(7, Fraction(1, 4)), Lin.source(2), Lin.source(7, Fraction(3)),
             Lin(), Lin.source(0, Fraction(-5, 8))]
    else:
        h = [Lin.of({int(s): Fraction(int(rng.integers(-9, 9)), 8) for s in rng.choice(8, 3)},
                    Fraction(int(rng.integers(-5, 5)), 3)) for _ in range(5)]
    table = UnitTable([Fraction(-1)] * 8, [Fraction(1)] * 8)
    got = _layer_expressions(integer_layer(Affine(w, b)), h, table)
    assert got == _reference(w, b, h)


def test_exact_rows_and_layers_with_rational_weights():
    w = np.array([[1 / 3, -0.5], [0.25, 0.0]])
    exact = np.array([[Fraction(1, 3), Fraction(-1, 2)], [Fraction(1, 4), Fraction(0)]],
                     dtype=object)
    bias = np.array([Fraction(1, 7), Fraction(0)], dtype=object)
    layer = integer_layer(Affine(w, np.array([1 / 7, 0.0]), exact, bias))
    assert layer.den == 84 and layer.n.tolist() == [[28, -42], [21, 0]] and layer.nb[0] == 12
    ranges = [(Fraction(-1, 10), Fraction(2, 5)), (Fraction(1, 3), Fraction(1))]
    got = _exact_step(layer, [0, 1], ranges)
    # row 0: 1/3 x0 - 1/2 x1 + 1/7; row 1: 1/4 x0
    assert got[0] == (Fraction(1, 3) * Fraction(-1, 10) - Fraction(1, 2) + Fraction(1, 7),
                      Fraction(1, 3) * Fraction(2, 5) - Fraction(1, 6) + Fraction(1, 7))
    assert got[1] == (Fraction(-1, 40), Fraction(1, 10))
