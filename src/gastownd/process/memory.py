"""Memory the allocator keeps after a burst, given back to the system.

glibc keeps what a process frees for its next allocations: after a burst (a flood of large
requests, a long log parsed) the daemon stayed hundreds of megabytes above what it holds
(448 MiB resident, idle, after 40 connections had each sent 64 emits of 1 MiB; 37 MiB once
trimmed). ``malloc_trim`` gives the free pages back. The housekeeping asks for it once the
resident size has grown by ``RELEASE_WHEN_GROWN`` since the last time (``release_periodically``),
so an idle or steady daemon never pays for it.
"""

from __future__ import annotations

import contextlib
import os
import sys

import anyio
import anyio.to_thread
import structlog

log = structlog.get_logger("gastownd.memory")

RELEASE_EVERY_S = 30.0
RELEASE_WHEN_GROWN = 32 << 20
_MIB = 1 << 20


def resident_bytes() -> int:
    """This process's resident set size (0 where /proc has no ``statm``)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def release_freed_memory() -> None:
    """Give back to the system what the process freed (glibc keeps it otherwise). Blocking:
    a large heap takes milliseconds to walk."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes  # here: the first answer never needs it, and it costs every start ~1 ms

    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


async def release_periodically(
    every_s: float = RELEASE_EVERY_S, when_grown: int = RELEASE_WHEN_GROWN
) -> None:
    """Every ``every_s``, release freed memory if the resident size grew by ``when_grown``
    since the last release (or the start); runs until cancelled."""
    floor = resident_bytes()
    while True:
        await anyio.sleep(every_s)
        before = resident_bytes()
        if before - floor < when_grown:
            continue
        await anyio.to_thread.run_sync(release_freed_memory)
        floor = resident_bytes()
        if before - floor >= when_grown:
            log.info("memory_released", before_mib=before // _MIB, after_mib=floor // _MIB)
