"""Fan-out of indexed lines to subscribers, each behind its own bounded queue.

Publishing never waits: a subscriber whose queue is full (``capacity`` lines, or
``MAX_QUEUED_BYTES`` of lines: lines may be up to the 1 MiB frame limit, so a line count
alone let one stalled subscriber hold gigabytes) is marked
overflowed and dropped (it gets an ``overflow`` frame and its connection is
closed), so a slow reader never slows writers or other subscribers.

With federation, a subscriber may also take other nodes' lines
(:class:`NodeScope`): they come from the store's ``remote_events`` in arrival
order, each queue holding both kinds in the order they were published.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import msgspec
import structlog

from gastown_client.protocol import ErrorCode
from gastownd.core.query import CompiledFilter
from gastownd.process.refusals import DaemonError
from gastownd.store.remote import RemoteEvent

log = structlog.get_logger("gastownd.subscriptions")

# Bytes of lines one subscriber may have queued, whatever their count. A queue that is not
# empty takes no line past it, so one line over it (a frame is at most 1 MiB) still goes.
MAX_QUEUED_BYTES = 8 << 20


class Published(msgspec.Struct, frozen=True, gc=False):
    """One indexed line, as subscribers and observers get it (a Struct: one is made per
    line of every group commit, and a Struct is made in C)."""

    seq: int
    type: str
    actor: str
    session: str | None
    ts: int
    line: bytes  # without the newline


class NodeScope(msgspec.Struct, frozen=True):
    """Whose lines a subscription takes: every node's, or one node's."""

    local_node: str
    all_nodes: bool = False
    node: str | None = None

    @property
    def local(self) -> bool:
        return self.all_nodes or self.node in (None, self.local_node)

    def takes(self, node: str) -> bool:
        return self.all_nodes or self.node == node


class Subscriber:
    def __init__(
        self,
        sub_id: int,
        flt: CompiledFilter,
        capacity: int,
        scope: NodeScope | None = None,
        byte_capacity: int = MAX_QUEUED_BYTES,
    ) -> None:
        self.id = sub_id
        self.filter = flt
        self.capacity = capacity
        # None: this node's lines only (the subscription of a client unaware of nodes).
        self.scope = scope
        self.byte_capacity = byte_capacity
        self.queue: deque[Published | RemoteEvent] = deque()
        self.queued_bytes = 0
        self.overflowed = False
        self.closed = False
        self._wakeup = anyio.Event()
        # Lines at or below this seq (remote: this arrival) were or will be sent from
        # the backlog.
        self.live_after = -1
        self.remote_live_after = -1

    def offer(self, item: Published) -> bool:
        """Queue ``item`` if it matches; False once the subscriber has overflowed."""
        if self.closed or item.seq <= self.live_after:
            return True
        if self.scope is not None and not self.scope.local:
            return True
        return self._queue(item)

    def offer_remote(self, item: RemoteEvent) -> bool:
        if self.closed or self.scope is None or item.arrival <= self.remote_live_after:
            return True
        if not self.scope.takes(item.node):
            return True
        return self._queue(item)

    def _queue(self, item: Published | RemoteEvent) -> bool:
        if not self.filter.matches(item.type, item.actor, item.session, item.ts):
            return True
        full = len(self.queue) >= self.capacity
        if self.queue and self.queued_bytes + len(item.line) > self.byte_capacity:
            full = True
        if full:
            self.overflowed = True
            self._wakeup.set()
            return False
        self.queue.append(item)
        self.queued_bytes += len(item.line)
        self._wakeup.set()
        return True

    def take(self) -> list[Published | RemoteEvent]:
        """Every queued item, oldest first, leaving the queue empty."""
        items = list(self.queue)
        self.queue.clear()
        self.queued_bytes = 0
        return items

    async def wait(self) -> None:
        if not self.queue and not self.overflowed and not self.closed:
            await self._wakeup.wait()
        self._wakeup = anyio.Event()

    def close(self) -> None:
        self.closed = True
        self._wakeup.set()


class Subscriptions:
    def __init__(self, capacity: int, max_total: int = 1024, max_per_connection: int = 64) -> None:
        self.capacity = capacity
        # Every line is offered to every subscriber: 20,000 of them made each emit wait
        # 52 ms (503 ms at worst) and held 228 MiB.
        self.max_total = max_total
        self.max_per_connection = max_per_connection
        self._subscribers: dict[int, Subscriber] = {}
        self._ids = itertools.count(1)

    def count(self) -> int:
        return len(self._subscribers)

    def check_room(self, on_connection: int) -> None:
        """Raise ``busy`` unless a connection holding ``on_connection`` subscriptions may
        open another."""
        if on_connection >= self.max_per_connection:
            raise DaemonError(
                f"this connection has {on_connection} subscriptions, the most it may "
                "(eventlog.max_subscriptions_per_connection); unsubscribe one first",
                code=ErrorCode.BUSY,
            )
        if len(self._subscribers) >= self.max_total:
            raise DaemonError(
                f"the daemon has {len(self._subscribers)} subscriptions, the most it serves "
                "(eventlog.max_subscriptions); retry later",
                code=ErrorCode.BUSY,
            )

    def add(self, flt: CompiledFilter, scope: NodeScope | None = None) -> Subscriber:
        subscriber = Subscriber(next(self._ids), flt, self.capacity, scope)
        self._subscribers[subscriber.id] = subscriber
        return subscriber

    def remove(self, sub_id: int) -> Subscriber | None:
        subscriber = self._subscribers.pop(sub_id, None)
        if subscriber is not None:
            subscriber.close()
        return subscriber

    def publish(self, items: Sequence[Published]) -> None:
        self._fan_out(items, Subscriber.offer)

    def publish_remote(self, items: Sequence[RemoteEvent]) -> None:
        """Other nodes' lines, just applied to the store (in arrival order)."""
        self._fan_out(items, Subscriber.offer_remote)

    def _fan_out(self, items: Sequence[Any], offer: Callable[[Subscriber, Any], bool]) -> None:
        if not items or not self._subscribers:
            return
        for subscriber in list(self._subscribers.values()):
            for item in items:
                if not offer(subscriber, item):
                    log.warning(
                        "subscriber_overflowed",
                        subscription=subscriber.id,
                        capacity=subscriber.capacity,
                    )
                    self._subscribers.pop(subscriber.id, None)
                    break

    def close_all(self) -> None:
        for subscriber in self._subscribers.values():
            subscriber.close()
        self._subscribers.clear()
