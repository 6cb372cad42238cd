"""Child processes that do not outlive the process that started them.

:func:`die_with_parent` is called first thing in every child equivcheck starts (the solver's Z3
child, a campaign's instance, the engine's workers): on Linux the kernel kills the child with
SIGKILL when its parent dies, whatever ends the parent (SIGTERM, SIGKILL, a crash), so no child
goes on working for a parent that is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int, exit_code: int = 1) -> None:
    """In a child: be killed when the parent ``parent_pid`` dies (Linux ``PR_SET_PDEATHSIG``;
    elsewhere nothing, the parent still kills its children when it can), and leave at once,
    with ``exit_code``, if it already has (it died before the request took effect)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(exit_code)
