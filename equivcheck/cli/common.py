"""What every command shares: the rich console on stderr, JSON on stdout, errors to exit codes.

Exit codes: 0 proved / success, 1 refuted, 3 unknown, 4 bad input, 5 internal error; 2 stays
Click's usage error.
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable

import typer

from ..errors import EquivcheckError

EXIT_BAD_INPUT = 4
EXIT_INTERNAL = 5


def console():
    """A rich console writing to stderr (human output never pollutes ``--json`` stdout)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def emit_json(obj: Any) -> None:
    """Print exactly one JSON object on stdout."""
    sys.stdout.write(json.dumps(obj, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(o):
    from fractions import Fraction

    import numpy as np

    if isinstance(o, Fraction):
        return str(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


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
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except MemoryError:
            fail("out of memory", EXIT_INTERNAL)
        except Exception as exc:  # an internal bug: still one line, never a traceback
            fail(f"internal error: {type(exc).__name__}: {exc}", EXIT_INTERNAL)
        raise typer.Exit(code or 0)

    return wrapper
