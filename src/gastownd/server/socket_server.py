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
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

import anyio
import anyio.abc
import structlog

from gastown_client import codec
from gastown_client.protocol import ErrorCode, OkReply, Request
from gastownd.metrics.buckets import RequestMeter
from gastownd.process.config import ServerConfig
from gastownd.process.instance import peer_uid
from gastownd.process.refusals import DaemonError
from gastownd.server.connection_state import ConnectionState, admission
from gastownd.server.ratelog import RateLimitedLog

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


class ConnectionOwner(Protocol):
    """What a connection needs of the server that accepted it (``listener.Server``)."""

    config: ServerConfig
    expected_uid: int
    stopping: bool
    requests: int
    connections: set[Connection]
    partial_timeout_s: float
    meter: RequestMeter
    warnings: RateLimitedLog
    inline: Inline

    def at_limit(self) -> bool: ...
    def evict_idle(self) -> bool: ...
    def forget(self, conn: Connection) -> None: ...
    def schedule_flush(self, conn: Connection) -> None: ...
    def start_request(self, conn: Connection, request: Request) -> None: ...


class Connection(asyncio.Protocol):
    """One client connection, as the handlers see it."""

    _ids = itertools.count(1)

    def __init__(self, server: ConnectionOwner) -> None:
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
        self.state = ConnectionState(server.config.max_inflight_per_connection, time.monotonic())
        self._processing = False
        self._frame_timer: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._writable = anyio.Event()
        self._writable.set()

    @property
    def idle(self) -> bool:
        """Holding nothing a close would lose: no request, subscription or partial frame."""
        return self.state.idle(
            closed=self.closed,
            subscribed=bool(self.subscriptions),
            partial=bool(self._reader.pending),
            queued=bool(self._outgoing),
        )

    # ------------------------------------------------------------ asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not subclass asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)
        self._run(self._admit)

    def data_received(self, data: bytes) -> None:
        if self.state.input_ended:
            return  # still read, so that closing never finds unread bytes (a reset)
        self.state.received(time.monotonic())
        self._reader.feed(data)
        self._run(self._process)

    def eof_received(self) -> bool:
        self.state.eof = True
        if self.state.closing:
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
        self.server.forget(self)
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
        refusal = admission(
            uid=uid,
            expected_uid=server.expected_uid,
            stopping=server.stopping,
            max_connections=server.config.max_connections,
            full_and_none_idle=lambda: server.at_limit() and not server.evict_idle(),
        )
        if refusal is not None:
            if refusal.reason == "foreign_uid":
                server.warnings.warning("connection_refused", refusal.reason, peer_uid=uid)
            elif refusal.reason == "too_many_connections":
                server.warnings.warning(
                    "connection_refused",
                    refusal.reason,
                    max_connections=server.config.max_connections,
                )
            server.meter.refused[refusal.reason] += 1
            self.state.input_ended = True
            self._write(codec.encode_frame(codec.error_reply(None, refusal.code, refusal.message)))
            self._close()
            return
        server.connections.add(self)
        log.debug("connection_opened")

    def _process(self) -> None:
        """Handle the whole frames received, as far as the in-flight limit allows."""
        state = self.state
        if self._processing or state.input_ended:
            return
        self._processing = True
        reader = self._reader
        server = self.server
        try:
            while state.may_take():
                try:
                    frame = reader.next_frame()
                except codec.FrameTooLarge as exc:
                    server.warnings.warning("request_rejected", ErrorCode.TOO_LARGE)
                    server.meter.refused["frame_too_large"] += 1
                    self._queue(codec.error_reply(None, ErrorCode.TOO_LARGE, str(exc)))
                    continue
                if frame is None:
                    if state.eof:
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
                state.took()
                if not self._inline(request):
                    server.start_request(self, request)
        finally:
            self._processing = False
        transport = self._transport
        reading = state.reading()
        if transport is not None and reading is not None:
            if reading:
                transport.resume_reading()
            else:
                transport.pause_reading()
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
            reply(INTERNAL_ERROR)
        return True

    def _finish(self, request_id: int | str | None, result: Any) -> None:
        """A request's outcome: queue its reply, free its slot."""
        if isinstance(result, DaemonError):
            self._queue(codec.error_reply(request_id, result.code, result.message))
        else:
            self._queue(OkReply(id=request_id, result=result))
        self.state.answered(time.monotonic())
        self._resume()

    def _resume(self) -> None:
        if self._processing:
            return  # the loop in _process goes on by itself
        if self.state.input_ended:
            self._close_when_idle()
        else:
            self._process()

    def _end_input(self) -> None:
        """No more requests from this connection: end its subscriptions, close when idle."""
        if self.state.input_ended:
            return
        self.state.input_ended = True
        self._cancel_frame_timer()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()  # and drop what comes
        callbacks, self.on_close = self.on_close, []
        for callback in callbacks:
            callback()
        self._close_when_idle()

    def _close_when_idle(self) -> None:
        if self.state.done():
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
        state = self.state
        if state.closing or transport is None or transport.is_closing():
            return
        state.closing = True
        state.input_ended = True
        if state.eof or not transport.can_write_eof():
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
        if not self._reader.pending or self.state.input_ended:
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
        idle_s = time.monotonic() - self.state.last_active
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
INTERNAL_ERROR = DaemonError("internal error; see the daemon's log")
