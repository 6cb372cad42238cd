"""Lossless compression of a statically quantized network: remove the units that are dead on
the domain (:func:`compress_quantized`).

A hidden unit ``j`` of layer ``i`` of a :class:`~equivcheck.core.quantized.QuantizedNetwork`
outputs ``f(z_j) = Q(relu(z_j))`` (without a ReLU ``Q(z_j)``, without a quantizer ``relu(z_j)``)
of its pre-activation ``z_j``. ``f`` is monotone (non-decreasing) and ``f(0) = 0`` (the zero
point lies in ``[qmin, qmax]``), so if ``l <= z_j <= u`` over the whole domain (rigorous bounds
through every earlier quantizer's rounding: :func:`~equivcheck.bounds.quant_interval.quantized_interval_bounds`),
then ``f(l) <= f(z_j) <= f(u)``, and ``f(l) = f(u) = 0`` (computed exactly on the float bounds)
makes the unit *dead*: its value is 0 at every point of the domain. For a quantizer after a
ReLU that is: ``u <= s/2`` (``round_half_even(v / s) = 0`` for ``v`` in ``[0, s/2]``: the tie
``1/2`` rounds to the even 0, and ``clip(0 + zp) = zp``, so ``Q(v) = s (zp - zp) = 0``), or any
``u`` when ``zp = qmax``; onnxruntime's QDQ models write the ReLU as the clip of a zero point
``qmin``, which the same test covers (``Q(l)`` and ``Q(u)`` are both 0).

A dead unit is read by the next layer as 0: dropping its row of ``W_i``, its entry of ``b_i``
and of the quantizer after layer ``i``, and its column of ``W_{i+1}``, leaves every other value
of the network unchanged at every point of the domain. That is the whole proof (PROVED,
strictly): the kept weights, biases and quantizers are the original's, read back exactly from
the written file. Stably active units are *not* folded: folding removes a rounding step and
changes the function. As self-checks (never a verdict), the original and the compressed
network are evaluated exactly at points of the domain (they must be equal, else a
:class:`~equivcheck.errors.SoundnessError`), and onnxruntime runs the original and the written
file at those points (the largest difference, float32 rounding as the original has it, is
reported).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from equivcheck.bounds.quant_dead import dead_units, domain_bounds, unit_value_range  # noqa: F401
from equivcheck.compress.result import LayerCompression
from equivcheck.core import matrix
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Domain
from equivcheck.core.network import Affine, Layer
from equivcheck.core.options import MULTI_PROOF_TIMEOUT
from equivcheck.core.quantized import QuantizedNetwork, Quantizer
from equivcheck.core.result import ProofResult, Verdict
from equivcheck.core.spec import Mode, Spec
from equivcheck.errors import SoundnessError, UnsupportedModelError
from equivcheck.io.domains import parse_domain
from equivcheck.io.onnx_import import load_network
from equivcheck.io.onnx_qexport import same_quantized, to_qonnx

CHECK_POINTS = 8  # domain points of the exact self-check: at most this many, ...
MIN_CHECK_POINTS = 2  # ... at least this many, ...
CHECK_SECONDS = 5.0  # ... and no new one after this long
ORT_POINTS = 200  # domain points at which onnxruntime runs both files
ORT_EXACT_POINTS = 3  # of the points where they differ, this many are judged exactly
NOTE = ("a quantized model only loses dead units: stably active units are kept (folding them "
        "would drop a rounding step and change the function)")


@dataclass(frozen=True)
class QuantizedCompressionResult:
    """What :func:`compress_quantized` returns (the counterpart of
    :class:`~equivcheck.compress.result.CompressionResult`).

    ``compressed`` is the network read back from ``onnx_model`` (exactly the built one: checked);
    ``removed`` lists per layer the original indices of the units proved dead (removed),
    ``active`` counts per layer the stably active ones (kept);
    ``proof`` is the structural proof (None when verification was switched off);
    ``ort_max_difference`` the largest difference between onnxruntime's outputs of the original
    file and of the written one over ``ort_points`` domain points (None without an original file
    or onnxruntime), ``ort_differing`` at how many they differ at all, ``ort_closer`` which file's
    outputs were the exact ones at (up to 3 of) those points, e.g. ``"original 1, written 2"``.
    """

    original: QuantizedNetwork
    compressed: QuantizedNetwork
    onnx_model: object
    table: tuple[LayerCompression, ...]
    removed: tuple[tuple[int, ...], ...]
    active: tuple[int, ...]
    proof: ProofResult | None
    bounds: str
    seconds: float
    ort_max_difference: float | None = None
    ort_points: int = 0
    ort_differing: int = 0
    ort_closer: str = ""
    exact_points: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def hidden_before(self) -> int:
        return sum(r.units_before for r in self.table[:-1])

    @property
    def hidden_after(self) -> int:
        return sum(r.units_after for r in self.table[:-1])

    @property
    def unit_compression(self) -> float:
        return 100.0 * (1 - self.hidden_after / self.hidden_before) if self.hidden_before else 0.0

    @property
    def params_before(self) -> int:
        return sum(r.params_before for r in self.table)

    @property
    def params_after(self) -> int:
        return sum(r.params_after for r in self.table)

    @property
    def param_compression(self) -> float:
        return 100.0 * (1 - self.params_after / self.params_before) if self.params_before else 0.0

    @property
    def summary(self) -> str:
        return (f"{self.original.description} -> {self.compressed.description}: "
                f"{self.hidden_before - self.hidden_after} of {self.hidden_before} hidden units removed "
                f"({self.unit_compression:.1f}%), parameters {self.params_before:,} -> "
                f"{self.params_after:,} ({self.param_compression:.1f}%)")

    def _repr_html_(self) -> str:
        from html import escape

        rows = "".join(
            "<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in (
                r.layer, r.units_before, r.removed_inactive, a, r.units_after, r.params_before,
                r.params_after)) + "</tr>" for r, a in zip(self.table, self.active))
        head = "".join(f"<th>{h}</th>" for h in ("layer", "units", "dead removed", "active (kept)",
                                                 "units kept", "params", "params kept"))
        text = "".join(f"<p>{escape(t)}</p>" for t in (self.summary, *self.notes,
                       "not verified" if self.proof is None else f"proof: {self.proof.verdict.label}: {self.proof.reason}"))
        return f"<div><table><tr>{head}</tr>{rows}</table>{text}</div>"

    def to_dict(self) -> dict:
        return {
            "model": self.original.source,
            "quantized": True,
            "original": self.original.description,
            "compressed": self.compressed.description,
            "hidden_units_before": self.hidden_before,
            "hidden_units_after": self.hidden_after,
            "unit_compression_percent": round(self.unit_compression, 3),
            "parameters_before": self.params_before,
            "parameters_after": self.params_after,
            "parameter_compression_percent": round(self.param_compression, 3),
            "weights_exact": True,
            "epsilon": None,
            "table": [dict(r.to_dict(), active_kept=a) for r, a in zip(self.table, self.active)],
            "removed_units": [list(r) for r in self.removed],
            "bounds": self.bounds,
            "proof": None if self.proof is None else self.proof.to_dict(),
            "exact_check_points": self.exact_points,
            "onnxruntime_points": self.ort_points,
            "onnxruntime_max_difference": self.ort_max_difference,
            "onnxruntime_points_differing": self.ort_differing,
            "onnxruntime_exact_at_differing_points": self.ort_closer,
            "seconds": round(self.seconds, 4),
            "notes": list(self.notes),
        }


def _keep_rows(layer: Layer, keep: np.ndarray, keep_in: np.ndarray | None) -> Layer:
    """``layer`` with only the rows ``keep`` (indices) and the columns ``keep_in`` (None: all):
    the same exact weights, nothing recomputed."""
    aff = layer.affine
    w = aff.weight
    if aff.is_sparse:
        exact = aff.exact_weight
        if exact is not None:  # keep the exact values aligned with the stored entries
            tagged = matrix.csr((np.arange(1, w.nnz + 1, dtype=np.float64), w.indices.copy(), w.indptr.copy()), shape=w.shape)
            tagged = tagged[keep] if keep_in is None else tagged[keep][:, keep_in]
            tagged = matrix.as_csr(tagged)
            order = tagged.data.astype(np.int64) - 1
        sub = w[keep] if keep_in is None else w[keep][:, keep_in]
        sub = matrix.as_csr(sub)
        new_exact = None if exact is None else exact[order]
        if exact is not None and not np.array_equal(sub.indices, tagged.indices):
            raise SoundnessError("sparse row selection lost the alignment of exact weights")
    else:
        sub = w[keep] if keep_in is None else w[keep][:, keep_in]
        new_exact = None
        if aff.exact_weight is not None:
            new_exact = aff.exact_weight[keep] if keep_in is None else aff.exact_weight[keep][:, keep_in]
    exact_bias = None if aff.exact_bias is None else aff.exact_bias[keep]
    return Layer(Affine(sub, aff.bias[keep], new_exact, exact_bias), layer.relu, layer.name)


def remove_dead(net: QuantizedNetwork, dead: list[np.ndarray]) -> QuantizedNetwork:
    """``net`` without the dead units (rows, bias entries, quantizer entries, next columns);
    every layer must keep a unit (:func:`dead_units` keeps one)."""
    layers, quant = [], []
    keep_in = None
    for k, (layer, q) in enumerate(zip(net.network.layers, net.quant)):
        keep = np.flatnonzero(~dead[k])
        layers.append(_keep_rows(layer, keep, keep_in))
        quant.append(None if q is None else Quantizer(q.scale[keep], q.zero_point[keep], q.qmin, q.qmax, q.name))
        keep_in = keep
    return QuantizedNetwork(net.network.with_layers(layers), tuple(quant), net.input_quant, net.quant_notes)


def _points(dom: Domain, count: int, seed: int) -> list[np.ndarray]:
    """Random float32 points inside the domain's boxes (in turn), as float64 arrays."""
    rng = np.random.default_rng(seed)
    out, boxes = [], [box.float32_box() for box in dom.boxes]
    for i in range(count):
        fb = boxes[i % len(boxes)]
        if fb is not None:
            lo, hi = fb
            x = (lo + (hi - lo) * rng.uniform(0, 1, lo.shape)).astype(np.float32)
            out.append(np.clip(x, lo, hi).astype(np.float64))
    return out


