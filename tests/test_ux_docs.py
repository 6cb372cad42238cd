"""The documents: the API reference builds from the docstrings, offline (docs/build_api.py,
pdoc); the Markdown documents' links resolve; docs/models.md states the limits and the
refusals the code has."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_the_api_reference_builds_from_the_docstrings(tmp_path):
    assert importlib.util.find_spec("pdoc") is not None, "pdoc is in the dev extra"
    out = tmp_path / "api"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "NO_PROXY": "*",
           "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}  # no network
    done = subprocess.run([sys.executable, str(REPO / "docs" / "build_api.py"), str(out)],
                          capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pages written" in done.stdout
    page = (out / "equivcheck" / "core" / "result.html").read_text()
    assert "Verdict" in page and "the weakest of several is" in page  # a docstring, rendered
    index = (out / "equivcheck.html").read_text()
    assert "prove" in index
    for module in ("equivcheck/testing.html", "equivcheck/solve/prover.html",
                   "equivcheck/cli/prove.html", "equivcheck/pytest_plugin.html"):
        assert (out / module).exists(), module


# ---------------------------------------------------------------------------------------------
# the Markdown documents: links resolve, docs/models.md states the limits and refusals the code has

LINK = re.compile(r"\]\(([^)\s]+)\)")


def _documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_relative_links_in_the_documents_resolve():
    broken = []
    for doc in _documents():
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve()
            if not dest.exists():
                broken.append(f"{doc.name}: {target}")
            elif anchor and dest.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", dest.read_text(), re.M)
                if anchor not in {_slug(h) for h in headings}:
                    broken.append(f"{doc.name}: {target} (no such heading)")
    assert not broken, broken
    assert "(docs/models.md)" in (REPO / "README.md").read_text()


def test_models_md_states_the_limits_the_code_enforces():
    from equivcheck.canon.compare import MAX_SPARSE_DENSIFIED
    from equivcheck.core.network import (
        MAX_ABS_WEIGHT,
        MAX_LAYER_ENTRIES,
        MAX_NETWORK_ENTRIES,
        MAX_WIDTH,
    )
    from equivcheck.core.options import ProverOptions
    from equivcheck.io.onnx_affine import DENSE_LAYER_ENTRIES, MAX_EXACT_PRODUCT
    from equivcheck.io.onnx_sparse import MAX_PRODUCT_TERMS
    from equivcheck.solve.search import SPARSE_SOLVER_PARAMS

    text = (REPO / "docs" / "models.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| `MAX_")}
    for name, value in (("MAX_WIDTH", MAX_WIDTH), ("MAX_LAYER_ENTRIES", MAX_LAYER_ENTRIES),
                        ("MAX_NETWORK_ENTRIES", MAX_NETWORK_ENTRIES),
                        ("MAX_PRODUCT_TERMS", MAX_PRODUCT_TERMS),
                        ("MAX_EXACT_PRODUCT", MAX_EXACT_PRODUCT)):
        row = next((line for key, line in rows.items() if key.startswith(f"`{name}`")), "")
        assert f"| {value:,} |" in row, f"docs/models.md: {name} is {value:,} in the code"
    cell = rows[next(k for k in rows if k.startswith("`MAX_ABS_WEIGHT`"))].split("|")[2]
    assert float(cell) == MAX_ABS_WEIGHT, cell
    for value in (MAX_SPARSE_DENSIFIED, SPARSE_SOLVER_PARAMS, DENSE_LAYER_ENTRIES):
        assert f"{value:,}" in text, value
    assert f"more than {ProverOptions().max_split_dim} inputs" in text


def _onnx_with(op: str, tmp_path: Path) -> Path:
    """A one-node graph quantizing its 4 float32 inputs with ``op`` (QuantizeLinear or
    DynamicQuantizeLinear) to uint8, saved in ``tmp_path``."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = []
    inputs = ["x"]
    if op == "QuantizeLinear":
        inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                 numpy_helper.from_array(np.array(0, np.uint8), "z")]
        inputs += ["s", "z"]
    outputs = ["y", "ys", "yz"] if op == "DynamicQuantizeLinear" else ["y"]
    graph = helper.make_graph(
        [helper.make_node(op, inputs, outputs, name="q")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 4])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / f"{op}.onnx"
    onnx.save(model, path)
    return path


REFUSALS = {  # (operator, accepted by prove) -> what the importer says after "node 'q' (op): "
    ("QuantizeLinear", False): "a quantized model (QuantizeLinear): only `prove`, `audit`, "
                               "`compress` and the pytest plugin take quantized models",
}


@pytest.mark.parametrize("op, quantized_ok", list(REFUSALS))
def test_the_refusals_quoted_in_the_documents_are_the_importers(op, quantized_ok, tmp_path):
    from equivcheck.errors import UnsupportedModelError
    from equivcheck.io.onnx_import import load_network

    path = _onnx_with(op, tmp_path)
    with pytest.raises(UnsupportedModelError) as info:
        load_network(path, quantized_ok=quantized_ok)
    message = str(info.value)
    assert message == f"{path}: node 'q' ({op}): {REFUSALS[op, quantized_ok]}"
    quoted = f"({op}): {REFUSALS[op, quantized_ok]}"
    for doc in ("models.md", "walkthrough.md"):
        text = " ".join((REPO / "docs" / doc).read_text().split())  # lines folded as one
        assert quoted in text, doc


