"""The prover pipeline: load -> bounds -> falsify -> encode -> solve -> result.

:func:`prove` is the library entry point the CLI and the pytest plugin both call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from . import falsify
from .bounds import LayerBounds, Stability, exact_stability_bounds, sound_bounds
from .diffbounds import difference_bounds
from .domain import Box, Domain, parse_domain
from .encode import shared_prefix
from .errors import ShapeMismatchError
from .network import Network
from .onnx_import import ModelLike, load_model, load_network
from .result import BoxResult, Counterexample, LayerStability, ProofResult, Verdict
from .search import decide, epsilon_bound
from .spec import Spec
from .witness import OrtRunner, build_counterexample, exact_evaluation

DEFAULT_TIMEOUT = 60.0
EXACT_CHECKS = 4  # falsifier candidates confirmed in exact arithmetic per box


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
    timeout: float = DEFAULT_TIMEOUT,
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
    :mod:`equivcheck.stability` on the whole box, with a sixth of the time).
    Raises an :class:`~equivcheck.errors.InputError` for bad models or domains.
    """
    start = time.monotonic()
    spec = Spec.make(mode, tolerance, norm)
    models = load_pair(a, b)
    dom = parse_domain(domain, models.net_a.in_dim)
    deadline = start + float(timeout)
    runner = OrtRunner() if models.proto_a is not None and models.proto_b is not None else None
    box_results: list[BoxResult] = []
    cex: Counterexample | None = None
    for index, box in enumerate(dom.boxes):
        res, found = _prove_box(models, spec, box, index, deadline, runner, falsify_seconds, seed, bounds)
        box_results.append(res)
        if found is not None:
            cex = found
            break
    verdict = min(r.verdict for r in box_results)
    reasons = [r.reason for r in box_results if r.verdict == verdict]
    reason = reasons[0] if len(dom.boxes) == 1 else f"{reasons[0]} (box {box_results[-1].index})"
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
    deadline: float,
    runner: OrtRunner | None,
    falsify_seconds: float | None,
    seed: int,
    bound_method: str,
) -> tuple[BoxResult, Counterexample | None]:
    t0 = time.monotonic()
    a, b = models.net_a, models.net_b
    lo, hi = box.lower_float(), box.upper_float()
    if bound_method == "exact":
        # the whole box gets a real stability analysis (parts of it, when splitting, do not)
        budget = max(0.0, (deadline - time.monotonic()) / 6)
        ba, bb = (exact_stability_bounds(n, lo, hi, timeout=budget) for n in (a, b))
    else:
        ba, bb = sound_bounds(a, lo, hi, bound_method), sound_bounds(b, lo, hi, bound_method)
    k = shared_prefix(a, b)
    stab = tuple(stability_table(a, "a", ba, k) + stability_table(b, "b", bb, k))

    def done(verdict, reason, dec=None, cex=None):
        unstable, shared, parts = (dec.unstable, dec.shared_units, dec.parts) if dec is not None else (0, 0, 0)
        res = BoxResult(index, verdict, reason, stab, unstable, k, shared, parts, time.monotonic() - t0)
        return res, cex

    if k == len(a.layers) == len(b.layers):
        return done(Verdict.PROVED, "the networks are identical after canonicalisation (no search needed)")

    # 1. bounds on the difference of same-shaped networks may settle epsilon outright
    diff = difference_bounds(a, b, lo, hi, ba, bb, symbolic=True)
    eps = epsilon_bound(spec, diff)
    if eps is not None and eps <= spec.tolerance:
        return done(
            Verdict.PROVED,
            f"difference bounds: ||f(x) - g(x)|| <= {float(eps):.6g} on the whole box (no search needed)",
        )

    # 2. falsification first
    budget = falsify_seconds if falsify_seconds is not None else min(1.0, max(0.0, (deadline - time.monotonic()) / 4))
    candidates = falsify.search(a, b, spec, box, seconds=budget, seed=seed + index)
    for _, x in candidates[:EXACT_CHECKS]:
        ex = exact_evaluation(a, b, spec, [Fraction(float(v)) for v in x])
        if ex.violated:
            cex = build_counterexample(a, b, spec, x, index, "falsifier", runner, models.proto_a, models.proto_b, ex)
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
        x_near = [float(v) for v in x_q]
        note = (
            "the solver's point is rational (exact input: "
            + ", ".join(str(v) for v in x_q[:8]) + (", ..." if len(x_q) > 8 else "")
            + "); no float32 point near it shows the violation"
        )
        cex = build_counterexample(a, b, spec, x_near, index, "solver", runner, models.proto_a, models.proto_b, ex, note)
    return done(Verdict.REFUTED, dec.reason, dec, cex)


def _float_counterexample(models, spec, box, index, x_q, runner, seed) -> Counterexample | None:
    """A float32 counterexample at or near the solver's rational point, if one is found."""
    a, b = models.net_a, models.net_b
    f32 = box.float32_box()
    lo, hi = f32 if f32 is not None else (box.lower_float(), box.upper_float())
    x0 = np.clip(np.array([float(v) for v in x_q]).astype(np.float32).astype(np.float64), lo, hi)
    starts = [x0]
    rng = np.random.default_rng(seed)
    width = hi - lo
    for scale in (1e-6, 1e-4, 1e-2):
        starts.extend(np.clip((x0 + rng.normal(0, 1, (4, len(x0))) * width * scale).astype(np.float32).astype(np.float64), lo, hi))
    pts = np.array(starts)
    margins = falsify.batch_margin(spec, a.evaluate(pts), b.evaluate(pts))
    for i in np.argsort(-margins)[:EXACT_CHECKS]:
        x = pts[i]
        ex = exact_evaluation(a, b, spec, [Fraction(float(v)) for v in x])
        if ex.violated and box.contains(x):
            return build_counterexample(a, b, spec, x, index, "solver", runner, models.proto_a, models.proto_b, ex)
    return None