def _ort_difference(original, written, a: QuantizedNetwork, xs) -> tuple[float, int, str] | None:
    """onnxruntime on the original file and on the written one at the points: the largest
    ``|difference|``, at how many points they differ, and (for up to ``ORT_EXACT_POINTS`` of
    those) which file gave the exact outputs rounded to float32 (the two graphs sum in other
    orders, so a float32 sum can land on the other side of a rounding boundary, in either).
    None when onnxruntime is missing or refuses a file."""
    try:
        from equivcheck.solve.witness import OrtRunner

        runner = OrtRunner()
        ya = [runner.run(original, a, x) for x in xs]
        yb = [runner.run(written, a, x) for x in xs]
    except Exception:  # noqa: BLE001 -- a self-check, reported as missing
        return None
    diffs = [float(np.max(np.abs(p - q))) if len(p) else 0.0 for p, q in zip(ya, yb)]
    differing = [i for i, d in enumerate(diffs) if d > 0]
    right = {"original": 0, "written": 0, "neither": 0}
    for i in differing[:ORT_EXACT_POINTS]:
        exact = np.array([float(np.float32(float(v))) for v in a.evaluate_exact(xs[i])])
        ea, eb = np.max(np.abs(ya[i] - exact)), np.max(np.abs(yb[i] - exact))
        right["original" if ea < eb else "written" if eb < ea else "neither"] += 1
    how = ", ".join(f"{k} {v}" for k, v in right.items() if v)
    return max(diffs, default=0.0), len(differing), how


