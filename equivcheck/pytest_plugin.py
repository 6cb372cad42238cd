"""The ``equivcheck`` pytest plugin (registered through the ``pytest11`` entry point).

What it adds:

* options ``--equivcheck-timeout=SECONDS`` and ``--equivcheck-unknown=fail|skip|xfail`` (what an
  UNKNOWN verdict does), also settable as ini values ``equivcheck_timeout`` /
  ``equivcheck_unknown``, and as ``timeout`` / ``unknown`` (with ``mode``, ``tolerance``,
  ``norm``, ``bounds``) in the ``[tool.equivcheck]`` table of the nearest ``pyproject.toml``
  (:func:`equivcheck.core.options.project_defaults`, looked up from the folder pytest was started
  in); the command line wins over the ini file, which wins over ``[tool.equivcheck]``;
* a marker ``@pytest.mark.equivcheck(timeout=..., unknown=..., domain=..., mode=...,
  tolerance=..., norm=..., bounds=...)`` that sets these for one test (it wins over all of
  them; a tolerance applies in epsilon mode only);
* a fixture ``equivcheck`` whose ``assert_equivalent`` (or a plain call) is
  :func:`equivcheck.testing.assert_equivalent`;
* an ``equivcheck`` report section on every failed test that ran a check, and a one-line
  summary of all checks at the end of the run;
* progress: a check that runs for over a second writes a plain line on the terminal every few
  seconds (stage, work done, best bound, seconds left), through pytest's terminal reporter, so
  output capture does not hide it; ``-q`` silences it.

The settings apply to :func:`equivcheck.testing.assert_equivalent` whether it is called through
the fixture or imported directly. Loading this module imports nothing heavy: onnx, numpy, z3 and
torch are imported only when a check runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from equivcheck import testing
from equivcheck.core.options import DEFAULT_TIMEOUT, ProjectDefaults

UNKNOWN_HELP = "what an UNKNOWN verdict does: fail (default), skip or xfail"
MARKER_KEYS = ("timeout", "unknown", "domain", "mode", "tolerance", "norm", "bounds")


@dataclass
class _Settings:
    """Session-wide settings resolved from the ini file and the command line."""

    timeout: float
    unknown: str
    project: ProjectDefaults = field(default_factory=ProjectDefaults)
    progress: bool = True
    counts: dict[str, int] = field(default_factory=lambda: {"proved": 0, "refuted": 0, "unknown": 0})


SETTINGS_KEY = pytest.StashKey[_Settings]()
RECORDS_KEY = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("equivcheck", "equivalence checks of ONNX models (equivcheck)")
    group.addoption(
        "--equivcheck-timeout", dest="equivcheck_timeout", type=float, default=None,
        metavar="SECONDS", help=f"time limit of each equivcheck check (default {DEFAULT_TIMEOUT:g}).",
    )
    group.addoption(
        "--equivcheck-unknown", dest="equivcheck_unknown", default=None,
        choices=testing.UNKNOWN_ACTIONS, help=UNKNOWN_HELP + ".",
    )
    parser.addini("equivcheck_timeout", "time limit in seconds of each equivcheck check "
                  f"(default {DEFAULT_TIMEOUT:g}, or [tool.equivcheck] timeout)", default="")
    parser.addini("equivcheck_unknown", UNKNOWN_HELP + " (or [tool.equivcheck] unknown)",
                  default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "equivcheck(timeout=None, unknown=None, domain=None, mode=None, tolerance=None, "
        "norm=None, bounds=None): settings of the equivcheck checks in this test.",
    )
    from equivcheck.core.options import project_defaults
    from equivcheck.errors import InputError

    try:
        project = project_defaults(config.invocation_params.dir)
    except InputError as exc:
        raise pytest.UsageError(str(exc)) from None
    timeout_text = config.getoption("equivcheck_timeout")
    if timeout_text is None:
        timeout_text = config.getini("equivcheck_timeout") or project.timeout or DEFAULT_TIMEOUT
    unknown = (config.getoption("equivcheck_unknown") or config.getini("equivcheck_unknown")
               or project.unknown or "fail")
    config.stash[SETTINGS_KEY] = _Settings(
        timeout=_timeout(timeout_text, "equivcheck_timeout"),
        unknown=_unknown(unknown, "equivcheck_unknown"),
        project=project,
        progress=(config.getoption("verbose", 0) or 0) >= 0,
    )


def _timeout(value: Any, where: str) -> float:
    """A finite number of seconds in (0, ``deadline.MAX_TIMEOUT``], else a usage error."""
    from equivcheck.core.deadline import validate_timeout
    from equivcheck.errors import InputError

    try:
        t = float(value)
    except (TypeError, ValueError):
        raise pytest.UsageError(f"{where}: {value!r} is not a number of seconds") from None
    if not t > 0:
        raise pytest.UsageError(f"{where}: the timeout must be positive, got {value!r}")
    try:
        return validate_timeout(t, "the timeout")
    except InputError as exc:
        raise pytest.UsageError(f"{where}: {exc}") from None


def _unknown(value: Any, where: str) -> str:
    if value not in testing.UNKNOWN_ACTIONS:
        raise pytest.UsageError(
            f"{where}: {value!r} is not one of {', '.join(testing.UNKNOWN_ACTIONS)}"
        )
    return value


def _item_defaults(item: pytest.Item, records: list) -> testing.CheckDefaults:
    """Settings for one test: marker over command line over ini."""
    settings = item.config.stash[SETTINGS_KEY]
    project = settings.project
    values: dict[str, Any] = {"timeout": settings.timeout, "unknown": settings.unknown,
                              "mode": project.mode, "tolerance": project.tolerance,
                              "norm": project.norm, "bounds": project.bounds}
    # closest marker last, so that a function marker overrides a class/module one
    for mark in reversed(list(item.iter_markers(name="equivcheck"))):
        if mark.args:
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.equivcheck takes keyword arguments only "
                f"({', '.join(MARKER_KEYS)})"
            )
        bad = sorted(set(mark.kwargs) - set(MARKER_KEYS))
        if bad:
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.equivcheck got unknown option(s) {', '.join(bad)} "
                f"(allowed: {', '.join(MARKER_KEYS)})"
            )
        values.update(mark.kwargs)
    values["timeout"] = _timeout(values["timeout"], f"{item.nodeid}: equivcheck timeout")
    values["unknown"] = _unknown(values["unknown"], f"{item.nodeid}: equivcheck unknown")

    def record(result, message):
        settings.counts[result.verdict.label] += 1
        records.append((result, message))

    def progress():
        from equivcheck.cli.progress import HEARTBEAT, ProgressLine

        return ProgressLine(tty=False, stream=_TerminalStream(item.config), heartbeat=HEARTBEAT)

    return testing.CheckDefaults(record=record, progress=progress if settings.progress else None,
                                 **values)


class _TerminalStream:
    """A text stream onto pytest's terminal reporter, with output capture suspended while a
    line is written (as pytest's live logging does), so a check's progress is seen at once."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def write(self, text: str) -> None:
        import contextlib

        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        suspended = (capture.global_and_fixture_disabled() if capture is not None
                     else contextlib.nullcontext())
        with suspended:
            for line in text.splitlines():
                reporter.write_line(line)

    def flush(self) -> None:
        """Lines are written whole; nothing is buffered."""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    records: list = []
    item.stash[RECORDS_KEY] = records
    token = testing.use_defaults(_item_defaults(item, records))
    try:
        yield
    finally:
        testing.reset_defaults(token)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if call.when == "call":
        records = item.stash.get(RECORDS_KEY, [])
        if records and report.failed:
            report.sections.append(("equivcheck", _section(records)))


KEPT_LINES = ("counterexample x", "reproduces in onnxruntime", "details", "reproduce:")


def _section(records: list) -> str:
    """Every check the test ran: its verdict and, for a failed one, where the counterexample
    is saved, whether it reproduces in onnxruntime and the command that reproduces it."""
    from equivcheck.report import spec_text

    lines = []
    for i, (result, message) in enumerate(records, 1):
        lines.append(
            f"check {i}: {result.verdict.label.upper()} ({spec_text(result.spec, brief=True)}) "
            f"in {result.seconds:.2f} s: "
            f"{result.model_a} vs {result.model_b}"
        )
        if not result.proved:
            lines.append(f"  {result.reason}")
        for line in (message or "").splitlines():
            if line.strip().startswith(KEPT_LINES):
                lines.append("  " + line.strip())
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None or not any(settings.counts.values()):
        return
    c = settings.counts
    terminalreporter.write_line(
        f"equivcheck: {sum(c.values())} check(s): {c['proved']} proved, {c['refuted']} refuted, "
        f"{c['unknown']} unknown"
    )


class EquivcheckFixture:
    """What the ``equivcheck`` fixture gives a test: ``assert_equivalent`` with the test's
    settings (calling the fixture itself does the same)."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request

    def assert_equivalent(self, a, b, domain=None, mode=None, tolerance=None, timeout=None,
                          **kwargs):
        """:func:`equivcheck.testing.assert_equivalent` (see there)."""
        return testing.assert_equivalent(a, b, domain, mode, tolerance, timeout, **kwargs)

    __call__ = assert_equivalent

    @property
    def results(self) -> list:
        """The :class:`~equivcheck.ProofResult` of every check this test ran so far."""
        return [r for r, _ in self._request.node.stash.get(RECORDS_KEY, [])]


@pytest.fixture
def equivcheck(request: pytest.FixtureRequest) -> EquivcheckFixture:
    """``equivcheck.assert_equivalent(a, b, domain=..., mode=..., tolerance=..., timeout=...)``."""
    return EquivcheckFixture(request)
