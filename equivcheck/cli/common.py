"""What every command shares: the rich console on stderr, JSON on stdout, errors to exit codes,
and the checks of options every command validates the same way.

Exit codes: 0 proved / success, 1 refuted, 3 unknown, 4 bad input, 5 internal error; 2 stays
Click's usage error.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable

import typer

from equivcheck.errors import EquivcheckError

EXIT_BAD_INPUT = 4
EXIT_INTERNAL = 5


def console():
    """A rich console writing to stderr (human output never pollutes ``--json`` stdout)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


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
    line and exit code 4 (the rule of :func:`equivcheck.core.deadline.validate_timeout`)."""
    from equivcheck.core.deadline import validate_timeout
    from equivcheck.errors import InputError

    try:
        return validate_timeout(value, option)
    except InputError as exc:
        fail(str(exc))


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    """One line on stderr, then exit with ``code``."""
    sys.stderr.write(f"equivcheck: error: {message}\n")
    raise typer.Exit(code)


def guarded(fn: Callable[..., int]) -> Callable[..., None]:
    """Wrap a command body ``fn(...) -> exit code``: domain errors become one line + exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
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


def _one_line(message: str) -> str:
    """A message folded onto one line (an error message with a newline would read as two)."""
    return " ".join(message.split()) if "\n" in message or "\r" in message else message
