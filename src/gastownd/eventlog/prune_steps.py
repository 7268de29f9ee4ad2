"""The prune's heavy parts: steps computed on the event loop a slice at a time, and the copy
of the kept lines in a worker thread that leaves the loop the GIL between windows."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Generator
from pathlib import Path
from typing import TypeVar

import anyio

from gastownd.core.index import EventIndex
from gastownd.core.retention import STEP
from gastownd.eventlog.logstate import write_all
from gastownd.eventlog.writer import copy_range
from gastownd.process.refusals import StorageError

T = TypeVar("T")

# Longest stretch of prune work on the event loop between two turns (see cooperate).
SLICE_S = 0.001
PAUSE_S = 0.002
COPY_WINDOW = 1 << 20
# Written data is synced every this many bytes: a big prune's copy never piles
# up in the page cache for one long sync, during which every emit's
# fdatasync would wait on the disk behind it.
SYNC_EVERY_BYTES = 1 << 20


def copy_kept(source_fd: int, ranges: list[tuple[int, int]], temp_path: Path) -> int:
    """Copy the kept byte ranges to a new file next to the log (worker thread)."""
    temp_fd = os.open(
        temp_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o644
    )
    try:
        os.fchmod(temp_fd, os.fstat(source_fd).st_mode & 0o7777)
        copy_ranges(source_fd, temp_fd, ranges)
        os.fsync(temp_fd)
    except BaseException:
        os.close(temp_fd)
        temp_path.unlink(missing_ok=True)
        raise
    return temp_fd


async def cooperate(steps: Generator[None, None, T]) -> T:
    """Run a stepped computation on the event loop in slices of ``SLICE_S``.

    Between slices the loop polls its sockets and runs whatever is ready, so
    a request waits at most a slice per loop turn it needs.
    """
    deadline = time.monotonic() + SLICE_S
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        if time.monotonic() >= deadline:
            # A real pause, not just a turn: worker threads (an append's write and
            # fdatasync) then get the GIL at once instead of queueing behind us.
            await anyio.sleep(PAUSE_S)
            deadline = time.monotonic() + SLICE_S


def ranges_steps(
    index: EventIndex, positions: list[int]
) -> Generator[None, None, list[tuple[int, int]]]:
    """The kept lines as (offset, length) byte ranges, consecutive lines merged."""
    ranges: list[tuple[int, int]] = []
    start = end = -1
    offsets = index.offsets
    for done, position in enumerate(positions):
        if done % STEP == 0:
            yield
        offset = offsets[position]
        length = index.length(position)
        if offset == end:
            end += length
            continue
        if start >= 0:
            ranges.append((start, end - start))
        start, end = offset, offset + length
    if start >= 0:
        ranges.append((start, end - start))
    return ranges


def complement_steps(keep: list[int], count: int) -> Generator[None, None, list[int]]:
    """The positions below ``count`` that ``keep`` (sorted) leaves out, in steps."""
    removed: list[int] = []
    previous = -1
    for done, kept in enumerate(itertools.chain(keep, (count,))):
        if done % STEP == 0:
            yield
        if kept > previous + 1:
            removed.extend(range(previous + 1, min(kept, count)))
        previous = kept
    return removed


def copy_ranges(source: int, target: int, ranges: list[tuple[int, int]]) -> None:
    """Copy many byte ranges with few syscalls: read a window, write its kept slices."""
    index = 0
    unsynced = 0
    while index < len(ranges):
        window_start = ranges[index][0]
        group_end = index
        while (
            group_end < len(ranges)
            and ranges[group_end][0] + ranges[group_end][1] - window_start <= COPY_WINDOW
        ):
            group_end += 1
        if group_end == index:  # one range larger than the window
            copy_range(source, target, *ranges[index])
            index += 1
            continue
        last_start, last_length = ranges[group_end - 1]
        window = os.pread(source, last_start + last_length - window_start, window_start)
        if len(window) != last_start + last_length - window_start:
            raise StorageError("the event log shrank during a copy")
        view = memoryview(window)
        data = b"".join(
            view[start - window_start : start - window_start + length]
            for start, length in ranges[index:group_end]
        )
        write_all(target, data)
        unsynced += len(data)
        if unsynced >= SYNC_EVERY_BYTES:
            os.fdatasync(target)
            unsynced = 0
        index = group_end
        time.sleep(PAUSE_S)  # let the event loop have the GIL between windows
