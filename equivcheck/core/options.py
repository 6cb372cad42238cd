"""The choices a check is run with, each with exactly one default, and the enums that name them.

:class:`ProverOptions` is built once (by the CLI, the pytest plugin, ``audit`` and ``compress``)
and handed down; nothing below reads a module-level default of its own. Unknown choices given as
text raise :class:`~equivcheck.errors.InputError` through :meth:`BoundMethod.parse`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields

from equivcheck.core.deadline import validate_timeout
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


DEFAULT_TIMEOUT = 60.0  # seconds for one check: the one default of every entry point
MULTI_PROOF_TIMEOUT = 120.0  # seconds for audit and compress, which run an analysis and several proofs


@dataclass(frozen=True)
class ProverOptions:
    """Every budget and method choice of one check, with its single default.

    ``timeout`` is the whole check's limit in seconds (when the caller hands down a
    :class:`~equivcheck.core.deadline.Deadline`, that deadline rules and ``timeout`` records its
    budget). A stage that takes part of the time gets ``*_share`` of the time left when it
    starts, capped at ``*_seconds``; a share of 1 means "no cap but the seconds". Values that are
    not sensible (a negative share, a NaN, an unknown bound method) raise
    :class:`~equivcheck.errors.InputError` when the options are built.
    """

    timeout: float = DEFAULT_TIMEOUT
    bound_method: BoundMethod = BoundMethod.INTERVAL
    seed: int = 0
    # the falsifier (sampling and local search) before the exact query, on every box
    falsify: bool = True
    falsify_share: float = 1 / 4
    falsify_seconds: float = 1.0
    exact_checks: int = 4  # falsifier candidates confirmed in exact arithmetic per box
    # the branch-and-bound engine (equivcheck.engine) before the solver, on every box: it takes
    # all the time on boxes of at most ``max_split_dim`` inputs (epsilon and argmax mode; the
    # solver gets only the sub-boxes its bounds cannot close), else ``engine_share`` of the time
    # left, and the solver the whole box with the rest
    engine: bool = True
    engine_share: float = 1 / 2
    max_split_dim: int = 32
    # worker processes for the engine when it takes the whole box (0: every core this process
    # may use); an instance decided within a short first slice starts no process
    workers: int = 1
    # networks of different shapes, or with at most ``solver_first_unstable`` unstable ReLUs on
    # the box: the solver tries the whole box first, for this share of the time left or at
    # least this long (its encoding shares the units both networks have; few ReLU cases)
    solver_first_unstable: int = 24
    first_try_share: float = 1 / 8
    first_try_seconds: float = 2.0
    # the share of the time left that each network's bounds may take, for the costly methods
    lp_bound_share: float = 1 / 3
    exact_bound_share: float = 1 / 6

    def __post_init__(self) -> None:
        object.__setattr__(self, "bound_method", BoundMethod.parse(self.bound_method))
        object.__setattr__(self, "timeout", validate_timeout(self.timeout, allow_zero=True))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InputError(f"seed must be an integer, got {self.seed!r}")
        for name in ("falsify", "engine"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("falsify_share", "engine_share", "first_try_share", "lp_bound_share",
                     "exact_bound_share"):
            _check_number(name, getattr(self, name), upper=1.0)
        for name in ("falsify_seconds", "first_try_seconds"):
            object.__setattr__(self, name, validate_timeout(getattr(self, name), name, allow_zero=True))
        for name in ("exact_checks", "max_split_dim", "solver_first_unstable", "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"{name} must be a whole number >= 0, got {value!r}")

    def bound_share(self) -> float | None:
        """The share of the time left each network's bounds may take (None: the method is
        cheap and needs no cap)."""
        if self.bound_method is BoundMethod.LP:
            return self.lp_bound_share
        if self.bound_method is BoundMethod.EXACT:
            return self.exact_bound_share
        return None

    def to_dict(self) -> dict:
        """Every field as plain JSON values (the ``"options"`` of a result's ``--json``)."""
        return {name: (value.value if isinstance(value, enum.Enum) else value)
                for name, value in ((f.name, getattr(self, f.name)) for f in fields(self))}


def _check_number(name: str, value, upper: float) -> None:
    """An :class:`InputError` unless ``value`` is a real number in ``[0, upper]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{name} must be a number, got {value!r}")
    if not (0 <= value <= upper):  # False for NaN
        raise InputError(f"{name} must lie in [0, {upper:g}], got {value!r}")
