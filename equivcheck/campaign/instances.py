"""A campaign's instances: the rows of a VNN-COMP-style CSV file, checked before any work.

One row per instance, no header required (a first row ``a,b,...`` is read as a header):
``a,b,domain,mode,tolerance,timeout[,family]``. Trailing columns may be left out: the domain
defaults to ``[0, 1]`` on every input, the mode to ``strict``, the tolerance is empty for
``strict`` and ``argmax``, the timeout defaults to :data:`~equivcheck.core.options.DEFAULT_TIMEOUT`
and the family to the CSV file's name. Relative paths are resolved against the CSV's folder.
Blank lines and lines starting with ``#`` are skipped. A row is named by its line number.
"""

from __future__ import annotations

import csv
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from equivcheck.core.deadline import validate_timeout
from equivcheck.core.options import DEFAULT_TIMEOUT
from equivcheck.core.spec import Mode, Spec
from equivcheck.errors import InputError
from equivcheck.io.domains import parse_domain

COLUMNS = ("a", "b", "domain", "mode", "tolerance", "timeout", "family")
DOMAIN_SUFFIXES = (".vnnlib", ".json")


class CampaignRowError(InputError):
    """A row of a campaign's CSV file cannot be run (CLI exit code 4); the message names the
    file and the line."""


class CampaignFileError(InputError):
    """A campaign's CSV or results file cannot be read, or does not belong to the campaign."""


@dataclass(frozen=True)
class Instance:
    """One check of a campaign: what ``equivcheck prove`` would be run with.

    ``row`` is the instance's line number in the CSV file (1-based); ``a``, ``b`` and a domain
    file are absolute paths; ``tolerance`` is the text as written (read exactly by the prover),
    None for strict and argmax."""

    row: int
    a: str
    b: str
    domain: str | None
    mode: str
    tolerance: str | None
    timeout: float
    family: str

    def key(self) -> str:
        """What identifies the instance in a results file (its row and its inputs): a record
        whose key differs belongs to another campaign."""
        text = "|".join(str(v) for v in (self.row, self.a, self.b, self.domain, self.mode,
                                          self.tolerance, self.timeout))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {"row": self.row, "a": self.a, "b": self.b, "domain": self.domain,
                "mode": self.mode, "tolerance": self.tolerance, "timeout": self.timeout,
                "family": self.family, "key": self.key()}


def read_instances(path: str | Path) -> list[Instance]:
    """Every instance of the CSV file at ``path``, each checked: model files exist and are
    regular files, the domain is ``LO:HI`` or an existing ``.vnnlib``/``.json`` file, the mode
    and tolerance make a spec, the timeout is a positive finite number of seconds. Raises a
    :class:`CampaignRowError` naming the first bad row (nothing is run before), or a
    :class:`CampaignFileError` for a file that cannot be read or holds no instance."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CampaignFileError(f"{path}: cannot read the instances file "
                                f"({getattr(exc, 'strerror', None) or exc})") from None
    base = path.resolve().parent
    instances: list[Instance] = []
    reader = csv.reader(text.splitlines())
    for cells in reader:
        line = reader.line_num
        cells = [c.strip() for c in cells]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if not instances and [c.lower() for c in cells[:2]] == ["a", "b"]:
            continue  # a header
        instances.append(_instance(path, base, line, cells))
    if not instances:
        raise CampaignFileError(f"{path}: no instances (one row per instance: "
                                f"{','.join(COLUMNS[:6])})")
    return instances


def _instance(path: Path, base: Path, line: int, cells: list[str]) -> Instance:
    where = f"{path}:{line}"
    if len(cells) < 2 or not cells[0] or not cells[1]:
        raise CampaignRowError(f"{where}: a row needs at least the two models (columns "
                               f"{','.join(COLUMNS[:6])})")
    if len(cells) > len(COLUMNS):
        raise CampaignRowError(f"{where}: {len(cells)} columns, at most {len(COLUMNS)} "
                               f"({','.join(COLUMNS)})")
    cells = cells + [""] * (len(COLUMNS) - len(cells))
    a, b, domain, mode, tolerance, timeout, family = cells
    models = [_model(where, base, name, text) for name, text in (("a", a), ("b", b))]
    dom = _domain(where, base, domain) if domain else None
    mode = mode.lower() or Mode.STRICT.value
    try:
        Spec.make(mode, tolerance or None)
    except InputError as exc:
        raise CampaignRowError(f"{where}: {exc}") from None
    try:
        seconds = validate_timeout(timeout, "timeout") if timeout else DEFAULT_TIMEOUT
    except InputError as exc:
        raise CampaignRowError(f"{where}: {exc}") from None
    return Instance(line, models[0], models[1], dom, mode, tolerance or None, seconds,
                    family or path.stem)


def _resolve(base: Path, text: str) -> Path:
    p = Path(os.path.expanduser(text))
    return p if p.is_absolute() else base / p


def _model(where: str, base: Path, name: str, text: str) -> str:
    p = _resolve(base, text)
    try:
        st = os.stat(p)
    except (OSError, ValueError):
        raise CampaignRowError(f"{where}: model {name} {text}: no such file") from None
    if not stat.S_ISREG(st.st_mode):
        raise CampaignRowError(f"{where}: model {name} {text}: not a regular file")
    return str(p)


def _domain(where: str, base: Path, text: str) -> str:
    if text.lower().endswith(DOMAIN_SUFFIXES):
        p = _resolve(base, text)
        if not p.is_file():
            raise CampaignRowError(f"{where}: domain {text}: no such file")
        return str(p)
    try:
        parse_domain(text, 1)  # LO:HI, read exactly: the same text holds for any input count
    except InputError as exc:
        raise CampaignRowError(f"{where}: {exc}") from None
    return text
