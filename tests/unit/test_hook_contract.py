"""The hook client keeps its own stdlib-only copies of the path rules and of the ``hook`` frame
(it may not import ``paths`` or ``protocol``): they must say what those say."""

from __future__ import annotations

import json
import os
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gastown_client import codec, hookclient, hookoutcome, hooktrim, paths, protocol
from gastown_client.protocol import Hook


def test_the_path_constants_are_the_same() -> None:
    assert os.fsencode(paths.PRIVATE_DIR_NAME) == hookclient.PRIVATE_DIR_NAME
    assert os.fsencode(paths.SOCKET_NAME) == hookclient.SOCKET_NAME
    assert os.fsencode(paths.TOWN_MARKER) == hookclient.TOWN_MARKER
    assert hookclient.SUN_PATH_MAX == paths.SUN_PATH_MAX


def test_the_spool_file_is_in_the_daemons_spool_dir(tmp_path: Path) -> None:
    town = os.fsencode(tmp_path)
    assert Path(os.fsdecode(hookclient.spool_path(town))).parent == paths.spool_dir(tmp_path)


@given(depth=st.integers(0, 12), extra=st.sampled_from(["", "x" * 200]))
def test_the_socket_path_is_the_same(depth: int, extra: str) -> None:
    """Short towns, and towns too deep for ``sun_path`` (the /tmp fallback)."""
    town = Path("/tmp/gt-contract") / extra / "/".join(["level"] * depth)
    ours = hookclient.socket_path(os.fsencode(town), {})
    assert os.fsdecode(ours) == str(paths.socket_path(town, {}))


def every_field_frame() -> bytes:
    env = {key: b"v-" + key for key in hookclient.ENV_KEYS}
    frame = hookclient.build_frame(
        b'{"hook_event_name":"Stop"}', env=env, cwd=b"/w", pid=7, ppid=6, at=1.5, trimmed=3
    )
    return hookoutcome.spooled(frame, 2.5)


def test_the_spool_knows_how_the_hook_starts_a_frame() -> None:
    """What the daemon looks for to find the whole frame after a torn one in the spool."""
    from gastownd.sessions.spool import FRAME_HEAD

    assert every_field_frame().startswith(FRAME_HEAD)
    assert hookclient.build_frame(b"", env={}, cwd=None, pid=1, ppid=1, at=0.0).startswith(
        FRAME_HEAD
    )


def test_every_field_the_hook_sends_is_a_field_of_hook_and_the_reverse() -> None:
    sent = set(json.loads(every_field_frame()))
    assert sent == {"op", *Hook.__struct_fields__}


def test_the_frame_decodes_to_the_hook_it_means() -> None:
    frame = every_field_frame()
    request = codec.decode_request(frame.rstrip(b"\n"))
    assert isinstance(request, Hook)
    assert msgspec.json.decode(request.payload) == {"hook_event_name": "Stop"}
    assert request.env == {os.fsdecode(k): "v-" + os.fsdecode(k) for k in hookclient.ENV_KEYS}
    assert (request.cwd, request.pid, request.ppid, request.at) == ("/w", 7, 6, 1.5)
    assert (request.trimmed, request.spooled_at, request.id) == (3, 2.5, 1)


# ---------------------------------------------------------------- nesting
#
# The hook counts brackets with its own stdlib-only code (``hooktrim.Structure``, with the
# cheap pre-check in ``hookclient.fitted``), the daemon with ``protocol.nesting_exceeds``: both
# must find the same depth, or a payload the hook lets through whole is refused by the daemon.


def hook_depth(data: bytes) -> int:
    return max(hooktrim.Structure(data).depths, default=0)


def nested(depth: int, core: str = "1", opening: str = "[") -> bytes:
    closing = {"[": "]", "{": "}"}[opening]
    if opening == "{":
        return ('{"k":' * depth + core + "}" * depth).encode()
    return (opening * depth + core + closing * depth).encode()


BRACKETY = st.sampled_from(["[", "]", "{", "}", '\\"', "\\\\", "x", ",", ":", " ", "é"])
# Strings that hold brackets, escaped quotes and escaped backslashes, as JSON text.
BRACKETY_STRING = st.lists(BRACKETY, max_size=12).map(lambda parts: '"' + "".join(parts) + '"')


@st.composite
def nested_json(draw: st.DrawFn) -> bytes:
    """Valid JSON around a depth near one of the limits, with bracket-laden strings inside."""
    depth = draw(st.sampled_from([126, 127, 128, 129, 130, 254, 255, 256, 257, 258]))
    if draw(st.booleans()):
        depth = min(depth, draw(st.integers(0, 300)))
    openings = [
        draw(
            st.sampled_from(["[", "[{},", '{"k":'])
            | BRACKETY_STRING.map(lambda s: f"[{s},")
            # An object with a member before the one that goes deeper.
            | BRACKETY_STRING.map(lambda s: f'{{{s}:{s},"k":')
        )
        for _ in range(depth)
    ]
    closings = "".join("]" if opening[0] == "[" else "}" for opening in reversed(openings))
    return ("".join(openings) + draw(BRACKETY_STRING) + closings).encode()


@pytest.mark.parametrize("limit", [hooktrim.MAX_DEPTH, protocol.MAX_NESTING])
@pytest.mark.parametrize("delta", [-2, -1, 0, 1, 2])
@pytest.mark.parametrize("opening", ["[", "{"])
def test_the_hook_and_the_daemon_count_the_same_depth_at_the_limits(
    limit: int, delta: int, opening: str
) -> None:
    data = nested(limit + delta, core='"[{\\"]}"', opening=opening)
    json.loads(data)  # valid JSON: the depth is the real one
    assert hook_depth(data) == limit + delta
    assert (hook_depth(data) > limit) == protocol.nesting_exceeds(data, limit) == (delta > 0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=nested_json())
def test_the_hook_and_the_daemon_agree_on_any_valid_payload(data: bytes) -> None:
    depth = json_depth(json.loads(data))
    assert hook_depth(data) == depth
    for limit in (hooktrim.MAX_DEPTH, protocol.MAX_NESTING):
        assert protocol.nesting_exceeds(data, limit) == (depth > limit)


def json_depth(value: object) -> int:
    depth, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            depth = max(depth, level)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return depth


def test_the_hooks_cheap_check_never_passes_a_payload_too_deep() -> None:
    """``fitted`` skips the count when there are few brackets: few brackets, little depth."""
    data = nested(hookclient.MAX_DEPTH, opening="{")
    assert data.count(b"{") + data.count(b"[") <= hookclient.MAX_DEPTH
    assert not protocol.nesting_exceeds(data, hookclient.MAX_DEPTH)
    assert hookclient.MAX_DEPTH == hooktrim.MAX_DEPTH


def test_a_payload_the_hook_keeps_whole_fits_the_daemons_limit_inside_its_frame() -> None:
    """The frame wraps the payload one level deeper: the hook's limit leaves room for it."""
    data = nested(hooktrim.MAX_DEPTH, opening="{")
    frame = hookclient.build_frame(data, env={}, cwd=b"/w", pid=1, ppid=1, at=1.0, trimmed=0)
    assert hooktrim.MAX_DEPTH + 1 <= protocol.MAX_NESTING
    assert not protocol.nesting_exceeds(frame.rstrip(b"\n"))
    assert isinstance(codec.decode_request(frame.rstrip(b"\n")), Hook)
