"""Framing and request decoding, without sockets (h11's reader-test pattern)."""

from __future__ import annotations

import typing

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gastown_client import codec, protocol
from gastown_client.errors import RequestRejected
from gastown_client.protocol import ErrorCode


def frames_of(chunks: list[bytes], max_frame: int = 64) -> list[bytes | str]:
    reader = codec.FrameReader(max_frame)
    out: list[bytes | str] = []
    for chunk in chunks:
        reader.feed(chunk)
        while True:
            try:
                frame = reader.next_frame()
            except codec.FrameTooLarge:
                out.append("too_large")
                continue
            if frame is None:
                break
            out.append(frame)
    return out


STREAM = b'{"op":"ping"}\n{"op":"status","id":2}\n'


def test_whole_input_gives_every_frame() -> None:
    assert frames_of([STREAM]) == [b'{"op":"ping"}', b'{"op":"status","id":2}']


def test_one_byte_at_a_time_gives_the_same_frames() -> None:
    assert frames_of([bytes([b]) for b in STREAM]) == frames_of([STREAM])


def test_trailing_partial_frame_is_held() -> None:
    reader = codec.FrameReader()
    reader.feed(b'{"op":"ping"}\n{"op":')
    assert reader.next_frame() == b'{"op":"ping"}'
    assert reader.next_frame() is None
    assert reader.pending == len(b'{"op":')
    with pytest.raises(codec.IncompleteFrame):
        reader.close()


def test_oversize_frame_is_reported_once_and_skipped() -> None:
    big = b"x" * 100
    assert frames_of([big[:70], big[70:] + b"\n" + b"ok\n"]) == ["too_large", b"ok"]
    assert frames_of([big + b"\nok\n"]) == ["too_large", b"ok"]


def test_memory_stays_bounded_while_skipping() -> None:
    reader = codec.FrameReader(16)
    reader.feed(b"y" * 100)
    with pytest.raises(codec.FrameTooLarge):
        reader.next_frame()
    for _ in range(100):
        reader.feed(b"z" * 1000)
        assert reader.next_frame() is None
        assert reader.pending <= 1000
    reader.feed(b"\nfine\n")
    assert reader.next_frame() == b"fine"


def test_eof_on_a_frame_boundary_is_clean() -> None:
    reader = codec.FrameReader()
    reader.feed(b'{"op":"ping"}\n')
    assert reader.next_frame() is not None
    reader.close()


REQUEST_TYPES = typing.get_args(protocol.RequestUnion)


@pytest.mark.parametrize("cls", REQUEST_TYPES, ids=lambda c: c.__name__)
def test_every_request_round_trips(cls: type[protocol.Request]) -> None:
    samples: dict[type, protocol.Request] = {
        protocol.Hello: protocol.Hello(protocol=1, client="t", id=1),
        protocol.Emit: protocol.Emit(type="sling", actor="mayor", payload={"a": 1}, id="x"),
        protocol.Unsubscribe: protocol.Unsubscribe(subscription=3),
        protocol.Query: protocol.Query(types=["a"], limit=5, since="2026-01-01T00:00:00Z"),
        protocol.Subscribe: protocol.Subscribe(cursor="1:5"),
        protocol.SessionStart: protocol.SessionStart(
            session="s-1", actor="gastown/crew/joe", source="clear", parent="s-0"
        ),
        protocol.SessionStep: protocol.SessionStep(session="s-1", kind="commit", ref="abc"),
        protocol.SessionEnd: protocol.SessionEnd(session="s-1", reason="logout"),
        protocol.WispGet: protocol.WispGet(session="s-1"),
        protocol.DigestGet: protocol.DigestGet(ref="dg-1"),
        protocol.Cv: protocol.Cv(actor="mayor", verify=True),
        protocol.ResolveSession: protocol.ResolveSession(session="s-"),
        protocol.Attribute: protocol.Attribute(issue="gt-1", env={"GT_ROLE": "mayor"}),
        protocol.Attribution: protocol.Attribution(issue="gt-1"),
        protocol.Hook: protocol.Hook(payload=msgspec.Raw(b'{"hook_event_name":"Stop"}')),
    }
    request = samples.get(cls) or cls()
    decoded = codec.decode_request(codec.encode(request))
    if isinstance(request, protocol.Hook):  # Raw compares by identity
        assert isinstance(decoded, protocol.Hook)
        assert bytes(decoded.payload) == bytes(request.payload)
        return
    assert decoded == request


def test_tags_are_unique_and_snake_case() -> None:
    tags = [c.__struct_config__.tag for c in REQUEST_TYPES]
    assert len(tags) == len(set(tags))
    assert all(t == t.lower() for t in tags)
    assert set(tags) == protocol.OPS


@pytest.mark.parametrize(
    ("frame", "code", "path"),
    [
        (b'{"op":"hello","protocol":"1"}', ErrorCode.BAD_REQUEST, "$.protocol"),
        (b'{"op":"emit","type":"t","actor":"a","payload":[1]}', ErrorCode.BAD_REQUEST, "$.payload"),
        (b'{"op":"query","types":"sling"}', ErrorCode.BAD_REQUEST, "$.types"),
        (b'{"op":"nope","id":9}', ErrorCode.UNKNOWN_OP, "nope"),
        (b'{"op":5}', ErrorCode.BAD_REQUEST, "$.op"),
        (b"\xff\xfe", ErrorCode.BAD_REQUEST, "invalid JSON"),
    ],
)
def test_bad_frames_name_the_error_and_path(frame: bytes, code: ErrorCode, path: str) -> None:
    with pytest.raises(codec.BadRequest) as info:
        codec.decode_request(frame)
    assert info.value.code == code
    assert path in info.value.message


