"""The daemon's side of the op table: each op's handler, found by its signature.

An op is declared once, in ``gastown_client.protocol`` (its request struct names
its result). Its handler is the one public function of ``HANDLER_MODULES`` whose
signature reads ``(daemon: Daemon, request: TheRequest)``, optionally followed by
``conn: Connection`` (it needs the connection) or ``reply: Reply`` (it replies
itself, now or later), and by keyword-only parameters with defaults. How it runs
follows from what it is: a plain function cannot wait, so it is answered
``inline``, in the connection's own callback; a coroutine function is awaited in a
task of its own. So adding an op touches the protocol's table and one handler,
nothing here. An op with no handler, or with two, fails at import, naming them.

``inline_handlers`` (given to the server) and ``dispatch`` look the request's type up in
``ROUTES``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

import msgspec

from gastown_client.protocol import OP_TABLE, Request
from gastownd.ops import hooks, log_requests, meta, metrics_report, seance, wisps
from gastownd.process.daemon import Daemon
from gastownd.server.socket_server import Connection, InlineHandler, Reply

# Where handlers live; a module holding a new op's handler is added here.
HANDLER_MODULES: tuple[ModuleType, ...] = (meta, log_requests, wisps, seance, hooks, metrics_report)
REQUESTS = frozenset(op.request for op in OP_TABLE.values())


class Route(msgspec.Struct, frozen=True):
    """How one op is answered: ``inline`` in the connection's own callback (it must
    not wait: it replies now, or hands ``reply`` on, as ``emit`` does to the log's
    writer), or else ``task``, awaited in a task of its own."""

    handler: Callable[..., Any]
    inline: Callable[[Daemon, Any, Reply], None] | None = None
    task: Callable[[Daemon, Any, Connection], Awaitable[Any]] | None = None
    replies_later: bool = False  # inline, handing ``reply`` on (docs/protocol.md says so)


class HandlerError(TypeError):
    """The handlers do not match the op table: one missing, two for one op, or a bad shape."""


def route_of(handler: Callable[..., Any], extra: object) -> Route:
    """The route for ``handler``, given what it takes after the request (``extra``)."""
    if inspect.iscoroutinefunction(handler):
        if extra is None:
            return Route(handler, task=lambda d, r, conn: handler(d, r))
        if extra is Connection:
            return Route(handler, task=handler)
    elif extra is None:
        return Route(handler, inline=lambda d, r, reply: reply(handler(d, r)))
    elif extra is Connection:
        return Route(handler, inline=lambda d, r, reply: reply(handler(d, r, reply.conn)))
    elif extra is Reply:
        # The handler itself, no layer between: ``emit``'s (one call less per emit).
        return Route(handler, inline=handler, replies_later=True)
    raise HandlerError(f"{handler.__qualname__}: a coroutine cannot take ``reply``")


def _handled_request(
    module: ModuleType, function: Callable[..., Any]
) -> tuple[type[Request], object] | None:
    """The op request ``function`` handles and what it takes after it; None: no handler.

    Read from the code object and the annotations as the names they are (``from __future__
    import annotations``), looked up in the handler's module: ``inspect.signature`` and
    ``typing.get_type_hints`` would cost the daemon's start-up about half a millisecond.
    """
    code = function.__code__
    if code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS):
        return None
    positional = code.co_varnames[: code.co_argcount]
    keyword_only = code.co_varnames[code.co_argcount : code.co_argcount + code.co_kwonlyargcount]
    if not 2 <= len(positional) <= 3 or set(keyword_only) - set(function.__kwdefaults__ or ()):
        return None
    names = function.__annotations__
    daemon, request, *extra = (vars(module).get(str(names.get(p))) for p in positional)
    if daemon is not Daemon or not isinstance(request, type) or request not in REQUESTS:
        return None
    if extra and extra[0] not in (Connection, Reply):
        return None
    return request, extra[0] if extra else None


def find_routes(modules: tuple[ModuleType, ...]) -> dict[type[Request], Route]:
    """Every op's route, from the handlers ``modules`` define, in ``OP_TABLE``'s order."""
    found: dict[type[Request], list[tuple[Callable[..., Any], object]]] = {}
    for module in modules:
        for name, function in vars(module).items():
            if name.startswith("_") or not inspect.isfunction(function):
                continue
            if function.__module__ != module.__name__:
                continue  # imported from elsewhere: its own module declares it
            handled = _handled_request(module, function)
            if handled is not None:
                found.setdefault(handled[0], []).append((function, handled[1]))
    routes: dict[type[Request], Route] = {}
    for op in OP_TABLE.values():
        handlers = found.get(op.request, [])
        if len(handlers) != 1:
            names = [f"{h.__module__}.{h.__qualname__}" for h, _ in handlers] or "none"
            raise HandlerError(f"op {op.name!r} needs exactly one handler, found: {names}")
        routes[op.request] = route_of(*handlers[0])
    return routes


ROUTES: dict[type[Request], Route] = find_routes(HANDLER_MODULES)


def inline_handlers(daemon: Daemon) -> dict[type[Request], InlineHandler]:
    """What the server answers without a task, by request type, bound to ``daemon``: the
    server calls the route's function itself (a ``partial``, in C), with no lookup or layer
    of its own between a decoded request and its handler."""
    return {
        request: functools.partial(route.inline, daemon)
        for request, route in ROUTES.items()
        if route.inline is not None
    }


async def dispatch(daemon: Daemon, request: Request, conn: Connection) -> Any:
    """Every request ``inline_handlers`` does not take, in a task of its own."""
    route = ROUTES.get(type(request))
    if route is None or route.task is None:
        raise AssertionError(f"no handler for {type(request).__name__}")
    return await route.task(daemon, request, conn)