def compress_quantized(
    net: QuantizedNetwork,
    dom: Domain | str | None = None,
    original=None,
    output: str | Path | None = None,
    verify: bool = True,
    timeout: float | Deadline = MULTI_PROOF_TIMEOUT,
    seed: int = 0,
) -> QuantizedCompressionResult:
    """Remove the units of ``net`` that are dead on ``dom`` and write the result (see the module
    doc). ``original`` is the source model (path or ModelProto) for the onnxruntime comparison;
    ``output`` where the compressed ONNX is written. With ``verify``, the result carries the
    structural proof (PROVED strictly) after the exact self-check. Raises an
    :class:`~equivcheck.errors.InputError` for a network this cannot export (dynamic
    quantization, a sparse layer too large to write densely, ...), a
    :class:`~equivcheck.errors.SoundnessError` if a self-check fails (a bug)."""
    start = time.monotonic()
    deadline = Deadline.of(timeout)
    if net.dynamic:
        raise UnsupportedModelError(
            f"{net.source}: a dynamically quantized model (DynamicQuantizeLinear: its scales are computed "
            "at run time): only `prove`, `audit` and the pytest plugin check such models; `compress` "
            "takes statically quantized ones")
    dom = dom if isinstance(dom, Domain) else parse_domain(dom, net.in_dim)
    bounds, method = domain_bounds(net, dom, deadline)
    dead, active = dead_units(net, bounds, dom)
    small = remove_dead(net, dead)
    model = to_qonnx(small, graph_name="equivcheck_compressed")
    stored = load_network(model, name="<compressed>" if output is None else str(output), quantized_ok=True)
    if not isinstance(stored, QuantizedNetwork) or (why := same_quantized(small, stored)) is not None:
        raise SoundnessError(f"{net.source}: the written quantized model does not read back exactly: "
                             f"{'not quantized' if not isinstance(stored, QuantizedNetwork) else why}")
    notes = [NOTE]
    n_active = sum(active)
    if n_active:
        notes.append(f"{n_active} stably active unit(s) kept")
    proof, ort, xs, checked = None, None, [], 0
    if verify:
        xs = _points(dom, max(CHECK_POINTS, ORT_POINTS if original is not None else 0), seed)
        checked, began = 0, time.monotonic()
        for x in xs[:CHECK_POINTS]:
            if checked >= MIN_CHECK_POINTS and (time.monotonic() - began > CHECK_SECONDS or deadline.expired()):
                break  # (exact evaluation of a wide CNN takes seconds a point)
            if net.evaluate_exact(x) != stored.evaluate_exact(x):
                raise SoundnessError(f"{net.source}: the compressed network differs from the original at "
                                     "a domain point in exact arithmetic (a bug: please report it)")
            checked += 1
        if original is not None:
            ort = _ort_difference(original, model, net, xs)
        removed = int(sum(m.sum() for m in dead))
        reason = (f"the {removed} removed unit(s) are dead on the domain (rigorous {method} bounds through "
                  "every quantizer: each one's value after its ReLU and quantizer is 0 everywhere) and "
                  "every other weight, bias and quantizer is the original's, read back exactly from the "
                  f"written file; exact outputs equal at {checked} domain point(s)")
        proof = ProofResult(Verdict.PROVED, reason, str(net.source), str(output or "<compressed>"),
                            Spec.make(Mode.STRICT), dom, None, (), time.monotonic() - start)
    if output is not None:
        Path(output).write_bytes(model.SerializeToString())
    return QuantizedCompressionResult(
        original=net, compressed=stored, onnx_model=model, table=_table(net, stored, dead),
        removed=tuple(tuple(int(j) for j in np.flatnonzero(m)) for m in dead), active=tuple(active),
        proof=proof, bounds=method, seconds=time.monotonic() - start,
        ort_max_difference=None if ort is None else ort[0], ort_points=0 if ort is None else len(xs),
        ort_differing=0 if ort is None else ort[1], ort_closer="" if ort is None else ort[2],
        exact_points=checked, notes=tuple(notes))


