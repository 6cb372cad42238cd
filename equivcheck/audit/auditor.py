"""Auditing a pruned (or otherwise modified) model against its original.

:func:`audit` answers what a reviewer asks before a pruned model ships:

* **verdicts** for strict equivalence, a ladder of epsilons (L-infinity) and argmax equivalence,
  each PROVED / REFUTED (with a counterexample) / UNKNOWN;
* the **worst-case deviation** ``max_x ||f(x) - g(x)||_inf`` over the domain as an interval
  ``[lower, upper]``: ``upper`` is *certified* (no input of the domain deviates more) and
  ``lower`` is *witnessed* (an input attains it, checked in exact arithmetic); the same per output;
* which **units** the pruning removed or changed, and whether each removed unit was stably
  inactive on the domain in the original (harmless) or live;
* with ``data``: top-1 agreement and the distribution of the deviation on real inputs.

Soundness. The upper bound is the smallest of (1) rigorous bounds on ``f(x) - g(x)`` from
:func:`equivcheck.bounds.propagation.sound_bounds` run on the *difference network* (both networks side by
side, the output layer computing ``f - g`` exactly), (2) a differential interval propagation
that tracks ``h_f - h_g`` layer by layer with outward rounding (for equal architectures), and
(3) any epsilon for which :func:`equivcheck.prove` returned PROVED. The lower bound is always the
exact deviation (rational arithmetic on the stored weights) at a concrete float32 input inside
the domain, found by a gradient search that maximises the deviation or taken from a refutation.
Between them the gap is narrowed by bisection with ``prove(mode="epsilon")`` until it is within
``gap`` (relative) or the time runs out; an UNKNOWN answer never moves a bound.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from equivcheck.bounds import propagation as _bounds
from equivcheck.bounds.difference import difference_bounds, same_shape
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Box, Domain
from equivcheck.core.network import Affine, Layer, Network, fraction_array
from equivcheck.core.rational import float_up
from equivcheck.core.result import Counterexample, ProofResult, Verdict
from equivcheck.core.spec import Spec
from equivcheck.errors import InputError, ShapeMismatchError
from equivcheck.io.domains import parse_domain
from equivcheck.io.onnx_import import ModelLike
from equivcheck.solve.falsify import vjp

DEFAULT_EPSILONS: tuple[str, ...] = ("1e-6", "1e-4", "1e-3", "1e-2", "1e-1", "1", "10")
DEFAULT_TIMEOUT = 120.0
DEFAULT_GAP = 0.05  # stop refining when upper - lower <= gap * upper
RANDOM_SAMPLES = 2000  # random domain points whose deviation the report plots
MIN_CALL_SECONDS = 1.0
CALL_SHARE = 1 / 8  # each prover call gets at most this share of the audit's time (or 1 s)
SPLIT_SHARE = 1 / 4  # input splitting gets this share of the audit's time (and half of what is left)
WITNESS_SHARE = 1 / 20  # the witness search gets this share (at least 0.5 s, a quarter of what is left)
MAX_SPLIT_DIM = 16  # input splitting refines the certified bound only in low dimension


# ---------------------------------------------------------------------------------------------
# result objects


@dataclass(frozen=True)
class CheckVerdict:
    """One equivalence notion and how it was decided.

    ``method`` is "prover" (:func:`equivcheck.prove`), "certified bound" (the certified upper
    bound on the deviation is <= the tolerance) or "witness" (an exactly checked input deviates
    more than the tolerance).
    """

    name: str
    mode: str
    tolerance: Fraction | None
    verdict: Verdict
    reason: str
    method: str
    counterexample: Counterexample | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "mode": self.mode,
            "tolerance": None if self.tolerance is None else float(self.tolerance),
            "tolerance_exact": None if self.tolerance is None else str(self.tolerance),
            "verdict": self.verdict.label,
            "reason": self.reason,
            "method": self.method,
            "counterexample": self.counterexample.to_dict() if self.counterexample else None,
            "seconds": round(self.seconds, 4),
        }


@dataclass(frozen=True)
class DeviationBound:
    """``lower <= max_x |f(x) - g(x)| <= upper`` over the domain (``output`` None: all outputs,
    the L-infinity norm).

    ``lower`` is exact: the deviation at ``witness`` computed in rational arithmetic (at
    ``witness_exact`` when the witness is a rational point that is not a float vector, as in a
    domain holding no float32 point; ``witness`` is then its nearest floats). ``upper`` is
    certified by ``upper_method``; it is always a float value (rounded up where needed), so no
    bound grows huge denominators.
    """

    output: int | None
    lower: Fraction
    upper: Fraction
    witness: tuple[float, ...] | None
    upper_method: str
    witness_output: int | None = None
    witness_exact: tuple[Fraction, ...] | None = None  # set when the witness is not a float point

    @property
    def gap(self) -> float:
        return float(self.upper - self.lower)

    def within(self, rel_gap: float) -> bool:
        return float(self.upper - self.lower) <= rel_gap * float(self.upper) or self.upper == 0

    def to_dict(self) -> dict:
        return {
            "output": self.output,
            "lower": float(self.lower),
            "upper": float(self.upper),
            "lower_exact": str(self.lower),
            "upper_exact": str(self.upper),
            "upper_method": self.upper_method,
            "witness": list(self.witness) if self.witness is not None else None,
            "witness_exact": [str(v) for v in self.witness_exact] if self.witness_exact else None,
            "witness_output": self.witness_output,
        }


@dataclass(frozen=True)
class UnitChange:
    """A hidden unit that pruning removed or changed.

    ``original`` is the unit's stability on the domain in the original model (sound bounds):
    "inactive" (ReLU output 0 everywhere), "active" or "unstable". A removed unit is
    ``harmless`` when it was stably inactive in the original and outputs 0 in the pruned model
    too; a changed unit when it is stably inactive in both.
    """

    layer: int
    unit: int
    kind: str  # "removed" or "changed"
    original: str
    harmless: bool

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class LayerChange:
    """Per layer: how many weights and units pruning touched."""

    layer: int
    width: int
    relu: bool
    weights: int
    weights_zeroed: int
    weights_changed: int
    units_removed: int
    units_removed_harmless: int
    units_changed: int
    units_changed_harmless: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @property
    def units_removed_live(self) -> int:
        return self.units_removed - self.units_removed_harmless


@dataclass(frozen=True)
class SampleStats:
    """Deviation statistics on a set of inputs, evaluated in numpy float64 (not certified)."""

    source: str
    count: int
    inside_domain: int
    top1_agreement: float  # percent
    deviation_max: float
    quantiles: dict[str, float]
    histogram_edges: tuple[float, ...]
    histogram_counts: tuple[int, ...]
    deviations: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.zeros(0))
    deviations_inside: np.ndarray = field(repr=False, compare=False,
                                          default_factory=lambda: np.zeros(0))

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "count": self.count,
            "inside_domain": self.inside_domain,
            "top1_agreement_percent": self.top1_agreement,
            "deviation_max": self.deviation_max,
            "quantiles": self.quantiles,
            "histogram": {"edges": list(self.histogram_edges),
                          "counts": list(self.histogram_counts)},
        }


@dataclass(frozen=True)
class AuditResult:
    """Everything :func:`audit` found; ``to_dict`` is the JSON the CLI prints."""

    original: str
    pruned: str
    domain_text: str
    domain: dict
    checks: tuple[CheckVerdict, ...]
    deviation: DeviationBound
    per_output: tuple[DeviationBound, ...]
    layers: tuple[LayerChange, ...]
    units: tuple[UnitChange, ...]
    samples: SampleStats
    data: SampleStats | None
    gap: float
    converged: bool
    seconds: float
    notes: tuple[str, ...] = ()

    def check(self, name: str) -> CheckVerdict:
        """The verdict called ``name`` ("strict", "argmax", "epsilon 0.01", ...)."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {
            "original": self.original,
            "pruned": self.pruned,
            "domain": self.domain,
            "domain_text": self.domain_text,
            "checks": [c.to_dict() for c in self.checks],
            "deviation": self.deviation.to_dict(),
            "per_output": [d.to_dict() for d in self.per_output],
            "gap_target": self.gap,
            "converged": self.converged,
            "layers": [lc.to_dict() for lc in self.layers],
            "units": [u.to_dict() for u in self.units],
            "samples": self.samples.to_dict(),
            "data": self.data.to_dict() if self.data else None,
            "seconds": round(self.seconds, 3),
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------------------------------------
# certified upper bounds on f(x) - g(x)


