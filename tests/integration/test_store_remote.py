"""Other nodes' records in the store: applied idempotently, queried, pruned."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gastownd.core.records import (
    AttributionMessage,
    DigestMessage,
    EventMessage,
    Rejected,
    SessionMessage,
    decode_message,
)
from gastownd.core.wisp import StartArgs, squash, start
from gastownd.store import Store
from gastownd.store.remote import EventQuery


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "gastownd.db")
    yield opened
    opened.close()


def line(type_: str, ts: str = "2026-11-29T00:00:00Z", actor: str = "mayor") -> msgspec.Raw:
    text = f'{{"ts":"{ts}","source":"gt","type":"{type_}","actor":"{actor}","visibility":"feed"}}'
    return msgspec.Raw(text.encode())


def event(seq: int, type_: str = "mail", node: str = "b", **kw: str) -> EventMessage:
    return EventMessage(
        town="t",
        node=node,
        id=f"{node}.event.1:{seq}-{seq}",
        epoch=1,
        seqs=[seq],
        lines=[line(type_, **kw)],
    )


def test_a_run_of_lines_is_applied_line_by_line(store: Store) -> None:
    run = EventMessage(
        town="t", node="b", id="b.event.1:1-3", epoch=1, seqs=[1, 2, 3], lines=[line("mail")] * 3
    )
    overlapping = EventMessage(
        town="t", node="b", id="b.event.1:2-4", epoch=1, seqs=[2, 3, 4], lines=[line("mail")] * 3
    )
    first = store.remote.apply([run], now=1.0)
    assert first.counts == {"event": 3}
    again = store.remote.apply([overlapping], now=2.0)
    assert again.counts == {"event": 1}
    assert [e.arrival for e in again.events] > [e.arrival for e in first.events][-1:]
    assert store.remote.nodes()[0].events == 4


def session(rev: int, state: str = "logged") -> SessionMessage:
    return SessionMessage(
        town="t",
        node="b",
        id=f"b.session.s-1.{rev}",
        session_id="s-1",
        rev=rev,
        actor="gastown/crew/joe",
        first_start_at=1.0,
        last_start_at=float(rev),
        last_activity_at=float(rev),
        starts=rev,
        segments=1,
        state=state,
    )


def test_a_record_applied_twice_counts_once(store: Store) -> None:
    attribution = AttributionMessage(
        town="t", node="b", id="b.attribution.4", local_id=4, issue="gt-1", session_id="s-1",
        action="closed", at=5.0, actor="joe", rule="hook",
    )  # fmt: skip
    batch = [event(1), event(2), session(1), attribution]
    first = store.remote.apply(batch, now=10.0)
    again = store.remote.apply(batch, now=11.0)
    assert (first.counts, first.duplicates) == ({"event": 2, "session": 1, "attribution": 1}, 0)
    assert (again.counts, again.duplicates) == ({}, 4)
    assert [e.arrival for e in first.events] == [1, 2] and again.events == []
    [node] = store.remote.nodes()
    assert (node.node, node.events, node.sessions, node.attributions) == ("b", 2, 1, 1)
    assert [r.node for r in store.attributions("gt-1")] == ["b"]


def test_a_session_record_keeps_its_highest_rev(store: Store) -> None:
    store.remote.apply([session(2, "squashed")], now=1.0)
    store.remote.apply([session(1, "open")], now=2.0)  # late and older: ignored
    record = store.session_record("s-1")
    assert record is not None and (record.state, record.rev, record.node) == ("squashed", 2, "b")
    store.remote.apply([session(3, "open")], now=3.0)
    assert store.session_record("s-1").state == "open"  # type: ignore[union-attr]


def test_a_late_predecessor_never_becomes_the_chain_head(store: Store) -> None:
    wisp = start(None, StartArgs(session_id="s-9", actor="gastown/crew/joe"), now=1_780_000_000.0)
    _, older = squash(wisp, "done", now=1_780_000_010.0)
    wisp = start(None, StartArgs(session_id="s-10", actor="gastown/crew/joe"), now=1_780_000_020.0)
    _, newer = squash(wisp, "done", now=1_780_000_030.0, prev_hash=older.hash)
    applied = store.remote.apply(
        [DigestMessage(town="t", node="b", id=f"b.digest.{newer.digest_id}", digest=newer)], 1.0
    )
    assert applied.heads == {"gastown/crew/joe": newer.hash}
    applied = store.remote.apply(
        [DigestMessage(town="t", node="c", id=f"c.digest.{older.digest_id}", digest=older)], 2.0
    )
    assert applied.heads == {}  # the head links to it: it is older, whenever it arrives
    assert store.heads() == {"gastown/crew/joe": newer.hash}
    assert [r.node for r in store.chain("gastown/crew/joe")] == ["c", "b"]  # by arrival
    assert store.chain_length("gastown/crew/joe") == 2


def test_the_head_is_the_digest_seen_last_whatever_the_clocks_say(store: Store) -> None:
    actor = "gastown/crew/joe"
    wisp = start(None, StartArgs(session_id="s-1", actor=actor), now=1_780_007_000.0)
    _, first = squash(wisp, "done", now=1_780_007_200.0)  # n1, clock right
    wisp = start(None, StartArgs(session_id="s-2", actor=actor), now=1_780_000_100.0)
    # n3, its clock 2 h behind: it ended "before" the digest it links to.
    _, second = squash(wisp, "done", now=1_780_000_200.0, prev_hash=first.hash)
    for node, made in (("n1", first), ("n3", second)):
        applied = store.remote.apply(
            [DigestMessage(town="t", node=node, id=f"{node}.digest.{made.digest_id}", digest=made)],
            1.0,
        )
        assert applied.heads == {actor: made.hash}
    assert store.heads() == {actor: second.hash}


def test_a_record_the_store_refuses_costs_only_itself(store: Store) -> None:
    # Built here, past decode's checks: what a check missed must not stop the batch.
    poison = session(2**63)
    applied = store.remote.apply([event(1), poison, event(2)], now=1.0)
    assert [index for index, _ in applied.failed] == [1]
    assert "OverflowError" in applied.failed[0][1]
    assert applied.counts == {"event": 2}
    assert store.remote.nodes()[0].events == 2


def test_queries_by_type_time_node_and_arrival(store: Store) -> None:
    store.remote.apply(
        [
            event(1, "mail", ts="2026-11-29T00:00:01Z"),
            event(2, "nudge", ts="2026-11-29T00:00:02Z"),
            event(3, "mail", ts="2026-11-29T00:00:03Z", actor="gastown/witness"),
            event(1, "mail", node="c", ts="2026-11-29T00:00:04Z"),
        ],
        now=1.0,
    )
    remote = store.remote
    newest = remote.query_events(EventQuery(types=["mail"]), 2, oldest_first=False)
    assert [(e.node, e.ts % 10) for e in newest] == [("c", 4), ("b", 3)]
    both = remote.query_events(EventQuery(types=["mail", "nudge"]), 10, oldest_first=True)
    assert [e.ts % 10 for e in both] == [1, 2, 3, 4]
    assert [
        e.arrival for e in remote.query_events(EventQuery(node="c"), 10, oldest_first=True)
    ] == [4]
    assert len(remote.query_events(EventQuery(actor="witness"), 10, oldest_first=True)) == 1
    window = remote.events_between(EventQuery(types=["mail"]), 1, 4, 10)
    assert [e.arrival for e in window] == [3, 4]


def test_prune_removes_by_type_and_arrivals_are_never_reused(store: Store) -> None:
    store.remote.apply([event(n, ts="2026-01-01T00:00:00Z") for n in range(1, 8)], now=1.0)
    removed = store.remote.prune_events([("mail", 1_790_000_000.0)], batch=3)
    assert removed == 3
    while store.remote.prune_events([("mail", 1_790_000_000.0)], batch=3):
        pass
    assert store.remote.query_events(EventQuery(), 10, oldest_first=True) == []
    assert store.remote.pruned_through() == 7
    assert store.remote.last_arrival() == 7
    [fresh] = store.remote.apply([event(8)], now=2.0).events
    assert fresh.arrival == 8


_numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["1e999", "-1e999", "NaN", "Infinity", "9223372036854775807", "0", "-0.0"]),
)


@settings(max_examples=150, deadline=None)
@given(
    rev=_numbers, starts=_numbers, last_activity=_numbers, ended=_numbers, at=_numbers, seq=_numbers
)
def test_any_number_is_refused_at_decode_or_stored(
    rev: str, starts: str, last_activity: str, ended: str, at: str, seq: str
) -> None:
    """Whatever numbers a sender writes, a record either fails decode (Rejected) or the
    store takes it: never an error in between."""
    session_text = (
        '{"kind":"session","town":"t","node":"b","id":"b.session.s-1.@rev@","session_id":"s-1",'
        '"rev":@rev@,"actor":"joe","first_start_at":1.0,"last_start_at":2.0,'
        '"last_activity_at":@la@,"starts":@starts@,"segments":1,"state":"logged","ended_at":@end@}'
    )
    attribution_text = (
        '{"kind":"attribution","town":"t","node":"b","id":"b.attribution.@seq@","local_id":@seq@,'
        '"issue":"gt-1","session_id":"s-1","action":"closed","at":@at@,"actor":"joe","rule":"hook"}'
    )
    records = [
        (
            "gastown.t.b.session",
            session_text.replace("@rev@", rev)
            .replace("@la@", last_activity)
            .replace("@starts@", starts)
            .replace("@end@", ended),
        ),
        ("gastown.t.b.attribution", attribution_text.replace("@seq@", seq).replace("@at@", at)),
    ]
    with tempfile.TemporaryDirectory() as folder:
        opened = Store(Path(folder) / "gastownd.db")
        try:
            for subject_name, text in records:
                try:
                    message = decode_message(subject_name, text.encode(), town="t", local_node="a")
                except Rejected:
                    continue
                assert opened.remote.apply([message], now=1.0).failed == []
        finally:
            opened.close()


def test_a_line_goes_when_both_its_time_and_its_arrival_are_past_the_cutoff(store: Store) -> None:
    """A peer whose clock is years behind dates its lines years ago: received just now, they
    stay for their TTL from their arrival."""
    cutoff = 1_790_000_000.0
    store.remote.apply([event(1, ts="2024-01-01T00:00:00Z")], now=cutoff + 60)  # just came
    store.remote.apply([event(2, ts="2024-01-01T00:00:00Z")], now=cutoff - 60)  # long here
    store.remote.apply([event(3, ts="2026-12-01T00:00:00Z")], now=cutoff - 60)  # recent ts
    assert store.remote.prune_events([("mail", cutoff)]) == 1
    left = store.remote.query_events(EventQuery(), 10, oldest_first=True)
    assert [e.arrival for e in left] == [1, 3]


SCHEMA_V2 = Path(__file__).resolve().parents[1] / "data" / "schema-v2" / "gastownd.db"


def test_a_schema_2_store_opens_and_its_remote_lines_expire_by_their_time(tmp_path: Path) -> None:
    """Made by the release before: three lines of node "peer" (two from January, one from
    December 2026). Their arrival was not kept: they go by their time, as they did."""
    copy = tmp_path / "gastownd.db"
    shutil.copy(SCHEMA_V2, copy)
    opened = Store(copy)
    try:
        lines = opened.remote.query_events(EventQuery(), 10, oldest_first=True)
        assert [(e.node, e.type) for e in lines] == [
            ("peer", "mail"),
            ("peer", "nudge"),
            ("peer", "mail"),
        ]
        cutoff = 1_790_000_000.0  # 2026-09-21: after January, before December
        assert opened.remote.prune_events([("mail", cutoff), ("nudge", cutoff)]) == 2
        [left] = opened.remote.query_events(EventQuery(), 10, oldest_first=True)
        assert left.arrival == 3
        [fresh] = opened.remote.apply([event(9, ts="2024-01-01T00:00:00Z")], now=cutoff).events
        assert opened.remote.prune_events([("mail", cutoff)]) == 0  # received at the cutoff
        assert fresh.arrival == 4
    finally:
        opened.close()
