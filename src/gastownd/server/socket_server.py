"""The socket server: connections, framing, limits, dispatch, replies.

The only module that touches client connections. Each connection is an
asyncio protocol: the event loop hands it the bytes it reads, it cuts them
into frames and decodes each request. A request the ``inline`` hook takes
(``ping``, ``hello``, ``unsubscribe``, and ``emit``, which the log's writer
completes later) costs no task; any other runs as a task of the server's own
task group (pipelining, bounded by ``max_inflight_per_connection``). Replies
are tagged with the request's ``id`` and queued per connection; everything
queued in one turn of the loop goes out in one write. This is also the one
place that turns exceptions into error replies: ``DaemonError`` gives its
code, anything else ``internal`` plus one logged traceback.

Limits: at ``max_connections`` a new client is still served: the connection
idle longest that has no request in flight, no subscription and no partial
frame is closed for it (with a ``timeout`` frame); only when none is idle is
the newcomer refused with ``busy``. Refusals and rejected frames are logged
once per cause and interval (``ratelog``), never once each.

Why protocols rather than anyio streams: a stream costs every request a few
loop turns (a read that pauses and resumes the transport, a task, a send),
which is most of what a ``ping`` or an ``emit`` costs. Tasks remain owned by
the task group that ``serve`` runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import anyio
import anyio.abc
import structlog
from anyio.abc import SocketAttribute

from gastown_client import codec
from gastown_client.protocol import ErrorCode, OkReply, Request
from gastownd.metrics.buckets import RequestMeter
from gastownd.process.config import ServerConfig, parse_duration
from gastownd.process.instance import peer_uid
from gastownd.process.refusals import DaemonError
from gastownd.server.ratelog import rate_limited

log = structlog.get_logger("gastownd.server")

Handler = Callable[[Request, "Connection"], Awaitable[Any]]
# How long a closed connection waits for its peer to close too (see ``_close``).
LINGER_S = 1.0
# Called with a result (or a ``DaemonError``) once; ``Reply`` sends it.
Reply = Callable[[Any], None]
# May answer a request without a task: True when it took the request (and
# will call ``reply`` exactly once, now or later), False to run it as a task.
Inline = Callable[[Request, "Connection", Reply], bool]


class FollowUp:
    """A handler's result plus work to start once the reply is sent (a subscription's pump)."""

    def __init__(self, result: Any, task: Callable[[], Awaitable[None]]) -> None:
        self.result = result
        self.task = task


class Connection(asyncio.Protocol):
    """One client connection, as the handlers see it."""

    _ids = itertools.count(1)

    def __init__(self, server: Server) -> None:
        self.id = next(self._ids)
        self.server = server
        self.closed = False
        # Called when the peer stops sending (subscriptions end here).
        self.on_close: list[Callable[[], None]] = []
        self.subscriptions: set[int] = set()
        self._transport: asyncio.Transport | None = None
        self._reader = codec.FrameReader(server.config.max_frame_bytes)
        self._context = contextvars.copy_context()
        self._context.run(structlog.contextvars.bind_contextvars, conn=self.id)
        self._in_context = False
        self._outgoing: list[bytes] = []
        self._inflight = 0  # requests taken and not yet answered
        self._pumps = 0  # subscription pumps still running
        self._processing = False
        self._eof = False  # the peer sent EOF: finish what it sent before
        self._input_ended = False  # no more requests will be read
        self._frame_timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._linger: asyncio.TimerHandle | None = None
        self._writable = anyio.Event()
        self._writable.set()
        # When the peer last sent bytes or was answered: who is closed first at the limit.
        self.last_active = time.monotonic()

    @property
    def idle(self) -> bool:
        """Holding nothing a close would lose: no request, subscription or partial frame."""
        return (
            not self._closing
            and not self.closed
            and self._inflight == 0
            and self._pumps == 0
            and not self.subscriptions
            and not self._reader.pending
            and not self._outgoing
        )

    # ------------------------------------------------------------ asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not subclass asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)
        self._run(self._admit)

    def data_received(self, data: bytes) -> None:
        if self._input_ended:
            return  # still read, so that closing never finds unread bytes (a reset)
        self.last_active = time.monotonic()
        self._reader.feed(data)
        self._run(self._process)

    def eof_received(self) -> bool:
        self._eof = True
        if self._closing:
            self._transport_close()
            return True
        self._run(self._process)
        return True  # keep the transport open: requests in flight still answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._linger is not None:
            self._linger.cancel()
        self._writable.set()
        self._run(self._end_input)
        self.server._forget(self)
        log.debug("connection_closed")

    def pause_writing(self) -> None:
        self._writable = anyio.Event()

    def resume_writing(self) -> None:
        self._writable.set()

    # ------------------------------------------------------------ for handlers

    async def send(self, message: Any) -> None:
        """Send one frame; a gone peer marks the connection closed instead of raising."""
        await self.send_many([message])

    async def send_many(self, messages: list[Any]) -> None:
        """Send frames in one write, waiting while the peer does not read."""
        if self.closed or not messages:
            return
        self._flush()
        self._write(b"".join(codec.encode_frame(m) for m in messages))
        await self._writable.wait()

    async def abort(self) -> None:
        """Close from our side (slow subscriber, shutdown), after what was sent."""
        self._close()

    # ------------------------------------------------------------ reading

    def _run(self, work: Callable[[], None]) -> None:
        """Run ``work`` with this connection's log context (entered once at a time)."""
        if self._in_context:
            work()
            return
        self._in_context = True
        try:
            self._context.run(work)
        finally:
            self._in_context = False

    def _admit(self) -> None:
        server = self.server
        raw = self._transport.get_extra_info("socket") if self._transport else None
        try:
            uid = peer_uid(raw) if raw is not None else None
        except OSError:
            uid = None
        refusal: tuple[str, str] | None = None
        if uid is not None and uid != server.expected_uid:
            server.warnings.warning("connection_refused", "foreign_uid", peer_uid=uid)
            server.meter.refused["foreign_uid"] += 1
            refusal = (
                ErrorCode.FORBIDDEN,
                f"uid {uid} may not use this daemon (owned by uid {server.expected_uid})",
            )
        elif server.at_limit() and not server.evict_idle():
            server.warnings.warning(
                "connection_refused",
                "too_many_connections",
                max_connections=server.config.max_connections,
            )
            server.meter.refused["too_many_connections"] += 1
            refusal = (
                ErrorCode.BUSY,
                f"too many connections (max {server.config.max_connections}, none idle); "
                "retry later",
            )
        elif server.stopping:
            refusal = (ErrorCode.SHUTTING_DOWN, "daemon is stopping")
            server.meter.refused["shutting_down"] += 1
        if refusal is not None:
            self._input_ended = True
            self._write(codec.encode_frame(codec.error_reply(None, *refusal)))
            self._close()
            return
        server.connections.add(self)
        log.debug("connection_opened")

    def _process(self) -> None:
        """Handle the whole frames received, as far as the in-flight limit allows."""
        if self._processing or self._input_ended:
            return
        self._processing = True
        reader = self._reader
        server = self.server
        limit = server.config.max_inflight_per_connection
        try:
            while not self._input_ended and self._inflight < limit:
                try:
                    frame = reader.next_frame()
                except codec.FrameTooLarge as exc:
                    server.warnings.warning("request_rejected", ErrorCode.TOO_LARGE)
                    server.meter.refused["frame_too_large"] += 1
                    self._queue(codec.error_reply(None, ErrorCode.TOO_LARGE, str(exc)))
                    continue
                if frame is None:
                    if self._eof:
                        self._end_input()
                    break
                if not frame.strip():
                    continue
                server.requests += 1
                try:
                    request = codec.decode_request(frame)
                except codec.BadRequest as exc:
                    server.warnings.warning("request_rejected", exc.code, message=exc.message[:200])
                    server.meter.refused[exc.code] += 1
                    self._queue(codec.error_reply(exc.request_id, exc.code, exc.message))
                    continue
                self._inflight += 1
                if not self._inline(request):
                    server.start_request(self, request)
        finally:
            self._processing = False
        transport = self._transport
        if transport is not None and not self._input_ended and not self._eof:
            # At the limit, stop reading: the kernel's buffer fills and the client
            # waits, instead of our memory growing.
            if self._inflight >= limit:
                transport.pause_reading()
            else:
                transport.resume_reading()
        self._watch_partial_frame()

    def _inline(self, request: Request) -> bool:
        request_id = request.id
        answered = False
        started = time.perf_counter()

        def reply(result: Any) -> None:
            nonlocal answered
            if not answered:
                answered = True
                self.server.meter.finished(type(request), started, result)
                self._run(lambda: self._finish(request_id, result))

        try:
            return self.server.inline(request, self, reply)
        except DaemonError as exc:
            reply(exc)
        except Exception:
            log.exception("request_failed", request_id=request_id, op=type(request).__name__)
            reply(_INTERNAL)
        return True

    def _finish(self, request_id: int | str | None, result: Any) -> None:
        """A request's outcome: queue its reply, free its slot."""
        if isinstance(result, DaemonError):
            self._queue(codec.error_reply(request_id, result.code, result.message))
        else:
            self._queue(OkReply(id=request_id, result=result))
        self._inflight -= 1
        self.last_active = time.monotonic()
        self._resume()

    def _resume(self) -> None:
        if self._processing:
            return  # the loop in _process goes on by itself
        if self._input_ended:
            self._close_when_idle()
        else:
            self._process()

    def _end_input(self) -> None:
        """No more requests from this connection: end its subscriptions, close when idle."""
        if self._input_ended:
            return
        self._input_ended = True
        self._cancel_frame_timer()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()  # and drop what comes
        callbacks, self.on_close = self.on_close, []
        for callback in callbacks:
            callback()
        self._close_when_idle()

    def _close_when_idle(self) -> None:
        if self._inflight == 0 and self._pumps == 0:
            self._close()

    # ------------------------------------------------------------ writing

    def _queue(self, message: Any) -> None:
        """Queue one frame; the end of this loop turn writes everything queued at once."""
        if self.closed:
            return
        if not self._outgoing:
            self.server.schedule_flush(self)
        self._outgoing.append(codec.encode_frame(message))

    def _flush(self) -> None:
        if self._outgoing:
            data = b"".join(self._outgoing)
            self._outgoing.clear()
            self._write(data)

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            self.closed = True
            return
        transport.write(data)

    def _close(self) -> None:
        """Send what is queued, then close without a reset.

        Closing a socket with unread input makes the kernel reset it, and a
        reset can destroy replies the client has not read yet. So: shut our
        side down (EOF after the queued bytes), go on reading and dropping
        what comes, and close once the peer closes too, or after
        ``LINGER_S``.
        """
        self._flush()
        self._cancel_frame_timer()
        self.closed = True
        transport = self._transport
        if self._closing or transport is None or transport.is_closing():
            return
        self._closing = True
        self._input_ended = True
        if self._eof or not transport.can_write_eof():
            transport.close()  # what is queued goes out first
            return
        transport.write_eof()
        transport.resume_reading()
        loop = asyncio.get_running_loop()
        self._linger = loop.call_later(LINGER_S, self._transport_close)

    def _transport_close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    # ------------------------------------------------------------ partial frames

    def _watch_partial_frame(self) -> None:
        """A frame must arrive whole within ``partial_frame_timeout`` of its first byte."""
        if not self._reader.pending or self._input_ended:
            self._cancel_frame_timer()
        elif self._frame_timer is None:
            loop = asyncio.get_running_loop()
            self._frame_timer = loop.call_later(
                self.server.partial_timeout_s, self._run, self._frame_timed_out
            )

    def _cancel_frame_timer(self) -> None:
        if self._frame_timer is not None:
            self._frame_timer.cancel()
            self._frame_timer = None

    def _evict(self, limit: int) -> None:
        """Make room at the connection limit: this idle connection is closed."""
        idle_s = time.monotonic() - self.last_active
        self._queue(
            codec.error_reply(
                None,
                ErrorCode.TIMEOUT,
                f"closed after {idle_s:.1f}s idle to make room: the daemon is at its "
                f"connection limit ({limit}); reconnect when needed",
            )
        )
        self._end_input()
        self._close()

    def _frame_timed_out(self) -> None:
        self._frame_timer = None
        pending = self._reader.pending
        if not pending or self.closed:
            return
        self._queue(
            codec.error_reply(
                None,
                ErrorCode.TIMEOUT,
                f"incomplete frame ({pending} bytes) stalled for "
                f"{self.server.partial_timeout_s:g}s; closing",
            )
        )
        log.info("connection_timed_out", pending_bytes=pending)
        self.server.meter.refused["partial_frame_timeout"] += 1
        self._end_input()
        self._close()


