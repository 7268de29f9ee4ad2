"""The only writer of ``<town>/.events.jsonl``: the file, Gas Town's lock, and one thread.

Every change to the log happens here: creating it, appending, cutting a torn
tail off, and replacing it with a pruned copy. ``LogFile`` holds the
descriptors and does the blocking work, always under the writers' lock (an
exclusive BSD flock on ``.events.jsonl.lock``, exactly as ``gt`` takes it).
While the daemon runs, only the ``Writer``'s thread uses it: appends, catching
up with other writers and the prune's swap go through one queue, so they
reach the file in the order they were asked for, and their outcomes reach the
event loop in the same order (``loop.call_soon_threadsafe``, one wake-up per
batch). Group commit falls out of it: the appends that arrive while a batch
is written and ``fdatasync``ed make the next batch.

Before every write the thread looks at what others did to the file since it
last looked (``Observation``): lines appended by ``gt`` are handed to the
loop to be indexed first, so ours follow theirs in file order; a file that
was replaced, truncated or rewritten is re-read and matched to the index
(``EventIndex.rematch``), after a barrier that lets the loop apply every
earlier outcome first.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import structlog

from gastownd.core.index import EventIndex, Known
from gastownd.eventlog.indexer import LongLine, whole_lines
from gastownd.eventlog.logstate import TAIL_SIGNATURE, fsync_dir, read_tail, tail_matches, write_all
from gastownd.metrics.buckets import BATCH_LINES, FSYNC_SECONDS, Buckets
from gastownd.process.refusals import StorageError

log = structlog.get_logger("gastownd.writer")

MAX_BATCH_BYTES = 8 << 20
# How often an idle writer thread looks whether its task was cancelled.
IDLE_CHECK_S = 0.25


# ---------------------------------------------------------------- observations


@dataclass
class Rewrite:
    """The file was replaced, truncated or rewritten behind our back: all of it, matched."""

    index: EventIndex
    data: bytes
    fresh_from: int  # the first position not known before
    removed_max: int  # the highest seq that disappeared (-1: none)
    new_fd: int | None  # the replacement's descriptor, when it is another file
    tail: bytes  # the file's last bytes (a seqmap checkpoint)


@dataclass
class Observation:
    """What others did to the file since we last looked (found under the lock)."""

    # Complete lines appended by others, in order (one too long to index comes described).
    appended: list[bytes | LongLine] = field(default_factory=list)
    rewrite: Rewrite | None = None


# ---------------------------------------------------------------- the file


class LogFile:
    """The log's descriptors and every blocking operation that changes the file."""

    def __init__(self, path: Path, lock_path: Path, quarantine_dir: Path) -> None:
        self.path = path
        self.lock_path = lock_path
        self.quarantine_dir = quarantine_dir
        self.fd = -1
        self.lock_fd = -1
        self.inode = (0, 0)
        # The file as last seen: its size, and the bytes just before that size.
        self.end = 0
        self.tail = b""
        self.quarantined = 0
        self.dirty = False  # written and not yet synced (durability "write")
        self.fsync_seconds = Buckets(FSYNC_SECONDS)  # observed in the writer's thread only

    def open_lock(self) -> None:
        self.lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def open(self) -> int:
        """Open (create) the log and cut a torn tail off (lock held); returns its size."""
        self.fd = self._open_log()
        size = self.repair_tail(self.fd, 0)
        info = os.fstat(self.fd)
        self.inode = (info.st_dev, info.st_ino)
        return size

    def _open_log(self) -> int:
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if created:
            fsync_dir(self.path.parent)  # the new name itself must survive a crash
        return fd

    def remember(self, end: int) -> None:
        """The file is known up to ``end``: keep its size and its last bytes."""
        self.end = end
        self.tail = read_tail(self.fd, end)

    @contextmanager
    def flocked(self) -> Iterator[None]:
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self.lock_fd, fcntl.LOCK_UN)

    def repair_tail(self, fd: int, known_end: int) -> int:
        """Cut a torn or NUL-padded last line back to the last newline (lock held).

        No ``gt`` is mid-write while we hold the lock: bytes after the last
        newline were left by a writer that died. They are saved to a
        quarantine file first. Returns the file size afterwards.
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
        self.quarantine_dir.mkdir(mode=0o700, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = self.quarantine_dir / f"events-{stamp}-{offset}.torn"
        with open(path, "ab") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    def observe(self, current_index: Callable[[], EventIndex]) -> Observation:
        """What others did to the file since we last looked (lock held)."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            info = None
        end = self.end
        replaced = info is None or (info.st_dev, info.st_ino) != self.inode
        if not replaced:
            assert info is not None
            rewritten = info.st_size < end or not tail_matches(self.fd, end, self.tail)
            if not rewritten:
                size = self.repair_tail(self.fd, end)
                if size == end:
                    return Observation()
                appended = list(whole_lines(self.fd, end, size))
                self.remember(size)
                return Observation(appended=appended)
            return Observation(rewrite=self._reread(self.fd, None, current_index()))
        known = current_index()
        new_fd = self._open_log()
        return Observation(rewrite=self._reread(new_fd, new_fd, known))

    def _reread(self, fd: int, new_fd: int | None, old: EventIndex) -> Rewrite:
        size = self.repair_tail(fd, 0)
        data = os.pread(fd, size, 0) if size else b""
        index, fresh_from, removed = old.rematch(data)
        if new_fd is not None:
            info = os.fstat(new_fd)
            self.fd = new_fd
            self.inode = (info.st_dev, info.st_ino)
        self.remember(size)
        log.warning(
            "eventlog_reloaded",
            reason="replaced" if new_fd is not None else "rewritten",
            lines=len(index),
            new_lines=len(index) - fresh_from,
            removed=len(removed),
        )
        return Rewrite(
            index=index,
            data=data,
            fresh_from=fresh_from,
            removed_max=max(removed, default=-1),
            new_fd=new_fd,
            tail=self.tail,
        )

    def append(self, data: bytes, sync: bool) -> StorageError | None:
        """Write ``data`` at the end in one ``write`` and sync it (lock held).

        On failure the file is cut back to its size before, so no line of
        the batch stays behind.
        """
        fd = self.fd
        before = self.end
        try:
            write_all(fd, data)
            if sync:
                synced_from = time.perf_counter()
                os.fdatasync(fd)
                self.fsync_seconds.observe(time.perf_counter() - synced_from)
            else:
                self.dirty = True
        except OSError as exc:
            self._cut_back(fd, before)
            log.error("eventlog_write_failed", error=exc.strerror, errno=exc.errno, bytes=len(data))
            reason = "disk full" if exc.errno == errno.ENOSPC else exc.strerror
            return StorageError(f"could not write the event log ({reason}); nothing was written")
        self.end = before + len(data)
        self.tail = (self.tail + data)[-TAIL_SIGNATURE:]
        return None

    def _cut_back(self, fd: int, size: int) -> None:
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError as exc:
            log.error("eventlog_cut_back_failed", error=exc.strerror, size=size)

    def sync(self) -> None:
        if self.dirty:
            self.dirty = False
            synced_from = time.perf_counter()
            os.fdatasync(self.fd)
            self.fsync_seconds.observe(time.perf_counter() - synced_from)

    def replace(
        self,
        temp_fd: int,
        temp_path: Path,
        copied_up_to: int,
        before_rename: Callable[[int, int, bytes], None],
    ) -> int:
        """Swap a pruned copy in (lock held): returns the old descriptor (still open).

        What was appended after ``copied_up_to`` is copied onto the new file,
        which is synced; ``before_rename(inode, size, tail)`` then records the
        new file's seqmap, and the rename commits the prune.
        """
        current = os.fstat(self.fd).st_size
        if current > copied_up_to:
            copy_range(self.fd, temp_fd, copied_up_to, current - copied_up_to)
        os.fsync(temp_fd)
        info = os.fstat(temp_fd)
        tail = read_tail(temp_fd, info.st_size)
        before_rename(info.st_ino, info.st_size, tail)
        # The commit point: from here on, the new file is the log.
        os.replace(temp_path, self.path)
        try:
            fsync_dir(self.path.parent)
        except OSError as exc:
            log.error("eventlog_dir_sync_failed", error=exc.strerror)
        old_fd = self.fd
        self.fd = temp_fd
        self.inode = (info.st_dev, info.st_ino)
        self.end = info.st_size
        self.tail = tail
        return old_fd

    def close(self) -> None:
        for fd in (self.fd, self.lock_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.lock_fd = -1


def copy_range(source: int, target: int, offset: int, length: int) -> None:
    while length > 0:
        chunk = os.pread(source, min(length, 4 << 20), offset)
        if not chunk:
            raise StorageError("the event log shrank during a copy")
        write_all(target, chunk)
        offset += len(chunk)
        length -= len(chunk)


# ---------------------------------------------------------------- the thread


@dataclass(eq=False)
class Append:
    """One line to append; ``done`` is told its seq, or the error, on the event loop."""

    line: bytes
    done: Callable[[int | StorageError], None]
    known: Known | None = None  # its fields, when the appender has them


@dataclass(eq=False)
class _Call:
    """Work to run in the writer's thread, under the lock; its outcome goes to ``deliver``."""

    work: Callable[[LogFile], Any]
    deliver: Callable[[Any, BaseException | None], None]


@dataclass(eq=False)
class _Close:
    deliver: Callable[[Any, BaseException | None], None]


@dataclass
class Batch:
    """What one group commit did, in file order: others' lines first, then ours."""

    observation: Observation
    items: list[Append]
    data: bytes
    error: StorageError | None


class Writer:
    """The thread that does all the log's writing, and the queue that feeds it."""

    def __init__(
        self,
        file: LogFile,
        *,
        sync: bool,
        sync_interval_s: float,
        on_batch: Callable[[Batch], None],
        current_index: Callable[[], EventIndex],
    ) -> None:
        self.file = file
        self.sync = sync
        self.sync_interval_s = sync_interval_s
        self.on_batch = on_batch
        # Called on the loop right after each ``on_batch``, in the same callback: the server
        # writes the replies the batch produced there, not one loop turn later.
        self.after_batch: list[Callable[[], None]] = []
        self.current_index = current_index
        self._queue: queue.SimpleQueue[list[Append] | _Call | _Close] = queue.SimpleQueue()
        # Appends of this loop turn, handed to the thread together at its end (``put``).
        self._turn: list[Append] = []
        self._turn_bytes = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        self.batch_lines = Buckets(BATCH_LINES)  # observed in the writer's thread only

    # ------------------------------------------------------------ event loop side

    async def run(self) -> None:
        """The writer's thread, for the daemon's lifetime (until ``close``)."""
        self._loop = asyncio.get_running_loop()
        await anyio.to_thread.run_sync(self._main, limiter=anyio.CapacityLimiter(1))

    def put(self, item: Append) -> None:
        """Queue an append (event loop). The appends of one loop turn reach the thread
        together, at the turn's end (or once they fill a batch): one wake-up of the thread,
        and one handover of the GIL, per turn instead of per emit; and the turn's lines
        make one batch instead of the first of them one and the rest the next."""
        if self._loop is None:  # before ``run``: nothing to wait for
            self._queue.put([item])
            return
        turn = self._turn
        if not turn:
            self._loop.call_soon(self._hand_over)
        turn.append(item)
        self._turn_bytes += len(item.line)
        if self._turn_bytes >= MAX_BATCH_BYTES:
            self._hand_over()

    def _hand_over(self) -> None:
        if self._turn:
            self._queue.put(self._turn)
            self._turn = []
            self._turn_bytes = 0

    async def call(
        self, work: Callable[[LogFile], Any], apply: Callable[[Any], Any] | None = None
    ) -> Any:
        """Run ``work(file)`` in the writer's thread, in turn with the appends.

        ``apply(result)`` then runs on the event loop in the same turn as
        the outcomes of the batches around it (in file order), and what it
        returns is returned.
        """
        done = anyio.Event()
        outcome: list[Any] = []

        def deliver(result: Any, error: BaseException | None) -> None:
            if error is None and apply is not None:
                try:
                    result = apply(result)
                except BaseException as exc:
                    result, error = None, exc
            outcome.append((result, error))
            done.set()

        self._hand_over()  # in order: the appends asked for before this call
        self._queue.put(_Call(work, deliver))
        with anyio.CancelScope(shield=True):  # once queued, it runs: wait for it
            await done.wait()
        result, error = outcome[0]
        if error is not None:
            raise error
        return result

    async def close(self) -> None:
        """Write what is queued, sync, and end the thread."""
        if self.closed:
            return
        self.closed = True
        done = anyio.Event()
        self._hand_over()
        self._queue.put(_Close(lambda result, error: done.set()))
        await done.wait()

    # ------------------------------------------------------------ the thread

    def _main(self) -> None:
        idle_s = self.sync_interval_s if not self.sync else IDLE_CHECK_S
        while True:
            try:
                job = self._queue.get(timeout=idle_s)
            except queue.Empty:
                anyio.from_thread.check_cancelled()
                self._sync_if_dirty()
                continue
            if isinstance(job, list):
                self._write(job)
            elif isinstance(job, _Call):
                self._run_call(job)
            else:
                self._sync_if_dirty()
                self._deliver(job.deliver, None, None)
                return

    def _write(self, first: list[Append]) -> None:
        items = first
        size = sum(len(item.line) for item in items)
        pending: _Call | _Close | None = None
        while size < MAX_BATCH_BYTES:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if not isinstance(job, list):
                pending = job  # runs right after this batch
                break
            items += job
            size += sum(len(item.line) for item in job)
        data = b"".join(item.line for item in items)
        self.batch_lines.observe(len(items))
        file = self.file
        with file.flocked():
            observation = file.observe(self.settled_index)
            error = file.append(data, self.sync)
        batch = Batch(observation=observation, items=items, data=data, error=error)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._batch_done, batch)
        if pending is not None:
            self._queue_front(pending)

    def _batch_done(self, batch: Batch) -> None:
        self.on_batch(batch)
        for hook in self.after_batch:
            hook()

    def _run_call(self, job: _Call) -> None:
        try:
            with self.file.flocked():
                result = job.work(self.file)
        except BaseException as exc:  # handed to the caller, who raises it
            self._deliver(job.deliver, None, exc)
        else:
            self._deliver(job.deliver, result, None)

    def _queue_front(self, job: _Call | _Close) -> None:
        """Run a job taken out of turn at once (it was next after the batch)."""
        if isinstance(job, _Call):
            self._run_call(job)
        else:
            # A close behind a batch: write whatever else is queued, then stop.
            self._queue.put(job)

    def _sync_if_dirty(self) -> None:
        try:
            self.file.sync()
        except OSError as exc:
            log.error("eventlog_sync_failed", error=exc.strerror)

    def settled_index(self) -> EventIndex:
        """The loop's index once every earlier outcome is applied (a barrier)."""
        assert self._loop is not None
        applied = threading.Event()
        self._loop.call_soon_threadsafe(applied.set)
        applied.wait()
        return self.current_index()

    def _deliver(
        self,
        deliver: Callable[[Any, BaseException | None], None],
        result: Any,
        error: BaseException | None,
    ) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(deliver, result, error)
