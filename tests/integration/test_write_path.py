"""The write path: emits answered without a task, the writer's queue, replies per connection."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess
from tests.integration.test_server import read_frames


@pytest.mark.parametrize("queue", [2, 65536])
def test_pipelined_emits_are_written_in_order_even_when_the_queue_is_full(
    town: Path, queue: int
) -> None:
    (town / "settings" / "gastownd.toml").write_text(
        f"[retention]\nenabled = false\n[eventlog]\nappend_queue = {queue}\n"
    )
    proc = DaemonProcess(town).wait_ready()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(20)
            sock.connect(str(proc.socket))
            sock.sendall(
                b"".join(
                    b'{"op":"emit","id":%d,"type":"t","actor":"a","payload":{"n":%d}}\n' % (i, i)
                    for i in range(300)
                )
            )
            replies = read_frames(sock, 300)
    finally:
        assert proc.terminate() == 0
    assert sorted(r["id"] for r in replies) == list(range(300))
    assert all(r["ok"] for r in replies)
    seq_of = {r["id"]: int(r["result"]["cursor"].split(":")[1]) for r in replies}
    assert [seq_of[i] for i in range(300)] == sorted(seq_of.values())
    written = [
        json.loads(x)["payload"]["n"] for x in (town / ".events.jsonl").read_bytes().splitlines()
    ]
    assert written == list(range(300))


def _group_commits(proc: DaemonProcess) -> int:
    from gastown_client.client import Client
    from gastown_client.protocol import Metrics

    with Client(proc.socket, timeout_s=10) as client:
        text = client.call(Metrics()).text
    found = re.search(r"^gastownd_fsync_seconds_count (\d+)", text, re.MULTILINE)
    assert found, text
    return int(found.group(1))


def test_the_emits_of_one_loop_turn_make_one_group_commit(town: Path) -> None:
    """The writer's thread gets a turn's appends at once (``Writer.put``): 200 emits that
    arrive in one read are not split into a batch of the first and one of the rest."""
    proc = DaemonProcess(town).wait_ready()
    try:
        before = _group_commits(proc)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(20)
            sock.connect(str(proc.socket))
            frames = b"".join(
                b'{"op":"emit","id":%d,"type":"t","actor":"a"}\n' % i for i in range(200)
            )
            assert len(frames) < 64 << 10  # one read of the socket's buffer, in practice
            sock.sendall(frames)
            replies = read_frames(sock, 200)
        assert all(r["ok"] for r in replies)
        # One turn; a second if the kernel split the frames (in flight per connection: 64).
        assert _group_commits(proc) - before <= 8
    finally:
        assert proc.terminate() == 0
