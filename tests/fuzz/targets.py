"""The fuzz targets: a strategy of cases and the check of one case, for each of

* ``onnx``    random (and broken) ONNX model pairs through ``prove``;
* ``vnnlib``  random (and mangled) VNN-LIB domains, with strict bounds and unions, through ``prove``;
* ``json``    random (and mangled) JSON domains through ``prove``;
* ``cli``     ``prove`` / ``compress`` / ``audit`` / ``regions`` with random option values and
              output paths (including ones that alias an input).

``check_*`` raises ``AssertionError`` listing every broken promise and the command that broke it.
:data:`STATS` counts the cases run per target, exit codes and verdicts; :data:`LATE` lists the
runs that ended more than 1 s after their ``--timeout`` (reported by the long run, not failed:
the watchdog fails a run only past ``--timeout`` + 8 s, so that a loaded machine cannot).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
from hypothesis import strategies as st

from . import strategies as S
from .cli import Expect, Scratch, check_run, parse_json, run_cli
from .domains import DomainSpec, Interval, mangle_json, mangle_vnnlib
from .nets import render
from .oracle import (
    SpecChoice,
    Truth,
    check_import,
    check_proved,
    check_refuted,
    import_truth,
    recipe_truth,
)

SLACK_INPROCESS = 8.0  # the watchdog kills a run at --timeout + this (a clear overrun, not noise)
SLACK_SUBPROCESS = 15.0  # + interpreter start-up
STATS: Counter = Counter()
LATE: list[tuple[str, float, float]] = []  # (command, timeout, seconds) of runs over T + 1 s
BASE = None  # scratch folders go under this folder (None: the system temp dir)


@dataclass
class _Files:
    """What the case wrote, and the ground truth that goes with it."""

    scratch: Scratch
    truths: dict[str, Truth | None] = field(default_factory=dict)
    expect_bad: list[str] = field(default_factory=list)  # reasons the input must be refused
    valid_paths: dict[str, object] = field(default_factory=dict)  # file -> recipe (import check)
    heavy: bool = False  # a model needs the memory-limited subprocess
    refusable: bool = False  # a model the tool may refuse (exit 4) or check
    must_mention: list[tuple[str, ...]] = field(default_factory=list)  # in the exit-4 line
    float32: bool = False  # a model takes float32 input (onnxruntime rounds the point)


def _write_pair(scratch: Scratch, pair: S.Pair, mutation: S.Mutation | None = None) -> _Files:
    files = _Files(scratch)
    heavy = False
    for which, net, r in (("a", pair.a, pair.ra), ("b", pair.b, pair.rb)):
        mut = mutation if mutation is not None and mutation.which == which else None
        built = render(net, r, mut.kind if mut else None, mut.target if mut else 0,
                       mut.variant if mut else 0)
        name = f"{which}.onnx"
        scratch.write(name, built.data)
        files.float32 |= r.dtype == "float32" and not (mut and mut.kind == "weights_1e200")
        heavy |= built.heavy
        files.refusable |= built.expect == "any"
        if built.expect == "bad":
            files.expect_bad.append(f"model {name}: {mut.kind}")
            files.truths[which] = None
            files.must_mention.append((name,))  # one clear line naming the file
            if mut.kind == "external_outside":
                files.must_mention.append(("external", "outside"))
        elif built.truth == "recipe":
            files.truths[which] = recipe_truth(net, f"recipe {which}")
            if built.expect == "valid":
                files.valid_paths[name] = net
        else:
            files.truths[which] = "import"  # resolved lazily: equivcheck's exact import
    files.heavy = heavy
    return files


def _truth(files: _Files, which: str) -> Truth | None:
    t = files.truths.get(which)
    if t == "import":
        try:
            t = import_truth(files.scratch.path / f"{which}.onnx", f"import {which}")
        except Exception:
            t = None
        files.truths[which] = t
    return t


def _limit(timeout: float, via: str) -> float:
    return timeout + (SLACK_SUBPROCESS if via == "subprocess" else SLACK_INPROCESS)


def _fail(target: str, run, problems: list[str]) -> None:
    if problems:
        raise AssertionError(
            f"[{target}] {run.command()}  (exit {run.code}, {run.seconds:.1f} s, {run.via})\n  - "
            + "\n  - ".join(problems)
            + (f"\n  stderr: {run.stderr.strip()[:600]}" if run.stderr.strip() else ""))


STARTUP_ALLOWANCE = 2.0  # interpreter and import time of a subprocess run


def _note_time(run, timeout: float) -> None:
    """Record a run that ended more than 1 s after its --timeout (subprocess: start-up aside)."""
    allowance = 1.0 + (STARTUP_ALLOWANCE if run.via == "subprocess" else 0.0)
    if run.code is not None and run.seconds > timeout + allowance:
        LATE.append((run.command(), timeout, run.seconds))


def _verdict_problems(run, data: dict | None, dom: DomainSpec, spec: SpecChoice,
                      ta: Truth | None, tb: Truth | None, float32: bool = True,
                      seed: int = 0) -> list[str]:
    """Cross-check a ``prove --json`` verdict against the ground truth."""
    if run.code not in (0, 1, 3) or data is None:
        return []
    verdict = data.get("verdict")
    STATS[f"verdict {verdict}"] += 1
    problems = []
    want = {"proved": 0, "refuted": 1, "unknown": 3}.get(verdict)
    if want != run.code:
        problems.append(f"verdict {verdict!r} with exit code {run.code}")
    if ta is None or tb is None:
        return problems
    if verdict == "refuted":
        problems += check_refuted(data.get("counterexample"), dom, spec, ta, tb, float32)
    elif verdict == "proved":
        problems += check_proved(dom, spec, ta, tb, n=1000, seed=seed)
    return problems


def _prove_and_check(target: str, files: _Files, domain_arg: str | None, dom: DomainSpec,
                     spec: SpecChoice, bounds: str, timeout: float, via: str,
                     domain_bad: list[str], extra_new: frozenset = frozenset()) -> None:
    scratch = files.scratch
    args = ["prove", "a.onnx", "b.onnx"] + (["--domain", domain_arg] if domain_arg else [])
    args += spec.cli_args() + ["--bounds", bounds, "--timeout", f"{timeout:g}", "--json"]
    bad = files.expect_bad + domain_bad
    expect = Expect(codes=frozenset({4}) if bad else frozenset({0, 1, 3, 4}),
                    new_files=extra_new, json=True)
    before = scratch.snapshot()
    run = run_cli(args, scratch.path, _limit(timeout, via), via)
    after = scratch.snapshot()
    STATS[target] += 1
    STATS[f"exit {run.code}"] += 1
    _note_time(run, timeout)
    problems = check_run(run, before, after, expect)
    if bad and run.code in (0, 1, 3):
        problems.append("a verdict on bad input (" + "; ".join(bad) + ")")
    if run.code == 4 and files.expect_bad:
        said = run.stderr.lower()
        for words in files.must_mention:
            if not any(w.lower() in said for w in words):
                problems.append(f"the error line does not mention {' or '.join(words)}: "
                                f"{run.stderr.strip()[:200]}")
    if not bad and run.code == 4 and not dom.is_exotic() and not files.refusable:
        problems.append("valid input refused with exit 4")
    if not bad:
        problems += _verdict_problems(run, parse_json(run), dom, spec, _truth(files, "a"),
                                      _truth(files, "b"), files.float32)
        for name, net in files.valid_paths.items():
            problems += check_import(scratch.path / name, recipe_truth(net, name), dom)
    _fail(target, run, problems)


def _closed(dim: int, lo: str = "0", hi: str = "1") -> DomainSpec:
    return DomainSpec(((Interval(lo, hi),) * dim,))


# ---------------------------------------------------------------------------------------------
# target: ONNX graphs


@dataclass(frozen=True)
class OnnxCase:
    pair: S.Pair
    mutation: S.Mutation | None
    domain: DomainSpec
    spec: SpecChoice
    bounds: str
    timeout: float


@st.composite
def onnx_cases(draw) -> OnnxCase:
    pair = draw(S.pairs())
    return OnnxCase(pair, draw(st.one_of(st.none(), S.mutations)),
                    draw(S.domain_specs(pair.in_dim, uniform=True)), draw(S.spec_choices),
                    draw(S.bound_methods), draw(st.sampled_from((2.0, 3.0))))


def check_onnx(case: OnnxCase, base=None, via: str = "inprocess") -> None:
    with Scratch(base or BASE) as scratch:
        files = _write_pair(scratch, case.pair, case.mutation)
        via = "subprocess" if files.heavy else via
        _prove_and_check("onnx", files, case.domain.interval_text(), case.domain, case.spec,
                         case.bounds, case.timeout, via, [])


# ---------------------------------------------------------------------------------------------
# target: VNN-LIB


@dataclass(frozen=True)
class VnnlibCase:
    pair: S.Pair
    domain: DomainSpec
    mangle: str | None
    flip: int
    use_eq: bool
    outputs: int
    spec: SpecChoice
    bounds: str


@st.composite
def vnnlib_cases(draw) -> VnnlibCase:
    pair = draw(S.pairs())
    dom = draw(S.domain_specs(pair.in_dim, max_boxes=3, strict=True))
    mangle = draw(st.one_of(st.none(), st.none(), S.vnnlib_mangles))
    return VnnlibCase(pair, dom, mangle, draw(st.integers(0, 255)), draw(st.booleans()),
                      draw(st.integers(0, 2)), draw(S.spec_choices), draw(S.bound_methods))


def check_vnnlib(case: VnnlibCase, base=None) -> None:
    with Scratch(base or BASE) as scratch:
        files = _write_pair(scratch, case.pair)
        if case.mangle:
            scratch.write("d.vnnlib", mangle_vnnlib(case.domain, case.mangle))
            bad = [f"VNN-LIB mangled: {case.mangle}"]
        else:
            scratch.write("d.vnnlib", case.domain.vnnlib_text(case.flip, case.use_eq, case.outputs))
            bad = ["VNN-LIB domain is empty"] if case.domain.is_empty() else []
        _prove_and_check("vnnlib", files, "d.vnnlib", case.domain, case.spec, case.bounds, 3.0,
                         "inprocess", bad)


# ---------------------------------------------------------------------------------------------
# target: JSON domains


@dataclass(frozen=True)
class JsonCase:
    pair: S.Pair
    domain: DomainSpec
    mangle: str | None
    scalar: bool
    spec: SpecChoice
    bounds: str


@st.composite
def json_cases(draw) -> JsonCase:
    pair = draw(S.pairs())
    scalar = draw(st.booleans())
    dom = draw(S.domain_specs(pair.in_dim, uniform=scalar))
    mangle = draw(st.one_of(st.none(), st.none(), S.json_mangles))
    return JsonCase(pair, dom, mangle, scalar, draw(S.spec_choices), draw(S.bound_methods))


def check_json(case: JsonCase, base=None) -> None:
    with Scratch(base or BASE) as scratch:
        files = _write_pair(scratch, case.pair)
        if case.mangle:
            scratch.write("d.json", mangle_json(case.domain, case.mangle))
            bad = [f"JSON mangled: {case.mangle}"]
        else:
            scratch.write("d.json", case.domain.json_text(scalar=case.scalar))
            bad = ["JSON domain is inverted"] if case.domain.is_empty() else []
        _prove_and_check("json", files, "d.json", case.domain, case.spec, case.bounds, 3.0,
                         "inprocess", bad)


# ---------------------------------------------------------------------------------------------
# target: the command line

TIMEOUTS = ("2", "3", "2.5")
WILD_TIMEOUTS = ("0", "-1", "nan", "inf", "1e12", "abc", "1e-9", "1e400", "")
DOMAIN_TEXTS = ("0:1", "-1:1", "0.3:0.3", "0.7000673:0.7000673", "0:1e400", "1e300:1e301",
                "-0.5:0.25")
BAD_DOMAIN_TEXTS = ("1:0", "a:b", "nan:1", "0:inf", ":1", "0:1:2", "", "missing.json",
                    "missing.vnnlib", "0x1:2")
WIDTHS_TEXTS = ("2,3,1", "4,8,8,2", "784,100000,10", "", "a,b", "0,1", "-1,2", "2",
                "1000000000,10,10", "3,0,2", "2,3,1,")


@dataclass(frozen=True)
class CliCase:
    command: str
    pair: S.Pair
    model_file: str  # "ok", "missing", "directory", "garbage", "fifo", "same_as_b"
    domain: str  # "none", "text:<T>", "bad:<T>", "json", "vnnlib"
    domain_spec: DomainSpec
    spec: SpecChoice
    timeout: str
    output: str  # -o / --counterexample / --report choice, "" for none
    flags: tuple[str, ...]
    extra: tuple[str, ...]  # command-specific option values
    via: str


@st.composite
def cli_cases(draw) -> CliCase:
    command = draw(st.sampled_from(("prove", "prove", "compress", "audit", "regions-bound",
                                    "regions-count")))
    pair = draw(S.pairs(max_in=3, max_out=3))
    model_file = draw(st.sampled_from(("ok",) * 12 + ("missing", "directory", "garbage", "fifo",
                                                       "same_as_b")))
    dk = draw(st.integers(0, 9))
    if dk <= 1:
        domain = "none"
    elif dk <= 4:
        domain = "text:" + draw(st.sampled_from(DOMAIN_TEXTS))
    elif dk == 5:
        domain = "bad:" + draw(st.sampled_from(BAD_DOMAIN_TEXTS))
    else:
        domain = draw(st.sampled_from(("json", "vnnlib")))
    dom = draw(S.domain_specs(pair.in_dim, max_boxes=2 if domain == "vnnlib" else 1,
                              strict=domain == "vnnlib"))
    timeout = draw(st.sampled_from(TIMEOUTS) if draw(st.integers(0, 5)) else
                   st.sampled_from(WILD_TIMEOUTS))
    outputs = {
        "prove": ("", "", "cex.npy", "cex.NPY", "cex.json", "cex.txt", "d.json", "nodir/cex.npy",
                  "a.onnx/cex.npy", "link.json"),
        "compress": ("out.onnx", "out.onnx", "a.onnx", "link.onnx", "out.txt", "nodir/out.onnx",
                     "OUT.ONNX", "d.json"),
        "audit": ("", "", "rep.html", "rep.md", "rep.json", "rep.txt", "d.json", "link.json",
                  "nodir/rep.md"),
        "regions-bound": ("",),
        "regions-count": ("",),
    }[command]
    output = draw(st.sampled_from(outputs))
    flags = tuple(sorted(draw(st.sets(st.sampled_from(("--json", "--no-verify", "--bogus")),
                                      max_size=2))))
    if command == "audit":
        extra = (draw(st.sampled_from(("1e-6,1e-3,1", "0.1", "", "abc", "1e400", "-1", "0"))),
                 draw(st.sampled_from(("0.05", "0.5", "0", "-1", "nan", "1e9"))),
                 draw(st.sampled_from(("", "", "ok", "wrong_shape", "nan", "not_npy"))))
    elif command == "regions-bound":
        extra = (draw(st.sampled_from(("model",) * 3 + WIDTHS_TEXTS)),)
    elif command == "regions-count":
        extra = (draw(st.sampled_from(("100", "1", "0", "-5", "1000000000000", "x"))),)
    elif command == "prove":
        extra = (draw(st.sampled_from(("interval", "symbolic", "lp", "exact", "bogus"))),)
    else:
        extra = ()
    via = "subprocess" if (model_file == "fifo" or draw(st.integers(0, 15)) == 0) else "inprocess"
    return CliCase(command, pair, model_file, domain, dom, draw(S.spec_choices), timeout, output,
                   flags, extra, via)


def _parse_timeout(text: str) -> float | None:
    """The timeout the run should honour (None: not a usable number, the CLI must refuse it)."""
    if text == "":
        return None
    try:
        t = float(text)
    except ValueError:
        return None
    return t


def check_cli(case: CliCase, base=None) -> None:
    with Scratch(base or BASE) as scratch:
        _check_cli(case, scratch)


def _check_cli(case: CliCase, scratch: Scratch) -> None:
    files = _write_pair(scratch, case.pair)
    n = case.pair.in_dim
    command = case.command
    usage_ok = "--bogus" in case.flags
    inputs = {"a.onnx", "b.onnx"}
    model_bad: list[str] = []
    if case.model_file == "missing":
        (scratch.path / "a.onnx").unlink()
        model_bad.append("model file missing")
    elif case.model_file == "directory":
        (scratch.path / "a.onnx").unlink()
        (scratch.path / "a.onnx").mkdir()
        model_bad.append("model path is a directory")
    elif case.model_file == "garbage":
        scratch.write("a.onnx", b"\x08\x01garbage")
        model_bad.append("model file is garbage")
    elif case.model_file == "fifo":
        (scratch.path / "a.onnx").unlink()
        scratch.fifo("a.onnx")
        model_bad.append("model path is a FIFO")
    # the domain
    dom = _closed(n)
    domain_args: list[str] = []
    domain_bad: list[str] = []
    if case.domain.startswith("text:"):
        text = case.domain[5:]
        lo, hi = text.split(":")
        dom = _closed(n, lo, hi)
        domain_args = ["--domain", text]
    elif case.domain.startswith("bad:"):
        domain_args = ["--domain", case.domain[4:]]
        domain_bad.append(f"domain {case.domain[4:]!r}")
    elif case.domain == "json":
        dom = DomainSpec((case.domain_spec.boxes[0],))
        scratch.write("d.json", dom.json_text())
        domain_args = ["--domain", "d.json"]
        inputs.add("d.json")
    elif case.domain == "vnnlib":
        dom = case.domain_spec
        scratch.write("d.vnnlib", dom.vnnlib_text())
        domain_args = ["--domain", "d.vnnlib"]
        inputs.add("d.vnnlib")
    if dom.is_empty():
        domain_bad.append("empty domain")
    # the timeout
    t = _parse_timeout(case.timeout)
    t_args = ["--timeout", case.timeout]
    timeout_bad: list[str] = []
    if case.timeout in ("abc", "") and command != "regions-bound":
        usage_ok = True
    if t is None or not (t > 0) or math.isinf(t) or t > 1e9:
        timeout_bad.append(f"--timeout {case.timeout!r}")
    honour = t if (t is not None and 0 < t <= 10) else 4.0
    # the output path
    out = case.output
    out_bad: list[str] = []
    if out == "d.json" and case.domain != "json":
        out = "old.json"
        scratch.write(out, '{"lower": 0, "upper": 1}')  # an unrelated file: may be overwritten
    if out == "link.json":
        if case.domain == "json":
            scratch.hardlink("d.json", "link.json")
            out_bad.append("output is a hard link to the domain file")
            inputs.add("link.json")
        else:
            out = "cex.json" if command == "prove" else "rep.json"
    if out == "link.onnx":
        if case.model_file == "ok":
            scratch.hardlink("a.onnx", "link.onnx")
            out_bad.append("output is a hard link to the input model")
            inputs.add("link.onnx")
        else:
            out = "out.onnx"
    if out in inputs:
        out_bad.append(f"output {out} is an input")
    if out.startswith("nodir/") or out.startswith("a.onnx/"):
        out_bad.append("output folder does not exist")
    new_files = {out} - inputs if out else set()
    option_bad: list[str] = []
    usage_bad: list[str] = []  # bad option values: a usage error (exit 2) before any file is read
    refusable: list[str] = []  # values the tool may refuse (exit 4) or accept
    if command == "prove":
        if out and not out.lower().endswith((".npy", ".json")):
            usage_bad.append("counterexample suffix")
        args = ["prove", "a.onnx", "a.onnx" if case.model_file == "same_as_b" else "b.onnx"]
        args += domain_args + case.spec.cli_args() + ["--bounds", case.extra[0]] + t_args
        if case.extra[0] == "bogus":
            usage_bad.append("--bounds bogus")
        if out:
            args += ["--counterexample", out]
        codes = {0, 1, 3, 4}
        usage_bad += timeout_bad
        bad = model_bad + domain_bad + out_bad + option_bad + usage_bad
    elif command == "compress":
        args = ["compress", "a.onnx", "-o", out] + domain_args + t_args
        if not out.lower().endswith(".onnx"):
            usage_bad.append("output suffix")
        if "--no-verify" in case.flags:
            args.append("--no-verify")
        codes = {0, 3, 4}
        usage_bad += timeout_bad
        bad = model_bad + domain_bad + out_bad + option_bad + usage_bad
    elif command == "audit":
        eps, gap, data = case.extra
        args = ["audit", "a.onnx", "b.onnx"] + domain_args + t_args + ["--epsilons", eps,
                                                                        "--gap", gap]
        if eps in ("", "abc", "-1", "1e400"):  # 1e400: beyond the float64 range
            usage_bad.append(f"--epsilons {eps!r}")
        if gap in ("-1", "nan"):
            usage_bad.append(f"--gap {gap}")
        if gap in ("1e9", "0"):
            refusable.append(f"--gap {gap}")
        if data:
            inputs.add("data.npy")
            if data == "ok":
                scratch.write("data.npy", _npy(np.random.default_rng(0).uniform(0, 1, (5, n))))
            elif data == "wrong_shape":
                scratch.write("data.npy", _npy(np.zeros((3, n + 1))))
                option_bad.append("--data of the wrong shape")
            elif data == "nan":
                scratch.write("data.npy", _npy(np.full((2, n), np.nan)))
                refusable.append("--data holding NaN")
            else:
                scratch.write("data.npy", b"not a numpy file")
                option_bad.append("--data is not a .npy")
            args += ["--data", "data.npy"]
        if out:
            args += ["--report", out]
            if not out.lower().endswith((".html", ".md", ".json")):
                usage_bad.append("report suffix")
        codes = {0, 4}
        usage_bad += timeout_bad
        bad = model_bad + domain_bad + out_bad + option_bad + usage_bad
    elif command == "regions-bound":
        which = case.extra[0]
        honour = 4.0
        if which == "model":
            args = ["regions", "bound", "a.onnx"] + domain_args
            bad = model_bad + domain_bad
        else:
            args = ["regions", "bound", "--widths", which] + domain_args
            if which in ("", "a,b", "0,1", "-1,2", "2", "3,0,2", "2,3,1,"):
                option_bad.append(f"--widths {which!r}")
            if domain_args:
                usage_bad.append("--domain with --widths")
            if which in ("784,100000,10", "1000000000,10,10"):
                refusable.append(f"--widths {which}")
            bad = option_bad + usage_bad
        codes = {0, 4}
    else:  # regions-count
        cap = case.extra[0]
        args = ["regions", "count", "a.onnx"] + domain_args + ["--cap", cap] + t_args
        if cap in ("0", "-5"):
            usage_bad.append(f"--cap {cap}")
        if cap == "x":
            usage_ok = True
        codes = {0, 3, 4}
        usage_bad += timeout_bad
        bad = model_bad + domain_bad + option_bad + usage_bad
    for flag in ("--json", "--bogus"):
        if flag in case.flags:
            args.append(flag)
    if usage_bad:
        codes = {2}
    elif bad:
        codes = {4}
    elif refusable:
        codes = codes | {4}
    if usage_ok:
        codes = codes | {2}
    expect = Expect(codes=frozenset(codes), new_files=frozenset(new_files),
                    json="--json" in case.flags)
    before = scratch.snapshot()
    via = case.via
    run = run_cli(args, scratch.path, _limit(honour, via), via)
    after = scratch.snapshot()
    STATS["cli"] += 1
    STATS[f"exit {run.code}"] += 1
    if t is not None and 0 < t <= 10 and command != "regions-bound":
        _note_time(run, t)
    problems = check_run(run, before, after, expect)
    if not bad and not refusable and run.code == 4 and not dom.is_exotic():
        problems.append("valid input refused with exit 4")
    data = parse_json(run) if "--json" in case.flags else None
    ta, tb = _truth(files, "a"), _truth(files, "b")
    if case.model_file == "same_as_b":
        tb = ta
    if not bad and run.code in (0, 1, 3) and ta is not None:
        if command == "prove":
            problems += _verdict_problems(run, data, dom, case.spec, ta, tb, files.float32)
            problems += _counterexample_file(run, scratch, out, data, dom, n)
        elif command == "compress" and run.code == 0 and data is not None:
            problems += _compressed(scratch, out, data, dom, ta)
        elif command == "audit" and run.code == 0 and data is not None:
            problems += _audit(data, dom, ta, tb)
    _fail("cli", run, problems)


def _npy(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _counterexample_file(run, scratch: Scratch, out: str, data, dom: DomainSpec, n: int
                         ) -> list[str]:
    if not out or run.code != 1:
        return []
    path = scratch.path / out
    if not path.is_file():
        return [f"--counterexample {out}: REFUTED but {out} was not written (files: "
                f"{sorted(scratch.snapshot())})"]
    if out.lower().endswith(".npy"):
        try:
            x = np.load(path).ravel()
        except Exception as exc:
            return [f"{out} is not a readable .npy ({exc})"]
        if x.size != n:
            return [f"{out} holds {x.size} values, the network takes {n}"]
        cex = (data or {}).get("counterexample") or {}
        if data is not None and cex.get("float_input_in_domain", True) and not dom.contains(
                [Fraction(float(v)) for v in x]):
            return [f"{out}: the written float32 input {x.tolist()} lies outside the domain "
                    "and the result does not say so"]
    return []


def _compressed(scratch: Scratch, out: str, data: dict, dom: DomainSpec, ta: Truth) -> list[str]:
    proof = data.get("proof")
    if proof is None or proof.get("verdict") != "proved":
        return []
    try:
        tc = import_truth(scratch.path / out, "compressed")
    except Exception as exc:
        return [f"compressed model {out} cannot be re-imported: {exc}"]
    eps = data.get("epsilon")
    spec = SpecChoice("strict") if eps is None else SpecChoice("epsilon", str(Fraction(eps)))
    if eps is not None:
        spec = SpecChoice("epsilon", _decimal_of(Fraction(eps)))
    return [f"compress: {p}" for p in check_proved(dom, spec, ta, tc, n=1000)]


def _decimal_of(q: Fraction) -> str:
    """A decimal text >= q (exact when q is a terminating decimal)."""
    from decimal import Decimal, localcontext

    with localcontext() as ctx:
        ctx.prec = 80
        d = Decimal(q.numerator) / Decimal(q.denominator)
        while Fraction(d) < q:
            d = d.next_plus()
    return str(d)


def _audit(data: dict, dom: DomainSpec, ta: Truth, tb: Truth) -> list[str]:
    problems = []
    for check in data.get("checks", []):
        mode = check.get("mode")
        tol = check.get("tolerance_exact")
        spec = SpecChoice(mode, _decimal_of(Fraction(tol)) if tol else None) if mode else None
        if spec is None:
            continue
        if check.get("verdict") == "refuted":
            if check.get("counterexample"):
                problems += [f"audit {check.get('name')}: {p}" for p in
                             check_refuted(check.get("counterexample"), dom, spec, ta, tb, True)]
        elif check.get("verdict") == "proved":
            problems += [f"audit {check.get('name')}: {p}"
                         for p in check_proved(dom, spec, ta, tb, n=300)]
    dev = data.get("deviation") or {}
    if "upper_exact" in dev and "lower_exact" in dev:
        upper, lower = Fraction(dev["upper_exact"]), Fraction(dev["lower_exact"])
        if lower > upper:
            problems.append(f"audit: deviation lower bound {lower} > upper bound {upper}")
        xf, exact = dom.sample_points(300, np.random.default_rng(3))
        if len(xf):
            with np.errstate(all="ignore"):
                d = np.nan_to_num(np.abs(ta.floats(xf) - tb.floats(xf)).max(axis=1), nan=np.inf)
            for i in np.argsort(-d)[:3]:
                q = exact(int(i))
                dev_q = max(abs(u - v) for u, v in zip(ta.exact(q), tb.exact(q)))
                if dev_q > upper:
                    problems.append(f"audit: certified upper deviation {float(upper):.6g} but "
                                    f"{float(dev_q):.6g} at {q}")
                    break
        w = dev.get("witness_exact") or dev.get("witness")
        if w is not None:
            x = [Fraction(str(v)) if isinstance(v, str) else Fraction(v) for v in w]
            if not dom.contains(x):
                problems.append(f"audit: deviation witness {w} lies outside the domain")
            elif max(abs(u - v) for u, v in zip(ta.exact(x), tb.exact(x))) < lower:
                problems.append(f"audit: witness {w} does not attain the lower bound {lower}")
    return problems


TARGETS = {
    "onnx": (onnx_cases(), check_onnx),
    "vnnlib": (vnnlib_cases(), check_vnnlib),
    "json": (json_cases(), check_json),
    "cli": (cli_cases(), check_cli),
}