# The outcome of a request that failed with an unexpected exception.
_INTERNAL = DaemonError("internal error; see the daemon's log")


class Server:
    def __init__(
        self,
        config: ServerConfig,
        handler: Handler,
        expected_uid: int,
        inline: Inline,
    ) -> None:
        self.config = config
        self.handler = handler
        self.inline = inline
        self.expected_uid = expected_uid
        self.connections: set[Connection] = set()
        self.requests = 0
        self.meter = RequestMeter()
        self.stopping = False
        self.partial_timeout_s = parse_duration(config.partial_frame_timeout)
        self._tasks: anyio.abc.TaskGroup | None = None
        self._stop = anyio.Event()
        self._drained = anyio.Event()
        self._to_flush: list[Connection] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        # Refused connections, rejected frames and evictions: counted, logged per cause.
        self.warnings = rate_limited("gastownd.server")

    async def serve(
        self,
        listener: anyio.abc.SocketListener,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept until ``stop()``, then wait for every connection to drain."""
        sock: socket.socket = listener.extra(SocketAttribute.raw_socket)
        self._loop = asyncio.get_running_loop()
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            server = await self._loop.create_unix_server(
                lambda: Connection(self), sock=sock, backlog=socket.SOMAXCONN
            )
            try:
                task_status.started()
                await self._stop.wait()
                server.close()  # no new connections
                await self.wait_drained()
            finally:
                server.close()
                for conn in list(self.connections):
                    if conn._transport is not None:
                        conn._transport.abort()
                with anyio.CancelScope(shield=True):
                    await listener.aclose()

    def stop(self) -> None:
        """Stop accepting and stop reading new requests; in-flight ones finish."""
        self.stopping = True
        self._stop.set()
        for conn in list(self.connections):
            conn._run(conn._end_input)
        if not self.connections:
            self._drained.set()

    async def wait_drained(self) -> None:
        """After ``stop()``: return once every connection has finished."""
        if self.connections:
            await self._drained.wait()

    def at_limit(self) -> bool:
        """``max_connections`` are open (connections being closed do not count)."""
        limit = self.config.max_connections
        if len(self.connections) < limit:
            return False
        return sum(1 for conn in self.connections if not conn._closing) >= limit

    def evict_idle(self) -> bool:
        """Close the connection idle longest, if one is idle; False when none is.

        Subscribers, requests in flight and partial frames are never cut for
        idleness: only a connection that holds nothing loses nothing.
        """
        idle = [conn for conn in self.connections if conn.idle]
        if not idle:
            return False
        oldest = min(idle, key=lambda conn: conn.last_active)
        self.warnings.warning("connection_evicted", "idle_at_limit", idle_conn=oldest.id)
        self.meter.refused["evicted_idle"] += 1
        oldest._run(lambda: oldest._evict(self.config.max_connections))
        return True

    def _forget(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if self.stopping and not self.connections:
            self._drained.set()

    def schedule_flush(self, conn: Connection) -> None:
        """Write ``conn``'s queued replies at the end of this loop turn, in one write."""
        if not self._to_flush:
            assert self._loop is not None
            self._loop.call_soon(self._flush_all)
        self._to_flush.append(conn)

    def _flush_all(self) -> None:
        connections, self._to_flush = self._to_flush, []
        for conn in connections:
            conn._flush()

    def start_request(self, conn: Connection, request: Request) -> None:
        assert self._tasks is not None
        # Tasks start in spawn order, so each handler's synchronous prefix
        # (where an emit is queued) keeps the request order.
        self._tasks.start_soon(self._run_request, conn, request)

    async def _run_request(self, conn: Connection, request: Request) -> None:
        """Run one request and queue its reply; a FollowUp's task runs after the reply."""
        request_id = request.id
        started = time.perf_counter()
        outcome: Any
        try:
            outcome = await self.handler(request, conn)
        except DaemonError as exc:
            outcome = exc
        except Exception:
            log.exception("request_failed", request_id=request_id, op=type(request).__name__)
            outcome = _INTERNAL
        self.meter.finished(type(request), started, outcome)
        if not isinstance(outcome, FollowUp):
            conn._run(lambda: conn._finish(request_id, outcome))
            return
        result = outcome
        # A subscription's pump keeps the connection open, not a request slot.
        conn._pumps += 1
        conn._run(lambda: conn._finish(request_id, result.result))
        conn._flush()
        try:
            await result.task()
        finally:
            conn._pumps -= 1
            conn._run(conn._resume)
