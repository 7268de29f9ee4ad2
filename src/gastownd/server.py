"""The socket server: connections, framing, limits, dispatch, replies.

The only module that touches client connections. Each connection reads
frames, runs each request as a task of the connection's own task group
(pipelining, bounded by ``max_inflight_per_connection``) and writes replies
under a send lock, tagged with the request's ``id``. This is also the one
place that turns exceptions into error replies: ``DaemonError`` gives its
code, anything else ``internal`` plus one logged traceback.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import structlog
from anyio.abc import SocketAttribute

from gastown_client import codec
from gastown_client.protocol import ErrorCode, OkReply, Request
from gastownd.config import ServerConfig, parse_duration
from gastownd.errors import DaemonError
from gastownd.instance import peer_uid

log = structlog.get_logger("gastownd.server")

Handler = Callable[[Request, "Connection"], Awaitable[Any]]


class FollowUp:
    """A handler's result plus work to start once the reply is sent (a subscription's pump)."""

    def __init__(self, result: Any, task: Callable[[], Awaitable[None]]) -> None:
        self.result = result
        self.task = task


class Connection:
    """One client connection, as the handlers see it."""

    _ids = itertools.count(1)

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.id = next(self._ids)
        self.stream = stream
        self._send_lock = anyio.Lock(fast_acquire=True)
        self.closed = False
        # Called when the peer stops sending (subscriptions end here).
        self.on_close: list[Callable[[], None]] = []
        self.subscriptions: set[int] = set()

    async def send(self, message: Any) -> None:
        """Send one frame; a gone peer marks the connection closed instead of raising."""
        await self.send_many([message])

    async def send_many(self, messages: list[Any]) -> None:
        """Send frames in one write; a gone peer marks the connection closed."""
        if self.closed or not messages:
            return
        data = b"".join(codec.encode_frame(m) for m in messages)
        async with self._send_lock:
            try:
                await self.stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                self.closed = True

    async def abort(self) -> None:
        """Close from our side (slow subscriber, shutdown)."""
        self.closed = True
        await self.stream.aclose()


class Server:
    def __init__(
        self,
        config: ServerConfig,
        handler: Handler,
        expected_uid: int,
        instant: tuple[type[Request], ...] = (),
    ) -> None:
        self.config = config
        self.handler = handler
        # Requests that never wait long: answered without a task of their own.
        self.instant = instant
        self.expected_uid = expected_uid
        self.connections: set[Connection] = set()
        self.requests = 0
        self._partial_timeout_s = parse_duration(config.partial_frame_timeout)
        self._accept_scope = anyio.CancelScope()
        self._reader_scopes: set[anyio.CancelScope] = set()
        self._stopping = False
        self._drained = anyio.Event()

    async def serve(
        self,
        listener: anyio.abc.SocketListener,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept until ``stop()``, then wait for every connection to drain."""
        async with listener, anyio.create_task_group() as connections:
            task_status.started()
            with self._accept_scope:
                while True:
                    stream = await listener.accept()
                    connections.start_soon(self._run_connection, stream)

    def stop(self) -> None:
        """Stop accepting and stop reading new requests; in-flight ones finish."""
        self._stopping = True
        self._accept_scope.cancel()
        for scope in list(self._reader_scopes):
            scope.cancel()

    async def wait_drained(self) -> None:
        """After ``stop()``: return once every connection has finished."""
        if self.connections:
            await self._drained.wait()

    async def _run_connection(self, stream: anyio.abc.SocketStream) -> None:
        conn = Connection(stream)
        log_ctx = structlog.contextvars.bound_contextvars(conn=conn.id)
        with log_ctx:
            try:
                if not await self._admit(conn):
                    return
                self.connections.add(conn)
                log.debug("connection_opened")
                async with anyio.create_task_group() as inflight:
                    try:
                        await self._read_requests(conn, inflight)
                    finally:
                        for callback in conn.on_close:
                            callback()
            finally:
                self.connections.discard(conn)
                if self._stopping and not self.connections:
                    self._drained.set()
                with anyio.CancelScope(shield=True):
                    await stream.aclose()
                log.debug("connection_closed")

    async def _admit(self, conn: Connection) -> bool:
        raw = conn.stream.extra(SocketAttribute.raw_socket)
        try:
            uid = peer_uid(raw)
        except OSError:
            uid = None
        if uid is not None and uid != self.expected_uid:
            log.warning("connection_refused", reason="foreign_uid", peer_uid=uid)
            await conn.send(
                codec.error_reply(
                    None,
                    ErrorCode.FORBIDDEN,
                    f"uid {uid} may not use this daemon (owned by uid {self.expected_uid})",
                )
            )
            return False
        if len(self.connections) >= self.config.max_connections:
            log.warning("connection_refused", reason="too_many_connections")
            await conn.send(
                codec.error_reply(
                    None,
                    ErrorCode.BUSY,
                    f"too many connections (max {self.config.max_connections}); retry later",
                )
            )
            return False
        if self._stopping:
            await conn.send(codec.error_reply(None, ErrorCode.SHUTTING_DOWN, "daemon is stopping"))
            return False
        return True

    async def _read_requests(self, conn: Connection, inflight: anyio.abc.TaskGroup) -> None:
        reader = codec.FrameReader(self.config.max_frame_bytes)
        limiter = anyio.Semaphore(self.config.max_inflight_per_connection, fast_acquire=True)
        scope = anyio.CancelScope()
        self._reader_scopes.add(scope)
        if self._stopping:
            scope.cancel()
        # A frame must arrive whole within partial_frame_timeout of its first byte:
        # trickling one byte at a time does not keep a connection alive.
        frame_deadline: float | None = None
        try:
            with scope:
                while not conn.closed:
                    try:
                        frame = reader.next_frame()
                    except codec.FrameTooLarge as exc:
                        await conn.send(codec.error_reply(None, ErrorCode.TOO_LARGE, str(exc)))
                        frame_deadline = None
                        continue
                    if frame is None:
                        if not reader.pending:
                            frame_deadline = None
                        elif frame_deadline is None:
                            frame_deadline = anyio.current_time() + self._partial_timeout_s
                        data = await self._receive(conn, reader.pending, frame_deadline)
                        if data is None:
                            return
                        reader.feed(data)
                        continue
                    frame_deadline = None
                    if not frame.strip():
                        continue
                    self.requests += 1
                    try:
                        request = codec.decode_request(frame)
                    except codec.BadRequest as exc:
                        await conn.send(codec.error_reply(exc.request_id, exc.code, exc.message))
                        continue
                    if isinstance(request, self.instant):
                        # Quick ops are answered in line: no task to start.
                        await self._answer(conn, request)
                        continue
                    await limiter.acquire()
                    # Tasks start in spawn order, so each handler's synchronous
                    # prefix (where an emit is queued) keeps the request order.
                    inflight.start_soon(self._run_request, conn, request, limiter)
        finally:
            self._reader_scopes.discard(scope)

    async def _receive(
        self, conn: Connection, pending: int, frame_deadline: float | None
    ) -> bytes | None:
        """Next bytes, or None at EOF or when a partial frame is past its deadline."""
        if frame_deadline is None:  # the common case: no cancel scope to set up
            return await self._receive_now(conn)
        with anyio.move_on_after(frame_deadline - anyio.current_time()):
            return await self._receive_now(conn)
        await conn.send(
            codec.error_reply(
                None,
                ErrorCode.TIMEOUT,
                f"incomplete frame ({pending} bytes) stalled for "
                f"{self._partial_timeout_s:g}s; closing",
            )
        )
        log.info("connection_timed_out", pending_bytes=pending)
        return None

    async def _receive_now(self, conn: Connection) -> bytes | None:
        try:
            return await conn.stream.receive(65536)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return None

    async def _run_request(
        self, conn: Connection, request: Request, limiter: anyio.Semaphore
    ) -> None:
        released = False

        def release_once() -> None:
            nonlocal released
            if not released:
                released = True
                limiter.release()

        try:
            await self._answer(conn, request, release_once)
        finally:
            release_once()

    async def _answer(
        self, conn: Connection, request: Request, release: Callable[[], None] | None = None
    ) -> None:
        """Run one request and send its reply; a FollowUp's task runs after the reply."""
        request_id = request.id
        try:
            result = await self.handler(request, conn)
            if isinstance(result, FollowUp):
                await conn.send(OkReply(id=request_id, result=result.result))
                if release is not None:
                    release()  # a subscription's pump is not a request in flight
                await result.task()
                return
            reply: Any = OkReply(id=request_id, result=result)
        except DaemonError as exc:
            reply = codec.error_reply(request_id, exc.code, exc.message)
        except Exception:
            log.exception("request_failed", request_id=request_id, op=type(request).__name__)
            reply = codec.error_reply(
                request_id, ErrorCode.INTERNAL, "internal error; see the daemon's log"
            )
        await conn.send(reply)