def _table(net: QuantizedNetwork, stored: QuantizedNetwork, dead: list[np.ndarray]) -> tuple[LayerCompression, ...]:
    rows = []
    for k, (a, b) in enumerate(zip(net.network.layers, stored.network.layers)):
        rows.append(LayerCompression(
            layer=k, relu=a.relu, units_before=a.out_dim, removed_inactive=a.out_dim - b.out_dim,
            folded_active=0, units_after=b.out_dim,
            params_before=matrix.stored_entries(a.weight) + a.bias.size,
            params_after=int(np.count_nonzero(matrix.values(b.weight)) if a.affine.is_sparse
                             else matrix.stored_entries(b.weight)) + b.bias.size))
    return tuple(rows)


# operators whose presence sends a model to the quantized path (the importer reads them with
# ``quantized_ok``; a model of plain float operators never goes there)
QUANT_OPS = frozenset({"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
                       "QLinearMatMul", "QLinearConv", "QGemm", "QLinearAdd"})


def is_quantized_model(proto) -> bool:
    """True when the ONNX graph holds a quantization operator of :data:`QUANT_OPS` (or any
    ``QLinear*``): what :func:`compress_model` sends to :func:`compress_quantized` (None: no
    ONNX model, False)."""
    return proto is not None and any(n.op_type in QUANT_OPS or n.op_type.startswith("QLinear") for n in proto.graph.node)


def compress_model(model, proto, label: str | None, domain=None, output: str | Path | None = None,
                   verify: bool = True, timeout: float | Deadline = MULTI_PROOF_TIMEOUT,
                   options=None, progress=None) -> QuantizedCompressionResult | None:
    """:func:`equivcheck.compress.compress` of a statically quantized model (``model`` a
    :class:`QuantizedNetwork`, or the model whose ONNX ``proto`` has quantization operators, read
    under ``label``): :func:`compress_quantized`. None when its quantization operators fold away
    (a float network: the float pipeline takes it). A dynamically quantized model is refused
    with one line (:class:`~equivcheck.errors.UnsupportedModelError`)."""
    from equivcheck.core.progress import Progress, report

    report(progress, Progress("stability", 0, 1, "networks", detail="loading"))
    if isinstance(model, QuantizedNetwork):
        net, proto = model, None
    else:
        net = load_network(proto, name=label, quantized_ok=True)
        if not isinstance(net, QuantizedNetwork):
            return None
    report(progress, Progress("stability", 0, 1, "networks", detail="quantized: dead units"))
    seed = 0 if options is None else options.seed
    result = compress_quantized(net, domain, original=proto, output=output, verify=verify,
                                timeout=timeout, seed=seed)
    report(progress, Progress("proof", 1, 0, "proofs",
                              detail=result.proof.verdict.label if result.proof else "not verified"))
    return result
