"""Delivering a subscription: its backlog, then live lines, to its connection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from gastown_client.protocol import Push
from gastownd.core.query import CompiledFilter
from gastownd.eventlog import Backlog, BacklogGap, EventLog
from gastownd.eventlog.subscriptions import NodeScope, Published, Subscriber, Subscriptions
from gastownd.server.socket_server import Connection
from gastownd.store.remote import RemoteEvent

BACKLOG_CHUNK = 256


def resume_point(eventlog: EventLog, cursor: str | None) -> tuple[int, bool, bool]:
    """Where a subscription to this node's log starts: ``(after seq, replay the archive
    too, resync)``. ``None``: from now on; ``"start"``: the oldest line of the log."""
    index = eventlog.index
    head = index.next_seq() - 1
    oldest = index.seqs[0] - 1 if len(index) else head
    if cursor is None:
        return head, False, False
    if cursor == "start":
        return oldest, False, False
    epoch, seq = eventlog.parse_cursor(cursor)
    # A cursor of another epoch (or from the future) says nothing about this log:
    # start over. One older than a line that is in neither the log nor the archive
    # missed something: resync. Otherwise the archive fills in whatever retention
    # moved out of the log after it.
    foreign = epoch != eventlog.seqmap.epoch or seq > head
    resync = foreign or seq < eventlog.seqmap.lost_through()
    if foreign:
        return oldest, False, resync
    return seq, True, resync


def attach(
    subscriptions: Subscriptions,
    conn: Connection,
    flt: CompiledFilter,
    scope: NodeScope | None,
    live_after: int,
) -> Subscriber:
    """A subscriber of ``conn``'s, given local lines after seq ``live_after`` as they come;
    it ends with the connection. ``busy`` when the connection or the daemon has as many as
    it may."""
    subscriptions.check_room(len(conn.subscriptions))
    subscriber = subscriptions.add(flt, scope)
    subscriber.live_after = live_after
    conn.subscriptions.add(subscriber.id)

    def end_subscription() -> None:
        subscriptions.remove(subscriber.id)

    conn.on_close.append(end_subscription)
    return subscriber


class ReplayAborted(Exception):
    """The backlog could not be replayed whole; the subscriber was told and cut off."""


async def send_local_backlog(
    backlog: Backlog,
    subscriber: Subscriber,
    conn: Connection,
    render: Callable[[Sequence[Published | RemoteEvent]], list[Push]],
) -> None:
    """This node's lines the subscriber missed (archive, then log), chunk by chunk."""
    while not (subscriber.closed or subscriber.overflowed or conn.closed):
        try:
            chunk = await backlog.next()
        except BacklogGap as exc:
            await conn.send(
                Push(
                    push="overflow",
                    subscription=subscriber.id,
                    message=f"{exc} during the replay; disconnected (resume with the last "
                    "cursor you received)",
                )
            )
            await conn.abort()
            raise ReplayAborted from None
        if chunk is None:
            return
        await conn.send_many(render([Published(seq, "", "", None, 0, line) for seq, line in chunk]))


async def pump(
    subscriptions: Subscriptions,
    subscriber: Subscriber,
    conn: Connection,
    send_backlog: Callable[[], Awaitable[None]],
    render: Callable[[Sequence[Published | RemoteEvent]], list[Push]],
) -> None:
    """Send the backlog, then live lines as they are published, until the end."""
    sub_id = subscriber.id
    try:
        try:
            await send_backlog()
        except ReplayAborted:
            return
        while not conn.closed:
            if subscriber.overflowed:
                await conn.send(
                    Push(
                        push="overflow",
                        subscription=sub_id,
                        message=f"subscriber fell more than {subscriber.capacity} lines or "
                        f"{subscriber.byte_capacity >> 20} MiB behind; "
                        "disconnected (resume with the last cursor you received)",
                    )
                )
                await conn.abort()
                return
            if subscriber.queue:
                items = subscriber.take()
                await conn.send_many(render(items))
                continue
            if subscriber.closed:
                await conn.send(Push(push="end", subscription=sub_id, message="subscription ended"))
                return
            await subscriber.wait()
    finally:
        subscriptions.remove(sub_id)
        conn.subscriptions.discard(sub_id)
