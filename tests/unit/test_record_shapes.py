"""One shape per concept: each wire view keeps its record's fields (``core.views``)."""

from __future__ import annotations

import msgspec
import pytest

from gastown_client.protocol import (
    AttributionRecord,
    CommitView,
    DigestView,
    HandoffView,
    SessionRow,
    SessionStart,
    StepView,
    WispView,
)
from gastownd.core.digest import Commit, Digest, Handoff
from gastownd.core.records import (
    AttributionMessage,
    Message,
    SessionMessage,
    encode_message,
    session_message,
    session_record,
)
from gastownd.core.session_record import AttributionRow, NewAttribution, SessionRecord
from gastownd.core.views import to_view
from gastownd.core.wisp import StartArgs, Step, Wisp, squash, start, step
from gastownd.ops.seance import SESSION_ROW_NAMES
from gastownd.ops.wisps import START_WIRE_NAMES, digest_view, start_args, wisp_view

T0 = 1_780_000_000.0


def fields(struct: type[msgspec.Struct]) -> set[str]:
    return set(struct.__struct_fields__)


@pytest.mark.parametrize(
    ("record", "view", "record_only", "view_only"),
    [
        # payload_bytes: the wisp's own bookkeeping of its payload budget (core.wisp).
        (Wisp, WispView, {"pid", "payload_bytes"}, {"step_count"}),
        (Step, StepView, set(), set()),
        (Digest, DigestView, set(), {"node", "remote"}),
        (Commit, CommitView, set(), set()),
        (Handoff, HandoffView, set(), set()),
    ],
)
def test_view_has_the_fields_of_its_record(
    record: type[msgspec.Struct],
    view: type[msgspec.Struct],
    record_only: set[str],
    view_only: set[str],
) -> None:
    assert fields(record) - fields(view) == record_only
    assert fields(view) - fields(record) == view_only


def test_session_start_request_carries_exactly_start_args() -> None:
    wire = {START_WIRE_NAMES.get(name, name) for name in fields(SessionStart)} - {"id"}
    assert wire == fields(StartArgs)
    request = SessionStart(
        session="s-1",
        actor="gastown/crew/joe",
        cwd="/town",
        topic="t",
        source="compact",
        parent="s-0",
        tmux_session="gt-joe",
        pid=7,
    )
    assert msgspec.structs.asdict(start_args(request)) == {
        "session_id": "s-1",
        "actor": "gastown/crew/joe",
        "source": "compact",
        "cwd": "/town",
        "topic": "t",
        "parent_session": "s-0",
        "tmux_session": "gt-joe",
        "pid": 7,
    }


def _wisp() -> Wisp:
    args = StartArgs(session_id="s-1", actor="gastown/crew/joe", cwd="/town", pid=7)
    wisp = start(None, args, now=T0)
    wisp = step(wisp, "commit", "abc", {"subject": "fix", "at": 5}, now=T0 + 1)
    return step(wisp, "note", now=T0 + 2)


def test_wisp_view_bytes() -> None:
    """The wire bytes of a wisp, defaults and nested steps included (as before views
    were derived)."""
    assert msgspec.json.encode(wisp_view(_wisp())) == (
        b'{"session_id":"s-1","actor":"gastown/crew/joe","role":"crew","rig":"gastown",'
        b'"cwd":"/town","topic":null,"source":"startup","parent_session":null,'
        b'"tmux_session":null,"started_at":"2026-05-28T20:26:40Z",'
        b'"last_activity_at":"2026-05-28T20:26:42Z","ended_at":null,"segment":1,'
        b'"state":"open","end_reason":null,"step_count":2,"steps":['
        b'{"kind":"commit","at":"2026-05-28T20:26:41Z","ref":"abc",'
        b'"payload":{"subject":"fix","at":5}},{"kind":"note","at":"2026-05-28T20:26:42Z"}]}'
    )


def test_digest_view_formats_every_instant_and_keeps_the_rest() -> None:
    wisp = step(_wisp(), "handoff", None, {"subject": "over", "to_session": True}, now=T0 + 3)
    _, digest = squash(wisp, "done", now=T0 + 4)
    view = digest_view(digest, "n1", remote=True)
    data = msgspec.to_builtins(view)
    assert data["started_at"] == "2026-05-28T20:26:40Z"
    assert data["ended_at"] == "2026-05-28T20:26:44Z"
    assert data["handoffs"] == [{"at": "2026-05-28T20:26:43Z", "to": None, "subject": "over"}]
    assert data["duration_s"] == 4.0
    assert (data["node"], data["remote"], data["prev_hash"]) == ("n1", True, "")
    plain = msgspec.json.decode(msgspec.json.encode(digest))
    for name in set(plain) - {"started_at", "ended_at", "handoffs"}:
        assert data[name] == plain[name], name


