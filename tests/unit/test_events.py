"""The Gas Town line, byte for byte, and its parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from gastownd.core import events

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample-town.events.jsonl"


def test_reference_example_is_reproduced_byte_for_byte() -> None:
    expected = (
        b'{"ts":"2026-04-30T13:02:38Z","source":"gt","type":"session_start",'
        b'"actor":"gastown/crew/joe","payload":{"actor_pid":"gastown/crew/joe-48213",'
        b'"cwd":"/home/u/gt/gastown/crew/joe","role":"gastown/crew/joe",'
        b'"session_id":"46621448-3caa-4bbb-8ccc-123456789abc"},"visibility":"feed"}\n'
    )
    line = events.encode_line(
        ts="2026-04-30T13:02:38Z",
        source="gt",
        type="session_start",
        actor="gastown/crew/joe",
        payload={
            "session_id": "46621448-3caa-4bbb-8ccc-123456789abc",
            "role": "gastown/crew/joe",
            "cwd": "/home/u/gt/gastown/crew/joe",
            "actor_pid": "gastown/crew/joe-48213",
        },
        visibility="feed",
    )
    assert line == expected


def test_every_sample_line_is_reencoded_identically() -> None:
    """gt's own lines (Go escapes, emoji, newlines in text) survive our encoder."""
    import msgspec

    for raw in SAMPLE.read_bytes().splitlines():
        decoded = msgspec.json.decode(raw)
        again = events.encode_line(
            ts=decoded["ts"],
            source=decoded["source"],
            type=decoded["type"],
            actor=decoded["actor"],
            payload=decoded.get("payload") or {},
            visibility=decoded["visibility"],
        )
        assert again == raw + b"\n"


def test_empty_payload_is_omitted() -> None:
    line = events.encode_line(
        ts="2026-01-01T00:00:00Z",
        source="gt",
        type="halt",
        actor="mayor",
        payload={},
        visibility="feed",
    )
    assert line == (
        b'{"ts":"2026-01-01T00:00:00Z","source":"gt","type":"halt",'
        b'"actor":"mayor","visibility":"feed"}\n'
    )


def test_go_html_escaping_and_nested_sorting() -> None:
    line = events.encode_line(
        ts="t",
        source="gt",
        type="mail",
        actor="a<b>",
        payload={"z": {"b": 1, "a": "x&y\u2028"}, "a": "<"},
        visibility="feed",
    )
    assert b'"actor":"a\\u003cb\\u003e"' in line
    assert b'"payload":{"a":"\\u003c","z":{"a":"x\\u0026y\\u2028","b":1}}' in line


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("2026-01-22T19:33:55Z", 1769110435),
        ("2026-01-22T19:33:55.999Z", 1769110435),
        ("2026-01-22T20:33:55+01:00", 1769110435),
        ("nonsense", None),
        ("2026-13-01T00:00:00Z", None),
    ],
)
def test_parse_ts(text: str, epoch: int | None) -> None:
    assert events.parse_ts(text) == epoch


def test_format_ts_is_whole_seconds_utc() -> None:
    assert events.format_ts(1769110435.9) == "2026-01-22T19:33:55Z"


def test_parse_line_tolerates_old_lines_and_rejects_garbage() -> None:
    old = events.parse_line(b'{"ts":"2026-01-01T00:00:00Z","type":"x"}')
    assert old is not None and old.actor == ""
    assert events.parse_line(b"not json") is None
    assert events.parse_line(b'{"type":"x"}') is None
    with_session = events.parse_line(
        b'{"ts":"t","type":"x","actor":"a","payload":{"session_id":"abc","other":[1]}}'
    )
    assert with_session is not None and events.session_of(with_session) == "abc"
    numeric = events.parse_line(b'{"ts":"t","type":"x","payload":{"session_id":5}}')
    assert numeric is not None and events.session_of(numeric) is None
