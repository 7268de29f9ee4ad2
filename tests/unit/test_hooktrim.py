"""Trimming an oversized hook payload: cuts stay valid JSON and spare what matters."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gastown_client import hooktrim

# Characters that stress the cut points: escapes, multi-byte UTF-8, surrogate pairs.
TRICKY = st.sampled_from(["a", "é", "€", "😀", '"', "\\", "\n", "\t", "\u2028", "\x01", "/"])
# Long strings from a short random pattern, repeated, with a random tail.
LONG_TEXT = st.builds(
    lambda pattern, times, tail: pattern * times + tail,
    st.lists(TRICKY, min_size=1, max_size=40).map("".join),
    st.integers(600, 1500),
    st.lists(TRICKY, max_size=40).map("".join),
)


def bash_payload(stdout: str, stderr: str = "", command: str = "bd close gt-1") -> dict[str, Any]:
    return {
        "session_id": "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f",
        "hook_event_name": "PostToolUse",
        "tool_name": "Bash",
        "tool_input": {"command": command, "description": "run"},
        "tool_response": {"stdout": stdout, "stderr": stderr, "interrupted": False},
        "cwd": "/tmp",
    }


def encode(data: Any, ascii_only: bool) -> bytes:
    return json.dumps(data, ensure_ascii=ascii_only).encode()


@settings(max_examples=200, deadline=None)
@given(stdout=LONG_TEXT, stderr=LONG_TEXT, ascii_only=st.booleans(), keep=st.integers(0, 3000))
def test_a_trimmed_payload_stays_valid_json_and_fits(
    stdout: str, stderr: str, ascii_only: bool, keep: int
) -> None:
    raw = encode(bash_payload(stdout, stderr), ascii_only)
    # What cutting both strings to the least they keep would save (a few bytes of
    # slack per cut: a cut point moves off an escape or a character).
    room = sum(
        max(0, len(encode(text, ascii_only)) - 2 - hooktrim.MIN_KEEP - hooktrim.MARK_MAX - 16)
        for text in (stdout, stderr)
    )
    assert room > 0
    budget = len(raw) - 1 - keep % room
    trimmed, cut = hooktrim.trim(raw, budget)
    assert len(trimmed) <= budget
    assert cut > 0
    decoded = msgspec.json.decode(trimmed)
    assert decoded["tool_input"] == {"command": "bd close gt-1", "description": "run"}
    assert decoded["tool_response"]["interrupted"] is False
    for name, original in (("stdout", stdout), ("stderr", stderr)):
        value = decoded["tool_response"][name]
        if "bytes cut by gastown-hook" in value:
            head, _, tail = value.partition("[... ")
            tail = tail.split(" bytes cut by gastown-hook ...]", 1)[1]
            assert original.startswith(head) and original.endswith(tail)


def test_a_payload_that_fits_is_untouched() -> None:
    raw = encode(bash_payload("short"), True)
    assert hooktrim.trim(raw, len(raw)) == (raw, 0)


def test_tool_response_is_cut_before_anything_else() -> None:
    long_input = "x" * 40_000
    raw = encode(
        {**bash_payload("y" * 200_000), "tool_input": {"command": "bd close a", "x": long_input}},
        True,
    )
    trimmed, cut = hooktrim.trim(raw, 100_000)
    decoded = json.loads(trimmed)
    assert decoded["tool_input"]["x"] == long_input
    assert len(decoded["tool_response"]["stdout"]) < 60_000
    assert cut >= len(raw) - 100_000


def test_the_rest_is_cut_when_the_response_is_not_enough() -> None:
    raw = encode({**bash_payload("y" * 10_000), "tool_input": {"command": "z" * 300_000}}, True)
    trimmed, _ = hooktrim.trim(raw, 50_000)
    assert len(trimmed) <= 50_000
    json.loads(trimmed)


def test_a_response_that_is_a_plain_string_is_cut() -> None:
    raw = encode({"hook_event_name": "PostToolUse", "tool_response": "q" * 100_000}, True)
    trimmed, cut = hooktrim.trim(raw, 20_000)
    assert len(trimmed) <= 20_000 and cut > 0
    text = json.loads(trimmed)["tool_response"]
    assert text.startswith("q" * 100) and text.endswith("q" * 100)


def test_keys_named_like_the_response_inside_strings_are_not_mistaken() -> None:
    decoy = 'say "tool_response": and {braces} [brackets]'
    raw = encode({"a": decoy * 3000, "tool_response": {"stdout": "v" * 200_000}}, True)
    trimmed, _ = hooktrim.trim(raw, 150_000)
    decoded = json.loads(trimmed)
    assert decoded["a"] == decoy * 3000  # not part of tool_response: kept while that is enough


def test_what_cannot_be_cut_is_returned_as_it_is() -> None:
    raw = encode({"tool_response": ["ab"] * 50_000}, True)
    assert hooktrim.trim(raw, 10_000) == (raw, 0)


@pytest.mark.parametrize(
    ("text", "inside"),
    [
        (r"ab\u00e9cd", range(4, 9)),  # the escape spans 3..9
        (r"ab\\cd", []),  # an escaped backslash then plain c
        (r"ab\"cd", [4]),
    ],
)
def test_cut_points_never_split_an_escape(text: str, inside: range | list[int]) -> None:
    data = f'"{text}"'.encode()
    for i in range(1, len(data) - 1):
        before = hooktrim.boundary_before(data, 1, i)
        after = hooktrim.boundary_after(data, 1, len(data) - 1, i)
        assert before <= i <= after
        if i in inside:
            assert before < i < after
        json.loads(data[:before] + b'"')
        json.loads(b'"' + data[after:])


def test_a_surrogate_pair_is_kept_whole_or_dropped_whole() -> None:
    data = b'"x\\ud83d\\ude00y"'
    for i in range(1, len(data) - 1):
        head = data[: hooktrim.boundary_before(data, 1, i)] + b'"'
        tail = b'"' + data[hooktrim.boundary_after(data, 1, len(data) - 1, i) :]
        msgspec.json.decode(head)
        msgspec.json.decode(tail)


@pytest.mark.parametrize(
    "raw", [b'{"a": "x' * 200_000, b'{"a": "' + b"x" * 100_000, b"[1, 2] tail" * 10_000]
)
def test_what_is_not_json_is_left_alone(raw: bytes) -> None:
    assert hooktrim.trim(raw, 1000) == (raw, 0)


# ---------------------------------------------------------------- cutting whole values


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def test_a_deep_response_is_cut_whole_and_the_rest_kept() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    head = json.dumps(bash_payload("")).encode()[:-1]
    raw = head.replace(b'"tool_response"', b'"tool_response_was"') + b',"tool_response":'
    raw += deep + b',"tool_use_id":"t1"}'
    fitted, cut, why = hooktrim.fit(raw, 1 << 20)
    decoded = msgspec.json.decode(fitted)
    assert why == b"too deep" and cut > 0
    assert decoded["tool_input"] == bash_payload("")["tool_input"]
    assert decoded["tool_use_id"] == "t1"
    assert decoded["tool_response"] == (hooktrim.MARK % len(deep)).decode()


def test_an_array_of_short_strings_is_cut_whole_to_fit() -> None:
    raw = json.dumps(dict(bash_payload(""), tool_response=["ab"] * 600_000)).encode()
    fitted, cut, why = hooktrim.fit(raw, 1 << 20)
    decoded = msgspec.json.decode(fitted)
    assert why == b"too big" and len(fitted) <= 1 << 20 and cut > 3_000_000
    assert decoded["tool_input"] == bash_payload("")["tool_input"]
    assert decoded["tool_response"].startswith("[... ")


def test_a_payload_cut_short_keeps_its_whole_members() -> None:
    raw = json.dumps(bash_payload("x" * 1000))
    fitted, _, why = hooktrim.fit(raw.encode()[: raw.index("x" * 10) + 5], 1 << 20, complete=False)
    decoded = msgspec.json.decode(fitted)
    assert why == b"cut short"
    assert decoded["tool_input"] == bash_payload("")["tool_input"]
    assert decoded["tool_response"].startswith("[... ")


def test_tool_input_goes_last_and_is_said_to() -> None:
    many = {"command": "bd close gt-1", "args": ["y"] * 2000}
    raw = json.dumps(dict(bash_payload("x" * 5000), tool_input=many)).encode()
    fitted, _, why = hooktrim.fit(raw, 2000)
    decoded = msgspec.json.decode(fitted)
    assert why == b"too big, tool_input cut" and len(fitted) <= 2000
    assert decoded["session_id"] == bash_payload("")["session_id"]


@pytest.mark.parametrize("raw", [b"", b"[1, 2]", b"null", b'"text"', b"\xff\xfe"])
def test_what_is_not_an_object_is_not_sent(raw: bytes) -> None:
    assert hooktrim.fit(raw + b"[" * 200, 1 << 20) == (b"", len(raw) + 200, b"not a JSON object")


def test_a_payload_that_fits_is_returned_as_it_is() -> None:
    raw = json.dumps(bash_payload("ok")).encode()
    assert hooktrim.fit(raw, len(raw)) == (raw, 0, None)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(TRICKY, max_size=30),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(TRICKY, max_size=5), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(
    members=st.dictionaries(st.text(TRICKY, max_size=8), JSON_VALUES, max_size=6),
    nesting=st.integers(0, 300),
    budget=st.integers(200, 4000),
    cut_at=st.none() | st.integers(1, 10_000),
)
def test_whatever_fit_sends_is_valid_json_within_the_limits(
    members: dict[str, Any], nesting: int, budget: int, cut_at: int | None
) -> None:
    members["tool_input"] = {"command": "bd close gt-1"}
    members["deep"] = json.loads("[" * nesting + "]" * nesting) if nesting else []
    raw = json.dumps(members, ensure_ascii=False).encode()
    if cut_at is not None:
        raw = raw[:cut_at]
    fitted, _, why = hooktrim.fit(raw, budget, complete=cut_at is None)
    if not fitted:
        assert why is not None
        return
    decoded = msgspec.json.decode(fitted)
    assert isinstance(decoded, dict) and len(fitted) <= max(budget, len(raw))
    assert _depth(decoded) <= hooktrim.MAX_DEPTH
    if why is not None or fitted != raw:
        assert len(fitted) <= budget
    if "tool_input" in decoded and not (why and b"tool_input" in why):
        assert decoded["tool_input"] == {"command": "bd close gt-1"}


def _reference_structure(data: bytes) -> tuple[list[int], list[int]]:
    """The brackets outside strings and the depth after each, the slow obvious way."""
    positions: list[int] = []
    depths: list[int] = []
    depth, inside, escaped = 0, False, False
    for at, byte in enumerate(data):
        if inside:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                inside = False
        elif byte == 0x22:
            inside = True
        elif byte in b"[{]}":
            depth += 1 if byte in b"[{" else -1
            positions.append(at)
            depths.append(depth)
    return positions, depths


BRACKETY = st.text(st.sampled_from(["[", "]", "{", "}", '"', "\\", ",", ":", "a", "é"]), max_size=8)


@settings(max_examples=300, deadline=None)
@given(
    value=st.recursive(
        st.none() | st.integers() | BRACKETY,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(BRACKETY, children, max_size=4)
        ),
        max_leaves=40,
    ),
    nesting=st.integers(0, 50),
)
def test_the_structure_matches_a_plain_scan(value: Any, nesting: int) -> None:
    data = ("[" * nesting + json.dumps(value) + "]" * nesting).encode()
    structure = hooktrim.Structure(data)
    assert (structure.positions, structure.depths) == _reference_structure(data)
