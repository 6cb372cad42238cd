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
        quantize_dynamic(str(model), str(out), per_channel=per_channel, **kw)
        return out
    quantize_static(str(model), str(out), calibration_reader(model, shape, lo, hi),
                    quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
                    per_channel=per_channel, **kw)
    return out


def small_conv(out: Path, seed: int = 0) -> Path:
    """A small float CNN (1x1x6x6 -> Conv 3x3x3 (pad 1) -> Relu -> Flatten -> MatMul 108x4 ->
    Add), the shape of graph quantize_dynamic turns into ConvInteger and MatMulInteger."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (3, 1, 3, 3)).astype(np.float32), "cw"),
             numpy_helper.from_array(rng.normal(0, 0.1, 3).astype(np.float32), "cb"),
             numpy_helper.from_array(rng.normal(0, 0.2, (108, 4)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Flatten", ["r"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "w"], ["m"], name="fc"),
             helper.make_node("Add", ["m", "b"], ["y"], name="bias")]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), out)
    return out


def dynamic_matmul(out: Path, weight_q: np.ndarray, w_scale: float, bias: np.ndarray | None = None,
                   extra: str = "") -> Path:
    """By hand, what quantize_dynamic writes for ``y = x @ W + bias`` (x: ``(1, k)``):
    DynamicQuantizeLinear -> Mul(y_scale, w_scale) -> MatMulInteger -> Cast -> Mul [-> Add],
    with int8 weights ``weight_q`` (zero point 0). ``extra`` breaks the pattern on purpose:
    "scale_out" also multiplies the scale into the output, "zero_point" gives MatMulInteger no
    activation zero point."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k, n = weight_q.shape
    inits = [numpy_helper.from_array(weight_q.astype(np.int8), "wq"),
             numpy_helper.from_array(np.array(0, np.int8), "wz"),
             numpy_helper.from_array(np.array(w_scale, np.float32), "ws")]
    a_zp = "" if extra == "zero_point" else "xz"
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], name="dql"),
             helper.make_node("Mul", ["xs", "ws"], ["ps"], name="scales"),
             helper.make_node("MatMulInteger", ["xq", "wq", a_zp, "wz"], ["acc"], name="mmi"),
             helper.make_node("Cast", ["acc"], ["accf"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Mul", ["accf", "ps"], ["m"], name="rescale")]
    last = "m"
    if bias is not None:
        inits.append(numpy_helper.from_array(bias.astype(np.float32), "b"))
        nodes.append(helper.make_node("Add", ["m", "b"], ["mb"], name="bias"))
        last = "mb"
    if extra == "scale_out":
        nodes.append(helper.make_node("Mul", [last, "xs"], ["ms"], name="again"))
        last = "ms"
    nodes.append(helper.make_node("Identity", [last], ["y"], name="out"))
    graph = helper.make_graph(nodes, "dyn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), out)
    return out


def float_matmul(out: Path, weight: np.ndarray, bias: np.ndarray | None = None) -> Path:
    """The float model ``y = x @ weight (+ bias)`` (x: ``(1, k)``)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k, n = weight.shape
    inits = [numpy_helper.from_array(weight.astype(np.float32), "w")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm")]
    last = "m"
    if bias is not None:
        inits.append(numpy_helper.from_array(bias.astype(np.float32), "b"))
        nodes.append(helper.make_node("Add", ["m", "b"], ["y"], name="bias"))
        last = "y"
    if last != "y":
        nodes.append(helper.make_node("Identity", [last], ["y"], name="out"))
    graph = helper.make_graph(nodes, "float", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), out)
    return out
