"""Counterexample search inside the branch and bound: batched, float64, candidates only.

Points come from the boxes the bounds find worst: their centres, the box vertex that maximises
the worst linear bound (the direction the bound says the violation grows), and projected
signed-gradient steps from the best of them (the networks are piecewise linear, so the gradient
in a linear region is exact and cheap: one backward pass with the ReLU masks). Every point is
rounded to float32 where the box holds float32 points (what ONNX runtimes compute on) and kept
inside the exact box. A candidate whose float margin is positive is confirmed in exact rational
arithmetic (:meth:`Network.evaluate_exact`, :meth:`Spec.margin`, :meth:`Box.contains`) before the
engine reports it.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from equivcheck.core import matrix
from equivcheck.core.domain import Box
from equivcheck.core.network import Network
from equivcheck.core.spec import Mode, Spec, batch_margin, objective_weights


def _forward(net: Network, x: np.ndarray):
    h, masks = x, []
    for layer in net.layers:
        h = matrix.left_multiply(h, layer.weight.T) + layer.bias
        if layer.relu:
            m = h > 0
            masks.append(m)
            h = h * m
        else:
            masks.append(None)
    return h, masks


def _vjp(net: Network, masks, c: np.ndarray) -> np.ndarray:
    g = c
    for layer, m in zip(reversed(net.layers), reversed(masks)):
        if m is not None:
            g = g * m
        g = matrix.left_multiply(g, layer.weight)
    return g


class Falsifier:
    """Float candidates and their exact confirmation for one pair, spec and box."""

    def __init__(self, f: Network, g: Network, spec: Spec, box: Box, seed: int = 0):
        self.f, self.g, self.spec, self.box = f, g, spec, box
        self.rng = np.random.default_rng(seed)
        got = box.sample_box()
        self.sample = None if got is None else got[0]
        self.float32 = got is not None and got[1] == "float32"
        self.best_margin = -np.inf  # best float margin seen (a witnessed lower bound, in float)
        self.best_point: np.ndarray | None = None
        self.checked = 0
        self._known: tuple[np.ndarray, np.ndarray] | None = None  # the last candidates' margins

    def _snap(self, x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        slo, shi = self.sample
        x = np.clip(x, np.maximum(lo, slo), np.minimum(hi, shi))
        if self.float32:
            x = x.astype(np.float32).astype(np.float64)
        return np.clip(x, slo, shi)

    def margins(self, x: np.ndarray) -> np.ndarray:
        return batch_margin(self.spec, self.f.evaluate(x), self.g.evaluate(x))

    def ascend(self, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, steps: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """Projected signed-gradient ascent of the margin from the points ``x`` (rows), each
        staying in its own box ``[lo, hi]``; returns the best point seen per row and its float
        margin (:meth:`margins`). One forward pass per point and step serves both the margin and
        the gradient (``_forward``'s outputs are ``Network.evaluate``'s)."""
        width = hi - lo
        step = 0.25
        best = best_m = None
        for it in range(steps + 1):
            yf, mf = _forward(self.f, x)
            yg, mg = _forward(self.g, x)
            m = batch_margin(self.spec, yf, yg)
            if best is None:
                best, best_m = x.copy(), m
            else:
                better = m > best_m
                best[better], best_m[better] = x[better], m[better]
            if it == steps:
                break
            ca, cb = objective_weights(self.spec, yf, yg)
            grad = _vjp(self.f, mf, ca) + _vjp(self.g, mg, cb)
            jitter = self.rng.uniform(0.5, 1.5, x.shape)
            x = self._snap(x + step * width * np.sign(grad) * jitter, lo, hi)
            step *= 0.6
        return best, best_m

    def candidates(self, lo: np.ndarray, hi: np.ndarray, coef: np.ndarray | None,
                   steps: int, random: int = 0) -> np.ndarray:
        """Points to try in boxes ``[lo, hi]`` (rows): centres, the vertex of ``coef``'s sign,
        ``random`` uniform points per box, then ``steps`` gradient steps from all of them."""
        if self.sample is None:
            return np.zeros((0, lo.shape[1]))
        pts, plo, phi = [0.5 * lo + 0.5 * hi], [lo], [hi]
        if coef is not None:
            pts.append(np.where(coef > 0, hi, lo))
            plo.append(lo)
            phi.append(hi)
        for _ in range(random):
            pts.append(lo + self.rng.random(lo.shape) * (hi - lo))
            plo.append(lo)
            phi.append(hi)
        x, blo, bhi = np.concatenate(pts), np.concatenate(plo), np.concatenate(phi)
        x = self._snap(x, blo, bhi)
        if steps:
            x, m = self.ascend(x, blo, bhi, steps)
            self._known = (x, m)  # their margins, for confirm
        return x

    def confirm(self, x: np.ndarray, limit: int = 4):
        """The first point among the ``limit`` best (by float margin) that violates the spec
        exactly and lies in the box: ``(point, float margin, exact margin)``, or None."""
        if not len(x):
            return None
        known, self._known = self._known, None
        m = known[1] if known is not None and known[0] is x else self.margins(x)
        order = np.argsort(-m)
        if m[order[0]] > self.best_margin:
            self.best_margin, self.best_point = float(m[order[0]]), x[order[0]].copy()
        for i in order[:limit]:
            if not (m[i] > 0 or (self.spec.mode is Mode.ARGMAX and m[i] >= 0)):
                break
            p = x[i]
            if not self.box.contains(p):
                continue
            self.checked += 1
            q = [Fraction(float(v)) for v in p]
            ya, yb = self.f.evaluate_exact(q), self.g.evaluate_exact(q)
            if not self.spec.holds(ya, yb):
                return p.copy(), float(m[i]), self.spec.margin(ya, yb)
        return None
