"""Process-wide memory settings of a node."""

from __future__ import annotations

import ctypes
import platform

#: glibc's ``mallopt`` parameter for the most malloc arenas (malloc.h: ``M_ARENA_MAX``).
_M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int = 1) -> bool:
    """Let glibc's malloc use at most ``arenas`` arenas; call before threads start.
    Returns False where that cannot be set (not glibc).

    Why: by default each thread that allocates gets an arena of its own (up to 8 per
    core), and memory freed in one stays mapped there.  A node's checkpointer,
    committer and ZeroMQ's I/O thread each allocate, while Python's own small objects
    come from pymalloc in any case.  Filling a million keys of three slots on each of
    three nodes (``docs/measurements/fill_rss.py``), RSS after the fill was 391-395 MiB per
    node with the default and 363-365 MiB with one arena, the peak (VmHWM) 392-395
    against 382-384 MiB; window-256 increments ran as fast (34,329 and 34,622 against
    34,651 and 31,348/s, and 39,033 and 42,456 against 34,846 and 33,329/s, alternated;
    WRITEUP.md section 2.3)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False
