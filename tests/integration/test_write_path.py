"""The write path: emits answered without a task, the writer's queue, replies per connection."""

from __future__ import annotations

import json
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
