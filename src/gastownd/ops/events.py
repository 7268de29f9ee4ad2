"""emit, query, subscribe, unsubscribe, prune."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from gastown_client.protocol import (
    Emit,
    EmitResult,
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
from gastownd import pruner
from gastownd.core.events import MAX_LINE_BYTES, encode_line, format_ts
from gastownd.core.query import EventFilter as CompiledFilter
from gastownd.core.query import FilterError, compile_filter
from gastownd.daemon import Daemon
from gastownd.errors import BadRequestError, NotFoundError, TooLargeError
from gastownd.eventlog import EventLog
from gastownd.ops import townwide
from gastownd.ops.delivery import local_backlog, pump
from gastownd.server import Connection, FollowUp
from gastownd.store.remote import RemoteEvent
from gastownd.subscriptions import Published, Subscriptions

BACKLOG_CHUNK = 256


def _parts(daemon: Daemon) -> tuple[EventLog, Subscriptions]:
    assert daemon.eventlog is not None and daemon.subscriptions is not None
    return daemon.eventlog, daemon.subscriptions


async def emit(daemon: Daemon, request: Emit) -> EmitResult:
    eventlog, _ = _parts(daemon)
    line = encode_line(
        ts=format_ts(daemon.clock()),
        source=daemon.config.eventlog.source,
        type=request.type,
        actor=request.actor,
        payload=request.payload,
        visibility=request.visibility,
    )
    if len(line) - 1 > MAX_LINE_BYTES:
        raise TooLargeError(
            f"the encoded line is {len(line) - 1} bytes; Gas Town's readers break past "
            f"{MAX_LINE_BYTES} - at $.payload"
        )
    seq = await eventlog.append(line)
    return EmitResult(cursor=eventlog.cursor(seq), event=msgspec.Raw(line[:-1]))


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
    cursor = eventlog.head_cursor()
    lines = await eventlog.query(flt, request.limit, request.oldest_first)
    return QueryResult(events=[msgspec.Raw(line) for line in lines], cursor=cursor)


async def subscribe(daemon: Daemon, request: Subscribe, conn: Connection) -> FollowUp:
    eventlog, subscriptions = _parts(daemon)
    flt = _compile(request)
    scope = townwide.scope_of(daemon, request)
    if scope is not None:
        return await townwide.subscribe(daemon, request, conn, flt, scope)
    index = eventlog.index
    resync = False
    start = len(index)
    if request.cursor == "start":
        start = 0
    elif request.cursor is not None:
        epoch, seq = eventlog.parse_cursor(request.cursor)
        # A cursor of another epoch (or from the future) says nothing about this
        # log: start over. One older than a pruned line missed something: resync.
        foreign = epoch != eventlog.seqmap.epoch or seq >= index.next_seq()
        resync = foreign or seq < eventlog.seqmap.pruned_through
        start = 0 if foreign else index.position_after(seq)
    # From here to the FollowUp nothing awaits: the backlog and the live
    # queue split the log at exactly this point, with no gap and no overlap.
    backlog = (
        [
            index.seqs[p]
            for p in index.search(flt, len(index) + 1, oldest_first=True, after_position=start)
        ]
        if start < len(index)
        else []
    )
    subscriber = subscriptions.add(flt)
    subscriber.live_after = index.next_seq() - 1
    conn.subscriptions.add(subscriber.id)

    def end_subscription() -> None:
        subscriptions.remove(subscriber.id)

    conn.on_close.append(end_subscription)
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
        for items in local_backlog(eventlog, backlog, subscriber, conn):
            await conn.send_many(render(items))

    return FollowUp(result, lambda: pump(subscriptions, subscriber, conn, send_backlog, render))


async def unsubscribe(daemon: Daemon, request: Unsubscribe, conn: Connection) -> UnsubscribeResult:
    _, subscriptions = _parts(daemon)
    if request.subscription not in conn.subscriptions:
        raise NotFoundError(f"no subscription {request.subscription} on this connection")
    subscriptions.remove(request.subscription)
    return UnsubscribeResult(subscription=request.subscription)


async def prune(daemon: Daemon, request: Prune) -> PruneResult:
    return await pruner.prune_now(daemon, dry_run=request.dry_run)