def test_bad_request_keeps_the_id_when_it_can() -> None:
    with pytest.raises(codec.BadRequest) as info:
        codec.decode_request(b'{"op":"nope","id":"abc"}')
    assert info.value.request_id == "abc"
    with pytest.raises(codec.BadRequest) as info:
        codec.decode_request(b'{"op":"nope","id":[1]}')
    assert info.value.request_id is None


def test_reply_shapes_on_the_wire() -> None:
    ok = codec.encode(protocol.OkReply(id=1, result=protocol.PingResult()))
    assert ok == b'{"id":1,"ok":true,"result":{"pong":true}}'
    err = codec.encode(codec.error_reply(None, ErrorCode.FORBIDDEN, "no"))
    assert err == b'{"id":null,"ok":false,"error":{"code":"forbidden","message":"no"}}'


def test_result_of_raises_typed_rejection() -> None:
    frame = codec.decode_frame(b'{"id":1,"ok":false,"error":{"code":"io_error","message":"m"}}')
    with pytest.raises(RequestRejected) as info:
        codec.result_of(frame, protocol.PingResult)
    assert (info.value.code, info.value.message) == ("io_error", "m")
    ok = codec.decode_frame(b'{"id":1,"ok":true,"result":{"pong":true}}')
    assert codec.result_of(ok, protocol.PingResult) == protocol.PingResult()


def test_unknown_error_codes_still_decode() -> None:
    frame = codec.decode_frame(
        b'{"id":1,"ok":false,"error":{"code":"from_the_future","message":""}}'
    )
    assert frame.error is not None and frame.error.code == "from_the_future"


def test_push_frames_omit_absent_fields() -> None:
    push = protocol.Push(push="event", subscription=1, cursor="1:2", event=msgspec.Raw(b"{}"))
    assert codec.encode(push) == b'{"push":"event","subscription":1,"cursor":"1:2","event":{}}'


@pytest.mark.parametrize(
    "frame",
    [
        b'{"op":"ping","id":1.5',  # a type error first, then broken JSON
        b'{"op":"query","limit":"x"}}',
        b'{"op":"ping","id":"\xff"}',  # invalid UTF-8 inside a string
    ],
)
def test_mixed_and_utf8_errors_are_bad_requests_not_crashes(frame: bytes) -> None:
    with pytest.raises(codec.BadRequest) as info:
        codec.decode_request(frame)
    assert info.value.code == ErrorCode.BAD_REQUEST


# ------------------------------------------------------------------ nesting


def _plain_depth(data: bytes) -> int:
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            escaped, in_string = (False, True) if escaped else (byte == 0x5C, byte != 0x22)
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    return deepest


@pytest.mark.parametrize("limit", [1, 3, 256])
@pytest.mark.parametrize(
    "data",
    [
        b"[]",
        b"[[[]]]",
        b'{"a":[{"b":"[[[[[["}]}',
        b'["\\"[[[[", [[1]]]',
        b'["\\\\", [[[["x"]]]]]',
        b"[" * 300 + b"]" * 300,
        b'{"k":' * 300 + b"1" + b"}" * 300,
        b"[" + b"[]," * 1000 + b"[]]",
    ],
)
def test_nesting_exceeds_matches_a_plain_count(data: bytes, limit: int) -> None:
    assert protocol.nesting_exceeds(data, limit) == (_plain_depth(data) > limit)


def test_too_deep_frames_are_bad_requests_before_decoding() -> None:
    for depth in (protocol.MAX_NESTING, 10_000, 1_000_000):
        frame = b'{"op":"ping","id":1,"x":' + b"[" * depth + b"]" * depth + b"}"
        with pytest.raises(codec.BadRequest) as caught:
            codec.decode_request(frame)
        assert caught.value.code == ErrorCode.BAD_REQUEST
        assert "deeper than 256 levels" in caught.value.message
    fits = b'{"op":"ping","id":1,"x":' + b"[" * 255 + b"]" * 255 + b"}"
    assert isinstance(codec.decode_request(fits), protocol.Ping)


@given(
    request_id=st.one_of(
        st.none(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.text(),  # quotes, backslashes, control characters, non-ASCII
    ),
    epoch=st.integers(min_value=1, max_value=2**63),
    seq=st.integers(min_value=0, max_value=2**63),
    line=st.sampled_from([b'{"ts":"2026-01-01T00:00:00Z","type":"a","actor":"b"}', b"{}"]),
)
def test_an_emit_reply_is_the_frame_of_its_ok_reply(
    request_id: int | str | None, epoch: int, seq: int, line: bytes
) -> None:
    """The daemon renders emit acknowledgements by formatting: byte for byte what encoding
    the reply Struct gives."""
    expected = codec.encode_frame(
        protocol.OkReply(
            id=request_id,
            result=protocol.EmitResult(cursor=f"{epoch}:{seq}", event=msgspec.Raw(line)),
        )
    )
    assert codec.emit_reply(request_id, epoch, seq, line) == expected
