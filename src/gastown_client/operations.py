"""The ops as methods, declared once for ``Client`` and ``AsyncClient``.

Each method is an ``Operation``: a function that builds the request from the
arguments. Read from a ``Client`` it sends the request and returns the result;
read from an ``AsyncClient`` it returns an awaitable of the same result. The
result type comes from the request (``Returning[ResultT]``), so both clients'
methods are typed from this one list.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, ParamSpec, TypeVar, overload

from gastown_client.errors import ProtocolMismatch
from gastown_client.protocol import (
    PROTOCOL_VERSION,
    Attribute,
    Attribution,
    Cv,
    DigestGet,
    Emit,
    Hello,
    HelloResult,
    Metrics,
    Ping,
    Prune,
    Query,
    ResolveSession,
    Returning,
    SessionEnd,
    Sessions,
    SessionStart,
    SessionStep,
    Status,
    Visibility,
    WispGet,
)
from gastown_client.version import __version__

P = ParamSpec("P")
R = TypeVar("R")


class SyncCaller:
    """A client whose ``call`` returns the result."""

    def call(self, request: Returning[R]) -> R:
        raise NotImplementedError


class AsyncCaller:
    """A client whose ``call`` returns an awaitable of the result."""

    async def call(self, request: Returning[R]) -> R:
        raise NotImplementedError


class Operation(Generic[P, R]):
    """A method that sends the request ``build`` makes of its arguments."""

    def __init__(self, build: Callable[P, Returning[R]]) -> None:
        self.build = build
        self.name = getattr(build, "__name__", "operation")

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, client: None, owner: type) -> Operation[P, R]: ...
    @overload
    def __get__(self, client: SyncCaller, owner: type) -> Callable[P, R]: ...
    @overload
    def __get__(self, client: AsyncCaller, owner: type) -> Callable[P, Awaitable[R]]: ...
    def __get__(self, client: SyncCaller | AsyncCaller | None, owner: type) -> Any:
        if client is None:
            return self
        call = client.call
        build = self.build

        @functools.wraps(build)
        def method(*args: P.args, **kwargs: P.kwargs) -> Any:
            return call(build(*args, **kwargs))

        method.__name__ = self.name
        method.__qualname__ = f"{owner.__name__}.{self.name}"
        # Later reads find the method on the instance, past this descriptor.
        client.__dict__[self.name] = method
        return method


def _emit(
    type: str,
    actor: str,
    payload: Mapping[str, Any] | None = None,
    visibility: Visibility = "feed",
) -> Emit:
    return Emit(type=type, actor=actor, payload=dict(payload or {}), visibility=visibility)


def _prune(dry_run: bool = False) -> Prune:
    return Prune(dry_run=dry_run)


def _session_start(session: str, actor: str, **fields: Any) -> SessionStart:
    return SessionStart(session=session, actor=actor, **fields)


def _session_step(session: str, kind: str, **fields: Any) -> SessionStep:
    return SessionStep(session=session, kind=kind, **fields)


def _session_end(session: str, reason: str = "ended") -> SessionEnd:
    return SessionEnd(session=session, reason=reason)


def _wisp(session: str) -> WispGet:
    return WispGet(session=session)


def _digest(ref: str) -> DigestGet:
    return DigestGet(ref=ref)


def _cv(actor: str, limit: int = 20, verify: bool = False) -> Cv:
    return Cv(actor=actor, limit=limit, verify=verify)


def _resolve_session(session: str) -> ResolveSession:
    return ResolveSession(session=session)


def _attribute(issue: str, **fields: Any) -> Attribute:
    return Attribute(issue=issue, **fields)


def _attribution(issue: str) -> Attribution:
    return Attribution(issue=issue)


class Operations:
    """The convenience methods of both clients. ``hello`` and ``subscribe`` differ
    between the two (a handshake check; a stream) and are written in each."""

    ping = Operation(Ping)
    status = Operation(Status)
    emit = Operation(_emit)
    query = Operation(Query)
    prune = Operation(_prune)
    metrics = Operation(Metrics)
    session_start = Operation(_session_start)
    session_step = Operation(_session_step)
    session_end = Operation(_session_end)
    wisp = Operation(_wisp)
    digest = Operation(_digest)
    cv = Operation(_cv)
    sessions = Operation(Sessions)
    resolve_session = Operation(_resolve_session)
    attribute = Operation(_attribute)
    attribution = Operation(_attribution)


def hello_request() -> Hello:
    return Hello(protocol=PROTOCOL_VERSION, client=f"gastown_client/{__version__}")


def checked_hello(result: HelloResult) -> HelloResult:
    """``result`` if this client can talk to that daemon; else ``ProtocolMismatch``."""
    if result.min_protocol > PROTOCOL_VERSION:
        raise ProtocolMismatch(
            f"daemon needs protocol >= {result.min_protocol}, client speaks {PROTOCOL_VERSION}"
        )
    return result
