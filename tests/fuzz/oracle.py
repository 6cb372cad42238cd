"""Exact ground truth for verdicts: the relation in rationals, counterexample checks, sampling.

Nothing here trusts equivcheck: a network is judged by a :class:`~tests.fuzz.nets.NetSpec`
(the recipe the model was rendered from) or, where no recipe describes the file, by
``equivcheck.load_network(...).evaluate_exact`` (the stored weights in exact arithmetic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Sequence

import numpy as np

from .domains import DomainSpec


@dataclass(frozen=True)
class SpecChoice:
    """The relation asked for: ``mode`` strict / epsilon / argmax, ``tolerance`` as decimal text."""

    mode: str = "strict"
    tolerance: str | None = None
    norm: str = "linf"

    @property
    def tol(self) -> Fraction:
        if self.mode != "epsilon":
            return Fraction(0)
        return Fraction(self.tolerance) if self.tolerance is not None else Fraction(1, 10**6)

    def cli_args(self) -> list[str]:
        args = ["--mode", self.mode]
        if self.mode == "epsilon":
            if self.tolerance is not None:
                args += ["--tolerance", self.tolerance]
            args += ["--norm", self.norm]
        return args

    def api_kwargs(self) -> dict:
        kw = {"mode": self.mode, "norm": self.norm}
        if self.mode == "epsilon" and self.tolerance is not None:
            kw["tolerance"] = self.tolerance
        return kw

    def holds(self, ya: Sequence[Fraction], yb: Sequence[Fraction]) -> bool:
        """The relation in exact arithmetic (argmax ties go to the lowest index)."""
        if self.mode == "strict":
            return all(a == b for a, b in zip(ya, yb))
        if self.mode == "epsilon":
            d = [abs(a - b) for a, b in zip(ya, yb)]
            return (max(d) if self.norm == "linf" else sum(d)) <= self.tol
        return _argmax(ya) == _argmax(yb)

    def float_margin(self, ya: np.ndarray, yb: np.ndarray) -> np.ndarray:
        """Per row, how far the relation looks violated in float64 (> 0: looks violated)."""
        with np.errstate(all="ignore"):
            d = np.abs(ya - yb)
            if self.mode == "strict":
                m = d.max(axis=1)
            elif self.mode == "epsilon":
                m = (d.max(axis=1) if self.norm == "linf" else d.sum(axis=1)) - float(self.tol)
            else:
                i, k = np.argmax(ya, axis=1), np.argmax(yb, axis=1)
                rows = np.arange(len(ya))
                if ya.shape[1] == 1:
                    m = np.full(len(ya), -1.0)
                else:
                    sa, sb = np.sort(ya, axis=1), np.sort(yb, axis=1)
                    gap = np.minimum(sa[:, -1] - sa[:, -2], sb[:, -1] - sb[:, -2])
                    differ = np.minimum(ya[rows, i] - ya[rows, k], yb[rows, k] - yb[rows, i])
                    m = np.where(i != k, np.maximum(differ, 0.0), -gap)
        return np.nan_to_num(m, nan=math.inf, posinf=math.inf, neginf=-math.inf)


def _argmax(y: Sequence) -> int:
    best = 0
    for j in range(1, len(y)):
        if y[j] > y[best]:
            best = j
    return best


@dataclass(frozen=True)
class Truth:
    """One network's exact function (``exact``) and a float64 batch evaluation (``floats``)."""

    exact: Callable[[Sequence[Fraction]], list[Fraction]]
    floats: Callable[[np.ndarray], np.ndarray]
    label: str


def recipe_truth(net, label: str) -> Truth:
    return Truth(net.evaluate_exact, net.evaluate, label)


def import_truth(path, label: str) -> Truth:
    """equivcheck's own import of ``path`` (the stored weights in exact arithmetic)."""
    import equivcheck

    net = equivcheck.load_network(str(path))

    def floats(x):
        with np.errstate(all="ignore"):
            return net.evaluate(np.atleast_2d(x))

    return Truth(net.evaluate_exact, floats, label)


def fmt_point(x: Sequence[Fraction], limit: int = 8) -> str:
    parts = [str(v) if Fraction(v).denominator < 10**12 else f"{float(v)!r}" for v in x[:limit]]
    return "[" + ", ".join(parts) + (", ..." if len(x) > limit else "") + "]"


