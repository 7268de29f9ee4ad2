"""The listener: accepts connections on the daemon's socket, runs their requests as tasks of
its own task group, writes each loop turn's replies in one write per connection, and drains
on stop. The connections themselves are ``socket_server.Connection``."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import anyio
import anyio.abc
import structlog
from anyio.abc import SocketAttribute

from gastown_client.protocol import Request
from gastownd.metrics.buckets import RequestMeter
from gastownd.process.config import ServerConfig, parse_duration
from gastownd.process.refusals import DaemonError
from gastownd.server.ratelog import rate_limited
from gastownd.server.socket_server import (
    INTERNAL_ERROR,
    Connection,
    FollowUp,
    Handler,
    Inline,
)

log = structlog.get_logger("gastownd.server")


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
        self.meter.refused["evicted_idle"] += 1
        oldest._run(lambda: oldest._evict(self.config.max_connections))
        return True

    def forget(self, conn: Connection) -> None:
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
            outcome = INTERNAL_ERROR
        self.meter.finished(type(request), started, outcome)
        if not isinstance(outcome, FollowUp):
            conn._run(lambda: conn._finish(request_id, outcome))
            return
        result = outcome
        # A subscription's pump keeps the connection open, not a request slot.
        conn.state.pumps += 1
        conn._run(lambda: conn._finish(request_id, result.result))
        conn._flush()
        try:
            await result.task()
        finally:
            conn.state.pumps -= 1
            conn._run(conn._resume)
