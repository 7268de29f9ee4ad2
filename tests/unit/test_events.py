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
        # Strict fields: calendar.timegm would roll these over into later dates.
        ("2026-01-45T99:99:99Z", None),
        ("2026-02-30T00:00:00Z", None),
        ("2026-01-01T24:00:00Z", None),
        ("2026-01-01T00:60:00Z", None),
        ("2026-01-01T00:00:60Z", None),
        ("2026- 1-01T00:00:00Z", None),
        ("2026-01-01T0+:00:00Z", None),
        ("2026/01/01T00:00:00Z", None),
        # The UTC moment must be within years 1..9999.
        ("0001-01-01T00:00:00Z", events.MIN_TS_S),
        ("9999-12-31T23:59:59Z", events.MAX_TS_S),
        ("0001-01-01T00:00:00+01:00", None),
        ("9999-12-31T23:59:59-01:00", None),
        ("0001-01-01T01:00:00+01:00", events.MIN_TS_S),
    ],
)
def test_parse_ts(text: str, epoch: int | None) -> None:
    assert events.parse_ts(text) == epoch


def test_format_ts_is_whole_seconds_utc() -> None:
    assert events.format_ts(1769110435.9) == "2026-01-22T19:33:55Z"


@pytest.mark.parametrize(
    ("epoch", "text"),
    [
        (events.MIN_TS_S - 3600, "0001-01-01T00:00:00Z"),
        (events.MAX_TS_S + 3600, "9999-12-31T23:59:59Z"),
        (float("inf"), "9999-12-31T23:59:59Z"),
        (float("nan"), "0001-01-01T00:00:00Z"),
        (-(2**63), "0001-01-01T00:00:00Z"),
    ],
)
def test_format_ts_clamps_a_time_stored_before_the_range_check(epoch: float, text: str) -> None:
    assert events.format_ts(epoch) == text


def test_parse_stamps_is_as_strict_as_parse_ts() -> None:
    texts: list[str | None] = [
        "2026-01-22T19:33:55Z",
        "2026-01-22T19:33:60Z",
        "2026-01-45T99:99:99Z",
    ]
    assert events.parse_stamps(texts) == [1769110435, None, None]


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


# ------------------------------------------------------------------ hostile lines

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.reliability.test_hostile_log import NUMBERS, STRINGS, deep, indexable, line_with  # noqa: E402

_leaves = st.one_of(
    st.sampled_from(NUMBERS + STRINGS + [b"null", b"true", b'"[{"', b'"\\\\"']),
    st.integers(-(2**70), 2**70).map(lambda n: str(n).encode()),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(f).encode()),
)


def _nest(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.lists(children, max_size=3).map(lambda items: b"[" + b",".join(items) + b"]"),
        st.lists(children, max_size=3).map(
            lambda items: b"{" + b",".join(b'"k%d":%s' % (i, v) for i, v in enumerate(items)) + b"}"
        ),
    )


_values = st.recursive(_leaves, _nest, max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(
    value=_values,
    depth=st.sampled_from([0, 1, 250, 253, 254, 255, 256, 300, 5_000]),
    at=st.sampled_from(["payload", "actor", "type", "key"]),
    cut=st.one_of(st.none(), st.integers(0, 400)),
)
def test_parse_line_agrees_with_the_documented_limits(
    value: bytes, depth: int, at: str, cut: int | None
) -> None:
    """One line, or a batch holding it among good ones: indexed exactly when the oracle
    (a plain nesting counter and msgspec's full decode) says every reader can take it."""
    fragment = b"[" * depth + value + b"]" * depth
    line = line_with(fragment, at=at)
    if cut is not None:
        line = line[:cut]
    verdict = indexable(line)
    assert (events.parse_line(line) is not None) == verdict
    good = line_with(b"1")
    batch = events.decode_lines([good, line, good] * 3)
    assert [p is not None for p in batch] == [True, verdict, True] * 3


@pytest.mark.parametrize("depth", [255, 256, 257, 1_000, 100_000])
def test_deep_lines_never_raise(depth: int) -> None:
    line = line_with(deep(depth, b"{"))
    fits = depth + 2 <= 256  # the line and its payload are two levels
    assert (events.parse_line(line) is not None) == fits
    good = line_with(b"1")
    batch = events.decode_lines([good] * (events.BATCH - 1) + [line, good])
    assert [p is not None for p in batch[-3:]] == [True, fits, True]
