"""Async client over anyio; the same operations as ``Client``, awaited."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.abc
import msgspec

from gastown_client import __version__, codec
from gastown_client.client import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_REPLY_TIMEOUT_S,
    resolve_socket,
)
from gastown_client.errors import DaemonUnavailable, ProtocolMismatch, RequestRejected
from gastown_client.protocol import (
    PROTOCOL_VERSION,
    Attribute,
    AttributeResult,
    Attribution,
    AttributionResult,
    Cv,
    CvResult,
    DigestGet,
    DigestView,
    Emit,
    EmitResult,
    Frame,
    Hello,
    HelloResult,
    Ping,
    PingResult,
    Prune,
    PruneResult,
    Query,
    QueryResult,
    Request,
    ResolveSession,
    SessionEnd,
    SessionRow,
    Sessions,
    SessionsResult,
    SessionStart,
    SessionStartResult,
    SessionStep,
    SessionStepResult,
    Status,
    StatusResult,
    Subscribe,
    SubscribeResult,
    Visibility,
    WispGet,
    WispView,
)

T = TypeVar("T")


class AsyncClient:
    """One connection; use ``async with AsyncClient() as c: await c.ping()``.

    Requests on one client are answered in the order they are awaited; use
    several clients for concurrency.
    """

    def __init__(
        self,
        socket_path: str | Path | None = None,
        *,
        town_root: str | Path | None = None,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        timeout_s: float | None = DEFAULT_REPLY_TIMEOUT_S,
        max_frame: int = 64 << 20,
    ) -> None:
        self.socket_path = resolve_socket(socket_path, town_root)
        self._connect_timeout_s = connect_timeout_s
        self._timeout_s = timeout_s
        self._reader = codec.FrameReader(max_frame)
        self._stream: anyio.abc.SocketStream | None = None
        self._next_id = 0
        self._lock = anyio.Lock()
        self.server: HelloResult | None = None

    async def connect(self) -> AsyncClient:
        if self._stream is None:
            try:
                with anyio.fail_after(self._connect_timeout_s):
                    self._stream = await anyio.connect_unix(self.socket_path)
            except TimeoutError:
                raise DaemonUnavailable(str(self.socket_path), "timed out") from None
            except OSError as exc:
                raise DaemonUnavailable(str(self.socket_path), exc.strerror or str(exc)) from None
        return self

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None

    async def __aenter__(self) -> AsyncClient:
        return await self.connect()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def send(self, request: Request) -> int | str | None:
        await self.connect()
        assert self._stream is not None
        if request.id is None:
            self._next_id += 1
            request.id = self._next_id
        try:
            await self._stream.send(codec.encode_frame(request))
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            await self.aclose()
            raise DaemonUnavailable(str(self.socket_path), str(exc) or "broken pipe") from None
        return request.id

    async def read_frame(self, timeout_s: float | None = None) -> Frame:
        if self._stream is None:
            raise DaemonUnavailable(str(self.socket_path), "not connected")
        while True:
            frame = self._reader.next_frame()
            if frame is not None:
                return codec.decode_frame(frame)
            try:
                with anyio.fail_after(timeout_s):
                    data = await self._stream.receive(1 << 16)
            except TimeoutError:
                raise DaemonUnavailable(str(self.socket_path), "timed out") from None
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                await self.aclose()
                raise DaemonUnavailable(
                    str(self.socket_path), "connection closed by daemon"
                ) from None
            self._reader.feed(data)

    async def call(self, request: Request, result_type: type[T]) -> T:
        async with self._lock:
            request_id = await self.send(request)
            while True:
                frame = await self.read_frame(self._timeout_s)
                if frame.push is None and frame.id == request_id:
                    return codec.result_of(frame, result_type)
                if frame.push is None and frame.id is None and frame.ok is False:
                    codec.result_of(frame, result_type)

    async def hello(self) -> HelloResult:
        result = await self.call(
            Hello(protocol=PROTOCOL_VERSION, client=f"gastown_client/{__version__}"), HelloResult
        )
        if result.min_protocol > PROTOCOL_VERSION:
            raise ProtocolMismatch(
                f"daemon needs protocol >= {result.min_protocol}, client speaks {PROTOCOL_VERSION}"
            )
        self.server = result
        return result

    async def ping(self) -> PingResult:
        return await self.call(Ping(), PingResult)

    async def status(self) -> StatusResult:
        return await self.call(Status(), StatusResult)

    async def emit(
        self,
        type: str,
        actor: str,
        payload: Mapping[str, Any] | None = None,
        visibility: Visibility = "feed",
    ) -> EmitResult:
        return await self.call(
            Emit(type=type, actor=actor, payload=dict(payload or {}), visibility=visibility),
            EmitResult,
        )

    async def query(self, **filters: Any) -> QueryResult:
        return await self.call(Query(**filters), QueryResult)

    async def prune(self, dry_run: bool = False) -> PruneResult:
        return await self.call(Prune(dry_run=dry_run), PruneResult)

    async def session_start(self, session: str, actor: str, **fields: Any) -> SessionStartResult:
        return await self.call(
            SessionStart(session=session, actor=actor, **fields), SessionStartResult
        )

    async def session_step(self, session: str, kind: str, **fields: Any) -> SessionStepResult:
        return await self.call(SessionStep(session=session, kind=kind, **fields), SessionStepResult)

    async def session_end(self, session: str, reason: str = "ended") -> DigestView:
        return await self.call(SessionEnd(session=session, reason=reason), DigestView)

    async def wisp(self, session: str) -> WispView:
        return await self.call(WispGet(session=session), WispView)

    async def digest(self, ref: str) -> DigestView:
        return await self.call(DigestGet(ref=ref), DigestView)

    async def cv(self, actor: str, limit: int = 20, verify: bool = False) -> CvResult:
        return await self.call(Cv(actor=actor, limit=limit, verify=verify), CvResult)

    async def sessions(self, **filters: Any) -> SessionsResult:
        return await self.call(Sessions(**filters), SessionsResult)

    async def resolve_session(self, session: str) -> SessionRow:
        return await self.call(ResolveSession(session=session), SessionRow)

    async def attribute(self, issue: str, **fields: Any) -> AttributeResult:
        return await self.call(Attribute(issue=issue, **fields), AttributeResult)

    async def attribution(self, issue: str) -> AttributionResult:
        return await self.call(Attribution(issue=issue), AttributionResult)

    async def subscribe(self, **filters: Any) -> AsyncIterator[tuple[str, msgspec.Raw]]:
        """Yield ``(cursor, event)`` for each pushed line; the connection is dedicated."""
        result = await self.call(Subscribe(**filters), SubscribeResult)
        return self._pushes(result)

    async def _pushes(self, result: SubscribeResult) -> AsyncIterator[tuple[str, msgspec.Raw]]:
        while True:
            frame = await self.read_frame(None)
            if frame.subscription != result.subscription:
                continue
            if frame.push == "event":
                assert frame.cursor is not None
                yield frame.cursor, frame.event
            elif frame.push in ("overflow", "end"):
                raise RequestRejected(frame.push, frame.message or "subscription ended")
