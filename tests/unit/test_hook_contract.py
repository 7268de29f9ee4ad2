"""The hook client keeps its own stdlib-only copies of the path rules and of the ``hook`` frame
(it may not import ``paths`` or ``protocol``): they must say what those say."""

from __future__ import annotations

import json
import os
from pathlib import Path

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from gastown_client import codec, hookclient, paths
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
    return hookclient.spooled(frame, 2.5)


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
