"""Benchmark the engine on several worker processes (equivcheck.engine.parallel) on ACAS Xu.

Run:  python benchmarks/engine_parallel.py [--timeout 30] [--workers 2] [--repeat 1]
          [--parts-per-worker 1]

A few instances the one-process engine takes seconds on (the families of
``benchmarks/engine_acas.py``: each net vs its float16-rounded copy and vs its 5%-pruned copy,
boxes of prop_1/prop_3/prop_4, epsilon L-inf), each run with ``workers=1`` (exactly
``check_box``) and with ``--workers`` processes (``check_box_parallel``). Prints per instance:
verdict, wall seconds and nodes of each, and the ratio of wall times (one / several). Wall times
on a loaded machine say little (the scheduler gives this process group about the same CPU share
however many processes it runs), so each run also gets an estimate on idle cores from CPU times:
one worker, its CPU seconds; several, this process's CPU seconds plus the makespan of the parts'
CPU seconds over the workers, taken in the pool's order (parts that are nodes one worker gave
another, when it went idle, start only then: the estimate is a lower bound). Then the median ratios. The verdicts
must agree wherever both decide (a disagreement is flagged; the script exits 1).

BLAS is limited to one thread (set before numpy is imported), as in the engine's workers.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_acas import ACAS, float16_copy, pruned_copy  # noqa: E402

from equivcheck.core.deadline import Deadline  # noqa: E402
from equivcheck.core.spec import Spec  # noqa: E402
from equivcheck.engine import Outcome, parallel  # noqa: E402
from equivcheck.engine.parallel import check_box_parallel  # noqa: E402
from equivcheck.io.domains import parse_domain  # noqa: E402
from equivcheck.io.onnx_import import load_network  # noqa: E402

# (net, copy, epsilon, prop): instances the one-process engine takes 2-15 s on (2026-12: the
# prop_3/prop_4 and small prop_1 ones it once took seconds on it now decides in under one, where
# processes cannot pay)
CASES = [
    ((2, 7), "float16", "0.05", 1),
    ((3, 5), "float16", "0.05", 1),
    ((5, 9), "float16", "0.05", 1),
    ((2, 3), "pruned", "0.05", 1),
    ((3, 5), "pruned", "0.05", 1),
    ((4, 1), "pruned", "0.05", 1),
    ((5, 9), "pruned", "0.05", 1),
    ((2, 9), "pruned", "0.05", 1),
]
COPIES = {"float16": float16_copy, "pruned": pruned_copy}


def run(f, g, spec, box, timeout: float, workers: int):
    """The result, its wall seconds, and an estimate of its wall seconds on idle cores: this
    process's CPU seconds plus the makespan of the parts' CPU seconds on ``workers`` workers
    taking them in order (as the pool does)."""
    t0, c0 = time.monotonic(), time.process_time()
    res = check_box_parallel(f, g, spec, box, Deadline.start(timeout), workers=workers)
    wall, cpu = time.monotonic() - t0, time.process_time() - c0
    free = [0.0] * workers
    for c in res.extra.get("parallel", {}).get("part_cpu", []):
        free[free.index(min(free))] += c
    return res, wall, cpu + max(free)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per run")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each setting (best time kept)")
    ap.add_argument("--parts-per-worker", type=int, default=parallel.PARTS_PER_WORKER)
    args = ap.parse_args(argv)
    parallel.PARTS_PER_WORKER = args.parts_per_worker
    if not ACAS.exists():
        print(f"ACAS Xu models not found at {ACAS}", file=sys.stderr)
        return 1
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"workers 1 vs {args.workers} ({args.parts_per_worker} part(s) per worker), "
          f"timeout {args.timeout:g} s", flush=True)
    ratios, bad = [], 0
    for (i, j), copy, eps, prop in CASES:
        f = load_network(ACAS / f"ACASXU_run2a_{i}_{j}_batch_2000.onnx")
        g = COPIES[copy](f)
        box = parse_domain(str(ACAS / f"prop_{prop}.vnnlib"), 5).boxes[0]
        spec = Spec.make("epsilon", eps)
        got = {}
        for w in (1, args.workers):
            runs = [run(f, g, spec, box, args.timeout, w) for _ in range(args.repeat)]
            got[w] = min(runs, key=lambda r: r[1])
        (r1, t1, c1), (rn, tn, cn) = got[1], got[args.workers]
        decided = Outcome.UNKNOWN not in (r1.outcome, rn.outcome)
        differ = decided and r1.outcome is not rn.outcome
        bad += differ
        if decided:
            ratios.append((t1 / max(tn, 1e-9), c1 / max(cn, 1e-9)))
        print(f"N{i},{j} {copy:7s} eps {eps:4s} prop_{prop}: 1 worker {r1.outcome.value:8s} "
              f"{t1:6.2f} s {r1.stats.nodes:6d} nodes | {args.workers} workers "
              f"{rn.outcome.value:8s} {tn:6.2f} s {rn.stats.nodes:6d} nodes | ratio {t1 / tn:5.2f}"
              f" | CPU-time estimate {c1:5.2f} s vs {cn:5.2f} s, ratio {c1 / cn:5.2f}"
              + ("  VERDICTS DIFFER" if differ else ""), flush=True)
    if ratios:
        print(f"median ratio (1 worker / {args.workers} workers, decided by both): wall "
              f"{statistics.median(r for r, _ in ratios):.2f}, idle-core estimate "
              f"{statistics.median(c for _, c in ratios):.2f}, over {len(ratios)} instances; "
              f"load average now {os.getloadavg()[0]:.1f}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
