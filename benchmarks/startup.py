"""Start-up: the wall time of short ``equivcheck`` commands, run as a user runs them.

Each command runs ``--runs`` times in a fresh interpreter (the console script's entry point,
``equivcheck.cli:main``); the script prints min / median wall seconds and the median CPU seconds
(user + system) of the child, which the other processes of a busy machine disturb less. Two
references frame the figures: a bare ``python -c pass`` (interpreter and site start-up) and
``import numpy``.

The commands: ``equivcheck --help``; ``prove`` of an ACAS Xu network against itself on
``0:0.1`` (issue 10's small pair); ``prove`` of the same network against its float16-rounded
copy within epsilon 0.05 (the engine runs); ``prove`` of VNN-COMP's tiny test network against
itself. Compiled bytecode is cached in a temporary folder (``PYTHONPYCACHEPREFIX``; one warm-up
run first), as an installed package has it; ``--no-bytecode`` runs without it.

    python benchmarks/startup.py [--runs 10] [--importtime] [--no-bytecode]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
EXTERNAL = ROOT.parent / "shared" / "models" / "external"
ACAS = EXTERNAL / "acasxu" / "ACASXU_run2a_1_1_batch_2000.onnx"
TINY = EXTERNAL / "vnncomp_test" / "test_small.onnx"
ENTRY = "from equivcheck.cli import main; main()"


def float16_copy(src: Path, dst: Path) -> Path:
    """``src`` with every float initializer rounded to float16 (stored as float32 again)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32:
            init.CopyFrom(numpy_helper.from_array(arr.astype(np.float16).astype(np.float32), init.name))
    onnx.save(model, str(dst))
    return dst


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(wall seconds, child CPU seconds, exit code) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.returncode


def measure(label: str, cmd: list[str], env: dict[str, str], runs: int) -> None:
    timed(cmd, env)  # warm-up: bytecode cache, page cache
    got = [timed(cmd, env) for _ in range(runs)]
    walls = [w for w, _, _ in got]
    codes = sorted({c for _, _, c in got})
    print(f"{label:<44} wall min {min(walls):.3f} s  median {statistics.median(walls):.3f} s  "
          f"cpu median {statistics.median(c for _, c, _ in got):.3f} s  exit {codes}", flush=True)


def importtime(cmd: list[str], env: dict[str, str], top: int = 12) -> None:
    """The slowest top-level imports of one run (``python -X importtime``), cumulative us."""
    done = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], env=env, capture_output=True, text=True)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|", 2)
        if cumulative.strip().isdigit() and len(name) - len(name.lstrip()) <= 3:  # top level
            rows.append((int(cumulative), name.strip()))
    for us, name in sorted(rows, reverse=True)[:top]:
        print(f"    {us / 1000:8.1f} ms  {name}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--importtime", action="store_true", help="also list the slowest imports")
    ap.add_argument("--no-bytecode", action="store_true", help="do not cache compiled bytecode")
    args = ap.parse_args(argv)

    env = dict(os.environ)
    cache = tempfile.TemporaryDirectory(prefix="equivcheck-pyc-")
    if args.no_bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = cache.name
    py = sys.executable
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load average {load:.2f}; "
          f"{args.runs} runs each; bytecode {'not cached' if args.no_bytecode else 'cached'}")
    with tempfile.TemporaryDirectory() as tmp:
        f16 = float16_copy(ACAS, Path(tmp) / "acas_1_1_f16.onnx")
        cases = [
            ("python -c pass (reference)", [py, "-c", "pass"]),
            ("python -c 'import numpy' (reference)", [py, "-c", "import numpy"]),
            ("equivcheck --help", [py, "-c", ENTRY, "--help"]),
            ("prove ACAS N1,1 vs itself, 0:0.1", [py, "-c", ENTRY, "prove", str(ACAS), str(ACAS),
                                                 "--domain", "0:0.1"]),
            ("prove ACAS N1,1 vs float16 copy, eps 0.05", [py, "-c", ENTRY, "prove", str(ACAS), str(f16),
                                                          "--domain", "0:0.1", "--mode", "epsilon",
                                                          "--tolerance", "0.05"]),
            ("prove test_small vs itself (json)", [py, "-c", ENTRY, "prove", str(TINY), str(TINY),
                                                  "--domain", "-1:1", "--json"]),
        ]
        for label, cmd in cases:
            measure(label, cmd, env, args.runs)
            if args.importtime and "prove" in label:
                importtime(cmd, env)
    cache.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
