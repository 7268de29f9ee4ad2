"""Reading the log: queries (of the live log, or with the archive) and subscription backlogs.

Reads on the event loop take the index and the file descriptor as they are,
with no await in between, so the two always agree. A read in a worker thread
takes a copy of the descriptor (``os.dup``) with the index of the moment: a
prune or a rewrite may replace both meanwhile, and the copy keeps the old
file readable until the read is done. The archive lock keeps lines from
moving between the live log and the archive while a read looks at both.
"""

from __future__ import annotations

import bisect
import os
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple, Protocol

import anyio
import anyio.to_thread
import structlog

from gastown_client.protocol import ArchiveInfo, EventLogInfo
from gastownd.core import archive as archived
from gastownd.core.events import format_ts
from gastownd.core.index import EventIndex
from gastownd.core.query import CompiledFilter
from gastownd.eventlog.archive_files import Archive
from gastownd.eventlog.logstate import SeqMap
from gastownd.eventlog.writer import LogFile
from gastownd.process.config import EventLogConfig
from gastownd.process.refusals import BadRequestError

log = structlog.get_logger("gastownd.reads")

# Queries of up to this many lines are read on the event loop (page-cache reads).
INLINE_READ_LINES = 256
# Worker threads the reads clients ask for may take at once (``EventLog.read_threads``):
# however many are pipelined, the rest of anyio's threads stay for the daemon's own work.
READ_THREADS = 4
BACKLOG_CHUNK = 256


class ReadableLog(Protocol):
    """What a read needs of the event log (``EventLog`` is one): its state of the moment."""

    index: EventIndex
    fd: int
    seqmap: SeqMap
    archive: Archive
    archive_lock: anyio.Lock
    archive_generation: int
    read_threads: anyio.CapacityLimiter


def read_lines(index: EventIndex, fd: int, positions: Sequence[int]) -> list[bytes]:
    """The stored bytes (without newline) of indexed lines."""
    return [os.pread(fd, index.length(p) - 1, index.offsets[p]) for p in positions]


async def read_lines_in_thread(eventlog: ReadableLog, positions: Sequence[int]) -> list[bytes]:
    """``read_lines`` in a worker thread, from the index and file of this moment."""
    index, fd = eventlog.index, os.dup(eventlog.fd)
    try:
        return await anyio.to_thread.run_sync(
            read_lines, index, fd, positions, limiter=eventlog.read_threads
        )
    finally:
        os.close(fd)


class Answer(NamedTuple):
    """The lines a query found, and the archive days it could not read: their lines are
    missing from the answer, which says so rather than look complete."""

    lines: list[bytes]
    unreadable_days: list[str]


async def query(
    eventlog: ReadableLog, flt: CompiledFilter, limit: int, oldest_first: bool, *, archive: bool
) -> Answer:
    if archive:
        return await _query_with_archive(eventlog, flt, limit, oldest_first)
    positions = eventlog.index.search(flt, limit, oldest_first=oldest_first)
    if limit <= INLINE_READ_LINES:
        # Search and read with no await between: the index cannot change under us.
        return Answer(read_lines(eventlog.index, eventlog.fd, positions), [])
    return Answer(await read_lines_in_thread(eventlog, positions), [])


async def _query_with_archive(
    eventlog: ReadableLog, flt: CompiledFilter, limit: int, oldest_first: bool
) -> Answer:
    """The live log and the archive as one history, ordered by (epoch, seq)."""
    async with eventlog.archive_lock:  # no line moves between the two reads
        index = eventlog.index
        epoch = eventlog.seqmap.epoch
        positions = index.search(flt, limit, oldest_first=oldest_first)
        lines = await read_lines_in_thread(eventlog, positions)
        live = [((epoch, index.seqs[p]), line) for p, line in zip(positions, lines, strict=True)]
        seqs = index.seqs

        def still_live(key: tuple[int, int]) -> bool:
            # A line archived by a batch whose swap a crash prevented is in both.
            return key[0] == epoch and _holds(seqs, key[1])

        unreadable: set[str] = set()
        old = await anyio.to_thread.run_sync(
            _search_archive,
            eventlog,
            flt,
            limit,
            oldest_first,
            still_live,
            unreadable,
            limiter=eventlog.read_threads,
        )
    merged = sorted(live + old, key=lambda item: item[0], reverse=not oldest_first)
    return Answer([line for _, line in merged[:limit]], sorted(unreadable))


def _search_archive(
    eventlog: ReadableLog,
    flt: CompiledFilter,
    limit: int,
    oldest_first: bool,
    skip: Callable[[tuple[int, int]], bool],
    unreadable: set[str],
) -> list[tuple[tuple[int, int], bytes]]:
    members = eventlog.archive.catalogue(
        archived.day_name(flt.since) if flt.since is not None else None,
        archived.day_name(flt.until) if flt.until is not None else None,
    )
    return archived.search(
        members,
        lambda member: read_member(eventlog, member, unreadable),
        flt,
        limit,
        oldest_first=oldest_first,
        skip=skip,
    )


def read_member(
    eventlog: ReadableLog, member: archived.Member, unreadable: set[str] | None = None
) -> list[tuple[int, bytes]]:
    """The member's lines; none if it cannot be read, its day then added to ``unreadable``."""
    try:
        return eventlog.archive.read(member)
    except (OSError, ValueError, zlib.error) as exc:
        log.warning(
            "archive_member_unreadable", day=member.day, offset=member.offset, error=str(exc)
        )
        if unreadable is not None:
            unreadable.add(member.day)
        return []


def _holds(seqs: Sequence[int], seq: int) -> bool:
    position = bisect.bisect_left(seqs, seq)
    return position < len(seqs) and seqs[position] == seq


class BacklogGap(Exception):
    """Lines after the replay's position left the log without reaching the archive."""


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
        eventlog: ReadableLog,
        flt: CompiledFilter,
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
                chunk = await anyio.to_thread.run_sync(
                    next, self._stream, None, limiter=eventlog.read_threads
                )
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
        async with eventlog.archive_lock:  # a whole catalogue, never a batch half written
            self._generation = eventlog.archive_generation
            members = await anyio.to_thread.run_sync(
                eventlog.archive.catalogue, limiter=eventlog.read_threads
            )
        return archived.replay(
            members,
            lambda member: read_member(eventlog, member),
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
        lines = iter(read_lines(index, eventlog.fd, positions))
        return [(seq, next(lines) if isinstance(p, int) else p) for seq, p in picked], done


class LogReads:
    """``EventLog``'s reads of the moment (its state is set up by ``EventLog``)."""

    index: EventIndex
    fd: int
    seqmap: SeqMap
    archive: Archive
    archive_lock: anyio.Lock
    archive_generation: int
    read_threads: anyio.CapacityLimiter
    config: EventLogConfig
    file: LogFile | None
    appended: int
    external: int
    last_prune_at: float | None
    last_prune_removed: int

    @property
    def quarantined(self) -> int:
        return self.file.quarantined if self.file is not None else 0

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
