"""The prover pipeline: load -> bounds -> falsify -> encode -> solve -> result.

:func:`prove` is the library entry point the CLI and the pytest plugin both call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from equivcheck.bounds.difference import difference_bounds
from equivcheck.bounds.propagation import LayerBounds, Stability, bounds_pair
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Box, Domain
from equivcheck.core.network import Network
from equivcheck.core.result import BoxResult, Counterexample, LayerStability, ProofResult, Verdict
from equivcheck.core.spec import Spec
from equivcheck.errors import ShapeMismatchError
from equivcheck.io.domains import parse_domain
from equivcheck.io.onnx_import import ModelLike, load_model, load_network
from equivcheck.solve import falsify
from equivcheck.solve.encode import shared_prefix
from equivcheck.solve.search import decide, epsilon_bound
from equivcheck.solve.witness import OrtRunner, build_counterexample, exact_evaluation

DEFAULT_TIMEOUT = 60.0
EXACT_CHECKS = 4  # falsifier candidates confirmed in exact arithmetic per box
NOT_EXAMINED = "timeout: the time limit was reached before this box was examined"


@dataclass
class _Models:
    """Both models: the ONNX protos (for onnxruntime) and the imported networks."""

    proto_a: object
    proto_b: object
    net_a: Network
    net_b: Network


def load_pair(a: ModelLike | Network, b: ModelLike | Network) -> _Models:
    """Load two models and check that their inputs and outputs have the same sizes."""
    pa = a if isinstance(a, Network) else load_model(a)
    pb = b if isinstance(b, Network) else load_model(b)
    na = a if isinstance(a, Network) else load_network(pa, name=_label(a))
    nb = b if isinstance(b, Network) else load_network(pb, name=_label(b))
    if na.in_dim != nb.in_dim:
        raise ShapeMismatchError(
            f"{na.source} takes {na.in_dim} inputs but {nb.source} takes {nb.in_dim}"
        )
    if na.out_dim != nb.out_dim:
        raise ShapeMismatchError(
            f"{na.source} has {na.out_dim} outputs but {nb.source} has {nb.out_dim}"
        )
    return _Models(None if isinstance(a, Network) else pa, None if isinstance(b, Network) else pb, na, nb)


def _label(m) -> str:
    return str(m) if not hasattr(m, "SerializeToString") else (m.graph.name or "<model>")


def stability_table(net: Network, tag: str, bounds: list[LayerBounds], shared: int) -> list[LayerStability]:
    """Per hidden layer: how many ReLUs the bounds found active, inactive, unstable."""
    rows = []
    for li, (layer, lb) in enumerate(zip(net.layers, bounds)):
        if not layer.relu:
            continue
        st = lb.stability()
        rows.append(
            LayerStability(
                network=tag,
                layer=li,
                width=layer.out_dim,
                active=int(np.sum(st == Stability.ACTIVE)),
                inactive=int(np.sum(st == Stability.INACTIVE)),
                unstable=int(np.sum(st == Stability.UNSTABLE)),
                shared=li < shared,
            )
        )
    return rows


def prove(
    a: ModelLike | Network,
    b: ModelLike | Network,
    domain: str | Domain | None = None,
    mode: str = "strict",
    tolerance=None,
    norm: str = "linf",
    timeout: float | Deadline = DEFAULT_TIMEOUT,
    falsify_seconds: float | None = None,
    seed: int = 0,
    bounds: str = "interval",
) -> ProofResult:
    """Decide whether models ``a`` and ``b`` agree on every input of ``domain``.

    ``a``/``b`` are paths, ``onnx.ModelProto`` s or :class:`Network` s. Returns a
    :class:`ProofResult` whose verdict is

    * PROVED: the negated spec is unsatisfiable over the reals on the stored weights (exactly),
      on every box of the domain;
    * REFUTED: a point of the domain violates the spec in exact arithmetic; the counterexample
      says whether it also shows in float64 and in onnxruntime on the original files;
    * UNKNOWN: the time ran out or the solver gave up; ``reason`` says which.

    ``bounds`` chooses the (always sound) bound method that classifies ReLUs before encoding:
    "interval", "symbolic", "lp", or "exact" (the exact stability analysis of
    :mod:`equivcheck.bounds.stability` on the whole box, with a sixth of the time).
    ``timeout`` is seconds for the whole call, loading included, or a :class:`Deadline` handed
    down by a caller; once it has passed, the boxes not examined yet are UNKNOWN at once.
    Raises an :class:`~equivcheck.errors.InputError` for bad models or domains, and for a
    timeout that is not a positive finite number of seconds (at most ``MAX_TIMEOUT``).
    """
    start = time.monotonic()
    deadline = Deadline.of(timeout)
    spec = Spec.make(mode, tolerance, norm)
    models = load_pair(a, b)
    dom = parse_domain(domain, models.net_a.in_dim)
    runner = OrtRunner() if models.proto_a is not None and models.proto_b is not None else None
    box_results: list[BoxResult] = []
    cex: Counterexample | None = None
    for index, box in enumerate(dom.boxes):
        if deadline.expired():  # no per-box work once the time is up
            box_results.extend(BoxResult(i, Verdict.UNKNOWN, NOT_EXAMINED) for i in range(index, len(dom.boxes)))
            break
        res, found = _prove_box(models, spec, box, index, deadline, runner, falsify_seconds, seed, bounds)
        box_results.append(res)
        if found is not None:
            cex = found
            break
    verdict = min(r.verdict for r in box_results)
    first = next(r for r in box_results if r.verdict == verdict)
    reason = first.reason if len(dom.boxes) == 1 else f"{first.reason} (box {first.index})"
    skipped = sum(1 for r in box_results if r.reason == NOT_EXAMINED)
    if skipped and first.reason != NOT_EXAMINED:
        reason += f"; {skipped} of {len(dom.boxes)} boxes not examined (time limit)"
    if verdict is Verdict.PROVED and len(dom.boxes) > 1:
        reason = f"proved on all {len(dom.boxes)} boxes"
    notes = tuple(models.net_a.notes) + tuple(models.net_b.notes)
    if dom.is_default:
        notes += ("no --domain given: checked the default domain [0, 1] on every input",)
    return ProofResult(
        verdict=verdict,
        reason=reason,
        model_a=models.net_a.source,
        model_b=models.net_b.source,
        spec=spec.to_dict(),
        domain=dom.to_dict(),
        domain_text=dom.describe(),
        counterexample=cex,
        boxes=tuple(box_results),
        seconds=time.monotonic() - start,
        notes=notes,
    )


def _prove_box(
    models: _Models,
    spec: Spec,
    box: Box,
    index: int,
    deadline: Deadline,
    runner: OrtRunner | None,
    falsify_seconds: float | None,
    seed: int,
    bound_method: str,
) -> tuple[BoxResult, Counterexample | None]:
    t0 = time.monotonic()
    a, b = models.net_a, models.net_b
    lo, hi = box.lower_float(), box.upper_float()
    # "exact": the whole box gets a real stability analysis (parts of it, when splitting, do not)
    ba, bb = bounds_pair(a, b, lo, hi, bound_method, deadline)
    k = shared_prefix(a, b)
    stab = tuple(stability_table(a, "a", ba, k) + stability_table(b, "b", bb, k))

    def done(verdict, reason, dec=None, cex=None):
        unstable, shared, parts = (dec.unstable, dec.shared_units, dec.parts) if dec is not None else (0, 0, 0)
        res = BoxResult(index, verdict, reason, stab, unstable, k, shared, parts, time.monotonic() - t0)
        return res, cex

    if k == len(a.layers) == len(b.layers):
        return done(Verdict.PROVED, "the networks are identical after canonicalisation (no search needed)")

    # 1. bounds on the difference of same-shaped networks may settle epsilon outright
    diff = difference_bounds(a, b, lo, hi, ba, bb, symbolic=True, deadline=deadline)
    eps = epsilon_bound(spec, diff)
    if eps is not None and eps <= spec.tolerance:
        return done(
            Verdict.PROVED,
            f"difference bounds: ||f(x) - g(x)|| <= {float(eps):.6g} on the whole box (no search needed)",
        )
    if deadline.expired():
        return done(Verdict.UNKNOWN, "timeout: the time ran out while computing bounds")

    # 2. falsification first
    budget = deadline.sub(seconds=falsify_seconds) if falsify_seconds is not None else deadline.sub(1 / 4, seconds=1.0)
    candidates = falsify.search(a, b, spec, box, deadline=budget, seed=seed + index)
    for _, x in candidates[:EXACT_CHECKS]:
        if deadline.expired():
            return done(Verdict.UNKNOWN, "timeout: the time ran out while confirming falsifier candidates")
        if not box.contains(x):
            continue
        ex = exact_evaluation(a, b, spec, [Fraction(float(v)) for v in x])
        if ex.violated:
            cex = build_counterexample(a, b, spec, x, index, "falsifier", runner, models.proto_a, models.proto_b, ex, box=box)
            return done(Verdict.REFUTED, "counterexample found by sampling and local search", cex=cex)

    # 3. the exact query: the solver on the box, or on parts of it
    dec = decide(a, b, spec, box, ba, bb, diff, deadline, bound_method)
    if dec.status == "proved":
        return done(Verdict.PROVED, dec.reason, dec)
    if dec.status == "unknown":
        return done(Verdict.UNKNOWN, dec.reason, dec)
    x_q = list(dec.point)
    ex = exact_evaluation(a, b, spec, x_q)
    cex = _float_counterexample(models, spec, box, index, x_q, runner, seed)
    if cex is None:
        # no float point near the solver's point shows the violation: report the exact point
        note = "the solver's point is rational; no float32 point near it shows the violation"
        cex = build_counterexample(a, b, spec, x_q, index, "solver", runner, models.proto_a, models.proto_b, ex, note, box=box)
    return done(Verdict.REFUTED, dec.reason, dec, cex)


def _float_counterexample(models, spec, box, index, x_q, runner, seed) -> Counterexample | None:
    """A float counterexample inside the box at or near the solver's rational point, if one is
    found (float32 points when the box holds any, else float64 points)."""
    a, b = models.net_a, models.net_b
    got = box.sample_box()
    if got is None:
        return None
    (lo, hi), precision = got
    dtype = np.float32 if precision == "float32" else np.float64

    def snap(p):
        return np.clip(np.asarray(p).astype(dtype).astype(np.float64), lo, hi)

    x0 = snap(np.array([float(v) for v in x_q]))
    starts = [x0]
    rng = np.random.default_rng(seed)
    width = hi - lo
    for scale in (1e-6, 1e-4, 1e-2):
        starts.extend(snap(x0 + rng.normal(0, 1, (4, len(x0))) * width * scale))
    pts = np.array(starts)
    margins = falsify.batch_margin(spec, a.evaluate(pts), b.evaluate(pts))
    for i in np.argsort(-margins)[:EXACT_CHECKS]:
        x = pts[i]
        if not box.contains(x):
            continue
        ex = exact_evaluation(a, b, spec, [Fraction(float(v)) for v in x])
        if ex.violated:
            return build_counterexample(a, b, spec, x, index, "solver", runner, models.proto_a, models.proto_b, ex, box=box)
    return None
