"""Benchmark the differential branch-and-bound engine (equivcheck.engine) on ACAS Xu.

Run:  python benchmarks/engine_acas.py [--nets all|some] [--timeout 10] [--prove 4]
          [--families f16,pruned] [--ablation] [--props 1,3] [--eps 0.05]
          [--alpha-steps 0] [--max-nodes 1000 --timeout 120]

``--max-nodes`` with a long ``--timeout`` gives every instance the same node budget whatever
the machine's load (compare settings by decided counts and CPU seconds, both printed).

Families (issue 10's benchmarks):
* every ACAS Xu net vs its float16-rounded copy (weights and biases rounded to float16 and back),
  the boxes of prop_1..prop_4, epsilon 0.05 and 0.01 (L-inf);
* every net vs a copy with the 5% smallest-magnitude weights of each layer zeroed (not
  fine-tuned), the same boxes, epsilon 0.05 and 0.5.
prop_1 and prop_2 share their input box: the instance is run once and counted for both.

Per family: decided/total, median and max seconds of the library call (``check_box``, model
preparation included), nodes (boxes bounded). Every PROVED instance is checked at 10,000 random
points (no violation allowed). ``--prove N`` runs today's ``equivcheck.prove`` (timeout 30 s) on N
instances of each family and prints the time ratio. ``--ablation`` compares bound settings on a
few prop_1 instances (what the engine's defaults were chosen from).

One worker, BLAS limited to one thread (set before numpy is imported): on this 2-core machine
OpenBLAS threads made the small matrix products 20-50x slower under load.
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
from equivcheck.core.network import Affine, Layer, Network  # noqa: E402
from equivcheck.core.spec import Spec  # noqa: E402
from equivcheck.engine import EngineOptions, Outcome, check_box  # noqa: E402
from equivcheck.io.domains import parse_domain  # noqa: E402
from equivcheck.io.onnx_import import load_network  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ACAS = REPO.parent / "shared" / "models" / "external" / "acasxu"
SOME = [(1, 1), (1, 9), (2, 3), (2, 7), (3, 5), (3, 8), (4, 2), (4, 7), (5, 4), (5, 9)]


def float16_copy(net: Network) -> Network:
    layers = [Layer(Affine(lay.weight.astype(np.float16).astype(np.float64),
                           lay.bias.astype(np.float16).astype(np.float64)), lay.relu, lay.name)
              for lay in net.layers]
    return net.with_layers(layers, note="weights and biases rounded to float16")


def pruned_copy(net: Network, share: float = 0.05) -> Network:
    layers = []
    for lay in net.layers:
        w = lay.weight.copy()
        k = int(round(share * w.size))
        if k:
            w.ravel()[np.argsort(np.abs(w).ravel(), kind="stable")[:k]] = 0.0
        layers.append(Layer(Affine(w, lay.bias.copy()), lay.relu, lay.name))
    return net.with_layers(layers, note=f"{share:.0%} smallest weights zeroed")


def sampled_violation(f, g, spec, box, rng, count=10_000) -> bool:
    (lo, hi), _ = box.sample_box()
    x = lo + rng.random((count, len(lo))) * (hi - lo)
    d = np.abs(f.evaluate(x) - g.evaluate(x))
    norm = d.max(axis=1) if spec.norm.value == "linf" else d.sum(axis=1)
    return bool(np.any(norm > float(spec.tolerance)))


def run_family(name, make_copy, epsilons, nets, timeout, rng, options=EngineOptions(),
               props=(1, 2, 3, 4)):
    rows = []
    for i, j in nets:
        f = load_network(ACAS / f"ACASXU_run2a_{i}_{j}_batch_2000.onnx")
        g = make_copy(f)
        for eps in epsilons:
            spec = Spec.make("epsilon", eps)
            seen: dict = {}
            for p in props:
                box = parse_domain(str(ACAS / f"prop_{p}.vnnlib"), 5).boxes[0]
                key = (box.lower, box.upper)
                if key in seen:  # prop_2's box is prop_1's: same instance
                    rows.append(dict(seen[key], prop=p))
                    continue
                t0, c0 = time.monotonic(), time.process_time()
                res = check_box(f, g, spec, box, Deadline.start(timeout), options)
                dt, cpu = time.monotonic() - t0, time.process_time() - c0
                bad = res.outcome is Outcome.PROVED and sampled_violation(f, g, spec, box, rng)
                row = dict(net=(i, j), prop=p, eps=eps, outcome=res.outcome.value, seconds=dt, cpu=cpu,
                           nodes=res.stats.nodes, bound=res.stats.best_bound, unsound=bad)
                seen[key] = row
                rows.append(row)
                print(f"  {name} N{i},{j} prop_{p} eps {eps}: {res.outcome.value:8s} {dt:7.3f} s (cpu {cpu:6.3f}) "
                      f"{res.stats.nodes:7d} nodes  bound {res.stats.best_bound:.4g}"
                      + ("  SAMPLED VIOLATION" if bad else ""), flush=True)
    return rows


def summary(name, rows):
    for eps in sorted({r["eps"] for r in rows}, key=float):
        sub = [r for r in rows if r["eps"] == eps]
        dec = [r for r in sub if r["outcome"] != "unknown"]
        secs = [r["seconds"] for r in sub]
        nodes = [r["nodes"] for r in sub]
        cpus = [r["cpu"] for r in sub]
        print(f"{name:>14s} eps {eps:>5s}: decided {len(dec)}/{len(sub)} "
              f"(proved {sum(r['outcome'] == 'proved' for r in sub)}, refuted "
              f"{sum(r['outcome'] == 'refuted' for r in sub)}), seconds median {statistics.median(secs):.3f} "
              f"max {max(secs):.2f} (cpu median {statistics.median(cpus):.3f}), nodes median {statistics.median(nodes):.0f} max {max(nodes)}, "
              f"unsound {sum(r['unsound'] for r in sub)}")
        for p in (1, 3, 4):
            s = [r["seconds"] for r in sub if r["prop"] == p]
            if not s:
                continue
            c = [r["cpu"] for r in sub if r["prop"] == p]
            d = sum(r["outcome"] != "unknown" for r in sub if r["prop"] == p)
            print(f"{'':>14s}   prop_{p}{'/2' if p == 1 else '  '}: decided {d}/{len(s)}, "
                  f"median {statistics.median(s):.3f} s (cpu {statistics.median(c):.3f}, "
                  f"min {min(c):.3f}, max {max(c):.3f})")


def compare_prove(name, make_copy, cases, timeout=30.0):
    import equivcheck

    print(f"\n{name}: equivcheck.prove (timeout {timeout:g} s) vs the engine")
    for (i, j), p, eps in cases:
        path = ACAS / f"ACASXU_run2a_{i}_{j}_batch_2000.onnx"
        f = load_network(path)
        g = make_copy(f)
        dom = parse_domain(str(ACAS / f"prop_{p}.vnnlib"), 5)
        t0 = time.monotonic()
        res = check_box(f, g, Spec.make("epsilon", eps), dom.boxes[0], Deadline.start(timeout))
        te = time.monotonic() - t0
        t0 = time.monotonic()
        ref = equivcheck.prove(f, g, dom, mode="epsilon", tolerance=eps, timeout=timeout)
        tp = time.monotonic() - t0
        print(f"  N{i},{j} prop_{p} eps {eps}: engine {res.outcome.value} {te:.3f} s, prove "
              f"{ref.verdict.name.lower()} {tp:.2f} s, ratio prove/engine {tp / max(te, 1e-9):.0f}x", flush=True)


def ablation(timeout):
    """The bound settings the defaults were chosen from, on prop_1 float16 (the hard box)."""
    print("\nablation (float16, prop_1, eps 0.05): seconds / nodes per setting")
    settings = {
        "forward only": EngineOptions(refine="none"),
        "forward + output back-subst.": EngineOptions(refine="output"),
        "cascade, look-ahead (default)": EngineOptions(),
        "cascade + hidden differences": EngineOptions(hidden_diff=True),
        "cascade, no inherited bounds": EngineOptions(inherit=False),
        "cascade, coefficient split": EngineOptions(split="coef"),
        "cascade, split widest": EngineOptions(split="width"),
    }
    for i, j in [(1, 1), (2, 3), (3, 5)]:
        f = load_network(ACAS / f"ACASXU_run2a_{i}_{j}_batch_2000.onnx")
        g = float16_copy(f)
        box = parse_domain(str(ACAS / "prop_1.vnnlib"), 5).boxes[0]
        for label, opt in settings.items():
            res = check_box(f, g, Spec.make("epsilon", "0.05"), box, Deadline.start(timeout), opt)
            print(f"  N{i},{j} {label:32s} {res.outcome.value:8s} {res.stats.seconds:7.2f} s "
                  f"{res.stats.nodes:7d} nodes", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", choices=["all", "some"], default="all")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per instance")
    ap.add_argument("--families", default="f16,pruned")
    ap.add_argument("--prove", type=int, default=2, help="instances per family compared with prove")
    ap.add_argument("--ablation", action="store_true")
    ap.add_argument("--props", default="1,2,3,4", help="which properties' boxes")
    ap.add_argument("--eps", default="", help="epsilons (default: the family's two)")
    ap.add_argument("--alpha-steps", type=int, default=EngineOptions().alpha_steps,
                    help="optimised-slope steps (0: plain back-substitution)")
    ap.add_argument("--max-nodes", type=int, default=EngineOptions().max_nodes,
                    help="node budget per instance (with a long --timeout: a budget that does "
                    "not depend on the machine's load)")
    args = ap.parse_args(argv)
    props = tuple(int(p) for p in args.props.split(","))
    options = EngineOptions(alpha_steps=args.alpha_steps, max_nodes=args.max_nodes)
    if not ACAS.exists():
        print(f"ACAS Xu models not found at {ACAS}", file=sys.stderr)
        return 1
    nets = [(i, j) for i in range(1, 6) for j in range(1, 10)] if args.nets == "all" else SOME
    rng = np.random.default_rng(0)
    fams = {"f16": ("float16", float16_copy, ("0.05", "0.01")),
            "pruned": ("5%-pruned", pruned_copy, ("0.05", "0.5"))}
    results = {}
    for key in args.families.split(","):
        name, make, epss = fams[key]
        print(f"\n== {name} ({len(nets)} nets x props 1-4 x eps {', '.join(epss)}) ==", flush=True)
        if args.eps:
            epss = tuple(args.eps.split(","))
        results[name] = (run_family(name, make, epss, nets, args.timeout, rng, options, props), make)
    print("\n== summary (library call, one worker) ==")
    for name, (rows, _) in results.items():
        summary(name, rows)
    if args.prove:
        for name, (rows, make) in results.items():
            picks = [r for r in rows if r["prop"] != 2][:: max(1, len(rows) // (2 * args.prove))][: args.prove]
            compare_prove(name, make, [(r["net"], r["prop"], r["eps"]) for r in picks])
    if args.ablation:
        ablation(args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
