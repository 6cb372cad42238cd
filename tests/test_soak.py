"""Soak test (issue 8): 200 random pairs, random domains and modes, every verdict cross-checked.

Pairs are small ReLU networks (2-6 inputs) with a random relation (identical, permuted units,
a dead unit pruned, a unit rescaled by a power of two, one weight perturbed or zeroed, an output
bias shifted, or independent), written as ONNX in random equivalent styles. Domains are boxes,
points, thin boxes and boxes whose bounds are decimals that are not float32 numbers (given
through the library API, read exactly), and VNN-LIB files with strict bounds. Modes: strict,
epsilon (L-inf / L1, random tolerance) and argmax. Every verdict is checked against the recipe's
exact function:

* PROVED: 10,000 random domain points in float64 show no violation; the worst few are
  re-checked exactly (a violation there is a wrong PROVED);
* REFUTED: the counterexample lies in the domain (exact ``Fraction`` s, strict bounds honoured)
  and violates the relation exactly.

Fixed seed (reproducible); about 1-2 minutes.
"""

from __future__ import annotations

from decimal import Decimal, localcontext

import numpy as np
import onnx
import pytest

from .fuzz.domains import DomainSpec, Interval
from .fuzz.nets import (
    DELTAS,
    EXTRAS,
    RELATIONS,
    STYLES,
    NetSpec,
    Rendering,
    net_from_arrays,
    relate,
    render,
)
from .fuzz.oracle import SpecChoice, check_proved, check_refuted, recipe_truth

PAIRS = 200
SEED = 20261201
NON_FLOAT_DECIMALS = ("0.7000673", "0.1", "0.3", "-0.2", "0.123456789", "1.0000001", "-0.6666667")


def _net(rng: np.random.Generator, n_in: int, n_out: int) -> NetSpec:
    widths = [n_in] + list(rng.integers(2, 7, size=rng.integers(1, 3))) + [n_out]
    ws, bs = [], []
    for i in range(len(widths) - 1):
        shape = (widths[i + 1], widths[i])
        if rng.random() < 0.5:
            w, b = rng.integers(-12, 13, shape) / 8, rng.integers(-8, 9, shape[0]) / 8
        else:
            w, b = rng.normal(0, 1 / np.sqrt(widths[i]), shape), rng.normal(0, 0.3, shape[0])
        ws.append(w)
        bs.append(b)
    return net_from_arrays(ws, bs)


def _rendering(rng: np.random.Generator, n_layers: int) -> Rendering:
    return Rendering(
        dtype=str(rng.choice(["float32", "float64"])),
        styles=tuple(str(s) for s in rng.choice(STYLES, n_layers)),
        extras=tuple(str(s) for s in rng.choice(EXTRAS, n_layers)),
        batch=str(rng.choice(["1", "1", "N"])),
    )


def _dec(x: float, digits: int = 7) -> str:
    return f"{x:.{digits}f}"


def _add(a: str, b: str) -> str:
    with localcontext() as ctx:
        ctx.prec = 200
        return str(Decimal(a) + Decimal(b))


def _domain(rng: np.random.Generator, n: int) -> tuple[DomainSpec, str]:
    """A random domain and its kind: box, point, thin, decimal, mixed or strict (VNN-LIB)."""
    kind = str(rng.choice(["box", "box", "point", "thin", "decimal", "mixed", "strict"]))
    ivs = []
    for _ in range(n):
        lo = _dec(rng.uniform(-1, 0.5), int(rng.integers(1, 8)))
        if kind == "box":
            iv = Interval(lo, _add(lo, _dec(rng.uniform(0.01, 1.5), 3)))
        elif kind == "point" or (kind == "mixed" and rng.random() < 0.5):
            p = str(rng.choice(NON_FLOAT_DECIMALS)) if rng.random() < 0.5 else lo
            iv = Interval(p, p)
        elif kind == "thin":
            iv = Interval(lo, _add(lo, str(rng.choice(["1e-6", "1e-9", "1e-17", "1e-30"]))))
        elif kind == "strict":
            hi = _add(lo, str(rng.choice(["0.5", "1", "1e-3"])))
            iv = Interval(lo, hi, bool(rng.random() < 0.5), bool(rng.random() < 0.5))
        else:  # decimal / mixed: bounds that are not float32 numbers
            a, b = sorted(rng.choice(NON_FLOAT_DECIMALS, 2, replace=False), key=Decimal)
            iv = Interval(str(a), str(b))
        ivs.append(iv)
    return DomainSpec((tuple(ivs),)), kind


