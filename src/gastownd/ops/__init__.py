"""``dispatch``: the single match from request type to handler."""

from __future__ import annotations

from typing import Any

from gastown_client.protocol import (
    Attribute,
    Attribution,
    Cv,
    DigestGet,
    Emit,
    Hello,
    Hook,
    Ping,
    Prune,
    Query,
    Request,
    ResolveSession,
    SessionEnd,
    Sessions,
    SessionStart,
    SessionStep,
    Status,
    Subscribe,
    Unsubscribe,
    WispGet,
)
from gastownd.daemon import Daemon
from gastownd.ops import events, hooks, meta, seance, wisps
from gastownd.server import Connection

# Answered in line by the server: these never wait on disk or on other requests.
# (query is not among them: a large result is read in a thread, under the log's lock.)
INSTANT_OPS: tuple[type[Request], ...] = (Hello, Ping, Status, Unsubscribe)


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
        case SessionStart():
            return await wisps.session_start(daemon, request)
        case SessionStep():
            return await wisps.session_step(daemon, request)
        case SessionEnd():
            return await wisps.session_end(daemon, request)
        case WispGet():
            return await wisps.wisp(daemon, request)
        case DigestGet():
            return await wisps.digest(daemon, request)
        case Cv():
            return await wisps.cv(daemon, request)
        case Sessions():
            return await seance.sessions(daemon, request)
        case ResolveSession():
            return await seance.resolve_session(daemon, request)
        case Attribute():
            return await wisps.attribute(daemon, request)
        case Attribution():
            return await wisps.attribution(daemon, request)
        case Hook():
            if request.trimmed:
                daemon.hooks_trimmed += 1
            return await hooks.hook(daemon, request)
    raise AssertionError(f"no handler for {type(request).__name__}")
