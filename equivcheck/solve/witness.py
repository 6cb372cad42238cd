"""Re-evaluating a counterexample everywhere it must hold.

A point becomes a :class:`~equivcheck.core.result.Counterexample` only after it is evaluated three
ways: exactly (rational arithmetic on the stored weights — this decides the verdict), in numpy
float64 on our network, and in onnxruntime on the *original files* (float32 inference, the way
the models run in production). Each evaluation reports both outputs, the spec's margin and
whether the violation shows there.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence

import numpy as np

from equivcheck.core.domain import Box
from equivcheck.core.exact import round_to
from equivcheck.core.network import Network
from equivcheck.core.rational import format_rational, to_fraction
from equivcheck.core.result import Counterexample, Evaluation, FoundBy
from equivcheck.core.spec import Spec
from equivcheck.errors import SoundnessError


def exact_evaluation(a: Network, b: Network, spec: Spec, x: Sequence) -> Evaluation:
    """Evaluate both networks at ``x`` in exact rational arithmetic."""
    ya, yb = a.evaluate_exact(x), b.evaluate_exact(x)
    m = spec.margin(ya, yb)
    return Evaluation(
        backend="exact",
        output_a=tuple(float(v) for v in ya),
        output_b=tuple(float(v) for v in yb),
        margin=float(m),
        violated=not spec.holds(ya, yb),
        exact_margin=Fraction(m),
    )


def _float_evaluation(backend: str, spec: Spec, ya: np.ndarray, yb: np.ndarray) -> Evaluation:
    """Judge float outputs; outputs that are not all finite (inf, NaN) judge nothing: the
    evaluation says so in ``error`` and is never counted as showing the violation."""
    out_a, out_b = tuple(float(v) for v in ya), tuple(float(v) for v in yb)
    if not (np.all(np.isfinite(ya)) and np.all(np.isfinite(yb))):
        return Evaluation(backend, out_a, out_b, float("nan"), False,
                          error="outputs are not finite (inf or NaN): the spec cannot be judged")
    return Evaluation(
        backend=backend,
        output_a=out_a,
        output_b=out_b,
        margin=float(spec.margin(list(ya), list(yb))),
        violated=not spec.holds(list(ya), list(yb)),
    )


def float64_evaluation(a: Network, b: Network, spec: Spec, x: np.ndarray) -> Evaluation:
    """Evaluate both networks at ``x`` with numpy float64."""
    xf = np.asarray(x, dtype=np.float64)
    with np.errstate(all="ignore"):
        ya, yb = a.evaluate(xf), b.evaluate(xf)
    return _float_evaluation("float64", spec, np.asarray(ya), np.asarray(yb))


class OrtRunner:
    """onnxruntime sessions of the original model files, created once per model."""

    def __init__(self) -> None:
        self._sessions: dict[int, object] = {}

    def run(self, model, net: Network, x: np.ndarray) -> np.ndarray:
        """The model's first output, flattened, at flat input ``x``."""
        import onnxruntime as ort

        key = id(model)
        sess = self._sessions.get(key)
        if sess is None:
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            opts.intra_op_num_threads = 1
            src = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
            sess = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
            self._sessions[key] = sess
        shape = tuple(1 if d <= 0 else d for d in net.input_shape) or (len(x),)
        dtype = np.float64 if net.input_dtype == "float64" else np.float32
        feed = {net.input_name: np.asarray(x, dtype=dtype).reshape(shape)}
        out = sess.run(None, feed)[0]
        return np.asarray(out, dtype=np.float64).ravel()


def ort_evaluation(
    runner: OrtRunner, model_a, model_b, a: Network, b: Network, spec: Spec, x: np.ndarray
) -> Evaluation:
    """Evaluate the original files at ``x`` in onnxruntime."""
    try:
        ya, yb = runner.run(model_a, a, x), runner.run(model_b, b, x)
    except Exception as exc:  # ORT errors are reported, never fatal
        return Evaluation("onnxruntime", (), (), float("nan"), False, error=f"{type(exc).__name__}: {exc}")
    return _float_evaluation("onnxruntime", spec, ya, yb)


