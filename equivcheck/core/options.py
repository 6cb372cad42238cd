"""The choices a check is run with, each with exactly one default, and the enums that name them.

:class:`ProverOptions` is built once (by the CLI, the pytest plugin, ``audit`` and ``compress``)
and handed down; nothing below reads a module-level default of its own. Unknown choices given as
text raise :class:`~equivcheck.errors.InputError` through :meth:`BoundMethod.parse`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from equivcheck.errors import InputError


class BoundMethod(str, enum.Enum):
    """How hard the rigorous bounds work before the solver (all of them are sound)."""

    INTERVAL = "interval"  # interval arithmetic (cheapest)
    SYMBOLIC = "symbolic"  # CROWN-style back-substitution, intersected with intervals
    LP = "lp"  # symbolic, then each unstable unit tightened by an LP certified from its dual
    EXACT = "exact"  # the exact stability analysis of each unit (what compress uses)

    @classmethod
    def parse(cls, value: "BoundMethod | str") -> "BoundMethod":
        """``value`` as a :class:`BoundMethod`; an :class:`InputError` naming the choices if not."""
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value))
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise InputError(f"unknown bound method {value!r} (one of {choices})") from None

    def __str__(self) -> str:
        return self.value


class UnitStability(str, enum.Enum):
    """What is known about one ReLU unit over a domain: the one vocabulary of bounds, the
    stability analysis, compress and the audit."""

    ACTIVE = "active"  # pre-activation >= 0 on the whole domain: the ReLU is the identity
    INACTIVE = "inactive"  # pre-activation <= 0 on the whole domain: the ReLU outputs 0
    UNSTABLE = "unstable"  # both signs occur (witnessed) or the bounds allow both
    UNDECIDED = "undecided"  # an exact analysis ran out of time on this unit

    @property
    def stable(self) -> bool:
        return self in (UnitStability.ACTIVE, UnitStability.INACTIVE)

    def __str__(self) -> str:
        return self.value


class SearchOutcome(str, enum.Enum):
    """How the search over (parts of) a box ended."""

    PROVED = "proved"
    REFUTED = "refuted"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value


DEFAULT_TIMEOUT = 60.0  # seconds for a whole check: the one default of every entry point


@dataclass(frozen=True)
class ProverOptions:
    """Every budget and method choice of one check, with its single default.

    ``timeout`` is the whole check's limit in seconds. Shares are fractions of the time left
    when a stage starts, capped by the matching ``*_seconds``.
    """

    timeout: float = DEFAULT_TIMEOUT
    bound_method: BoundMethod = BoundMethod.INTERVAL
    seed: int = 0
    falsify_share: float = 1 / 4
    falsify_seconds: float = 1.0
    exact_checks: int = 4  # falsifier candidates confirmed in exact arithmetic per box

    def __post_init__(self) -> None:
        object.__setattr__(self, "bound_method", BoundMethod.parse(self.bound_method))

    def to_dict(self) -> dict:
        return {
            "timeout": self.timeout,
            "bound_method": self.bound_method.value,
            "seed": self.seed,
            "falsify_share": self.falsify_share,
            "falsify_seconds": self.falsify_seconds,
            "exact_checks": self.exact_checks,
        }
