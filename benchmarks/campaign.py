"""Benchmark campaigns (issue 14): the ACAS Xu float16 family on 1 and 2 local workers and on a
2-worker Dask LocalCluster, the per-task overheads, why instances ran slower in Dask workers,
and one hard ACAS Xu and one MNIST check on 1 vs 2 Dask workers.

Run:  python benchmarks/campaign.py [--limit N] [--timeout 30] [--configs 1,2,dask]
          [--slowdown N] [--skip-campaign] [--skip-mnist] [--tiny 100]
          [--acas-hard 3_5,1,0.005] [--acas-hard-timeout 120]
          [--mnist-net 256x4] [--mnist-prop 0] [--mnist-eps 0.0475] [--mnist-copy f16|pruned]
          [--mnist-timeout 150] [--hard-only] [--work DIR]

The family (as benchmarks/engine_acas.py makes it): each of the 45 ACAS Xu nets against its
copy with weights and biases rounded to float16 and back (written as ONNX files to ``--work``),
on the boxes of prop_1..prop_4, epsilon 0.05 (L-inf): 180 instances, one CSV row each.
``--limit N`` runs the first N rows (nets in order, the four props of each). Each configuration
runs the same CSV through ``run_campaign``; printed: wall seconds, verdict counts, the ratio of
wall times (1 worker / the others), and any verdict that differs between two configurations
where both decided (then the script exits 1).

Overheads (what docs/campaigns.md extrapolates to 64 workers from): an instance in a forked
child against in-process (the same instance, the difference per instance), a Dask task's
round trip (one trivial task at a time) and its throughput (many trivial tasks on 2 workers),
the LocalCluster's start. Batching (``--tiny N``): N tiny instances on one 2-worker
LocalCluster, one task per instance against ``run_dask(batch=None)`` (alternated), with 2 local
workers for reference.

The slowdown (``--slowdown N``): N prop_1 instances one at a time in a forked child of this
process and of a Dask worker's, with and without ``campaign.malloc.tune_malloc``: wall, user,
system seconds and minor page faults per instance.

One hard check (``--acas-hard``, then the MNIST one): ``prove_distributed`` with no first slice
on a LocalCluster of 1 and of 2 workers (the farm of ``campaign.farm``), and the one-machine
``prove`` for reference; wall seconds, tasks, parts cut again, nodes, median task overhead,
the workers' CPU seconds. The MNIST default (256x4 vs float16, prop_0, epsilon 0.0475: proved
in about 285 nodes, 20-30 s on one worker) is a ReLU-split search whose open nodes (box and
ReLU phases) are handed back and shared among the workers. ``--hard-only``: only the hard
checks (no campaign, overheads or batching).
BLAS is limited to one thread (set before numpy is imported).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_acas import ACAS, float16_copy, pruned_copy  # noqa: E402

from equivcheck.campaign.instances import read_instances  # noqa: E402
from equivcheck.campaign.runner import run_campaign  # noqa: E402
from equivcheck.io.onnx_export import export_network  # noqa: E402
from equivcheck.io.onnx_import import load_network  # noqa: E402

MNIST = ACAS.parent / "mnistfc"
MNIST_PROPS = {"0": "prop_0_0.03.vnnlib", "1": "prop_1_0.05.vnnlib"}


def write_family(work: Path, timeout: float) -> Path:
    """The f16 copies as ONNX files in ``work`` and the 180-row CSV; returns the CSV."""
    rows = []
    for i in range(1, 6):
        for j in range(1, 10):
            a = ACAS / f"ACASXU_run2a_{i}_{j}_batch_2000.onnx"
            b = work / f"f16_{i}_{j}.onnx"
            if not b.exists():
                export_network(float16_copy(load_network(a)), b)
            for p in range(1, 5):
                rows.append(f"{a},{b},{ACAS / f'prop_{p}.vnnlib'},epsilon,0.05,{timeout:g},prop_{p}")
    csv = work / "acas_f16.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def run(label: str, insts, **kw) -> tuple[float, dict[int, str], dict[int, float]]:
    t0 = time.monotonic()
    res = run_campaign(insts, **kw)
    wall = time.monotonic() - t0
    verdicts = {r["row"]: r["verdict"] for r in res.records}
    seconds = {r["row"]: float(r.get("seconds") or 0) for r in res.records}
    counts = dict(res.summary.counts)
    print(f"  {label:<26s} wall {wall:8.2f} s  proved {counts['proved']:3d}  refuted "
          f"{counts['refuted']:3d}  unknown {counts['unknown']:3d}  error {counts['error']:3d}  "
          f"median {res.summary.median_seconds:.3f} s  max {res.summary.max_seconds:.3f} s",
          flush=True)
    return wall, verdicts, seconds


def overheads(inst) -> None:
    from distributed import Client, LocalCluster

    from equivcheck.campaign.isolate import run_instance, run_isolated

    run_instance(inst)  # warm: imports, onnxruntime
    k = 5
    t0 = time.monotonic()
    for _ in range(k):
        run_instance(inst)
    inproc = (time.monotonic() - t0) / k
    t0 = time.monotonic()
    for _ in range(k):
        run_isolated(inst)
    forked = (time.monotonic() - t0) / k
    print(f"  instance row {inst.row}: in-process {inproc:.3f} s, in a forked child "
          f"{forked:.3f} s (overhead {forked - inproc:+.3f} s per instance)")
    t0 = time.monotonic()
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        start = time.monotonic() - t0
        client.submit(abs, -1, pure=False).result()
        n = 50
        t0 = time.monotonic()
        for _ in range(n):
            client.submit(abs, -1, pure=False).result()
        trip = (time.monotonic() - t0) / n
        m = 500
        t0 = time.monotonic()
        client.gather([client.submit(abs, -k, pure=False) for k in range(m)])
        through = (time.monotonic() - t0) / m
    print(f"  Dask LocalCluster (2 workers): start {start:.2f} s, task round trip "
          f"{1000 * trip:.1f} ms, {m} tasks at once {1000 * through:.2f} ms per task")


def batching(work: Path, n: int) -> None:
    """``n`` tiny instances (the bundled example pair, strict, timeout 2 s) on one 2-worker
    LocalCluster: one task per instance against the default batches, and 2 local workers for
    reference; the wall time per instance (the cluster's start excluded)."""
    from distributed import Client, LocalCluster

    from equivcheck.campaign.cluster import BATCHES_PER_THREAD, run_dask
    from equivcheck.campaign.isolate import run_instance

    models = Path(__file__).resolve().parent.parent / "models"
    csv = work / "tiny.csv"
    csv.write_text("".join(f"{models / 'tiny_original.onnx'},{models / 'tiny_pruned.onnx'},"
                           f"0:1,strict,,2,tiny\n" for _ in range(n)))
    insts = read_instances(csv)
    run_instance(insts[0])  # warm: imports, onnxruntime
    t0 = time.monotonic()
    for inst in insts[:5]:
        run_instance(inst)
    inproc = (time.monotonic() - t0) / 5
    print(f"\n== {n} tiny instances (in-process {inproc:.3f} s each) ==", flush=True)
    t0 = time.monotonic()
    run_campaign(insts, workers=2)
    local = time.monotonic() - t0
    print(f"  2 local workers            wall {local:7.2f} s  {local / n * 2:.3f} s per instance "
          f"per worker", flush=True)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        client.submit(abs, -1, pure=False).result()
        for label, batch in (("one task per instance", 1),
                             (f"batches (auto, <= n/{2 * BATCHES_PER_THREAD})", None),
                             ("one task per instance", 1)):
            got = []
            t0 = time.monotonic()
            run_dask(insts, "unused", 2, got.append, client=client, batch=batch)
            wall = time.monotonic() - t0
            assert len({r["row"] for r in got}) == n
            print(f"  Dask, {label:<26s} wall {wall:7.2f} s  {wall / n * 2:.3f} s per "
                  f"instance per worker", flush=True)


def hard(label: str, a: Path, b: Path, domain: str, eps: str, timeout: float) -> None:
    """One hard check (issue 14, point 3): ``prove`` in one process for reference, then
    ``prove_distributed`` with no first slice on a LocalCluster of 1 and of 2 workers (the
    farm: parts cut again when their slice runs out); wall seconds (the cluster's start
    excluded), verdict, and the farm's figures (tasks, cuts, nodes, median task overhead)."""
    from equivcheck.campaign.cluster import connect
    from equivcheck.campaign.distributed import prove_distributed
    from equivcheck.core.options import ProverOptions
    from equivcheck.solve.prover import prove

    kw = dict(domain=domain, mode="epsilon", tolerance=eps, timeout=timeout)
    print(f"\n== {label}, eps {eps}, timeout {timeout:g} s ==", flush=True)
    t0 = time.monotonic()
    r = prove(a, b, **kw, options=ProverOptions(workers=1))
    print(f"  prove, 1 process           {r.verdict.label:8s} {time.monotonic() - t0:8.2f} s  "
          f"{r.reason}", flush=True)
    walls = {}
    for n in (1, 2):
        with connect("local", n) as client:
            cpu0 = sum(client.run(time.process_time).values())
            t0 = time.monotonic()
            r = prove_distributed(a, b, **kw, client=client, first_seconds=0)
            walls[n] = time.monotonic() - t0
            cpu = sum(client.run(time.process_time).values()) - cpu0
        print(f"  Dask, {n} worker(s)          {r.verdict.label:8s} {walls[n]:8.2f} s  "
              f"(workers' CPU {cpu:.2f} s)  {r.reason} [{r.notes[-1]}]", flush=True)
    print(f"  ratio 1 / 2 Dask workers: {walls[1] / walls[2]:.2f}")


def mnist(args) -> None:
    a = MNIST / f"mnist-net_{args.mnist_net}.onnx"
    b = Path(args.work) / f"mnist_{args.mnist_net}_{args.mnist_copy}.onnx"
    copy = float16_copy if args.mnist_copy == "f16" else (lambda n: pruned_copy(n, 0.1))
    export_network(copy(load_network(a)), b)
    hard(f"MNIST {args.mnist_net} vs {args.mnist_copy}, prop_{args.mnist_prop}", a, b,
         str(MNIST / MNIST_PROPS[args.mnist_prop]), args.mnist_eps, args.mnist_timeout)


def acas_hard(args) -> None:
    net, prop, eps = args.acas_hard.split(",")
    a = ACAS / f"ACASXU_run2a_{net}_batch_2000.onnx"
    b = Path(args.work) / f"f16_{net}.onnx"
    hard(f"ACAS Xu N{net.replace('_', ',')} vs float16, prop_{prop}", a, b,
         str(ACAS / f"prop_{prop}.vnnlib"), eps, args.acas_hard_timeout)


CONFIGS = {"1": ("1 worker", dict(workers=1)), "2": ("2 workers", dict(workers=2)),
           "dask": ("Dask LocalCluster, 2", dict(workers=2, scheduler="local"))}


def campaign(insts, timeout: float, configs: str = "1,2,dask"):
    """The configurations named in ``configs`` (of CONFIGS); (disagreements, the fastest
    instance of the first configuration)."""
    print(f"== ACAS Xu vs float16, eps 0.05: {len(insts)} instances, timeout "
          f"{timeout:g} s ==", flush=True)
    got = {}
    for key in configs.split(","):
        label, kw = CONFIGS[key]
        got[key] = run(label, insts, **kw)
    keys = list(got)
    w1, v1, s1 = got[keys[0]]
    for key in keys[1:]:
        print(f"  ratio {CONFIGS[keys[0]][0]} / {CONFIGS[key][0]}: {w1 / got[key][0]:.2f}")
    print(f"  sum of instance times ({CONFIGS[keys[0]][0]}) {sum(s1.values()):.2f} s, largest "
          f"{max(s1.values()):.2f} s")
    bad = 0
    for key in keys[1:]:
        other = got[key][1]
        for row, v in v1.items():
            if {v, other[row]} == {"proved", "refuted"}:
                print(f"  DISAGREEMENT row {row}: {CONFIGS[keys[0]][0]} {v}, "
                      f"{CONFIGS[key][0]} {other[row]}")
                bad += 1
    return bad, min(insts, key=lambda inst: s1[inst.row])


def _timed_children(insts, tune: bool = True) -> list[tuple]:
    """Each instance in a forked child (``run_isolated``): (row, verdict, wall, user, system
    seconds, minor page faults) of the child; ``tune=False``: without ``tune_malloc`` in the
    child (what every child did before it)."""
    import resource

    from equivcheck.campaign import isolate
    from equivcheck.campaign.malloc import tune_malloc

    isolate.tune_malloc = tune_malloc if tune else (lambda: False)
    isolate.warm()
    out = []
    for inst in insts:
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        rec = isolate.run_isolated(inst)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        out.append((inst.row, rec["verdict"], time.monotonic() - t0, r1.ru_utime - r0.ru_utime,
                    r1.ru_stime - r0.ru_stime, r1.ru_minflt - r0.ru_minflt,
                    os.environ.get("MALLOC_TRIM_THRESHOLD_")))
    return out


def slowdown(insts) -> None:
    """Why instances ran ~2x slower on the LocalCluster (docs/campaigns.md): the same instances
    in a forked child of this process, and of a 1-worker LocalCluster's worker as Dask starts it
    (its nanny sets MALLOC_TRIM_THRESHOLD_=65536) without and with ``tune_malloc``, and of a
    worker started by ``cluster.connect`` (no MALLOC_* setting). Per instance: wall, user and
    system seconds, minor page faults (the child's rusage)."""
    from distributed import Client, LocalCluster

    from equivcheck.campaign.cluster import connect

    print(f"\n== the slowdown in Dask workers: {len(insts)} instances, one at a time ==")
    rows = {"this process' child, no tuning": _timed_children(insts, tune=False),
            "this process' child, tuned": _timed_children(insts)}
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        rows["Dask worker's child, no tuning"] = client.submit(
            _timed_children, insts, False, pure=False).result()
        rows["Dask worker's child, tuned"] = client.submit(
            _timed_children, insts, pure=False).result()
    with connect("local", 1) as client:
        rows["connect('local') worker, no tuning"] = client.submit(
            _timed_children, insts, False, pure=False).result()
    for label, got in rows.items():
        n = len(got)
        wall, user, sys_, flt = (sum(r[k] for r in got) / n for k in (2, 3, 4, 5))
        print(f"  {label:<36s} wall {wall:6.2f} s  user {user:5.2f} s  system {sys_:5.2f} s  "
              f"minor faults {flt:9,.0f}  (MALLOC_TRIM_THRESHOLD_={got[0][6]}; "
              f"{', '.join(r[1] for r in got)})", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=0, help="run the first N instances (0: all 180)")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--work", default=None, help="folder for the float16 copies and the CSV")
    ap.add_argument("--skip-mnist", action="store_true")
    ap.add_argument("--tiny", type=int, default=100,
                    help="tiny instances for the batching figures (0: skip them)")
    ap.add_argument("--skip-campaign", action="store_true", help="overheads and MNIST only")
    ap.add_argument("--configs", default="1,2,dask",
                    help="campaign configurations, comma-separated: 1 (one worker), 2 (two "
                    "local workers), dask (2-worker LocalCluster); the first is the reference")
    ap.add_argument("--slowdown", type=int, default=0, metavar="N",
                    help="time the first N prop_1 instances in this process' and in Dask "
                    "workers' children, with and without tune_malloc (0: skip)")
    ap.add_argument("--hard-only", action="store_true", help="only the hard checks")
    ap.add_argument("--mnist-net", default="256x4")
    ap.add_argument("--mnist-prop", default="0", choices=sorted(MNIST_PROPS))
    ap.add_argument("--mnist-eps", default="0.0475")
    ap.add_argument("--mnist-copy", default="f16", choices=("f16", "pruned"))
    ap.add_argument("--mnist-timeout", type=float, default=150.0)
    ap.add_argument("--acas-hard", default="3_5,1,0.005", metavar="NET,PROP,EPS",
                    help="the hard ACAS Xu check for point 3 (empty: skip)")
    ap.add_argument("--acas-hard-timeout", type=float, default=120.0)
    args = ap.parse_args()
    if not ACAS.exists():
        print(f"no ACAS Xu models at {ACAS}")
        return 0
    args.work = args.work or tempfile.mkdtemp(prefix="equivcheck_campaign_")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    insts = read_instances(write_family(work, args.timeout))
    if args.limit:
        insts = insts[:args.limit]
    bad = 0
    fastest = next(inst for inst in insts if inst.family == "prop_3")
    if args.slowdown:
        slowdown([inst for inst in insts if inst.family == "prop_1"][:args.slowdown])
    if not args.skip_campaign and not args.hard_only:
        bad, fastest = campaign(insts, args.timeout, args.configs)
    if not args.hard_only:
        print("\n== overheads ==")
        overheads(fastest)
    if args.tiny and not args.hard_only:
        batching(work, args.tiny)
    if args.acas_hard:
        acas_hard(args)
    if not args.skip_mnist and MNIST.exists():
        mnist(args)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
