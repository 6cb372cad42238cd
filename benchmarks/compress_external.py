"""``equivcheck compress`` on the third-party models, checked as a new user would.

For MNIST 256x2 over ``prop_0_0.03.vnnlib`` and every ACAS Xu network over ``prop_1.vnnlib``'s
box: compress (stability analysis + transformations + proof), run original and compressed in
onnxruntime on 10,000 random float32 points of the domain and report the largest difference,
and (``--idempotence``) compress the compressed model again and count what it removes.

Per network: seconds (the library call, wall and CPU; the stability analysis and its stages;
the machine may be shared, CPU seconds and the input splitting's sub-boxes are the steadier
figures), hidden units decided by the stability analysis, folds
kept (and proved: the proof's mode is then epsilon) or dropped, the proof's verdict and how it
was found. Then per family: mean and max seconds, networks with every unit decided, folds kept.

    python benchmarks/compress_external.py [--timeout 40] [--acas-limit 45] [--idempotence K]
        [--no-mnist] [--points N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXTERNAL = ROOT.parent / "shared" / "models" / "external"


def ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    return np.array([sess.run(None, {inp.name: xi.reshape(shape)})[0].ravel() for xi in x])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timeout", type=float, default=40.0)
    ap.add_argument("--acas-limit", type=int, default=45)
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--idempotence", type=int, default=0, metavar="K",
                    help="compress the first K compressed models again and count what is removed")
    ap.add_argument("--no-mnist", action="store_true", help="ACAS Xu only")
    args = ap.parse_args(argv)
    from equivcheck.compress.pipeline import compress
    from equivcheck.io.domains import parse_domain

    if not EXTERNAL.exists():
        print(f"{EXTERNAL} is absent", file=sys.stderr)
        return 1
    jobs = [] if args.no_mnist else [("mnistfc/mnist-net_256x2.onnx", "mnistfc/prop_0_0.03.vnnlib")]
    acas = sorted((EXTERNAL / "acasxu").glob("ACASXU_run2a_*_batch_2000.onnx"))[: args.acas_limit]
    jobs += [(f"acasxu/{p.name}", "acasxu/prop_1.vnnlib") for p in acas]
    tmp = Path(tempfile.mkdtemp(prefix="equivcheck_compress_"))
    print(f"{'model':<34} {'before':>22} {'after':>22} {'units%':>6} {'decided':>9} {'folds':>9} "
          f"{'proof':>8} {'mode':>10} {'secs':>6} {'cpu':>6} {'stab':>5} {'ort max|diff|':>13} {'f64 max|diff|':>13} {'again':>5}",
          flush=True)
    rng = np.random.default_rng(0)
    stats: dict[str, list] = {}
    for model, dom_rel in jobs:
        src, dom_path = EXTERNAL / model, EXTERNAL / dom_rel
        out = tmp / (Path(model).stem + ".small.onnx")
        boxes = {"n": 0}

        def progress(p, boxes=boxes):  # the input splitting's count of sub-boxes bounded
            if p.stage == "stability" and "sub-boxes bounded" in p.detail:
                boxes["n"] = int(p.detail.split()[0])

        t0, c0 = time.perf_counter(), time.process_time()
        res = compress(src, domain=str(dom_path), output=out, timeout=args.timeout, progress=progress)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        dom = parse_domain(str(dom_path), res.original.in_dim)
        box = dom.boxes[0]
        lo, hi = box.float32_box()
        x = (lo + rng.random((args.points, len(lo))) * (hi - lo)).astype(np.float32)
        x = np.clip(x, lo.astype(np.float32), hi.astype(np.float32))
        diff = float(np.max(np.abs(ort_run(src, x) - ort_run(out, x))))
        # float64 on the stored weights (onnxruntime's float32 evaluation adds its own rounding,
        # about 1e-7 x the outputs, when the weights differ)
        diff64 = float(np.max(np.abs(res.original.evaluate(x) - res.compressed.evaluate(x))))
        again = ""
        if jobs.index((model, dom_rel)) < args.idempotence:
            res2 = compress(out, domain=str(dom_path), timeout=args.timeout)
            again = str(sum(r.removed_inactive + r.folded_active for r in res2.table))
        mode = "strict" if res.epsilon is None else f"eps={float(res.epsilon):.2g}"
        verdict = res.proof.verdict.label if res.proof else "-"
        units = res.original.num_relus
        decided = units - len(res.stability.undecided)
        kept = sum(r.folded_active + r.folded_into_next for r in res.table)
        dropped = any("folds were dropped" in n for n in res.notes)
        folds = "dropped" if dropped else (f"{kept} kept" if kept else "-")
        print(f"{model.split('/')[-1][:34]:<34} {res.original.description[:22]:>22} "
              f"{res.compressed.description[:22]:>22} {res.unit_compression:6.1f} "
              f"{decided:4d}/{units:<4d} {folds:>9} {verdict:>8} {mode:>10} {secs:6.1f} {cpu:6.1f} {res.stability.seconds:5.1f} {diff:13.3g} {diff64:13.3g} "
              f"{again:>5}", flush=True)
        family = model.split("/")[0]
        stats.setdefault(family, []).append((secs, decided == units, kept, dropped,
                                             res.proof is not None and res.proof.proved, cpu,
                                             model.split("/")[-1], boxes["n"]))
        stages = " ".join(f"{k} {v:.2f}" for k, v in res.stability.stage_seconds.items())
        print(f"    stability stages (s): {stages}; sub-boxes bounded {boxes['n']}", flush=True)
        for note in res.notes:
            print(f"    note: {note}", flush=True)
    for family, rows in stats.items():
        secs = np.array([r[0] for r in rows])
        print(f"{family}: {len(rows)} nets, seconds mean {secs.mean():.2f} median {np.median(secs):.2f} "
              f"max {secs.max():.2f}; every unit decided on {sum(r[1] for r in rows)}/{len(rows)}; "
              f"folds kept and proved on {sum(1 for r in rows if r[2] and r[4])} nets "
              f"({sum(r[2] for r in rows)} folds), dropped on {sum(r[3] for r in rows)}; "
              f"proved {sum(r[4] for r in rows)}/{len(rows)}; cpu mean {np.mean([r[5] for r in rows]):.2f}")
        print(f"  sub-boxes bounded: total {sum(r[7] for r in rows)}, max {max(r[7] for r in rows)}")
        slow = sorted(rows, key=lambda r: -r[5])[:5]
        print("  slowest (cpu s): " + ", ".join(f"{r[6].replace('ACASXU_run2a_', '')} {r[5]:.1f}"
                                               for r in slow))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
