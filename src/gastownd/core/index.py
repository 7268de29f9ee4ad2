"""The in-memory index of every complete line in the event log.

One entry per line, malformed ones included (type ``-1``) so that entry
``i`` always maps to a byte range of the file and rewrites can keep them.
Columns are compact arrays (about 50 bytes a line); strings are interned.
Each line carries a ``seq``: strictly increasing along the file, stable
across rewrites that keep the line, and the basis of subscription cursors.
No I/O here: the caller reads the file and feeds bytes in.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import operator
import zlib
from array import array
from collections import defaultdict, deque
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import msgspec

from gastownd.core.events import decode_lines, parse_stamps, sessions_of
from gastownd.core.query import CompiledFilter
from gastownd.core.retention import PLAN_CHUNK, drive

MALFORMED = -1
NO_SESSION = -1
# The running maximum of ``ts`` before any well-formed line.
_NO_STAMP = -(1 << 62)
# Array typecodes: crc32 fits in 32 bits, positions in 31.
CHECKSUM = "I"
POSTING = "i"


class Known(NamedTuple):
    """What the index keeps of a line its writer already knows (our own emits)."""

    type: str
    actor: str
    session: str | None
    ts: int


@dataclass(frozen=True, slots=True)
class Entry:
    """One line as the index knows it."""

    position: int
    seq: int
    offset: int
    length: int
    type: str | None
    actor: str
    session: str | None
    ts: int


class IndexHeader(msgspec.Struct, kw_only=True):
    seq_floor: int = 0
    count: int
    end: int
    malformed: int
    type_names: list[str]
    actor_names: list[str]
    session_names: list[str]
    itemsizes: list[int]
    type_counts: list[int]
    session_counts: list[int]


class EventIndex:
    def __init__(self, base_offset: int = 0) -> None:
        self.offsets = array("q")
        self.seqs = array("q")
        self.ts = array("q")
        # Running maximum of ts: lets newest-first scans stop early even if a
        # few lines were stamped out of order.
        self.max_ts = array("q")
        self.types = array("i")
        self.actors = array("i")
        self.sessions = array("i")
        self.checksums = array(CHECKSUM)
        self.end = base_offset
        self.malformed = 0
        # The lowest seq a new line may take: removed lines' seqs are never reused.
        self.seq_floor = 0
        self.type_names: list[str] = []
        self._type_ids: dict[str, int] = {}
        self.actor_names: list[str] = []
        self._actor_ids: dict[str, int] = {}
        self.session_names: list[str] = []
        self._session_ids: dict[str, int] = {}
        self.by_type: dict[int, array[int]] = {}
        self.by_session: dict[int, array[int]] = {}

    def __len__(self) -> int:
        return len(self.offsets)

    def next_seq(self) -> int:
        """The seq the next appended line gets: never one a removed line had."""
        return max(self.seqs[-1] + 1, self.seq_floor) if self.seqs else self.seq_floor

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
        type_col = self._ids(
            [p.type if p is not None else None for p in good],
            self._type_ids,
            self.type_names,
            self.by_type,
            MALFORMED,
        )
        actor_col = self._ids(
            [p.actor if p is not None else None for p in good],
            self._actor_ids,
            self.actor_names,
            None,
            0,
        )
        session_col = self._ids(
            sessions_of(good), self._session_ids, self.session_names, self.by_session, NO_SESSION
        )
        first = len(self.offsets)
        ends = list(itertools.accumulate([len(line) + 1 for line in lines], initial=offset))
        self.end = ends.pop()
        self.offsets.extend(ends)
        self.seqs.extend(new_seqs)
        ts_col = [
            t if p is not None and t is not None else 0 for p, t in zip(good, stamps, strict=True)
        ]
        self.ts.extend(ts_col)
        floor = _NO_STAMP
        running = self.max_ts[-1] if self.max_ts else floor
        maxima = itertools.accumulate(
            [t if p is not None else floor for p, t in zip(good, ts_col, strict=True)],
            max,
            initial=running,
        )
        next(maxima)  # the initial value is not a line
        self.max_ts.extend(maxima)
        self.types.extend(type_col)
        self.actors.extend(actor_col)
        self.sessions.extend(session_col)
        self.checksums.extend(map(zlib.crc32, lines))
        _post(self.by_type, type_col, first, MALFORMED)
        _post(self.by_session, session_col, first, NO_SESSION)
        return consumed

    @staticmethod
    def _ids(
        values: list[str | None],
        table: dict[str, int],
        names: list[str],
        postings: dict[int, array[int]] | None,
        absent: int,
    ) -> list[int]:
        """The interned ids of ``values`` (``absent`` for None), interning new ones."""
        get = table.get
        ids = [get(v, -2) if v is not None else absent for v in values]
        if -2 in ids:
            for position in [i for i, found in enumerate(ids) if found == -2]:
                value = values[position]
                assert value is not None
                ids[position] = _interned(value, table, names, postings)
        return ids

    def add_known(self, line: bytes, offset: int, seq: int, known: Known) -> int:
        """Index one well-formed line (newline included) whose fields are known.

        The same entry ``add_lines`` would make of it, without decoding it again.
        Returns its position.
        """
        position = len(self.offsets)
        ids = self._intern(known.type, known.actor, known.session)
        self._append(offset, len(line), seq, *ids, known.ts, zlib.crc32(line[:-1]))
        return position

    def add_unindexable(self, offset: int, length: int, seq: int, checksum: int) -> int:
        """A malformed line known only by its place and checksum (one too long to read
        whole); the same entry ``add_lines`` makes of it. Returns its position."""
        position = len(self.offsets)
        self._append(offset, length, seq, MALFORMED, 0, NO_SESSION, 0, checksum)
        return position

    def _intern(self, type_: str, actor: str, session: str | None) -> tuple[int, int, int]:
        type_id = _interned(type_, self._type_ids, self.type_names, self.by_type)
        actor_id = _interned(actor, self._actor_ids, self.actor_names, None)
        session_id = (
            NO_SESSION
            if session is None
            else _interned(session, self._session_ids, self.session_names, self.by_session)
        )
        return type_id, actor_id, session_id

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
    ) -> int:
        if self.seqs and seq <= self.seqs[-1]:
            raise ValueError(f"seq {seq} does not follow {self.seqs[-1]}")
        position = len(self.offsets)
        self.offsets.append(offset)
        self.seqs.append(seq)
        self.ts.append(ts)
        # A malformed line carries the running maximum on, as in ``add_lines``.
        stamp = ts if type_id != MALFORMED else _NO_STAMP
        self.max_ts.append(max(stamp, self.max_ts[-1]) if self.max_ts else stamp)
        self.types.append(type_id)
        self.actors.append(actor_id)
        self.sessions.append(session_id)
        self.checksums.append(checksum)
        self.end = offset + length
        if type_id == MALFORMED:
            self.malformed += 1
        else:
            self.by_type[type_id].append(position)
            if session_id != NO_SESSION:
                self.by_session[session_id].append(position)
        return type_id

    # ------------------------------------------------------------- reading

    def length(self, position: int) -> int:
        following = position + 1
        end = self.offsets[following] if following < len(self.offsets) else self.end
        return end - self.offsets[position]

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

    def position_after(self, seq: int) -> int:
        """The position of the first line whose seq is greater than ``seq``."""
        return bisect.bisect_right(self.seqs, seq)

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
        candidates = self._candidates(flt)
        type_ids = (
            None if not flt.types else {self._type_ids[t] for t in flt.types if t in self._type_ids}
        )
        if type_ids is not None and not type_ids:
            return []
        actor_ids = None
        if flt.actor is not None:
            actor_ids = {i for i, name in enumerate(self.actor_names) if flt.actor in name}
            if not actor_ids:
                return []
        session_id = NO_SESSION
        if flt.session is not None:
            session_id = self._session_ids.get(flt.session, NO_SESSION)
            if session_id == NO_SESSION:
                return []
        since, until = flt.since, flt.until
        types, actors, sessions, ts_col, max_ts = (
            self.types,
            self.actors,
            self.sessions,
            self.ts,
            self.max_ts,
        )
        found: list[int] = []
        for position in self._walk(candidates, oldest_first, after_position, since):
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

    def _candidates(self, flt: CompiledFilter) -> list[array[int]] | None:
        """Posting lists to walk (None: every line)."""
        if flt.session is not None:
            session_id = self._session_ids.get(flt.session)
            return [self.by_session[session_id]] if session_id is not None else []
        if flt.types:
            return [self.by_type[self._type_ids[t]] for t in flt.types if t in self._type_ids]
        return None

    def _walk(
        self,
        candidates: list[array[int]] | None,
        oldest_first: bool,
        after_position: int,
        since: int | None,
    ) -> Iterator[int]:
        if candidates is None:
            start = after_position
            if oldest_first and since is not None:
                start = max(start, bisect.bisect_left(self.max_ts, since))
            if oldest_first:
                yield from range(start, len(self.offsets))
            else:
                yield from range(len(self.offsets) - 1, start - 1, -1)
            return
        if len(candidates) == 1:
            postings = candidates[0]
            first = bisect.bisect_left(postings, after_position)
            if oldest_first:
                yield from (postings[i] for i in range(first, len(postings)))
            else:
                yield from (postings[i] for i in range(len(postings) - 1, first - 1, -1))
            return
        if oldest_first:
            yield from heapq.merge(
                *(p[bisect.bisect_left(p, after_position) :] for p in candidates)
            )
        else:
            lists: list[Iterable[int]] = [
                reversed(p[bisect.bisect_left(p, after_position) :]) for p in candidates
            ]
            yield from heapq.merge(*lists, reverse=True)

    # ---------------------------------------------------------- rewrites

    def rematch(self, data: bytes) -> tuple[EventIndex, int, list[int]]:
        """Index ``data``, a whole file rewritten behind our back, keeping known seqs.

        Lines are matched to this index by checksum and length, in order, so a
        line seen before keeps its seq (no duplicate delivery); matching stops
        at the first unknown line, after which every line is new. Returns the
        new index, the position of its first new line, and the seqs that
        disappeared.
        """
        candidates: dict[tuple[int, int], deque[int]] = defaultdict(deque)
        for position in range(len(self)):
            candidates[(self.checksums[position], self.length(position))].append(position)
        seqs: list[int] = []
        next_fresh = self.next_seq()
        matching = True
        cursor = 0
        fresh_from: int | None = None
        start = 0
        while start < len(data):
            newline = data.find(b"\n", start)
            if newline < 0:
                break
            line = data[start:newline]
            found = None
            if matching:
                waiting = candidates.get((zlib.crc32(line), len(line) + 1))
                while waiting and waiting[0] < cursor:
                    waiting.popleft()
                if waiting:
                    found = waiting.popleft()
            if found is not None:
                seqs.append(self.seqs[found])
                cursor = found + 1
            else:
                matching = False
                if fresh_from is None:
                    fresh_from = len(seqs)
                seqs.append(next_fresh)
                next_fresh += 1
            start = newline + 1
        kept = set(seqs)
        removed = [seq for seq in self.seqs if seq not in kept]
        index = EventIndex()
        index.add_lines(data, 0, iter(seqs))
        index.seq_floor = next_fresh
        return index, len(seqs) if fresh_from is None else fresh_from, removed

    # ------------------------------------------------------------ snapshots

    COLUMNS = ("offsets", "seqs", "ts", "max_ts", "types", "actors", "sessions", "checksums")

    def export(
        self, count: int | None = None, end: int | None = None
    ) -> tuple[IndexHeader, list[bytes]]:
        """The first ``count`` lines (all by default), ending at byte ``end``, as a header
        and raw column bytes (for a snapshot file).

        Safe in a worker thread while the event loop appends: every step
        copies under the GIL, and the first ``count`` lines never change.
        """
        count = len(self.offsets) if count is None else count
        end = self.end if end is None else end
        blobs = [getattr(self, name)[:count].tobytes() for name in self.COLUMNS]
        type_names, actor_names = self.type_names[:], self.actor_names[:]
        session_names = self.session_names[:]
        empty: array[int] = array(POSTING)
        type_postings = [_below(self.by_type.get(i, empty), count) for i in range(len(type_names))]
        session_postings = [
            _below(self.by_session.get(i, empty), count) for i in range(len(session_names))
        ]
        blobs.append(b"".join(p.tobytes() for p in type_postings))
        blobs.append(b"".join(p.tobytes() for p in session_postings))
        type_counts = [len(p) for p in type_postings]
        header = IndexHeader(
            seq_floor=self.seq_floor,
            type_counts=type_counts,
            session_counts=[len(p) for p in session_postings],
            count=count,
            end=end,
            malformed=count - sum(type_counts),
            type_names=type_names,
            actor_names=actor_names,
            session_names=session_names,
            itemsizes=[getattr(self, name).itemsize for name in self.COLUMNS],
        )
        return header, blobs

    @classmethod
    def restore(cls, header: IndexHeader, blobs: list[bytes]) -> EventIndex:
        """The inverse of ``export``; raises ValueError if the parts do not fit."""
        index = cls()
        *columns, type_blob, session_blob = blobs
        for name, itemsize, blob in zip(cls.COLUMNS, header.itemsizes, columns, strict=True):
            column = getattr(index, name)
            if column.itemsize != itemsize or len(blob) != itemsize * header.count:
                raise ValueError(f"snapshot column {name} does not fit this build")
            column.frombytes(blob)
        index.end, index.malformed = header.end, header.malformed
        index.seq_floor = header.seq_floor
        index.type_names, index.actor_names = header.type_names, header.actor_names
        index.session_names = header.session_names
        index._type_ids = {name: i for i, name in enumerate(index.type_names)}
        index._actor_ids = {name: i for i, name in enumerate(index.actor_names)}
        index._session_ids = {name: i for i, name in enumerate(index.session_names)}
        index.by_type = _split_postings(type_blob, header.type_counts, header.count)
        index.by_session = _split_postings(session_blob, header.session_counts, header.count)
        index._check(header)
        return index

    def _check(self, header: IndexHeader) -> None:
        """Raise ValueError unless a restored index fits together: a damaged snapshot must
        cost a rebuild, never a wrong answer or a crash later. Only what costs no pass over
        the lines (the snapshot file's checksum covers its bytes)."""
        count = len(self.offsets)
        if len(header.type_counts) != len(self.type_names) or len(header.session_counts) != len(
            self.session_names
        ):
            raise ValueError("snapshot postings do not match its names")
        if header.malformed != count - sum(header.type_counts) or header.malformed < 0:
            raise ValueError("snapshot malformed count does not fit its postings")
        if not count:
            return
        offsets, seqs = self.offsets, self.seqs
        if not (0 <= offsets[0] <= offsets[-1] < self.end) or not (0 <= seqs[0] <= seqs[-1]):
            raise ValueError("snapshot offsets or seqs out of order")
        if self.seq_floor < 0:
            raise ValueError("snapshot seq floor is negative")

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
        fresh.type_names, fresh._type_ids = list(self.type_names), dict(self._type_ids)
        fresh.actor_names, fresh._actor_ids = list(self.actor_names), dict(self._actor_ids)
        fresh.session_names = list(self.session_names)
        fresh._session_ids = dict(self._session_ids)
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
        first = len(self.offsets)
        self.offsets.extend(itertools.accumulate(lengths[:-1], initial=self.end))
        self.end += sum(lengths)
        for name in ("seqs", "ts", "types", "actors", "sessions", "checksums"):
            column = getattr(other, name)
            getattr(self, name).extend([column[p] for p in chunk])
        running = self.max_ts[-1] if self.max_ts else _NO_STAMP
        self.max_ts.extend(itertools.accumulate(self.ts[first:], max, initial=running))
        del self.max_ts[first]  # the initial value is not a line
        types, sessions = self.types, self.sessions
        by_type, by_session = self.by_type, self.by_session
        for position in range(first, len(types)):
            type_id = types[position]
            if type_id == MALFORMED:
                self.malformed += 1
                continue
            by_type[type_id].append(position)
            session_id = sessions[position]
            if session_id != NO_SESSION:
                by_session[session_id].append(position)

    def append_index(self, part: EventIndex) -> None:
        """Append ``part``, the index of the bytes that follow this one's in the same file.

        Its offsets are absolute already; its strings are re-interned and
        its positions shifted. Seqs are taken as they are, and the running
        maximum of ``ts`` carries on from this index.
        """
        first = len(self.offsets)
        if part.offsets and part.offsets[0] != self.end:
            raise ValueError(f"the part starts at byte {part.offsets[0]}, not {self.end}")
        types = _remapped(
            part.types, part.type_names, self._type_ids, self.type_names, self.by_type, MALFORMED
        )
        # A malformed line's actor id is 0 with no name behind it (a part of malformed lines
        # only has no actor names at all): not remapped, 0 again here.
        part_actors = [
            -1 if type_id == MALFORMED else actor_id
            for actor_id, type_id in zip(part.actors, part.types, strict=True)
        ]
        actors = [
            0 if actor_id == -1 else actor_id
            for actor_id in _remapped(
                part_actors, part.actor_names, self._actor_ids, self.actor_names, None, -1
            )
        ]
        sessions = _remapped(
            part.sessions,
            part.session_names,
            self._session_ids,
            self.session_names,
            self.by_session,
            NO_SESSION,
        )
        running = self.max_ts[-1] if self.max_ts else _NO_STAMP
        self.offsets.extend(part.offsets)
        self.seqs.extend(part.seqs)
        self.ts.extend(part.ts)
        self.max_ts.extend([m if m > running else running for m in part.max_ts])
        self.types.extend(types)
        self.actors.extend(actors)
        self.sessions.extend(sessions)
        self.checksums.extend(part.checksums)
        self.malformed += part.malformed
        self.end = part.end
        _post(self.by_type, types, first, MALFORMED)
        _post(self.by_session, sessions, first, NO_SESSION)

    def extend_from(self, other: EventIndex, positions: Iterable[int]) -> None:
        """Append ``other``'s lines at ``positions``, as if they followed this index's end."""
        offset = self.end
        for position in positions:
            length = other.length(position)
            entry = other.entry(position)
            if entry.type is None:
                ids = (MALFORMED, 0, NO_SESSION)
            else:
                ids = self._intern(entry.type, entry.actor, entry.session)
            self._append(offset, length, entry.seq, *ids, entry.ts, other.checksums[position])
            offset += length


def _interned(
    name: str, table: dict[str, int], names: list[str], postings: dict[int, array[int]] | None
) -> int:
    """The id of ``name``, a new one (with an empty posting list) when it has none yet."""
    found = table.get(name)
    if found is None:
        found = table[name] = len(names)
        names.append(name)
        if postings is not None:
            postings[found] = array(POSTING)
    return found


def _remapped(
    ids: Sequence[int],
    names: list[str],
    table: dict[str, int],
    own_names: list[str],
    postings: dict[int, array[int]] | None,
    absent: int,
) -> list[int]:
    """``ids`` into another index's names (``absent`` stays), interning new names."""
    mapping = [_interned(name, table, own_names, postings) for name in names]
    return [mapping[i] if i != absent else absent for i in ids]


def _post(postings: dict[int, array[int]], ids: list[int], first: int, absent: int) -> None:
    """Add positions ``first + i`` to the posting list of ``ids[i]`` (unless ``absent``)."""
    order = sorted(range(len(ids)), key=ids.__getitem__)
    for key, group in itertools.groupby(order, ids.__getitem__):
        if key != absent:
            postings[key].extend([first + i for i in group])


def _below(postings: array[int], count: int) -> array[int]:
    """The positions of a posting list below ``count``."""
    return postings[: bisect.bisect_left(postings, count)]


def _split_postings(blob: bytes, counts: list[int], lines: int) -> dict[int, array[int]]:
    whole = array(POSTING)
    if len(blob) % whole.itemsize:
        raise ValueError("snapshot postings are cut short")
    whole.frombytes(blob)
    if len(whole) != sum(counts) or min(counts, default=0) < 0:
        raise ValueError("snapshot postings do not fit their counts")
    postings: dict[int, array[int]] = {}
    start = 0
    for key, count in enumerate(counts):
        part = postings[key] = whole[start : start + count]
        start += count
        if part and not 0 <= part[0] <= part[-1] < lines:  # each list is sorted
            raise ValueError("snapshot postings point past its lines")
    return postings
