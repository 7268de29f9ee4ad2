"""The consumer: other nodes' records, checked and applied.

It pulls from a durable consumer of its own (``gastownd_<node>``) on the town's stream, checks
every record, applies a batch in one store transaction, acknowledges only after that commit,
and pushes new remote lines to subscribers. A record that cannot be applied (refused at decode,
dated too far ahead, refused by the store) is a rejection: counted by reason (kept across
restarts), logged, and terminated so the stream never redelivers it; the rest of its batch is
applied.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
import structlog

from gastownd.core.events import format_ts
from gastownd.core.records import (
    AnyMessage,
    Rejected,
    decode_message,
    local_id_of,
    refuse_future,
    town_subjects,
)
from gastownd.eventlog.subscriptions import Subscriptions
from gastownd.federation.gone import still_there
from gastownd.federation.health import LinkHealth, describe
from gastownd.federation.publisher import ROUND_S
from gastownd.metrics.buckets import LAG_SECONDS, Buckets, stream_stored_at
from gastownd.sessions.recorder import SessionRecorder
from gastownd.store.remote import REJECTED_COUNTS

log = structlog.get_logger("gastownd.federation")

FETCH_WAIT_S = 1.0
# A delivered record not acknowledged in this time (lost in flight, or its batch failed) is
# delivered again.
ACK_WAIT_S = 10.0
# Messages (up to MAX_EVENT_LINES lines each) per fetch: each fetch is applied in one store
# transaction, which local work may wait for.
FETCH_MESSAGES = 32


@dataclass(eq=False, kw_only=True)
class Consumer:
    node: str
    town: str
    stream: str
    max_skew_s: float
    clock: Callable[[], float]
    sessions: SessionRecorder
    subscriptions: Subscriptions
    health: LinkHealth
    publishing_busy: Callable[[], bool]
    applied: int = field(default=0, init=False)
    # Stored in the town's stream (the origin's publish acknowledged) -> applied here.
    lag_seconds: Buckets = field(default_factory=lambda: Buckets(LAG_SECONDS), init=False)
    # Highest arrival number of a remote line applied: the live edge for subscribers.
    last_arrival: int = field(default=0, init=False)
    # The total of the rejections as last stored.
    _rejected_saved: int = field(default=0, init=False)

    async def load(self) -> None:
        """What is kept across restarts: the live edge and the rejection counts."""
        sessions = self.sessions
        remote = sessions.store.remote
        self.last_arrival = await sessions.db(remote.last_arrival)
        self.health.rejected.update(await sessions.db(remote.rejected_counts))
        self._rejected_saved = sum(self.health.rejected.values())

    async def run(self, js: Any) -> None:
        import nats.errors
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        health = self.health
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.ALL,
            # Every message acknowledged by itself: with "ack all", acking a later message
            # would also ack an earlier one lost in flight (a server failing over), which
            # then is never delivered again.
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT_S,
            max_ack_pending=1000,
        )
        durable = f"gastownd_{self.node}"
        sub = await health.retrying(
            "federation_consumer_failed", partial(self._subscribe, js, durable, config)
        )
        attempt = 0
        while True:
            try:
                messages = await sub.fetch(FETCH_MESSAGES, timeout=FETCH_WAIT_S)
            except (nats.errors.TimeoutError, TimeoutError):
                # Nothing to fetch (nats-py raises either type): the server answered.
                health.ok("federation_fetch_failed")
                continue
            except Exception as exc:  # failover, no responders: back off, never spin
                health.error("federation_fetch_failed", exc)
                await still_there(js, self.stream, durable)
                await health.back_off(attempt)
                attempt += 1
                continue
            attempt = 0
            health.ok("federation_fetch_failed")
            started = time.monotonic()
            try:
                applied = await self._apply(messages)
            except Exception as exc:  # the store's trouble: unacknowledged, they come again
                health.error("federation_apply_failed", exc, records=len(messages))
                await health.back_off(attempt)
                attempt += 1
                continue
            health.ok("federation_apply_failed")
            if not applied and self.publishing_busy():
                # Only our own records came back, and we are busy publishing: take them in
                # batches rather than one fetch per publish round.
                await anyio.sleep(max(0.0, started + ROUND_S - time.monotonic()))

    async def _subscribe(self, js: Any, durable: str, config: Any) -> Any:
        """Bind to this node's consumer, made with ``config`` if missing. nats-py binds to an
        existing one as it is: one made otherwise (by an older version, or by someone else)
        that would skip or drop records is deleted first, so it is made again; it then
        delivers the whole stream, applied once."""
        import nats.js.errors

        try:
            info = await js.consumer_info(self.stream, durable)
        except nats.js.errors.NotFoundError:
            info = None
        differs = _differences(info.config, town_subjects(self.town)) if info else []
        if differs:
            try:
                await js.delete_consumer(self.stream, durable)
                log.warning("federation_consumer_remade", consumer=durable, differs=differs)
            except Exception as exc:  # not allowed to: say so, and use it as it is
                log.error(
                    "federation_consumer_differs",
                    consumer=durable,
                    differs=differs,
                    error=describe(exc),
                    fix=f"as an administrator, delete consumer {durable} of {self.stream}: "
                    "the daemon makes it again",
                )
        return await js.pull_subscribe(
            town_subjects(self.town), durable=durable, stream=self.stream, config=config
        )

    async def _apply(self, messages: Sequence[Any]) -> int:
        """Check and apply other nodes' records, acknowledge them and terminate the
        rejected ones; how many messages were theirs."""
        health = self.health
        done: list[Any] = []  # applied, or our own: acknowledged
        refused: list[Any] = []  # rejected: terminated, never delivered again
        records: list[AnyMessage] = []
        carriers: list[Any] = []
        # "In the future" by this node's clock and by the hub's (when it stored the record)
        # both: a node whose own clock is behind still takes correct nodes' records, which
        # it could never be given again once refused.
        local_not_after = self.clock() + self.max_skew_s
        for message in messages:
            sender = _sender(message.subject)
            if sender == self.node:
                done.append(message)  # our own records, echoed by the town's stream
                continue
            try:
                record = decode_message(
                    message.subject, message.data, town=self.town, local_node=self.node
                )
            except Rejected as rejected:
                health.reject(rejected.reason, sender, rejected.detail)
                refused.append(message)
                continue
            stored_at = stream_stored_at(message)
            not_after = (
                local_not_after
                if stored_at is None
                else max(local_not_after, stored_at + self.max_skew_s)
            )
            kept, future = refuse_future(record, not_after)
            if future:
                health.reject(
                    "future_time",
                    sender,
                    f"{future} dated after {format_ts(not_after)} ({local_id_of(record)})",
                    count=future,
                )
            if kept is None:
                refused.append(message)
                continue
            records.append(kept)
            carriers.append(message)
        # Refused ones first: should the store fail below, they are not counted twice.
        await self._terminate(refused)
        if records:
            sessions = self.sessions
            applied = await sessions.apply_remote(records, self.clock())
            failed = {index for index, _ in applied.failed}
            for index, why in applied.failed:
                health.reject("store_refused", records[index].node, why)
            await self._terminate([carriers[i] for i in sorted(failed)])
            done += [m for i, m in enumerate(carriers) if i not in failed]
            self.applied += sum(applied.counts.values())
            applied_at = time.time()
            for index, message in enumerate(carriers):
                at = stream_stored_at(message)
                if at is not None and index not in failed:
                    self.lag_seconds.observe(applied_at - at)
            if applied.events:
                self.last_arrival = max(self.last_arrival, applied.events[-1].arrival)
                self.subscriptions.publish_remote(applied.events)
        await self._save_rejected()  # lines of a run refused, the rest applied
        # After the commit: a crash before this redelivers, and applying is idempotent.
        for message in done:
            await message.ack()
        return len(records)

    async def _terminate(self, messages: Sequence[Any]) -> None:
        """Count rejections for good (the store), then tell the stream never to deliver
        these messages again."""
        if not messages:
            return
        await self._save_rejected()
        for message in messages:
            await message.term()

    async def _save_rejected(self) -> None:
        """Store the rejection counts, when they changed since they were last stored."""
        rejected = self.health.rejected
        total = sum(rejected.values())
        if total == self._rejected_saved:
            return
        sessions = self.sessions
        counts = json.dumps(dict(sorted(rejected.items())))
        await sessions.db(sessions.store.remote.set_marks, {REJECTED_COUNTS: counts})
        self._rejected_saved = total


def _differences(config: Any, subjects: str) -> list[str]:
    """The settings of an existing consumer that would skip, drop or refuse records."""
    filters = {config.filter_subject, *(config.filter_subjects or ())} - {None, ""}
    wrong = {
        "deliver_policy": _text(config.deliver_policy) != "all",
        # "all": an ack covers earlier messages, even one lost in flight (see run).
        "ack_policy": _text(config.ack_policy) != "explicit",
        "filter_subject": bool(filters) and filters != {subjects},
        "max_deliver": (config.max_deliver or -1) > 0,
        "headers_only": bool(config.headers_only),
        "deliver_subject": bool(config.deliver_subject),  # a push consumer: no fetch
    }
    return [name for name, differs in wrong.items() if differs]


def _text(value: Any) -> str:
    return str(getattr(value, "value", value))


def _sender(subject_name: str) -> str:
    parts = subject_name.split(".")
    return parts[2] if len(parts) > 2 else ""
