"""torch.nn.Module accepted wherever a model is: exported through torch.onnx in memory, and
anything that is not a model, does not export or does not import is an InputError naming it."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from equivcheck.core.result import Verdict
from equivcheck.core.spec import Spec
from equivcheck.errors import InputError, UnsupportedModelError
from equivcheck.io.models import load_for_check, load_models
from equivcheck.io.onnx_import import load_network
from equivcheck.io.torch_export import TorchModel, export_module, guess_input_shape

from .helpers import mlp, ort_outputs

torch = pytest.importorskip("torch")
nn = torch.nn


def small(bias0: float = 0.0) -> nn.Module:
    """Linear(2, 2) -> ReLU -> Linear(2, 2) with hand-set weights: logits (x0 - x1 + bias0,
    x1 - x0), so class 0 iff x0 - x1 >= -bias0 / 2."""
    m = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
        m[0].bias.zero_()
        m[2].weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
        m[2].bias.copy_(torch.tensor([bias0, 0.0]))
    return m


def test_a_module_imports_as_the_function_it_computes():
    m = nn.Sequential(nn.Flatten(), nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    m.train()
    assert guess_input_shape(m) == (1, 3)
    net = load_network(m)
    assert m.training  # the export restores the training mode
    assert net.source == "torch Sequential" and net.in_dim == 3 and net.out_dim == 2
    x = np.random.default_rng(3).uniform(-1, 1, (20, 3)).astype(np.float32)
    with torch.no_grad():
        want = m(torch.from_numpy(x)).numpy()
    assert np.allclose(net.evaluate(x.astype(np.float64)), want, atol=1e-5)


def test_prove_accepts_modules_and_refutes_with_onnxruntime():
    import equivcheck

    assert equivcheck.prove(small(), small(), domain="-1:1").verdict is Verdict.PROVED
    res = equivcheck.prove(small(), small(-0.25), domain="-1:1", mode="argmax")
    assert res.verdict is Verdict.REFUTED
    x0, x1 = res.counterexample.exact_input
    assert 0 <= x0 - x1 < Fraction(1, 8)  # b's class 0 needs x0 - x1 >= 1/8
    assert res.counterexample.onnxruntime is not None and res.counterexample.onnxruntime.error is None


def test_prove_a_module_against_its_onnx_file(tmp_path):
    import equivcheck

    w1 = np.array([[1.0, -1.0], [-1.0, 1.0]])
    onnx_model = mlp([w1, w1], [np.zeros(2), np.zeros(2)])
    assert equivcheck.prove(small(), onnx_model, domain="-1:1").verdict is Verdict.PROVED


def test_not_a_model_is_an_input_error():
    import equivcheck

    for thing in (42, object(), [1, 2]):
        with pytest.raises(InputError, match=f"cannot check a {type(thing).__name__}"):
            equivcheck.prove(thing, small(), domain="-1:1")


def test_a_module_that_does_not_export_is_named():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            raise RuntimeError("no forward today")

    with pytest.raises(InputError, match=r"torch Broken: torch.onnx.export failed.*no forward today"):
        load_network(Broken())
    with pytest.raises(InputError, match=r"torch Sequential: torch.onnx.export failed at input shape \(1, 5\)"):
        load_network(TorchModel(small(), (1, 5)))


def test_a_module_with_unsupported_layers_is_named():
    m = nn.Sequential(nn.Linear(2, 3), nn.Sigmoid(), nn.Linear(3, 2))
    with pytest.raises(UnsupportedModelError, match=r"torch Sequential: node .*Sigmoid"):
        load_network(m)


def test_input_shape_given_guessed_or_taken_from_the_other_model():
    conv = nn.Sequential(nn.Conv2d(1, 1, 2), nn.Flatten())
    assert guess_input_shape(conv) is None
    with pytest.raises(InputError, match="cannot tell its input shape.*TorchModel"):
        load_network(conv)
    with pytest.raises(InputError, match="TorchModel needs a torch.nn.Module"):
        TorchModel("model.onnx", (1, 2))
    with pytest.raises(InputError, match="positive whole sizes"):
        TorchModel(small(), (1, 0))

    class Scale(nn.Module):  # no layer with in_features: no guess
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor([2.0, -1.0, 0.5]))

        def forward(self, x):
            return torch.relu(x * self.w)

    other = mlp([np.eye(3)], [np.zeros(3)], final_relu=True)
    ma, mb = load_models(Scale(), other)
    assert ma.net.input_shape == (1, 3)
    assert np.allclose(ma.net.evaluate(np.array([[1.0, 1.0, 1.0]])), [[2.0, 0.0, 0.5]])
    ma, mb = load_models(Scale(), Scale(), dim=3)  # the domain's dimension, when nothing else
    assert mb.net.in_dim == 3 and ma.net.source == "torch Scale (a)"
    with pytest.raises(InputError, match="cannot tell its input shape"):
        load_models(Scale(), Scale())


def test_a_softmax_module_in_argmax_mode():
    m = nn.Sequential(small(), nn.Softmax(dim=1))
    got = load_for_check(m, Spec.make("argmax"))
    assert got.head == "Softmax"
    x = np.array([[0.5, -0.5]], dtype=np.float32)
    assert np.allclose(ort_outputs(got.proto, x).ravel(), [1.0, -1.0], atol=1e-6)  # the logits
    with pytest.raises(InputError, match="Softmax head"):
        load_for_check(m, Spec.make("epsilon", "0.1"))


def test_compress_and_audit_accept_modules():
    from equivcheck.audit import audit
    from equivcheck.compress import compress

    m = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        m[0].bias.copy_(torch.tensor([0.0, 0.0, -5.0]))  # unit 2 is dead on [0, 1]^2
    res = compress(m, domain="0:1", timeout=60)
    assert res.proof is not None and res.proof.verdict is Verdict.PROVED
    report = audit(m, m, domain="0:1", timeout=60)
    assert report.deviation.upper == 0


def test_export_module_is_an_onnx_model():
    proto = export_module(small())  # (torch shares the equal weight matrices through Identity)
    assert [n.op_type for n in proto.graph.node if n.op_type != "Identity"] == ["Gemm", "Relu", "Gemm"]
    assert [i.name for i in proto.graph.input] == ["input"]


def test_assert_equivalent_a_cnn_module_and_its_onnx_export(tmp_path):
    """The plugin's check on a CNN (Conv, ReLU, MaxPool, Flatten, Linear) and its exported
    file: proved; and a copy with one kernel weight moved is caught in epsilon mode."""
    from equivcheck.testing import assert_equivalent

    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(4 * 3 * 3, 3))
    cnn.eval()
    path = tmp_path / "cnn.onnx"
    x = torch.zeros(1, 1, 14, 14)
    torch.onnx.export(cnn, (x,), str(path), dynamo=False)
    res = assert_equivalent(cnn, str(path), domain="0:1", example_input=x, timeout=60)
    assert res.verdict is Verdict.PROVED
    other = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 3 * 3, 3))
    other.load_state_dict(cnn.state_dict())
    with torch.no_grad():
        other[0].weight[0, 0, 1, 1] += 0.5
    other.eval()
    with pytest.raises(AssertionError, match="counterexample x"):
        assert_equivalent(other, str(path), domain="0:1", mode="epsilon", tolerance=0.01,
                          example_input=x, timeout=60)
