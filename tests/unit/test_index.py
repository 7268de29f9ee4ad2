"""The in-memory index: positions, seqs, filters and rebuilding."""

from __future__ import annotations

import itertools
import json

from gastownd.core.index import EventIndex
from gastownd.core.query import compile_filter


def make_line(ts: str, type_: str, actor: str, session: str | None = None) -> bytes:
    payload = {"session_id": session} if session else {}
    return json.dumps({"ts": ts, "type": type_, "actor": actor, "payload": payload}).encode()


def build(lines: list[bytes], first_seq: int = 0) -> EventIndex:
    index = EventIndex()
    data = b"".join(line + b"\n" for line in lines)
    used = index.add_lines(data + b'{"partial', 0, itertools.count(first_seq))
    assert used == len(data)
    return index


LINES = [
    make_line("2026-01-01T00:00:00Z", "session_start", "gastown/crew/joe", "s1"),
    make_line("2026-01-01T00:01:00Z", "nudge", "deacon"),
    b"malformed line",
    make_line("2026-01-01T00:02:00Z", "session_start", "gastown/polecats/nux", "s2"),
    make_line("2026-01-01T00:03:00Z", "done", "gastown/polecats/nux", "s2"),
    make_line("2026-01-01T00:02:30Z", "nudge", "mayor"),  # stamped out of order
]


def test_offsets_lengths_and_malformed_count() -> None:
    index = build(LINES)
    assert len(index) == 6
    assert index.malformed == 1
    assert index.offsets[1] == len(LINES[0]) + 1
    assert index.end == sum(len(x) + 1 for x in LINES)
    assert index.entry(2).type is None
    assert index.entry(3).session == "s2"


def test_search_newest_first_by_type_actor_session() -> None:
    index = build(LINES)
    assert index.search(compile_filter(), 10) == [5, 4, 3, 1, 0]
    assert index.search(compile_filter(types=["session_start"]), 10) == [3, 0]
    assert index.search(compile_filter(types=["session_start"]), 1) == [3]
    assert index.search(compile_filter(actor="polecats"), 10) == [4, 3]
    assert index.search(compile_filter(session="s2"), 10) == [4, 3]
    assert index.search(compile_filter(session="s2", types=["done"]), 10) == [4]
    assert index.search(compile_filter(types=["nudge", "done"]), 10) == [5, 4, 1]
    assert index.search(compile_filter(types=["nudge", "done"]), 10, oldest_first=True) == [
        1,
        4,
        5,
    ]
    assert index.search(compile_filter(types=["unknown"]), 10) == []
    assert index.search(compile_filter(actor="nobody"), 10) == []


def test_time_bounds_survive_out_of_order_stamps() -> None:
    index = build(LINES)
    since = compile_filter(since="2026-01-01T00:02:00Z")
    assert index.search(since, 10) == [5, 4, 3]
    assert index.search(since, 10, oldest_first=True) == [3, 4, 5]
    until = compile_filter(until="2026-01-01T00:01:00Z")
    assert index.search(until, 10) == [1, 0]


def test_seqs_and_position_after() -> None:
    index = build(LINES, first_seq=100)
    assert list(index.seqs) == list(range(100, 106))
    assert index.position_after(102) == 3
    assert index.position_after(99) == 0
    assert index.next_seq() == 106


def test_select_keeps_seqs_and_relays_offsets() -> None:
    index = build(LINES, first_seq=10)
    kept = index.select([1, 2, 4])
    assert list(kept.seqs) == [11, 12, 14]
    assert kept.offsets[0] == 0
    assert kept.offsets[1] == len(LINES[1]) + 1
    assert kept.malformed == 1
    assert kept.search(compile_filter(), 10) == [2, 0]
    assert kept.entry(2).actor == "gastown/polecats/nux"
