"""Start-up: the log recovered under the writers' lock, its seqs resolved, its index built.

In order: an archive batch a crash interrupted is settled, the temporary
files of crashed prunes are removed, and then, holding Gas Town's lock, the
log is opened (created if missing) and a torn tail cut off; the seqmap of
its inode is checked against the file (else a new epoch starts), and the
index comes from the snapshot plus what was appended since, or from the
whole file.

A long stretch with no snapshot to cover it (``BACKGROUND_MIN_BYTES`` or more:
a first start on a big log, or a lost snapshot) is not indexed here: its
lines are only counted, which gives the seqs of what follows, and
``Recovered.pending`` describes what ``EventLog.run_indexing`` indexes
while the daemon serves.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import structlog

from gastownd.core.index import EventIndex
from gastownd.eventlog.archive_files import PRUNE_FILE_MARK, Archive
from gastownd.eventlog.indexer import FIND_NEWLINE_WITHIN, index_range
from gastownd.eventlog.line_count import count_lines
from gastownd.eventlog.logstate import (
    SNAPSHOT_VERSION,
    SeqMap,
    load_seqmaps,
    read_snapshot,
    tail_matches,
    write_seqmap,
)
from gastownd.eventlog.writer import LogFile
from gastownd.process.memory import release_freed_memory

log = structlog.get_logger("gastownd.recovery")

SNAPSHOT_NAME = "index.snapshot"

# An unindexed stretch at least this long is indexed after the socket serves.
BACKGROUND_MIN_BYTES = 8 << 20
# The end of the log indexed before serving all the same.
FOREGROUND_TAIL_BYTES = 512 << 10
# A parse of a shorter log frees too little to give back: an empty or small town's start
# neither loads libc through ctypes nor walks the heap for it.
TRIM_AFTER_BYTES = 4 << 20


class PendingIndex(msgspec.Struct):
    """What is left to index in the background: bytes ``start..end`` of the log, whose
    lines (``lines`` of them) take ``seqs``, appended to ``base`` (the snapshot's index, or
    an empty one); the live index then follows it."""

    base: EventIndex
    start: int
    end: int
    lines: int
    seqs: Iterator[int]
    next_seq: int  # the seq of the first line after them
    done: int = 0  # bytes indexed so far (set by the indexing thread)


class Recovered(msgspec.Struct):
    file: LogFile
    index: EventIndex
    seqmap: SeqMap
    cold_start_s: float  # time spent indexing the whole file (0: a snapshot was used)
    snapshot_lines: int  # lines the snapshot held
    # Set when a long stretch is left to index in the background: ``index`` is then
    # the live index, which starts at the file's end.
    pending: PendingIndex | None = None


def recover(
    path: Path,
    lock_path: Path,
    state_dir: Path,
    archive: Archive,
    *,
    background_min: int | None = None,
) -> Recovered:
    """Everything before the daemon may read or write the log (blocking).

    ``background_min``: a stretch to index at least this long is left to the
    background (``None``: never).
    """
    state_dir.mkdir(mode=0o700, exist_ok=True)
    file = LogFile(path, lock_path, state_dir / "quarantine")
    file.open_lock()
    # Before the stale prune files go: the journal tells by them whether a batch committed.
    archive.recover()
    archive.refresh_summary()
    for stale in path.parent.glob(f"{path.name}{PRUNE_FILE_MARK}*"):
        stale.unlink(missing_ok=True)  # left by a prune that crashed before its rename
        log.warning("stale_prune_file_removed", path=str(stale))
    with file.flocked():
        size = file.open()
        seqmap = _resolve_seqmap(file, state_dir, size)
        started = time.monotonic()
        snapshot = _load_snapshot(file, state_dir / SNAPSHOT_NAME, seqmap.epoch, size)
        snapshot_lines = len(snapshot) if snapshot is not None else 0
        start = snapshot.end if snapshot is not None else 0
        if background_min is not None and size - start >= background_min:
            # The last lines are indexed now: lines gt wrote while the daemon was
            # down are recorded before it serves (see ``SessionRecorder.open``).
            cut = _line_start_after(file.fd, max(start, size - FOREGROUND_TAIL_BYTES), size)
            pending = _leave_to_background(file.fd, start, cut, seqmap, snapshot)
            tail_seqs = seqmap.seqs_from(snapshot_lines + pending.lines)
            live = index_range(file.fd, cut, size, tail_seqs)
            live.seq_floor = next(tail_seqs)
            file.remember(size)
            write_seqmap(state_dir, msgspec.structs.replace(seqmap, end=file.end, tail=file.tail))
            return Recovered(
                file=file,
                index=live,
                seqmap=seqmap,
                cold_start_s=0.0,
                snapshot_lines=snapshot_lines,
                pending=pending,
            )
        seqs: Iterator[int] = itertools.islice(seqmap.seqs(), snapshot_lines, None)
        try:
            index = read_index(file.fd, size, seqs, snapshot)
        except ValueError as exc:
            if snapshot is None:
                raise
            # The snapshot fitted the file's start but not what follows it: the
            # log alone is the truth, so index all of it.
            log.warning("index_snapshot_unusable", error=str(exc), action="rebuilt from the log")
            snapshot, snapshot_lines = None, 0
            started = time.monotonic()
            seqs = seqmap.seqs()
            index = read_index(file.fd, size, seqs)
        # What follows the file's last line, even when its last lines were pruned.
        index.seq_floor = next(seqs)
        indexed_s = time.monotonic() - started
        if snapshot is None and size >= TRIM_AFTER_BYTES:
            release_freed_memory()
        file.remember(index.end)
        write_seqmap(state_dir, msgspec.structs.replace(seqmap, end=file.end, tail=file.tail))
    return Recovered(
        file=file,
        index=index,
        seqmap=seqmap,
        cold_start_s=0.0 if snapshot is not None else indexed_s,
        snapshot_lines=snapshot_lines,
    )


def _leave_to_background(
    fd: int, start: int, end: int, seqmap: SeqMap, snapshot: EventIndex | None
) -> PendingIndex:
    """Count the lines of ``start..end`` (every newline ends one line, indexable or not)."""
    lines = count_lines(fd, start, end)
    first = len(snapshot) if snapshot is not None else 0
    return PendingIndex(
        base=snapshot if snapshot is not None else EventIndex(),
        start=start,
        end=end,
        lines=lines,
        seqs=itertools.islice(seqmap.seqs_from(first), lines),
        next_seq=next(seqmap.seqs_from(first + lines)),
    )


def _line_start_after(fd: int, offset: int, end: int) -> int:
    """The first line start at or after ``offset`` (``end`` if there is none)."""
    if offset == 0:
        return 0
    window = os.pread(fd, min(FIND_NEWLINE_WITHIN, end - offset + 1), offset - 1)
    newline = window.find(b"\n")
    return offset + newline if newline >= 0 else end


def index_pending(fd: int, pending: PendingIndex) -> EventIndex:
    """Index what ``recover`` left to the background (blocking; a worker thread)."""

    def progress(done: int) -> None:
        pending.done = done - pending.start

    part = index_range(fd, pending.start, pending.end, pending.seqs, progress=progress)
    # Counted before appending: the base (a snapshot) is extended in place.
    base_lines = len(pending.base)
    index = pending.base
    if len(index) or index.end:
        index.append_index(part)
    else:
        index = part
    if index.end != pending.end or len(index) != base_lines + pending.lines:
        raise ValueError(
            f"the background index covers {len(index)} lines to byte {index.end}, expected "
            f"{base_lines + pending.lines} to byte {pending.end}"
        )
    release_freed_memory()
    return index


def _resolve_seqmap(file: LogFile, state_dir: Path, size: int) -> SeqMap:
    inode = file.inode[1]
    maps = load_seqmaps(state_dir)
    current = maps.get(inode)
    if current is not None and _checkpoint_holds(file.fd, current, size):
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


def _checkpoint_holds(fd: int, seqmap: SeqMap, size: int) -> bool:
    """The file is the one the seqmap describes, perhaps with lines appended since."""
    return size >= seqmap.end and tail_matches(fd, seqmap.end, seqmap.tail)


def _load_snapshot(file: LogFile, path: Path, epoch: int, size: int) -> EventIndex | None:
    """The saved index, if it still describes this file's start."""
    saved = read_snapshot(path)
    if saved is None:
        return None
    meta, blobs = saved
    header = meta.header
    fits = (
        meta.version == SNAPSHOT_VERSION
        and meta.inode == file.inode[1]
        and meta.epoch == epoch
        and header.end <= size
        and tail_matches(file.fd, header.end, meta.tail)
    )
    if not fits:
        log.info("index_snapshot_stale")
        return None
    try:
        return EventIndex.restore(header, blobs)
    except (ValueError, TypeError, OverflowError, MemoryError) as exc:
        log.warning("index_snapshot_unusable", error=str(exc), action="rebuilt from the log")
        return None


def read_index(
    fd: int, size: int, seqs: Iterator[int], index: EventIndex | None = None
) -> EventIndex:
    """Index the file from ``index.end`` (0 for a new index) to ``size``.

    A long stretch is indexed in worker processes (see ``indexer``).
    """
    if index is None:
        return index_range(fd, 0, size, seqs)
    if size > index.end:
        index.append_index(index_range(fd, index.end, size, seqs))
    return index
