"""Lossless compression of stable ReLU units (Serra, Kumar & Ramalingam, CPAIOR 2020).

:func:`compress` runs the exact stability analysis of :mod:`equivcheck.bounds.stability`, builds
a smaller network that computes the same function on the domain with the passes of
:mod:`equivcheck.compress.passes` (remove stably inactive units, collapse to a constant, fold
linearly dependent stably active units, fold all-active layers), exports it to ONNX, and proves
it equivalent to the original.

Folding recomputes weights as exact rationals, which the ONNX file stores rounded to its element
type. The result therefore carries a proof: :func:`equivcheck.solve.prover.prove_networks` of the
original against the compressed model *re-imported from the exported ONNX*, in strict mode when
only removals happened (the stored weights are the original ones), otherwise in epsilon mode with
a rigorous upper bound of the deviation caused by that rounding
(:mod:`equivcheck.compress.rounding`), which the proof then confirms: first by the engine's
differential bounds (:mod:`equivcheck.compress.fold_proof`), then by the prover. The bounds the
analysis proved are handed to both explicitly (:class:`~equivcheck.solve.prover.KnownBounds`).

For networks with few inputs the analysis' exact stage is the engine's batched input splitting
(:func:`equivcheck.engine.units.split_inputs`), injected here because ``bounds/`` (where the
analysis lives) may not import ``engine/``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from equivcheck.bounds.interval import LayerBounds
from equivcheck.bounds.stability import analyze_stability
from equivcheck.bounds.stability_report import StabilityReport
from equivcheck.bounds.symbolic import symbolic_bounds
from equivcheck.compress.fold_proof import prove_folds
from equivcheck.compress.passes import (
    WorkingLayer,
    collapse,
    fold_dependent,
    fold_layers,
    remove_inactive,
    to_network,
    working_layers,
)
from equivcheck.compress.quantized import compress_model, is_quantized_model
from equivcheck.compress.result import CompressionResult, LayerCompression
from equivcheck.compress.rounding import deviation_bound, round_up_decimal
from equivcheck.core import matrix
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Domain
from equivcheck.core.network import Network
from equivcheck.core.options import MULTI_PROOF_TIMEOUT, BoundMethod, ProverOptions
from equivcheck.core.progress import Progress, ProgressFn, report
from equivcheck.core.quantized import QuantizedNetwork
from equivcheck.core.result import ProofResult
from equivcheck.core.spec import Mode, Norm, Spec
from equivcheck.engine.units import split_inputs
from equivcheck.io.domains import parse_domain
from equivcheck.io.onnx_export import to_onnx
from equivcheck.io.onnx_import import ModelLike, load_model, load_network, model_label
from equivcheck.solve.prover import KnownBounds, prove_networks

# The proofs use the bounds the analysis proved ("exact"): removed units are constants there too
# and, thanks to the prover's unit sharing, a removal-only proof is immediate.
PROOF_OPTIONS = ProverOptions(bound_method=BoundMethod.EXACT)
ANALYSIS_SHARE = 0.6  # of the time left after loading: the stability analysis (what follows it,
# removals' strict proof and the folds' epsilon proof, took under 1 s on each ACAS Xu net and on
# MNIST 256x2, so the analysis may run longer and leave fewer units undecided; 0.4 before)
FOLD_PROOF_SHARE = 0.5  # of the time left then: the epsilon proof of folded weights ...
FOLD_PROOF_SECONDS = 30.0  # ... at most this long
FOLD_MAX_RELATIVE_EPSILON = 1e-4  # folds needing a larger epsilon (x output scale) are dropped


@dataclass(frozen=True, eq=False)
class _Candidate:
    """One compressed network: its working layers, its ONNX model and the network re-imported
    from it (``stored``), and what the passes did."""

    layers: list[WorkingLayer]
    onnx_model: object
    stored: Network
    exact: bool  # the stored weights are the exact ones: a strict proof
    epsilon: Fraction | None  # else the rigorous bound of the rounding (on the output)
    deviation: list[np.ndarray]  # per layer: the bound of the rounding on that layer
    removed: dict[int, int]
    folded_units: dict[int, int]
    folded_layers: set[int]
    collapsed: bool

    @property
    def folds(self) -> int:
        return sum(self.folded_units.values()) + len(self.folded_layers)

    def spec(self) -> Spec:
        """What the proof must show: equality, or equality within ``epsilon`` (linf)."""
        if self.epsilon is None or self.epsilon == 0:
            return Spec.make(Mode.STRICT)
        return Spec.make(Mode.EPSILON, self.epsilon, Norm.LINF)

    def known_bounds(self, bounds: list[LayerBounds]) -> KnownBounds:
        """The proved bounds of the original (``bounds``) and of the compressed network as
        stored (its exact bounds widened by the rounding), on the whole domain."""
        if self.collapsed:
            return KnownBounds(a=bounds)
        # (moved out by one ulp: the float sums round to nearest)
        stored = [LayerBounds(np.nextafter(lay.lower - d, -np.inf), np.nextafter(lay.upper + d, np.inf))
                  for lay, d in zip(self.layers, self.deviation)]
        return KnownBounds(a=bounds, b=stored)


def _build(net: Network, stability: StabilityReport, bounds: list[LayerBounds], dom: Domain,
           fold: bool, notes: list[str], name: str, deadline: Deadline | None = None) -> _Candidate:
    """Run the passes (the folds only with ``fold``), export to ONNX and re-import as ``name``."""
    layers = working_layers(net, stability, bounds)
    removed = remove_inactive(layers)
    collapsed_layers = collapse(layers, net.in_dim)
    folded_units: dict[int, int] = {}
    folded_layers: set[int] = set()
    if collapsed_layers is not None:
        layers = collapsed_layers
    elif fold:
        folded_units = fold_dependent(layers, notes, deadline)
        layers, folded_layers = fold_layers(layers, deadline, notes)
    # sparse (convolutional) layers are written as Gather/Mul/ReduceSum nodes that import back
    # to the same sparse layers (io.onnx_export)
    onnx_model, stored_exact = to_onnx(to_network(net, layers), graph_name="equivcheck_compressed")
    stored = load_network(onnx_model, name=name)
    exact = stored_exact and not any(lay.recomputed for lay in layers)
    epsilon, deviation = None, [np.zeros(len(lay.b)) for lay in layers]
    if not exact:
        per_box = [deviation_bound(layers, stored, b.lower_float(), b.upper_float()) for b in dom.boxes]
        deviation = [np.max(np.array([pb[k] for pb in per_box]), axis=0) for k in range(len(layers))]
        dev = float(np.max(deviation[-1])) if deviation[-1].size else 0.0
        epsilon = round_up_decimal(dev) if dev > 0 else Fraction(0)
    return _Candidate(layers, onnx_model, stored, exact, epsilon, deviation, removed, folded_units,
                      folded_layers, collapsed_layers is not None)


def compress(
    model: ModelLike | Network,
    domain: "str | Domain | None" = None,
    output: str | Path | None = None,
    verify: bool = True,
    timeout: float | Deadline = MULTI_PROOF_TIMEOUT,
    samples: np.ndarray | None = None,
    options: ProverOptions | None = None,
    progress: ProgressFn | None = None,
) -> CompressionResult:
    """Compress ``model`` losslessly on ``domain`` and (unless ``verify`` is False) prove it.

    A statically quantized model (a :class:`~equivcheck.core.quantized.QuantizedNetwork`, or an
    ONNX model with quantization operators) goes to
    :func:`equivcheck.compress.quantized.compress_model`: its dead units are removed with a
    structural proof, and the result is a
    :class:`~equivcheck.compress.quantized.QuantizedCompressionResult`.

    ``timeout`` (seconds, or a :class:`~equivcheck.core.deadline.Deadline` handed down) bounds the
    whole call: the stability analysis gets ``ANALYSIS_SHARE`` of the time left after loading,
    folding stops at the deadline, and the proof gets what remains (UNKNOWN when nothing does).
    ``options`` are the prover's choices for the proofs (default :data:`PROOF_OPTIONS`; their
    ``timeout`` is replaced by the budget each proof gets, their ``seed`` also seeds the
    analysis). When folding recomputed weights, the epsilon proof is the engine's
    (:func:`~equivcheck.compress.fold_proof.prove_folds`), then the prover's; when neither comes
    back PROVED in time, the folds are dropped and the removal-only network (which keeps the
    stored weights) is proved strictly instead; the notes say so. The bounds the analysis proved are handed to the
    prover as :class:`~equivcheck.solve.prover.KnownBounds`. Writes the ONNX file to ``output``
    when given. ``progress`` gets a :class:`~equivcheck.core.progress.Progress` per stage:
    ``"stability"`` (units decided / open, also during input splitting) and ``"proof"``.
    Raises an :class:`~equivcheck.errors.InputError` for bad models or domains.
    """
    start = time.monotonic()
    deadline = Deadline.of(timeout)
    proto = None if isinstance(model, (Network, QuantizedNetwork)) else load_model(model)
    label = None if proto is None else model_label(model)
    if isinstance(model, QuantizedNetwork) or is_quantized_model(proto):
        # statically quantized: only dead units go (equivcheck.compress.quantized)
        got = compress_model(model, proto, label, domain, output, verify, deadline, options, progress)
        if got is not None:  # (None: its quantization operators fold away; a float network)
            return got
    opts = options if options is not None else PROOF_OPTIONS
    net = model if proto is None else load_network(proto, name=label)
    dom = parse_domain(domain, net.in_dim)
    report(progress, Progress("stability", 0, net.num_relus, "units", seconds_left=deadline.remaining()))
    stability = analyze_stability(net, dom, timeout=deadline.sub(ANALYSIS_SHARE), samples=samples,
                                  seed=opts.seed, splitter=lambda st: split_inputs(st, progress),
                                  progress=progress)
    undecided = len(stability.undecided)
    report(progress, Progress("stability", net.num_relus - undecided, undecided, "units",
                              seconds_left=deadline.remaining(), detail="done"))
    bounds = _report_bounds(net, dom, stability)
    name = "<compressed>" if output is None else str(output)
    notes: list[str] = []
    cand = _build(net, stability, bounds, dom, fold=True, notes=notes, name=name, deadline=deadline)
    if cand.collapsed:
        notes.append("a hidden layer is stably inactive on the whole domain: the network is constant")
    proof = None
    if verify:

        def run(c: _Candidate, budget: Deadline) -> ProofResult:
            return prove_networks(
                net, c.stored, c.spec(), dom, dataclasses.replace(opts, timeout=budget.budget),
                known_bounds=c.known_bounds(bounds), deadline=budget,
                onnx_models=None if proto is None else (proto, c.onnx_model),
            )

        report(progress, Progress("proof", 0, 1, "proofs", seconds_left=deadline.remaining(),
                                  detail="strict" if cand.exact else "epsilon"))
        if cand.exact:
            proof = run(cand, deadline)
        else:  # recomputed (folded) weights, or ones the file cannot store exactly (an export
            # of composed convolutions and residual sums, say): the epsilon proof
            scale = max(1.0, float(np.max(np.abs(np.concatenate([bounds[-1].lower, bounds[-1].upper])))))
            if cand.epsilon is not None and cand.epsilon > FOLD_MAX_RELATIVE_EPSILON * scale:
                why = (f"the rigorous bound on the rounding of the stored weights is {float(cand.epsilon):.3g}, "
                       f"above {FOLD_MAX_RELATIVE_EPSILON:g} x the output scale {scale:.3g}")
                proof = None
            else:
                known = cand.known_bounds(bounds)
                proof, why = prove_folds(net, cand.stored, cand.layers, cand.spec(), dom, known.a,
                                         known.b, deadline.sub(FOLD_PROOF_SHARE, seconds=FOLD_PROOF_SECONDS),
                                         opts, progress)
                if proof is None:
                    proof = run(cand, deadline.sub(FOLD_PROOF_SHARE, seconds=FOLD_PROOF_SECONDS))
                    why = (f"the epsilon proof ({cand.epsilon}) came back {proof.verdict.label} "
                           f"({proof.reason}; {why})")
            if (proof is None or not proof.proved) and not cand.folds:
                if proof is None:  # (nothing else to fall back to: no fold to drop)
                    proof = run(cand, deadline)
                notes.append(f"the stored weights round the original ones; {why}")
            elif proof is None or not proof.proved:
                fallback = _build(net, stability, bounds, dom, fold=False, notes=[], name=name)
                notes.append(
                    f"folding {cand.folds} stably active unit(s)/layer(s) changed weights; {why}; so the "
                    "folds were dropped and the removal-only network (stored weights unchanged) "
                    "was proved instead"
                )
                cand, proof = fallback, run(fallback, deadline)
    if output is not None:  # the serialized bytes (``import onnx`` alone costs over a second)
        Path(output).write_bytes(cand.onnx_model.SerializeToString())
    table = _table(net, cand)
    report(progress, Progress("proof", 1, 0, "proofs", seconds_left=deadline.remaining(),
                              detail=proof.verdict.label if proof is not None else "not verified"))
    if stability.undecided:
        notes.append(f"{len(stability.undecided)} unit(s) left undecided by the time limit were kept")
    return CompressionResult(
        original=net, compressed=cand.stored, onnx_model=cand.onnx_model, table=table,
        stability=stability, proof=proof, exact=cand.exact,
        epsilon=None if cand.exact else _stated_epsilon(cand, proof), collapsed=cand.collapsed,
        seconds=time.monotonic() - start, notes=tuple(notes),
    )


def _stated_epsilon(cand: _Candidate, proof: ProofResult | None) -> Fraction | None:
    """The epsilon the result states: the proof's (the engine may prove a tighter one than the
    rounding bound), else the rounding bound (not verified)."""
    if proof is not None and proof.proved and proof.spec.mode is Mode.EPSILON:
        return proof.spec.tolerance
    return cand.epsilon


def _report_bounds(net: Network, dom: Domain, stability: StabilityReport) -> list[LayerBounds]:
    """Sound bounds over the whole domain (the union of the boxes' symbolic bounds; for one box,
    the bounds the analysis ended with), clipped where the analysis proved a unit stable."""
    if stability.bounds is not None and len(dom.boxes) == 1:
        return stability.clip(list(stability.bounds))
    out = None
    for box in dom.boxes:
        b = symbolic_bounds(net, box.lower_float(), box.upper_float())
        out = b if out is None else [
            LayerBounds(np.minimum(x.lower, y.lower), np.maximum(x.upper, y.upper)) for x, y in zip(out, b)
        ]
    # units proved stable by later stages: the proof, not these bounds, is what makes them so
    return stability.clip(out)


def _table(net: Network, cand: _Candidate) -> tuple[LayerCompression, ...]:
    """One row per layer of the original network."""
    rows = []
    by_origin = {lay.origin: (idx, lay) for idx, lay in enumerate(cand.layers)}
    for k, layer in enumerate(net.layers):
        before = matrix.stored_entries(layer.weight) + layer.bias.size
        if k in by_origin:
            idx, lay = by_origin[k]
            after_units = len(lay.b)
            stored = cand.stored.layers[idx]
            params_after = matrix.stored_entries(stored.weight) + stored.bias.size
        else:
            after_units, params_after = 0, 0
        rows.append(LayerCompression(
            layer=k, relu=layer.relu, units_before=layer.out_dim,
            removed_inactive=cand.removed.get(k, 0), folded_active=cand.folded_units.get(k, 0),
            units_after=after_units, params_before=before, params_after=params_after,
            folded_into_next=k in cand.folded_layers,
        ))
    return tuple(rows)
