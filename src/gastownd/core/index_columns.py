"""The per-line columns of the index: one compact array entry per line.

Entry ``i`` of every column describes line ``i`` of the file (malformed ones
included, type ``MALFORMED``): where it starts, its seq, its stamp, the
running maximum of stamps, its interned type, actor and session ids, and
the checksum rewrites match it by. Pure: arrays in, arrays out.
"""

from __future__ import annotations

import bisect
import itertools
import zlib
from array import array
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator, Sequence

MALFORMED = -1
NO_SESSION = -1
# The running maximum of ``ts`` before any well-formed line.
NO_STAMP = -(1 << 62)
# Array typecodes: crc32 fits in 32 bits, positions in 31.
CHECKSUM = "I"
POSTING = "i"
# Lines given new seqs (``renumber``) or remapped ids (``append_columns``) at a time.
RENUMBER_SLICE = APPEND_SLICE = 1 << 16


# What another index's type, actor and session ids are in this one.
IdMaps = tuple[list[int], list[int], list[int]]


class LineColumns:
    """The columns, the byte where the last line ends, and the seq bookkeeping."""

    COLUMNS = ("offsets", "seqs", "ts", "max_ts", "types", "actors", "sessions", "checksums")
    # The columns a line's identity and fields live in (``offsets`` and ``max_ts``
    # follow from the lines around it).
    CARRIED = ("seqs", "ts", "types", "actors", "sessions", "checksums")

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

    def __len__(self) -> int:
        return len(self.offsets)

    def next_seq(self) -> int:
        """The seq the next appended line gets: never one a removed line had."""
        return max(self.seqs[-1] + 1, self.seq_floor) if self.seqs else self.seq_floor

    def renumber(self, seqs: Iterator[int]) -> None:
        """Give the lines the seqs ``seqs`` yields, in order, in place (a slice at a
        time: no second column beside this one)."""
        column, position = self.seqs, 0
        while position < len(column):
            fresh = array("q", itertools.islice(seqs, min(RENUMBER_SLICE, len(column) - position)))
            if not fresh:
                raise ValueError(f"seqs ran out at line {position}")
            column[position : position + len(fresh)] = fresh
            position += len(fresh)

    def length(self, position: int) -> int:
        following = position + 1
        end = self.offsets[following] if following < len(self.offsets) else self.end
        return end - self.offsets[position]

    def position_after(self, seq: int) -> int:
        """The position of the first line whose seq is greater than ``seq``."""
        return bisect.bisect_right(self.seqs, seq)

    def walk_lines(self, oldest_first: bool, after_position: int, since: int | None) -> range:
        """The positions a filter on every line walks, from ``after_position`` on (oldest
        first: from the first line whose running maximum of ``ts`` reaches ``since``)."""
        start = after_position
        if oldest_first and since is not None:
            start = max(start, bisect.bisect_left(self.max_ts, since))
        if oldest_first:
            return range(start, len(self.offsets))
        return range(len(self.offsets) - 1, start - 1, -1)

    def seqs_for_rewrite(self, data: bytes) -> tuple[list[int], int | None, int]:
        """The seqs of the lines of ``data``, a whole file rewritten behind our back.

        Lines are matched to these by checksum and length, in order, so a line
        seen before keeps its seq (no duplicate delivery); matching stops at the
        first unknown line, after which every line takes a new seq. Returns the
        seqs, the position of the first new line (None: none) and the next seq.
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
        return seqs, fresh_from, next_fresh

    def running_max_ts(self) -> int:
        """The running maximum of ``ts`` the next line carries on from."""
        return self.max_ts[-1] if self.max_ts else NO_STAMP

    def extend_max_ts(self, stamps: Iterable[int]) -> None:
        """Carry the running maximum on over ``stamps`` (``NO_STAMP`` for a malformed line)."""
        maxima = itertools.accumulate(stamps, max, initial=self.running_max_ts())
        next(maxima)  # the initial value is not a line
        self.max_ts.extend(maxima)

    def append_line(
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
        """One line's entry in every column (its postings are the caller's)."""
        if self.seqs and seq <= self.seqs[-1]:
            raise ValueError(f"seq {seq} does not follow {self.seqs[-1]}")
        self.offsets.append(offset)
        self.seqs.append(seq)
        self.ts.append(ts)
        # A malformed line carries the running maximum on, as in ``add_lines``.
        stamp = ts if type_id != MALFORMED else NO_STAMP
        self.max_ts.append(max(stamp, self.max_ts[-1]) if self.max_ts else stamp)
        self.types.append(type_id)
        self.actors.append(actor_id)
        self.sessions.append(session_id)
        self.checksums.append(checksum)
        self.end = offset + length
        if type_id == MALFORMED:
            self.malformed += 1

    def append_columns(
        self, part: LineColumns, id_maps: IdMaps | None, *, consume: bool = False
    ) -> int:
        """Append ``part``'s lines (which follow these in the file), column by column,
        their ids mapped through ``id_maps`` (types, actors, sessions; None: the same
        ids). With ``consume``, each of ``part``'s columns is emptied once copied, so
        that the two together never hold much more than the whole. Returns the
        position of the first appended line."""
        first, count = len(self), len(part)
        running = self.running_max_ts()
        for name in ("offsets", "seqs", "ts", "checksums"):
            getattr(self, name).extend(getattr(part, name))
            _drop(part, name, consume)
        for start in range(0, count, APPEND_SLICE):
            stop = start + APPEND_SLICE
            self.max_ts.extend([m if m > running else running for m in part.max_ts[start:stop]])
        _drop(part, "max_ts", consume)
        if id_maps is None:
            for name in ("actors", "types", "sessions"):
                getattr(self, name).extend(getattr(part, name))
                _drop(part, name, consume)
        else:
            type_map, actor_map, session_map = id_maps
            for start in range(0, count, APPEND_SLICE):
                stop = start + APPEND_SLICE
                # A malformed line's actor id is 0 with no name behind it (a part of
                # malformed lines only has no actor names at all): 0 again here.
                self.actors.extend(
                    [
                        actor_map[a] if t != MALFORMED else 0
                        for a, t in zip(
                            part.actors[start:stop], part.types[start:stop], strict=True
                        )
                    ]
                )
            _drop(part, "actors", consume)
            for name, ids, absent in (
                ("types", type_map, MALFORMED),
                ("sessions", session_map, NO_SESSION),
            ):
                column = getattr(part, name)
                for start in range(0, count, APPEND_SLICE):
                    stop = start + APPEND_SLICE
                    getattr(self, name).extend(
                        [ids[i] if i != absent else absent for i in column[start:stop]]
                    )
                del column
                _drop(part, name, consume)
        self.malformed += part.malformed
        self.end = part.end
        return first

    def extend_carried(self, other: LineColumns, chunk: Sequence[int], lengths: list[int]) -> int:
        """Append ``other``'s lines at ``chunk`` (same string ids), laid out contiguously
        from ``end`` with ``lengths``; returns the position of the first."""
        first = len(self.offsets)
        self.offsets.extend(itertools.accumulate(lengths[:-1], initial=self.end))
        self.end += sum(lengths)
        for name in self.CARRIED:
            column = getattr(other, name)
            getattr(self, name).extend([column[p] for p in chunk])
        running = self.running_max_ts()
        self.max_ts.extend(itertools.accumulate(self.ts[first:], max, initial=running))
        del self.max_ts[first]  # the initial value is not a line
        return first


def _drop(columns: LineColumns, name: str, consume: bool) -> None:
    if consume:
        setattr(columns, name, array(getattr(columns, name).typecode))
