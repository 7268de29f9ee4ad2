"""Delivering a subscription: its backlog, then live lines, to its connection."""

from __future__ import annotations

import bisect
from collections.abc import Awaitable, Callable, Iterator, Sequence

from gastown_client.protocol import Push
from gastownd.eventlog import EventLog
from gastownd.server import Connection
from gastownd.store.remote import RemoteEvent
from gastownd.subscriptions import Published, Subscriber, Subscriptions

BACKLOG_CHUNK = 256


def local_backlog(
    eventlog: EventLog, backlog: list[int], subscriber: Subscriber, conn: Connection
) -> Iterator[list[Published]]:
    """The backlog's lines still in the log, by chunks, read when each chunk is due."""
    for start in range(0, len(backlog), BACKLOG_CHUNK):
        if subscriber.closed or subscriber.overflowed or conn.closed:
            return
        seqs = eventlog.index.seqs
        positions = []
        for seq in backlog[start : start + BACKLOG_CHUNK]:
            position = bisect.bisect_left(seqs, seq)
            if position < len(seqs) and seqs[position] == seq:
                positions.append(position)
        index = eventlog.index
        yield [
            Published(index.seqs[p], "", "", None, 0, line)
            for p, line in zip(positions, eventlog.read_lines(positions), strict=True)
        ]


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
        await send_backlog()
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
                await conn.send_many(render(items))
                continue
            if subscriber.closed:
                await conn.send(Push(push="end", subscription=sub_id, message="subscription ended"))
                return
            await subscriber.wait()
    finally:
        subscriptions.remove(sub_id)
        conn.subscriptions.discard(sub_id)
