"""The only writer of ``<town>/.events.jsonl``.

Every append and every rewrite holds Gas Town's writers' lock (an exclusive
BSD flock on ``.events.jsonl.lock``), exactly as ``gt`` takes it, so ``gt``
processes and gastownd can append to the same file at once. Under that lock
the daemon first catches up with whatever others appended (indexing it in
file order), then writes its own batch with one ``write`` and one
``fdatasync`` (group commit), and only then acknowledges.

Line identity: every line gets a ``seq`` (see ``core.index``); a cursor is
``"<epoch>:<seq>"``. The seqs of a file are derived, not stored per line:
lines are numbered in file order from ``base``, except after a rewrite,
when a small "seqmap" file (``.gastownd/seqmap-<inode>.json``) records the
runs of seqs the rewritten file starts with. The epoch changes only when the
log was replaced while the daemon was not watching, which makes old cursors
resync instead of silently pointing at other lines.

Blocking file work runs in worker threads; the index is only changed on the
event loop, while ``_io`` is held, so queries always see a consistent index.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import errno
import fcntl
import itertools
import os
import sys
import time
import zlib
from collections import defaultdict, deque
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread
import msgspec
import structlog

from gastown_client.protocol import ArchiveInfo, EventLogInfo, PruneResult
from gastownd.archive import Archive, crash_here_for_tests, days_of
from gastownd.config import EventLogConfig, parse_duration
from gastownd.core import archive as archived
from gastownd.core.events import format_ts
from gastownd.core.index import MALFORMED, EventIndex
from gastownd.core.query import EventFilter
from gastownd.core.retention import STEP, RetentionPolicy, plan_prune_steps
from gastownd.errors import BadRequestError, ShuttingDownError, StorageError
from gastownd.logstate import (
    SNAPSHOT_VERSION,
    SeqMap,
    SnapshotMeta,
    fsync_dir,
    load_seqmaps,
    read_snapshot,
    runs_of,
    runs_steps,
    write_seqmap,
    write_snapshot,
)
from gastownd.subscriptions import Published

log = structlog.get_logger("gastownd.eventlog")

T = TypeVar("T")

READ_CHUNK = 16 << 20
TAIL_SIGNATURE = 64
MAX_BATCH_BYTES = 8 << 20
# Queries of up to this many lines are read on the event loop (page-cache reads).
INLINE_READ_LINES = 256
# Longest stretch of prune work on the event loop between two turns (see _cooperate).
SLICE_S = 0.001
PAUSE_S = 0.002
# Loop turns a batch may wait for more appends before its write (see _gather).
GATHER_TURNS = 2


@dataclass
class _Append:
    line: bytes
    # Told the seq, or the error, once the batch is durable (``submit``); else ``done`` is set.
    callback: Callable[[int | StorageError], None] | None = None
    done: anyio.Event | None = None
    seq: int = -1
    error: StorageError | None = None


@dataclass
class _Observation:
    """What changed in the file since we last looked (found under the lock)."""

    appended: bytes = b""  # complete lines appended by others, at index.end
    reloaded: EventIndex | None = None  # the file was replaced or rewritten
    reload_data: bytes = b""
    reload_fresh_from: int = 0  # first position of the reload not seen before
    pruned_through: int = -1
    new_fd: int | None = None


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
        self._fd = -1
        self._lock_fd = -1
        self._inode = (0, 0)
        self._tail = b""
        self._io = anyio.Lock()
        self._prune_lock = anyio.Lock()
        self._snapshot_lock = anyio.Lock()
        self._send, self._recv = anyio.create_memory_object_stream[_Append](config.append_queue)
        self._writer_done = anyio.Event()
        self._dirty = False
        self._sync_interval_s = parse_duration(config.sync_interval)
        self.appended = 0
        self.external = 0
        self.quarantined = 0
        self.last_prune_at: float | None = None
        self.unwatched_from = 0
        self.cold_start_s = 0.0
        self.last_prune_removed = 0
        self.archive = Archive(state_dir / "archive")
        # Held while lines move from the log to the archive, and by readers of both.
        self._archive_lock = anyio.Lock()
        # Counts the batches moved to the archive: a replay reopens it when this changes.
        self.archive_generation = 0

    # ================================================================ start

    async def open(self) -> None:
        """Repair the tail, resolve seqs and index the whole file."""
        await anyio.to_thread.run_sync(self._open_sync)
        log.info(
            "eventlog_indexed",
            lines=len(self.index),
            malformed=self.index.malformed,
            bytes=self.index.end,
            epoch=self.seqmap.epoch,
        )

    def _open_sync(self) -> None:
        self.state_dir.mkdir(mode=0o700, exist_ok=True)
        self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        # Before the stale prune files go: the journal tells by them whether a batch committed.
        self.archive.recover()
        self.archive.refresh_summary()
        for stale in self.path.parent.glob(f"{self.path.name}.gastownd-prune-*"):
            stale.unlink(missing_ok=True)  # left by a prune that crashed before its rename
            log.warning("stale_prune_file_removed", path=str(stale))
        with self._flocked():
            self._fd = self._open_log()
            self._repair_tail(self._fd, 0)
            info = os.fstat(self._fd)
            self._inode = (info.st_dev, info.st_ino)
            self.seqmap = self._resolve_seqmap(info.st_ino, info.st_size)
            # Lines past the last checkpoint were written while nobody watched.
            fresh = self.seqmap.end == 0 and not self.seqmap.tail
            self.unwatched_from = info.st_size if fresh else self.seqmap.end
            started = time.monotonic()
            snapshot = self._load_snapshot(info.st_ino, info.st_size)
            seqs = itertools.islice(
                self.seqmap.seqs(), len(snapshot) if snapshot is not None else 0, None
            )
            self.index = self._read_index(self._fd, info.st_size, seqs, snapshot)
            # What follows the file's last line, even when its last lines were pruned.
            self.index.seq_floor = next(seqs)
            self.cold_start_s = 0.0 if snapshot is not None else time.monotonic() - started
            if snapshot is None:
                _release_freed_memory()
            self._remember_tail()
            write_seqmap(self.state_dir, self._checkpointed(self.seqmap))

    def _open_log(self) -> int:
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if created:
            fsync_dir(self.path.parent)  # the new name itself must survive a crash
        return fd

    def _resolve_seqmap(self, inode: int, size: int) -> SeqMap:
        maps = load_seqmaps(self.state_dir)
        current = maps.get(inode)
        if current is not None and self._checkpoint_holds(current, size):
            return current
        # A fresh epoch never repeats an old one, even if .gastownd was deleted:
        # an old cursor must resync, never point at other lines.
        epoch = max(max((m.epoch for m in maps.values()), default=0) + 1, int(time.time()))
        if maps:
            log.warning(
                "eventlog_epoch_changed",
                epoch=epoch,
                reason="log replaced or rewritten while the daemon was not running",
            )
        return SeqMap(epoch=epoch, inode=inode, unarchived_through=-1)

    def _checkpoint_holds(self, seqmap: SeqMap, size: int) -> bool:
        if size < seqmap.end:
            return False
        if not seqmap.tail:
            return True
        found = os.pread(self._fd, len(seqmap.tail), seqmap.end - len(seqmap.tail))
        return found == seqmap.tail

    def _checkpointed(self, seqmap: SeqMap) -> SeqMap:
        return msgspec.structs.replace(seqmap, end=self.index.end, tail=self._tail)

    def _read_index(
        self, fd: int, size: int, seqs: Iterator[int], index: EventIndex | None = None
    ) -> EventIndex:
        """Index the file from ``index.end`` (0 for a new index) to ``size``."""
        index = index if index is not None else EventIndex()
        offset = index.end
        carry = b""
        while offset < size:
            chunk = os.pread(fd, min(READ_CHUNK, size - offset), offset)
            if not chunk:
                break
            data = carry + chunk
            start = offset - len(carry)
            used = index.add_lines(data, start, seqs)
            carry = data[used:]
            offset += len(chunk)
        return index

    # ============================================================ snapshots

    @property
    def _snapshot_path(self) -> Path:
        return self.state_dir / "index.snapshot"

    def _load_snapshot(self, inode: int, size: int) -> EventIndex | None:
        """The index saved at the last clean stop, if it still describes this file's start."""
        saved = read_snapshot(self._snapshot_path)
        if saved is None:
            return None
        meta, blobs = saved
        header = meta.header
        fits = (
            meta.version == SNAPSHOT_VERSION
            and meta.inode == inode
            and meta.epoch == self.seqmap.epoch
            and header.end <= size
            and (
                not meta.tail
                or os.pread(self._fd, len(meta.tail), header.end - len(meta.tail)) == meta.tail
            )
        )
        if not fits:
            log.info("index_snapshot_stale")
            return None
        try:
            return EventIndex.restore(header, blobs)
        except ValueError as exc:
            log.warning("index_snapshot_unusable", error=str(exc))
            return None

    async def save_snapshot(self) -> None:
        """Save the index so the next start reads only what was appended since."""
        async with self._snapshot_lock:
            async with self._io:  # a consistent index; the write itself needs no lock
                header, blobs = self.index.export()
                meta = SnapshotMeta(
                    version=SNAPSHOT_VERSION,
                    inode=self._inode[1],
                    epoch=self.seqmap.epoch,
                    tail=self._tail,
                    header=header,
                    blob_sizes=[len(b) for b in blobs],
                )
            await anyio.to_thread.run_sync(write_snapshot, self._snapshot_path, meta, blobs)

    # ============================================================ the lock

    @contextmanager
    def _flocked(self) -> Iterator[None]:
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    # ======================================================= repair & watch

    def _repair_tail(self, fd: int, known_end: int) -> int:
        """Cut a torn or NUL-padded last line back to the last newline.

        Called with the writers' lock held, so no ``gt`` is mid-write: bytes
        after the last newline were left by a writer that died. They are saved
        to a quarantine file first. Returns the file size afterwards.
        """
        size = os.fstat(fd).st_size
        if size <= known_end:
            return size
        cut_at = known_end
        position = size
        while position > known_end:
            start = max(known_end, position - (1 << 20))
            block = os.pread(fd, position - start, start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                cut_at = start + newline + 1
                break
            position = start
        if cut_at == size:
            return size
        torn = os.pread(fd, size - cut_at, cut_at)
        self._quarantine(torn, cut_at)
        os.ftruncate(fd, cut_at)
        os.fsync(fd)
        self.quarantined += 1
        log.warning(
            "eventlog_tail_repaired",
            cut_bytes=len(torn),
            at_offset=cut_at,
            nul_padding=torn.strip(b"\0") == b"",
        )
        return cut_at

    def _quarantine(self, data: bytes, offset: int) -> None:
        folder = self.state_dir / "quarantine"
        folder.mkdir(mode=0o700, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = folder / f"events-{stamp}-{offset}.torn"
        with open(path, "ab") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    def _remember_tail(self) -> None:
        end = self.index.end
        take = min(TAIL_SIGNATURE, end)
        self._tail = os.pread(self._fd, take, end - take) if take else b""

    def _observe_locked(self) -> _Observation:
        """Find what others did to the file since we last looked (lock held)."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            info = None
        end = self.index.end
        replaced = info is None or (info.st_dev, info.st_ino) != self._inode
        if not replaced:
            assert info is not None
            rewritten = info.st_size < end or (
                self._tail
                and os.pread(self._fd, len(self._tail), end - len(self._tail)) != self._tail
            )
            if not rewritten:
                size = self._repair_tail(self._fd, end)
                if size == end:
                    return _Observation()
                return _Observation(appended=os.pread(self._fd, size - end, end))
            return self._reload(self._fd, new_fd=None)
        new_fd = self._open_log()
        return self._reload(new_fd, new_fd=new_fd)

    def _reload(self, fd: int, new_fd: int | None) -> _Observation:
        """Re-read a file replaced, truncated or rewritten behind our back.

        Lines are matched to the old index by checksum and length, in order,
        so a line seen before keeps its seq (no duplicate delivery); matching
        stops at the first unknown line, after which every line is new.
        """
        size = self._repair_tail(fd, 0)
        data = os.pread(fd, size, 0) if size else b""
        old = self.index
        candidates: dict[tuple[int, int], deque[int]] = defaultdict(deque)
        for position in range(len(old)):
            candidates[(old.checksums[position], old.length(position))].append(position)
        seqs: list[int] = []
        next_fresh = old.next_seq()
        matching = True
        cursor = 0
        fresh_from = None
        start = 0
        while start < len(data):
            newline = data.find(b"\n", start)
            if newline < 0:
                break
            line = data[start:newline]
            found = None
            if matching:
                queue = candidates.get((zlib.crc32(line), len(line) + 1))
                while queue and queue[0] < cursor:
                    queue.popleft()
                if queue:
                    found = queue.popleft()
            if found is not None:
                seqs.append(old.seqs[found])
                cursor = found + 1
            else:
                matching = False
                if fresh_from is None:
                    fresh_from = len(seqs)
                seqs.append(next_fresh)
                next_fresh += 1
            start = newline + 1
        kept = set(seqs)
        removed = [old.seqs[p] for p in range(len(old)) if old.seqs[p] not in kept]
        index = EventIndex()
        index.add_lines(data, 0, iter(seqs))
        index.seq_floor = next_fresh
        log.warning(
            "eventlog_reloaded",
            reason="replaced" if new_fd is not None else "rewritten",
            lines=len(index),
            new_lines=len(seqs) - (len(seqs) if fresh_from is None else fresh_from),
            removed=len(removed),
        )
        return _Observation(
            reloaded=index,
            reload_data=data,
            reload_fresh_from=fresh_from if fresh_from is not None else len(seqs),
            pruned_through=max(removed, default=-1),
            new_fd=new_fd,
        )

    def _apply(self, observation: _Observation) -> None:
        """Bring the index up to date with an observation (event loop, ``_io`` held)."""
        if observation.reloaded is not None:
            if observation.new_fd is not None:
                os.close(self._fd)
                self._fd = observation.new_fd
                info = os.fstat(self._fd)
                self._inode = (info.st_dev, info.st_ino)
            self.index = observation.reloaded
            fresh = list(range(observation.reload_fresh_from, len(self.index)))
            self.external += len(fresh)
            self._publish_positions(fresh, observation.reload_data, 0)
            self._remember_tail()
            self.seqmap = SeqMap(
                epoch=self.seqmap.epoch,
                inode=self._inode[1],
                runs=runs_of(self.index.seqs),
                base=self.index.next_seq(),
                pruned_through=max(self.seqmap.pruned_through, observation.pruned_through),
                # Lines others removed never reached the archive.
                unarchived_through=max(self.seqmap.lost_through(), observation.pruned_through),
            )
            write_seqmap(self.state_dir, self._checkpointed(self.seqmap))
        elif observation.appended:
            self._index_bytes(observation.appended, external=True)

    def _index_bytes(self, data: bytes, *, external: bool) -> list[int]:
        """Index whole lines appended at ``index.end``; returns their positions."""
        first = len(self.index)
        offset = self.index.end
        next_seq = self.index.next_seq()
        self.index.add_lines(data, offset, _count_from(next_seq))
        positions = list(range(first, len(self.index)))
        if external:
            self.external += len(positions)
        self._publish_positions(positions, data, offset)
        self._remember_tail_from(data)
        return positions

    def _remember_tail_from(self, data: bytes) -> None:
        if len(data) >= TAIL_SIGNATURE:
            self._tail = data[-TAIL_SIGNATURE:]
        else:
            self._tail = (self._tail + data)[-TAIL_SIGNATURE:]

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

    def unwatched_lines(self, types: frozenset[str]) -> list[Published]:
        """Lines of these types appended while the daemon was not running."""
        index = self.index
        first = bisect.bisect_left(index.offsets, self.unwatched_from)
        wanted = {i for i, name in enumerate(index.type_names) if name in types}
        items = []
        for position in range(first, len(index)):
            if index.types[position] not in wanted:
                continue
            entry = index.entry(position)
            assert entry.type is not None
            line = os.pread(self._fd, entry.length - 1, entry.offset)
            items.append(
                Published(entry.seq, entry.type, entry.actor, entry.session, entry.ts, line)
            )
        return items

    async def catch_up(self) -> None:
        """Index what other processes appended (called by the watcher)."""
        try:
            info = os.stat(self.path)
            if (info.st_dev, info.st_ino) == self._inode and info.st_size == self.index.end:
                return  # nothing new: no need to take gt's lock
        except FileNotFoundError:
            pass
        async with self._io:
            observation = await anyio.to_thread.run_sync(self._observe_with_lock)
            self._apply(observation)

    def _observe_with_lock(self) -> _Observation:
        with self._flocked():
            return self._observe_locked()

    # ============================================================== appends

    async def append(self, line: bytes) -> int:
        """Append one whole line (newline included); returns its seq once durable."""
        request = _Append(line, done=anyio.Event())
        try:
            await self._send.send(request)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise ShuttingDownError("the daemon is shutting down; retry shortly") from None
        assert request.done is not None
        await request.done.wait()
        if request.error is not None:
            raise request.error
        return request.seq

    def submit(self, line: bytes, callback: Callable[[int | StorageError], None]) -> bool:
        """Queue one whole line; ``callback`` gets its seq (or the error) once it is durable.

        False, and nothing queued, when the queue is full (``append`` waits then).
        """
        try:
            self._send.send_nowait(_Append(line, callback=callback))
        except anyio.WouldBlock:
            return False
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise ShuttingDownError("the daemon is shutting down; retry shortly") from None
        return True

    async def run_writer(self) -> None:
        """The single writer task: group-commits queued appends."""
        try:
            async with self._recv:
                while True:
                    try:
                        first = await self._recv.receive()
                    except anyio.EndOfStream:
                        return
                    batch = [first]
                    await self._gather(batch)
                    await self._commit(batch)
        finally:
            self._writer_done.set()

    async def _gather(self, batch: list[_Append]) -> None:
        """Add whatever else is queued, letting the loop turn between drains.

        Other clients' appends are often already in their sockets: a loop turn
        (tens of microseconds) lets them join this batch and its one fdatasync
        instead of each waiting for a sync of its own.
        """
        size = len(batch[0].line)
        for turn in range(GATHER_TURNS + 1):
            before = len(batch)
            while size < MAX_BATCH_BYTES:
                try:
                    item = self._recv.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
                batch.append(item)
                size += len(item.line)
            if turn == GATHER_TURNS or size >= MAX_BATCH_BYTES or (turn and len(batch) == before):
                return
            await anyio.lowlevel.checkpoint()

    async def _commit(self, batch: list[_Append]) -> None:
        data = b"".join(item.line for item in batch)
        sync = self.config.durability == "sync"
        async with self._io:
            with anyio.CancelScope(shield=True):
                observation, error = await anyio.to_thread.run_sync(self._write_locked, data, sync)
                self._apply(observation)
                if error is None:
                    positions = self._index_bytes(data, external=False)
                    self.appended += len(batch)
                    if not sync:
                        self._dirty = True
                    for item, position in zip(batch, positions, strict=True):
                        item.seq = self.index.seqs[position]
        for item in batch:
            item.error = error
            if item.callback is not None:
                item.callback(item.seq if error is None else error)
            elif item.done is not None:
                item.done.set()

    def _write_locked(self, data: bytes, sync: bool) -> tuple[_Observation, StorageError | None]:
        with self._flocked():
            observation = self._observe_locked()
            fd = observation.new_fd if observation.new_fd is not None else self._fd
            before = os.fstat(fd).st_size
            try:
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
                if sync:
                    os.fdatasync(fd)
            except OSError as exc:
                self._cut_back(fd, before)
                log.error(
                    "eventlog_write_failed", error=exc.strerror, errno=exc.errno, bytes=len(data)
                )
                reason = "disk full" if exc.errno == errno.ENOSPC else exc.strerror
                return observation, StorageError(
                    f"could not write the event log ({reason}); nothing was written"
                )
            return observation, None

    def _cut_back(self, fd: int, size: int) -> None:
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError as exc:
            log.error("eventlog_cut_back_failed", error=exc.strerror, size=size)

    async def run_syncer(self) -> None:
        """With ``durability = "write"``: fdatasync at most every sync_interval."""
        if self.config.durability != "write":
            return
        while True:
            await anyio.sleep(self._sync_interval_s)
            if self._dirty:
                self._dirty = False
                async with self._io:
                    await anyio.to_thread.run_sync(os.fdatasync, self._fd)

    async def close(self) -> None:
        """Finish queued appends, sync, checkpoint, save the index, release the files."""
        self._send.close()
        await self._writer_done.wait()
        try:
            await self.save_snapshot()
        except OSError as exc:
            log.warning("index_snapshot_not_saved", error=exc.strerror)
        async with self._io:
            await anyio.to_thread.run_sync(self._close_sync)

    def _close_sync(self) -> None:
        if self._fd < 0:
            return
        try:
            os.fdatasync(self._fd)
            write_seqmap(self.state_dir, self._checkpointed(self.seqmap))
        except OSError as exc:
            log.error("eventlog_close_failed", error=exc.strerror)
        os.close(self._fd)
        os.close(self._lock_fd)
        self._fd = self._lock_fd = -1

    # ============================================================== reading

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

    def read_lines(self, positions: list[int]) -> list[bytes]:
        """The stored bytes (without newline) of indexed lines."""
        index = self.index
        fd = self._fd
        return [os.pread(fd, index.length(p) - 1, index.offsets[p]) for p in positions]

    async def query(
        self, flt: EventFilter, limit: int, oldest_first: bool, *, archive: bool = False
    ) -> list[bytes]:
        if archive:
            return await self._query_with_archive(flt, limit, oldest_first)
        if limit <= INLINE_READ_LINES:
            # Search and read with no await between: the index cannot change under us.
            return self.read_lines(self.index.search(flt, limit, oldest_first=oldest_first))
        async with self._io:  # a big read goes to a thread: keep the file and index still
            positions = self.index.search(flt, limit, oldest_first=oldest_first)
            return await anyio.to_thread.run_sync(self.read_lines, positions)

    async def _query_with_archive(
        self, flt: EventFilter, limit: int, oldest_first: bool
    ) -> list[bytes]:
        """The live log and the archive as one history, ordered by (epoch, seq)."""
        async with self._archive_lock:  # no line moves between the two reads
            async with self._io:
                index = self.index
                epoch = self.seqmap.epoch
                positions = index.search(flt, limit, oldest_first=oldest_first)
                lines = await anyio.to_thread.run_sync(self.read_lines, positions)
            live = [
                ((epoch, index.seqs[p]), line) for p, line in zip(positions, lines, strict=True)
            ]
            seqs = index.seqs

            def still_live(key: tuple[int, int]) -> bool:
                # A line archived by a batch whose swap a crash prevented is in both.
                return key[0] == epoch and _holds(seqs, key[1])

            old = await anyio.to_thread.run_sync(
                self._search_archive, flt, limit, oldest_first, still_live
            )
        merged = sorted(live + old, key=lambda item: item[0], reverse=not oldest_first)
        return [line for _, line in merged[:limit]]

    def _search_archive(
        self,
        flt: EventFilter,
        limit: int,
        oldest_first: bool,
        skip: Callable[[tuple[int, int]], bool],
    ) -> list[tuple[tuple[int, int], bytes]]:
        members = self.archive.catalogue(
            archived.day_name(flt.since) if flt.since is not None else None,
            archived.day_name(flt.until) if flt.until is not None else None,
        )
        return archived.search(
            members, self._read_member, flt, limit, oldest_first=oldest_first, skip=skip
        )

    def _read_member(self, member: archived.Member) -> list[tuple[int, bytes]]:
        try:
            return self.archive.read(member)
        except (OSError, ValueError, zlib.error) as exc:
            log.warning(
                "archive_member_unreadable", day=member.day, offset=member.offset, error=str(exc)
            )
            return []

    def backlog(
        self, flt: EventFilter, after_seq: int, upto_seq: int, *, from_archive: bool
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

    # ================================================================ prune

    async def prune(
        self,
        policy: RetentionPolicy,
        now_s: float,
        *,
        dry_run: bool,
        archive: bool,
        archive_max_age_s: float | None = None,
    ) -> PruneResult:
        """Remove expired lines: archive them, copy the kept ones to a new file, swap it in.

        Planning and the new index are computed on the event loop in small
        steps, so requests keep flowing (a worker thread would hold the GIL for
        seconds on a large log); the bulk copy and the archive run in threads
        without the writers' lock, which is held only to copy what was
        appended meanwhile and rename. The archive is durable before the
        rename, which commits it (see ``gastownd.archive``). Appends, ours
        and gt's, keep flowing and none is lost.
        """
        started = time.monotonic()
        async with self._prune_lock:
            index = self.index
            count = len(index)
            snapshot_end = index.end
            # Appends only add positions past ``count``: the steps read a stable prefix.
            plan = await _cooperate(
                plan_prune_steps(
                    index.types, index.type_names, index.ts, count, now_s, policy, index.by_type
                )
            )
            ranges = await _cooperate(_ranges_steps(index, plan.keep))
            removed_bytes = snapshot_end - sum(length for _, length in ranges)
            result = PruneResult(
                dry_run=dry_run,
                pruned=dict(sorted(plan.removed.items())),
                pruned_total=plan.removed_total,
                kept=len(plan.keep),
                bytes_freed=removed_bytes,
            )
            if dry_run or plan.removed_total == 0:
                if not dry_run:
                    self.last_prune_at = now_s
                    self.last_prune_removed = 0
                    await self._expire_archive(now_s, archive_max_age_s)
                result.duration_ms = round((time.monotonic() - started) * 1000, 3)
                return result
            removed = await _cooperate(_complement_steps(plan.keep, count))
            days = await anyio.to_thread.run_sync(days_of, index, removed)
            self._announce(len(removed), removed_bytes, days, archive)
            kept_index = await _cooperate(index.select_steps(plan.keep))
            runs = await _cooperate(runs_steps(kept_index.seqs))
            seqs = _PruneSeqs(
                runs=runs,
                removed_max=index.seqs[_last_removed(plan.keep, count)],
                tail_base=index.seqs[count] if len(index) > count else index.next_seq(),
                archived=archive,
            )
            planned = time.monotonic()
            # A batch whose rollback failed earlier must be settled before its file is reused.
            await anyio.to_thread.run_sync(self.archive.recover)
            if self.index is not index:
                raise StorageError("the log was replaced during the prune; retry")
            # Our own descriptor: a reload may close the log's while a thread reads it.
            source_fd = os.dup(self._fd)
            try:
                temp_path = self.path.with_name(f"{self.path.name}.gastownd-prune-{os.getpid()}")
                temp_fd = await anyio.to_thread.run_sync(
                    self._copy_kept, source_fd, ranges, temp_path
                )
                copied = time.monotonic()
                async with self._archive_lock:
                    old_fd, archived_lines = await self._archive_and_swap(
                        source_fd,
                        index,
                        removed,
                        days,
                        kept_index,
                        count,
                        snapshot_end,
                        seqs,
                        temp_fd,
                        temp_path,
                        archive=archive,
                    )
                    swapped = time.monotonic()
                    if archive:
                        with anyio.CancelScope(shield=True):
                            crash_here_for_tests("swapped")
                            await anyio.to_thread.run_sync(self.archive.commit)
                            self.archive_generation += 1
            finally:
                os.close(source_fd)
            os.close(old_fd)
            await self._expire_archive(now_s, archive_max_age_s)
        self.last_prune_at = now_s
        self.last_prune_removed = plan.removed_total
        result.archived = archived_lines
        result.duration_ms = round((time.monotonic() - started) * 1000, 3)
        log.info(
            "eventlog_pruned",
            removed=plan.removed_total,
            archived=archived_lines,
            kept=len(self.index),
            bytes_freed=removed_bytes,
            duration_ms=result.duration_ms,
            plan_ms=round((planned - started) * 1000),
            copy_ms=round((copied - planned) * 1000),
            archive_swap_ms=round((swapped - copied) * 1000),
        )
        return result

    def _announce(self, lines: int, size: int, days: dict[str, int], archive: bool) -> None:
        """Say what a prune is about to move (or, with the archive off, delete) before it does."""
        fields = {
            "lines": lines,
            "bytes": size,
            "days": len(days),
            "first_day": next(iter(days), None),
            "last_day": next(reversed(days), None),
        }
        if archive:
            log.info("eventlog_archiving", to=str(self.archive.folder), **fields)
        else:
            log.warning(
                "eventlog_pruning_unarchived", reason="retention.archive is false", **fields
            )

    async def _archive_and_swap(
        self,
        source_fd: int,
        index: EventIndex,
        removed: list[int],
        days: dict[str, int],
        kept_index: EventIndex,
        count: int,
        snapshot_end: int,
        seqs: _PruneSeqs,
        temp_fd: int,
        temp_path: Path,
        *,
        archive: bool,
    ) -> tuple[int, int]:
        """Write the archive batch, then swap the new file in; undo both on failure.

        Returns the old file's descriptor and the number of lines archived.
        """
        archived_lines = 0
        try:
            if archive:
                report = await anyio.to_thread.run_sync(
                    self.archive.write,
                    source_fd,
                    index,
                    removed,
                    (count, snapshot_end),
                    days,
                    self.seqmap.epoch,
                    temp_path,
                )
                archived_lines = report.lines
                crash_here_for_tests("archive_written")
            async with self._io:
                if self.index is not index:
                    raise StorageError("the log was replaced during the prune; retry")
                observation, old_fd = await anyio.to_thread.run_sync(
                    self._swap_in, temp_fd, temp_path, snapshot_end, seqs
                )
                self._apply(observation)
                old_index = self.index
                # Only what was appended during the prune is indexed here.
                kept_index.seq_floor = seqs.tail_base
                kept_index.extend_from(old_index, range(count, len(old_index)))
                self.index = kept_index
                self._fd = temp_fd
                info = os.fstat(temp_fd)
                self._inode = (info.st_dev, info.st_ino)
                self._remember_tail()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._abandon, temp_fd, temp_path, archive)
            raise
        return old_fd, archived_lines

    def _abandon(self, temp_fd: int, temp_path: Path, archive: bool) -> None:
        """A prune that did not swap: undo its archive batch, then drop its new file."""
        os.close(temp_fd)
        if archive:
            try:
                self.archive.rollback()
            except OSError as exc:
                # The new file stays: by it the next recovery knows to undo the batch.
                log.error("archive_rollback_failed", error=exc.strerror)
                return
        temp_path.unlink(missing_ok=True)

    async def _expire_archive(self, now_s: float, max_age_s: float | None) -> None:
        """Delete archived days older than ``archive_max_age``; later cursors into them resync."""
        if max_age_s is None:
            await anyio.to_thread.run_sync(self.archive.refresh_summary)
            return
        before_day = archived.day_name(int(now_s - max_age_s))
        async with self._archive_lock:
            removed = await anyio.to_thread.run_sync(self.archive.expire, before_day)
            await anyio.to_thread.run_sync(self.archive.refresh_summary)
            lost = removed.get(self.seqmap.epoch, -1)
            if lost > self.seqmap.lost_through():
                async with self._io:
                    self.seqmap = msgspec.structs.replace(self.seqmap, unarchived_through=lost)
                    checkpoint = self._checkpointed(self.seqmap)
                    await anyio.to_thread.run_sync(write_seqmap, self.state_dir, checkpoint)
                self.archive_generation += 1

    def _copy_kept(self, source_fd: int, ranges: list[tuple[int, int]], temp_path: Path) -> int:
        """Copy the kept byte ranges to a new file next to the log (worker thread)."""
        temp_fd = os.open(
            temp_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o644
        )
        try:
            os.fchmod(temp_fd, os.fstat(source_fd).st_mode & 0o7777)
            _copy_ranges(source_fd, temp_fd, ranges)
            os.fsync(temp_fd)
        except BaseException:
            os.close(temp_fd)
            temp_path.unlink(missing_ok=True)
            raise
        return temp_fd

    def _swap_in(
        self, temp_fd: int, temp_path: Path, snapshot_end: int, seqs: _PruneSeqs
    ) -> tuple[_Observation, int]:
        with self._flocked():
            observation = self._observe_locked()
            if observation.reloaded is not None:
                if observation.new_fd is not None:
                    os.close(observation.new_fd)
                raise StorageError("the log was replaced during the prune; retry")
            current = os.fstat(self._fd).st_size
            if current > snapshot_end:
                _copy_range(self._fd, temp_fd, snapshot_end, current - snapshot_end)
            os.fsync(temp_fd)
            new_size = os.fstat(temp_fd).st_size
            take = min(TAIL_SIGNATURE, new_size)
            lost = self.seqmap.lost_through()
            # Lines appended during the prune keep their consecutive seqs after the runs.
            seqmap = SeqMap(
                epoch=self.seqmap.epoch,
                inode=os.fstat(temp_fd).st_ino,
                runs=seqs.runs,
                base=seqs.tail_base,
                pruned_through=max(self.seqmap.pruned_through, seqs.removed_max),
                unarchived_through=lost if seqs.archived else max(lost, seqs.removed_max),
                end=new_size,
                tail=os.pread(temp_fd, take, new_size - take) if take else b"",
            )
            write_seqmap(self.state_dir, seqmap)
            # The commit point: from here on, the new file is the log.
            os.replace(temp_path, self.path)
            try:
                fsync_dir(self.path.parent)
            except OSError as exc:
                log.error("eventlog_dir_sync_failed", error=exc.strerror)
            self.seqmap = seqmap
            return observation, self._fd


@dataclass(frozen=True)
class _PruneSeqs:
    runs: list[tuple[int, int]]
    removed_max: int
    tail_base: int
    archived: bool


class BacklogGap(Exception):
    """Lines after the replay's position left the log without reaching the archive."""


BACKLOG_CHUNK = 256


class Backlog:
    """The lines a resuming subscriber missed, in seq order, in chunks.

    Archived and live lines are merged by seq, so a cursor older than the
    live log replays the archive and then the log without a gap or a
    duplicate. The live part is searched anew for every chunk, from the last
    seq sent; if a prune moves lines into the archive meanwhile, the archive
    is reopened from there. ``from_archive`` False (a fresh start, or a
    cursor of another epoch) replays the live log only, and a prune during
    the replay then ends it with ``BacklogGap`` (the subscriber resumes
    with its last cursor, which the archive covers).
    """

    def __init__(
        self,
        eventlog: EventLog,
        flt: EventFilter,
        after_seq: int,
        upto_seq: int,
        *,
        from_archive: bool,
    ) -> None:
        self.eventlog = eventlog
        self.filter = flt
        self.last = after_seq
        self.upto = upto_seq
        self.from_archive = from_archive
        self._lost_at_start = eventlog.seqmap.lost_through()
        self._pruned_at_start = eventlog.seqmap.pruned_through
        self._generation = eventlog.archive_generation
        self._stream: Iterator[list[tuple[int, bytes]]] | None = None
        self._buffer: deque[tuple[int, bytes]] = deque()
        # Archived lines may follow the cursor: open the archive on the first chunk.
        self._stream_wanted = from_archive and eventlog.seqmap.pruned_through > after_seq

    async def next(self) -> list[tuple[int, bytes]] | None:
        """The next chunk (seq, line), or None when the backlog is done."""
        eventlog = self.eventlog
        while True:
            seqmap = eventlog.seqmap
            lost = seqmap.lost_through()
            if lost > self._lost_at_start and lost > self.last:
                raise BacklogGap("lines after the cursor were removed without being archived")
            if eventlog.archive_generation != self._generation:
                self._generation = eventlog.archive_generation
                if not self.from_archive and seqmap.pruned_through > max(
                    self.last, self._pruned_at_start
                ):
                    raise BacklogGap("lines of the replay were pruned while it ran")
                self._stream_wanted = self.from_archive
                self._stream = None
                self._buffer.clear()
                log.debug("replay_reopened_archive", after_seq=self.last)
            if self._stream_wanted and self._stream is None:
                self._stream = await self._open_stream()
            if not self._buffer and self._stream is not None:
                chunk = await anyio.to_thread.run_sync(next, self._stream, None)
                if chunk is None:
                    self._stream = None
                    self._stream_wanted = False
                else:
                    self._buffer.extend(chunk)
                continue  # the checks again: a prune may have run meanwhile
            chunk, done = self._merge_chunk()
            if chunk:
                return chunk
            if done:
                return None

    async def _open_stream(self) -> Iterator[list[tuple[int, bytes]]]:
        eventlog = self.eventlog
        async with eventlog._archive_lock:  # a whole catalogue, never a batch half written
            self._generation = eventlog.archive_generation
            members = await anyio.to_thread.run_sync(eventlog.archive.catalogue)
        return archived.replay(
            members,
            eventlog._read_member,
            self.filter,
            epoch=eventlog.seqmap.epoch,
            after_seq=self.last,
            upto_seq=self.upto,
            chunk=BACKLOG_CHUNK,
        )

    def _merge_chunk(self) -> tuple[list[tuple[int, bytes]], bool]:
        """Merge buffered archived lines with the next live ones (no await: a stable index)."""
        eventlog = self.eventlog
        index = eventlog.index
        start = index.position_after(self.last)
        found = index.search(self.filter, BACKLOG_CHUNK, oldest_first=True, after_position=start)
        live = [p for p in found if index.seqs[p] <= self.upto]
        more_live = len(found) == BACKLOG_CHUNK and len(live) == len(found)
        buffer = self._buffer
        archive_pending = self._stream is not None
        picked: list[tuple[int, bytes | int]] = []
        taken = 0
        done = False
        while len(picked) < BACKLOG_CHUNK:
            live_seq = index.seqs[live[taken]] if taken < len(live) else None
            if live_seq is None and more_live:
                break  # search again from the last seq sent
            if not buffer and archive_pending:
                break  # refill from the archive first
            if buffer and buffer[0][0] <= self.last:
                buffer.popleft()
                continue
            archived_seq = buffer[0][0] if buffer else None
            if live_seq is None and archived_seq is None:
                done = True
                break
            if live_seq is not None and (archived_seq is None or live_seq <= archived_seq):
                if archived_seq == live_seq:
                    buffer.popleft()  # archived by a batch whose swap never happened
                picked.append((live_seq, live[taken]))
                taken += 1
            else:
                picked.append(buffer.popleft())
            self.last = picked[-1][0]
        positions = [p for _, p in picked if isinstance(p, int)]
        lines = iter(eventlog.read_lines(positions))
        return [(seq, next(lines) if isinstance(p, int) else p) for seq, p in picked], done


async def _cooperate(steps: Generator[None, None, T]) -> T:
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


def _ranges_steps(
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


def _last_removed(keep: list[int], count: int) -> int:
    """The highest position below ``count`` that ``keep`` (sorted) leaves out."""
    position = count - 1
    kept = len(keep) - 1
    while kept >= 0 and keep[kept] == position:
        kept -= 1
        position -= 1
    return position


def _release_freed_memory() -> None:
    """Give back to the OS what parsing a large log freed (glibc keeps it otherwise)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _count_from(start: int) -> Iterator[int]:
    while True:
        yield start
        start += 1


def _complement_steps(keep: list[int], count: int) -> Generator[None, None, list[int]]:
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


def _holds(seqs: Sequence[int], seq: int) -> bool:
    position = bisect.bisect_left(seqs, seq)
    return position < len(seqs) and seqs[position] == seq


COPY_WINDOW = 4 << 20


def _copy_ranges(source: int, target: int, ranges: list[tuple[int, int]]) -> None:
    """Copy many byte ranges with few syscalls: read a window, write its kept slices."""
    index = 0
    while index < len(ranges):
        window_start = ranges[index][0]
        group_end = index
        while (
            group_end < len(ranges)
            and ranges[group_end][0] + ranges[group_end][1] - window_start <= COPY_WINDOW
        ):
            group_end += 1
        if group_end == index:  # one range larger than the window
            _copy_range(source, target, *ranges[index])
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
        written = 0
        while written < len(data):
            written += os.write(target, data[written:])
        index = group_end
        time.sleep(PAUSE_S)  # let the event loop have the GIL between windows


def _copy_range(source: int, target: int, offset: int, length: int) -> None:
    while length > 0:
        chunk = os.pread(source, min(length, 4 << 20), offset)
        if not chunk:
            raise StorageError("the event log shrank during a copy")
        view = memoryview(chunk)
        while view:
            written = os.write(target, view)
            view = view[written:]
        offset += len(chunk)
        length -= len(chunk)
