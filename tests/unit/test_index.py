"""The in-memory index: positions, seqs, filters and rebuilding."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gastownd.core.events import encode_line, format_ts
from gastownd.core.index import EventIndex, Known
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


@settings(max_examples=100, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(["nudge", "sling", "session_start", "a.b:c-d"]),
            st.text(min_size=1, max_size=12).filter(str.strip),
            st.dictionaries(
                st.sampled_from(["session_id", "bead", "x"]),
                st.one_of(st.text(max_size=8), st.integers(), st.none()),
                max_size=3,
            ),
            st.integers(0, 2_000_000_000),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_a_known_line_is_indexed_as_its_decoding_would_be(
    events: list[tuple[str, str, dict[str, object], int]],
) -> None:
    decoded, known, one_by_one = EventIndex(), EventIndex(), EventIndex()
    lines, fields = [], []
    for type_, actor, payload, ts in events:
        lines.append(
            encode_line(
                ts=format_ts(ts),
                source="gt",
                type=type_,
                actor=actor,
                payload=payload,
                visibility="feed",
            )
        )
        session = payload.get("session_id")
        fields.append(
            Known(type_, actor, session if isinstance(session, str) and session else None, ts)
        )
    # A whole group commit at once, and the same lines one batch each.
    assert known.add_known_lines(lines, 0, 0, fields) == 0
    for position, (line, field) in enumerate(zip(lines, fields, strict=True)):
        assert one_by_one.add_known_lines([line], one_by_one.end, position, [field]) == position
    decoded.add_lines(b"".join(lines), 0, iter(range(len(events))))
    for index in (known, one_by_one):
        assert index.export()[1] == decoded.export()[1]
        assert index.export()[0] == decoded.export()[0]


def test_appending_a_part_of_malformed_lines_only() -> None:
    """A part with no good line has no actor names: its actors are not remapped (a 128 MiB
    line alone in a worker's part crashed the parallel index)."""
    good = make_line("2026-01-01T00:00:00Z", "mail", "mayor")
    first = build([good])
    part = EventIndex(first.end)
    part.add_lines(b"not json\n{}\n", first.end, itertools.count(1))
    first.append_index(part)
    assert (len(first), first.malformed) == (3, 2)
    assert first.entry(0).actor == "mayor"
    assert [first.entry(p).type for p in (1, 2)] == [None, None]
    assert first.search(compile_filter(), 10, oldest_first=True) == [0]


def _lines_strategy() -> st.SearchStrategy[list[bytes]]:
    good = st.builds(
        make_line,
        st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-02T03:04:05Z", "2025-12-31T23:59:59Z"]),
        st.sampled_from(["nudge", "sling", "session_start", "done"]),
        st.sampled_from(["mayor", "deacon", "gastown/crew/joe"]),
        st.one_of(st.none(), st.sampled_from(["s1", "s2", "s3"])),
    )
    return st.lists(st.one_of(good, st.just(b"not json")), max_size=30)


@settings(max_examples=60, deadline=None)
@given(before=_lines_strategy(), after=_lines_strategy())
def test_an_export_is_the_index_as_it_was_when_exported(
    before: list[bytes], after: list[bytes]
) -> None:
    """Column bytes are copied as the snapshot writer reads them, while the loop may
    have appended lines since: they still describe the lines exported, no more."""
    index, alone = build(before), build(before)
    header, blobs = index.export()
    for line in after:
        index.add_lines(line + b"\n", index.end, iter([index.next_seq()]))
    expected_header, expected = alone.export()
    assert header == expected_header
    assert list(blobs) == list(expected) and blobs == expected
    assert blobs.sizes == [len(blob) for blob in expected]
    assert EventIndex.restore(header, iter(blobs)).export() == alone.export()


@settings(max_examples=60, deadline=None)
@given(before=_lines_strategy(), after=_lines_strategy())
def test_a_consumed_part_is_appended_as_a_kept_one(before: list[bytes], after: list[bytes]) -> None:
    whole = build(before + after)
    kept, consumed = build(before), build(before)
    data = b"".join(line + b"\n" for line in after)
    parts = []
    for _ in range(2):
        part = EventIndex(kept.end)
        part.add_lines(data, kept.end, itertools.count(len(before)))
        parts.append(part)
    kept.append_index(parts[0])
    consumed.append_index(parts[1], consume=True)
    assert kept.export() == consumed.export() == whole.export()
    assert all(len(getattr(parts[1], name)) == 0 for name in EventIndex.COLUMNS)
    assert not parts[1].by_type and not parts[1].by_session


def test_renumber_gives_new_seqs_in_place() -> None:
    index = build(LINES)
    column = index.seqs
    index.renumber(itertools.count(1000, 3))
    assert index.seqs is column and list(column) == [1000 + 3 * i for i in range(len(LINES))]
    with pytest.raises(ValueError, match="ran out"):
        index.renumber(iter(range(2)))


def test_restore_refuses_too_few_or_too_many_parts() -> None:
    header, blobs = build(LINES).export()
    whole = list(blobs)
    for parts in (whole[:-1], whole[:3], [*whole, b""]):
        with pytest.raises(ValueError, match="fit this build"):
            EventIndex.restore(header, iter(parts))
