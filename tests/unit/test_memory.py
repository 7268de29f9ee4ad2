"""Memory freed after a burst goes back to the system, once the resident size has grown."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")

# In a process of its own: the test runner's heap already holds freed memory a burst would
# reuse, which would hide what is measured.
BURST = """
import json, anyio
from gastownd.process.memory import release_periodically, resident_bytes

async def main():
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(release_periodically, 0.05, {when_grown})
        await anyio.sleep(0.2)
        steady = resident_bytes()
        # 160 MiB in blocks glibc takes from its heap, half of them freed: holes it keeps.
        blocks = [bytes(80_000) for _ in range(2_000)]
        kept = blocks[1::2]
        del blocks
        grown = resident_bytes()
        await anyio.sleep(0.5)
        released = resident_bytes()
        tasks.cancel_scope.cancel()
    print(json.dumps([steady, grown, released, len(kept)]))

anyio.run(main)
"""
MIB = 1 << 20


def burst(when_grown: int) -> tuple[int, int, int]:
    done = subprocess.run(
        [sys.executable, "-c", BURST.format(when_grown=when_grown)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # The last line: structlog, not configured here, prints its own lines before it.
    steady, grown, released, kept = json.loads(done.stdout.splitlines()[-1])
    assert kept == 1_000 and grown - steady > 100 * MIB  # the freed half is still resident
    return steady, grown, released


def test_a_burst_freed_is_given_back() -> None:
    steady, grown, released = burst(32 * MIB)
    assert grown - released > 50 * MIB, (steady // MIB, grown // MIB, released // MIB)


def test_no_release_below_the_growth_asked_for() -> None:
    steady, grown, released = burst(1 << 40)
    assert grown - released < 10 * MIB, (steady // MIB, grown // MIB, released // MIB)