def _down(x: np.ndarray) -> np.ndarray:
    return np.nextafter(x, -np.inf)


def _up(x: np.ndarray) -> np.ndarray:
    return np.nextafter(x, np.inf)


def _best_method() -> str:
    methods = getattr(_bounds, "BOUND_METHODS", ("interval",))
    return "symbolic" if "symbolic" in methods else "interval"


def difference_network(f: Network, g: Network) -> Network | None:
    """A network computing ``f(x) - g(x)`` exactly: both networks side by side (block-diagonal
    hidden layers) and an output layer ``[W_f, -W_g]`` with bias ``b_f - b_g`` (kept as exact
    rationals when the float difference rounds). None when the depths differ."""
    if len(f.layers) != len(g.layers) or any(
        lf.relu != lg.relu for lf, lg in zip(f.layers, g.layers)
    ):
        return None
    layers = []
    last = len(f.layers) - 1
    for k, (lf, lg) in enumerate(zip(f.layers, g.layers)):
        af, ag = lf.affine, lg.affine
        if k == 0:
            w = np.vstack([af.weight, ag.weight])
            ew = None if af.is_exact_float and ag.is_exact_float else np.vstack(
                [af.rational_weight(), ag.rational_weight()])
        elif k < last:
            w = _block(af.weight, ag.weight, 0.0)
            ew = None if af.is_exact_float and ag.is_exact_float else _block(
                af.rational_weight(), ag.rational_weight(), Fraction(0))
        else:
            w = np.hstack([af.weight, -ag.weight])
            ew = None if af.is_exact_float and ag.is_exact_float else np.hstack(
                [af.rational_weight(), -ag.rational_weight()])
        if k < last:
            b = np.concatenate([af.bias, ag.bias])
            eb = None if af.is_exact_float and ag.is_exact_float else np.concatenate(
                [af.rational_bias(), ag.rational_bias()])
        else:
            b = af.bias - ag.bias
            exact_b = af.rational_bias() - ag.rational_bias()
            eb = None if np.all(fraction_array(b) == exact_b) and ew is None else exact_b
            if eb is not None and ew is None:
                ew = fraction_array(w)
        if ew is not None and eb is None:
            eb = fraction_array(b)
        layers.append(Layer(Affine(w, b, ew, eb), relu=lf.relu, name=f"diff{k}"))
    return Network(tuple(layers), source=f"{f.source} - {g.source}")


def _block(a: np.ndarray, b: np.ndarray, zero) -> np.ndarray:
    dtype = object if isinstance(zero, Fraction) else np.float64
    out = np.full((a.shape[0] + b.shape[0], a.shape[1] + b.shape[1]), zero, dtype=dtype)
    out[: a.shape[0], : a.shape[1]] = a
    out[a.shape[0]:, a.shape[1]:] = b
    return out