def test_to_view_renames_and_extras() -> None:
    class Record(msgspec.Struct, kw_only=True):
        first_at: float
        count: int

    class View(msgspec.Struct, kw_only=True):
        started_at: str
        count: int
        note: str

    view = to_view(Record(first_at=T0, count=3), View, renames={"first_at": "started_at"}, note="x")
    assert view == View(started_at="2026-05-28T20:26:40Z", count=3, note="x")


RECORD = SessionRecord(
    session_id="s-1",
    rev=4,
    actor="gastown/crew/joe",
    role="gastown/crew/joe",
    topic="fix",
    actor_pid="gastown/crew/joe-7",
    first_start_at=T0,
    last_start_at=T0 + 60,
    last_activity_at=T0 + 90,
    starts=2,
    segments=2,
    state="squashed",
    ended_at=T0 + 120,
    end_reason="done",
    node="b",
)


def test_session_row_has_the_fields_of_the_record() -> None:
    row = {SESSION_ROW_NAMES.get(name, name) for name in fields(SessionRecord)}
    assert row - fields(SessionRow) == {"rev", "role"}
    assert fields(SessionRow) - row == {"digest_id", "summary", "remote", "step_count"}


def test_session_row_bytes() -> None:
    view = to_view(
        RECORD,
        SessionRow,
        renames=SESSION_ROW_NAMES,
        digest_id="dg-1",
        summary="s",
        remote=True,
        step_count=7,
    )
    assert msgspec.json.encode(view) == (
        b'{"session_id":"s-1","actor":"gastown/crew/joe","started_at":"2026-05-28T20:26:40Z",'
        b'"last_activity":"2026-05-28T20:28:10Z","state":"squashed","topic":"fix","cwd":null,'
        b'"end_reason":"done","digest_id":"dg-1","summary":"s","segments":2,'
        b'"last_started_at":"2026-05-28T20:27:40Z","starts":2,'
        b'"ended_at":"2026-05-28T20:28:40Z","actor_pid":"gastown/crew/joe-7","node":"b",'
        b'"remote":true,"step_count":7}'
    )


def test_session_message_is_the_record_under_a_header() -> None:
    header = fields(Message)
    assert fields(SessionMessage) - header == fields(SessionRecord) - {"node"}
    assert "node" in header
    message = session_message(RECORD, town="t1")
    assert (message.town, message.node, message.id) == ("t1", "b", "")
    assert session_record(message) == RECORD
    # The field order on the stream is the record's (after the header).
    body = list(msgspec.json.decode(encode_message(message)))
    assert body == [
        "kind",
        "town",
        "node",
        "id",
        *[f for f in SessionRecord.__struct_fields__ if f != "node"],
    ]


def test_attribution_message_is_the_attribution_under_a_header() -> None:
    order = AttributionMessage.__struct_fields__
    assert order == (*Message.__struct_fields__, "local_id", *NewAttribution.__struct_fields__)
    new = NewAttribution(
        issue="gt-1", session_id="s-1", segment=2, action="closed", at=T0, actor="joe", rule="hook"
    )
    message = AttributionMessage(
        town="t1", node="b", id="", local_id=5, **msgspec.structs.asdict(new)
    )
    assert msgspec.json.encode(message) == (
        b'{"kind":"attribution","town":"t1","node":"b","id":"","local_id":5,"issue":"gt-1",'
        b'"session_id":"s-1","segment":2,"action":"closed","at":1780000000.0,"actor":"joe",'
        b'"rule":"hook"}'
    )


def test_attribution_record_is_a_view_of_the_stored_row() -> None:
    assert fields(AttributionRow) - fields(AttributionRecord) == {"issue", "segment"}
    assert fields(AttributionRecord) - fields(AttributionRow) == {"remote"}
    row = AttributionRow(
        issue="gt-1",
        session_id="s-1",
        segment=None,
        action="created",
        at=T0,
        actor="joe",
        rule="explicit",
        digest_id="dg-1",
        node="b",
    )
    assert msgspec.json.encode(to_view(row, AttributionRecord, remote=True)) == (
        b'{"session_id":"s-1","action":"created","at":"2026-05-28T20:26:40Z","actor":"joe",'
        b'"digest_id":"dg-1","rule":"explicit","node":"b","remote":true}'
    )
