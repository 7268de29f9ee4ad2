"""The baseline server: the least a Python asyncio server can do with the same frames.

``python -m bench.broker SOCKET``: newline-delimited JSON over AF_UNIX. A
``subscribe`` frame is acknowledged and the connection joins the fan-out; an
``emit`` frame is acknowledged, then its payload is pushed to every
subscriber; any other frame is echoed back as it came. No validation, no log,
no index: what is left is the cost of Python, asyncio and the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

import msgspec


class _Op(msgspec.Struct):
    op: str = ""
    id: Any = None
    type: str | list[str] | None = None
    actor: str | None = None
    payload: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"{}"))


_decoder = msgspec.json.Decoder(_Op)
_encoder = msgspec.json.Encoder()


class Broker:
    def __init__(self) -> None:
        self.subscribers: list[asyncio.StreamWriter] = []
        self.seq = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                request = _decoder.decode(line)
                if request.op == "subscribe":
                    writer.write(
                        _encoder.encode(
                            {
                                "id": request.id,
                                "ok": True,
                                "result": {"subscription": 1, "cursor": f"1:{self.seq}"},
                            }
                        )
                        + b"\n"
                    )
                    self.subscribers.append(writer)
                elif request.op == "emit":
                    self.seq += 1
                    event = _encoder.encode(
                        {"type": request.type, "actor": request.actor, "payload": request.payload}
                    )
                    cursor = f"1:{self.seq}"
                    writer.write(
                        _encoder.encode(
                            {
                                "id": request.id,
                                "ok": True,
                                "result": {"cursor": cursor, "event": msgspec.Raw(event)},
                            }
                        )
                        + b"\n"
                    )
                    push = (
                        _encoder.encode(
                            {
                                "push": "event",
                                "subscription": 1,
                                "cursor": cursor,
                                "event": msgspec.Raw(event),
                            }
                        )
                        + b"\n"
                    )
                    for subscriber in self.subscribers:
                        subscriber.write(push)
                else:
                    writer.write(line)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            if writer in self.subscribers:
                self.subscribers.remove(writer)
            writer.close()


async def main(path: str) -> None:
    broker = Broker()
    server = await asyncio.start_unix_server(broker.serve, path, limit=1 << 20)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(sys.argv[1]))
