"""``dispatch``: the single match from request type to handler."""

from __future__ import annotations

from typing import Any

from gastown_client.protocol import (
    Emit,
    Hello,
    Ping,
    Prune,
    Query,
    Request,
    Status,
    Subscribe,
    Unsubscribe,
)
from gastownd.daemon import Daemon
from gastownd.ops import events, meta
from gastownd.server import Connection


async def dispatch(daemon: Daemon, request: Request, conn: Connection) -> Any:
    match request:
        case Hello():
            return await meta.hello(daemon, request)
        case Ping():
            return await meta.ping(daemon)
        case Status():
            return await meta.status(daemon)
        case Emit():
            return await events.emit(daemon, request)
        case Query():
            return await events.query(daemon, request)
        case Subscribe():
            return await events.subscribe(daemon, request, conn)
        case Unsubscribe():
            return await events.unsubscribe(daemon, request, conn)
        case Prune():
            return await events.prune(daemon, request)
    raise AssertionError(f"no handler for {type(request).__name__}")
