"""equivcheck.testing.assert_equivalent: verdicts, the failure message and its artifacts."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import onnx
import pytest

from equivcheck.core.network import Affine, Layer, Network
from equivcheck.core.options import DEFAULT_TIMEOUT
from equivcheck.core.result import Verdict
from equivcheck.core.spec import Mode
from equivcheck.errors import InputError
from equivcheck.io.onnx_export import export_network, to_onnx
from equivcheck.testing import EquivalenceUnknownError, NotEquivalentError, assert_equivalent

# --------------------------------------------------------------------------------------------
# small hand-made models (all weights dyadic, so exactly representable in float32)

W1 = np.array([[1.0, -0.5], [0.25, 1.0], [-1.0, 0.5], [0.5, 0.5]])
B1 = np.array([0.0, -0.25, 0.5, -0.5])
W2 = np.array([[1.0, -1.0, 0.5, 0.25], [-0.5, 0.75, 1.0, -1.0]])
B2 = np.array([0.125, -0.25])


def net(w1=W1, b1=B1, w2=W2, b2=B2) -> Network:
    return Network(
        (Layer(Affine(np.asarray(w1, float), np.asarray(b1, float)), True, "hidden"),
         Layer(Affine(np.asarray(w2, float), np.asarray(b2, float)), False, "out")),
        input_name="x", input_shape=(1, len(w1[0])), output_name="y",
        output_shape=(1, len(w2)),
    )


def base() -> Network:
    return net()


def rescaled() -> Network:
    """The same function as :func:`base` written differently (hidden units scaled by 2)."""
    return net(W1 * 2, B1 * 2, W2 / 2, B2)


def shifted(delta: float = 0.25) -> Network:
    """:func:`base` with output 1 shifted by ``delta`` everywhere."""
    return net(b2=B2 + np.array([0.0, delta]))


def hard_pair(width: int = 60, depth: int = 3, seed: int = 3) -> tuple[Network, Network]:
    """Two random nets whose weights differ by about 2^-14 relative: they are within
    :data:`HARD_TOLERANCE` of each other on [-1, 1]^5 (200,000 random points: at most 0.106),
    which sampling cannot refute and neither the solver nor the engine decides in seconds (the
    engine, one worker: UNKNOWN after 30 s, bound 0.93; at width 40 it has proved it in 3.5 s
    since its temporaries stay off mmap)."""
    rng = np.random.default_rng(seed)
    dims = [5] + [width] * depth + [3]
    layers_a, layers_b = [], []
    for k in range(len(dims) - 1):
        w = rng.normal(size=(dims[k + 1], dims[k])).astype(np.float32).astype(np.float64)
        b = rng.normal(size=dims[k + 1]).astype(np.float32).astype(np.float64)
        last = k == len(dims) - 2
        wb = (w * (1 + rng.choice([-1, 1], size=w.shape) * 2.0**-14)).astype(np.float32)
        layers_a.append(Layer(Affine(w, b), not last, f"l{k}"))
        layers_b.append(Layer(Affine(wb.astype(np.float64), b), not last, f"l{k}"))
    meta = dict(input_name="x", input_shape=(1, 5), output_name="y", output_shape=(1, 3))
    return Network(tuple(layers_a), **meta), Network(tuple(layers_b), **meta)


HARD_TOLERANCE = 0.5


def wide_net(n_inputs: int = 20, shift: float = 0.0) -> Network:
    rng = np.random.default_rng(7)
    w1 = np.round(rng.normal(size=(6, n_inputs)) * 8) / 8
    w2 = np.round(rng.normal(size=(2, 6)) * 8) / 8
    return net(w1, np.zeros(6), w2, np.array([0.0, shift]))


@pytest.fixture
def models(tmp_path) -> dict[str, Path]:
    """ONNX files of the hand-made models."""
    out = {}
    for name, n in (("base", base()), ("rescaled", rescaled()), ("shifted", shifted())):
        out[name] = tmp_path / f"{name}.onnx"
        assert export_network(n, out[name])
    return out


# --------------------------------------------------------------------------------------------


def test_equivalent_models_pass_and_return_the_proof(models):
    result = assert_equivalent(models["base"], models["rescaled"], domain="-1:1")
    assert result.verdict is Verdict.PROVED
    assert result.spec.mode is Mode.STRICT
    assert result.options.timeout == DEFAULT_TIMEOUT  # the one default, recorded in the result


def test_refuted_message_reads_like_an_assertion(models, tmp_path):
    outdir = tmp_path / "cex"
    with pytest.raises(NotEquivalentError) as info:
        assert_equivalent(models["base"], models["shifted"], domain="-1:1",
                          counterexample_dir=outdir)
    err = info.value
    assert isinstance(err, AssertionError)
    msg = str(err)
    assert msg.startswith("models are NOT equivalent (REFUTED)")
    assert "x    = [" in msg and "a(x) = [" in msg and "b(x) = [" in msg
    assert "max |a(x) - b(x)| = 0.25 at output 1" in msg
    assert "reproduces in onnxruntime: yes" in msg
    # the full input is saved and is a real counterexample
    saved = [p for p in err.files if p.suffix == ".npy"]
    assert len(saved) == 1 and saved[0].parent == outdir
    x = np.load(saved[0])
    assert f"full input saved to {saved[0]}" in msg
    assert np.all(np.abs(x) <= 1)
    q = [Fraction(float(v)) for v in x]
    ya, yb = base().evaluate_exact(q), shifted().evaluate_exact(q)
    assert yb[1] - ya[1] == Fraction(1, 4)
    # the command in the message reproduces the refutation (exit code 1)
    cmd = msg.split("reproduce: ", 1)[1].splitlines()[0]
    assert cmd.startswith("equivcheck prove ") and "--domain -1:1 --mode strict" in cmd
    proc = subprocess.run(
        [sys.executable, "-c", "from equivcheck.cli import main; main()", *cmd.split()[1:]],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "REFUTED" in proc.stdout


def test_epsilon_message_states_the_difference_against_the_tolerance(models):
    with pytest.raises(NotEquivalentError) as info:
        assert_equivalent(models["base"], models["shifted"], domain="-1:1", mode="epsilon",
                          tolerance="0.1")
    msg = str(info.value)
    assert "||a(x) - b(x)||_inf = 0.25 > tolerance 0.1 (exceeds it by 0.15" in msg
    assert "--mode epsilon --tolerance 0.1" in msg
    # the same pair is within a tolerance of 0.25
    ok = assert_equivalent(models["base"], models["shifted"], domain="-1:1", mode="epsilon",
                           tolerance=0.25)
    assert ok.proved


def test_check_options_come_from_one_place(models):
    from equivcheck.core.options import BoundMethod, ProverOptions
    from equivcheck.testing import CheckDefaults

    assert CheckDefaults().prover_options() == ProverOptions()
    opts = CheckDefaults(timeout=5.0).prover_options(bounds="lp", seed=3)
    assert (opts.timeout, opts.bound_method, opts.seed) == (5.0, BoundMethod.LP, 3)
    assert CheckDefaults(timeout=5.0).prover_options(timeout=7.0).timeout == 7.0
    with pytest.raises(InputError, match="bound method"):
        assert_equivalent(models["base"], models["shifted"], domain="-1:1", bounds="magic")
    # the options the check ran with are in the result and in the reproduce command
    with pytest.raises(NotEquivalentError) as info:
        assert_equivalent(models["base"], models["shifted"], domain="-1:1", bounds="symbolic",
                          timeout=30)
    err = info.value
    assert err.result.options.bound_method is BoundMethod.SYMBOLIC
    assert "--bounds symbolic --timeout 30" in str(err)


def test_argmax_message_names_both_classes():
    # b swaps the two outputs: the top-1 class differs wherever the outputs differ
    b = net(w2=W2[::-1], b2=B2[::-1])
    with pytest.raises(NotEquivalentError) as info:
        assert_equivalent(base(), b, domain="-1:1", mode="argmax")
    msg = str(info.value)
    line = next(s for s in msg.splitlines() if "top-1 class" in s)
    ca, cb = int(line.split("a -> ")[1][0]), int(line.split("b -> ")[1][0])
    assert ca != cb
    # in-memory Networks: no original files for onnxruntime, said plainly
    assert "onnxruntime: not run" in msg


def test_large_inputs_are_abbreviated_and_saved_in_full(tmp_path):
    a, b = wide_net(20), wide_net(20, shift=0.5)
    with pytest.raises(NotEquivalentError) as info:
        assert_equivalent(a, b, domain="0:1", counterexample_dir=tmp_path)
    msg = str(info.value)
    x_line = next(s for s in msg.splitlines() if s.strip().startswith("x    ="))
    assert "... (20 values)" in x_line
    saved = next(p for p in info.value.files if p.suffix == ".npy")
    assert np.load(saved).shape == (20,)
    # in-memory models are written next to it, so the reproduce command names real files
    cmd = msg.split("reproduce: ", 1)[1]
    for p in info.value.files:
        if p.suffix == ".onnx":
            assert str(p) in cmd and p.exists()


def test_model_protos_and_box_domains(tmp_path):
    pa, _ = to_onnx(base())
    pb, _ = to_onnx(shifted())
    assert isinstance(pa, onnx.ModelProto)
    assert assert_equivalent(pa, to_onnx(rescaled())[0], domain=([-1, -1], [1, 1])).proved
    with pytest.raises(NotEquivalentError) as info:
        assert_equivalent(pa, pb, domain=([-1, 0], [1, 0.5]), counterexample_dir=tmp_path)
    err = info.value
    domain_file = next(p for p in err.files if p.name.endswith("domain.json"))
    cmd = str(err).split("reproduce: ", 1)[1]
    assert str(domain_file) in cmd
    x = np.load(next(p for p in err.files if p.suffix == ".npy"))
    assert -1 <= x[0] <= 1 and 0 <= x[1] <= 0.5


def test_unknown_fails_by_default_with_advice():
    a, b = hard_pair()
    with pytest.raises(EquivalenceUnknownError) as info:
        assert_equivalent(a, b, domain="-1:1", mode="epsilon", tolerance=HARD_TOLERANCE,
                          timeout=0.5)
    msg = str(info.value)
    assert msg.startswith("equivalence could not be decided (UNKNOWN)")
    assert "raise the timeout" in msg
    assert info.value.result.verdict is Verdict.UNKNOWN


def test_bad_inputs_are_input_errors_not_assertions(models, tmp_path):
    with pytest.raises(InputError, match="no such file"):
        assert_equivalent(tmp_path / "missing.onnx", models["base"])
    with pytest.raises(InputError, match="unknown="):
        assert_equivalent(models["base"], models["base"], unknown="ignore")
    with pytest.raises(InputError, match="cannot check a dict"):
        assert_equivalent({}, models["base"])


def test_torch_modules_are_exported_and_checked():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    x = torch.zeros(1, 3)
    same = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    same.load_state_dict(m.state_dict())
    assert assert_equivalent(m, same, domain="-1:1", example_input=x).proved
    changed = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    changed.load_state_dict(m.state_dict())
    with torch.no_grad():
        changed[2].bias[0] += 0.5
    with pytest.raises(NotEquivalentError) as info:
        assert_equivalent(m, changed, domain="-1:1", example_input=x, mode="epsilon",
                          tolerance=0.1)
    msg = str(info.value)
    assert "reproduces in onnxruntime: yes" in msg
    # the exported files outlive the check: the reproduce command names files that exist
    saved = [p for p in info.value.files if p.suffix == ".onnx"]
    assert len(saved) == 2 and all(p.exists() for p in saved)
    cmd = msg.split("reproduce: ", 1)[1]
    assert all(str(p) in cmd for p in saved)
    assert f"a: {saved[0]}" in msg
    # no example_input: the shape comes from the module's first nn.Linear, or is asked for
    assert_equivalent(m, same, domain="0:1")
    with pytest.raises(InputError, match="cannot tell its input shape"):
        assert_equivalent(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 2)), same)
