"""``query`` and ``subscribe`` over the whole town: this node's log and other nodes' lines.

Asked with ``all_nodes`` (or ``node``), every event carries a top-level
``"node"`` key (this node's lines too), spliced in after the stored line's
last key; pushes also name the node. Other nodes' lines come from the store
(``remote_events``), never from the local ``.events.jsonl``.

A town-wide cursor is ``"<epoch>:<seq>+<arrival>"``: the last local line and
the last remote line delivered (``arrival`` numbers remote lines as this node
applied them). Each part is delivered in its own order, so resuming from a
cursor gives exactly the lines not delivered yet: no gap, no duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from gastown_client.protocol import (
    EventFilter,
    Push,
    Query,
    QueryResult,
    Subscribe,
    SubscribeResult,
)
from gastownd.core.events import parse_line, parse_ts
from gastownd.core.query import CompiledFilter
from gastownd.eventlog import EventLog
from gastownd.eventlog.subscriptions import NodeScope, Published
from gastownd.ops.delivery import (
    BACKLOG_CHUNK,
    attach,
    pump,
    resume_point,
    send_local_backlog,
)
from gastownd.process.daemon import Daemon
from gastownd.process.refusals import BadRequestError
from gastownd.server.socket_server import Connection, FollowUp
from gastownd.store.remote import EventQuery, RemoteEvent


def scope_of(daemon: Daemon, request: EventFilter) -> NodeScope | None:
    """Whose lines the request asks for; None: this node's log only, as before nodes."""
    if not request.all_nodes and request.node is None:
        return None
    return NodeScope(local_node=daemon.node, all_nodes=request.all_nodes, node=request.node)


def with_node(line: bytes, node: str) -> bytes:
    """The stored line with ``"node"`` as its last top-level key."""
    body = line.rstrip()
    if not body.endswith(b"}"):
        return line
    separator = b"" if body[:-1].rstrip().endswith(b"{") else b","
    return body[:-1] + separator + b'"node":' + msgspec.json.encode(node) + b"}"


def _remote_query(flt: CompiledFilter, scope: NodeScope) -> EventQuery:
    return EventQuery(
        types=sorted(flt.types),
        actor=flt.actor,
        session=flt.session,
        since=flt.since,
        until=flt.until,
        node=None if scope.all_nodes else scope.node,
    )


async def _last_arrival(daemon: Daemon) -> int:
    return await daemon.federation.live_edge()


async def query(
    daemon: Daemon, request: Query, flt: CompiledFilter, scope: NodeScope
) -> QueryResult:
    eventlog = daemon.eventlog
    head = f"{eventlog.head_cursor()}+{await _last_arrival(daemon)}"
    found: list[tuple[int, int, bytes]] = []
    indexing = None
    unreadable: list[str] = []
    if scope.local:
        # Waits (bounded) for a background index; says so if it answers without it.
        local = await eventlog.query(
            flt, request.limit, request.oldest_first, archive=request.archive
        )
        indexing = eventlog.indexing  # of the local answer, before anything else awaits
        unreadable = local.unreadable_days
        for line in local.lines:
            parsed = parse_line(line)
            ts = parse_ts(parsed.ts) if parsed is not None else None
            found.append((ts or 0, 0, with_node(line, daemon.node)))
    remote = await daemon.sessions.read(
        lambda: daemon.sessions.store.remote.query_events(
            _remote_query(flt, scope), request.limit, oldest_first=request.oldest_first
        )
    )
    found += [(e.ts, 1, with_node(e.line, e.node)) for e in remote]
    # Stable: for equal times, local lines first (newest-first keeps each source's order).
    found.sort(key=lambda item: item[0], reverse=not request.oldest_first)
    return QueryResult(
        events=[msgspec.Raw(line) for _, _, line in found[: request.limit]],
        cursor=head,
        indexing=indexing,
        archive_unreadable=unreadable or None,
    )


def parse_town_cursor(eventlog: EventLog, cursor: str) -> tuple[str | None, int]:
    """``(local cursor or None, remote arrival)`` of a town-wide cursor (a plain
    ``EPOCH:SEQ`` resumes the local part and takes remote lines from the start)."""
    local, plus, remote = cursor.partition("+")
    try:
        arrival = int(remote) if plus else 0
    except ValueError:
        raise BadRequestError(f"invalid cursor {cursor!r} (expected EPOCH:SEQ+ARRIVAL)") from None
    if local:
        eventlog.parse_cursor(local)  # validates
    return (local or None), arrival


async def subscribe(
    daemon: Daemon,
    request: Subscribe,
    conn: Connection,
    flt: CompiledFilter,
    scope: NodeScope,
) -> FollowUp:
    eventlog, subscriptions = daemon.eventlog, daemon.subscriptions
    remote_store = daemon.sessions.store.remote
    local_cursor: str | None = None
    after_arrival = -1
    if request.cursor == "start":
        local_cursor, after_arrival = "start", 0
    elif request.cursor is not None:
        local_cursor, after_arrival = parse_town_cursor(eventlog, request.cursor)
    pruned = await daemon.sessions.read(remote_store.pruned_through)
    through = await _last_arrival(daemon)
    # A resumed cursor older than a pruned remote line missed something.
    resync = request.cursor not in (None, "start") and after_arrival < pruned
    if after_arrival < 0 or (not scope.all_nodes and scope.node == daemon.node):
        after_arrival = through  # remote lines from now on (or none at all)
    # From here to the FollowUp nothing awaits (see ops.log_requests.subscribe).
    head = eventlog.index.next_seq() - 1
    after, from_archive, local_resync = resume_point(eventlog, local_cursor)
    backlog = eventlog.backlog(flt, after, head, from_archive=from_archive)
    subscriber = attach(subscriptions, conn, flt, scope, head)
    subscriber.remote_live_after = max(through, after_arrival)
    position = _Position(after, after_arrival)
    result = SubscribeResult(
        subscription=subscriber.id,
        cursor=f"{eventlog.head_cursor()}+{max(through, after_arrival)}",
        resync=resync or local_resync,
    )

    def render(items: Sequence[Published | RemoteEvent]) -> list[Push]:
        pushes = []
        for item in items:
            if isinstance(item, RemoteEvent):
                position.arrival = max(position.arrival, item.arrival)
                node = item.node
            else:
                position.local_seq = max(position.local_seq, item.seq)
                node = daemon.node
            pushes.append(
                Push(
                    push="event",
                    subscription=subscriber.id,
                    cursor=position.cursor(eventlog),
                    event=msgspec.Raw(with_node(item.line, node)),
                    node=node,
                )
            )
        return pushes

    async def send_backlog() -> None:
        if scope.local:
            await send_local_backlog(backlog, subscriber, conn, render)
        query = _remote_query(flt, scope)
        while not (subscriber.closed or subscriber.overflowed or conn.closed):
            chunk = await daemon.sessions.read(
                remote_store.events_between, query, position.arrival, through, BACKLOG_CHUNK
            )
            if not chunk:
                break
            await conn.send_many(render(chunk))
        position.arrival = max(position.arrival, through)

    return FollowUp(result, lambda: pump(subscriptions, subscriber, conn, send_backlog, render))


class _Position:
    """What a town-wide subscriber has been sent: its cursor."""

    def __init__(self, local_seq: int, arrival: int) -> None:
        self.local_seq = local_seq
        self.arrival = max(arrival, 0)

    def cursor(self, eventlog: EventLog) -> str:
        return f"{eventlog.cursor(self.local_seq)}+{self.arrival}"
