"""The event log as the daemon holds it: the index, the seqs, and the parts that change them.

The state every part shares lives here: the index of every complete line of
``<town>/.events.jsonl``, the seqmap, the descriptor that readers use, the
counters and the archive. It changes only on the event loop, in file order:
when the writer's thread reports a batch (others' lines first, then ours) or
a rewrite by another tool, and when a prune swaps the file in. The parts, one
concern each: ``recovery`` (start-up), ``writer`` (the only writer of the
file: Gas Town's lock, group commit, one thread), ``reads`` (queries and
subscription backlogs), ``pruner`` (retention), ``archive`` (pruned lines)
and ``logstate`` (seqmap and snapshot files).

Line identity: every line gets a ``seq`` (see ``core.index``); a cursor is
``"<epoch>:<seq>"``. The seqs of a file are derived, not stored per line:
lines are numbered in file order from ``base``, except after a rewrite,
when a small "seqmap" file (``.gastownd/seqmap-<inode>.json``) records the
runs of seqs the rewritten file starts with. The epoch changes only when the
log was replaced while the daemon was not watching, which makes old cursors
resync instead of silently pointing at other lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread
import msgspec
import structlog

from gastown_client.protocol import ArchiveInfo, EventLogInfo, IndexingProgress
from gastownd.core.events import format_ts
from gastownd.core.index import MALFORMED, EventIndex, Known
from gastownd.core.query import CompiledFilter
from gastownd.eventlog.archive_files import Archive
from gastownd.eventlog.indexer import LongLine
from gastownd.eventlog.logstate import (
    SNAPSHOT_VERSION,
    SeqMap,
    SnapshotMeta,
    read_tail,
    runs_of,
    write_seqmap,
    write_snapshot,
)
from gastownd.eventlog.reads import Backlog, BacklogGap, read_lines
from gastownd.eventlog.reads import query as query_log
from gastownd.eventlog.recovery import (
    BACKGROUND_MIN_BYTES,
    SNAPSHOT_NAME,
    PendingIndex,
    index_pending,
    recover,
)
from gastownd.eventlog.subscriptions import Published
from gastownd.eventlog.writer import Append, Batch, LogFile, Observation, Writer
from gastownd.metrics.buckets import PRUNE_SECONDS, Buckets
from gastownd.process.config import EventLogConfig, parse_duration
from gastownd.process.refusals import BadRequestError, ShuttingDownError, StorageError
from gastownd.server.ratelog import rate_limited

__all__ = ["Backlog", "BacklogGap", "EventLog"]

log = structlog.get_logger("gastownd.eventlog")

# An index checkpoint (snapshot) is written when this many lines were indexed
# since the last one, or when the log changed and this long has passed: a
# restart after kill -9 then indexes only what came since.
CHECKPOINT_LINES = 50_000
CHECKPOINT_INTERVAL_S = 60.0
CHECKPOINT_POLL_S = 1.0
# How long a query waits for the background index before answering without it.
QUERY_WAIT_S = 5.0

# TEST-ONLY: background indexing waits until this file exists (see ``run_indexing``).
TEST_HOLD_INDEXING_ENV = "GASTOWND_TEST_HOLD_INDEXING"


class EventLog:
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
        # Held while lines move from the log to the archive, and by readers of both.
        self.archive_lock = anyio.Lock()
        # Counts the batches moved to the archive: a replay reopens it when this changes.
        self.archive_generation = 0
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

    @property
    def quarantined(self) -> int:
        return self.file.quarantined if self.file is not None else 0

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

    def _log_indexed(self) -> None:
        log.info(
            "eventlog_indexed",
            lines=len(self.index),
            malformed=self.index.malformed,
            bytes=self.index.end,
            epoch=self.seqmap.epoch,
        )

    # ================================================================ background index

    @property
    def indexing(self) -> IndexingProgress | None:
        """How far the background index is (``None``: every line is indexed).

        Until it is done, ``index`` holds only the lines appended since the
        daemon started: queries wait for the rest (bounded) and say so if
        they answer without it, subscriptions from a cursor wait for it.
        """
        pending = self._pending
        if pending is None:
            return None
        return IndexingProgress(
            lines=pending.lines,
            bytes_done=pending.done,
            bytes_total=pending.end - pending.start,
        )

    def indexed_after(self, seq: int) -> bool:
        """Every line after ``seq`` is in ``index`` (the background may add only older ones)."""
        pending = self._pending
        return pending is None or seq >= pending.next_seq - 1

    async def wait_indexed(self, timeout_s: float | None = None) -> bool:
        """Wait until every line is indexed (at most ``timeout_s``); True if it is."""
        if timeout_s is None:
            await self._indexed.wait()
        else:
            with anyio.move_on_after(timeout_s):
                await self._indexed.wait()
        return self._indexed.is_set()

    async def run_indexing(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Index the lines ``open`` left, in a worker thread (and its worker processes),
        then put them in front of the lines appended since. Holds the prune lock all
        along: a prune needs the whole index. Started before anything may prune."""
        pending = self._pending
        if pending is None:
            task_status.started()
            return
        async with self.prune_lock:
            task_status.started()
            started = time.monotonic()
            try:
                old = await _in_daemon_thread(_index_in_background, os.dup(self.fd), pending)
            except (OSError, ValueError) as exc:
                # A read error, or the file changed in place under us. Serving on with
                # part of the index would let a prune drop what it lacks: stop, as a
                # failed start does; the next start indexes the file as it then is.
                log.error("eventlog_background_index_failed", error=str(exc))
                raise
            live = self.index
            old.append_index(live)
            old.seq_floor = max(old.seq_floor, live.seq_floor)
            self.index = old
            self.cold_start_s = time.monotonic() - started
            self._pending = None
            self._indexed.set()
            self._indexed_for_writer.set()
            self._log_indexed()

    def _whole_index(self) -> EventIndex:
        """The index for the writer's thread: a rewrite is matched against every line, so
        it waits for the background index (which the event loop merges meanwhile)."""
        # ``run_indexing`` lives until after ``close``: this wait always ends.
        self._indexed_for_writer.wait()
        return self.index

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
            if all(item.known is not None for item in items):
                positions = self._index_known(items)
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
        try:
            info = os.stat(self.path)
            if info.st_ino == self.inode and info.st_size == self.index.end:
                return  # nothing new: no need to take gt's lock
        except FileNotFoundError:
            pass
        writer = self.writer
        await writer.call(lambda file: file.observe(writer.settled_index), self.apply_observation)

    def apply_observation(self, observation: Observation) -> None:
        """Bring the index up to date with what others did (event loop, in file order)."""
        rewrite = observation.rewrite
        if rewrite is not None:
            if rewrite.new_fd is not None:
                os.close(self.fd)
                self.fd = rewrite.new_fd
                self.inode = os.fstat(rewrite.new_fd).st_ino
            self.index = rewrite.index
            fresh = list(range(rewrite.fresh_from, len(self.index)))
            self.external += len(fresh)
            self._publish_positions(fresh, rewrite.data, 0)
            self.seqmap = SeqMap(
                epoch=self.seqmap.epoch,
                inode=self.inode,
                runs=runs_of(self.index.seqs),
                base=self.index.next_seq(),
                pruned_through=max(self.seqmap.pruned_through, rewrite.removed_max),
                # Lines others removed never reached the archive.
                unarchived_through=max(self.seqmap.lost_through(), rewrite.removed_max),
            )
            checkpoint = msgspec.structs.replace(
                self.seqmap, end=len(rewrite.data), tail=rewrite.tail
            )
            write_seqmap(self.state_dir, checkpoint)
        else:
            for part in observation.appended:
                if isinstance(part, LongLine):
                    self._index_long_line(part)
                else:
                    self._index_bytes(part, external=True)

    def switch_to(self, index: EventIndex, fd: int, seqmap: SeqMap) -> None:
        """A prune's swap (event loop): the new file, its index and its seqmap."""
        self.index = index
        self.fd = fd
        self.inode = seqmap.inode
        self.seqmap = seqmap

    async def forget_through(self, seq: int) -> None:
        """Lines up to ``seq`` left the archive (``archive_max_age``): record it."""
        self.seqmap = seqmap = msgspec.structs.replace(self.seqmap, unarchived_through=seq)

        def checkpoint(file: LogFile) -> None:
            write_seqmap(
                self.state_dir, msgspec.structs.replace(seqmap, end=file.end, tail=file.tail)
            )

        await self.writer.call(checkpoint)

    def _index_bytes(self, data: bytes, *, external: bool) -> list[int]:
        """Index whole lines appended at ``index.end``; returns their positions."""
        index = self.index
        first = len(index)
        offset = index.end
        malformed = index.malformed
        index.add_lines(data, offset, itertools.count(index.next_seq()))
        positions = list(range(first, len(index)))
        if external:
            self.external += len(positions)
        if index.malformed > malformed:
            at = next(p for p in positions if index.types[p] == MALFORMED)
            self.warnings.warning(
                "eventlog_malformed_lines",
                "not_indexable",
                lines=index.malformed - malformed,
                first_offset=index.offsets[at],
            )
        self._publish_positions(positions, data, offset)
        return positions

    def _index_long_line(self, line: LongLine) -> None:
        """Another writer's line too long to index: counted, never read whole."""
        index = self.index
        index.add_unindexable(line.offset, line.length, index.next_seq(), line.checksum)
        self.external += 1
        self.warnings.warning(
            "eventlog_malformed_lines", "not_indexable", lines=1, first_offset=line.offset
        )

    def _index_known(self, items: list[Append]) -> list[int]:
        """Index and publish lines whose fields are known (ours), at ``index.end``."""
        index = self.index
        offset = index.end
        seq = index.next_seq()
        positions = []
        published = []
        for item in items:
            known = item.known
            assert known is not None
            line = item.line
            positions.append(index.add_known(line, offset, seq, known))
            published.append(
                Published(seq, known.type, known.actor, known.session, known.ts, line[:-1])
            )
            offset += len(line)
            seq += 1
        self._publish(published)
        return positions

    def _publish_positions(self, positions: list[int], data: bytes, data_offset: int) -> None:
        index = self.index
        items = []
        for position in positions:
            if index.types[position] == MALFORMED:
                continue
            entry = index.entry(position)
            start = entry.offset - data_offset
            assert entry.type is not None
            items.append(
                Published(
                    entry.seq,
                    entry.type,
                    entry.actor,
                    entry.session,
                    entry.ts,
                    data[start : start + entry.length - 1],
                )
            )
        self._publish(items)

    # ================================================================ reading

    def cursor(self, seq: int) -> str:
        return f"{self.seqmap.epoch}:{seq}"

    def head_cursor(self) -> str:
        return self.cursor(self.index.next_seq() - 1)

    def parse_cursor(self, cursor: str) -> tuple[int, int]:
        epoch, _, seq = cursor.partition(":")
        try:
            return int(epoch), int(seq)
        except ValueError:
            raise BadRequestError(f"invalid cursor {cursor!r} (expected EPOCH:SEQ)") from None

    def read_lines(self, positions: Sequence[int]) -> list[bytes]:
        """The stored bytes (without newline) of indexed lines (event loop)."""
        return read_lines(self.index, self.fd, positions)

    async def query(
        self, flt: CompiledFilter, limit: int, oldest_first: bool, *, archive: bool = False
    ) -> list[bytes]:
        """Matching lines; while the background index runs, it waits for it up to
        ``QUERY_WAIT_S`` and then answers from the lines indexed so far (the caller
        reads ``indexing`` to say so)."""
        await self.wait_indexed(QUERY_WAIT_S)
        return await query_log(self, flt, limit, oldest_first, archive=archive)

    def backlog(
        self, flt: CompiledFilter, after_seq: int, upto_seq: int, *, from_archive: bool
    ) -> Backlog:
        """What a subscriber resuming after ``after_seq`` missed, up to ``upto_seq``."""
        return Backlog(self, flt, after_seq, upto_seq, from_archive=from_archive)

    def info(self) -> EventLogInfo:
        summary = self.archive.summary
        return EventLogInfo(
            lines=len(self.index),
            malformed=self.index.malformed,
            bytes=self.index.end,
            appended=self.appended,
            external=self.external,
            last_prune_at=format_ts(self.last_prune_at) if self.last_prune_at else None,
            last_prune_removed=self.last_prune_removed,
            quarantined=self.quarantined,
            durability=self.config.durability,
            archive=ArchiveInfo(
                bytes=summary.bytes,
                days=summary.days,
                first_day=summary.first_day,
                last_day=summary.last_day,
            ),
        )

    # ================================================================ snapshots

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


async def _in_daemon_thread(
    work: Callable[[int, PendingIndex], EventIndex], fd: int, pending: PendingIndex
) -> EventIndex:
    """``work(fd, pending)`` in a thread of its own that a stop abandons: a daemon thread
    (which the interpreter's exit does not wait for), owning ``fd``."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[EventIndex] = loop.create_future()

    def settle(result: EventIndex | None, error: BaseException | None) -> None:
        if future.done():  # abandoned
            return
        if error is not None:
            future.set_exception(error)
        else:
            assert result is not None
            future.set_result(result)

    def run() -> None:
        try:
            result: EventIndex | None = work(fd, pending)
            error: BaseException | None = None
        except BaseException as exc:  # handed to the loop, which raises it
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="gastownd-indexer", daemon=True).start()
    return await future


def _index_in_background(fd: int, pending: PendingIndex) -> EventIndex:
    try:
        hold = os.environ.get(TEST_HOLD_INDEXING_ENV)
        if hold:
            while not os.path.exists(hold):
                time.sleep(0.01)
        return index_pending(fd, pending)
    finally:
        os.close(fd)


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
