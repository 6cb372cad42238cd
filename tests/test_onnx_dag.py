"""Differential test of the CNN and DAG constructs of the ONNX importer: each small graph, built
with onnx.helper, runs on random points through our network (float64 and exact) and through
onnxruntime, and must agree. Also: refusals of what is not imported, and torch-exported CNNs."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from equivcheck.errors import InputError, UnsupportedModelError
from equivcheck.io.onnx_import import load_network

from .helpers import ort_outputs

RNG = np.random.default_rng(2024)


def model(nodes, inits, in_shape, opset=17):
    """A float32 model with input ``x`` of ``in_shape`` and output ``y`` (shape left open)."""
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.asarray(v, dtype=np.float32 if np.asarray(v).dtype.kind == "f"
                                                        else np.asarray(v).dtype), k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def w(*shape, scale=0.5):
    return RNG.normal(0, scale, shape)


def conv(x, out, wname, bname=None, **kw):
    return helper.make_node("Conv", [x, wname] + ([bname] if bname else []), [out], **kw)


def case_conv2d_stride_pad_dilation():
    return model([conv("x", "c", "W", "B", strides=[2, 1], pads=[1, 0, 2, 1], dilations=[1, 2]),
                  helper.make_node("Relu", ["c"], ["y"])], {"W": w(4, 2, 3, 2), "B": w(4)}, [1, 2, 7, 6])


def case_conv2d_groups_auto_pad():
    return model([conv("x", "c", "W", "B", group=2, auto_pad="SAME_UPPER", strides=[2, 2]),
                  helper.make_node("Relu", ["c"], ["r"]), conv("r", "y", "W2", group=3)],
                 {"W": w(6, 2, 3, 3), "B": w(6), "W2": w(3, 2, 1, 2)}, [1, 4, 5, 5])


def case_conv1d_stride_pad():
    return model([conv("x", "c", "W", "B", strides=[2], pads=[2, 1], dilations=[2]),
                  helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Flatten", ["r"], ["f"]),
                  helper.make_node("Gemm", ["f", "G", "GB"], ["y"], transB=1)],
                 {"W": w(3, 2, 3), "B": w(3), "G": w(2, 15), "GB": w(2)}, [1, 2, 11])


def case_pad_modes():
    return model([helper.make_node("Pad", ["x", "p1", "v"], ["a"], mode="constant"),
                  helper.make_node("Pad", ["a", "p2"], ["b"], mode="reflect"),
                  helper.make_node("Pad", ["b", "p3"], ["c"], mode="edge"),
                  conv("c", "y", "W")],
                 {"p1": np.array([0, 0, 1, 0, 0, 0, 0, 2]), "v": np.array(-0.75),
                  "p2": np.array([0, 0, 2, 1, 0, 0, 1, 2]), "p3": np.array([0, 0, 0, -1, 0, 0, 1, 0]),
                  "W": w(2, 1, 2, 2)}, [1, 1, 3, 4])


def case_average_pool_pads():
    return model([conv("x", "c", "W", "B"), helper.make_node("Relu", ["c"], ["r"]),
                  helper.make_node("AveragePool", ["r", ], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                   strides=[2, 2]),
                  helper.make_node("AveragePool", ["p"], ["y"], kernel_shape=[2, 3], pads=[1, 0, 0, 1],
                                   count_include_pad=1)],
                 {"W": w(2, 1, 2, 2), "B": w(2)}, [1, 1, 8, 8])


def case_global_average_pool():
    return model([conv("x", "c", "W", "B"), helper.make_node("Relu", ["c"], ["r"]),
                  helper.make_node("GlobalAveragePool", ["r"], ["g"]), helper.make_node("Flatten", ["g"], ["y"])],
                 {"W": w(3, 2, 3, 3), "B": w(3)}, [1, 2, 5, 6])


def case_max_pool_pads_strides_odd():
    return model([conv("x", "c", "W", "B"), helper.make_node("Relu", ["c"], ["r"]),
                  helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                   strides=[2, 2])],
                 {"W": w(2, 1, 2, 2), "B": w(2)}, [1, 1, 8, 7])


def case_max_pool_signed_ceil_dilated():
    return model([conv("x", "c", "W", "B"),
                  helper.make_node("MaxPool", ["c"], ["m"], kernel_shape=[3, 2], strides=[2, 2],
                                   dilations=[1, 2], ceil_mode=1),
                  helper.make_node("GlobalMaxPool", ["m"], ["y"])],
                 {"W": w(2, 1, 2, 2), "B": w(2)}, [1, 1, 9, 9])


def case_batchnorm_after_conv():
    return model([conv("x", "c", "W", "B"),
                  helper.make_node("BatchNormalization", ["c", "s", "t", "mu", "var"], ["n"], epsilon=1e-3),
                  helper.make_node("Relu", ["n"], ["y"])],
                 {"W": w(3, 2, 2, 2), "B": w(3), "s": w(3), "t": w(3), "mu": w(3),
                  "var": np.abs(w(3)) + 0.1}, [1, 2, 5, 5])


def case_nhwc_transpose():  # tf2onnx: NHWC input transposed to NCHW
    return model([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]), conv("t", "c", "W", "B"),
                  helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Transpose", ["r"], ["y"], perm=[0, 2, 3, 1])],
                 {"W": w(4, 3, 3, 3), "B": w(4)}, [1, 6, 5, 3])


def case_concat_branches_and_constant():
    return model([conv("x", "a", "W1", "B1"), helper.make_node("Relu", ["a"], ["ra"]),
                  conv("x", "b", "W2"), helper.make_node("Concat", ["ra", "b", "K"], ["y"], axis=1)],
                 {"W1": w(2, 1, 2, 2), "B1": w(2), "W2": w(3, 1, 2, 2), "K": w(1, 1, 3, 3)}, [1, 1, 4, 4])


def case_clip_forms():
    return model([conv("x", "c", "W", "B"), helper.make_node("Clip", ["c", "lo", "hi"], ["a"]),
                  helper.make_node("Clip", ["a", "", "hi2"], ["b"]), helper.make_node("Clip", ["b", "z"], ["d"]),
                  helper.make_node("Clip", ["d", "lo3"], ["y"])],
                 {"W": w(2, 1, 2, 2, scale=1.5), "B": w(2), "lo": np.array(-0.5), "hi": np.array(0.75),
                  "hi2": np.array(0.5), "z": np.array(0.0), "lo3": np.array(0.25)}, [1, 1, 4, 4])


def case_clip_opset6_attributes():
    return model([helper.make_node("Clip", ["x"], ["y"], min=-0.25, max=0.5)], {}, [1, 5], opset=6)


def case_leaky_relu_and_prelu():
    return model([conv("x", "c", "W", "B"), helper.make_node("LeakyRelu", ["c"], ["l"], alpha=0.1),
                  helper.make_node("PRelu", ["l", "slope"], ["p"]), helper.make_node("Relu", ["p"], ["r"]),
                  helper.make_node("LeakyRelu", ["r"], ["y"], alpha=0.2)],  # of a non-negative: identity
                 {"W": w(3, 1, 2, 2), "B": w(3), "slope": w(3, 1, 1)}, [1, 1, 4, 4])


def case_residual_add_nonneg_skip():  # resnet: relu -> conv -> relu -> conv, + the first relu
    return model([conv("x", "c0", "W0", "B0", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c0"], ["r0"]),
                  conv("r0", "c1", "W1", "B1", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c1"], ["r1"]),
                  conv("r1", "c2", "W2", "B2", pads=[1, 1, 1, 1]), helper.make_node("Add", ["c2", "r0"], ["s"]),
                  helper.make_node("Relu", ["s"], ["y"])],
                 {"W0": w(2, 1, 3, 3), "B0": w(2), "W1": w(2, 2, 3, 3), "B1": w(2), "W2": w(2, 2, 3, 3),
                  "B2": w(2)}, [1, 1, 5, 5])


def case_residual_sub_signed_skip():  # the skip is a signed tensor (a conv output), subtracted
    return model([conv("x", "c0", "W0", "B0"), helper.make_node("Relu", ["c0"], ["r0"]),
                  helper.make_node("Sub", ["c0", "r0"], ["s"]), helper.make_node("Relu", ["s"], ["r1"]),
                  helper.make_node("Add", ["r1", "c0"], ["y"])],
                 {"W0": w(2, 1, 2, 2), "B0": w(2)}, [1, 1, 4, 4])


def case_dense_skip_broadcast_and_twice():  # a Gemm branch, broadcasting and x + x
    return model([helper.make_node("Gemm", ["x", "G", "GB"], ["g"], transB=1), helper.make_node("Relu", ["g"], ["r"]),
                  helper.make_node("Add", ["r", "g"], ["s"]), helper.make_node("Add", ["s", "s"], ["d"]),
                  helper.make_node("Sub", ["d", "x0"], ["y"])],
                 {"G": w(4, 3), "GB": w(4), "x0": w(1, 1)}, [1, 3])


def case_pools_same_and_ceil():
    return model([helper.make_node("AveragePool", ["x"], ["a"], kernel_shape=[3, 2], strides=[2, 2],
                                   auto_pad="SAME_UPPER", count_include_pad=1),
                  helper.make_node("MaxPool", ["a"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                   pads=[1, 0, 1, 1], ceil_mode=1)], {}, [1, 2, 9, 9])


def case_max_pool_signed_1d_pads():
    return model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[5], strides=[3], pads=[2, 2])],
                 {}, [1, 2, 11])


def case_conv_same_lower_3d_valid():
    return model([conv("x", "c", "W", "B", auto_pad="SAME_LOWER", strides=[2, 3, 1]),
                  conv("c", "y", "W2", auto_pad="VALID")],
                 {"W": w(2, 1, 3, 2, 2), "B": w(2), "W2": w(2, 2, 2, 1, 2)}, [1, 1, 5, 6, 3])


def case_pad_wrap_axes_opset19():
    return model([helper.make_node("Pad", ["x", "p", "", "ax"], ["y"], mode="wrap")],
                 {"p": np.array([1, 2, 2, 0]), "ax": np.array([2, 3])}, [1, 1, 3, 4], opset=19)


def case_pad_opset2_value():
    return model([helper.make_node("Pad", ["x"], ["p"], pads=[0, 1, 0, 2], value=1.5),
                  helper.make_node("Relu", ["p"], ["y"])], {}, [1, 3], opset=6)


def case_clip_min_above_max():  # opset 11 on: every output is max
    return model([helper.make_node("Clip", ["x", "lo", "hi"], ["y"])],
                 {"lo": np.array(0.5), "hi": np.array(-0.5)}, [1, 4])


def case_add_broadcast_channels():
    return model([conv("x", "c", "W"), helper.make_node("GlobalAveragePool", ["c"], ["g"]),
                  helper.make_node("Sub", ["c", "g"], ["y"])], {"W": w(2, 1, 2, 2)}, [1, 1, 4, 4])


def case_shape_of_data_view():  # x.view(x.size(0), -1) as exporters write it
    return model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Shape", ["r"], ["s"]),
                  helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
                  helper.make_node("Unsqueeze", ["n", "a0"], ["n1"]),
                  helper.make_node("Concat", ["n1", "m1"], ["shp"], axis=0),
                  helper.make_node("Reshape", ["r", "shp"], ["f"]),
                  helper.make_node("Gemm", ["f", "G", "GB"], ["y"], transB=1)],
                 {"i0": np.array(0), "a0": np.array([0]), "m1": np.array([-1]), "G": w(2, 6), "GB": w(2)},
                 [1, 2, 3])


def case_matmul_over_feature_maps():  # tf2onnx: a 1x1 convolution as MatMul on NHWC data
    return model([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
                  helper.make_node("MatMul", ["t", "M"], ["m"]), helper.make_node("Relu", ["m"], ["r"]),
                  helper.make_node("MatMul", ["L", "r"], ["y"])],
                 {"M": w(3, 4), "L": w(2, 5)}, [1, 3, 6, 5])


def case_gather_slice_reduce():  # tf2onnx-style: slices, a gather, GlobalAveragePooling as ReduceMean
    return model([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
                  helper.make_node("Slice", ["t", "st", "en", "ax", "sp"], ["s"]),
                  helper.make_node("Relu", ["s"], ["r"]),
                  helper.make_node("ReduceMean", ["r"], ["m"], axes=[1, 2], keepdims=0),
                  helper.make_node("Gather", ["t", "gi"], ["g"], axis=3),
                  helper.make_node("ReduceSum", ["g", "rax"], ["gs"], keepdims=1),
                  helper.make_node("Flatten", ["gs"], ["gf"]),
                  helper.make_node("Concat", ["m", "gf"], ["y"], axis=1)],
                 {"st": np.array([-1, 1]), "en": np.array([-2**62, 5]), "ax": np.array([1, 2]),
                  "sp": np.array([-2, 2]), "gi": np.array([[2, -1], [0, 1]]), "rax": np.array([-1, 1])},
                 [1, 3, 5, 6], opset=13)


CASES = {name[5:]: fn for name, fn in globals().items() if name.startswith("case_")}


def check_against_onnxruntime(m, name, points=20, lo=-2.0, hi=2.0):
    net = load_network(m, name=name)
    x = RNG.uniform(lo, hi, (points, net.in_dim)).astype(np.float32).astype(np.float64)
    ref = ort_outputs(m, x)
    ours = net.evaluate(x)
    assert ours.shape == ref.shape, name
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5, err_msg=name)
    exact = [float(v) for v in net.evaluate_exact([Fraction(float(v)) for v in x[0]])]
    np.testing.assert_allclose(exact, ours[0], rtol=1e-12, atol=1e-12, err_msg=name)
    return net


@pytest.mark.parametrize("name", sorted(CASES))
def test_construct_matches_onnxruntime(name):
    check_against_onnxruntime(CASES[name](), name)


def test_piecewise_layers_are_as_small_as_promised():
    # a non-negative skip passes as one unit per value, a signed one as two
    net = load_network(case_residual_add_nonneg_skip())
    assert [layer.out_dim for layer in net.layers] == [2 * 25, 2 * 25 + 2 * 25, 2 * 25]
    net = load_network(case_residual_sub_signed_skip())
    assert net.layers[0].out_dim == 18 * 2  # relu(c0), relu(-c0): c0 = relu(c0) - relu(-c0)
    # a 3x3 max over non-negative values: ceil(log2 9) = 4 levels
    net = load_network(case_max_pool_pads_strides_odd())
    assert len(net.layers) == 1 + 4 + 1  # conv, four max levels, the last combination


def test_average_pool_divisors_are_exact():
    net = load_network(case_average_pool_pads())
    rational = [layer for layer in net.layers if not layer.affine.is_exact_float]
    assert rational  # 1/9, 1/6, 1/4 with the padding excluded: not all floats
    q = rational[-1].affine.rational_weight()
    assert any(v.denominator % 3 == 0 for v in np.ravel(q) if v)


REFUSED = {
    "pad_mode": (lambda: model([helper.make_node("Pad", ["x", "p"], ["y"], mode="mirror", name="pd")],
                               {"p": np.array([0, 1, 0, 1])}, [1, 3]), "pd.*Pad mode 'mirror'"),
    "auto_pad": (lambda: model([conv("x", "y", "W", auto_pad="FULL", name="cv")], {"W": w(1, 1, 2)}, [1, 1, 4]),
                 "cv.*auto_pad 'FULL'"),
    "indices": (lambda: model([helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2], name="mp")],
                              {}, [1, 1, 4]), "mp.*Indices"),
    "avg_ceil": (lambda: model([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2], strides=[2],
                                                 ceil_mode=1, name="ap")], {}, [1, 1, 5]), "ap.*ceil_mode"),
    "same_dilated": (lambda: model([conv("x", "y", "W", auto_pad="SAME_UPPER", dilations=[2], name="cv")],
                                   {"W": w(1, 1, 2)}, [1, 1, 6]), "cv.*SAME_UPPER with dilations"),
    "clip6_min_above_max": (lambda: model([helper.make_node("Clip", ["x"], ["y"], min=0.5, max=-0.5, name="cl")],
                                          {}, [1, 3], opset=6), "cl.*min 0.5 is above max -0.5"),
    "batch": (lambda: model([conv("x", "y", "W", name="cv")], {"W": w(1, 1, 2)}, [2, 1, 4]), "cv.*shape \\(1, C"),
    "mul_data": (lambda: model([helper.make_node("Relu", ["x"], ["r"]),
                                helper.make_node("Mul", ["r", "x"], ["y"], name="sq")], {}, [1, 3]),
                 "sq.*two data tensors"),
    "sigmoid": (lambda: model([helper.make_node("Sigmoid", ["x"], ["y"], name="sg")], {}, [1, 3]),
                "sg.*activation Sigmoid"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_unsupported_is_one_clear_line(name):
    build, pattern = REFUSED[name]
    with pytest.raises(InputError, match=pattern) as err:
        load_network(build())
    assert "\n" not in str(err.value)


def test_width_limit_enforced_before_building_a_conv():
    m = model([conv("x", "y", "W", name="wide")], {"W": w(64, 1, 1, 1)}, [1, 1, 64, 64])
    with pytest.raises(UnsupportedModelError, match="wide.*262,144 values"):
        load_network(m)


@pytest.mark.parametrize("dynamo", [False, True])
def test_torch_exported_cnn(tmp_path, dynamo):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(1, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.c2 = nn.Conv2d(4, 4, 3, padding=1, groups=2)
            self.pool = nn.MaxPool2d(2)
            self.avg = nn.AvgPool2d(2, padding=1, count_include_pad=False)
            self.fc = nn.Linear(4 * 2 * 2, 3)

        def forward(self, x):
            h = torch.relu(self.bn(self.c1(x)))
            h = torch.relu(self.c2(h) + h)
            h = self.avg(self.pool(h))
            return self.fc(h.view(h.size(0), -1))  # the legacy exporter writes Shape of the data

    net = Net().eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "cnn.onnx"
    kwargs = {} if dynamo else {"dynamo": False}
    try:
        torch.onnx.export(net, (torch.zeros(1, 1, 6, 6),), str(path), **kwargs)
    except Exception as exc:  # the dynamo exporter needs onnxscript
        pytest.skip(f"torch.onnx.export (dynamo={dynamo}) is unavailable here: {exc}")
    import onnx

    m = onnx.load(str(path))
    ours = check_against_onnxruntime(m, "torch cnn")
    with torch.no_grad():
        x = torch.rand(3, 1, 6, 6) * 4 - 2
        np.testing.assert_allclose(ours.evaluate(x.reshape(3, -1).double().numpy()), net(x).double().numpy(),
                                   rtol=1e-4, atol=1e-4)


def _fraction_dense(m, q):
    out = np.full(m.shape, Fraction(0), dtype=object)
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    vals = q if q is not None else [Fraction(float(v)) for v in m.data]
    for r, c, v in zip(rows, m.indices, vals):
        out[r, c] = v
    return out


@pytest.mark.parametrize("spread", [0, 30, 80])
def test_exact_product_is_exact(spread):
    # values of magnitudes 2^-spread .. 1: with a wide spread the float64 sums round, and the
    # product must carry the exact rationals; with none it stays float64 (and exact)
    from equivcheck.io.onnx_sparse import csr_from_coo, exact_product

    rng = np.random.default_rng(spread)

    def random_sparse(rows, cols):
        mask = rng.random((rows, cols)) < 0.4
        r, c = np.nonzero(mask)
        v = (rng.normal(size=len(r)).astype(np.float32).astype(np.float64)
             * 2.0 ** -rng.integers(0, spread + 1, len(r)))
        return csr_from_coo(r, c, v, (rows, cols))[0]

    a, b = random_sparse(6, 9), random_sparse(9, 5)
    c, cq = exact_product(a, None, b, None, "test")
    want = _fraction_dense(a, None).dot(_fraction_dense(b, None))
    assert np.all(_fraction_dense(c, cq) == want)
    if spread == 0:
        assert cq is None  # float32 values of one scale: float64 sums are exact
    if spread == 80:
        assert cq is not None
    # with exact rationals on one side (1/3), the product is exact too
    third = np.full(a.nnz, Fraction(1, 3), dtype=object)
    c, cq = exact_product(a, third, b, None, "test")
    assert np.all(_fraction_dense(c, cq) == _fraction_dense(a, third).dot(_fraction_dense(b, None)))


def test_sparse_layers_export_and_reimport_identically(tmp_path):
    from equivcheck.io.onnx_export import export_network

    m = model([conv("x", "c", "W", "B", strides=[1, 1]), helper.make_node("Relu", ["c"], ["r"]),
               helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[3, 3], strides=[3, 3]),
               helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Gemm", ["f", "G", "GB"], ["y"], transB=1)],
              {"W": w(8, 1, 2, 2), "B": w(8), "G": w(3, 8 * 13 * 13), "GB": w(3)}, [1, 1, 40, 40])
    net = load_network(m)
    assert net.layers[0].affine.is_sparse and net.layers[1].affine.is_sparse
    path = tmp_path / "sparse.onnx"
    assert export_network(net, path)  # float32 weights: stored exactly
    again = load_network(path)
    assert len(again.layers) == len(net.layers)
    for a, b in zip(net.layers, again.layers):
        assert a.relu == b.relu and a.affine.same_as(b.affine)
    x = RNG.uniform(-1, 1, (5, net.in_dim)).astype(np.float32).astype(np.float64)
    import onnx

    np.testing.assert_allclose(ort_outputs(onnx.load(str(path)), x), net.evaluate(x), rtol=1e-5, atol=1e-5)
