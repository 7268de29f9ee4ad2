"""A reference for the write path: the least a Python server can do for a durable emit.

``python -m bench.refserver SOCKET LOG [asyncio|uvloop]``: newline-delimited JSON over AF_UNIX,
an asyncio protocol per connection, on the event loop the daemon is measured with; each
``emit`` frame becomes a Gas Town line handed to one writer thread, which appends a batch
under the flock, ``fdatasync``s it and wakes the loop once per batch; the replies of a batch
go out per connection. No index, no subscriptions, no validation beyond decoding, no catching
up with other writers, no metrics, no logging context: what is left is Python, the loop, one
thread and the disk. What it does per emit is the least: one decode, the timestamp formatted
once a second (as the daemon does), one encode, one queue put, one write of the reply.
``bench/suites/emit.py`` measures it in the same windows as the daemon, so the gap between the
two is the daemon's own work.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import queue
import sys
import threading
import time
from typing import Any

import msgspec


class _Emit(msgspec.Struct):
    id: Any = None
    type: str = ""
    actor: str = ""
    payload: dict[str, Any] = msgspec.field(default_factory=dict)


_decode = msgspec.json.Decoder(_Emit).decode
_encode = msgspec.json.Encoder(order="sorted").encode
_stamp: tuple[int, str] = (-1, "")


def _ts() -> str:
    """Gas Town's timestamp of now, formatted once a second (emits come many to a second)."""
    global _stamp
    second = int(time.time())
    if _stamp[0] != second:
        _stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)))
    return _stamp[1]


def writer(log: str, lines: queue.SimpleQueue[Any], loop: asyncio.AbstractEventLoop) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    lock = os.open(log + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    while True:
        batch = [lines.get()]
        while True:
            try:
                batch.append(lines.get_nowait())
            except queue.Empty:
                break
        fcntl.flock(lock, fcntl.LOCK_EX)
        os.write(fd, b"".join(line for line, _ in batch))
        os.fdatasync(fd)
        fcntl.flock(lock, fcntl.LOCK_UN)
        loop.call_soon_threadsafe(_done, batch)


def _done(batch: list[tuple[bytes, tuple[asyncio.Transport, bytes]]]) -> None:
    for _, (transport, reply) in batch:
        transport.write(reply)


class Conn(asyncio.Protocol):
    def __init__(self, lines: queue.SimpleQueue[Any]) -> None:
        self.lines = lines
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        *frames, self.buffer = (self.buffer + data).split(b"\n")
        for frame in frames:
            request = _decode(frame)
            line = _encode(
                {
                    "ts": _ts(),
                    "type": request.type,
                    "actor": request.actor,
                    "payload": request.payload,
                }
            )
            reply = b'{"id":%d,"ok":true,"result":{"event":%s}}\n' % (request.id, line)
            self.lines.put((line + b"\n", (self.transport, reply)))


async def main(path: str, log: str) -> None:
    loop = asyncio.get_running_loop()
    lines: queue.SimpleQueue[Any] = queue.SimpleQueue()
    threading.Thread(target=writer, args=(log, lines, loop), daemon=True).start()
    server = await loop.create_unix_server(lambda: Conn(lines), path)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if sys.argv[3:] == ["uvloop"]:
        import uvloop

        uvloop.run(main(sys.argv[1], sys.argv[2]))
    else:
        asyncio.run(main(sys.argv[1], sys.argv[2]))
