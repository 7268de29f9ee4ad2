"""The outbox: event-log lines an op caused, appended after its transaction commits.

An op's lines are stored in the outbox in the same SQLite transaction as its
effects, then appended to the event log and cleared. A crash between the
commit and the append replays the outbox at start; a line already in the log
(found by the index) is not written twice. Lines the log refuses (disk full)
stay in the outbox and are retried after the next op.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import anyio
import msgspec
import structlog

from gastownd.core.events import encode_line, format_ts
from gastownd.core.query import compile_filter
from gastownd.core.wisp import EmitLine
from gastownd.eventlog import EventLog
from gastownd.process.refusals import DaemonError
from gastownd.store import Store

log = structlog.get_logger("gastownd.sessions")

T = TypeVar("T")


class StoreCall(Protocol):
    """How the sessions call the store: in its single worker thread (``SessionRecorder.db``)."""

    def __call__(self, func: Callable[..., T], *args: Any) -> Awaitable[T]: ...


class Outbox(msgspec.Struct, eq=False):
    store: Store
    db: StoreCall
    eventlog: EventLog
    source: str
    # Lines are waiting that the log refused, or that a crash left: flushed on each op.
    stuck: bool = False

    async def replay(self) -> None:
        """At start: append the lines a crash left behind, unless the log has them already."""
        pending = await self.db(self.store.pending_lines)
        if not pending:
            return
        # The replay looks for its lines in the log: in all of it.
        await self.eventlog.wait_indexed()
        log.info("outbox_replayed", lines=len(pending))
        self.stuck = True
        await self.flush()

    async def flush(self) -> None:
        """Append every pending line, oldest first; a failure leaves them for next time.

        The op that caused a line is already durable in the store, so its
        reply does not depend on the log: the line follows as soon as the log
        takes it again (at the next op or the next start).
        """
        pending = await self.db(self.store.pending_lines)
        try:
            await self._emit(pending, replay=self.stuck)
            self.stuck = False
        except DaemonError as exc:
            self.stuck = True
            log.warning("outbox_pending", lines=len(pending), error=exc.message)

    async def _emit(self, lines: list[tuple[int, EmitLine]], *, replay: bool) -> None:
        done: list[int] = []
        try:
            for outbox_id, line in lines:
                if not (replay and self._already_logged(line)):
                    encoded = encode_line(
                        ts=format_ts(line.at),
                        source=self.source,
                        type=line.type,
                        actor=line.actor,
                        payload=line.payload,
                        visibility="feed",
                    )
                    await self.eventlog.append(encoded)
                done.append(outbox_id)
        finally:
            with anyio.CancelScope(shield=True):
                await self.db(self.store.lines_done, done)

    def _already_logged(self, line: EmitLine) -> bool:
        session = line.payload.get("session_id")
        if not isinstance(session, str):
            return False
        flt = compile_filter(types=[line.type], session=session)
        for position in self.eventlog.index.search(flt, 64):
            if line.type == "session_start":
                return True
            entry = self.eventlog.read_lines([position])[0]
            if str(line.payload.get("digest_id", "")).encode() in entry:
                return True
        return False
