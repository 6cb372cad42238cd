"""What every command shares: where output goes, errors to exit codes, and the checks of
options every command validates the same way.

Streams. The verdict and the human summary go to stdout (``equivcheck prove a b > log`` keeps
them), through :func:`out_console`: rich on a terminal, plain text that is never hard-wrapped in
a log or a pipe. ``--json`` puts exactly one JSON object on stdout instead. Errors, warnings and
the progress line go to stderr.

Exit codes: 0 proved / success, 1 refuted, 3 unknown, 4 bad input (a file, a model, a domain),
5 internal error, 2 a usage error: an unknown option or a bad option value (``--timeout -1``,
``--tolerance abc``), as Click gives it.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from typing import Any, Callable

import typer

from equivcheck.errors import EquivcheckError

EXIT_USAGE = 2
EXIT_BAD_INPUT = 4
EXIT_INTERNAL = 5
PLAIN_WIDTH = 1000  # the width rich lays tables out in when stdout is not a terminal


def console():
    """A rich console on stderr, for diagnostics (the summary goes to :func:`out_console`)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def out_console():
    """The rich console of the human summary, on stdout. On a terminal it wraps to the
    terminal's width; in a log or a pipe it writes plain text (no colour codes) and wraps no
    line (``soft_wrap``, tables laid out :data:`PLAIN_WIDTH` wide)."""
    from rich.console import Console

    if stdout_is_tty():
        return Console(highlight=False)
    return Console(highlight=False, soft_wrap=True, width=PLAIN_WIDTH, no_color=True)


def stdout_is_tty() -> bool:
    """True when stdout is a terminal."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def stderr_is_tty() -> bool:
    """True when stderr is a terminal (rich output and a redrawn progress line are for people;
    a log or a pipe gets plain text)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def emit_json(obj: Any) -> None:
    """Print exactly one strict JSON object on stdout (see :func:`json_text`)."""
    from equivcheck.core.result import json_text

    sys.stdout.write(json_text(obj) + "\n")
    sys.stdout.flush()


def check_timeout(value: float, option: str = "--timeout") -> float:
    """``value`` if it is a finite number of seconds in (0, ``deadline.MAX_TIMEOUT``]; else one
    line and the usage exit code 2 (the rule of
    :func:`equivcheck.core.deadline.validate_timeout`)."""
    from equivcheck.core.deadline import validate_timeout
    from equivcheck.errors import InputError

    try:
        return validate_timeout(value, option)
    except InputError as exc:
        fail(str(exc), EXIT_USAGE)


def project_defaults():
    """The ``[tool.equivcheck]`` defaults of the nearest ``pyproject.toml`` from the current
    folder up (:func:`equivcheck.core.options.project_defaults`); a bad table is bad input
    (one line naming the file and the key, exit 4)."""
    from equivcheck.core.options import project_defaults as read
    from equivcheck.errors import InputError

    try:
        return read()
    except InputError as exc:
        fail(str(exc))


def check_spec(mode: str, tolerance: str | None, norm: str, confidence: str | None = None,
               logits: bool = False):
    """The :class:`~equivcheck.core.spec.Spec` of ``--mode``, ``--tolerance``, ``--norm``,
    ``--confidence`` and ``--logits``, read before any file is; a bad value is a usage error
    (one line, exit 2)."""
    from equivcheck.core.spec import Spec
    from equivcheck.errors import InputError

    try:
        return Spec.make(mode, tolerance, norm, confidence, logits)
    except InputError as exc:
        fail(str(exc), EXIT_USAGE)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    """One line on stderr, then exit with ``code``."""
    sys.stderr.write(f"equivcheck: error: {message}\n")
    raise typer.Exit(code)


def guarded(fn: Callable[..., int]) -> Callable[..., None]:
    """Wrap a command body ``fn(...) -> exit code``: domain errors become one line + exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with notes_on_stderr():
                code = fn(*args, **kwargs)
        except typer.Exit:
            raise
        except EquivcheckError as exc:
            fail(_one_line(str(exc)), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except MemoryError:
            fail("out of memory", EXIT_INTERNAL)
        except Exception as exc:  # an internal bug: still one line, never a traceback
            fail(_one_line(f"internal error: {type(exc).__name__}: {exc}"), EXIT_INTERNAL)
        raise typer.Exit(code or 0)

    return wrapper


@contextlib.contextmanager
def notes_on_stderr():
    """While the block runs, the library's notes about its input (a VNN-LIB constraint on the
    outputs left out of the domain: ``IgnoredConstraintWarning``) are printed at once on stderr
    as ``equivcheck: note: ...``; other warnings go where they always go."""
    from equivcheck.io.domains import IgnoredConstraintWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", IgnoredConstraintWarning)
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, IgnoredConstraintWarning):
                sys.stderr.write(f"equivcheck: note: {_one_line(str(message))}\n")
                sys.stderr.flush()
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def _one_line(message: str) -> str:
    """A message folded onto one line (an error message with a newline would read as two)."""
    return " ".join(message.split()) if "\n" in message or "\r" in message else message
