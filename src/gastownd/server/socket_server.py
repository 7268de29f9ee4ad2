"""The socket server's connections: the asyncio shell around ``ConnectionState``.

The only module that touches client connections. Each connection is an
asyncio protocol: the event loop hands it the bytes it reads, it feeds them
to its ``ConnectionState`` (framing, decoding, limits and their decisions,
without I/O) and acts on the events it takes out: a request goes to the
server (``listener.Server.take``: inline, or a task of the server's task
group; pipelining is bounded by ``max_inflight_per_connection``), a rejected
frame is answered with its error, and reading pauses or resumes as the state
says. Replies are tagged with the request's ``id`` and queued per connection;
everything queued in one turn of the loop goes out in one write. The server
is the one place that turns exceptions into error replies: ``DaemonError``
gives its code, anything else ``internal`` plus one logged traceback.

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
import msgspec
import structlog

from gastown_client import codec
from gastown_client.protocol import OkReply, Request
from gastownd.metrics.buckets import RequestMeter
from gastownd.process.config import ServerConfig
from gastownd.process.instance import peer_uid
from gastownd.process.refusals import DaemonError
from gastownd.server.connection_state import ConnectionState, NoRequest, Refusal, RequestBytes

log = structlog.get_logger("gastownd.server")

Handler = Callable[[Request, "Connection"], Awaitable[Any]]
# How long a closed connection waits for its peer to close too (see ``_close``).
LINGER_S = 1.0


class PendingReply(msgspec.Struct):
    """One request answered without a task: the first call sends its reply, later ones
    are ignored. ``reply(result)`` sends a result or a ``DaemonError``; ``reply.frame(data)``
    a reply already rendered (an emit's: ``codec.emit_reply``). Either counts the request
    in the server's meter. A Struct, made in C: one is made per request (emits included)
    instead of a closure over five names."""

    conn: Connection
    meter: RequestMeter
    op: type
    request_id: int | str | None
    started: float  # perf_counter, for the latency histogram
    sent: bool = False

    def __call__(self, result: Any) -> None:
        if not self.sent:
            self.sent = True
            self.meter.finished(self.op, self.started, result)
            self.conn.finish(self.request_id, result)

    def frame(self, data: bytes) -> None:
        """Send a successful reply rendered by the handler (one frame, newline included)."""
        if not self.sent:
            self.sent = True
            self.meter.finished(self.op, self.started, None)
            self.conn.finish_frame(data)


# What a handler that replies itself takes (``reply: Reply``; see ``ops``).
Reply = PendingReply
# Answers a request without a task (its op's handler, bound to the daemon): it calls
# ``reply`` exactly once, now or later (``reply.conn`` is the request's connection).
InlineHandler = Callable[[Request, Reply], None]


class FollowUp:
    """A handler's result plus work to start once the reply is sent (a subscription's pump)."""

    def __init__(self, result: Any, task: Callable[[], Awaitable[None]]) -> None:
        self.result = result
        self.task = task


class ConnectionOwner(Protocol):
    """What a connection needs of the server that accepted it (``listener.Server``)."""

    config: ServerConfig
    partial_timeout_s: float
    request_bytes: RequestBytes

    def admit(self, conn: Connection, uid: int | None) -> Refusal | None: ...
    def rejected(self, rejected: Refusal) -> None: ...
    def forget(self, conn: Connection) -> None: ...
    def schedule_flush(self, conn: Connection) -> None: ...
    def take(self, conn: Connection, request: Request) -> None: ...
    def request_bytes_freed(self) -> None: ...


class Connection(asyncio.Protocol):
    """One client connection, as the handlers see it: the I/O shell of a ``ConnectionState``."""

    _ids = itertools.count(1)

    def __init__(self, server: ConnectionOwner) -> None:
        self.id = next(self._ids)
        self.server = server
        self.closed = False
        # Called when the peer stops sending (subscriptions end here).
        self.on_close: list[Callable[[], None]] = []
        self.subscriptions: set[int] = set()
        config = server.config
        self.state = ConnectionState(
            max_frame=config.max_frame_bytes,
            max_inflight=config.max_inflight_per_connection,
            partial_timeout_s=server.partial_timeout_s,
            now=time.monotonic(),
            budget=server.request_bytes,
        )
        self._transport: asyncio.Transport | None = None
        self._context = contextvars.copy_context()
        self._context.run(structlog.contextvars.bind_contextvars, conn=self.id)
        self._in_context = False
        self._outgoing: list[bytes] = []
        self._processing = False
        self._frame_timer: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._writable = anyio.Event()
        self._writable.set()

    @property
    def idle(self) -> bool:
        """Holding nothing a close would lose: no request, subscription or partial frame."""
        return self.state.idle(
            closed=self.closed, subscribed=bool(self.subscriptions), queued=bool(self._outgoing)
        )

    # ------------------------------------------------------------ asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not subclass asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)
        self._run(self._admit)

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state.input_ended:
            return  # still read, so that closing never finds unread bytes (a reset)
        state.receive_data(data, time.monotonic())
        self._run(self._process)

    def eof_received(self) -> bool:
        self.state.receive_eof()
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

    # ------------------------------------------------------------ for the server

    def finish(self, request_id: int | str | None, result: Any) -> None:
        """A request's outcome: queue its reply, free its slot."""
        if isinstance(result, DaemonError):
            reply: Any = codec.error_reply(request_id, result.code, result.message)
        else:
            reply = OkReply(id=request_id, result=result)
        self.finish_frame(codec.encode_frame(reply))

    def finish_frame(self, data: bytes) -> None:
        """A request's reply, rendered (newline included): queue it, free its slot."""
        if not self.closed:
            if not self._outgoing:
                self.server.schedule_flush(self)
            self._outgoing.append(data)
        state = self.state
        if state.answered(time.monotonic()):
            self._run(self._resume)
        if state.budget.waiting and not state.budget.full:
            self.server.request_bytes_freed()

    def pump_ended(self) -> None:
        """A subscription's pump is over (it kept the connection open, not a slot)."""
        self.state.pump_ended()
        self._run(self._resume)

    def end_input(self) -> None:
        """Read no more requests (the server stops); what is in flight still answers."""
        self._run(self._end_input)

    def take_again(self) -> None:
        """The server's request bytes fell under their limit: take the frames held back."""
        if self.state.budget_freed():
            self._run(self._resume)

    def evict(self, limit: int) -> None:
        """Make room at the connection limit: this idle connection is closed."""
        self._run(lambda: self._refuse(self.state.eviction_notice(time.monotonic(), limit)))

    def flush(self) -> None:
        """Write what is queued now, in one write."""
        self._flush()

    def abort_transport(self) -> None:
        if self._transport is not None:
            self._transport.abort()

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
        raw = self._transport.get_extra_info("socket") if self._transport else None
        try:
            uid = peer_uid(raw) if raw is not None else None
        except OSError:
            uid = None
        refusal = self.server.admit(self, uid)
        if refusal is not None:
            self.state.end_input()
            self._write(codec.encode_frame(codec.error_reply(None, refusal.code, refusal.message)))
            self._close()

    def _process(self) -> None:
        """Take the events of the bytes received, as far as the in-flight limit allows."""
        if self._processing:
            return  # the loop below goes on by itself
        self._processing = True
        state = self.state
        server = self.server
        try:
            while True:
                event = state.next_event()
                if isinstance(event, Request):
                    server.take(self, event)
                elif isinstance(event, Refusal):
                    server.rejected(event)
                    self._queue(codec.error_reply(event.request_id, event.code, event.message))
                else:
                    if event is NoRequest.ENDED:
                        self._end_input()
                    break
        finally:
            self._processing = False
        reading = state.reading_change()
        transport = self._transport
        if reading is not None and transport is not None:
            if reading:
                transport.resume_reading()
            else:
                transport.pause_reading()
        if state.partial_since is not None or self._frame_timer is not None:
            self._watch_partial_frame()

    def _resume(self) -> None:
        if self._processing:
            return  # the loop in _process goes on by itself
        if self.state.input_ended:
            self._close_when_idle()
        else:
            self._process()

    def _end_input(self) -> None:
        """No more requests from this connection: end its subscriptions, close when idle."""
        if not self.state.end_input():
            return
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
        state.end_input()
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

    def _refuse(self, rejected: Refusal) -> None:
        """End the connection with ``rejected`` as its last frame."""
        self.server.rejected(rejected)
        self._queue(codec.error_reply(None, rejected.code, rejected.message))
        self._end_input()
        self._close()

    # ------------------------------------------------------------ partial frames

    def _watch_partial_frame(self) -> None:
        """A frame must arrive whole within ``partial_frame_timeout`` (``frame_deadline``)."""
        deadline = self.state.frame_deadline()
        if deadline is None:
            self._cancel_frame_timer()
        elif self._frame_timer is None:
            delay = max(0.0, deadline - time.monotonic())
            loop = asyncio.get_running_loop()
            self._frame_timer = loop.call_later(delay, self._run, self._frame_timer_fired)

    def _cancel_frame_timer(self) -> None:
        if self._frame_timer is not None:
            self._frame_timer.cancel()
            self._frame_timer = None

    def _frame_timer_fired(self) -> None:
        self._frame_timer = None
        if self.closed:
            return
        timed_out = self.state.frame_timed_out(time.monotonic())
        if timed_out is None:
            self._watch_partial_frame()  # a later frame: its own deadline
            return
        log.info("connection_timed_out", pending_bytes=self.state.pending)
        self._refuse(timed_out)


# The outcome of a request that failed with an unexpected exception.
INTERNAL_ERROR = DaemonError("internal error; see the daemon's log")
