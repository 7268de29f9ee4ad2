"""The archive of pruned lines in ``<town>/.gastownd/archive/``: the only code that touches it.

Layout, one pair of files per UTC day of the lines' ``ts``:

- ``events-YYYY-MM-DD.jsonl.gz``: gzip members appended by successive prunes,
  each holding whole lines exactly as they were in the live log, so
  ``zcat events-*.jsonl.gz`` prints Gas Town lines;
- ``events-YYYY-MM-DD.idx``: one JSON record per member
  (``core.archive.Member``): where the member is, the epoch and seqs of its
  lines, their types and time range. Files written before records existed
  are read as legacy lines without seqs.

Crash safety. A prune writes its batch **before** it renames the new log
into place: first ``pending.json`` (the days touched, their sizes before,
and the prune's temporary file), then the members, fsynced, then their
records, fsynced. The rename of the temporary file over the log commits the
batch; ``commit`` then removes the journal. After a crash ``recover`` reads
the journal: if the temporary file is still there the rename never happened,
the lines are still in the live log, and the batch is cut off the day files;
if it is gone the batch stands. So every pruned line is in exactly one of
the live log and the archive, whatever the moment of the crash.

Blocking: every method does file I/O and runs in a worker thread.
"""

from __future__ import annotations

import os
import signal
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import msgspec
import structlog

from gastownd.core.archive import (
    Member,
    day_name,
    legacy_member,
)
from gastownd.core.index import EventIndex
from gastownd.eventlog.logstate import (
    fsync_dir,
    open_state_file,
    pread_all,
    read_state_file,
    runs_of,
    write_all,
    write_atomically,
)

log = structlog.get_logger("gastownd.archive")

JOURNAL = "pending.json"
# In the name of every prune's temporary file (``<log>.gastownd-prune-<pid>``): a journal
# naming any other file (the log itself, one of another tool) was not written by a prune.
PRUNE_FILE_MARK = ".gastownd-prune-"
GZ_SUFFIX = ".jsonl.gz"
IDX_SUFFIX = ".idx"
PREFIX = "events-"
# Raw bytes per gzip member (a member is closed once past it, so it holds at most
# twice that): a reader holds one member in memory at a time.
MEMBER_RAW_BYTES = 4 << 20
# Day files held open at once while a batch is written (each is fsynced when closed).
OPEN_DAYS = 32
# zlib level 3: about 2.5 times as fast as gzip's default 6, files about 17 % larger.
COMPRESS_LEVEL = 3
READ_WINDOW = 4 << 20
WINDOW_LINES = 4096
SYNC_EVERY_BYTES = 1 << 20
DAY_S = 86_400

TEST_CRASH_ENV = "GASTOWND_TEST_CRASH_AT"


