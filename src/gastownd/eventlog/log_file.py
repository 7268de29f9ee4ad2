"""The log file itself: its descriptors, Gas Town's lock, and every blocking change to it.

``LogFile`` does the blocking work, always under the writers' lock (an
exclusive BSD flock on ``.events.jsonl.lock``, exactly as ``gt`` takes it):
opening the log and cutting a torn tail off, looking at what other writers
did since it last looked (``observe``), appending a batch and syncing it,
and swapping a pruned copy in. While the daemon runs, only the writer's
thread (``writer.Writer``) uses it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import structlog

from gastownd.core.index import EventIndex
from gastownd.eventlog.indexer import LongLine, whole_lines
from gastownd.eventlog.logstate import (
    TAIL_SIGNATURE,
    fsync_dir,
    pread_all,
    read_tail,
    tail_matches,
    write_all,
)
from gastownd.eventlog.rewrite_read import still_the_start, whole_lines_now
from gastownd.metrics.buckets import FSYNC_SECONDS, Buckets
from gastownd.process.refusals import StorageError

log = structlog.get_logger("gastownd.writer")


# ---------------------------------------------------------------- observations


class Rewrite(msgspec.Struct):
    """The file was replaced, truncated or rewritten behind our back: all of it, matched."""

    index: EventIndex
    data: bytes
    fresh_from: int  # the first position not known before
    removed_max: int  # the highest seq that disappeared (-1: none)
    new_fd: int | None  # the replacement's descriptor, when it is another file
    tail: bytes  # the file's last bytes (a seqmap checkpoint)


class Observation(msgspec.Struct):
    """What others did to the file since we last looked (found under the lock)."""

    # Complete lines appended by others, in order (one too long to index comes described).
    appended: list[bytes | LongLine] = msgspec.field(default_factory=list)
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
        # The size the file has once the append under way is written (``end`` when none is):
        # read by the event loop (``EventLog.catch_up``), to tell a change it is told of
        # as our own append without a round trip through this thread.
        self.writing_end = 0
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
        self.end = self.writing_end = end
        self.tail = read_tail(self.fd, end)

    @contextmanager
    def flocked(self) -> Iterator[None]:
        self._lock_named_file()
        try:
            yield
        finally:
            fcntl.flock(self.lock_fd, fcntl.LOCK_UN)

    def _lock_named_file(self) -> None:
        """Flock the file that ``lock_path`` names now, reopening it if it was replaced.

        ``gt`` opens (creates) the lock file by name for every append: when
        the lock file was deleted or renamed, a flock on the descriptor we
        opened earlier excludes nobody. So once the flock is held, the name
        must still lead to the locked inode; if not, the name is opened again
        and the flock retaken (the usual lock-file dance). Should the new
        open fail, the old descriptor is kept and the error raised: the next
        attempt tries again.
        """
        while True:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
            held = os.fstat(self.lock_fd)
            try:
                named = os.stat(self.lock_path)
            except FileNotFoundError:
                named = None
            if named is not None and (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino):
                return
            fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
            stale = self.lock_fd
            self.open_lock()
            os.close(stale)
            log.warning("eventlog_lock_file_reopened", missing=named is None)

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
            block = pread_all(fd, position - start, start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                cut_at = start + newline + 1
                break
            position = start
        if cut_at == size:
            return size
        torn = pread_all(fd, size - cut_at, cut_at)
        try:
            self._quarantine(torn, cut_at)
        except OSError as exc:
            # Cutting without the copy would lose the torn bytes for good, and appending
            # after them would glue our line to theirs: leave the file as it is and fail
            # (the batch is answered io_error; at start-up, the start is refused); the next
            # write tries the repair again (e.g. once space is freed).
            log.error(
                "eventlog_tail_not_quarantined",
                error=exc.strerror,
                errno=exc.errno,
                torn_bytes=len(torn),
                at_offset=cut_at,
            )
            raise
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
                if info.st_size == end:  # the usual case: nobody else wrote (no fstat needed)
                    return Observation()
                size = self.repair_tail(self.fd, end)
                if size == end:
                    return Observation()
                appended = list(whole_lines(self.fd, end, size))
                self.remember(size)
                return Observation(appended=appended)
            return self._reread(self.fd, None, current_index())
        known = current_index()
        new_fd = self._open_log()
        try:
            return self._reread(new_fd, new_fd, known)
        except BaseException:
            os.close(new_fd)  # not adopted: the next look opens the name again
            raise

    def _reread(self, fd: int, new_fd: int | None, old: EventIndex) -> Observation:
        """Index the whole file again, matched to ``old`` (lock held, released meanwhile).

        The heavy part (reading and matching every line) runs with the lock
        released (see ``rewrite_read``); with the lock back, the lines
        appended meanwhile come as ``appended``, after the rewrite.
        """
        with self._unlocked():
            data = whole_lines_now(fd)
            index, fresh_from, removed = old.rematch(data)
        appended: list[bytes | LongLine] = []
        if still_the_start(self.path, fd, data):
            size = self.repair_tail(fd, len(data))
            appended = list(whole_lines(fd, len(data), size))
        else:  # changed again meanwhile: read it once more, under the lock this time
            size = self.repair_tail(fd, 0)
            data = pread_all(fd, size, 0) if size else b""
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
            appended_meanwhile=len(appended),
        )
        rewrite = Rewrite(
            index=index,
            data=data,
            fresh_from=fresh_from,
            removed_max=max(removed, default=-1),
            new_fd=new_fd,
            tail=data[-TAIL_SIGNATURE:],
        )
        return Observation(appended=appended, rewrite=rewrite)

    @contextmanager
    def _unlocked(self) -> Iterator[None]:
        """Release the writers' lock (held by the caller) for the body, then take it again."""
        fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
        try:
            yield
        finally:
            self._lock_named_file()

    def append(self, data: bytes, sync: bool) -> StorageError | None:
        """Write ``data`` at the end in one ``write`` and sync it (lock held).

        On failure the file is cut back to its size before, so no line of
        the batch stays behind.
        """
        fd = self.fd
        before = self.end
        self.writing_end = before + len(data)
        try:
            write_all(fd, data)
            if sync:
                synced_from = time.perf_counter()
                os.fdatasync(fd)
                self.fsync_seconds.observe(time.perf_counter() - synced_from)
            else:
                self.dirty = True
        except OSError as exc:
            self.writing_end = before
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
        self.end = self.writing_end = info.st_size
        self.tail = tail
        return old_fd

    def close(self) -> None:
        for fd in (self.fd, self.lock_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.lock_fd = -1


def failed_batch(exc: Exception, size: int) -> StorageError:
    """The answer to every emit of a batch whose look at the file, or whose lock, failed.

    Nothing of the batch was written (``append`` cuts its own failures back):
    each emit is refused, and the writer goes on with the next batch.
    """
    if isinstance(exc, StorageError):
        return exc
    log.error("eventlog_batch_failed", error=repr(exc), bytes=size)
    # The client is told the cause, never the paths or the internals behind it.
    if isinstance(exc, OSError) and exc.strerror:
        reason = "disk full" if exc.errno == errno.ENOSPC else exc.strerror
    else:
        reason = "internal error"
    return StorageError(f"could not write the event log ({reason}); nothing was written")


def copy_range(source: int, target: int, offset: int, length: int) -> None:
    while length > 0:
        chunk = os.pread(source, min(length, 4 << 20), offset)
        if not chunk:
            raise StorageError("the event log shrank during a copy")
        write_all(target, chunk)
        offset += len(chunk)
        length -= len(chunk)
