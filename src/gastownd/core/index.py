"""The in-memory index of every complete line in the event log.

One entry per line, malformed ones included (type ``-1``) so that entry
``i`` always maps to a byte range of the file and rewrites can keep them.
Columns are compact arrays (``index_columns``: about 50 bytes a line);
strings are interned and types and sessions have posting lists
(``index_postings``); ``index_snapshot`` turns it into bytes and back.
Each line carries a ``seq``: strictly increasing along the file, stable
across rewrites that keep the line, and the basis of subscription cursors.
No I/O here: the caller reads the file and feeds bytes in.
"""

from __future__ import annotations

import itertools
import operator
import zlib
from array import array
from collections.abc import Generator, Iterable, Iterator, Sequence

import msgspec

from gastownd.core import index_snapshot
from gastownd.core.events import decode_lines, parse_stamps, sessions_of
from gastownd.core.index_columns import MALFORMED, NO_SESSION, NO_STAMP, POSTING, LineColumns
from gastownd.core.index_postings import NameTables, interned, post, walk_postings
from gastownd.core.index_snapshot import ColumnBlobs, IndexHeader
from gastownd.core.query import CompiledFilter
from gastownd.core.retention import PLAN_CHUNK, drive

# Lines posted at a time by ``append_index``.
APPEND_SLICE = 1 << 16

__all__ = ["MALFORMED", "NO_SESSION", "Entry", "EventIndex", "IndexHeader", "Known"]


class Known(msgspec.Struct, frozen=True, gc=False):
    """What the index keeps of a line its writer already knows (our own emits).

    A Struct, not a NamedTuple: one is made per emit, and a Struct is made in C.
    """

    type: str
    actor: str
    session: str | None
    ts: int


class Entry(msgspec.Struct, frozen=True):
    """One line as the index knows it."""

    position: int
    seq: int
    offset: int
    length: int
    type: str | None
    actor: str
    session: str | None
    ts: int


