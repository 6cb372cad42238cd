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
    AUTO = "auto"  # the prover's default: see :meth:`resolve`

    def resolve(self, same_shape: bool) -> "BoundMethod":
        """The method a check of a pair runs: AUTO is INTERVAL for networks of the same layer
        widths (the engine computes its own, tighter bounds) and SYMBOLIC for networks of
        different shapes, where the solver's encoding and its check that both networks compute
        their outputs through the same units (a model with stable units removed) need tight
        bounds: interval bounds left 13 removed units of a CNN unstable, and its standalone proof
        against its compressed copy ran out of time (60 s); symbolic bounds cost 0.01-0.6 s on the
        external MNIST/CIFAR CNNs (4.6 s on resnet_2b) and proved it in 1.8 s. Any other method
        is itself."""
        if self is not BoundMethod.AUTO:
            return self
        return BoundMethod.INTERVAL if same_shape else BoundMethod.SYMBOLIC

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
    bound_method: BoundMethod = BoundMethod.AUTO
    seed: int = 0
    # bring both networks to the canonical form first (equivcheck.canon): equal forms prove the
    # pair without search
    canonical: bool = True
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
        for name in ("falsify", "engine", "canonical"):
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


# ---------------------------------------------------------------------------------------------
# project defaults: [tool.equivcheck] in the user's pyproject.toml

UNKNOWN_ACTIONS = ("fail", "skip", "xfail")  # what an UNKNOWN verdict does in a test suite
PROJECT_KEYS = ("timeout", "mode", "tolerance", "norm", "bounds", "unknown")


@dataclass(frozen=True)
class ProjectDefaults:
    """The defaults a project sets in the ``[tool.equivcheck]`` table of its ``pyproject.toml``
    (``source``: that file, None when there is none). Each value is None when not set; a set
    value is already checked. ``timeout`` (seconds) is the limit of one check (``prove``,
    ``regions count`` and each pytest check; ``compress`` and ``audit`` keep their own);
    ``tolerance`` is decimal text, read exactly, and applies only when the mode is epsilon.
    The command line, and in pytest the ini file and the marker, win over these."""

    source: str | None = None
    timeout: float | None = None
    mode: str | None = None
    tolerance: str | None = None
    norm: str | None = None
    bounds: str | None = None
    unknown: str | None = None


def find_pyproject(start=None):
    """The nearest ``pyproject.toml`` in ``start`` (default: the current folder) or a folder
    above it, or None."""
    from pathlib import Path

    folder = Path(start if start is not None else ".").resolve()
    for candidate in (folder, *folder.parents):
        path = candidate / "pyproject.toml"
        if path.is_file():
            return path
    return None


def project_defaults(start=None) -> ProjectDefaults:
    """The ``[tool.equivcheck]`` defaults of the nearest ``pyproject.toml`` (see
    :func:`find_pyproject`); empty defaults when there is no such file or table. Raises
    :class:`InputError` (one line naming the file and the key) for a file that is not TOML, an
    unknown key or a bad value, so a typo never silently falls back to a default."""
    path = find_pyproject(start)
    if path is None:
        return ProjectDefaults()
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"{path}: cannot read it as TOML ({exc})") from None
    table = data.get("tool", {}).get("equivcheck") if isinstance(data.get("tool"), dict) else None
    if table is None:
        return ProjectDefaults(source=str(path))
    where = f"{path}: [tool.equivcheck]"
    if not isinstance(table, dict):
        raise InputError(f"{where} must be a table")
    unknown = sorted(set(table) - set(PROJECT_KEYS))
    if unknown:
        raise InputError(f"{where} has unknown key(s) {', '.join(unknown)} "
                         f"(known: {', '.join(PROJECT_KEYS)})")
    values = {key: _project_value(key, value, where) for key, value in table.items()}
    return ProjectDefaults(source=str(path), **values)


def _project_value(key: str, value, where: str):
    """One checked ``[tool.equivcheck]`` value."""
    from equivcheck.core.spec import Mode, Norm

    choices = {"mode": [m.value for m in Mode], "norm": [n.value for n in Norm],
               "bounds": [m.value for m in BoundMethod], "unknown": list(UNKNOWN_ACTIONS)}
    if key == "timeout":
        try:
            return validate_timeout(value, "timeout")
        except InputError as exc:
            raise InputError(f"{where} {exc}") from None
    if key == "tolerance":
        from equivcheck.core.rational import parse_decimal

        text = value if isinstance(value, str) else repr(value)
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise InputError(f"{where} tolerance must be a decimal number, got {value!r}")
        try:
            q = parse_decimal(text)
        except ValueError:
            raise InputError(f"{where} tolerance {value!r} is not a decimal number") from None
        if q < 0:
            raise InputError(f"{where} tolerance {value!r} is negative")
        return text
    if value not in choices[key]:
        raise InputError(f"{where} {key} = {value!r}: use one of {', '.join(choices[key])}")
    return value
