"""Blocking client over a Unix socket. No anyio, no asyncio."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar, overload

import msgspec

from gastown_client import codec, paths
from gastown_client.errors import DaemonUnavailable, RequestRejected
from gastown_client.operations import Operations, SyncCaller, checked_hello, hello_request
from gastown_client.protocol import (
    RESULT_TYPES,
    Frame,
    HelloResult,
    QueryResult,
    Request,
    Returning,
    Subscribe,
    SubscribeResult,
)

R = TypeVar("R")
T = TypeVar("T")

DEFAULT_CONNECT_TIMEOUT_S = 2.0
DEFAULT_REPLY_TIMEOUT_S = 30.0


def resolve_socket(
    socket_path: str | Path | None = None, town_root: str | Path | None = None
) -> Path:
    if socket_path is not None:
        return Path(socket_path)
    return paths.socket_path(paths.find_town_root(town_root))


class ClientBase(Operations):
    """What both clients hold: where the daemon is, the reply timeout, the frame
    reader and the next request id; and the ops' methods, from ``Operations``."""

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
        self._next_id = 0
        self.server: HelloResult | None = None

    def _numbered(self, request: Request) -> int | str | None:
        """The request's id, the next number when it has none."""
        if request.id is None:
            self._next_id += 1
            request.id = self._next_id
        return request.id


class Client(ClientBase, SyncCaller):
    """One connection; requests are sent and answered in order.

    >>> with Client() as c:
    ...     c.ping()

    The ops' methods (``ping``, ``emit``, ...) come from ``Operations``; any
    request also goes through ``call``: ``c.call(Ping())`` returns a ``PingResult``.
    """

    _sock: socket.socket | None = None

    # -- connection --------------------------------------------------------

    def connect(self) -> Client:
        if self._sock is not None:
            return self
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self._connect_timeout_s)
        try:
            sock.connect(str(self.socket_path))
        except (OSError, TimeoutError) as exc:
            sock.close()
            raise DaemonUnavailable(str(self.socket_path), _reason(exc)) from None
        sock.settimeout(self._timeout_s)
        self._sock = sock
        return self

    def set_timeout(self, timeout_s: float | None) -> None:
        """Reply timeout from now on (None: wait forever, for subscriptions)."""
        self._timeout_s = timeout_s
        if self._sock is not None:
            self._sock.settimeout(timeout_s)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Client:
        return self.connect()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------

    def send(self, request: Request) -> int | str | None:
        """Send one request without waiting (pipelining); returns its id."""
        request_id = self._numbered(request)
        sock = self.connect()._sock
        assert sock is not None
        try:
            sock.sendall(codec.encode_frame(request))
        except OSError as exc:
            self.close()
            raise DaemonUnavailable(str(self.socket_path), _reason(exc)) from None
        return request_id

    def read_frame(self) -> Frame:
        """The next frame from the daemon, reply or push."""
        sock = self._sock
        if sock is None:
            raise DaemonUnavailable(str(self.socket_path), "not connected")
        while True:
            frame = self._reader.next_frame()
            if frame is not None:
                return codec.decode_frame(frame)
            try:
                data = sock.recv(1 << 16)
            except (OSError, TimeoutError) as exc:
                self.close()
                raise DaemonUnavailable(str(self.socket_path), _reason(exc)) from None
            if not data:
                self.close()
                raise DaemonUnavailable(str(self.socket_path), "connection closed by daemon")
            self._reader.feed(data)

    @overload
    def call(self, request: Returning[R]) -> R: ...
    @overload
    def call(self, request: Request, result_type: type[T]) -> T: ...
    def call(self, request: Request, result_type: type[Any] | None = None) -> Any:
        """Send ``request`` and wait for its result (of the request's result type)."""
        expected = RESULT_TYPES[type(request)] if result_type is None else result_type
        request_id = self.send(request)
        while True:
            frame = self.read_frame()
            if frame.push is None and frame.id == request_id:
                return codec.result_of(frame, expected)
            if frame.push is None and frame.id is None and frame.ok is False:
                # A connection-level error (forbidden, too_large) has no id.
                codec.result_of(frame, expected)

    # -- operations that are more than a call --------------------------------

    def hello(self) -> HelloResult:
        self.server = checked_hello(self.call(hello_request()))
        return self.server

    def query_events(self, **filters: Any) -> list[dict[str, Any]]:
        """Like ``query`` but with each event decoded to a dict."""
        result: QueryResult = self.query(**filters)
        return [msgspec.json.decode(raw) for raw in result.events]

    def subscribe(self, **filters: Any) -> Subscription:
        """Start a subscription; iterate the result for ``(cursor, event)`` pairs.

        The connection is then dedicated to the subscription.
        """
        result = self.call(Subscribe(**filters))
        return Subscription(self, result)


class Subscription:
    def __init__(self, client: Client, result: SubscribeResult) -> None:
        self.client = client
        self.id = result.subscription
        self.cursor = result.cursor
        self.resync = result.resync

    def __iter__(self) -> Iterator[tuple[str, msgspec.Raw]]:
        while True:
            frame = self.client.read_frame()
            if frame.push == "event" and frame.subscription == self.id:
                assert frame.cursor is not None
                self.cursor = frame.cursor
                yield frame.cursor, frame.event
            elif frame.push in ("overflow", "end") and frame.subscription == self.id:
                raise RequestRejected(frame.push, frame.message or "subscription ended")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, FileNotFoundError):
        return "no socket (is the daemon running?)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (stale socket; is the daemon running?)"
    return exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
