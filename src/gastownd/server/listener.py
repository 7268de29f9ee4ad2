"""The listener: accepts connections on the daemon's socket, runs their requests as tasks of
its own task group, writes each loop turn's replies in one write per connection, and drains
on stop. The connections themselves are ``socket_server.Connection``."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.abc
import structlog
from anyio.abc import SocketAttribute

from gastown_client.protocol import Request
from gastownd.metrics.buckets import RequestMeter
from gastownd.process.config import ServerConfig, parse_duration
from gastownd.process.refusals import DaemonError
from gastownd.server.connection_state import Refusal, RequestBytes, admission
from gastownd.server.ratelog import rate_limited
from gastownd.server.socket_server import (
    INTERNAL_ERROR,
    Connection,
    FollowUp,
    Handler,
    InlineHandler,
    PendingReply,
)

log = structlog.get_logger("gastownd.server")


class Server:
    def __init__(
        self,
        config: ServerConfig,
        handler: Handler,
        expected_uid: int,
        inline: Mapping[type[Request], InlineHandler],
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
        self.request_bytes = RequestBytes(config.max_inflight_bytes)
        self._tasks: anyio.abc.TaskGroup | None = None
        self._stop = anyio.Event()
        self._drained = anyio.Event()
        self._to_flush: list[Connection] = []
        self._replying = False  # inside ``replying``: it flushes at its end
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
                    conn.abort_transport()
                with anyio.CancelScope(shield=True):
                    await listener.aclose()

    def stop(self) -> None:
        """Stop accepting and stop reading new requests; in-flight ones finish."""
        self.stopping = True
        self._stop.set()
        for conn in list(self.connections):
            conn.end_input()
        if not self.connections:
            self._drained.set()

    async def wait_drained(self) -> None:
        """After ``stop()``: return once every connection has finished."""
        if self.connections:
            await self._drained.wait()

    def admit(self, conn: Connection, uid: int | None) -> Refusal | None:
        """Serve a new connection, or say why not (counted and logged here)."""
        refusal = admission(
            uid=uid,
            expected_uid=self.expected_uid,
            stopping=self.stopping,
            max_connections=self.config.max_connections,
            full_and_none_idle=lambda: self.at_limit() and not self.evict_idle(),
        )
        if refusal is None:
            self.connections.add(conn)
            log.debug("connection_opened")
            return None
        if refusal.reason == "foreign_uid":
            self.warnings.warning("connection_refused", refusal.reason, peer_uid=uid)
        elif refusal.reason == "too_many_connections":
            self.warnings.warning(
                "connection_refused",
                refusal.reason,
                max_connections=self.config.max_connections,
            )
        self.meter.refused[refusal.reason] += 1
        return refusal

    def rejected(self, rejected: Refusal) -> None:
        """Count a frame or a connection refused; a request's is logged (rate-limited)."""
        self.meter.refused[rejected.reason] += 1
        if rejected.counted:
            self.requests += 1
            self.warnings.warning("request_rejected", rejected.code, message=rejected.message[:200])
        elif rejected.reason == "frame_too_large":
            self.warnings.warning("request_rejected", rejected.code)

    def at_limit(self) -> bool:
        """``max_connections`` are open (connections being closed do not count)."""
        limit = self.config.max_connections
        if len(self.connections) < limit:
            return False
        return sum(1 for conn in self.connections if not conn.state.closing) >= limit

    def evict_idle(self) -> bool:
        """Close the connection idle longest, if one is idle; False when none is.

        Subscribers, requests in flight and partial frames are never cut for
        idleness: only a connection that holds nothing loses nothing.
        """
        idle = [conn for conn in self.connections if conn.idle]
        if not idle:
            return False
        oldest = min(idle, key=lambda conn: conn.state.last_active)
        self.warnings.warning("connection_evicted", "idle_at_limit", idle_conn=oldest.id)
        oldest.evict(self.config.max_connections)
        return True

    def forget(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if self.stopping and not self.connections:
            self._drained.set()

    def request_bytes_freed(self) -> None:
        """Under the limit again: the connections that waited for it take requests again
        (in no particular order; each takes what the limit then allows)."""
        for conn in list(self.connections):
            if not self.request_bytes.waiting or self.request_bytes.full:
                return
            conn.take_again()

    def schedule_flush(self, conn: Connection) -> None:
        """Write ``conn``'s queued replies at the end of this loop turn (or of the group
        commit being acknowledged, see ``replying``), in one write."""
        if not self._to_flush and not self._replying:
            assert self._loop is not None
            self._loop.call_soon(self.flush_now)
        self._to_flush.append(conn)

    def replying(self, work: Callable[[], None]) -> None:
        """Run ``work`` (a group commit's outcome), then write the replies it queued: they
        leave in the callback that made them, not one loop turn later behind new requests."""
        self._replying = True
        try:
            work()
        finally:
            self._replying = False
            self.flush_now()

    def flush_now(self) -> None:
        """Write every queued reply now, one write per connection."""
        connections, self._to_flush = self._to_flush, []
        for conn in connections:
            conn.flush()

    def take(self, conn: Connection, request: Request) -> None:
        """Answer ``request`` in the connection's callback if its op allows (``inline``),
        else in a task of its own: tasks start in spawn order, so each handler's
        synchronous prefix (where an emit is queued) keeps the request order."""
        self.requests += 1
        handler = self.inline.get(type(request))
        if handler is None:
            assert self._tasks is not None
            self._tasks.start_soon(self._run_request, conn, request)
            return
        reply = PendingReply(conn, self.meter, type(request), request.id, time.perf_counter())
        try:
            handler(request, reply)
        except DaemonError as exc:
            reply(exc)
        except Exception:
            log.exception("request_failed", request_id=request.id, op=type(request).__name__)
            reply(INTERNAL_ERROR)

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
            outcome = INTERNAL_ERROR
        self.meter.finished(type(request), started, outcome)
        if not isinstance(outcome, FollowUp):
            conn.finish(request_id, outcome)
            return
        # A subscription's pump keeps the connection open, not a request slot.
        conn.state.pump_started()
        conn.finish(request_id, outcome.result)
        conn.flush()
        try:
            await outcome.task()
        finally:
            conn.pump_ended()
