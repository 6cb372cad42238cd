"""Benchmark `equivcheck prove` on pairs from ../shared/models/external and models/.

Run:  python benchmarks/prove_pairs.py [--timeout 60] [--acas all|some]

Prints, per pair: pair, mode, domain, verdict, wall time, and the ReLUs that interval bounds
found stable (active + inactive, out of all) in each network.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import equivcheck

REPO = Path(__file__).resolve().parents[1]
EXT = REPO.parent / "shared" / "models" / "external"
ACAS_BOX = {"lower": [-0.328422877, -0.5, -0.5, -0.5, -0.5], "upper": [0.679857769, 0.5, 0.5, 0.5, 0.5]}


def acas(i: int, j: int, eran: bool = False) -> Path:
    return EXT / ("acasxu_eran" if eran else "acasxu") / f"ACASXU_run2a_{i}_{j}_batch_2000.onnx"


def perturbed_mnist(tmp: Path) -> Path:
    """mnist-net_256x2 with one weight of a live first-layer unit scaled by 1.5."""
    import onnx
    from onnx import numpy_helper

    from equivcheck.io.onnx_import import load_network

    src = EXT / "mnistfc/mnist-net_256x2.onnx"
    net = load_network(src)
    box = equivcheck.parse_domain(str(EXT / "mnistfc/prop_0_0.03.vnnlib"), 784).boxes[0]
    lo, hi = box.lower_float(), box.upper_float()
    x = lo + np.random.default_rng(0).random((2000, 784)) * (hi - lo)
    unit = int(np.argmax(net.pre_activations(x)[0].mean(axis=0)))
    model = onnx.load(str(src))
    init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    w = numpy_helper.to_array(init).copy()
    w[unit, int(np.argmax(np.abs(w[unit]) * (hi - lo)))] *= 1.5
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    out = tmp / "mnist-256x2-perturbed.onnx"
    onnx.save(model, out)
    return out


def pairs(tmp: Path, acas_all: bool):
    box = tmp / "acas_box.json"
    box.write_text(json.dumps(ACAS_BOX))
    p3 = str(EXT / "acasxu/prop_3.vnnlib")
    mn = str(EXT / "mnistfc/prop_0_0.03.vnnlib")
    m = REPO / "models"
    yield "tiny vs nano", EXT / "vnncomp_test/test_tiny.onnx", EXT / "vnncomp_test/test_nano.onnx", "-1:0", {}
    yield "tiny vs nano", EXT / "vnncomp_test/test_tiny.onnx", EXT / "vnncomp_test/test_nano.onnx", "-1:1", {}
    yield "models: original vs pruned", m / "tiny_original.onnx", m / "tiny_pruned.onnx", "0:1", {}
    yield "models: original vs perturbed", m / "tiny_original.onnx", m / "tiny_perturbed.onnx", "0:1", {}
    which = [(i, j) for i in range(1, 6) for j in range(1, 10)] if acas_all else [(1, 1), (2, 5), (5, 9)]
    for i, j in which:
        yield f"ACAS {i}_{j} vs ERAN export", acas(i, j), acas(i, j, eran=True), str(box), {}
    yield "ACAS 1_1 vs 1_2", acas(1, 1), acas(1, 2), p3, {"mode": "epsilon", "tolerance": "0.05"}
    yield "ACAS 1_6 vs 1_7", acas(1, 6), acas(1, 7), p3, {}
    yield "ACAS 1_1 vs 1_1 (ERAN)", acas(1, 1), acas(1, 1, eran=True), p3, {"mode": "argmax"}
    yield "MNIST 256x2 vs 256x4", EXT / "mnistfc/mnist-net_256x2.onnx", EXT / "mnistfc/mnist-net_256x4.onnx", mn, {"mode": "argmax"}
    yield "MNIST 256x2 vs perturbed", EXT / "mnistfc/mnist-net_256x2.onnx", perturbed_mnist(tmp), mn, {}


def stable(result, net: str) -> str:
    rows = [
        s for b in result.boxes[:1] for s in b.stability if s.network == net
    ]
    total = sum(s.width for s in rows)
    st = sum(s.active + s.inactive for s in rows)
    return f"{st}/{total}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--acas", choices=["all", "some"], default="all")
    args = ap.parse_args()
    if not EXT.exists():
        print(f"../shared/models/external not found at {EXT}", file=sys.stderr)
        return 1
    header = f"{'pair':34} {'mode':16} {'domain':24} {'verdict':8} {'time s':>8} {'stable a':>9} {'stable b':>9}"
    print(header)
    print("-" * len(header))
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as t:
        for name, a, b, dom, kw in pairs(Path(t), args.acas == "all"):
            t0 = time.perf_counter()
            r = equivcheck.prove(a, b, domain=dom, timeout=args.timeout, **kw)
            dt = time.perf_counter() - t0
            mode = kw.get("mode", "strict") + (f" {kw['tolerance']}" if "tolerance" in kw else "")
            dom_name = Path(dom).name if dom.endswith((".json", ".vnnlib")) else dom
            repro = ""
            if r.counterexample is not None:
                repro = " (reproduces)" if r.counterexample.reproduces else " (NOT in float)"
            counts[r.verdict.label] = counts.get(r.verdict.label, 0) + 1
            print(f"{name:34} {mode:16} {dom_name:24} {r.verdict.label:8} {dt:8.3f} {stable(r, 'a'):>9} {stable(r, 'b'):>9}{repro}")
    print("-" * len(header))
    print("totals: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
