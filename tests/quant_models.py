"""Quantized copies of float ONNX models, made with ``onnxruntime.quantization`` for the tests
of :mod:`equivcheck.io.onnx_quant` (written where the caller says, never into the repository)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def calibration_reader(model: Path, shape: tuple[int, ...], lo: float = 0.0, hi: float = 1.0,
                       count: int = 16, seed: int = 0):
    """A fixed random calibration reader: ``count`` points uniform in ``[lo, hi]``."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader

    name = onnx.load(str(model)).graph.input[0].name
    rng = np.random.default_rng(seed)
    batches = [{name: rng.uniform(lo, hi, shape).astype(np.float32)} for _ in range(count)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self):
            return next(self.it, None)

    return Reader()


def quantize(model: Path, out: Path, shape: tuple[int, ...], fmt: str, lo: float = 0.0,
             hi: float = 1.0, per_channel: bool = False, **kw) -> Path:
    """``model`` quantized to ``out``: ``fmt`` is "qdq" or "qop" (static, calibrated on fixed
    random points of ``[lo, hi]``) or "dynamic"."""
    from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static

    if fmt == "dynamic":
        quantize_dynamic(str(model), str(out))
        return out
    quantize_static(str(model), str(out), calibration_reader(model, shape, lo, hi),
                    quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
                    per_channel=per_channel, **kw)
    return out
