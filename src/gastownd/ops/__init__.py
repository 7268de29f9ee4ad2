"""The daemon's op table: each request type with its handler, and how it runs.

``dispatch_inline`` and ``dispatch`` look the request's type up in ``ROUTES``;
a type with no route is a bug (the codec refuses ops the protocol does not
know), answered ``internal`` as any other. A test keeps ``ROUTES`` and the
protocol's ``OP_TABLE`` in step, handler result types included.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

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
    Version,
    WispGet,
)
from gastownd.ops import hooks, meta, seance, wisps
from gastownd.ops import log_requests as events
from gastownd.ops import metrics_report as metrics_op
from gastownd.process.daemon import Daemon
from gastownd.server.socket_server import Connection, Reply

RequestT = TypeVar("RequestT", bound=Request)


@dataclass(frozen=True, slots=True)
class Route:
    """How one op is answered: ``inline`` in the connection's own callback (it must
    not wait: it replies now, or hands ``reply`` on, as ``emit`` does to the log's
    writer), or else ``task``, awaited in a task of its own."""

    handler: Callable[..., Any]
    inline: Callable[[Daemon, Any, Connection, Reply], None] | None = None
    task: Callable[[Daemon, Any, Connection], Awaitable[Any]] | None = None


def inline(
    request: type[RequestT], handler: Callable[[Daemon, RequestT], Any]
) -> tuple[type[Request], Route]:
    return request, Route(handler, inline=lambda d, r, conn, reply: reply(handler(d, r)))


def inline_on_connection(
    request: type[RequestT], handler: Callable[[Daemon, RequestT, Connection], Any]
) -> tuple[type[Request], Route]:
    return request, Route(handler, inline=lambda d, r, conn, reply: reply(handler(d, r, conn)))


def replying(
    request: type[RequestT], handler: Callable[[Daemon, RequestT, Reply], None]
) -> tuple[type[Request], Route]:
    """Inline, the handler calling ``reply`` itself, now or later."""
    return request, Route(handler, inline=lambda d, r, conn, reply: handler(d, r, reply))


def task(
    request: type[RequestT], handler: Callable[[Daemon, RequestT], Awaitable[Any]]
) -> tuple[type[Request], Route]:
    return request, Route(handler, task=lambda d, r, conn: handler(d, r))


def task_on_connection(
    request: type[RequestT], handler: Callable[[Daemon, RequestT, Connection], Awaitable[Any]]
) -> tuple[type[Request], Route]:
    return request, Route(handler, task=handler)


ROUTES: dict[type[Request], Route] = dict(
    [
        inline(Hello, meta.hello),
        inline(Ping, meta.ping),
        inline(Version, meta.version),
        inline_on_connection(Unsubscribe, events.unsubscribe),
        replying(Emit, events.submit_emit),
        task(Status, meta.status),
        task(Query, events.query),
        task_on_connection(Subscribe, events.subscribe),
        task(Prune, events.prune),
        task(SessionStart, wisps.session_start),
        task(SessionStep, wisps.session_step),
        task(SessionEnd, wisps.session_end),
        task(WispGet, wisps.wisp),
        task(DigestGet, wisps.digest),
        task(Cv, wisps.cv),
        task(Sessions, seance.sessions),
        task(ResolveSession, seance.resolve_session),
        task(Attribute, wisps.attribute),
        task(Attribution, wisps.attribution),
        task(Hook, hooks.hook),
        task(Metrics, metrics_op.metrics),
    ]
)


def dispatch_inline(daemon: Daemon, request: Request, conn: Connection, reply: Reply) -> bool:
    """Answer without a task what needs none; False: run ``dispatch`` in a task."""
    route = ROUTES.get(type(request))
    if route is None or route.inline is None:
        return False
    route.inline(daemon, request, conn, reply)
    return True


async def dispatch(daemon: Daemon, request: Request, conn: Connection) -> Any:
    """Every request ``dispatch_inline`` does not take, in a task of its own."""
    route = ROUTES.get(type(request))
    if route is None or route.task is None:
        raise AssertionError(f"no handler for {type(request).__name__}")
    return await route.task(daemon, request, conn)
