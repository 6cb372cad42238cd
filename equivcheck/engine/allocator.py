"""Keep the engine's large temporaries off ``mmap``: glibc's allocator thresholds, set once.

Every bounding round makes and drops hundreds of numpy temporaries of a few MB (the
``[boxes, rows, units]`` coefficients of a back-substitution: 256 x 50 x 50 doubles on ACAS Xu).
glibc serves blocks above its mmap threshold (128 KiB, raised on the fly only up to the size of
the last block freed) with a fresh ``mmap`` and gives them back with ``munmap``, and trims the
heap's free top past its trim threshold, so the pages of nearly every temporary are faulted in
and zeroed by the kernel again. On ACAS Xu N2,7 vs its float16 copy over prop_1 (epsilon 0.05,
797 nodes, one core) that was 1.4 s of system time in a 6.9 s run; with the thresholds below
the same search takes 5.1 s (0.1 s of system time) and the same peak memory.

:func:`tune` raises the mmap threshold to :data:`MMAP_BYTES` and the trim threshold to
:data:`TRIM_BYTES`, once per process, through ``mallopt``. It changes how fast memory is
allocated, never what is computed. It does nothing (and says so by returning False) off glibc,
when ``EQUIVCHECK_MALLOPT=0`` is set, or when the user already tuned the allocator
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, or ``malloc.`` tunables in
``GLIBC_TUNABLES``): their choice wins. The cost is that up to :data:`TRIM_BYTES` of freed heap
may stay with the process instead of going back to the system.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_BYTES = 64 << 20  # blocks above this still get their own mapping (rare: CNN chunks)
TRIM_BYTES = 256 << 20  # free heap kept for the next round's temporaries

_state: dict = {}


def _user_tuned() -> bool:
    env = os.environ
    if env.get("EQUIVCHECK_MALLOPT", "").strip() == "0":
        return True
    if "MALLOC_MMAP_THRESHOLD_" in env or "MALLOC_TRIM_THRESHOLD_" in env:
        return True
    return "malloc." in env.get("GLIBC_TUNABLES", "")


def tune() -> bool:
    """Set glibc's mmap and trim thresholds for the engine's temporaries (first call only);
    returns whether they are set by this module. Never raises."""
    if "set" not in _state:
        _state["set"] = _apply()
    return _state["set"]


def _apply() -> bool:
    if not sys.platform.startswith("linux") or _user_tuned():
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return False
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError, ValueError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # the mmap threshold first: setting either one freezes glibc's on-the-fly adjustment
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_BYTES))
