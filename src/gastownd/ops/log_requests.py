"""emit, query, subscribe, unsubscribe, prune."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from gastown_client import codec
from gastown_client.protocol import (
    Emit,
    EventFilter,
    Prune,
    PruneResult,
    Push,
    Query,
    QueryResult,
    Subscribe,
    SubscribeResult,
    Unsubscribe,
    UnsubscribeResult,
)
from gastownd.core.events import MAX_LINE_BYTES, encode_line, format_ts
from gastownd.core.index import Known
from gastownd.core.query import CompiledFilter, FilterError, compile_filter
from gastownd.eventlog import EventLog
from gastownd.eventlog.subscriptions import Published, Subscriptions
from gastownd.ops import townwide
from gastownd.ops.delivery import attach, pump, resume_point, send_local_backlog
from gastownd.process.daemon import Daemon
from gastownd.process.refusals import BadRequestError, DaemonError, NotFoundError, TooLargeError
from gastownd.server.socket_server import Connection, FollowUp, Reply
from gastownd.store.remote import RemoteEvent


def _parts(daemon: Daemon) -> tuple[EventLog, Subscriptions]:
    return daemon.eventlog, daemon.subscriptions


def submit_emit(daemon: Daemon, request: Emit, reply: Reply) -> None:
    """Queue the line for the writer; ``reply`` once it is durable, with the
    acknowledgement rendered here (``codec.emit_reply``)."""
    now = daemon.clock()
    payload = request.payload
    line = encode_line(
        ts=format_ts(now),
        source=daemon.config.eventlog.source,
        type=request.type,
        actor=request.actor,
        payload=payload,
        visibility=request.visibility,
    )
    if len(line) - 1 > MAX_LINE_BYTES:
        raise TooLargeError(
            f"the encoded line is {len(line) - 1} bytes; Gas Town's readers break past "
            f"{MAX_LINE_BYTES} - at $.payload"
        )
    session = payload.get("session_id")
    known = Known(
        request.type,
        request.actor,
        session if isinstance(session, str) and session else None,
        int(now),
    )
    eventlog = daemon.eventlog
    request_id = request.id

    def written(outcome: int | DaemonError) -> None:
        if type(outcome) is int:  # its seq: the cursor is ``eventlog.cursor(outcome)``
            reply.frame(codec.emit_reply(request_id, eventlog.seqmap.epoch, outcome, line[:-1]))
        else:
            reply(outcome)

    eventlog.submit(line, written, known)


def _compile(request: EventFilter) -> CompiledFilter:
    try:
        return compile_filter(
            types=request.types,
            actor=request.actor,
            session=request.session,
            since=request.since,
            until=request.until,
        )
    except FilterError as exc:
        raise BadRequestError(str(exc)) from None


async def query(daemon: Daemon, request: Query) -> QueryResult:
    eventlog, _ = _parts(daemon)
    flt = _compile(request)
    scope = townwide.scope_of(daemon, request)
    if scope is not None:
        return await townwide.query(daemon, request, flt, scope)
    # Waits (bounded) for a background index; says so if it answers without it.
    found = await eventlog.query(flt, request.limit, request.oldest_first, archive=request.archive)
    return QueryResult(
        events=[msgspec.Raw(line) for line in found.lines],
        cursor=eventlog.head_cursor(),
        indexing=eventlog.indexing,
        archive_unreadable=found.unreadable_days or None,
    )


async def subscribe(daemon: Daemon, request: Subscribe, conn: Connection) -> FollowUp:
    eventlog, subscriptions = _parts(daemon)
    flt = _compile(request)
    if request.cursor is not None:
        # A backlog from a cursor needs every line: wait for a background index (which
        # is finite work) rather than miss what it has not reached.
        await eventlog.wait_indexed()
    scope = townwide.scope_of(daemon, request)
    if scope is not None:
        return await townwide.subscribe(daemon, request, conn, flt, scope)
    head = eventlog.index.next_seq() - 1
    after, from_archive, resync = resume_point(eventlog, request.cursor)
    # From here to the FollowUp nothing awaits: the backlog and the live
    # queue split the log at exactly this point, with no gap and no overlap.
    backlog = eventlog.backlog(flt, after, head, from_archive=from_archive)
    subscriber = attach(subscriptions, conn, flt, None, head)
    result = SubscribeResult(
        subscription=subscriber.id, cursor=eventlog.head_cursor(), resync=resync
    )

    def render(items: Sequence[Published | RemoteEvent]) -> list[Push]:
        return [
            Push(
                push="event",
                subscription=subscriber.id,
                cursor=eventlog.cursor(item.seq),
                event=msgspec.Raw(item.line),
            )
            for item in items
            if isinstance(item, Published)
        ]

    async def send_backlog() -> None:
        await send_local_backlog(backlog, subscriber, conn, render)

    return FollowUp(result, lambda: pump(subscriptions, subscriber, conn, send_backlog, render))


def unsubscribe(daemon: Daemon, request: Unsubscribe, conn: Connection) -> UnsubscribeResult:
    _, subscriptions = _parts(daemon)
    if request.subscription not in conn.subscriptions:
        raise NotFoundError(f"no subscription {request.subscription} on this connection")
    subscriptions.remove(request.subscription)
    return UnsubscribeResult(subscription=request.subscription)


async def prune(daemon: Daemon, request: Prune) -> PruneResult:
    from gastownd.eventlog import pruner  # not at start: no first answer needs it

    return await pruner.prune_now(daemon, dry_run=request.dry_run)
