"""The canonical form on the third-party models of ../shared/models/external (issue 11).

Run:  python benchmarks/canon_external.py [--acas 45] [--copies 3] [--timeout 120]

Prints, per pair, the verdict, the seconds (wall clock, and the CPU time of this process: on a
shared machine the second is the steadier figure) and the reason:

* ACAS Xu: each network of ``acasxu/`` against its twin in ``acasxu_eran/`` (another exporter),
  on the box of ``prop_1``; then each against a rewritten copy of itself (1-4 random rewrites from
  tests/test_canon_rewrites.py, the ones that stay exact on float32 weights), and one pair of two
  different networks (the cost of a form that does not match);
* MNIST 256x2, 256x4, 256x6 against rewritten copies of themselves, on the box of
  ``prop_0_0.03``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parents[1]))  # for tests.test_canon_rewrites

from equivcheck.core.options import ProverOptions  # noqa: E402
from equivcheck.core.spec import Spec  # noqa: E402
from equivcheck.io.domains import parse_domain  # noqa: E402
from equivcheck.io.onnx_import import load_network  # noqa: E402
from equivcheck.solve.prover import prove_networks  # noqa: E402
from tests.test_canon_rewrites import REWRITES, to_network  # noqa: E402

EXT = Path(__file__).resolve().parents[2] / "shared" / "models" / "external"
# the rewrites whose arithmetic stays exact on arbitrary float32 weights (no w @ lo products)
EXACT_KINDS = sorted(set(REWRITES) - {"shifted_input_layer"})


def rewritten(net, seed: int, lo, hi):
    """``net`` after 1-4 random exact rewrites, and their names."""
    rng = np.random.default_rng(seed)
    stack = [(layer.weight.copy(), layer.bias.copy(), layer.relu) for layer in net.layers]
    names = []
    for _ in range(int(rng.integers(1, 5))):
        name = str(rng.choice(EXACT_KINDS))
        stack = REWRITES[name](rng, stack, lo, hi)
        names.append(name)
    return to_network(stack, f"{net.source} rewritten"), names


def run(a, b, domain, timeout: float, label: str) -> float:
    t0, c0 = time.monotonic(), time.process_time()
    res = prove_networks(a, b, Spec(), domain, ProverOptions(timeout=timeout))
    dt, cpu = time.monotonic() - t0, time.process_time() - c0
    print(f"{label:58s} {res.verdict.value:8s} {dt:7.2f} s (cpu {cpu:6.2f} s)  "
          f"{res.reason[:150]}", flush=True)
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--acas", type=int, default=45, help="how many ACAS Xu networks")
    ap.add_argument("--copies", type=int, default=3, help="rewritten copies per MNIST net")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()

    dom = parse_domain(str(EXT / "acasxu" / "prop_1.vnnlib"), 5)
    box = dom.boxes[0]
    lo, hi = box.lower_float(), box.upper_float()
    names = [(i, j) for i in range(1, 6) for j in range(1, 10)][: args.acas]
    for kind in ("eran", "rewritten"):
        times = []
        for i, j in names:
            a = load_network(str(EXT / "acasxu" / f"ACASXU_run2a_{i}_{j}_batch_2000.onnx"))
            if kind == "eran":
                b = load_network(str(EXT / "acasxu_eran" / f"ACASXU_run2a_{i}_{j}_batch_2000.onnx"))
                label = f"acas {i}_{j} vs eran {i}_{j}"
            else:
                b, kinds = rewritten(a, 100 * i + j, lo, hi)
                label = f"acas {i}_{j} vs rewritten ({', '.join(kinds)})"
            times.append(run(a, b, dom, args.timeout, label))
        print(f"== acas vs {kind}: {len(times)} pairs, max {max(times):.2f} s, "
              f"mean {np.mean(times):.2f} s")
    a = load_network(str(EXT / "acasxu" / "ACASXU_run2a_1_1_batch_2000.onnx"))
    c = load_network(str(EXT / "acasxu" / "ACASXU_run2a_1_2_batch_2000.onnx"))
    run(a, c, dom, 10.0, "acas 1_1 vs acas 1_2 (different; 10 s limit)")

    mdom = parse_domain(str(EXT / "mnistfc" / "prop_0_0.03.vnnlib"), 784)
    mbox = mdom.boxes[0]
    for depth in (2, 4, 6):
        net = load_network(str(EXT / "mnistfc" / f"mnist-net_256x{depth}.onnx"))
        for k in range(args.copies):
            b, kinds = rewritten(net, 1000 * depth + k, mbox.lower_float(), mbox.upper_float())
            run(net, b, mdom, args.timeout, f"mnist 256x{depth} vs rewritten ({', '.join(kinds)})")


if __name__ == "__main__":
    main()
