"""Make the small example pair shipped in models/ (run: python models/make_examples.py).

tiny_original.onnx   a 4-12-12-3 ReLU network (fixed seed), some of whose units never fire on [0, 1]^4
tiny_pruned.onnx     the same network with those units removed: equivalent on [0, 1]^4
tiny_perturbed.onnx  tiny_pruned with one output weight (of a unit that fires) changed by 0.01

The units removed are the ones sound interval bounds classify as stably inactive over [0, 1]^4,
so `equivcheck prove tiny_original.onnx tiny_pruned.onnx --domain 0:1` is PROVED.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from equivcheck.bounds.interval import interval_bounds
from equivcheck.core.network import Affine, Layer, Network
from equivcheck.io.onnx_export import export_network

HERE = Path(__file__).resolve().parent


def f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def original() -> Network:
    rng = np.random.default_rng(2020)
    widths = [4, 12, 12, 3]
    layers = []
    for k in range(3):
        w = f32(rng.normal(0, 1 / np.sqrt(widths[k]), (widths[k + 1], widths[k])))
        b = f32(rng.normal(0, 0.2, widths[k + 1]))
        if k < 2:
            b[:3] = f32(-np.abs(w[:3]).sum(axis=1) - 0.5)  # three units per layer that never fire
        layers.append(Layer(Affine(w, b), relu=k < 2, name=f"fc{k}"))
    return Network(tuple(layers), input_name="x", input_shape=(1, 4), output_name="y",
                   output_shape=(1, 3), source="tiny_original")


def prune_inactive(net: Network) -> Network:
    """Remove the hidden units that interval bounds prove never fire on [0, 1]^n."""
    bounds = interval_bounds(net, np.zeros(net.in_dim), np.ones(net.in_dim))
    layers = list(net.layers)
    for k, lb in enumerate(bounds[:-1]):
        keep = np.flatnonzero(lb.upper > 0)
        cur, nxt = layers[k], layers[k + 1]
        layers[k] = Layer(Affine(cur.weight[keep], cur.bias[keep]), cur.relu, cur.name)
        layers[k + 1] = Layer(Affine(nxt.weight[:, keep], nxt.bias), nxt.relu, nxt.name)
    return net.with_layers(layers)


def main() -> None:
    a = original()
    b = prune_inactive(a)
    w = b.layers[2].weight.copy()
    samples = np.random.default_rng(0).random((2000, b.in_dim))
    live = int(np.argmax((b.pre_activations(samples)[1] > 0).mean(axis=0)))  # fires most often
    w[0, live] = float(np.float32(w[0, live] + 0.01))
    c = b.with_layers([b.layers[0], b.layers[1], Layer(Affine(w, b.layers[2].bias), False, "fc2")])
    for name, n in (("tiny_original", a), ("tiny_pruned", b), ("tiny_perturbed", c)):
        assert export_network(n, HERE / f"{name}.onnx", graph_name=name)
        print(f"wrote models/{name}.onnx ({n.description}, {n.num_parameters} parameters)")


if __name__ == "__main__":
    main()
