"""The archive's catalogue searches: ordered like the log, bounded, filtered."""

from __future__ import annotations

import json
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from gastownd.core.archive import Member, could_match, day_name, day_start, legacy_member
from gastownd.core.archive import replay as archive_replay
from gastownd.core.archive import search as archive_search
from gastownd.core.query import CompiledFilter, compile_filter

DAY = "2026-01-24"
BASE_TS = day_start(DAY)


def line(seq: int, type_: str = "nudge", actor: str = "mayor", ts: int = BASE_TS) -> bytes:
    event = {
        "ts": day_name(ts) + "T" + f"{ts % 86400 // 3600:02d}:00:00Z",
        "source": "gt",
        "type": type_,
        "actor": actor,
        "payload": {"seq": seq},
    }
    return json.dumps(event, separators=(",", ":")).encode()


def member(epoch: int, seqs: Sequence[int], type_: str = "nudge") -> Member:
    runs: list[tuple[int, int]] = []
    for seq in seqs:
        if runs and sum(runs[-1]) == seq:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((seq, 1))
    return Member(
        day=DAY,
        offset=0,
        length=0,
        epoch=epoch,
        count=len(seqs),
        first_seq=seqs[0],
        last_seq=seqs[-1],
        min_ts=BASE_TS,
        max_ts=BASE_TS + 3600,
        types=[type_],
        runs=runs,
    )


class Shelf:
    """Members and their lines; counts reads."""

    def __init__(self) -> None:
        self.lines: dict[int, list[tuple[int, bytes]]] = {}
        self.members: list[Member] = []
        self.reads = 0

    def add(self, epoch: int, seqs: Sequence[int], type_: str = "nudge") -> Member:
        found = member(epoch, seqs, type_)
        self.members.append(found)
        self.lines[id(found)] = [(s, line(s, type_)) for s in seqs]
        return found

    def read(self, found: Member) -> list[tuple[int, bytes]]:
        self.reads += 1
        return self.lines[id(found)]


NO_FILTER = CompiledFilter()


def never(key: tuple[int, int]) -> bool:
    return False


seq_sets = st.lists(
    st.lists(st.integers(0, 300), min_size=1, max_size=30, unique=True).map(sorted),
    min_size=1,
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(
    groups=seq_sets,
    epochs=st.lists(st.integers(1, 3), min_size=8, max_size=8),
    limit=st.integers(1, 50),
)
def test_search_returns_the_best_keys_in_order_like_a_full_sort(
    groups: list[list[int]], epochs: list[int], limit: int
) -> None:
    shelf = Shelf()
    keys = set()
    for group, epoch in zip(groups, epochs, strict=False):
        shelf.add(epoch, group)
        keys.update((epoch, s) for s in group)
    for oldest_first in (False, True):
        found = archive_search(
            shelf.members, shelf.read, NO_FILTER, limit, oldest_first=oldest_first, skip=never
        )
        expected = sorted(keys, reverse=not oldest_first)[:limit]
        assert [key for key, _ in found] == expected


def test_search_stops_reading_once_no_member_can_do_better() -> None:
    shelf = Shelf()
    for start in range(0, 1000, 100):
        shelf.add(1, range(start, start + 100))
    found = archive_search(shelf.members, shelf.read, NO_FILTER, 20, oldest_first=False, skip=never)
    assert [key[1] for key, _ in found] == list(range(999, 979, -1))
    assert shelf.reads == 1


def test_search_skips_members_by_type_and_lines_by_key_and_filter() -> None:
    shelf = Shelf()
    shelf.add(1, [1, 2, 3], "nudge")
    shelf.add(1, [4, 5], "mail")
    flt = compile_filter(types=["mail"])
    found = archive_search(shelf.members, shelf.read, flt, 10, oldest_first=True, skip=never)
    assert [key for key, _ in found] == [(1, 4), (1, 5)]
    assert shelf.reads == 1
    found = archive_search(
        shelf.members, shelf.read, flt, 10, oldest_first=True, skip=lambda key: key[1] == 4
    )
    assert [key for key, _ in found] == [(1, 5)]


def test_legacy_lines_sort_before_every_line_with_an_epoch() -> None:
    legacy = legacy_member(DAY, 10)
    shelf = Shelf()
    shelf.add(5, [1])
    shelf.members.append(legacy)
    shelf.lines[id(legacy)] = [(legacy.first_seq, line(0)), (legacy.first_seq + 1, line(1))]
    found = archive_search(shelf.members, shelf.read, NO_FILTER, 10, oldest_first=True, skip=never)
    assert [key[0] for key, _ in found] == [-1, -1, 5]


def test_could_match_uses_the_record_alone() -> None:
    found = member(1, [1])
    assert could_match(found, NO_FILTER)
    assert not could_match(found, compile_filter(types=["mail"]))
    assert not could_match(found, CompiledFilter(since=BASE_TS + 7200))
    assert not could_match(found, CompiledFilter(until=BASE_TS - 1))
    assert could_match(legacy_member(DAY, 1), compile_filter(types=["mail"]))


@settings(max_examples=200, deadline=None)
@given(
    groups=seq_sets, after=st.integers(-1, 300), upto=st.integers(0, 300), chunk=st.integers(1, 7)
)
def test_replay_gives_every_seq_in_range_once_in_order(
    groups: list[list[int]], after: int, upto: int, chunk: int
) -> None:
    shelf = Shelf()
    for group in groups:
        shelf.add(2, group)
    shelf.add(1, [5, 6, 7])  # another epoch: never replayed
    chunks = list(
        archive_replay(
            shelf.members,
            shelf.read,
            NO_FILTER,
            epoch=2,
            after_seq=after,
            upto_seq=upto,
            chunk=chunk,
        )
    )
    assert all(0 < len(c) <= chunk for c in chunks)
    seqs = [seq for c in chunks for seq, _ in c]
    assert seqs == sorted({s for g in groups for s in g if after < s <= upto})


def test_day_name_clamps_a_moment_stored_before_the_range_check() -> None:
    # An index restored from an older version may hold the UTC moment of
    # 0001-01-01T00:00:00+01:00 (in year 0): it files under the first day, never raises.
    assert day_name(-62_135_596_800 - 3600) == "0001-01-01"
    assert day_name(253_402_300_799 + 86_400) == "9999-12-31"
    assert day_name(-62_135_596_800 + 400 * 86_400) == "0002-02-05"
    assert day_start("0001-01-01") == -62_135_596_800
