"""The C allocator's settings for the processes that run checks: :func:`tune_malloc`.

Why (measured, ``benchmarks/campaign.py --slowdown``): a Dask nanny starts its worker with
``MALLOC_TRIM_THRESHOLD_=65536`` in the environment (``distributed.nanny.pre-spawn-environ``,
so that workers give memory back to the OS). Setting any glibc threshold turns off glibc's
dynamic mmap threshold, so every block over 128 KiB (the engine's temporary arrays, thousands
per second) is a fresh ``mmap`` whose pages fault in on first touch and go back to the OS on
``free``. The same ACAS Xu instances took 1.7-1.9x the wall time in a worker's child (system
time 0.16 -> 0.6-1.4 s, minor page faults 70,000 -> 300,000-570,000 per instance), which
was the campaign's unexplained "2x slower on the LocalCluster". Large fixed thresholds (blocks
up to 32 MiB from the heap, which keeps up to 64 MiB free before trimming) bring them back
under the plain process' times (fewer faults than glibc's default too: 6,600 per instance).

Speed only: no result depends on it. A no-op where the C library is not glibc.
"""

from __future__ import annotations

import contextlib
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest dynamic mmap threshold (64-bit)
TRIM_THRESHOLD = 64 << 20  # twice it, as glibc's dynamic rule keeps it
ENV_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_",
                "MALLOC_MMAP_MAX_")  # what a nanny may set: dropped for LocalCluster workers


def tune_malloc() -> bool:
    """Set this process' mmap threshold to 32 MiB and trim threshold to 64 MiB (glibc, Linux);
    True when both were set. Children forked afterwards inherit the settings."""
    if not sys.platform.startswith("linux"):
        return False
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
            bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return False


def worker_environ(environ: dict) -> dict:
    """``environ`` (a nanny's ``pre-spawn-environ``) without the allocator settings."""
    return {k: v for k, v in environ.items() if k not in ENV_SETTINGS}


@contextlib.contextmanager
def malloc_defaults():
    """While inside, Dask nannies created here start their workers with glibc's default
    allocator: their ``pre-spawn-environ`` without the ``MALLOC_*`` settings, and none in this
    process' environment for the workers to inherit (a nanny writes its settings into the
    environment of the process that runs it, so an earlier LocalCluster of this process left
    them there); the environment is restored on leaving."""
    import dask

    saved = {k: os.environ.pop(k) for k in ENV_SETTINGS if k in os.environ}
    env = worker_environ(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": env}):
            yield
    finally:
        os.environ.update(saved)
