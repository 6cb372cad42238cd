"""Benchmark float models against their int8 copies made by onnxruntime.quantization (issue 12).

Run:  python benchmarks/quantized.py [--nets avgpool,maxpool,cifar,resnet,mnist]
          [--specs 0.05,1.0,argmax] [--format qdq|qoperator|dynamic] [--timeout 60]

Each net of ``../shared/models/external/cnn`` (and the bundled ``models/mnist_2x50_l1.onnx`` on
the box [0, 1] of its first 784 pixels around a digit, as ``mnist``) is quantized statically by
``onnxruntime.quantization.quantize_static`` (QDQ or QOperator format, per-tensor, calibrated on
64 random points of the property box), then ``equivcheck.prove(float, int8, box, ...)`` decides
epsilon 0.05 and 1.0 (L-inf) and argmax. The library call is timed with loading included.
``--format dynamic`` quantizes with ``quantize_dynamic`` instead (int8 weights per tensor, the
activations' scales computed from each input by DynamicQuantizeLinear; no calibration).

A PROVED instance is checked at 2,000 random points of the box in exact arithmetic on the
quantized network's rounding (no violation allowed); a REFUTED one says whether its
counterexample reproduces in onnxruntime running the int8 model. One worker, BLAS on one thread.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from fractions import Fraction  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import equivcheck  # noqa: E402
from equivcheck.core.spec import Spec  # noqa: E402
from equivcheck.errors import InputError  # noqa: E402
from equivcheck.io.domains import parse_domain  # noqa: E402
from equivcheck.io.onnx_import import load_network  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CNN = REPO.parent / "shared" / "models" / "external" / "cnn"
NETS = {
    "avgpool": (CNN / "Convnet_avgpool.onnx", CNN / "avgpool_prop_0_0.02.vnnlib"),
    "maxpool": (CNN / "Convnet_maxpool.onnx", CNN / "maxpool_prop_0_0.004.vnnlib"),
    "cifar": (CNN / "cifar_base_kw.onnx", CNN / "cifar_base_kw-img1598-eps0.0026143790849673205.vnnlib"),
    "resnet": (CNN / "resnet_2b.onnx", CNN / "resnet_2b_prop_0_eps_0.008.vnnlib"),
    "mnist": (REPO / "models" / "mnist_2x50_l1.onnx", None),
}


def quantize(src: Path, box, out: Path, fmt: str) -> Path:
    """``src`` quantized statically (per tensor) into ``out``, calibrated on points of ``box``
    (``fmt`` "dynamic": ``quantize_dynamic``, no calibration)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        quantize_dynamic,
        quantize_static,
    )

    if fmt == "dynamic":
        quantize_dynamic(str(src), str(out))
        return out

    model = onnx.load(str(src))
    inp = model.graph.input[0]
    shape = [d.dim_value if d.dim_value > 0 else 1 for d in inp.type.tensor_type.shape.dim]
    (lo, hi), _ = box.sample_box()
    rng = np.random.default_rng(0)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.data = iter([{inp.name: (lo + rng.random(len(lo)) * (hi - lo)).astype(np.float32).reshape(shape)}
                              for _ in range(64)])

        def get_next(self):
            return next(self.data, None)

    quantize_static(str(src), str(out), Reader(), per_channel=False,
                    quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator)
    return out


def box_of(key: str, path: Path, prop: Path | None, in_dim: int):
    if prop is not None:
        return parse_domain(str(prop), in_dim)
    # mnist: a box of +-0.02 around a fixed random image in [0, 1]
    x = np.random.default_rng(1).random(in_dim).astype(np.float32)
    lo, hi = np.clip(x - 0.02, 0, 1), np.clip(x + 0.02, 0, 1)
    return equivcheck.box_domain([Fraction(float(v)) for v in lo], [Fraction(float(v)) for v in hi])


def sampled_violation(qa, qb, spec, box, rng, count=2000) -> bool:
    """True when a random point violates the spec exactly (checked in exact arithmetic at the
    points the float evaluation ranks worst, and at 20 more)."""
    from equivcheck.core.spec import batch_margin
    from equivcheck.solve.witness import exact_evaluation

    (lo, hi), _ = box.sample_box()
    x = lo + rng.random((count, len(lo))) * (hi - lo)
    margin = batch_margin(spec, qa.evaluate(x), qb.evaluate(x))
    worst = list(np.argsort(-margin)[:20]) + list(range(20))
    return any(exact_evaluation(qa, qb, spec, [Fraction(float(v)) for v in x[i]]).violated for i in worst)


def run(nets, specs, fmt, timeout):
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in nets:
            path, prop = NETS[key]
            f = load_network(path)
            dom = box_of(key, path, prop, f.in_dim)
            t0 = time.monotonic()
            q = quantize(path, dom.boxes[0], Path(tmp) / f"{key}_int8.onnx", fmt)
            made = time.monotonic() - t0
            try:
                g = load_network(q, quantized_ok=True)
            except InputError as err:  # a refusal is a result too (one line, as the CLI says)
                print(f"{key}: the {fmt} copy is refused: {err}", flush=True)
                rows.extend(dict(net=key, spec=text, verdict="refused", seconds=0.0, check="",
                                 reason=str(err)) for text in specs)
                continue
            print(f"{key}: {f.description} vs {g.description}, quantized in {made:.1f} s", flush=True)
            for text in specs:
                mode, tol = ("argmax", None) if text == "argmax" else ("epsilon", text)
                t0 = time.monotonic()
                res = equivcheck.prove(path, q, dom, mode=mode, tolerance=tol, timeout=timeout)
                dt = time.monotonic() - t0
                check = ""
                if res.verdict.name == "PROVED":
                    bad = sampled_violation(f, g, Spec.make(mode, tol), dom.boxes[0], rng)
                    check = "VIOLATED AT A SAMPLE" if bad else "samples ok"
                elif res.verdict.name == "REFUTED":
                    cex = res.counterexample
                    margin = cex.onnxruntime.margin if cex.onnxruntime is not None else float("nan")
                    check = (f"onnxruntime margin {margin:.3g} "
                             f"({'reproduces' if cex.reproduces else 'DOES NOT REPRODUCE'})")
                rows.append(dict(net=key, spec=text, verdict=res.verdict.label, seconds=dt,
                                 check=check, reason=res.reason))
                print(f"  {key:8s} {text:>6s}: {res.verdict.label:8s} {dt:7.2f} s  {check}\n"
                      f"           {res.reason[:160]}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", default="mnist,avgpool,maxpool,cifar,resnet")
    ap.add_argument("--specs", default="0.05,1.0,argmax")
    ap.add_argument("--format", default="qdq", choices=("qdq", "qoperator", "dynamic"))
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    nets = [n for n in args.nets.split(",") if n == "mnist" or CNN.exists()]
    rows = run(nets, args.specs.split(","), args.format, args.timeout)
    print(f"\n== float vs int8 ({args.format}), one worker, {args.timeout:g} s limit ==")
    print(f"{'net':8s} {'spec':>6s} {'verdict':8s} {'seconds':>8s}  check")
    for r in rows:
        print(f"{r['net']:8s} {r['spec']:>6s} {r['verdict']:8s} {r['seconds']:8.2f}  {r['check']}")
    decided = sum(r["verdict"] in ("proved", "refuted") for r in rows)
    print(f"decided {decided}/{len(rows)}; peak memory "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB")


if __name__ == "__main__":
    main()