class EventIndex(LineColumns, NameTables):
    """The columns of every line and the tables and postings over them."""

    def __init__(self, base_offset: int = 0) -> None:
        LineColumns.__init__(self, base_offset)
        NameTables.__init__(self)

    # -------------------------------------------------------------- adding

    def add_lines(self, data: bytes | memoryview, offset: int, seqs: Iterator[int]) -> int:
        """Index the whole lines in ``data`` (which starts at file ``offset``).

        Returns the number of bytes consumed (a trailing partial line is left).
        The hot path of start-up: lines are decoded in batches (msgspec, in C)
        and each column is built by one comprehension over the batch, rather
        than line by line, which costs about a microsecond a line on top of
        the decoding.
        """
        view = bytes(data)
        consumed = view.rfind(b"\n") + 1
        if consumed == 0:
            return 0
        lines = view[: consumed - 1].split(b"\n")
        count = len(lines)
        new_seqs = list(itertools.islice(seqs, count))
        last_seq = self.seqs[-1] if self.seqs else -1
        if (
            len(new_seqs) != count
            or new_seqs[0] <= last_seq
            or not all(map(operator.lt, new_seqs, itertools.islice(new_seqs, 1, None)))
        ):
            raise ValueError(f"seqs must increase from {last_seq}")
        parsed = decode_lines(lines)
        stamps = parse_stamps([p.ts if p is not None else None for p in parsed])
        good = [
            p if p is not None and t is not None else None
            for p, t in zip(parsed, stamps, strict=True)
        ]
        self.malformed += good.count(None)
        type_col = self.type_ids_of([p.type if p is not None else None for p in good])
        actor_col = self.actor_ids_of([p.actor if p is not None else None for p in good])
        session_col = self.session_ids_of(sessions_of(good))
        first = len(self.offsets)
        ends = list(itertools.accumulate([len(line) + 1 for line in lines], initial=offset))
        self.end = ends.pop()
        self.offsets.extend(ends)
        self.seqs.extend(new_seqs)
        ts_col = [
            t if p is not None and t is not None else 0 for p, t in zip(good, stamps, strict=True)
        ]
        self.ts.extend(ts_col)
        self.extend_max_ts(
            [t if p is not None else NO_STAMP for p, t in zip(good, ts_col, strict=True)]
        )
        self.types.extend(type_col)
        self.actors.extend(actor_col)
        self.sessions.extend(session_col)
        self.checksums.extend(map(zlib.crc32, lines))
        post(self.by_type, type_col, first, MALFORMED)
        post(self.by_session, session_col, first, NO_SESSION)
        return consumed

    def add_known_lines(
        self, lines: Sequence[bytes], offset: int, first_seq: int, known: Sequence[Known]
    ) -> int:
        """Index well-formed lines (newline included) whose fields are known, one after
        another from file ``offset``, with seqs from ``first_seq`` on.

        The entries ``add_lines`` would make of them, without decoding them again,
        built a column at a time for the whole batch (a group commit's lines), as
        ``add_lines`` does. Returns the position of the first.
        """
        first = len(self.offsets)
        if self.seqs and first_seq <= self.seqs[-1]:
            raise ValueError(f"seq {first_seq} does not follow {self.seqs[-1]}")
        # A group commit is a few lines (often one to three): one pass over them with the
        # columns' appends bound once costs less than a comprehension per column, whose
        # set-up is paid for every batch (5.2 us for a batch of one that way, against 2 us).
        offsets, seqs, ts_col, max_ts = self.offsets, self.seqs, self.ts, self.max_ts
        types, actors, sessions, checksums = self.types, self.actors, self.sessions, self.checksums
        by_type, by_session = self.by_type, self.by_session
        type_ids, actor_ids, session_ids = self._type_ids, self._actor_ids, self._session_ids
        running = self.running_max_ts()
        position, seq = first, first_seq
        for line, fields in zip(lines, known, strict=True):
            type_id = type_ids.get(fields.type)
            if type_id is None:
                type_id = interned(fields.type, type_ids, self.type_names, by_type)
            actor_id = actor_ids.get(fields.actor)
            if actor_id is None:
                actor_id = interned(fields.actor, actor_ids, self.actor_names, None)
            session = fields.session
            session_id = NO_SESSION if session is None else session_ids.get(session)
            if session_id is None:
                assert session is not None
                session_id = interned(session, session_ids, self.session_names, by_session)
            if session_id != NO_SESSION:
                by_session[session_id].append(position)
            by_type[type_id].append(position)
            stamp = fields.ts
            if stamp > running:
                running = stamp
            offsets.append(offset)
            seqs.append(seq)
            ts_col.append(stamp)
            max_ts.append(running)
            types.append(type_id)
            actors.append(actor_id)
            sessions.append(session_id)
            checksums.append(zlib.crc32(line[:-1]))
            offset += len(line)
            position += 1
            seq += 1
        self.end = offset
        return first

    def add_unindexable(self, offset: int, length: int, seq: int, checksum: int) -> int:
        """A malformed line known only by its place and checksum (one too long to read
        whole); the same entry ``add_lines`` makes of it. Returns its position."""
        position = len(self.offsets)
        self._append(offset, length, seq, MALFORMED, 0, NO_SESSION, 0, checksum)
        return position

    def _append(
        self,
        offset: int,
        length: int,
        seq: int,
        type_id: int,
        actor_id: int,
        session_id: int,
        ts: int,
        checksum: int,
    ) -> None:
        position = len(self.offsets)
        self.append_line(offset, length, seq, type_id, actor_id, session_id, ts, checksum)
        self.post_line(position, type_id, session_id)

    # ------------------------------------------------------------- reading

    def entry(self, position: int) -> Entry:
        type_id = self.types[position]
        session_id = self.sessions[position]
        return Entry(
            position=position,
            seq=self.seqs[position],
            offset=self.offsets[position],
            length=self.length(position),
            type=None if type_id == MALFORMED else self.type_names[type_id],
            actor=self.actor_names[self.actors[position]] if type_id != MALFORMED else "",
            session=None if session_id == NO_SESSION else self.session_names[session_id],
            ts=self.ts[position],
        )

    def search(
        self,
        flt: CompiledFilter,
        limit: int,
        *,
        oldest_first: bool = False,
        after_position: int = 0,
    ) -> list[int]:
        """Positions of up to ``limit`` matching lines, newest first unless asked.

        Walks a posting list when the filter names a session or types, else
        the line columns; newest-first walks stop once ``max_ts`` falls
        below ``since``.
        """
        ids = self.filter_ids(flt)
        if ids is None:
            return []
        type_ids, actor_ids, session_id = ids
        candidates = self.candidates(flt.session, flt.types)
        since, until = flt.since, flt.until
        types, actors, sessions, ts_col, max_ts = (
            self.types,
            self.actors,
            self.sessions,
            self.ts,
            self.max_ts,
        )
        found: list[int] = []
        walk = (
            self.walk_lines(oldest_first, after_position, since)
            if candidates is None
            else walk_postings(candidates, oldest_first, after_position)
        )
        for position in walk:
            if not oldest_first and since is not None and max_ts[position] < since:
                break
            type_id = types[position]
            if type_id == MALFORMED:
                continue
            if type_ids is not None and type_id not in type_ids:
                continue
            if actor_ids is not None and actors[position] not in actor_ids:
                continue
            if session_id != NO_SESSION and sessions[position] != session_id:
                continue
            ts = ts_col[position]
            if (since is not None and ts < since) or (until is not None and ts > until):
                continue
            found.append(position)
            if len(found) >= limit:
                break
        return found

    # ---------------------------------------------------------- rewrites

    def rematch(self, data: bytes) -> tuple[EventIndex, int, list[int]]:
        """Index ``data``, a whole file rewritten behind our back, keeping known seqs.

        Lines are matched to this index by checksum and length, in order, so a
        line seen before keeps its seq (no duplicate delivery); matching stops
        at the first unknown line, after which every line is new. Returns the
        new index, the position of its first new line, and the seqs that
        disappeared.
        """
        seqs, fresh_from, next_fresh = self.seqs_for_rewrite(data)
        kept = set(seqs)
        removed = [seq for seq in self.seqs if seq not in kept]
        index = EventIndex()
        index.add_lines(data, 0, iter(seqs))
        index.seq_floor = next_fresh
        return index, len(seqs) if fresh_from is None else fresh_from, removed

    # ------------------------------------------------------------ snapshots

    def export(
        self, count: int | None = None, end: int | None = None
    ) -> tuple[IndexHeader, ColumnBlobs]:
        """The first ``count`` lines, ending at byte ``end``: ``index_snapshot.export``."""
        return index_snapshot.export(self, self, count, end)

    @classmethod
    def restore(cls, header: IndexHeader, blobs: Iterable[bytes]) -> EventIndex:
        """The inverse of ``export``; raises ValueError if the parts do not fit."""
        index = cls()
        index_snapshot.restore(index, index, header, blobs)
        return index

    # ----------------------------------------------------------- rebuilding

    def select(self, keep: Sequence[int]) -> EventIndex:
        """A new index of the kept positions (in order), laid out contiguously from 0.

        Strings are re-interned; seqs and checksums are carried over unchanged.
        """
        return drive(self.select_steps(keep))

    def select_steps(self, keep: Sequence[int]) -> Generator[None, None, EventIndex]:
        """``select`` in steps: yields every ``PLAN_CHUNK`` lines, returns the new index.

        The new index shares this one's string tables (same ids), so columns
        are copied whole, chunk by chunk, rather than line by line.
        """
        fresh = EventIndex()
        fresh.copy_names(self)
        fresh.by_type = {i: array(POSTING) for i in range(len(fresh.type_names))}
        fresh.by_session = {}
        for start in range(0, len(fresh.session_names), PLAN_CHUNK):  # can be many
            stop = min(len(fresh.session_names), start + PLAN_CHUNK)
            fresh.by_session.update((i, array(POSTING)) for i in range(start, stop))
            yield
        offsets, count, end = self.offsets, len(self.offsets), self.end
        for start in range(0, len(keep), PLAN_CHUNK):
            chunk = keep[start : start + PLAN_CHUNK]
            starts = [offsets[p] for p in chunk]
            ends = [offsets[p + 1] if p + 1 < count else end for p in chunk]
            lengths = list(map(operator.sub, ends, starts))
            fresh._extend_columns(self, chunk, lengths)
            yield
        return fresh

    def _extend_columns(self, other: EventIndex, chunk: Sequence[int], lengths: list[int]) -> None:
        """Append ``other``'s lines at ``chunk`` (same string ids), contiguously at ``end``."""
        first = self.extend_carried(other, chunk, lengths)
        types, sessions = self.types, self.sessions
        for position in range(first, len(types)):
            self.post_line(position, types[position], sessions[position])
        self.malformed += types[first:].count(MALFORMED)

    def append_index(self, part: EventIndex, *, consume: bool = False) -> None:
        """Append ``part``, the index of the bytes that follow this one's in the same file.

        Its offsets are absolute already; its strings are re-interned and
        its positions shifted. Seqs are taken as they are, and the running
        maximum of ``ts`` carries on from this index. ``consume``: ``part``
        is emptied as it is copied (see ``append_columns``).
        """
        if part.offsets and part.offsets[0] != self.end:
            raise ValueError(f"the part starts at byte {part.offsets[0]}, not {self.end}")
        id_maps = self.ids_from(part)
        if consume:
            part.by_type, part.by_session = {}, {}
        # Typically the first part, or parts that met the same names in the same order.
        same_ids = all(ids == list(range(len(ids))) for ids in id_maps)
        first = self.append_columns(part, None if same_ids else id_maps, consume=consume)
        for start in range(first, len(self), APPEND_SLICE):
            stop = start + APPEND_SLICE
            post(self.by_type, self.types[start:stop], start, MALFORMED)
            post(self.by_session, self.sessions[start:stop], start, NO_SESSION)

    def extend_from(self, other: EventIndex, positions: Iterable[int]) -> None:
        """Append ``other``'s lines at ``positions``, as if they followed this index's end."""
        offset = self.end
        for position in positions:
            length = other.length(position)
            entry = other.entry(position)
            if entry.type is None:
                ids = (MALFORMED, 0, NO_SESSION)
            else:
                ids = self.intern(entry.type, entry.actor, entry.session)
            self._append(offset, length, entry.seq, *ids, entry.ts, other.checksums[position])
            offset += length