def float_point(box: Box, x_exact: Sequence[Fraction]) -> np.ndarray:
    """The float64 point that stands for the exact point ``x_exact``: the point itself when it is
    a float64 vector, else its nearest float64 point moved into the box where the box holds
    float64 points (it may still lie outside: a one-point box at 7000673/10^7 holds no float)."""
    xf = np.array([float(v) for v in x_exact], dtype=np.float64)
    if all(Fraction(float(f)) == q for f, q in zip(xf, x_exact)):
        return xf
    got = box.float64_box()
    if got is not None:
        xf = np.clip(xf, got[0], got[1])
    return xf


def build_counterexample(
    a: Network,
    b: Network,
    spec: Spec,
    x: Sequence,
    box_index: int,
    found_by: FoundBy | str,
    runner: OrtRunner | None,
    model_a=None,
    model_b=None,
    exact: Evaluation | None = None,
    note: str = "",
    *,
    box: Box,
) -> Counterexample:
    """A counterexample at ``x`` (floats or exact Fractions), evaluated exactly, in float64 and
    in onnxruntime; ``found_by`` is a :class:`FoundBy` (or its value).

    This is the one place a :class:`Counterexample` is made, and it promises: the exact point
    lies in ``box`` (strict bounds honoured) and violates ``spec`` in exact arithmetic; otherwise
    it raises :class:`~equivcheck.errors.SoundnessError` and no REFUTED verdict can be built on
    it. The float runs use the point itself when it is a float vector, else the nearest float
    point; when the float point (or its float32 rounding, which onnxruntime runs) lies outside the
    domain the counterexample says so and does not count as reproducing.
    """
    found_by = FoundBy(found_by)
    x_exact = tuple(to_fraction(v) for v in x)
    if not box.contains(x_exact):
        raise SoundnessError(
            f"refusing a {found_by} counterexample that lies outside the domain's box {box_index}"
        )
    exact = exact or exact_evaluation(a, b, spec, x_exact)
    if not exact.violated:
        raise SoundnessError(f"refusing a {found_by} counterexample that does not violate the spec exactly")
    xf = float_point(box, x_exact)
    f64 = float64_evaluation(a, b, spec, xf)
    notes = [note] if note else []
    in_domain = box.contains(xf)
    if tuple(Fraction(float(v)) for v in xf) != x_exact:
        notes.append(
            "the exact counterexample is not a float64 point (see input_exact); float64 and "
            "onnxruntime ran the nearest float point"
            + ("" if in_domain else ", which lies outside the domain")
        )
    ort_ev = None
    if runner is not None and model_a is not None and model_b is not None:
        ort_ev = ort_evaluation(runner, model_a, model_b, a, b, spec, xf)
        if "float32" in (a.input_dtype, b.input_dtype):  # either model rounds its input
            x32 = round_to(xf, "float32")
            if not np.array_equal(x32, xf):
                if box.contains(x32):
                    notes.append("the point is not float32-representable: onnxruntime ran its float32 rounding, which lies in the domain")
                else:
                    in_domain = False
                    gap = _distance_outside(box, x32)
                    notes.append(
                        "onnxruntime ran the float32 rounding of the point, which lies outside the domain "
                        f"(by up to {gap:.2g}): the domain holds no float32 point there, so the onnxruntime "
                        "run is near the counterexample, not at it"
                    )
    if ort_ev is None:
        notes.append("onnxruntime was not run: the networks were not given as ONNX models")
    for ev in (f64, ort_ev):
        if ev is not None and ev.error:
            notes.append(f"{ev.backend}: {ev.error}")
    if not (f64.violated and (ort_ev is None or ort_ev.violated)):
        where = [n for n, ev in (("float64", f64), ("onnxruntime", ort_ev)) if ev is not None and not ev.violated]
        notes.append(
            "DOES NOT REPRODUCE in " + " and ".join(where)
            + f" (exact margin {format_rational(exact.exact_margin, 3)}): the violation does not survive float rounding"
        )
    return Counterexample(
        input=tuple(float(v) for v in xf),
        box_index=box_index,
        found_by=found_by,
        exact=exact,
        float64=f64,
        onnxruntime=ort_ev,
        note="; ".join(notes),
        exact_input=x_exact,
        float_input_in_domain=in_domain,
    )


def _distance_outside(box: Box, x: np.ndarray) -> float:
    """How far (L-inf, in float) the point ``x`` lies outside the closure of ``box``."""
    lo = np.array([float(v) for v in box.lower])
    hi = np.array([float(v) for v in box.upper])
    gap = np.maximum(np.maximum(lo - x, x - hi), 0.0)
    return float(np.max(gap)) if gap.size else 0.0
