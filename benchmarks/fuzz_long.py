"""Long local fuzz run over the four targets of ``tests/fuzz`` (issue 8), with random seeds.

    python benchmarks/fuzz_long.py --minutes 10
    python benchmarks/fuzz_long.py --minutes 3 --targets cli,vnnlib --seed 7

Round-robin over the targets in batches of ``--batch`` hypothesis examples, each batch with a
fresh seed. Every distinct failure (same target, same first broken promise once numbers and
quoted names are blanked) is printed once, minimised by hypothesis (at most ``--shrink-seconds``
per failure); later occurrences are only counted. At the end: inputs tried per target, each
finding with its count, runs that overstayed ``--timeout`` by more than 1 s, and a summary line.

To fuzz another copy of the package (say an export of ``git archive HEAD equivcheck``), put it
first on the path: ``PYTHONPATH=/tmp/ec_head python benchmarks/fuzz_long.py``. The repository
itself is appended to ``sys.path`` only to import ``tests.fuzz``.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))


def signature(target: str, message: str) -> str:
    """What makes two failures the same finding: target, command and first broken promise."""
    lines = message.splitlines()
    head = lines[0] if lines else ""
    m = re.search(r"equivcheck (\w+)(?: (bound|count))?", head)
    command = " ".join(g for g in (m.groups() if m else ()) if g)
    promises = [ln.strip()[2:] for ln in lines if ln.strip().startswith("- ")]
    specific = [p for p in promises if not p.startswith("exit code")]
    first = (specific or promises or [head])[0]
    first = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", first)
    first = re.sub(r"\[[^\]]*\]", "[…]", first)
    first = re.sub(r"-?\d+(\.\d+)?(e[-+]?\d+)?(/\d+)?", "#", first)
    return f"{target} | {command} | {first[:140]}"


def _flatten(exc: BaseException) -> list[BaseException]:
    if isinstance(getattr(exc, "exceptions", None), (list, tuple)):  # an exception group
        out = []
        for e in exc.exceptions:
            out.extend(_flatten(e))
        return out
    return [exc]


def _body(check, name: str, known: set[str], findings: dict):
    """The test body: run ``check``; a failure already reported is only counted."""

    def body(case):
        try:
            check(case)
        except AssertionError as exc:
            sig = signature(name, str(exc))
            if sig in known:
                findings[sig][0] += 1
                return
            raise

    return body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--targets", default="onnx,vnnlib,json,cli")
    parser.add_argument("--batch", type=int, default=15, help="examples per hypothesis run")
    parser.add_argument("--seed", type=int, default=None, help="seed of the batch seeds")
    parser.add_argument("--shrink-seconds", type=float, default=40.0)
    parser.add_argument("--max-lines", type=int, default=40, help="lines printed per finding")
    args = parser.parse_args(argv)

    import hypothesis.internal.conjecture.engine as engine
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed
    from hypothesis.errors import HypothesisException

    import equivcheck
    from tests.fuzz import targets as T

    engine.MAX_SHRINKING_SECONDS = args.shrink_seconds  # a known bug must not eat the budget
    names = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [n for n in names if n not in T.TARGETS]
    if unknown:
        parser.error(f"unknown targets {unknown}; choose from {sorted(T.TARGETS)}")
    master = random.Random(args.seed)
    print(f"fuzzing equivcheck from {Path(equivcheck.__file__).parent} for {args.minutes:g} min; "
          f"targets {', '.join(names)}; seed {args.seed}", flush=True)
    findings: dict[str, list] = {}  # signature -> [count, message, notes, target]
    start = time.monotonic()
    stop = start + 60.0 * args.minutes
    batches = 0
    while time.monotonic() < stop:
        for name in names:
            if time.monotonic() >= stop:
                break
            strategy, check = T.TARGETS[name]
            known = set(findings)

            body = _body(check, name, known, findings)
            test = settings(max_examples=args.batch, database=None, deadline=None,
                            suppress_health_check=list(HealthCheck),
                            report_multiple_bugs=True)(given(case=strategy)(body))
            batch_seed = master.getrandbits(32)
            test = hseed(batch_seed)(test)
            try:
                test()
            except KeyboardInterrupt:
                stop = 0.0
                break
            except HypothesisException:
                raise  # the harness itself is broken: stop at once
            except Exception as exc:  # a finding (or several): print each new one once
                for e in _flatten(exc):
                    msg = str(e) if isinstance(e, AssertionError) else (
                        f"[{name}] harness/oracle error {type(e).__name__}: {e}")
                    sig = signature(name, msg)
                    notes = [n for n in getattr(e, "__notes__", []) if n.strip()]
                    if sig in findings:
                        findings[sig][0] += 1
                        continue
                    findings[sig] = [1, msg, notes, name]
                    text = (msg + "\n" + "\n".join(notes)).splitlines()
                    print(f"\n=== NEW FINDING {len(findings)} (target {name}, batch seed "
                          f"{batch_seed}) ===", flush=True)
                    print("\n".join(text[: args.max_lines])
                          + (f"\n  ... ({len(text) - args.max_lines} more lines)"
                             if len(text) > args.max_lines else ""), flush=True)
            batches += 1
        counts = ", ".join(f"{n} {T.STATS[n]}" for n in names)
        print(f"[{time.monotonic() - start:6.0f} s] inputs: {counts}; "
              f"distinct findings {len(findings)}", flush=True)

    total = sum(T.STATS[n] for n in names)
    minutes = (time.monotonic() - start) / 60
    print("\n=== inputs tried per target ===")
    for n in names:
        print(f"  {n:8s} {T.STATS[n]:6d}")
    outcomes = sorted(k for k in T.STATS if k.startswith(("exit ", "verdict ")))
    print("  outcomes: " + ", ".join(f"{k} {T.STATS[k]}" for k in outcomes))
    print("\n=== findings (count: signature) ===")
    for sig, (count, _msg, _notes, _t) in sorted(findings.items(), key=lambda kv: -kv[1][0]):
        print(f"  {count:4d}: {sig}")
    late = T.LATE
    print(f"\n=== runs over --timeout + 1 s: {len(late)} ===")
    for cmd, t, secs in sorted(late, key=lambda r: r[2] - r[1], reverse=True)[:10]:
        print(f"  {secs:6.1f} s for --timeout {t:g}: {cmd}")
    print(f"\nfuzz_long: {total} inputs in {minutes:.1f} min "
          f"({', '.join(f'{n} {T.STATS[n]}' for n in names)}); {len(findings)} distinct findings; "
          f"{len(late)} runs over T + 1 s")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
