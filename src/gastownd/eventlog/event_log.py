"""The event log as the daemon holds it: the index, the seqs, and the parts that change them.

The state every part shares lives here: the index of every complete line of
``<town>/.events.jsonl``, the seqmap, the descriptor that readers use, the
counters and the archive. It changes only on the event loop, in file order:
when the writer's thread reports a batch (others' lines first, then ours) or
a rewrite by another tool, and when a prune swaps the file in. ``EventLog``
holds that state, opens and closes the log and takes the appends; its other
concerns are mixed in, one module each: ``index_upkeep`` (the index kept
current with the file), ``background_index`` (old lines indexed while the
daemon serves), ``index_checkpoints`` (snapshots) and ``reads`` (reads of the
moment). Around it: ``recovery`` (start-up), ``writer`` (the only writer of
the file: Gas Town's lock, group commit, one thread), ``pruner`` (retention),
``archive_files`` (pruned lines) and ``logstate`` (seqmap and snapshot files).

Line identity: every line gets a ``seq`` (see ``core.index``); a cursor is
``"<epoch>:<seq>"``. The seqs of a file are derived, not stored per line:
lines are numbered in file order from ``base``, except after a rewrite,
when a small "seqmap" file (``.gastownd/seqmap-<inode>.json``) records the
runs of seqs the rewritten file starts with. The epoch changes only when the
log was replaced while the daemon was not watching, which makes old cursors
resync instead of silently pointing at other lines.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import anyio.to_thread
import msgspec
import structlog

from gastown_client.protocol import PruneResult
from gastownd.core.index import EventIndex, Known
from gastownd.core.query import CompiledFilter
from gastownd.eventlog.archive_files import Archive
from gastownd.eventlog.background_index import BackgroundIndexing
from gastownd.eventlog.index_checkpoints import IndexCheckpoints
from gastownd.eventlog.index_upkeep import IndexUpkeep
from gastownd.eventlog.logstate import SeqMap, write_seqmap
from gastownd.eventlog.reads import READ_THREADS, Answer, Backlog, BacklogGap, LogReads
from gastownd.eventlog.reads import query as query_log
from gastownd.eventlog.recovery import BACKGROUND_MIN_BYTES, PendingIndex, recover
from gastownd.eventlog.shared_runs import SharedRuns
from gastownd.eventlog.subscriptions import Published
from gastownd.eventlog.writer import Append, Batch, LogFile, Writer
from gastownd.metrics.buckets import PRUNE_SECONDS, Buckets
from gastownd.process.config import EventLogConfig, parse_duration
from gastownd.process.refusals import ShuttingDownError, StorageError
from gastownd.server.ratelog import rate_limited

__all__ = ["Backlog", "BacklogGap", "EventLog"]

log = structlog.get_logger("gastownd.eventlog")

# How long a query waits for the background index before answering without it.
QUERY_WAIT_S = 5.0


class EventLog(IndexUpkeep, BackgroundIndexing, IndexCheckpoints, LogReads):
    def __init__(
        self,
        events_path: Path,
        lock_path: Path,
        state_dir: Path,
        config: EventLogConfig,
        publish: Callable[[list[Published]], None],
    ) -> None:
        self.path = events_path
        self.lock_path = lock_path
        self.state_dir = state_dir
        self.config = config
        self._publish = publish
        self.index = EventIndex()
        self.seqmap = SeqMap(epoch=1, inode=0)
        # The descriptor reads use; it changes (on the loop) when a prune or a rewrite does.
        self.fd = -1
        self.inode = 0
        self.file: LogFile | None = None
        self._writer: Writer | None = None
        self.prune_lock = anyio.Lock()
        # The ``prune`` op's runs, keyed by dry_run: a backlog of requests is bounded.
        self.prune_requests: SharedRuns[PruneResult] = SharedRuns()
        # Held while lines move from the log to the archive, and by readers of both.
        self.archive_lock = anyio.Lock()
        # Counts the batches moved to the archive: a replay reopens it when this changes.
        self.archive_generation = 0
        self.read_threads = anyio.CapacityLimiter(READ_THREADS)
        self.archive = Archive(state_dir / "archive")
        self._snapshot_lock = anyio.Lock()
        self._queued = 0  # appends given to the writer and not yet durable
        self._waiting: deque[Append] = deque()  # appends beyond ``append_queue``, in order
        self._line_done: anyio.Event | None = None
        self.appended = 0
        self.external = 0
        self.last_prune_at: float | None = None
        self.last_prune_removed = 0
        self.prune_seconds = Buckets(PRUNE_SECONDS)  # observed by the pruner
        self.cold_start_s = 0.0
        # What the last index snapshot covered: (inode, lines).
        self._snapshot_at = (0, 0)
        # Lines other writers append that cannot be indexed (see ``core.events``).
        self.warnings = rate_limited("gastownd.eventlog")
        # The old lines ``open`` left to ``run_indexing``; ``self.index`` holds only the
        # lines appended since, until they are merged (see ``indexing``).
        self._pending: PendingIndex | None = None
        self._indexed = anyio.Event()
        # The same, for the writer's thread (a rewrite is matched against the whole index).
        self._indexed_for_writer = threading.Event()

    @property
    def writer(self) -> Writer:
        assert self._writer is not None, "the event log is not open"
        return self._writer

    # ================================================================ start, stop

    async def open(self, *, background: bool = False) -> None:
        """Recover the file, resolve seqs and index it (see ``recovery``).

        ``background``: a long stretch with no snapshot is left to ``run_indexing``,
        so that the daemon serves at once (see ``indexing``).
        """
        recovered = await anyio.to_thread.run_sync(
            functools.partial(
                recover,
                self.path,
                self.lock_path,
                self.state_dir,
                self.archive,
                background_min=BACKGROUND_MIN_BYTES if background else None,
            )
        )
        self.file = file = recovered.file
        self.index = recovered.index
        self.seqmap = recovered.seqmap
        self.fd = file.fd
        self.inode = file.inode[1]
        self.cold_start_s = recovered.cold_start_s
        self._snapshot_at = (self.inode, recovered.snapshot_lines)
        self._pending = recovered.pending
        self._writer = Writer(
            file,
            sync=self.config.durability == "sync",
            sync_interval_s=parse_duration(self.config.sync_interval),
            on_batch=self._on_batch,
            current_index=self._whole_index,
        )
        if self._pending is None:
            self._indexed.set()
            self._indexed_for_writer.set()
            self._log_indexed()
        else:
            log.info(
                "eventlog_indexing_in_background",
                lines=self._pending.lines,
                bytes=self._pending.end - self._pending.start,
                epoch=self.seqmap.epoch,
            )

    async def run_writer(self) -> None:
        """The writer's thread, until ``close``."""
        await self.writer.run()

    async def close(self) -> None:
        """Finish queued appends, sync, save the index, checkpoint, release the files."""
        if self._waiting:  # they go to the writer as its batches finish
            self._line_done = anyio.Event()
            await self._line_done.wait()
        await self.writer.close()
        try:
            if self._pending is None:  # a partial index is no snapshot
                await self.save_snapshot()
        except OSError as exc:
            log.warning("index_snapshot_not_saved", error=exc.strerror)
        file = self.file
        assert file is not None
        checkpoint = msgspec.structs.replace(self.seqmap, end=file.end, tail=file.tail)
        try:
            await anyio.to_thread.run_sync(write_seqmap, self.state_dir, checkpoint)
        except OSError as exc:
            log.error("eventlog_close_failed", error=exc.strerror)
        file.close()

    # ================================================================ appends

    def submit(
        self,
        line: bytes,
        done: Callable[[int | StorageError], None],
        known: Known | None = None,
    ) -> None:
        """Queue one whole line; ``done`` gets its seq (or the error) once it is durable.

        ``known``: the line's fields, which spares decoding it again to index
        it. Beyond ``append_queue`` lines in the writer's queue, lines wait
        here, in order, and go to the writer as batches finish: never
        refused, never reordered. (What waits is bounded by the clients:
        each connection has at most ``max_inflight_per_connection``
        requests in flight.)
        """
        if self.writer.closed:
            raise ShuttingDownError("the daemon is shutting down; retry shortly")
        item = Append(line, done, known)
        if self._waiting or self._queued >= self.config.append_queue:
            self._waiting.append(item)
            return
        self._queued += 1
        self.writer.put(item)

    async def append(self, line: bytes) -> int:
        """Append one whole line (newline included); returns its seq once durable."""
        written = anyio.Event()
        outcome: list[int | StorageError] = []

        def done(result: int | StorageError) -> None:
            outcome.append(result)
            written.set()

        self.submit(line, done)
        await written.wait()
        if isinstance(outcome[0], StorageError):
            raise outcome[0]
        return outcome[0]

    def _on_batch(self, batch: Batch) -> None:
        """A group commit is done (event loop): index it, then tell each append."""
        self.apply_observation(batch.observation)
        items = batch.items
        if batch.error is None:
            known = [item.known for item in items if item.known is not None]
            positions: Sequence[int]
            if len(known) == len(items):
                positions = self._index_known(items, known)
            else:
                positions = self._index_bytes(batch.data, external=False)
            self.appended += len(items)
            seqs = self.index.seqs
            for item, position in zip(items, positions, strict=True):
                item.done(seqs[position])
        else:
            for item in items:
                item.done(batch.error)
        self._queued -= len(items)
        waiting, writer = self._waiting, self.writer
        while waiting and self._queued < self.config.append_queue:
            self._queued += 1
            writer.put(waiting.popleft())
        if not waiting and self._line_done is not None:
            self._line_done.set()

    # ================================================================ others' changes

    async def catch_up(self) -> None:
        """Index what other processes did to the file (called by the watcher)."""
        file = self.file
        assert file is not None
        try:
            info = os.stat(self.path)
            # Nothing new (no need to take gt's lock): the file ends where the index does,
            # or where the writer's thread has written or is writing (our own appends, which
            # wake the watcher too: their batches are still on their way to the loop).
            if info.st_ino == self.inode and info.st_size in (
                self.index.end,
                file.end,
                file.writing_end,
            ):
                return
        except FileNotFoundError:
            pass
        writer = self.writer
        await writer.call(lambda file: file.observe(writer.settled_index), self.apply_observation)

    async def forget_through(self, seq: int) -> None:
        """Lines up to ``seq`` left the archive (``archive_max_age``): record it."""
        self.seqmap = seqmap = msgspec.structs.replace(self.seqmap, unarchived_through=seq)

        def checkpoint(file: LogFile) -> None:
            write_seqmap(
                self.state_dir, msgspec.structs.replace(seqmap, end=file.end, tail=file.tail)
            )

        await self.writer.call(checkpoint)

    # ================================================================ reading

    async def query(
        self, flt: CompiledFilter, limit: int, oldest_first: bool, *, archive: bool = False
    ) -> Answer:
        """Matching lines; while the background index runs, it waits for it up to
        ``QUERY_WAIT_S`` and then answers from the lines indexed so far (the caller
        reads ``indexing`` to say so)."""
        await self.wait_indexed(QUERY_WAIT_S)
        return await query_log(self, flt, limit, oldest_first, archive=archive)
