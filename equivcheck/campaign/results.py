"""A campaign's results file (one JSON line per finished instance) and its summary.

Lines are appended and flushed one at a time, so an interrupted campaign keeps every finished
instance. :func:`finished_rows` reads a file back for ``--resume``: complete lines only (a line
cut short by a crash is dropped when the file is rewritten), each checked against the
campaign's instance of that row.
"""

from __future__ import annotations

import json
import os
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from equivcheck.campaign.instances import CampaignFileError, Instance

VERDICTS = ("proved", "refuted", "unknown", "error")


def finished_rows(path: Path, instances: list[Instance]) -> dict[int, dict]:
    """The records already in ``path`` by row (none if the file does not exist). Raises a
    :class:`CampaignFileError` when a record's row is not an instance of this campaign or its
    instance differs (another CSV's results). The file is rewritten without lines that are not
    complete records (a line cut short when the campaign was stopped)."""
    if not path.exists():
        return {}
    by_row = {inst.row: inst for inst in instances}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CampaignFileError(f"{path}: cannot read the results to resume "
                                f"({getattr(exc, 'strerror', None) or exc})") from None
    done: dict[int, dict] = {}
    kept: list[str] = []
    for n, line in enumerate(lines, 1):
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # cut short: the instance is run again
        row = rec.get("row") if isinstance(rec, dict) else None
        if row not in by_row:
            raise CampaignFileError(f"{path}:{n}: row {row!r} is not an instance of this campaign")
        key = (rec.get("instance") or {}).get("key")
        if key != by_row[row].key():
            raise CampaignFileError(f"{path}:{n}: row {row} was run on other inputs than this "
                                    "campaign's (another instances file?)")
        if row not in done:
            done[row] = rec
            kept.append(line)
    if len(kept) != len(lines):
        _rewrite(path, kept)
    return done


def _rewrite(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)


class ResultsFile:
    """Appends each instance's record once (a second record of a row is dropped: an instance
    that a cluster ran twice is counted once)."""

    def __init__(self, path: Path | None, done: dict[int, dict], append: bool) -> None:
        self.path = path
        self.records: dict[int, dict] = dict(done)
        self._f = None
        if path is not None:
            self._f = open(path, "a" if append else "w", encoding="utf-8")  # noqa: SIM115

    def add(self, rec: dict) -> bool:
        """Write ``rec`` (flushed); False when its row already has a record."""
        row = rec["row"]
        if row in self.records:
            return False
        self.records[row] = rec
        if self._f is not None:
            from equivcheck.core.result import json_text

            self._f.write(json_text(rec) + "\n")
            self._f.flush()
        return True

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


@dataclass(frozen=True)
class Summary:
    """Counts per verdict, and the median and largest time of the finished instances."""

    total: int
    finished: int
    counts: tuple[tuple[str, int], ...]
    median_seconds: float
    max_seconds: float
    wall_seconds: float

    @classmethod
    def of(cls, records: list[dict], total: int, wall: float) -> "Summary":
        counts = Counter(r.get("verdict", "error") for r in records)
        times = [float(r.get("seconds") or 0.0) for r in records]
        return cls(total, len(records), tuple((v, counts.get(v, 0)) for v in VERDICTS),
                   statistics.median(times) if times else 0.0, max(times, default=0.0), wall)

    def text(self) -> str:
        """The summary table (plain text, one line per verdict)."""
        lines = [f"{'verdict':<10} {'count':>6}"]
        lines += [f"{v:<10} {n:>6}" for v, n in self.counts]
        lines.append(f"{'finished':<10} {self.finished:>6} of {self.total}")
        lines.append(f"time per instance: median {self.median_seconds:.3f} s, "
                     f"max {self.max_seconds:.3f} s; wall {self.wall_seconds:.2f} s")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        return {"total": self.total, "finished": self.finished, "counts": dict(self.counts),
                "median_seconds": self.median_seconds, "max_seconds": self.max_seconds,
                "wall_seconds": self.wall_seconds}
