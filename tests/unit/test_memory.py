"""Memory freed after a burst goes back to the system, once the resident size has grown."""

from __future__ import annotations

import sys

import anyio
import pytest

from gastownd.process.memory import release_periodically, resident_bytes

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim"),
]
MIB = 1 << 20


def burst() -> list[bytes]:
    """160 MiB in blocks glibc takes from its heap, half of them freed: holes it keeps."""
    blocks = [bytes(80_000) for _ in range(2_000)]
    kept = blocks[1::2]
    del blocks
    return kept


async def test_a_burst_freed_is_given_back_and_a_steady_size_is_left_alone() -> None:
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(release_periodically, 0.05, 32 * MIB)
        await anyio.sleep(0.2)
        steady = resident_bytes()  # nothing grew: no release, nothing changes
        kept = burst()
        grown = resident_bytes()
        assert grown - steady > 100 * MIB  # the freed half is still resident
        await anyio.sleep(0.5)
        released = resident_bytes()
        tasks.cancel_scope.cancel()
    assert grown - released > 50 * MIB, (steady // MIB, grown // MIB, released // MIB)
    assert len(kept) == 1_000
