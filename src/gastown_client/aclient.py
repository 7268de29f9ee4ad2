"""Async client over anyio; the same operations as ``Client`` (``Operations``), awaited."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any, TypeVar, overload

import anyio
import anyio.abc
import msgspec

from gastown_client import codec
from gastown_client.client import ClientBase
from gastown_client.errors import DaemonUnavailable, RequestRejected
from gastown_client.operations import AsyncCaller, checked_hello, hello_request
from gastown_client.protocol import (
    RESULT_TYPES,
    Frame,
    HelloResult,
    Request,
    Returning,
    Subscribe,
    SubscribeResult,
)

R = TypeVar("R")
T = TypeVar("T")


class AsyncClient(ClientBase, AsyncCaller):
    """One connection; use ``async with AsyncClient() as c: await c.ping()``.

    Requests on one client are answered in the order they are awaited; use
    several clients for concurrency.
    """

    _stream: anyio.abc.SocketStream | None = None

    @functools.cached_property
    def _lock(self) -> anyio.Lock:
        return anyio.Lock()

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
        request_id = self._numbered(request)
        try:
            await self._stream.send(codec.encode_frame(request))
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            await self.aclose()
            raise DaemonUnavailable(str(self.socket_path), str(exc) or "broken pipe") from None
        return request_id

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

    @overload
    async def call(self, request: Returning[R]) -> R: ...
    @overload
    async def call(self, request: Request, result_type: type[T]) -> T: ...
    async def call(self, request: Request, result_type: type[Any] | None = None) -> Any:
        """Send ``request`` and wait for its result (of the request's result type)."""
        expected = RESULT_TYPES[type(request)] if result_type is None else result_type
        async with self._lock:
            request_id = await self.send(request)
            while True:
                frame = await self.read_frame(self._timeout_s)
                if frame.push is None and frame.id == request_id:
                    return codec.result_of(frame, expected)
                if frame.push is None and frame.id is None and frame.ok is False:
                    codec.result_of(frame, expected)

    async def hello(self) -> HelloResult:
        self.server = checked_hello(await self.call(hello_request()))
        return self.server

    async def subscribe(self, **filters: Any) -> AsyncIterator[tuple[str, msgspec.Raw]]:
        """Yield ``(cursor, event)`` for each pushed line; the connection is dedicated."""
        result = await self.call(Subscribe(**filters))
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
