"""The prune's copy of the kept lines, in a worker thread that leaves the loop the GIL between
windows (its plan is made in a worker process: see ``prune_plan``)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from gastownd.eventlog.logstate import write_all
from gastownd.eventlog.writer import copy_range
from gastownd.process.refusals import StorageError

# The copy's rest between two windows, which lets the event loop and the writer's thread
# have the GIL at once.
PAUSE_S = 0.002
COPY_WINDOW = 1 << 20
# Written data is synced every this many bytes: a big prune's copy never piles
# up in the page cache for one long sync, during which every emit's
# fdatasync would wait on the disk behind it.
SYNC_EVERY_BYTES = 1 << 20


def copy_kept(
    source_fd: int, starts: Sequence[int], lengths: Sequence[int], temp_path: Path
) -> int:
    """Copy the kept byte ranges (``starts[i]``, ``lengths[i]``) to a new file next to the log
    (worker thread)."""
    temp_fd = os.open(
        temp_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o644
    )
    try:
        os.fchmod(temp_fd, os.fstat(source_fd).st_mode & 0o7777)
        copy_ranges(source_fd, temp_fd, starts, lengths)
        os.fsync(temp_fd)
    except BaseException:
        os.close(temp_fd)
        temp_path.unlink(missing_ok=True)
        raise
    return temp_fd


def copy_ranges(source: int, target: int, starts: Sequence[int], lengths: Sequence[int]) -> None:
    """Copy many byte ranges with few syscalls: read a window, write its kept slices."""
    index = 0
    unsynced = 0
    while index < len(starts):
        window_start = starts[index]
        group_end = index
        while (
            group_end < len(starts)
            and starts[group_end] + lengths[group_end] - window_start <= COPY_WINDOW
        ):
            group_end += 1
        if group_end == index:  # one range larger than the window
            copy_range(source, target, starts[index], lengths[index])
            index += 1
            continue
        window_end = starts[group_end - 1] + lengths[group_end - 1]
        window = os.pread(source, window_end - window_start, window_start)
        if len(window) != window_end - window_start:
            raise StorageError("the event log shrank during a copy")
        view = memoryview(window)
        data = b"".join(
            view[start - window_start : start - window_start + length]
            for start, length in zip(starts[index:group_end], lengths[index:group_end], strict=True)
        )
        write_all(target, data)
        unsynced += len(data)
        if unsynced >= SYNC_EVERY_BYTES:
            os.fdatasync(target)
            unsynced = 0
        index = group_end
        time.sleep(PAUSE_S)  # let the event loop have the GIL between windows