# ---------------------------------------------------------------------------------------------


def check_refuted(cex: dict | None, dom: DomainSpec, spec: SpecChoice, ta: Truth, tb: Truth,
                  float32: bool = False) -> list[str]:
    """Problems with a REFUTED verdict's counterexample (from ``--json``): it must lie in the
    domain exactly and violate the relation exactly; a claim ``reproduces`` (or
    ``float_input_in_domain``) needs the float input run in float64 and onnxruntime (rounded to
    float32 when ``float32``: a model takes float32 input) in the domain, and finite outputs."""
    if not cex:
        return ["REFUTED without a counterexample"]
    exact_in = cex.get("input_exact") or []
    try:
        x = [Fraction(str(v)) for v in exact_in] if exact_in else [Fraction(v) for v in cex["input"]]
    except (ValueError, TypeError, KeyError) as exc:
        return [f"counterexample input unreadable: {exc}"]
    problems = []
    if not dom.contains(x):
        problems.append(f"WRONG REFUTED: counterexample {fmt_point(x)} lies outside the domain")
        return problems
    ya, yb = ta.exact(x), tb.exact(x)
    if spec.holds(ya, yb):
        problems.append(
            f"WRONG REFUTED: at {fmt_point(x)} the relation holds exactly "
            f"(a={[float(v) for v in ya]}, b={[float(v) for v in yb]})")
    floats = [float(v) for v in cex.get("input", [])]
    runs = [[Fraction(v) for v in floats]]
    if float32:
        runs.append([Fraction(float(np.float32(v))) for v in floats])
    outside = next((x for x in runs if not dom.contains(x)), None)
    if cex.get("float_input_in_domain") and outside is not None:
        problems.append(f"float_input_in_domain=true but the point {fmt_point(outside)} run in "
                        "float lies outside the domain")
    if cex.get("reproduces") and outside is not None:
        problems.append(f"'reproduces: true' although the point {fmt_point(outside)} run in "
                        "float64/onnxruntime lies outside the domain")
    ort = cex.get("onnxruntime") or {}
    if cex.get("reproduces") and not all(
            isinstance(v, (int, float)) and math.isfinite(v)
            for v in list(ort.get("output_a", [])) + list(ort.get("output_b", []))):
        problems.append("'reproduces: true' with non-finite onnxruntime outputs")
    return problems


def check_proved(dom: DomainSpec, spec: SpecChoice, ta: Truth, tb: Truth, n: int = 1000,
                 seed: int = 0, exact_checks: int = 6) -> list[str]:
    """Problems with a PROVED verdict: ``n`` domain points in float64, the most suspicious
    ``exact_checks`` (and every one that looks violated, up to 20) re-checked exactly."""
    xf, exact = dom.sample_points(n, np.random.default_rng(seed))
    if not len(xf):
        return []
    margins = spec.float_margin(ta.floats(xf), tb.floats(xf))
    order = np.argsort(-margins, kind="stable")
    suspicious = [i for i in order[:20] if margins[i] > 0]
    check = list(dict.fromkeys(list(order[:exact_checks]) + suspicious))
    for i in check:
        x = exact(int(i))
        if not dom.contains(x):
            return [f"harness error: sample {fmt_point(x)} outside the domain"]
        ya, yb = ta.exact(x), tb.exact(x)
        if not spec.holds(ya, yb):
            return [f"WRONG PROVED: at {fmt_point(x)} the relation is violated exactly "
                    f"(a={[float(v) for v in ya]}, b={[float(v) for v in yb]})"]
    return []


def check_import(path, truth: Truth, dom: DomainSpec, points: int = 3, seed: int = 1) -> list[str]:
    """equivcheck's exact import of ``path`` must compute the recipe's function exactly."""
    import equivcheck

    try:
        net = equivcheck.load_network(str(path))
    except Exception as exc:  # a valid model refused: reported, not raised
        return [f"valid model {path} refused by load_network: {type(exc).__name__}: {exc}"]
    for x, _ in dom.samples(points, np.random.default_rng(seed))[:points]:
        got, want = net.evaluate_exact(x), truth.exact(x)
        if list(got) != list(want):
            return [f"importer differs from the graph's exact function on {path} at "
                    f"{fmt_point(x)}: import {[float(v) for v in got]}, "
                    f"exact {[float(v) for v in want]}"]
    return []