def _spec(rng: np.random.Generator) -> SpecChoice:
    mode = str(rng.choice(["strict", "epsilon", "epsilon", "argmax"]))
    if mode != "epsilon":
        return SpecChoice(mode)
    tol = str(rng.choice(["1e-6", "1e-3", "0.05", "0.3", "1"])) if rng.random() < 0.6 else \
        f"{rng.uniform(0, 0.5):.6f}"
    return SpecChoice("epsilon", tol, str(rng.choice(["linf", "l1"])))


@pytest.mark.slow
def test_soak_random_pairs_every_verdict_cross_checked(tmp_path):
    import equivcheck

    rng = np.random.default_rng(SEED)
    problems: list[str] = []
    verdicts = {"proved": 0, "refuted": 0, "unknown": 0, "input error": 0}
    for i in range(PAIRS):
        n_in, n_out = int(rng.integers(2, 7)), int(rng.integers(1, 5))
        base = _net(rng, n_in, n_out)
        relation = str(rng.choice(RELATIONS))
        other = _net(rng, n_in, n_out) if relation == "independent" else None
        a, b = relate(base, relation, pick=int(rng.integers(0, 50)),
                      delta=str(rng.choice(DELTAS)), other=other)
        ra, rb = _rendering(rng, len(a.layers)), _rendering(rng, len(b.layers))
        ma, mb = onnx.load_from_string(render(a, ra).data), onnx.load_from_string(render(b, rb).data)
        float32 = "float32" in (ra.dtype, rb.dtype)
        dom, kind = _domain(rng, n_in)
        spec = _spec(rng)
        if kind == "strict":
            path = tmp_path / f"d{i}.vnnlib"
            path.write_text(dom.vnnlib_text())
            domain = str(path)
        else:
            box = dom.boxes[0]
            domain = equivcheck.box_domain([iv.lo for iv in box], [iv.hi for iv in box])
        label = f"pair {i} ({relation}, {kind} domain, {spec})"
        try:
            res = equivcheck.prove(ma, mb, domain=domain, timeout=1.5, falsify_seconds=0.2,
                                   seed=i, **spec.api_kwargs())
        except equivcheck.InputError as exc:
            verdicts["input error"] += 1
            if not dom.is_exotic():
                problems.append(f"{label}: valid input refused: {exc}")
            continue
        except Exception as exc:  # an internal error is a finding too
            problems.append(f"{label}: {type(exc).__name__}: {exc}")
            continue
        verdict = res.verdict.label
        verdicts[verdict] += 1
        ta, tb = recipe_truth(a, "a"), recipe_truth(b, "b")
        if verdict == "refuted":
            cex = res.counterexample.to_dict() if res.counterexample else None
            found = check_refuted(cex, dom, spec, ta, tb, float32)
        elif verdict == "proved":
            found = check_proved(dom, spec, ta, tb, n=10_000, seed=i, exact_checks=5)
        else:
            found = []
        problems += [f"{label}: {p}" for p in found]
    assert not problems, f"{len(problems)} verdicts contradicted ({verdicts}):\n" + "\n".join(
        problems[:30])
    # the run must exercise both verdicts, or it proves nothing
    assert verdicts["proved"] >= 30 and verdicts["refuted"] >= 30, verdicts
