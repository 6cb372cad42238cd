"""Benchmark the differential branch-and-bound engine (equivcheck.engine) on CNNs (issue 12).

Run:  python benchmarks/cnn_engine.py [--nets avgpool,maxpool,cifar,resnet]
          [--specs 0.05,1.0,argmax] [--prune 0.10] [--timeout 60]

Each net of ``../shared/models/external/cnn`` (imported with sparse convolution/pooling layers)
against a copy whose weight tensors (Conv, Gemm and MatMul weights; not biases) have their 10%
smallest-magnitude entries zeroed in the ONNX model (as ``torch.nn.utils.prune.l1_unstructured``
does per tensor), then imported the same way. The box is the net's vnnlib property box. Specs: epsilon 0.05 and
1.0 (L-inf) and argmax (same top class).

Per instance: verdict, seconds of the library call (``check_box``, model preparation included),
nodes, the engine's bound; a PROVED instance is checked at 2,000 random points of the box (no
violation allowed), a REFUTED one re-run in onnxruntime on both ONNX models (the violation must
reproduce there). One worker, BLAS limited to one thread (set before numpy is imported).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from equivcheck.core import matrix  # noqa: E402
from equivcheck.core.deadline import Deadline  # noqa: E402
from equivcheck.core.spec import Spec, batch_margin  # noqa: E402
from equivcheck.engine import Outcome, check_box  # noqa: E402
from equivcheck.io.domains import parse_domain  # noqa: E402
from equivcheck.io.onnx_import import load_network  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CNN = REPO.parent / "shared" / "models" / "external" / "cnn"
CIFAR_BOX = "cifar_base_kw-img1598-eps0.0026143790849673205.vnnlib"
NETS = {
    "avgpool": ("Convnet_avgpool.onnx", "avgpool_prop_0_0.02.vnnlib"),
    "maxpool": ("Convnet_maxpool.onnx", "maxpool_prop_0_0.004.vnnlib"),
    "cifar": ("cifar_base_kw.onnx", CIFAR_BOX),
    "resnet": ("resnet_2b.onnx", "resnet_2b_prop_0_eps_0.008.vnnlib"),
}
WEIGHT_OPS = {"Conv": 1, "Gemm": 1, "MatMul": 1}  # op -> index of its weight input


def pruned_model(path: Path, fraction: float):
    """The ONNX model with the ``fraction`` smallest-magnitude entries of every weight tensor
    (input 1 of Conv, Gemm, MatMul when it is an initializer) set to 0."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    names = {node.input[WEIGHT_OPS[node.op_type]] for node in model.graph.node
             if node.op_type in WEIGHT_OPS and len(node.input) > WEIGHT_OPS[node.op_type]}
    for name in sorted(names & set(inits)):
        arr = numpy_helper.to_array(inits[name]).copy()
        flat = np.abs(arr).ravel()
        k = int(fraction * flat.size)
        if k == 0:
            continue
        cut = np.partition(flat, k - 1)[k - 1]
        arr[np.abs(arr) <= cut] = 0
        inits[name].CopyFrom(numpy_helper.from_array(arr, name))
    return model


def ort_runner(model):
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    return lambda x: sess.run(None, {inp.name: np.asarray(x, np.float32).reshape(shape)})[0].ravel()


def sampled_violation(f, g, spec, box, rng, count=2000) -> bool:
    (lo, hi), _ = box.sample_box()
    bad = False
    for s in range(0, count, 250):
        x = lo + rng.random((min(250, count - s), len(lo))) * (hi - lo)
        bad |= bool(np.any(batch_margin(spec, f.evaluate(x), g.evaluate(x)) > 0))
    return bad


def run(nets, specs, fraction, timeout):
    import onnx

    rng = np.random.default_rng(0)
    rows = []
    for key in nets:
        onnx_name, prop = NETS[key]
        path = CNN / onnx_name
        t0 = time.monotonic()
        f = load_network(path)
        pruned = pruned_model(path, fraction)
        g = load_network(pruned, name=f"{onnx_name} pruned {fraction:.0%}")
        box = parse_domain(str(CNN / prop), f.in_dim).boxes[0]
        load = time.monotonic() - t0
        stored = sum(matrix.stored_entries(lay.weight) for lay in f.layers)
        print(f"{key}: {f.description}, {stored:,} stored weights "
              f"({sum(lay.affine.is_sparse for lay in f.layers)} sparse layers), loaded in {load:.1f} s")
        runs = None
        for text in specs:
            spec = Spec.make("argmax") if text == "argmax" else Spec.make("epsilon", text)
            t0 = time.monotonic()
            res = check_box(f, g, spec, box, Deadline.start(timeout))
            dt = time.monotonic() - t0
            check = ""
            if res.outcome is Outcome.PROVED:
                check = "VIOLATED AT A SAMPLE" if sampled_violation(f, g, spec, box, rng) else "samples ok"
            elif res.outcome is Outcome.REFUTED:
                if runs is None:
                    runs = ort_runner(onnx.load(str(path))), ort_runner(pruned)
                ya, yb = runs[0](res.point), runs[1](res.point)
                margin = float(batch_margin(spec, ya[None].astype(np.float64), yb[None].astype(np.float64))[0])
                check = f"onnxruntime margin {margin:.3g} ({'reproduces' if margin > 0 or (text == 'argmax' and margin >= 0) else 'DOES NOT REPRODUCE'})"
            rows.append(dict(net=key, spec=text, outcome=res.outcome.value, seconds=dt,
                             nodes=res.stats.nodes, bound=res.stats.best_bound, check=check,
                             reason=res.reason))
            print(f"  {key:8s} {text:>6s}: {res.outcome.value:8s} {dt:7.2f} s {res.stats.nodes:6d} nodes "
                  f"bound {res.stats.best_bound:.4g}  {check}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", default="avgpool,maxpool,cifar,resnet")
    ap.add_argument("--specs", default="0.05,1.0,argmax")
    ap.add_argument("--prune", type=float, default=0.10)
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    if not CNN.exists():
        raise SystemExit(f"CNN models not found at {CNN}")
    rows = run(args.nets.split(","), args.specs.split(","), args.prune, args.timeout)
    print(f"\n== {args.prune:.0%}-pruned copies, one worker, {args.timeout:g} s limit ==")
    print(f"{'net':8s} {'spec':>6s} {'verdict':8s} {'seconds':>8s} {'nodes':>7s} {'bound':>10s}  check")
    for r in rows:
        print(f"{r['net']:8s} {r['spec']:>6s} {r['outcome']:8s} {r['seconds']:8.2f} {r['nodes']:7d} "
              f"{r['bound']:10.4g}  {r['check']}")
    decided = sum(r["outcome"] != "unknown" for r in rows)
    print(f"decided {decided}/{len(rows)}; peak memory "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB")


if __name__ == "__main__":
    main()
