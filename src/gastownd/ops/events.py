"""emit, query, subscribe, unsubscribe, prune."""

from __future__ import annotations

import bisect

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
from gastownd.server import Connection, FollowUp
from gastownd.subscriptions import Subscriber, Subscriptions

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
    cursor = eventlog.head_cursor()
    lines = await eventlog.query(flt, request.limit, request.oldest_first)
    return QueryResult(events=[msgspec.Raw(line) for line in lines], cursor=cursor)


async def subscribe(daemon: Daemon, request: Subscribe, conn: Connection) -> FollowUp:
    eventlog, subscriptions = _parts(daemon)
    flt = _compile(request)
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
    return FollowUp(result, lambda: _pump(eventlog, subscriptions, subscriber, backlog, conn))


async def _pump(
    eventlog: EventLog,
    subscriptions: Subscriptions,
    subscriber: Subscriber,
    backlog: list[int],
    conn: Connection,
) -> None:
    sub_id = subscriber.id
    try:
        for start in range(0, len(backlog), BACKLOG_CHUNK):
            if subscriber.closed or subscriber.overflowed or conn.closed:
                break
            seqs = eventlog.index.seqs
            positions = []
            for seq in backlog[start : start + BACKLOG_CHUNK]:
                position = bisect.bisect_left(seqs, seq)
                if position < len(seqs) and seqs[position] == seq:
                    positions.append(position)
            lines = eventlog.read_lines(positions)
            await conn.send_many(
                [
                    Push(
                        push="event",
                        subscription=sub_id,
                        cursor=eventlog.cursor(eventlog.index.seqs[p]),
                        event=msgspec.Raw(line),
                    )
                    for p, line in zip(positions, lines, strict=True)
                ]
            )
        while not conn.closed:
            if subscriber.overflowed:
                await conn.send(
                    Push(
                        push="overflow",
                        subscription=sub_id,
                        message=f"subscriber fell more than {subscriber.capacity} lines behind; "
                        "disconnected (resume with the last cursor you received)",
                    )
                )
                await conn.abort()
                return
            if subscriber.queue:
                items = list(subscriber.queue)
                subscriber.queue.clear()
                await conn.send_many(
                    [
                        Push(
                            push="event",
                            subscription=sub_id,
                            cursor=eventlog.cursor(item.seq),
                            event=msgspec.Raw(item.line),
                        )
                        for item in items
                    ]
                )
                continue
            if subscriber.closed:
                await conn.send(Push(push="end", subscription=sub_id, message="subscription ended"))
                return
            await subscriber.wait()
    finally:
        subscriptions.remove(sub_id)
        conn.subscriptions.discard(sub_id)


async def unsubscribe(daemon: Daemon, request: Unsubscribe, conn: Connection) -> UnsubscribeResult:
    _, subscriptions = _parts(daemon)
    if request.subscription not in conn.subscriptions:
        raise NotFoundError(f"no subscription {request.subscription} on this connection")
    subscriptions.remove(request.subscription)
    return UnsubscribeResult(subscription=request.subscription)


async def prune(daemon: Daemon, request: Prune) -> PruneResult:
    return await pruner.prune_now(daemon, dry_run=request.dry_run)
