"""Benchmark the differential branch-and-bound engine (equivcheck.engine) on MNIST.

Run:  python benchmarks/engine_mnist.py [--sizes 256x2,256x4,256x6] [--copies f16,pruned]
          [--specs 0.05,1.0,argmax] [--props 0,1] [--timeout 60]

Families (issue 10's benchmarks): the mnistfc nets 784-256xL-10 vs their float16-rounded copies
(weights and biases rounded to float16 and back) and vs copies with the 10% smallest-magnitude
weights of each layer zeroed (not fine-tuned), on the input boxes of the two mnistfc vnnlib
files (prop_0: L-inf 0.03 around an image, prop_1: 0.05), epsilon 0.05 and 1.0 (L-inf) and
argmax (same top class).

Per family: decided/total, median and max seconds of the library call (``check_box``, model
preparation included), nodes. Every PROVED instance is checked at 10,000 random points of the
box (no violation allowed; argmax: no sampled point where the top classes differ).

One worker, BLAS limited to one thread (set before numpy is imported).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from equivcheck.core.deadline import Deadline  # noqa: E402
from equivcheck.core.spec import Spec  # noqa: E402
from equivcheck.engine import EngineOptions, Outcome, check_box  # noqa: E402
from equivcheck.io.domains import parse_domain  # noqa: E402
from equivcheck.io.onnx_import import load_network  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_acas import float16_copy, pruned_copy  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO.parent / "shared" / "models" / "external" / "mnistfc"
PROPS = {"0": "prop_0_0.03.vnnlib", "1": "prop_1_0.05.vnnlib"}


def make_spec(text: str) -> Spec:
    return Spec.make("argmax") if text == "argmax" else Spec.make("epsilon", text)


def sampled_violation(f, g, spec, box, rng, count=10_000) -> bool:
    (lo, hi), _ = box.sample_box()
    x = lo + rng.random((count, len(lo))) * (hi - lo)
    yf, yg = f.evaluate(x), g.evaluate(x)
    if spec.mode.value == "argmax":
        return bool(np.any(yf.argmax(1) != yg.argmax(1)))
    return bool(np.any(np.abs(yf - yg).max(axis=1) > float(spec.tolerance)))


def run(sizes, copies, specs, props, timeout, options=EngineOptions()):
    rng = np.random.default_rng(0)
    makers = {"f16": float16_copy, "pruned": lambda n: pruned_copy(n, 0.10)}
    rows = []
    for size in sizes:
        f = load_network(MNIST / f"mnist-net_{size}.onnx")
        for copy in copies:
            g = makers[copy](f)
            for p in props:
                box = parse_domain(str(MNIST / PROPS[p]), f.in_dim).boxes[0]
                for text in specs:
                    spec = make_spec(text)
                    t0, c0 = time.monotonic(), time.process_time()
                    res = check_box(f, g, spec, box, Deadline.start(timeout), options)
                    dt, cpu = time.monotonic() - t0, time.process_time() - c0
                    bad = res.outcome is Outcome.PROVED and sampled_violation(f, g, spec, box, rng)
                    rows.append(dict(family=f"{size} vs {copy}", spec=text, prop=p,
                                     outcome=res.outcome.value, seconds=dt, nodes=res.stats.nodes,
                                     unsound=bad))
                    print(f"  {size} vs {copy} prop_{p} {text:>6s}: {res.outcome.value:8s} {dt:7.2f} s (cpu {cpu:6.2f}) "
                          f"{res.stats.nodes:6d} nodes  bound {res.stats.best_bound:.4g}"
                          + ("  SAMPLED VIOLATION" if bad else ""), flush=True)
    return rows


def summary(rows) -> None:
    print("\n== summary (library call, one worker) ==")
    for fam in dict.fromkeys(r["family"] for r in rows):
        for text in dict.fromkeys(r["spec"] for r in rows):
            sub = [r for r in rows if r["family"] == fam and r["spec"] == text]
            if not sub:
                continue
            secs = [r["seconds"] for r in sub]
            dec = sum(r["outcome"] != "unknown" for r in sub)
            print(f"{fam:>16s} {text:>6s}: decided {dec}/{len(sub)} (proved "
                  f"{sum(r['outcome'] == 'proved' for r in sub)}, refuted "
                  f"{sum(r['outcome'] == 'refuted' for r in sub)}), seconds median "
                  f"{statistics.median(secs):.2f} max {max(secs):.2f}, nodes max "
                  f"{max(r['nodes'] for r in sub)}, unsound {sum(r['unsound'] for r in sub)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256x2,256x4,256x6")
    ap.add_argument("--copies", default="f16,pruned")
    ap.add_argument("--specs", default="0.05,1.0,argmax")
    ap.add_argument("--props", default="0,1")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per instance")
    ap.add_argument("--alpha-steps", type=int, default=EngineOptions().alpha_steps,
                    help="optimised-slope steps (0: plain back-substitution)")
    args = ap.parse_args(argv)
    if not MNIST.exists():
        print(f"MNIST models not found at {MNIST}", file=sys.stderr)
        return 1
    rows = run(args.sizes.split(","), args.copies.split(","), args.specs.split(","),
               args.props.split(","), args.timeout, EngineOptions(alpha_steps=args.alpha_steps))
    summary(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