def differential_interval(f: Network, g: Network, lo: np.ndarray, hi: np.ndarray,
                          method: str = "interval", symbolic: bool = False,
                          deadline: Deadline | None = None
                          ) -> tuple[np.ndarray, np.ndarray] | None:
    """Rigorous bounds ``(dlo, dhi)`` on ``f(x) - g(x)`` for ``x`` in the float box ``[lo, hi]``
    (see :func:`equivcheck.bounds.difference.difference_bounds`); None when the shapes differ."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    if not same_shape(f, g):
        return None
    bf = _bounds.sound_bounds(f, lo, hi, method, deadline)
    bg = _bounds.sound_bounds(g, lo, hi, method, deadline)
    out = difference_bounds(f, g, lo, hi, bf, bg, symbolic=symbolic, deadline=deadline)[-1]
    return out.post_lower, out.post_upper


def certified_difference(f: Network, g: Network, box: Box, method: str | None = None,
                         deadline: Deadline | None = None) -> tuple[np.ndarray, str]:
    """Per output j, a certified upper bound of ``|f_j(x) - g_j(x)|`` over ``box``, and the
    name of the method that gave the smallest total. Past ``deadline`` the costlier candidates
    are skipped or computed with cheaper (still rigorous) bounds."""
    method = method or _best_method()
    lo, hi = box.lower_float(), box.upper_float()
    candidates: list[tuple[np.ndarray, str]] = []
    bf = _bounds.sound_bounds(f, lo, hi, method, deadline)
    bg = _bounds.sound_bounds(g, lo, hi, method, deadline)
    naive = np.maximum(_up(bf[-1].upper - bg[-1].lower), _up(bg[-1].upper - bf[-1].lower))
    candidates.append((naive, f"{method} bounds of each model"))
    late = deadline is not None and deadline.expired()
    diff = None if late else difference_network(f, g)
    if diff is not None:
        out = _bounds.sound_bounds(diff, lo, hi, method, deadline)[-1]
        candidates.append((np.maximum(np.abs(out.lower), np.abs(out.upper)),
                           f"{method} bounds of the difference network"))
    dint = differential_interval(f, g, lo, hi, method, deadline=deadline)
    if dint is not None:
        candidates.append((np.maximum(np.abs(dint[0]), np.abs(dint[1])), "differential interval"))
        if not (deadline is not None and deadline.expired()):
            dsym = differential_interval(f, g, lo, hi, method, symbolic=True, deadline=deadline)
            candidates.append((np.maximum(np.abs(dsym[0]), np.abs(dsym[1])),
                               "differential symbolic bounds"))
    best = np.min(np.vstack([c for c, _ in candidates]), axis=0)
    name = min(candidates, key=lambda c: float(np.max(c[0])))[1]
    return best, name


# ---------------------------------------------------------------------------------------------
# witnesses: inputs that deviate a lot, checked exactly


def search_witnesses(f: Network, g: Network, box: Box, seconds: float, seed: int = 0,
                     starts: int = 4, samples: int = 512) -> np.ndarray:
    """Candidate points of ``box`` (float32-representable, or float64 where the box holds no
    float32 point) that maximise ``|f_j - g_j|``, one per output j (rows), by signed-gradient
    ascent from the best random samples; none when the box holds no float point at all.
    Candidates only: callers evaluate them exactly."""
    got = box.sample_box()
    if got is None:
        return np.zeros((0, box.dim))
    (lo, hi), precision = got
    dtype = np.float32 if precision == "float32" else np.float64
    rng = np.random.default_rng(seed)
    m = f.out_dim
    n = max(samples, 2 * m * starts)
    x0 = np.vstack([(lo + hi) / 2, lo + rng.random((n, len(lo))) * (hi - lo)])
    x0 = np.clip(x0.astype(dtype).astype(np.float64), lo, hi)
    d0 = f.evaluate(x0) - g.evaluate(x0)
    # objectives: (output j, sign s) maximise s * (f_j - g_j); `starts` best samples each
    pts, cs = [], []
    for j in range(m):
        for s in (1.0, -1.0):
            best = np.argsort(-s * d0[:, j])[:starts]
            pts.append(x0[best])
            c = np.zeros((len(best), m))
            c[:, j] = s
            cs.append(c)
    x, c = np.vstack(pts), np.vstack(cs)
    val = np.sum(c * (f.evaluate(x) - g.evaluate(x)), axis=1)
    width = hi - lo
    step = 0.25
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and step > 1e-6:
        gr = vjp(f, x, c) - vjp(g, x, c)
        moved = False
        for scale in (1.0, 0.3, 0.1):
            cand = np.clip((x + np.sign(gr) * width * step * scale).astype(dtype)
                           .astype(np.float64), lo, hi)
            v = np.sum(c * (f.evaluate(cand) - g.evaluate(cand)), axis=1)
            better = v > val
            if np.any(better):
                x[better], val[better] = cand[better], v[better]
                moved = True
        if not moved:
            step *= 0.5
    # best point per output
    out = []
    jj = np.argmax(np.abs(c), axis=1)
    for j in range(m):
        rows = np.where(jj == j)[0]
        out.append(x[rows[np.argmax(val[rows])]])
    return np.array(out)


def exact_deviation(f: Network, g: Network, x) -> list[Fraction]:
    """``|f_j(x) - g_j(x)|`` for every output j, in exact rational arithmetic (``x`` of floats
    or exact Fractions)."""
    q = [v if isinstance(v, Fraction) else Fraction(float(v)) for v in x]
    return [abs(a - b) for a, b in zip(f.evaluate_exact(q), g.evaluate_exact(q))]


# ---------------------------------------------------------------------------------------------
# what the pruning changed


def _stability(net: Network, domain: Domain, method: str,
               deadline: Deadline | None = None) -> list[np.ndarray]:
    """Per layer, the stability of each unit on the whole domain (-1 inactive, 1 active,
    0 unstable): stable only when stable the same way on every box."""
    per_box = []
    for box in domain.boxes:
        bl = _bounds.sound_bounds(net, box.lower_float(), box.upper_float(), method, deadline)
        per_box.append([lb.stability() for lb in bl])
    out = []
    for k in range(len(net.layers)):
        st = np.vstack([pb[k] for pb in per_box])
        same = np.all(st == st[0], axis=0)
        out.append(np.where(same, st[0], 0).astype(np.int8))
    return out


_STAB_NAME = {-1: "inactive", 0: "unstable", 1: "active"}


def unit_changes(f: Network, g: Network, domain: Domain, method: str = "interval",
                 deadline: Deadline | None = None
                 ) -> tuple[tuple[LayerChange, ...], tuple[UnitChange, ...], str | None]:
    """Compare the networks layer by layer: per layer the weights zeroed/changed, and every
    hidden unit whose incoming weights are all zero in ``g`` (or whose outgoing weights are all
    zero) — *removed* — or whose incoming weights or bias changed — *changed*. Returns
    (layers, units, note); the note says why nothing was compared when the architectures differ.
    """
    if len(f.layers) != len(g.layers) or any(
        lf.weight.shape != lg.weight.shape or lf.relu != lg.relu
        for lf, lg in zip(f.layers, g.layers)
    ):
        return (), (), (
            f"architectures differ ({f.description} vs {g.description}): no unit-by-unit "
            "comparison"
        )
    st_f = _stability(f, domain, method, deadline)
    st_g = _stability(g, domain, method, deadline)
    layers, units = [], []
    for k, (lf, lg) in enumerate(zip(f.layers, g.layers)):
        wf, wg = lf.affine.rational_weight(), lg.affine.rational_weight()
        same_w = wf == wg
        zeroed = int(np.sum((wg == 0) & (wf != 0)))
        changed_w = int(np.sum(~same_w)) - zeroed
        row_changed = ~np.all(same_w, axis=1) | (lf.affine.rational_bias() != lg.affine.rational_bias())
        removed = np.zeros(lf.out_dim, dtype=bool)
        if lf.relu:
            in_gone = np.all(wg == 0, axis=1) & ~np.all(wf == 0, axis=1)
            nxt_f = f.layers[k + 1].affine.rational_weight()
            nxt_g = g.layers[k + 1].affine.rational_weight()
            out_gone = np.all(nxt_g == 0, axis=0) & ~np.all(nxt_f == 0, axis=0)
            removed = in_gone | out_gone
            bias_g = lg.affine.rational_bias()
            n_rem = n_rem_ok = n_chg = n_chg_ok = 0
            for i in range(lf.out_dim):
                orig = int(st_f[k][i])
                if removed[i]:
                    # incoming gone: the pruned unit is the constant relu(b); 0 iff b <= 0
                    pruned_zero = bool(out_gone[i]) or bias_g[i] <= 0
                    ok = orig == -1 and pruned_zero
                    units.append(UnitChange(k, i, "removed", _STAB_NAME[orig], ok))
                    n_rem += 1
                    n_rem_ok += ok
                elif row_changed[i]:
                    ok = orig == -1 and int(st_g[k][i]) == -1
                    units.append(UnitChange(k, i, "changed", _STAB_NAME[orig], ok))
                    n_chg += 1
                    n_chg_ok += ok
        else:
            n_rem = n_rem_ok = n_chg_ok = 0
            n_chg = int(np.sum(row_changed))
        layers.append(LayerChange(k, lf.out_dim, lf.relu, int(wf.size), zeroed, changed_w,
                                  n_rem, n_rem_ok, n_chg, n_chg_ok))
    return tuple(layers), tuple(units), None


# ---------------------------------------------------------------------------------------------
# samples and data


def _inputs_from(data: Any, in_dim: int) -> np.ndarray:
    if isinstance(data, (str, Path)):
        path = Path(data)
        if not path.is_file():
            raise InputError(f"{path}: no such data file")
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - numpy raises several types for bad files
            raise InputError(f"{path}: not a readable .npy array ({type(exc).__name__})") from None
        name = str(path)
    else:
        arr, name = np.asarray(data), "data"
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{name}: expected numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    per_row = int(np.prod(arr.shape[1:])) if arr.ndim > 1 else arr.size
    if arr.size == 0 or per_row != in_dim:
        raise ShapeMismatchError(
            f"{name}: shape {arr.shape} cannot be split into inputs of {in_dim} values "
            f"(expected shape (N, ...) with {in_dim} values per input)"
        )
    arr = arr.reshape(-1, in_dim)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name}: contains NaN or infinite values")
    return arr


def sample_stats(f: Network, g: Network, x: np.ndarray, domain: Domain, source: str) -> SampleStats:
    """Top-1 agreement and deviation ``||f(x) - g(x)||_inf`` (float64) on the rows of ``x``
    (at least one row); ``inside_domain`` counts the rows that lie in the domain exactly."""
    ya, yb = f.evaluate(x), g.evaluate(x)
    dev = np.max(np.abs(ya - yb), axis=1)
    agree = float(np.mean(np.argmax(ya, axis=1) == np.argmax(yb, axis=1)) * 100.0)
    inside = np.zeros(len(x), dtype=bool)
    for box in domain.boxes:
        got = box.float64_box()  # float64 rows lie in the exact box iff inside these bounds
        if got is not None:
            inside |= np.all((x >= got[0]) & (x <= got[1]), axis=1)
    qs = {f"p{q}": float(np.percentile(dev, q)) for q in (0, 50, 90, 99, 100)}
    top = float(dev.max()) if float(dev.max()) > 0 else 1.0
    counts, edges = np.histogram(dev, bins=30, range=(0.0, top))
    return SampleStats(source, len(x), int(inside.sum()), agree, float(dev.max()), qs,
                       tuple(float(e) for e in edges), tuple(int(c) for c in counts), dev,
                       dev[inside])


def random_domain_points(domain: Domain, n: int, seed: int = 0) -> np.ndarray:
    """``n`` uniform points of the domain (spread over its boxes), float32-representable (or
    float64 in a box holding no float32 point); none from boxes holding no float point."""
    rng = np.random.default_rng(seed)
    rows = []
    per = [n // len(domain.boxes) + (i < n % len(domain.boxes)) for i in range(len(domain.boxes))]
    for box, k in zip(domain.boxes, per):
        got = box.sample_box()
        if got is None or k == 0:
            continue
        (lo, hi), precision = got
        dtype = np.float32 if precision == "float32" else np.float64
        x = lo + rng.random((k, len(lo))) * (hi - lo)
        rows.append(np.clip(x.astype(dtype).astype(np.float64), lo, hi))
    return np.vstack(rows) if rows else np.zeros((0, domain.dim))


# ---------------------------------------------------------------------------------------------
# the audit


def _slice_output(net: Network, j: int) -> Network:
    last = net.layers[-1]
    a = last.affine
    aff = Affine(a.weight[j:j + 1], a.bias[j:j + 1],
                 None if a.exact_weight is None else a.exact_weight[j:j + 1],
                 None if a.exact_bias is None else a.exact_bias[j:j + 1])
    return net.with_layers(net.layers[:-1] + (Layer(aff, False, last.name),))


def _short(q: Fraction) -> Fraction:
    """A simple rational within 1e-6 relative of ``q``, for bisection points (any is valid)."""
    return Fraction(f"{float(q):.6g}")


def _bisection_point(lo: Fraction, hi: Fraction) -> Fraction | None:
    """A point strictly between ``lo`` and ``hi`` for the bisection: a short decimal near the
    midpoint, else the nearest float of the midpoint; None when no float lies strictly between
    (the bounds are at float resolution: refining further would only grow denominators)."""
    mid = (lo + hi) / 2
    for q in (_short(mid), Fraction(float(mid))):
        if lo < q < hi and Fraction(float(q)) == q:
            return q
    return None


class _Auditor:
    def __init__(self, original, pruned, domain, epsilons, deadline: Deadline, gap, seed,
                 method) -> None:
        from equivcheck.solve.prover import load_pair
        from equivcheck.solve.witness import OrtRunner

        self.start = time.monotonic()
        self.deadline = deadline
        self.timeout = deadline.budget
        models = load_pair(original, pruned)
        self.pa, self.pb = models.proto_a, models.proto_b
        self.f, self.g = models.net_a, models.net_b
        self.domain = parse_domain(domain, self.f.in_dim)
        self.epsilons = [_tolerance(e) for e in epsilons]
        self.gap = gap
        self.seed = seed
        self.method = method or _best_method()
        self.runner = OrtRunner() if self.pa is not None and self.pb is not None else None
        self.a_arg = original if not isinstance(original, Network) else self.f
        self.b_arg = pruned if not isinstance(pruned, Network) else self.g
        if self.pa is not None:
            self.a_arg, self.b_arg = self.pa, self.pb
        self.notes: list[str] = []
        m = self.f.out_dim
        self.upper = [Fraction(0)] * m
        self.upper_method = [""] * m
        self.lower = [Fraction(0)] * m
        self.witness: list[tuple[float, ...] | None] = [None] * m
        self.witness_exact: list[tuple[Fraction, ...] | None] = [None] * m
        self.witness_box: list[int] = [0] * m
        self.total_upper: Fraction = Fraction(0)
        self.total_method = ""

    # -- time
    def remaining(self) -> float:
        return self.deadline.remaining()

    def out_of_time(self) -> bool:
        """Too little time left for a prover call to be worth starting."""
        return self.remaining() < MIN_CALL_SECONDS / 2

    def call_budget(self) -> Deadline:
        """The deadline of one prover call: a share of the audit's time, never past its end."""
        return self.deadline.sub(seconds=max(MIN_CALL_SECONDS, self.timeout * CALL_SHARE))

    # -- bounds
    def initial_bounds(self) -> None:
        m = self.f.out_dim
        per_box_upper = np.zeros(m)
        names = []
        for box in self.domain.boxes:  # every box needs a bound: past the deadline, cheap ones
            ub, name = certified_difference(self.f, self.g, box, self.method, self.deadline)
            per_box_upper = np.maximum(per_box_upper, ub)
            names.append(name)
        for j in range(m):
            self.upper[j] = Fraction(float(per_box_upper[j]))  # exact value of the float bound
            self.upper_method[j] = names[0] if len(set(names)) == 1 else "sound bounds per box"
        self.total_upper = max(self.upper)
        self.total_method = self.upper_method[int(np.argmax(per_box_upper))]
        # the search and the exact checks of its candidates share one budget; the most
        # deviating candidate of each box is always checked (the lower bound rests on it)
        search = self.deadline.sub(seconds=min(max(0.5, self.timeout * WITNESS_SHARE),
                                               max(self.remaining() / 4, 0.1)))
        for bi, box in enumerate(self.domain.boxes):
            if box.sample_box() is None:
                # no float point in the box: its exact centre is the only candidate we have
                self.offer_witness(box.midpoint(), bi)
                continue
            if search.expired():
                break
            cands = search_witnesses(self.f, self.g, box,
                                     search.remaining() / (2 * (len(self.domain.boxes) - bi)),
                                     seed=self.seed + bi)
            if len(cands) == 0:
                continue
            dev = np.max(np.abs(self.f.evaluate(cands) - self.g.evaluate(cands)), axis=1)
            for rank, i in enumerate(np.argsort(-dev)):
                if rank > 0 and search.expired():
                    break
                self.offer_witness(cands[i], bi)

    def split_refine(self, deadline: Deadline) -> None:
        """Tighten the certified bound by splitting the input box (branch and bound).

        The leaves always cover the domain (each split halves a float box at a float midpoint
        and both halves keep it), so the maximum of the leaves' sound bounds is a certified
        bound. The leaf with the largest bound is split along its widest side (relative to the
        domain). The float32 centre of every new leaf is a witness candidate. Stops when the
        gap target is met or ``deadline`` has passed.
        """
        same = same_shape(self.f, self.g)
        diff = None if same else difference_network(self.f, self.g)
        if not same and diff is None:
            return

        def leaf(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
            if same:
                dl, du = differential_interval(self.f, self.g, lo, hi, self.method, symbolic=True)
            else:
                out = _bounds.sound_bounds(diff, lo, hi, self.method)[-1]
                dl, du = out.lower, out.upper
            return np.maximum(np.abs(dl), np.abs(du))

        heap: list = []
        count = 0
        widths = []
        for bi, box in enumerate(self.domain.boxes):
            lo, hi = box.lower_float(), box.upper_float()
            widths.append(np.where(hi > lo, hi - lo, 1.0))
            ub = leaf(lo, hi)
            heapq.heappush(heap, (-float(np.max(ub)), count, bi, lo, hi, ub))
            count += 1
        f32 = [box.float32_box() for box in self.domain.boxes]
        splits = 0
        while not deadline.expired():
            top = -heap[0][0]
            lower = float(self.total_lower)
            if top - lower <= self.gap * top or top == 0:
                break
            _, _, bi, lo, hi, _ = heapq.heappop(heap)
            k = int(np.argmax((hi - lo) / widths[bi]))
            mid = lo[k] + (hi[k] - lo[k]) / 2
            if not lo[k] < mid < hi[k]:
                heapq.heappush(heap, (-top, count, bi, lo, hi, leaf(lo, hi)))
                break  # cannot split further in float64
            for clo, chi in ((lo, np.where(np.arange(len(hi)) == k, mid, hi)),
                             (np.where(np.arange(len(lo)) == k, mid, lo), hi)):
                ub = leaf(clo, chi)
                count += 1
                heapq.heappush(heap, (-float(np.max(ub)), count, bi, clo, chi, ub))
                if f32[bi] is not None:
                    x = np.clip(((clo + chi) / 2).astype(np.float32).astype(np.float64), *f32[bi])
                    dev = np.abs(self.f.evaluate(x) - self.g.evaluate(x))
                    if np.any(dev > np.array([float(v) for v in self.lower]) * (1 + 1e-12)):
                        self.offer_witness(x, bi)
            splits += 1
        if splits == 0:
            return
        per_output = np.max(np.vstack([entry[5] for entry in heap]), axis=0)
        how = f"sound bounds on {len(heap)} sub-boxes (input splitting)"
        for j in range(len(self.upper)):
            q = Fraction(float(per_output[j]))
            if q < self.upper[j]:
                self.upper[j] = q
                self.upper_method[j] = how
        if max(self.upper) < self.total_upper:
            self.total_upper = max(self.upper)
            self.total_method = how

    def offer_witness(self, x, box_index: int) -> None:
        """Evaluate ``x`` (floats or exact Fractions) exactly and raise the lower bounds it beats.
        Points outside the box are ignored (a witness must lie in the domain)."""
        exact = tuple(v if isinstance(v, Fraction) else Fraction(float(v)) for v in x)
        if not self.domain.boxes[box_index].contains(exact):
            return
        dev = exact_deviation(self.f, self.g, exact)
        for j, d in enumerate(dev):
            if d > self.lower[j]:
                self.lower[j] = d
                self.witness[j] = tuple(float(v) for v in exact)
                floats = all(Fraction(w) == q for w, q in zip(self.witness[j], exact))
                self.witness_exact[j] = None if floats else exact
                self.witness_box[j] = box_index

    @property
    def total_lower(self) -> Fraction:
        return max(self.lower)

    def overall(self) -> DeviationBound:
        j = int(np.argmax([float(v) for v in self.lower])) if any(self.lower) else None
        return DeviationBound(None, self.total_lower, self.total_upper,
                              self.witness[j] if j is not None else None, self.total_method, j,
                              self.witness_exact[j] if j is not None else None)

    def set_total_upper(self, value: Fraction, how: str) -> None:
        value = Fraction(float_up(value))  # certified upper bounds stay float values
        if value < self.total_upper:
            self.total_upper = value
            self.total_method = how
            for j in range(len(self.upper)):
                if value < self.upper[j]:
                    self.upper[j] = value
                    self.upper_method[j] = how

    # -- proofs
    def prove(self, mode: str, tolerance: Fraction | None, a=None, b=None) -> ProofResult:
        from equivcheck.solve.prover import prove

        return prove(self.a_arg if a is None else a, self.b_arg if b is None else b,
                     domain=self.domain, mode=mode, tolerance=tolerance,
                     timeout=self.call_budget(), seed=self.seed, bounds=self.method)

    def learn(self, res: ProofResult, tolerance: Fraction, output: int | None) -> None:
        """Move the bounds with what a PROVED / REFUTED epsilon answer implies."""
        if res.verdict is Verdict.PROVED:
            if output is None:
                self.set_total_upper(tolerance, f"proved at epsilon {float(tolerance):g}")
            elif tolerance < self.upper[output]:
                self.upper[output] = tolerance
                self.upper_method[output] = f"proved at epsilon {float(tolerance):g}"
                self.total_upper = min(self.total_upper, max(self.upper))
        elif res.verdict is Verdict.REFUTED and res.counterexample is not None:
            self.offer_witness(_cex_point(res.counterexample), res.counterexample.box_index)

    def check_epsilon(self, eps: Fraction) -> CheckVerdict:
        name = f"epsilon {float(eps):g}"
        t0 = time.monotonic()
        if eps >= self.total_upper:
            return CheckVerdict(name, "epsilon", eps, Verdict.PROVED,
                                f"certified upper bound {float(self.total_upper):.6g} <= {float(eps):g}"
                                f" ({self.total_method})", "certified bound")
        if eps < self.total_lower:
            return self.witness_refutation(name, "epsilon", eps)
        if self.out_of_time():
            return CheckVerdict(name, "epsilon", eps, Verdict.UNKNOWN, "timeout: no time left",
                                "prover")
        res = self.prove("epsilon", eps)
        self.learn(res, eps, None)
        return CheckVerdict(name, "epsilon", eps, res.verdict, res.reason, "prover",
                            res.counterexample, time.monotonic() - t0)

    def witness_refutation(self, name: str, mode: str, eps: Fraction | None) -> CheckVerdict:
        from equivcheck.solve.witness import build_counterexample

        t0 = time.monotonic()
        j = int(np.argmax([float(v) for v in self.lower]))
        x = self.witness_exact[j] or self.witness[j]
        spec = Spec.make(mode, eps)
        tol = f" > {float(eps):g}" if eps is not None else " > 0"
        reason = f"witness deviates by {float(self.total_lower):.6g}{tol} (exact arithmetic)"
        cex = None
        if self.deadline.expired():  # the verdict rests on the exact deviation alone
            reason += "; the float64 / onnxruntime re-check was skipped (time limit)"
        else:
            cex = build_counterexample(self.f, self.g, spec, x, self.witness_box[j],
                                       "audit witness search", self.runner, self.pa, self.pb,
                                       box=self.domain.boxes[self.witness_box[j]])
        return CheckVerdict(name, mode, eps, Verdict.REFUTED, reason, "witness", cex,
                            time.monotonic() - t0)

    def check_strict(self) -> CheckVerdict:
        if self.total_lower > 0:
            return self.witness_refutation("strict", "strict", None)
        if self.out_of_time():
            return CheckVerdict("strict", "strict", None, Verdict.UNKNOWN,
                                "timeout: no time left", "prover")
        t0 = time.monotonic()
        res = self.prove("strict", None)
        if res.verdict is Verdict.PROVED:
            self.set_total_upper(Fraction(0), "proved strictly equivalent")
        elif res.counterexample is not None:
            self.offer_witness(_cex_point(res.counterexample), res.counterexample.box_index)
        return CheckVerdict("strict", "strict", None, res.verdict, res.reason, "prover",
                            res.counterexample, time.monotonic() - t0)

    def check_argmax(self, strict: CheckVerdict) -> CheckVerdict:
        t0 = time.monotonic()
        if strict.verdict is Verdict.PROVED:
            return CheckVerdict("argmax", "argmax", None, Verdict.PROVED,
                                "implied by strict equivalence", "prover")
        if self.out_of_time():
            return CheckVerdict("argmax", "argmax", None, Verdict.UNKNOWN,
                                "timeout: no time left", "prover")
        res = self.prove("argmax", None)
        return CheckVerdict("argmax", "argmax", None, res.verdict, res.reason, "prover",
                            res.counterexample, time.monotonic() - t0)

    def refine_total(self) -> None:
        """Bisection of [lower, upper] with prove(mode="epsilon") until within the gap.

        Stops as soon as the bounds meet the target, on an UNKNOWN answer, at float resolution,
        or when no input deviates (lower 0): then only a strict proof could close the gap, and
        :meth:`check_strict` has already tried it."""
        while not self.out_of_time() and not self.overall().within(self.gap):
            lo, hi = self.total_lower, self.total_upper
            if lo == 0:
                self.notes.append("refinement stopped: no input deviates and strict equivalence "
                                  "was not proved, so the relative gap cannot close")
                return
            mid = _bisection_point(lo, hi)
            if mid is None:
                return  # upper and lower are adjacent floats
            res = self.prove("epsilon", mid)
            if res.verdict is Verdict.UNKNOWN:
                self.notes.append(
                    f"refinement stopped: prove(epsilon={float(mid):g}) was unknown ({res.reason})"
                )
                return
            self.learn(res, mid, None)

    def refine_outputs(self) -> None:
        """Per-output bisection on single-output slices, largest gap first, while time lasts.

        An output no input deviates on (lower 0) is first checked for strict equality (PROVED
        closes it at 0, REFUTED gives a witness); bisection toward 0 could never close its
        relative gap."""
        m = self.f.out_dim
        if m == 1:
            return
        order = sorted(range(m), key=lambda j: -float(self.upper[j] - self.lower[j]))
        unknowns = 0  # two UNKNOWN answers in a row: the solver is out of its depth here
        for j in order:
            fa, gb = _slice_output(self.f, j), _slice_output(self.g, j)
            while not self.out_of_time() and unknowns < 2:
                lo, hi = self.lower[j], self.upper[j]
                if hi - lo <= self.gap * hi or hi == 0:
                    break
                mid = Fraction(0) if lo == 0 else _bisection_point(lo, hi)
                if mid is None:
                    break  # at float resolution
                if mid == 0:
                    res = self.prove("strict", None, fa, gb)
                else:
                    res = self.prove("epsilon", mid, fa, gb)
                what = "strict" if mid == 0 else f"epsilon={float(mid):g}"
                if res.verdict is Verdict.UNKNOWN:
                    unknowns += 1
                    self.notes.append(f"output {j}: refinement stopped, prove({what}) was unknown "
                                      f"({res.reason})")
                    break
                unknowns = 0
                if res.verdict is Verdict.PROVED:
                    self.upper[j] = mid
                    self.upper_method[j] = ("proved strictly equal" if mid == 0
                                            else f"proved at epsilon {float(mid):g}")
                elif res.counterexample is not None:
                    self.offer_witness(_cex_point(res.counterexample), res.counterexample.box_index)
                    if self.lower[j] == 0:
                        break  # refuted, yet no exact witness: do not loop on strict
            if self.out_of_time() or unknowns >= 2:
                break
        new_total = max(self.upper)
        if new_total < self.total_upper:
            self.total_upper = new_total
            self.total_method = "per-output bounds"

    def per_output(self) -> tuple[DeviationBound, ...]:
        return tuple(
            DeviationBound(j, self.lower[j], self.upper[j], self.witness[j], self.upper_method[j], j,
                           self.witness_exact[j])
            for j in range(self.f.out_dim)
        )


def _cex_point(cex: Counterexample) -> tuple:
    """The exact point of a counterexample (its rational input where it has one)."""
    exact = getattr(cex, "exact_input", None)
    return tuple(exact) if exact else tuple(cex.input)


def _tolerance(e: Any) -> Fraction:
    """An epsilon of the ladder, read and range-checked exactly as ``--tolerance`` is."""
    try:
        return Spec.make("epsilon", e).tolerance
    except InputError as exc:
        raise InputError(str(exc).replace("tolerance", "epsilon", 1)) from None


def audit(
    original: ModelLike | Network,
    pruned: ModelLike | Network,
    domain: str | Domain | None = None,
    data: Any = None,
    epsilons: tuple = DEFAULT_EPSILONS,
    timeout: float | Deadline = DEFAULT_TIMEOUT,
    gap: float = DEFAULT_GAP,
    samples: int = RANDOM_SAMPLES,
    seed: int = 0,
    bounds: str | None = None,
) -> AuditResult:
    """Audit ``pruned`` against ``original`` on ``domain`` (see the module docstring).

    ``data`` is a .npy path or an array of inputs (any shape whose size is a multiple of the
    input size). ``timeout`` (seconds, or a :class:`~equivcheck.core.deadline.Deadline` handed down)
    bounds the whole audit (each prover call gets at most ``CALL_SHARE`` of it); ``gap`` is the
    relative width ``(upper - lower) / upper`` at which refinement stops: the audit ends as soon
    as the bounds meet it (or can no longer move), not when the time is up.
    Promises: ``deviation.upper`` is certified (no input of the domain deviates more in exact
    arithmetic), ``deviation.lower`` is the exact deviation at ``deviation.witness``, and every
    verdict is sound. Raises :class:`~equivcheck.errors.InputError` for bad models, domains or data.
    """
    deadline = Deadline.of(timeout)
    if not 0 <= gap < 1:
        raise InputError(f"gap must be in [0, 1), got {gap}")
    au = _Auditor(original, pruned, domain, epsilons, deadline, gap, seed, bounds)
    data_x = _inputs_from(data, au.f.in_dim) if data is not None else None
    layers, units, note = unit_changes(au.f, au.g, au.domain, au.method, deadline)
    if note:
        au.notes.append(note)
    au.initial_bounds()
    if au.f.in_dim <= MAX_SPLIT_DIM and not au.overall().within(gap):
        au.split_refine(deadline.sub(0.5, seconds=au.timeout * SPLIT_SHARE))
    strict = au.check_strict()
    checks = [strict]
    for eps in sorted(set(au.epsilons)):
        checks.append(au.check_epsilon(eps))
    checks.append(au.check_argmax(strict))
    au.refine_total()
    au.refine_outputs()
    # the ladder verdicts that were UNKNOWN may be decided by the refined bounds now
    checks = [_settle(c, au) for c in checks]
    rand = random_domain_points(au.domain, samples, seed)
    source = f"{len(rand)} random domain points"
    if len(rand) == 0:  # no float point lies in the domain: the nearest floats of box centres
        rand = np.array([[float(v) for v in box.midpoint()] for box in au.domain.boxes])
        source = (f"{len(rand)} float64 point(s) nearest the centres of the boxes (the domain "
                  "holds no float point)")
    sample = sample_stats(au.f, au.g, rand, au.domain, source)
    if any(w is not None for w in au.witness_exact):
        au.notes.append("a witness is a rational point that is not a float vector (see "
                        "witness_exact): its deviation is exact, but onnxruntime cannot be fed "
                        "that point exactly")
    data_stats = sample_stats(au.f, au.g, data_x, au.domain, str(data)
                              if isinstance(data, (str, Path)) else "data") if data_x is not None else None
    overall = au.overall()
    if au.domain.is_default:
        au.notes.append("no domain given: audited the default domain [0, 1] on every input")
    return AuditResult(
        original=au.f.source,
        pruned=au.g.source,
        domain_text=au.domain.describe(),
        domain=au.domain.to_dict(),
        checks=tuple(checks),
        deviation=overall,
        per_output=au.per_output(),
        layers=layers,
        units=units,
        samples=sample,
        data=data_stats,
        gap=gap,
        converged=overall.within(gap),
        seconds=time.monotonic() - au.start,
        notes=tuple(au.notes) + tuple(au.f.notes) + tuple(au.g.notes),
    )


def _settle(c: CheckVerdict, au: _Auditor) -> CheckVerdict:
    """Decide UNKNOWN epsilon verdicts with the final bounds; quote the final bound."""
    if c.mode != "epsilon" or c.tolerance is None:
        return c
    if c.verdict is not Verdict.UNKNOWN and c.method != "certified bound":
        return c
    if c.tolerance >= au.total_upper:
        return CheckVerdict(c.name, c.mode, c.tolerance, Verdict.PROVED,
                            f"certified upper bound {float(au.total_upper):.6g} <= "
                            f"{float(c.tolerance):g} ({au.total_method})", "certified bound",
                            None, c.seconds)
    if c.tolerance < au.total_lower:
        return au.witness_refutation(c.name, c.mode, c.tolerance)
    return c
