"""The canonical form's corpus (issue 11), larger than CI runs it.

Run:  python benchmarks/canon_corpus.py [--pairs 1000] [--perturbed 200] [--timeout 30]

Pairs are ``tests.test_canon_rewrites.make_case(seed)``: a random small network and 1-4 random
function-preserving rewrites (13 kinds). Prints, for the rewritten pairs, the verdicts and the
time per pair (median, max); then for the same pairs with one weight perturbed after the
rewrites, the verdicts (REFUTED with a reproducing counterexample, PROVED confirmed by sampling,
or anything else) and the times.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # for tests.test_canon_rewrites

from tests.test_canon_rewrites import make_case, perturbed_case, prove_case, sampled_ok  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--perturbed", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()

    verdicts: Counter[str] = Counter()
    times = []
    for seed in range(args.pairs):
        case = make_case(seed)
        t0 = time.monotonic()
        res = prove_case(case, timeout=args.timeout)
        times.append(time.monotonic() - t0)
        canon = res.reason.startswith(("canonical forms are equal", "the networks have the same"))
        verdicts[f"{res.verdict}{' (canonical)' if canon else ''}"] += 1
        if res.verdict.value != "proved":
            print(f"  seed {seed}: {res.verdict} {case.rewrites} {res.reason}")
    print(f"rewritten pairs: {args.pairs}: {dict(verdicts)}; per pair median "
          f"{statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms")

    outcome: Counter[str] = Counter()
    times = []
    for seed in range(args.perturbed):
        case = perturbed_case(seed)
        t0 = time.monotonic()
        res = prove_case(case, timeout=args.timeout, onnx=True)
        times.append(time.monotonic() - t0)
        v = res.verdict.value
        if v == "refuted":
            key = "refuted, reproduces" if res.counterexample.reproduces else "refuted, not reproduced"
        elif v == "proved":
            key = "proved, sampling agrees" if sampled_ok(case) else "proved, SAMPLING DISAGREES"
        else:
            key = v
        outcome[key] += 1
        if key not in ("refuted, reproduces", "proved, sampling agrees"):
            print(f"  seed {seed}: {key} {case.rewrites} {res.reason}")
    print(f"perturbed pairs: {args.perturbed}: {dict(outcome)}; per pair median "
          f"{statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
