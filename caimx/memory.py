"""Fewer glibc malloc arenas in the processes that run the engine.

glibc gives each thread that allocates its own malloc arena (up to 8 per core) and keeps what is
freed there for that arena's later use. The engine's reader, batch and candidate threads each
allocate and free hundreds of megabytes per chunk, so with the default the peak resident memory
of a worker grows by the arenas' idle free lists. ``MALLOC_ARENA_MAX`` in the environment caps
them, but only if it is set before the process starts; ``mallopt(M_ARENA_MAX, n)`` called early,
before the threads start, has the same effect from inside the process.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

#: ``M_ARENA_MAX`` of glibc's ``<malloc.h>``.
M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas at ``arenas`` (0: leave glibc's default).

    A ``MALLOC_ARENA_MAX`` already in the environment wins (glibc has applied it). Returns
    whether the cap was set here; ``False`` on a C library without ``mallopt`` (musl, macOS).
    """
    if arenas <= 0 or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:  # the symbols the process already has: no library search (find_library forks)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        log.debug("no mallopt in this C library; malloc arenas left as they are")
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(M_ARENA_MAX, int(arenas)) == 1
