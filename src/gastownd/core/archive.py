"""The archive's catalogue: what each archived member holds, and searches over members.

A prune moves expired lines into day files (``gastownd.eventlog.archive_files`` writes and
reads them): per UTC day of the lines' ``ts``, gzip members of whole Gas Town
lines, each described by one catalogue record, a ``Member``. A member's lines
are in log order and the record keeps their epoch and seqs, so an archived
line keeps the cursor it had in the live log. Searches order lines by
``(epoch, seq)``, the log's own order, so the live log and the archive merge
into one history.

Pure: the shell reads members and hands their lines in through ``read``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime

import msgspec

from gastownd.core.events import MAX_TS_S, MIN_TS_S, decode_lines, parse_ts, session_of
from gastownd.core.query import CompiledFilter

DAY_S = 86_400
# Lines of archives written before seqs were kept get made-up seqs, so that
# they sort by day and by position, before every line that has an epoch.
LEGACY_EPOCH = -1
LEGACY_DAY_SPAN = 10**9


class Member(msgspec.Struct, kw_only=True):
    """One gzip member of a day file and what it holds."""

    day: str
    offset: int  # in the day's .gz file
    length: int  # compressed bytes
    epoch: int
    count: int  # lines (-1: unknown, legacy)
    first_seq: int
    last_seq: int
    min_ts: int
    max_ts: int
    types: list[str] = msgspec.field(default_factory=list)  # empty: unknown
    # The lines' seqs as (first, count) runs, in line order.
    runs: list[tuple[int, int]] = msgspec.field(default_factory=list)
    raw_bytes: int = 0

    @property
    def legacy(self) -> bool:
        return self.epoch == LEGACY_EPOCH

    def seqs(self) -> Iterator[int]:
        for first, count in self.runs:
            yield from range(first, first + count)


Key = tuple[int, int]
Read = Callable[[Member], Sequence[tuple[int, bytes]]]
Skip = Callable[[Key], bool]


def day_name(ts: int) -> str:
    # Clamped like format_ts: an index restored from before ts were range-checked may
    # hold a moment outside years 1..9999; it files under the nearest representable day.
    ts = min(max(ts, MIN_TS_S), MAX_TS_S)
    # isoformat, not strftime: glibc's %Y does not pad years before 1000 to four digits.
    return datetime.fromtimestamp(ts - ts % DAY_S, UTC).date().isoformat()


def day_start(name: str) -> int:
    moment = datetime.strptime(name, "%Y-%m-%d").replace(tzinfo=UTC)
    return int(moment.timestamp())


def legacy_member(day: str, length: int) -> Member:
    """A day file's part written before members were catalogued (no seqs)."""
    start = day_start(day)
    first = (start // DAY_S) * LEGACY_DAY_SPAN
    return Member(
        day=day,
        offset=0,
        length=length,
        epoch=LEGACY_EPOCH,
        count=-1,
        first_seq=first,
        last_seq=first + LEGACY_DAY_SPAN - 1,
        min_ts=start,
        max_ts=start + DAY_S - 1,
    )


def could_match(member: Member, flt: CompiledFilter) -> bool:
    """False when the member's record alone rules out every line."""
    if flt.types and member.types and flt.types.isdisjoint(member.types):
        return False
    if flt.since is not None and member.max_ts < flt.since:
        return False
    return not (flt.until is not None and member.min_ts > flt.until)


def matching(lines: Sequence[tuple[int, bytes]], flt: CompiledFilter) -> list[tuple[int, bytes]]:
    """The lines (seq, bytes) that pass the filter; malformed ones never do."""
    parsed = decode_lines([line for _, line in lines])
    found = []
    for (seq, line), fields in zip(lines, parsed, strict=True):
        if fields is None:
            continue
        ts = parse_ts(fields.ts)
        if ts is not None and flt.matches(fields.type, fields.actor, session_of(fields), ts):
            found.append((seq, line))
    return found


def search(
    members: Iterable[Member],
    read: Read,
    flt: CompiledFilter,
    limit: int,
    *,
    oldest_first: bool,
    skip: Skip,
) -> list[tuple[Key, bytes]]:
    """The ``limit`` newest (or oldest) matching lines by ``(epoch, seq)``, in that order.

    Members are read best bound first, and reading stops once no unread
    member can beat the ``limit`` lines found: memory holds one member and
    the result. ``skip`` drops lines by key (those still in the live log).
    """

    def bound(member: Member) -> Key:
        if oldest_first:
            return (-member.epoch, -member.first_seq)
        return (member.epoch, member.last_seq)

    ordered = sorted((m for m in members if could_match(m, flt)), key=bound, reverse=True)
    # A min-heap of the best lines so far, keyed so that larger is better.
    best: list[tuple[Key, bytes]] = []
    held: set[Key] = set()
    for member in ordered:
        if len(best) >= limit and bound(member) <= best[0][0]:
            break
        for seq, line in matching(read(member), flt):
            key = (member.epoch, seq)
            ranked = (-key[0], -key[1]) if oldest_first else key
            if ranked in held or skip(key):
                continue
            if len(best) < limit:
                heapq.heappush(best, (ranked, line))
                held.add(ranked)
            elif ranked > best[0][0]:
                dropped, _ = heapq.heapreplace(best, (ranked, line))
                held.discard(dropped)
                held.add(ranked)
    best.sort(reverse=True)
    if oldest_first:
        return [((-e, -s), line) for (e, s), line in best]
    return best


def replay(
    members: Iterable[Member],
    read: Read,
    flt: CompiledFilter,
    *,
    epoch: int,
    after_seq: int,
    upto_seq: int,
    chunk: int,
) -> Iterator[list[tuple[int, bytes]]]:
    """Matching lines of ``epoch`` with ``after_seq < seq <= upto_seq``, in seq order, in chunks.

    Members are opened in order of their first seq, only once no line
    already read could come before them, so memory holds the members whose
    seq ranges overlap, never the whole archive.
    """
    relevant = sorted(
        (
            m
            for m in members
            if m.epoch == epoch
            and m.last_seq > after_seq
            and m.first_seq <= upto_seq
            and could_match(m, flt)
        ),
        key=lambda m: m.first_seq,
    )
    pending: list[tuple[int, bytes]] = []
    opened = 0
    last = after_seq
    out: list[tuple[int, bytes]] = []
    while opened < len(relevant) or pending:
        while opened < len(relevant) and (
            not pending or relevant[opened].first_seq < pending[0][0]
        ):
            for seq, line in matching(read(relevant[opened]), flt):
                if after_seq < seq <= upto_seq:
                    heapq.heappush(pending, (seq, line))
            opened += 1
        if not pending:
            continue
        seq, line = heapq.heappop(pending)
        if seq <= last:
            continue  # the same line archived twice
        last = seq
        out.append((seq, line))
        if len(out) >= chunk:
            yield out
            out = []
    if out:
        yield out
