"""The command line's progress line: what a long command shows on stderr while it runs.

:class:`ProgressLine` is the :data:`~equivcheck.core.progress.ProgressFn` every long command
hands to the library. It shows nothing for the first second (a quick check prints only its
result); after that, on a terminal, one rich line that is redrawn in place (stage, work done and
open, best bound so far, seconds left) and cleared when the command ends; elsewhere (a log, a
pipe, ``--json``) a plain line on stderr at most every :data:`PLAIN_INTERVAL` seconds. stdout is
never written (``--json`` keeps its one object there), and ``--quiet`` shows nothing at all.
rich is imported only when a terminal line is first drawn.

Library stages report when they can, and some (a solver call, bounds of a large network) run for
many seconds without a report. With a ``heartbeat`` (what the commands and the pytest plugin
use), a background thread shows the line anyway: the latest report with its clocks moving, or
``working`` before the first one, so a long run is never silent.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from equivcheck.core.progress import Progress

QUIET_SECONDS = 1.0  # nothing is shown before the command has run this long
PLAIN_INTERVAL = 5.0  # seconds between two plain lines
TTY_INTERVAL = 0.1  # seconds between two redraws of the terminal line
HEARTBEAT = 0.5  # seconds between two looks of the heartbeat thread of the commands


def describe(event: Progress) -> str:
    """One event in words: ``search: 120 nodes done, 34 open, best bound 0.0123, 12 s left``."""
    parts = [f"{event.done:,} {event.unit} done", f"{event.open:,} open"]
    if event.bound is not None:
        parts.append(f"best bound {event.bound:.6g}")
    if event.seconds_left is not None:
        parts.append(f"{max(event.seconds_left, 0.0):.0f} s left")
    text = f"{event.stage}: " + ", ".join(parts)
    return f"{text} ({event.detail})" if event.detail else text


class ProgressLine:
    """A :data:`ProgressFn` that shows the latest event on ``stream`` (stderr by default).

    ``tty`` (default: ``stream.isatty()``) chooses the redrawn rich line over plain lines;
    ``quiet`` shows nothing. ``clock`` is the time source (tests pass a fake one). With
    ``heartbeat`` (seconds), a daemon thread looks that often and shows the line even when no
    report came (see the module's docstring). Use it as a context manager, or call
    :meth:`close` when the command ends: it clears the terminal line and stops the thread.
    """

    def __init__(self, *, quiet: bool = False, tty: bool | None = None, stream: IO[str] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 heartbeat: float | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.tty = _is_tty(self.stream) if tty is None else tty
        self.clock = clock
        self.started = clock()
        self._last_shown: float | None = None  # when a line was last written or drawn
        self._live: Any = None  # the rich Live of the terminal line, once drawn
        self._event: Progress | None = None  # the latest event drawn, and when it came
        self._event_time = self.started
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        if heartbeat is not None and not quiet:
            self._beat = threading.Thread(target=self._heartbeat, args=(heartbeat,), daemon=True,
                                          name="equivcheck-progress")
            self._beat.start()

    def __call__(self, event: Progress) -> None:
        if self.quiet:
            return
        now = self.clock()
        with self._lock:
            if self.quiet:  # closed meanwhile
                return
            self._event, self._event_time = event, now  # rich's thread redraws it at its pace
            if now - self.started < QUIET_SECONDS:  # kept (the heartbeat's first line shows it)
                return
            if self._last_shown is not None and now - self._last_shown < (
                    TTY_INTERVAL if self.tty else PLAIN_INTERVAL):
                return
            self._last_shown = now
            try:
                if self.tty:
                    self._draw()
                else:
                    self._write(event, now)
            except (OSError, ValueError):  # a closed or broken stderr never stops the check
                self.quiet = True

    def _write(self, event: Progress | None, now: float) -> None:
        self.stream.write(f"equivcheck: [{now - self.started:.0f} s] {self._describe(event, now)}\n")
        self.stream.flush()

    def _describe(self, event: Progress | None, now: float) -> str:
        """``event`` in words, its seconds left counted down since it came; ``working`` before
        the first one."""
        if event is None:
            return "working (no progress report yet)"
        if event.seconds_left is not None:
            left = event.seconds_left - (now - self._event_time)
            event = dataclasses.replace(event, seconds_left=left)
        return describe(event)

    def _heartbeat(self, interval: float) -> None:
        """Show the line when the stages are silent: on a terminal, draw it (rich's thread then
        redraws it); in a log, the latest report (or ``working``) every :data:`PLAIN_INTERVAL`."""
        while not self._stop.wait(interval):
            with self._lock:
                if self.quiet:
                    return
                now = self.clock()
                if now - self.started < QUIET_SECONDS:
                    continue
                try:
                    if self.tty:
                        if self._live is None:
                            self._draw()
                    elif self._last_shown is None or now - self._last_shown >= PLAIN_INTERVAL:
                        self._last_shown = now
                        self._write(self._event, now)
                except (OSError, ValueError):
                    self.quiet = True

    def _draw(self) -> None:
        if self._live is None:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self.stream, highlight=False, force_terminal=True)
            # redrawn by rich's thread too, so the clocks tick while no event comes (a long
            # solver call); stdout stays untouched, other stderr writes print above the line
            self._live = Live(_Line(self), console=console, refresh_per_second=2, transient=True,
                              redirect_stdout=False)
            self._live.start()
        self._live.refresh()

    def text(self) -> str:
        """The terminal line now: the latest event, its seconds left counted down since it came,
        and the seconds since the command started."""
        now = self.clock()
        return f"{self._describe(self._event, now)}  [{now - self.started:.0f} s]"

    def close(self) -> None:
        """Clear the terminal line (plain lines stay: they are the log) and stop the heartbeat."""
        self._stop.set()
        with self._lock:
            if self._live is not None:
                live, self._live = self._live, None
                live.stop()
            self.quiet = True

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Line:
    """The terminal line as a rich renderable, recomputed at every redraw."""

    def __init__(self, owner: ProgressLine) -> None:
        self.owner = owner

    def __rich__(self):
        from rich.text import Text

        return Text(self.owner.text(), style="dim", no_wrap=True, overflow="ellipsis")


def _is_tty(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
