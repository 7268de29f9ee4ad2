"""Federation records: stable ids, round trips, and every way a remote record is refused."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from gastownd.core.digest import seal
from gastownd.core.records import (
    MAX_RECORD_BYTES,
    AnyMessage,
    AttributionMessage,
    DigestMessage,
    EventMessage,
    Rejected,
    SessionMessage,
    decode_message,
    dedupe_id,
    encode_message,
    kind_of,
    local_id_of,
    message_id,
    refuse_future,
    stream_name,
    subject,
    town_subjects,
)
from gastownd.core.wisp import StartArgs, squash, start

LINE = (
    b'{"ts":"2026-11-29T00:00:00Z","source":"gt","type":"mail","actor":"mayor","visibility":"feed"}'
)


def digest() -> Any:
    wisp = start(None, StartArgs(session_id="s-1", actor="gastown/crew/joe"), now=1_780_000_000.0)
    _, made = squash(wisp, "done", now=1_780_000_100.0)
    return made


def messages(node: str = "b", town: str = "t1") -> list[AnyMessage]:
    found: list[AnyMessage] = [
        EventMessage(
            town=town, node=node, id="", epoch=7, seqs=[42, 44], lines=[msgspec.Raw(LINE)] * 2
        ),
        SessionMessage(
            town=town,
            node=node,
            id="",
            session_id="s-1",
            rev=3,
            actor="gastown/crew/joe",
            first_start_at=1.0,
            last_start_at=2.0,
            last_activity_at=3.0,
            starts=2,
            segments=1,
            state="logged",
        ),
        DigestMessage(town=town, node=node, id="", digest=digest()),
        AttributionMessage(
            town=town,
            node=node,
            id="",
            local_id=9,
            issue="gt-1",
            session_id="s-1",
            action="closed",
            at=5.0,
            actor="gastown/crew/joe",
            rule="hook",
        ),
    ]
    for message in found:
        message.id = message_id(node, kind_of(message), local_id_of(message))
    return found


def test_names_of_the_stream_and_subjects() -> None:
    assert stream_name("gastown") == "GASTOWN_gastown"
    assert town_subjects("gastown") == "gastown.gastown.>"
    assert subject("gastown", "laptop", "event") == "gastown.gastown.laptop.event"


def test_ids_are_node_kind_and_local_id() -> None:
    ids = [m.id for m in messages()]
    assert ids == [
        "b.event.7:42-44",
        "b.session.s-1.3",
        f"b.digest.{digest().digest_id}",
        "b.attribution.9",
    ]


@pytest.mark.parametrize("message", messages(), ids=lambda m: kind_of(m))
def test_every_kind_round_trips(message: AnyMessage) -> None:
    data = encode_message(message)
    decoded = decode_message(subject("t1", "b", kind_of(message)), data, town="t1", local_node="a")
    assert encode_message(decoded) == data


def reason(subject_name: str, data: bytes, local_node: str = "a") -> str:
    with pytest.raises(Rejected) as caught:
        decode_message(subject_name, data, town="t1", local_node=local_node)
    return caught.value.reason


def test_refusals() -> None:
    event, session, dig, _ = messages()
    good = encode_message(event)
    assert reason("gastown.t1.b.event", b"\x00garbage") == "malformed"
    assert reason("gastown.t1.b.event", b'{"kind":"event"}') == "malformed"
    assert reason("gastown.t1.b.event", b"x" * (MAX_RECORD_BYTES + 1)) == "too_large"
    assert reason("gastown.t1.b", good) == "bad_subject"
    assert reason("other.t1.b.event", good) == "bad_subject"
    assert reason("gastown.t2.b.event", good) == "other_town"
    assert reason("gastown.t1.c.event", good) == "node_mismatch"
    assert reason("gastown.t1.b.event", good, local_node="b") == "claims_this_node"
    assert reason("gastown.t1.b.session", good) == "kind_mismatch"
    other_town = encode_message(messages(town="t2")[0])
    assert reason("gastown.t1.b.event", other_town) == "other_town"
    wrong_id = msgspec.structs.replace(event, id="b.event.1:1-1")
    assert reason("gastown.t1.b.event", encode_message(wrong_id)) == "bad_id"
    bad_line = msgspec.structs.replace(event, lines=[msgspec.Raw(LINE), msgspec.Raw(b'{"x":1}')])
    assert reason("gastown.t1.b.event", encode_message(bad_line)) == "bad_line"
    for seqs in ([44, 42], [42], [42, 42]):
        uneven = msgspec.structs.replace(event, seqs=seqs)
        uneven.id = message_id("b", "event", local_id_of(uneven))
        assert reason("gastown.t1.b.event", encode_message(uneven)) == "bad_event"
    tampered = msgspec.structs.replace(dig, digest=msgspec.structs.replace(dig.digest, actor="x"))
    assert reason("gastown.t1.b.digest", encode_message(tampered)) == "bad_digest"
    resealed = msgspec.structs.replace(
        dig, digest=seal(msgspec.structs.replace(dig.digest, segment=9))
    )
    # Resealed, so its hash fits, but its id no longer names its session and segment.
    assert reason("gastown.t1.b.digest", encode_message(resealed)) == "bad_digest"
    blank = msgspec.structs.replace(session, actor=" ")
    assert reason("gastown.t1.b.session", encode_message(blank)) == "bad_session"


def poisoned(kind: str, field: str, value: str) -> bytes:
    """A valid record of ``kind`` with one number replaced by ``value`` (JSON text)."""
    message = next(m for m in messages() if kind_of(m) == kind)
    data = msgspec.json.decode(encode_message(message))
    target = data["digest"] if kind == "digest" else data
    if field == "seqs":
        target[field] = [int(value), 44]
        data["id"] = f"b.event.7:{value}-44"
    else:
        target[field] = "@@"
    text = msgspec.json.encode(data).decode().replace('"@@"', value)
    if kind == "session" and field == "rev":
        text = text.replace('"id":"b.session.s-1.3"', f'"id":"b.session.s-1.{value}"')
    return text.encode()


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        ("session", "rev", str(2**63)),
        ("session", "rev", "-1"),
        ("session", "starts", str(2**64)),
        ("session", "last_start_at", "1e999"),
        ("session", "last_activity_at", "-1.5"),
        ("session", "ended_at", "1e300"),
        ("event", "seqs", "-3"),
        ("event", "seqs", str(2**63)),
        ("event", "epoch", str(2**63)),
        ("digest", "segment", str(2**63)),
        ("digest", "ended_at", "1e999"),
        ("digest", "duration_s", "-1.0"),
        ("attribution", "local_id", str(2**63)),
        ("attribution", "at", "1e999"),
    ],
)
def test_numbers_no_store_column_can_hold_are_out_of_range(
    kind: str, field: str, value: str
) -> None:
    assert reason(f"gastown.t1.b.{kind}", poisoned(kind, field, value)) == "out_of_range"


def test_a_nats_msg_id_is_the_record_id_and_a_hash_only_its_node_can_make() -> None:
    header = dedupe_id(b"secret", "b.event.7:42-44")
    assert header == dedupe_id(b"secret", "b.event.7:42-44")  # a republish is dropped
    assert header.startswith("b.event.7:42-44.") and len(header) == len("b.event.7:42-44") + 33
    assert dedupe_id(b"other", "b.event.7:42-44") != header
    assert dedupe_id(b"secret", "b.event.7:45-45") != header


def test_a_record_nested_1000_deep_anywhere_is_malformed() -> None:
    deep = b"[" * 1000 + b"]" * 1000
    data = encode_message(messages()[0])
    in_a_line = data.replace(b'"visibility":"feed"', b'"visibility":"feed","payload":' + deep, 1)
    unread = data.replace(b'"epoch"', b'"x":' + deep + b',"epoch"')
    for record in (in_a_line, unread, deep):
        assert reason("gastown.t1.b.event", record) == "malformed"


def test_nan_is_not_json() -> None:
    assert (
        reason("gastown.t1.b.session", poisoned("session", "last_start_at", "NaN")) == "malformed"
    )
    assert reason("gastown.t1.b.session", poisoned("session", "starts", '"7"')) == "malformed"


def test_the_largest_numbers_a_store_holds_are_accepted() -> None:
    data = poisoned("session", "rev", str(2**63 - 1))
    decoded = decode_message("gastown.t1.b.session", data, town="t1", local_node="a")
    assert isinstance(decoded, SessionMessage) and decoded.rev == 2**63 - 1


def test_lines_and_records_from_the_future_are_refused() -> None:
    event, session, dig, attribution = messages()
    future = (
        b'{"ts":"9999-12-31T23:59:59Z","source":"gt","type":"mail","actor":"x","visibility":"feed"}'
    )
    mixed = msgspec.structs.replace(event, lines=[msgspec.Raw(future), msgspec.Raw(LINE)])
    now = 1_800_000_000.0  # 2027-01-15: LINE (2026-11-29) is before it
    kept, refused = refuse_future(mixed, now)
    assert refused == 1 and isinstance(kept, EventMessage)
    assert (kept.seqs, kept.id) == ([44], event.id)
    assert refuse_future(event, now) == (event, 0)
    assert refuse_future(msgspec.structs.replace(event, lines=[msgspec.Raw(future)] * 2), now) == (
        None,
        2,
    )
    late = msgspec.structs.replace(session, last_activity_at=now + 1)
    assert refuse_future(late, now) == (None, 1)
    assert refuse_future(session, now) == (session, 0)
    assert refuse_future(dig, 1_780_000_099.0) == (dig, 0)  # ended at ..._100: a chain link
    assert refuse_future(attribution, 4.0) == (None, 1)
