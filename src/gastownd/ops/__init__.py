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
    Metrics,
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
from gastownd.ops import hooks, meta, seance, wisps
from gastownd.ops import log_requests as events
from gastownd.ops import metrics_report as metrics_op
from gastownd.process.daemon import Daemon
from gastownd.server.socket_server import Connection, Reply


def dispatch_inline(daemon: Daemon, request: Request, conn: Connection, reply: Reply) -> bool:
    """Answer without a task what needs none; False: run ``dispatch`` in a task.

    These never wait on disk or on other requests, except ``emit``, whose
    reply comes when the log's writer has made its line durable.
    """
    match request:
        case Hello():
            reply(meta.hello(daemon, request))
        case Ping():
            reply(meta.ping(daemon))
        case Unsubscribe():
            reply(events.unsubscribe(daemon, request, conn))
        case Emit():
            events.submit_emit(daemon, request, reply)
        case _:
            return False
    return True


async def dispatch(daemon: Daemon, request: Request, conn: Connection) -> Any:
    """Every request ``dispatch_inline`` does not take, in a task of its own."""
    match request:
        case Status():
            return await meta.status(daemon)
        case Query():
            return await events.query(daemon, request)
        case Subscribe():
            return await events.subscribe(daemon, request, conn)
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
            return await hooks.hook(daemon, request)
        case Metrics():
            return await metrics_op.metrics(daemon, request)
    raise AssertionError(f"no handler for {type(request).__name__}")
