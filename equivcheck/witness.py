"""Re-evaluating a counterexample everywhere it must hold.

A point becomes a :class:`~equivcheck.result.Counterexample` only after it is evaluated three
ways: exactly (rational arithmetic on the stored weights — this decides the verdict), in numpy
float64 on our network, and in onnxruntime on the *original files* (float32 inference, the way
the models run in production). Each evaluation reports both outputs, the spec's margin and
whether the violation shows there.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence

import numpy as np

from .network import Network
from .result import Counterexample, Evaluation
from .spec import Spec


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


def float64_evaluation(a: Network, b: Network, spec: Spec, x: np.ndarray) -> Evaluation:
    """Evaluate both networks at ``x`` with numpy float64."""
    ya, yb = a.evaluate(np.asarray(x, dtype=np.float64)), b.evaluate(np.asarray(x, dtype=np.float64))
    return Evaluation(
        backend="float64",
        output_a=tuple(float(v) for v in ya),
        output_b=tuple(float(v) for v in yb),
        margin=float(spec.margin(list(ya), list(yb))),
        violated=not spec.holds(list(ya), list(yb)),
    )


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
    return Evaluation(
        backend="onnxruntime",
        output_a=tuple(float(v) for v in ya),
        output_b=tuple(float(v) for v in yb),
        margin=float(spec.margin(list(ya), list(yb))),
        violated=not spec.holds(list(ya), list(yb)),
    )


def build_counterexample(
    a: Network,
    b: Network,
    spec: Spec,
    x: Sequence,
    box_index: int,
    found_by: str,
    runner: OrtRunner | None,
    model_a=None,
    model_b=None,
    exact: Evaluation | None = None,
    note: str = "",
) -> Counterexample:
    """A counterexample at ``x`` (floats), evaluated exactly, in float64 and in onnxruntime."""
    xf = np.array([float(v) for v in x], dtype=np.float64)
    exact = exact or exact_evaluation(a, b, spec, [Fraction(float(v)) for v in xf])
    f64 = float64_evaluation(a, b, spec, xf)
    notes = [note] if note else []
    ort_ev = None
    if runner is not None and model_a is not None and model_b is not None:
        ort_ev = ort_evaluation(runner, model_a, model_b, a, b, spec, xf)
        f32_input = np.array_equal(xf.astype(np.float32).astype(np.float64), xf)
        if not f32_input and a.input_dtype == "float32":
            notes.append("the point is not float32-representable: onnxruntime ran its rounding")
    if ort_ev is None:
        notes.append("onnxruntime was not run: the networks were not given as ONNX models")
    if exact.violated and not (f64.violated and (ort_ev is None or ort_ev.violated)):
        where = [n for n, ev in (("float64", f64), ("onnxruntime", ort_ev)) if ev is not None and not ev.violated]
        notes.append(
            "DOES NOT REPRODUCE in " + " and ".join(where)
            + f" (exact margin {float(exact.exact_margin):.3g}): the violation does not survive float rounding"
        )
    note = "; ".join(notes)
    return Counterexample(
        input=tuple(float(v) for v in xf),
        box_index=box_index,
        found_by=found_by,
        exact=exact,
        float64=f64,
        onnxruntime=ort_ev,
        note=note,
    )