def crash_here_for_tests(point: str) -> None:
    """TEST-ONLY: die by SIGKILL at ``point`` when ``GASTOWND_TEST_CRASH_AT`` names it.

    Lets the reliability tests kill the daemon at an exact step of a prune
    (``archive_written``: after the archive batch is durable, before the
    swap; ``swapped``: after the swap, before the journal is removed), or the
    prune's worker process (``planner``: before it answers with the plan;
    ``archive_member``: once it wrote the batch's first member).
    Never set it outside tests.
    """
    if os.environ.get(TEST_CRASH_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


class Journal(msgspec.Struct, kw_only=True):
    """A batch being written: enough to undo it."""

    commit_path: str  # the prune's new log; its rename over the log commits the batch
    # Day -> (size of its .gz, size of its .idx) before the batch; -1: the file did not exist.
    days: dict[str, tuple[int, int]]


class Summary(msgspec.Struct):
    bytes: int = 0
    days: int = 0
    first_day: str | None = None
    last_day: str | None = None


class BatchReport(msgspec.Struct):
    lines: int = 0
    raw_bytes: int = 0
    days: list[str] = msgspec.field(default_factory=list)


_journal_decoder = msgspec.json.Decoder(Journal)
_member_decoder = msgspec.json.Decoder(Member)
_encoder = msgspec.json.Encoder()


def days_of(index: EventIndex, positions: Sequence[int]) -> dict[str, int]:
    """Lines per UTC day among ``positions`` (for the log line before a prune)."""
    counts: dict[int, int] = {}
    ts = index.ts
    for position in positions:
        ordinal = ts[position] // 86_400
        counts[ordinal] = counts.get(ordinal, 0) + 1
    return {day_name(ordinal * 86_400): n for ordinal, n in sorted(counts.items())}


class Archive:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.summary = Summary()

    # ------------------------------------------------------------ files

    def _gz(self, day: str) -> Path:
        return self.folder / f"{PREFIX}{day}{GZ_SUFFIX}"

    def _idx(self, day: str) -> Path:
        return self.folder / f"{PREFIX}{day}{IDX_SUFFIX}"

    def days(self) -> list[str]:
        """Every archived day, oldest first."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        return sorted(
            name[len(PREFIX) : -len(GZ_SUFFIX)]
            for name in names
            if name.startswith(PREFIX) and name.endswith(GZ_SUFFIX)
        )

    def refresh_summary(self) -> Summary:
        days = self.days()
        size = 0
        for day in days:
            for path in (self._gz(day), self._idx(day)):
                size += max(0, _size(path))
        self.summary = Summary(
            bytes=size,
            days=len(days),
            first_day=days[0] if days else None,
            last_day=days[-1] if days else None,
        )
        return self.summary

    # ------------------------------------------------------------ writing

    def recover(self) -> None:
        """Finish or undo a batch a crash interrupted (see the module's docstring)."""
        journal = self._read_journal()
        if journal is None:
            return
        commit = Path(journal.commit_path)
        if PRUNE_FILE_MARK in commit.name and commit.exists():
            self._undo(journal)
            log.warning("archive_batch_rolled_back", days=len(journal.days))
        else:
            log.info("archive_batch_committed", days=len(journal.days))
        self._remove_journal()

    def write(
        self,
        source_fd: int,
        index: EventIndex,
        positions: Sequence[int],
        bounds: tuple[int, int],
        days: Iterable[str],
        epoch: int,
        commit_path: Path,
    ) -> BatchReport:
        """Append the lines at ``positions`` (ascending) of ``index``'s file to their days.

        ``bounds`` is (count, end): the positions are below ``count``, whose
        last line ends at byte ``end`` (lines appended meanwhile are not read).
        ``days`` names every UTC day the lines fall on (``days_of``). Durable
        when it returns; undone by ``rollback`` (or by ``recover`` after a
        crash) unless ``commit_path`` is renamed away first.
        """
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        touched = sorted(days)
        journal = Journal(
            commit_path=str(commit_path),
            days={day: (_size(self._gz(day)), _size(self._idx(day))) for day in touched},
        )
        write_atomically(self.folder / JOURNAL, [_encoder.encode(journal)])
        writer = _BatchWriter(self, index, epoch)
        for window in _windows(index, positions, *bounds):
            writer.add_window(source_fd, *window)
        writer.finish()
        return BatchReport(lines=len(positions), raw_bytes=writer.raw_bytes, days=touched)

    def commit(self) -> None:
        self._remove_journal()

    def rollback(self) -> None:
        journal = self._read_journal()
        if journal is not None:
            self._undo(journal)
            self._remove_journal()

    def _read_journal(self) -> Journal | None:
        try:
            return _journal_decoder.decode(read_state_file(self.folder / JOURNAL))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, msgspec.DecodeError) as exc:
            # Written atomically: unreadable means never completed, so no member was written.
            log.warning("archive_journal_unreadable", error=str(exc))
            return None

    def _remove_journal(self) -> None:
        (self.folder / JOURNAL).unlink(missing_ok=True)

    def _undo(self, journal: Journal) -> None:
        for day, sizes in journal.days.items():
            for path, size in zip((self._gz(day), self._idx(day)), sizes, strict=True):
                if size < 0:
                    path.unlink(missing_ok=True)
                    continue
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue
                try:
                    # An undo only ever cuts off what the batch appended: a size beyond the
                    # file's (a journal of another town, a damaged one) is no batch of it.
                    if size <= os.fstat(fd).st_size:
                        os.ftruncate(fd, size)
                        os.fsync(fd)
                finally:
                    os.close(fd)
        fsync_dir(self.folder)

    def expire(self, before_day: str) -> dict[int, int]:
        """Delete the days before ``before_day``; returns the highest seq removed per epoch."""
        removed: dict[int, int] = {}
        for day in self.days():
            if day >= before_day:
                break
            for member in self.members(day):
                if not member.legacy:
                    removed[member.epoch] = max(removed.get(member.epoch, -1), member.last_seq)
            self._idx(day).unlink(missing_ok=True)
            self._gz(day).unlink(missing_ok=True)
            log.info("archive_day_expired", day=day)
        if removed:
            fsync_dir(self.folder)
        return removed

    # ------------------------------------------------------------ reading

    def members(self, day: str) -> list[Member]:
        """The members of one day, in file order; a legacy part first."""
        try:
            data = read_state_file(self._idx(day))
        except FileNotFoundError:
            data = b""
        except (OSError, ValueError) as exc:
            # The day's members are then read as one legacy part: every whole line is found.
            log.warning("archive_record_unreadable", day=day, error=str(exc))
            data = b""
        found: list[Member] = []
        for line in data.split(b"\n"):
            if not line:
                continue
            try:
                found.append(_member_decoder.decode(line))
            except msgspec.DecodeError:
                log.warning("archive_record_unreadable", day=day)
        legacy_end = found[0].offset if found else _size(self._gz(day))
        if legacy_end > 0:
            found.insert(0, legacy_member(day, legacy_end))
        return found

    def catalogue(self, first_day: str | None = None, last_day: str | None = None) -> list[Member]:
        members: list[Member] = []
        for day in self.days():
            if (first_day is None or day >= first_day) and (last_day is None or day <= last_day):
                members.extend(self.members(day))
        return members

    def read(self, member: Member) -> list[tuple[int, bytes]]:
        """The member's lines (without newlines) with their seqs."""
        fd = open_state_file(self._gz(member.day))
        try:
            size = os.fstat(fd).st_size
            if not 0 <= member.offset <= member.offset + member.length <= size:
                raise ValueError(f"archive member of {member.day} lies outside its file")
            data = pread_all(fd, member.length, member.offset)
        finally:
            os.close(fd)
        if member.legacy:
            raw = _decompress_tolerant(data)
            lines = raw.split(b"\n")
            if lines and not lines[-1]:
                lines.pop()
            return [(member.first_seq + i, line) for i, line in enumerate(lines)]
        raw = zlib.decompress(data, wbits=31)
        lines = raw.split(b"\n")
        lines.pop()  # every line ends with a newline
        if len(lines) != member.count:
            raise ValueError(
                f"archive member of {member.day} holds {len(lines)} lines, not {member.count}"
            )
        return list(zip(member.seqs(), lines, strict=True))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


Window = tuple[Sequence[int], list[int], list[int]]


def _windows(index: EventIndex, positions: Sequence[int], count: int, end: int) -> Iterator[Window]:
    """``positions`` in groups (with their lines' starts and ends) read with one ``pread`` each.

    A group spans at most ``READ_WINDOW`` bytes of the file, or is one line.
    """
    offsets = index.offsets
    for first in range(0, len(positions), WINDOW_LINES):
        chunk = positions[first : first + WINDOW_LINES]
        starts = [offsets[p] for p in chunk]
        ends = [offsets[p + 1] if p + 1 < count else end for p in chunk]
        yield from _narrowed(chunk, starts, ends)


def _narrowed(chunk: Sequence[int], starts: list[int], ends: list[int]) -> Iterator[Window]:
    if len(chunk) == 1 or ends[-1] - starts[0] <= READ_WINDOW:
        yield chunk, starts, ends
        return
    half = len(chunk) // 2
    yield from _narrowed(chunk[:half], starts[:half], ends[:half])
    yield from _narrowed(chunk[half:], starts[half:], ends[half:])


class _DayBuffer(msgspec.Struct):
    lines: list[bytes] = msgspec.field(default_factory=list)
    seqs: list[int] = msgspec.field(default_factory=list)
    types: set[str] = msgspec.field(default_factory=set)
    size: int = 0
    min_ts: int = 1 << 62
    max_ts: int = -(1 << 62)


class _BatchWriter:
    """Groups lines into per-day members and appends them; records go last."""

    def __init__(self, archive: Archive, index: EventIndex, epoch: int) -> None:
        self.archive = archive
        self.index = index
        self.epoch = epoch
        self.buffers: dict[str, _DayBuffer] = {}
        self.records: dict[str, list[Member]] = {}
        self.open: OrderedDict[str, int] = OrderedDict()
        self.sizes: dict[str, int] = {}
        self.created = False
        self.raw_bytes = 0
        self.unsynced = 0
        self._day_names: dict[int, str] = {}

    def add_window(
        self, fd: int, positions: Sequence[int], starts: list[int], ends: list[int]
    ) -> None:
        base = starts[0]
        data = pread_all(fd, ends[-1] - base, base)
        if len(data) != ends[-1] - base:
            raise OSError(0, "the event log shrank while it was archived")
        lines = [data[s - base : e - base] for s, e in zip(starts, ends, strict=True)]
        index = self.index
        ts, seqs, types, names = index.ts, index.seqs, index.types, index.type_names
        ordinals = [ts[p] // DAY_S for p in positions]
        # Runs of lines of one day (a log is nearly in time order: few runs).
        cuts = [i for i in range(1, len(ordinals)) if ordinals[i] != ordinals[i - 1]]
        for low, high in zip([0, *cuts], [*cuts, len(ordinals)], strict=True):
            day = self._day_names.get(ordinals[low])
            if day is None:
                day = self._day_names[ordinals[low]] = day_name(ordinals[low] * DAY_S)
            run = positions[low:high]
            buffer = self.buffers.get(day)
            if buffer is None:
                buffer = self.buffers[day] = _DayBuffer()
            buffer.lines.extend(lines[low:high])
            buffer.seqs.extend([seqs[p] for p in run])
            buffer.types.update({names[types[p]] for p in run})
            stamps = [ts[p] for p in run]
            buffer.min_ts = min(buffer.min_ts, *stamps)
            buffer.max_ts = max(buffer.max_ts, *stamps)
            buffer.size += ends[high - 1] - starts[low]
            if buffer.size >= MEMBER_RAW_BYTES:
                self._flush(day)

    def _flush(self, day: str) -> None:
        buffer = self.buffers.pop(day)
        raw = b"".join(buffer.lines)
        compressor = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, 31)
        member = compressor.compress(raw) + compressor.flush()
        fd = self._fd(day)
        offset = self.sizes[day]
        write_all(fd, member)
        crash_here_for_tests("archive_member")
        self.sizes[day] = offset + len(member)
        self.unsynced += len(member)
        if self.unsynced >= SYNC_EVERY_BYTES:
            # Synced as it goes: never a long sync that the log's own syncs queue behind.
            for open_fd in self.open.values():
                os.fdatasync(open_fd)
            self.unsynced = 0
        self.raw_bytes += len(raw)
        runs = runs_of(buffer.seqs)
        self.records.setdefault(day, []).append(
            Member(
                day=day,
                offset=offset,
                length=len(member),
                epoch=self.epoch,
                count=len(buffer.lines),
                first_seq=buffer.seqs[0],
                last_seq=buffer.seqs[-1],
                min_ts=buffer.min_ts,
                max_ts=buffer.max_ts,
                types=sorted(buffer.types),
                runs=runs,
                raw_bytes=len(raw),
            )
        )

    def _fd(self, day: str) -> int:
        fd = self.open.get(day)
        if fd is not None:
            self.open.move_to_end(day)
            return fd
        if len(self.open) >= OPEN_DAYS:
            _, oldest = self.open.popitem(last=False)
            os.fsync(oldest)
            os.close(oldest)
        path = self.archive._gz(day)
        self.created |= not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.sizes.setdefault(day, os.fstat(fd).st_size)
        self.open[day] = fd
        return fd

    def finish(self) -> None:
        for day in list(self.buffers):
            self._flush(day)
        while self.open:
            _, fd = self.open.popitem(last=False)
            os.fsync(fd)
            os.close(fd)
        for day, members in self.records.items():
            path = self.archive._idx(day)
            self.created |= not path.exists()
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                data = b"".join(_encoder.encode(m) + b"\n" for m in members)
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        if self.created:
            fsync_dir(self.archive.folder)


def _decompress_tolerant(data: bytes) -> bytes:
    """Every whole gzip member of ``data``; a torn one (a crash of an old version) ends it."""
    out: list[bytes] = []
    while data:
        decompressor = zlib.decompressobj(wbits=31)
        try:
            chunk = decompressor.decompress(data)
        except zlib.error:
            break
        if not decompressor.eof:
            # Torn member: keep its whole lines only.
            out.append(chunk[: chunk.rfind(b"\n") + 1])
            break
        out.append(chunk)
        data = decompressor.unused_data
    return b"".join(out)
