"""The one exception hierarchy of equivcheck.

Every problem with what the user handed us (a file, an operator, a value, a domain) is an
:class:`InputError`. The CLI turns any :class:`EquivcheckError` into a single line on stderr and a
distinct exit code; it never prints a traceback and never a verdict for bad input.
"""

from __future__ import annotations


class EquivcheckError(Exception):
    """Root of every error equivcheck raises on purpose."""

    exit_code = 5


class InputError(EquivcheckError):
    """The input cannot be checked: a bad file, model, value or domain (CLI exit code 4)."""

    exit_code = 4


class ModelFileError(InputError):
    """A model file is missing, unreadable, or not a valid ONNX model."""


class UnsupportedModelError(InputError):
    """The model uses an operator, activation or graph shape equivcheck does not support."""


class ModelValueError(InputError):
    """The model holds values that cannot be checked (NaN or infinite weights, bad attributes)."""


class ShapeMismatchError(InputError):
    """Two models, or a model and a domain, disagree on shapes."""


class DomainError(InputError):
    """The input domain is malformed, empty, inverted or not finite."""


class SoundnessError(EquivcheckError):
    """An internal check refused a result that would not be sound (a counterexample outside the
    domain or not violating the spec exactly). Always a bug: it is raised instead of a verdict."""


class SolverError(EquivcheckError):
    """The solver process failed in an unexpected way (not a timeout, which is a verdict)."""
