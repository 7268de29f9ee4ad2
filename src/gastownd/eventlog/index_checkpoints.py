"""Index checkpoints: the index saved now and then (``index.snapshot``), so that a
restart, even after kill -9, indexes only what was appended since."""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
import anyio.to_thread
import structlog

from gastownd.core.index import EventIndex
from gastownd.eventlog.logstate import (
    SNAPSHOT_VERSION,
    SeqMap,
    SnapshotMeta,
    read_tail,
    write_snapshot,
)
from gastownd.eventlog.recovery import SNAPSHOT_NAME, PendingIndex

log = structlog.get_logger("gastownd.eventlog")


# An index checkpoint (snapshot) is written when this many lines were indexed
# since the last one, or when the log changed and this long has passed: a
# restart after kill -9 then indexes only what came since.
CHECKPOINT_LINES = 50_000
CHECKPOINT_INTERVAL_S = 60.0
CHECKPOINT_POLL_S = 1.0


class IndexCheckpoints:
    """``EventLog``'s snapshots (its state is set up by ``EventLog``)."""

    index: EventIndex
    seqmap: SeqMap
    fd: int
    inode: int
    state_dir: Path
    _pending: PendingIndex | None
    _snapshot_lock: anyio.Lock
    _snapshot_at: tuple[int, int]

    async def save_snapshot(self) -> None:
        """Save the index so the next start reads only what was appended since.

        The lines indexed so far are exported in a worker thread: the index
        only grows at its end meanwhile, and a prune or a rewrite replaces it
        as a whole, so the first ``count`` lines stay as they were.
        """
        async with self._snapshot_lock:
            index = self.index
            count = len(index)
            end = index.end
            inode, epoch = self.inode, self.seqmap.epoch
            fd = os.dup(self.fd)
            try:
                await anyio.to_thread.run_sync(
                    _write_snapshot,
                    self.state_dir / SNAPSHOT_NAME,
                    index,
                    count,
                    end,
                    fd,
                    inode,
                    epoch,
                )
            finally:
                os.close(fd)
            self._snapshot_at = (inode, count)

    async def run_checkpoints(self) -> None:
        """Save the index now and then, so that a restart after a crash is short too."""
        last_saved = time.monotonic()
        while True:
            await anyio.sleep(CHECKPOINT_POLL_S)
            if self._pending is not None:
                continue  # the live part alone is no snapshot
            inode, count = self._snapshot_at
            changed = inode != self.inode or count != len(self.index)
            if not changed:
                last_saved = time.monotonic()
                continue
            due = time.monotonic() - last_saved >= CHECKPOINT_INTERVAL_S
            if inode != self.inode or len(self.index) - count >= CHECKPOINT_LINES or due:
                try:
                    await self.save_snapshot()
                except OSError as exc:
                    log.warning("index_snapshot_not_saved", error=exc.strerror)
                last_saved = time.monotonic()


def _write_snapshot(
    path: Path, index: EventIndex, count: int, end: int, fd: int, inode: int, epoch: int
) -> None:
    tail = read_tail(fd, end)
    header, blobs = index.export(count, end)
    meta = SnapshotMeta(
        version=SNAPSHOT_VERSION,
        inode=inode,
        epoch=epoch,
        tail=tail,
        header=header,
        blob_sizes=[len(b) for b in blobs],
    )
    write_snapshot(path, meta, blobs)
