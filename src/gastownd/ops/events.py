"""emit, query, subscribe, unsubscribe, prune."""

from __future__ import annotations

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
from gastownd.errors import BadRequestError, DaemonError, NotFoundError, TooLargeError
from gastownd.eventlog import Backlog, BacklogGap, EventLog
from gastownd.server import Connection, FollowUp, Reply
from gastownd.subscriptions import Subscriber, Subscriptions


def _parts(daemon: Daemon) -> tuple[EventLog, Subscriptions]:
    assert daemon.eventlog is not None and daemon.subscriptions is not None
    return daemon.eventlog, daemon.subscriptions


def _line(daemon: Daemon, request: Emit) -> bytes:
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
    return line


def submit_emit(daemon: Daemon, request: Emit, reply: Reply) -> bool:
    """Queue the line for the writer; ``reply`` once it is durable. False: the queue is full."""
    eventlog, _ = _parts(daemon)
    line = _line(daemon, request)

    def written(outcome: int | DaemonError) -> None:
        if isinstance(outcome, DaemonError):
            reply(outcome)
        else:
            reply(EmitResult(cursor=eventlog.cursor(outcome), event=msgspec.Raw(line[:-1])))

    return eventlog.submit(line, written)


async def emit(daemon: Daemon, request: Emit) -> EmitResult:
    """An emit the writer's full queue made wait."""
    eventlog, _ = _parts(daemon)
    line = _line(daemon, request)
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
    lines = await eventlog.query(flt, request.limit, request.oldest_first, archive=request.archive)
    return QueryResult(events=[msgspec.Raw(line) for line in lines], cursor=cursor)


async def subscribe(daemon: Daemon, request: Subscribe, conn: Connection) -> FollowUp:
    eventlog, subscriptions = _parts(daemon)
    flt = _compile(request)
    index = eventlog.index
    resync = False
    head = index.next_seq() - 1
    after, from_archive = head, False
    if request.cursor == "start":
        after = index.seqs[0] - 1 if len(index) else head
    elif request.cursor is not None:
        epoch, seq = eventlog.parse_cursor(request.cursor)
        # A cursor of another epoch (or from the future) says nothing about this
        # log: start over. One older than a line that is in neither the log nor
        # the archive missed something: resync. Otherwise the archive fills in
        # whatever retention moved out of the log after it.
        foreign = epoch != eventlog.seqmap.epoch or seq > head
        resync = foreign or seq < eventlog.seqmap.lost_through()
        if foreign:
            after = index.seqs[0] - 1 if len(index) else head
        else:
            after, from_archive = seq, True
    # From here to the FollowUp nothing awaits: the backlog and the live
    # queue split the log at exactly this point, with no gap and no overlap.
    backlog = eventlog.backlog(flt, after, head, from_archive=from_archive)
    subscriber = subscriptions.add(flt)
    subscriber.live_after = head
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
    backlog: Backlog,
    conn: Connection,
) -> None:
    sub_id = subscriber.id
    try:
        while not (subscriber.closed or subscriber.overflowed or conn.closed):
            try:
                chunk = await backlog.next()
            except BacklogGap as exc:
                await conn.send(
                    Push(
                        push="overflow",
                        subscription=sub_id,
                        message=f"{exc} during the replay; disconnected (resume with the last "
                        "cursor you received)",
                    )
                )
                await conn.abort()
                return
            if chunk is None:
                break
            await conn.send_many(
                [
                    Push(
                        push="event",
                        subscription=sub_id,
                        cursor=eventlog.cursor(seq),
                        event=msgspec.Raw(line),
                    )
                    for seq, line in chunk
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


def unsubscribe(daemon: Daemon, request: Unsubscribe, conn: Connection) -> UnsubscribeResult:
    _, subscriptions = _parts(daemon)
    if request.subscription not in conn.subscriptions:
        raise NotFoundError(f"no subscription {request.subscription} on this connection")
    subscriptions.remove(request.subscription)
    return UnsubscribeResult(subscription=request.subscription)


async def prune(daemon: Daemon, request: Prune) -> PruneResult:
    return await pruner.prune_now(daemon, dry_run=request.dry_run)
