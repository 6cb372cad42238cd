"""Benchmark the audit's certified maximum deviation (the differential engine underneath).

Run:  python benchmarks/audit_engine.py [--only acas|mnist] [--acas-timeout 10] [--mnist-timeout 60]

The two audits of issue 10 (targets on this 2-core machine, one worker):
* ACAS Xu N1,1 vs N1,2 on prop_3's box: certified to within 5% ((upper - lower) / upper) in <= 10 s;
* mnist-net_256x2 vs a copy with the 30% smallest-magnitude weights of each layer zeroed (not
  fine-tuned) on prop_0_0.03's box: within 25% in <= 60 s.

Per audit: the seconds of the library call (``equivcheck.audit.audit``, loading included; wall
and CPU: with several jobs on the two cores the CPU seconds are the comparable figure), the
second at which the total first met the gap (from the progress reports), the certified upper and
witnessed lower bounds, the relative gap, the engine's sub-boxes and the method of the upper
bound. Soundness checks (any failure exits 1): 10,000 random float32 points of the box never
deviate more than the certified bound (the worst checked in exact arithmetic), and the witness
deviates by exactly the lower bound.

BLAS is limited to one thread (set before numpy is imported).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from equivcheck.audit import audit  # noqa: E402
from equivcheck.audit.deviation import exact_deviation  # noqa: E402
from equivcheck.core.network import Affine, Layer, Network  # noqa: E402
from equivcheck.core.progress import Progress  # noqa: E402
from equivcheck.io.domains import parse_domain  # noqa: E402
from equivcheck.io.onnx_import import load_network  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXTERNAL = REPO.parent / "shared" / "models" / "external"


def magnitude_pruned(net: Network, share: float) -> Network:
    """``net`` with the ``share`` smallest-magnitude weights of each layer zeroed."""
    layers = []
    for lay in net.layers:
        w = lay.weight.copy()
        k = int(round(share * w.size))
        w.ravel()[np.argsort(np.abs(w).ravel(), kind="stable")[:k]] = 0.0
        layers.append(Layer(Affine(w, lay.bias.copy()), lay.relu, lay.name))
    return net.with_layers(layers, note=f"{share:.0%} smallest weights per layer zeroed")


def run(name: str, f: Network, g: Network, domain: str, timeout: float, gap: float,
        target_seconds: float) -> bool:
    events: list[tuple[float, Progress]] = []
    t0, c0 = time.monotonic(), time.process_time()
    r = audit(f, g, domain, timeout=timeout, gap=gap, samples=200,
              progress=lambda p: events.append((time.monotonic() - t0, p)))
    seconds, cpu = time.monotonic() - t0, time.process_time() - c0
    d = r.deviation
    rel = float((d.upper - d.lower) / d.upper) if d.upper else 0.0
    met = next((t for t, p in events
                if p.bound is not None and p.bound > 0
                and (p.bound - float(p.detail.split()[1].rstrip(";"))) / p.bound <= gap), None)
    nodes = events[-1][1].done if events else 0
    print(f"{name}: {seconds:.1f} s ({cpu:.1f} s CPU; timeout {timeout:g}), lower {float(d.lower):.6g} <= max <= "
          f"upper {float(d.upper):.6g}, gap {rel:.1%} (target {gap:.0%} in {target_seconds:g} s: "
          f"{'met' if met is not None and met <= target_seconds else 'NOT met'}"
          f"{f', total within the gap at {met:.1f} s' if met is not None else ''}), "
          f"{nodes} engine nodes")
    print(f"  upper bound by: {d.upper_method}")
    for o in r.per_output:
        print(f"  output {o.output}: [{float(o.lower):.6g}, {float(o.upper):.6g}]")
    for note in r.notes:
        print(f"  note: {note}")
    # soundness: random points of the box never beat the certified bound
    ok = True
    rng = np.random.default_rng(2026)
    for box in r.domain.boxes:
        (lo, hi), _ = box.sample_box()
        x = np.clip((lo + rng.random((10_000, len(lo))) * (hi - lo)).astype(np.float32)
                    .astype(np.float64), lo, hi)
        dev = np.max(np.abs(f.evaluate(x) - g.evaluate(x)), axis=1)
        worst = max(exact_deviation(f, g, x[int(np.argmax(dev))]))
        if worst > d.upper or float(dev.max()) > float(d.upper):
            print(f"  UNSOUND: a random point deviates by {float(worst):.6g} > {float(d.upper):.6g}")
            ok = False
        else:
            print(f"  10,000 random points: max deviation {float(worst):.6g} <= certified upper "
                  f"(sampled max / witnessed lower = {float(worst / d.lower) if d.lower else 0:.3f})")
    if d.witness is not None and max(exact_deviation(f, g, d.witness_exact or d.witness)) != d.lower:
        print("  UNSOUND: the witness does not attain the lower bound")
        ok = False
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("acas", "mnist"))
    ap.add_argument("--acas-timeout", type=float, default=10.0)
    ap.add_argument("--mnist-timeout", type=float, default=60.0)
    ap.add_argument("--alpha-steps", type=int, default=None,
                    help="the engine's optimised-slope steps (default: the engine's own)")
    args = ap.parse_args()
    if args.alpha_steps is not None:  # an ablation: the audit's engine calls with other slopes
        import functools

        import equivcheck.audit.refine as refine
        from equivcheck.engine import EngineOptions

        refine.EngineOptions = functools.partial(EngineOptions, alpha_steps=args.alpha_steps)
    ok = True
    if args.only in (None, "acas"):
        acas = EXTERNAL / "acasxu"
        f = load_network(acas / "ACASXU_run2a_1_1_batch_2000.onnx")
        g = load_network(acas / "ACASXU_run2a_1_2_batch_2000.onnx")
        ok &= run("ACAS N1,1 vs N1,2, prop_3", f, g, str(acas / "prop_3.vnnlib"),
                  args.acas_timeout, 0.05, 10.0)
    if args.only in (None, "mnist"):
        mnist = EXTERNAL / "mnistfc"
        f = load_network(mnist / "mnist-net_256x2.onnx")
        g = magnitude_pruned(f, 0.3)
        prop = str(mnist / "prop_0_0.03.vnnlib")
        parse_domain(prop, f.in_dim)  # fail early on a bad file
        ok &= run("MNIST 256x2 vs 30% magnitude-pruned, prop_0", f, g, prop, args.mnist_timeout,
                  0.25, 60.0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
