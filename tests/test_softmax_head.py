"""Softmax / LogSoftmax output heads: set aside in argmax and top1 modes (and with ``logits``),
refused with the reason otherwise; onnxruntime re-runs the model without its head."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from equivcheck.core.domain import box_domain
from equivcheck.core.options import ProverOptions
from equivcheck.core.result import Verdict
from equivcheck.core.spec import Spec
from equivcheck.errors import InputError, UnsupportedModelError
from equivcheck.io.models import load_for_check, load_models
from equivcheck.io.onnx_import import load_network
from equivcheck.solve.prover import prove_networks

from .helpers import make_model, ort_outputs

# hidden relu(x0 - x1), relu(x1 - x0); logits (h0 - h1, h1 - h0) = (x0 - x1, x1 - x0):
# class 0 iff x0 >= x1
W1, B1 = np.array([[1.0, -1.0], [-1.0, 1.0]]), np.zeros(2)
W2, B2 = np.array([[1.0, -1.0], [-1.0, 1.0]]), np.zeros(2)


def classifier(head: str | None, bias=(0.0, 0.0), opset: int = 17, axis: int | None = None,
               out_shape=(1, 2), name: str = "probs"):
    """Gemm -> Relu -> Gemm (+ bias) -> optional head, input x [1, 2], output y."""
    last = "y" if head is None else "logits"
    nodes = [helper.make_node("Gemm", ["x", "W1", "B1"], ["g"], transB=1, name="fc1"),
             helper.make_node("Relu", ["g"], ["r"]),
             helper.make_node("Gemm", ["r", "W2", "B2"], [last], transB=1, name="fc2")]
    inits = {"W1": W1, "B1": B1, "W2": W2, "B2": np.asarray(bias)}
    if list(out_shape) != [1, 2]:
        nodes.append(helper.make_node("Reshape", [last, "shape"], ["logits3"]))
        inits["shape"] = np.array(out_shape, dtype=np.int64)
        last = "logits3"
    if head is not None:
        attrs = {} if axis is None else {"axis": axis}
        nodes.append(helper.make_node(head, [last], ["y"], name=name, **attrs))
    return make_model(nodes, inits, [1, 2], list(out_shape), opset=opset)


def test_head_refused_by_default_with_the_reason():
    for head in ("Softmax", "LogSoftmax"):
        with pytest.raises(UnsupportedModelError) as err:
            load_network(classifier(head), name="clf.onnx")
        msg = str(err.value)
        assert "\n" not in msg
        for needle in ("clf.onnx", "'probs'", head, "not piecewise linear", "argmax", "top1", "--logits"):
            assert needle in msg, needle


@pytest.mark.parametrize("head,opset,axis", [("Softmax", 17, None), ("Softmax", 17, 1),
                                             ("LogSoftmax", 17, -1), ("Softmax", 11, None)])
def test_head_set_aside_computes_the_logits(head, opset, axis):
    model = classifier(head, bias=(0.25, -0.5), opset=opset, axis=axis)
    net = load_network(model, head_ok=True)
    assert any(f"the {head} head (node 'probs') was set aside" in n for n in net.notes), net.notes
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (50, 2)).astype(np.float32)
    logits = net.evaluate(x.astype(np.float64))
    probs = np.vstack([ort_outputs(model, p[None, :]).ravel() for p in x])
    assert np.array_equal(np.argmax(logits, axis=1), np.argmax(probs, axis=1))
    z = logits - logits.max(axis=1, keepdims=True)
    expect = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    if head == "LogSoftmax":
        expect = np.log(expect)
    assert np.allclose(probs, expect, atol=1e-5)


def test_a_head_over_several_groups_is_refused():
    # [1, 1, 2] over the last axis is one group: fine; [1, 2, 1] over the last axis: two groups
    load_network(classifier("Softmax", out_shape=(1, 1, 2)), head_ok=True)
    with pytest.raises(UnsupportedModelError, match="2 groups of 1 values"):
        load_network(classifier("Softmax", out_shape=(1, 2, 1), axis=-1), head_ok=True)


def test_softmax_inside_the_network_is_named_as_such():
    nodes = [helper.make_node("Gemm", ["x", "W1", "B1"], ["g"], transB=1),
             helper.make_node("Softmax", ["g"], ["s"], name="mid"),
             helper.make_node("Gemm", ["s", "W2", "B2"], ["y"], transB=1)]
    model = make_model(nodes, {"W1": W1, "B1": B1, "W2": W2, "B2": B2}, [1, 2], [1, 2])
    with pytest.raises(UnsupportedModelError, match="'mid'.*only as the output head"):
        load_network(model, head_ok=True)


def test_loader_follows_the_spec_and_onnxruntime_gets_the_logits():
    model = classifier("Softmax", bias=(0.25, 0.0))
    for spec in (Spec.make("argmax"), Spec.make("top1", confidence="0.9"),
                 Spec.make("epsilon", "0.1", logits=True)):
        got = load_for_check(model, spec, name="clf")
        assert got.head == "Softmax"
        x = np.array([[0.5, -0.25]], dtype=np.float32)
        assert np.allclose(ort_outputs(got.proto, x).ravel(), got.net.evaluate(x.astype(float))[0],
                           atol=1e-6)
    for spec in (Spec.make("strict"), Spec.make("epsilon", "0.1"), None):
        with pytest.raises(InputError, match="--logits"):
            load_for_check(model, spec, name="clf")
    plain = load_for_check(classifier(None), Spec.make("argmax"))
    assert plain.head is None
    assert Spec.make("epsilon", "0.1", logits=True).to_dict()["outputs"].startswith("logits")


def _prove(spec, a, b, box=((-1.0, -1.0), (1.0, 1.0))):
    ma, mb = load_models(a, b, spec)
    opts = ProverOptions(engine=False, timeout=60)
    return prove_networks(ma.net, mb.net, spec, box_domain(*box), opts,
                          onnx_models=(ma.proto, mb.proto))


def test_argmax_with_a_head_against_the_bare_logits_is_proved():
    res = _prove(Spec.make("argmax"), classifier("Softmax"), classifier(None))
    assert res.verdict is Verdict.PROVED, res.reason
    assert any("Softmax head" in n for n in res.notes)


def test_argmax_refutation_reproduces_in_onnxruntime_on_the_logits():
    # b's class 0 needs x0 - x1 >= 1/8 (bias -1/4 on logit 0): they differ on 0 <= x0 - x1 < 1/8
    res = _prove(Spec.make("argmax"), classifier("Softmax"), classifier("LogSoftmax", bias=(-0.25, 0.0)))
    assert res.verdict is Verdict.REFUTED
    x0, x1 = res.counterexample.exact_input
    assert 0 <= x0 - x1 < 0.125
    ort = res.counterexample.onnxruntime
    assert ort is not None and ort.error is None
    assert len(ort.output_a) == 2 and ort.output_a[0] >= ort.output_a[1]  # logits of a: class 0


def test_top1_with_heads_uses_the_logits_softmax():
    # a's confidence on the disagreement 0 <= d < 1/8 (d = x0 - x1) is 1 / (1 + exp(-2d)) < 0.5622
    a, b = classifier("Softmax"), classifier("Softmax", bias=(-0.25, 0.0), name="p2")
    assert _prove(Spec.make("top1", confidence="0.6"), a, b).verdict is Verdict.PROVED
    res = _prove(Spec.make("top1", confidence="0.55"), a, b)
    assert res.verdict is Verdict.REFUTED
    x0, x1 = res.counterexample.exact_input
    assert np.log(0.55 / 0.45) / 2 < x0 - x1 < 0.125


def test_adversarial_heads_are_one_line_input_errors():
    base = [helper.make_node("Gemm", ["x", "W1", "B1"], ["g"], transB=1, name="fc1")]
    inits = {"W1": W1, "B1": B1}
    cases = {
        "out of range": ([helper.make_node("Softmax", ["g"], ["y"], axis=2, name="sm")], "axis 2 out of range"),
        "float axis": ([helper.make_node("Softmax", ["g"], ["y"], axis=1.5, name="sm")], "attribute axis"),
        "twice": ([helper.make_node("Softmax", ["g"], ["s"], name="first"),
                   helper.make_node("Softmax", ["s"], ["y"], name="sm")], "'first'.*only as the output head"),
        "on a constant": ([helper.make_node("Softmax", ["B1"], ["y"], name="sm")], "does not depend on the input"),
    }
    for label, (nodes, needle) in cases.items():
        model = make_model(base + nodes, inits, [1, 2], [1, 2])
        with pytest.raises(InputError, match=needle) as err:
            load_network(model, head_ok=True)
        assert "\n" not in str(err.value), label
