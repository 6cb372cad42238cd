"""Small ReLU networks as exact recipes, relations between two of them, and ONNX renderings.

A :class:`NetSpec` is the ground truth of a generated model: float32-representable weights whose
function we evaluate ourselves, exactly (``Fraction``) or in float64, independently of
equivcheck's importer. :func:`render` writes it as an ONNX model in one of several equivalent
styles (Gemm / MatMul+Add / scaled Gemm, pass-through nodes, float32 or float64); every style
denotes exactly the recipe's function in rational arithmetic. A *mutation* breaks the model on
purpose (NaN weights, bad attributes, unsupported operators, huge shapes, corrupt bytes, ...) and
says what the tool must do with it: ``expect="bad"`` (exit 4, never a verdict) or ``"any"``
(any verdict, checked against equivcheck's own exact import).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np
from onnx import TensorProto, helper, numpy_helper

ELEM = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE}
NP = {"float32": np.float32, "float64": np.float64}

STYLES = ("gemm_t", "gemm", "matmul_add", "matmul_sub", "gemm_alpha")
EXTRAS = ("none", "identity", "dropout", "flatten", "reshape", "mul1", "div3_mul3",
          "bn_identity", "transpose_pair", "cast", "unsqueeze_squeeze")

# mutations: name -> (expect, truth, heavy). expect "bad": exit 4 and no verdict; "any": any exit
# code but a verdict must hold. truth "recipe": the NetSpec is the exact function; "import":
# only equivcheck's exact import can judge a verdict. heavy: run in a memory-limited subprocess.
MUTATIONS = {
    "nan_weight": ("bad", None, False),
    "inf_bias": ("bad", None, False),
    "gemm_alpha_nan": ("bad", None, False),
    "gemm_beta_inf": ("bad", None, False),
    "gemm_c_wrong_shape": ("bad", None, False),
    "matmul_wrong_shape": ("bad", None, False),
    "bn_negative_var": ("bad", None, False),
    "bn_training_mode": ("bad", None, False),
    "dropout_training": ("bad", None, False),
    "transpose_bad_perm": ("bad", None, False),
    "non_relu": ("bad", None, False),
    "unsupported_op": ("bad", None, False),
    "branching": ("bad", None, False),
    "two_outputs": ("bad", None, False),
    "int_input": ("bad", None, False),
    "nan_constant_node": ("bad", None, False),
    "empty_graph": ("bad", None, False),
    "garbage_bytes": ("bad", None, False),
    "truncated": ("bad", None, False),
    "external_outside": ("bad", None, False),
    "huge_input_dim": ("bad", None, True),
    "weights_1e200": ("any", "import", False),
    "constant_exp": ("any", "import", False),
    "wide_layer": ("any", "recipe", True),
}
OUTSIDE_FILE = "fuzz_outside.bin"  # written by the runner next to (not inside) each scratch folder
OUTSIDE_BYTES = 1 << 16


# ---------------------------------------------------------------------------------------------
# recipes


@dataclass(frozen=True)
class LayerSpec:
    """``z = W h + b`` (``weight`` rows are units), then a ReLU when ``relu``."""

    weight: tuple[tuple[float, ...], ...]
    bias: tuple[float, ...]
    relu: bool

    def w(self) -> np.ndarray:
        return np.array(self.weight, dtype=np.float64).reshape(len(self.weight), -1)

    def b(self) -> np.ndarray:
        return np.array(self.bias, dtype=np.float64)


@dataclass(frozen=True)
class NetSpec:
    """A straight ReLU network over a flat input: the exact meaning of a generated model."""

    layers: tuple[LayerSpec, ...]

    @property
    def in_dim(self) -> int:
        return len(self.layers[0].weight[0])

    @property
    def out_dim(self) -> int:
        return len(self.layers[-1].bias)

    def hidden(self) -> list[int]:
        """Indices of the layers followed by a ReLU."""
        return [k for k, layer in enumerate(self.layers) if layer.relu]

    def evaluate(self, x: np.ndarray) -> np.ndarray:
        """Float64 outputs for a batch ``(n, in_dim)``."""
        h = np.atleast_2d(np.asarray(x, dtype=np.float64))
        with np.errstate(all="ignore"):
            for layer in self.layers:
                h = h @ layer.w().T + layer.b()
                if layer.relu:
                    h = np.maximum(h, 0.0)
        return h

    def evaluate_exact(self, x) -> list[Fraction]:
        """Outputs in exact rational arithmetic at one flat input."""
        h = [Fraction(v) for v in x]
        for layer in self.layers:
            z = []
            for row, bias in zip(layer.weight, layer.bias):
                acc = Fraction(bias)
                for wv, hv in zip(row, h):
                    if wv and hv:
                        acc += Fraction(wv) * hv
                z.append(acc)
            h = [v if (v > 0 or not layer.relu) else Fraction(0) for v in z]
        return h


def f32(v: float) -> float:
    """The float32 value nearest ``v`` (as a Python float)."""
    return float(np.float32(v))


def net_from_arrays(weights, biases, final_relu: bool = False) -> NetSpec:
    """A NetSpec from lists of (out, in) weight arrays and bias vectors (rounded to float32)."""
    layers = []
    for k, (w, b) in enumerate(zip(weights, biases)):
        w = np.asarray(w, dtype=np.float32).astype(np.float64)
        b = np.asarray(b, dtype=np.float32).astype(np.float64)
        relu = k < len(weights) - 1 or final_relu
        layers.append(LayerSpec(tuple(tuple(float(v) for v in row) for row in w),
                                tuple(float(v) for v in b), relu))
    return NetSpec(tuple(layers))


def _arrays(net: NetSpec) -> tuple[list[np.ndarray], list[np.ndarray]]:
    return [layer.w() for layer in net.layers], [layer.b() for layer in net.layers]


def _rebuild(net: NetSpec, ws, bs) -> NetSpec:
    return NetSpec(tuple(
        LayerSpec(tuple(tuple(float(v) for v in row) for row in w), tuple(float(v) for v in b),
                  layer.relu)
        for layer, w, b in zip(net.layers, ws, bs)))


# ---------------------------------------------------------------------------------------------
# relations between the two networks of a pair

RELATIONS = ("identical", "permuted", "pruned_dead", "rescaled", "perturbed", "bias_shift",
             "zeroed", "independent")
DELTAS = ("ulp", "2^-24", "2^-12", "2^-4", "0.5")


def relate(net: NetSpec, relation: str, pick: int = 0, delta: str = "2^-12",
           other: NetSpec | None = None) -> tuple[NetSpec, NetSpec]:
    """The pair (a, b) for ``relation`` applied to ``net``; ``pick`` chooses layer/unit/weight.

    identical, permuted (hidden units reordered) and rescaled (a unit's input scaled by 2^s, its
    output by 2^-s) and pruned_dead (a has an extra unit with zero weights and bias -1, b does
    not) compute the same function; perturbed / bias_shift / zeroed change one number;
    independent pairs ``net`` with ``other``.
    """
    ws, bs = _arrays(net)
    hidden = net.hidden()
    if relation == "identical" or (not hidden and relation in ("permuted", "pruned_dead",
                                                               "rescaled")):
        return net, net
    if relation == "independent":
        return net, other if other is not None else net
    if relation == "permuted":
        k = hidden[pick % len(hidden)]
        n = len(bs[k])
        perm = np.roll(np.arange(n), 1 + pick % max(n, 1))
        ws2, bs2 = [w.copy() for w in ws], [b.copy() for b in bs]
        ws2[k], bs2[k] = ws[k][perm], bs[k][perm]
        ws2[k + 1] = ws[k + 1][:, perm]
        return net, _rebuild(net, ws2, bs2)
    if relation == "pruned_dead":
        k = hidden[pick % len(hidden)]
        ws2, bs2 = [w.copy() for w in ws], [b.copy() for b in bs]
        ws2[k] = np.vstack([ws[k], np.zeros((1, ws[k].shape[1]))])
        bs2[k] = np.append(bs[k], -1.0)
        ws2[k + 1] = np.hstack([ws[k + 1], np.full((ws[k + 1].shape[0], 1), 0.75)])
        return _rebuild(net, ws2, bs2), net
    if relation == "rescaled":
        k = hidden[pick % len(hidden)]
        j = pick % len(bs[k])
        s = 2.0 ** (1 + pick % 3)
        ws2, bs2 = [w.copy() for w in ws], [b.copy() for b in bs]
        ws2[k][j] *= s
        bs2[k][j] *= s
        ws2[k + 1][:, j] /= s
        return net, _rebuild(net, ws2, bs2)
    ws2, bs2 = [w.copy() for w in ws], [b.copy() for b in bs]
    if relation == "bias_shift":
        j = pick % len(bs[-1])
        bs2[-1][j] = _shift(bs[-1][j], delta)
        return net, _rebuild(net, ws2, bs2)
    k = pick % len(ws)
    i = pick % ws[k].shape[0]
    j = (pick // 3) % ws[k].shape[1]
    if relation == "zeroed":
        ws2[k][i, j] = 0.0
    else:  # perturbed
        ws2[k][i, j] = _shift(ws[k][i, j], delta)
    return net, _rebuild(net, ws2, bs2)


def _shift(v: float, delta: str) -> float:
    if delta == "ulp":
        return float(np.nextafter(np.float32(v), np.float32(np.inf)))
    d = {"2^-24": 2.0**-24, "2^-12": 2.0**-12, "2^-4": 2.0**-4, "0.5": 0.5}[delta]
    return f32(v + d)


# ---------------------------------------------------------------------------------------------
# ONNX renderings


@dataclass(frozen=True)
class Rendering:
    """How a recipe is written as ONNX; every choice keeps the exact function."""

    dtype: str = "float32"
    styles: tuple[str, ...] = ("gemm_t",)
    extras: tuple[str, ...] = ("none",)
    batch: str = "1"  # "1" or "N" (a symbolic batch dimension)
    opset: int = 17
    names: tuple[str, str] = ("x", "y")  # graph input and output names


@dataclass(frozen=True)
class Built:
    """A rendered model: its bytes and what the tool must do with it."""

    data: bytes
    expect: str  # "valid", "bad" or "any"
    truth: str | None  # "recipe", "import" or None
    heavy: bool = False


class _Graph:
    def __init__(self, dtype: str) -> None:
        self.dtype = dtype
        self.nodes: list = []
        self.inits: list = []
        self.count = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}{self.count}"

    def const(self, value, stem: str = "c", dtype=None) -> str:
        arr = np.asarray(value)
        if arr.dtype.kind == "f":
            arr = arr.astype(dtype or NP[self.dtype])
        n = self.name(stem)
        self.inits.append(numpy_helper.from_array(arr, n))
        return n

    def node(self, op: str, inputs, stem: str = "t", n_out: int = 1, **attrs) -> str:
        outs = [self.name(stem) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, **attrs))
        return outs[0]


def render(net: NetSpec, r: Rendering, mutation: str | None = None, target: int = 0,
           variant: int = 0) -> Built:
    """The ONNX bytes of ``net`` written as ``r``, broken by ``mutation`` at layer ``target``."""
    expect, truth, heavy = MUTATIONS.get(mutation, ("valid", "recipe", False))
    if mutation == "weights_1e200" and r.dtype != "float64":
        r = replace(r, dtype="float64")
    if mutation in ("bn_training_mode",) and r.opset < 14:
        r = replace(r, opset=17)
    if mutation == "garbage_bytes":
        rng = np.random.default_rng(variant)
        data = [b"", b"\x08\x07", b"not an onnx model\n", rng.bytes(64 + variant % 200)][variant % 4]
        return Built(data, expect, truth, heavy)
    g = _Graph(r.dtype)
    target = target % len(net.layers)
    if mutation in ("non_relu", "branching") and net.hidden():
        target = net.hidden()[target % len(net.hidden())]  # the mutation needs a ReLU
    n_in = net.in_dim
    in_dim_decl = n_in
    cur = "x"
    if mutation == "huge_input_dim":
        in_dim_decl = 10**12
        cur = g.node("Relu", [cur], "r")
    layers = list(net.layers)
    if mutation == "wide_layer" and net.hidden():
        k = net.hidden()[0]
        extra = 200_000
        w, b = layers[k].w(), layers[k].b()
        w_next = layers[k + 1].w()
        wide_w = np.vstack([w, np.zeros((extra, w.shape[1]))])
        wide_b = np.concatenate([b, -np.ones(extra)])
        wide_next = np.hstack([w_next, np.full((w_next.shape[0], extra), 0.5)])
        layers[k] = ("arrays", wide_w, wide_b, layers[k].relu)
        layers[k + 1] = ("arrays", wide_next, layers[k + 1].b(), layers[k + 1].relu)
    for k, layer in enumerate(layers):
        if isinstance(layer, tuple):
            _, w, b, relu = layer
        else:
            w, b, relu = layer.w(), layer.b(), layer.relu
        w, b = w.copy(), b.copy()
        here = k == target
        style = r.styles[k % len(r.styles)]
        if here and mutation == "nan_weight":
            w[0, 0] = math.nan
        if here and mutation == "inf_bias":
            b[0] = math.inf
        if here and mutation == "weights_1e200":
            w = w * 1e200
        if here and mutation in ("gemm_alpha_nan", "gemm_beta_inf", "gemm_c_wrong_shape"):
            style = "gemm_t"
        if here and mutation in ("matmul_wrong_shape", "constant_exp", "nan_constant_node"):
            style = "matmul_add"
        cur = _affine(g, cur, w, b, style, mutation if here else None, variant)
        if relu:
            if here and mutation == "non_relu":
                op = ("Sigmoid", "Tanh", "Softsign", "Softplus", "Elu")[variant % 5]  # LeakyRelu imports
                cur = g.node(op, [cur], "act")
            else:
                cur = g.node("Relu", [cur], "r")
            if here and mutation == "branching":
                pre = g.nodes[-2].output[0] if len(g.nodes) >= 2 else "x"
                cur = g.node("Mul", [cur, pre], "br")  # a product of branches (Add imports)
        extra = r.extras[k % len(r.extras)]
        cur = _extra(g, cur, extra, r, w.shape[0])
        if here:
            cur = _layer_mutation(g, cur, mutation, variant, w.shape[0])
    out_dim = net.out_dim
    elem = TensorProto.INT64 if mutation == "int_input" else ELEM[r.dtype]
    batch = "N" if r.batch == "N" else 1
    inputs = [helper.make_tensor_value_info("x", elem, [batch, in_dim_decl])]
    # rename the last tensor to "y"
    if g.nodes:
        last = g.nodes[-1]
        old = last.output[0]
        last.output[0] = "y"
        for node in g.nodes:
            for i, name in enumerate(node.input):
                if name == old:
                    node.input[i] = "y"
    outputs = [helper.make_tensor_value_info("y", ELEM[r.dtype], [batch, out_dim])]
    if mutation == "two_outputs":
        outputs.append(helper.make_tensor_value_info(g.nodes[0].output[0], ELEM[r.dtype], None))
    nx, ny = r.names
    for node in g.nodes:
        for i, name in enumerate(node.input):
            node.input[i] = {"x": nx, "y": ny}.get(name, name)
        for i, name in enumerate(node.output):
            node.output[i] = {"y": ny}.get(name, name)
    for vi in inputs + outputs:
        vi.name = {"x": nx, "y": ny}.get(vi.name, vi.name)
    nodes = [] if mutation == "empty_graph" else g.nodes
    graph = helper.make_graph(nodes, "fuzz", inputs, outputs, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", r.opset)])
    model.ir_version = 8
    if mutation == "external_outside":
        t = model.graph.initializer[0]
        raw = numpy_helper.to_array(t).tobytes()
        t.ClearField("raw_data")
        t.ClearField("float_data")
        t.ClearField("double_data")
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", f"../{OUTSIDE_FILE}"), ("offset", "0"),
                           ("length", str(min(len(raw), OUTSIDE_BYTES)))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
    data = model.SerializeToString()
    if mutation == "truncated":
        data = data[: max(1, len(data) * (1 + variant % 3) // 4)]
    return Built(data, expect, truth, heavy)


def _affine(g: _Graph, cur: str, w: np.ndarray, b: np.ndarray, style: str, mutation, variant) -> str:
    if mutation == "gemm_alpha_nan":
        return g.node("Gemm", [cur, g.const(w), g.const(b)], "g", transB=1, alpha=math.nan)
    if mutation == "gemm_beta_inf":
        return g.node("Gemm", [cur, g.const(w), g.const(b)], "g", transB=1, beta=math.inf)
    if mutation == "gemm_c_wrong_shape":
        return g.node("Gemm", [cur, g.const(w), g.const(np.append(b, 1.0))], "g", transB=1)
    if mutation == "matmul_wrong_shape":
        wt = np.vstack([w.T, np.ones((1, w.shape[0]))])
        return g.node("Add", [g.node("MatMul", [cur, g.const(wt)], "mm"), g.const(b)], "a")
    if mutation == "constant_exp":
        wt = g.node("Exp", [g.const(w.T)], "exp")
        return g.node("Add", [g.node("MatMul", [cur, wt], "mm"), g.const(b)], "a")
    if mutation == "nan_constant_node":
        wt_val = w.T.astype(NP[g.dtype])
        wt_val[0, 0] = np.nan
        wt = g.name("cn")
        g.nodes.append(helper.make_node("Constant", [], [wt],
                                        value=numpy_helper.from_array(wt_val, wt + "_v")))
        return g.node("Add", [g.node("MatMul", [cur, wt], "mm"), g.const(b)], "a")
    if style == "gemm_t":
        return g.node("Gemm", [cur, g.const(w), g.const(b)], "g", transB=1)
    if style == "gemm":
        return g.node("Gemm", [cur, g.const(w.T), g.const(b)], "g")
    if style == "matmul_add":
        return g.node("Add", [g.node("MatMul", [cur, g.const(w.T)], "mm"), g.const(b)], "a")
    if style == "matmul_sub":
        return g.node("Sub", [g.node("MatMul", [cur, g.const(w.T)], "mm"), g.const(-b)], "s")
    # gemm_alpha: alpha * (x (2W)^T) + beta * (4b), alpha = 1/2, beta = 1/4: exact
    return g.node("Gemm", [cur, g.const(w * 2.0), g.const(b * 4.0)], "g", transB=1, alpha=0.5,
                  beta=0.25)


def _extra(g: _Graph, cur: str, extra: str, r: Rendering, n: int) -> str:
    if extra == "identity":
        return g.node("Identity", [cur], "id")
    if extra == "dropout":
        return g.node("Dropout", [cur], "do")
    if extra == "flatten":
        return g.node("Flatten", [cur], "fl", axis=1)
    if extra == "reshape":
        return g.node("Reshape", [cur, g.const(np.array([1, -1], dtype=np.int64))], "rs")
    if extra == "mul1":
        return g.node("Mul", [cur, g.const(np.ones(n))], "m1")
    if extra == "div3_mul3":
        d = g.node("Div", [cur, g.const(np.array(3.0))], "d3")
        return g.node("Mul", [d, g.const(np.array(3.0))], "m3")
    if extra == "bn_identity":
        return g.node("BatchNormalization", [cur, g.const(np.ones(n)), g.const(np.zeros(n)),
                                             g.const(np.zeros(n)), g.const(np.ones(n))],
                      "bn", epsilon=0.0)
    if extra == "transpose_pair" and r.batch == "1":
        t = g.node("Transpose", [cur], "tp", perm=[1, 0])
        return g.node("Transpose", [t], "tp", perm=[1, 0])
    if extra == "cast":
        return g.node("Cast", [cur], "cast", to=ELEM[r.dtype])
    if extra == "unsqueeze_squeeze":
        axes = g.const(np.array([0], dtype=np.int64))
        u = g.node("Unsqueeze", [cur, axes], "us")
        return g.node("Squeeze", [u, axes], "sq")
    return cur


def _layer_mutation(g: _Graph, cur: str, mutation, variant: int, n: int) -> str:
    if mutation == "bn_negative_var":
        return g.node("BatchNormalization", [cur, g.const(np.ones(n)), g.const(np.zeros(n)),
                                             g.const(np.zeros(n)), g.const(-np.ones(n))], "bn")
    if mutation == "bn_training_mode":
        return g.node("BatchNormalization", [cur, g.const(np.ones(n)), g.const(np.zeros(n)),
                                             g.const(np.zeros(n)), g.const(np.ones(n))], "bn",
                      training_mode=1)
    if mutation == "dropout_training":
        ratio = g.const(np.array(0.5))
        train = g.const(np.array(True))
        return g.node("Dropout", [cur, ratio, train], "do")
    if mutation == "transpose_bad_perm":
        perm = ([0, 0], [2, 0], [1], [1, 0, 2])[variant % 4]
        return g.node("Transpose", [cur], "tp", perm=perm)
    if mutation == "unsupported_op":
        op = variant % 3
        if op == 0:
            return g.node("Floor", [cur], "fl")
        if op == 1:
            return g.node("Max", [cur, g.const(np.zeros(n))], "mx")
        return g.node("Softmax", [cur], "sm", axis=1)
    return cur
