"""Federation over NATS JetStream: the shell, and the only importer of ``nats``.

Each daemon stays the only writer of its own log and store. This module
publishes what this node learns and applies what other nodes publish
(records: :mod:`gastownd.core.records`; storage: :mod:`gastownd.store.remote`):

- the **publisher** reads durable local state (event lines after the cursor it
  has published, session records after a ``rev``, digests and attributions
  after a row id), publishes a batch with ``publish_async`` (each record with
  its stable ``Nats-Msg-Id``), and advances its marks once the stream
  acknowledged every record; the marks reach the store when the backlog is
  done or once a second. A crash, a ``kill -9`` or an outage repeats at most
  that second's records, which the stream's duplicate window drops and
  receivers apply idempotently anyway. Memory stays bounded by a batch.
- the **consumer** pulls from a durable consumer of its own
  (``gastownd_<node>``) on the town's stream, checks every record, applies
  a batch in one store transaction, acknowledges only after that commit, and
  pushes new remote lines to subscribers.

Local work never waits on the network: with NATS slow, down or misconfigured,
the only effect is a growing backlog, shown in ``status`` and the log; the
publisher catches up from the store when the stream is back.

nats-py keeps a few asyncio tasks of its own (reader, flusher, pinger) for its
connection; the connection is closed, shielded, when this task ends.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.abc
import msgspec
import structlog

from gastown_client.protocol import FederationInfo, NodeInfo
from gastownd.config import FederationConfig, parse_duration
from gastownd.core.events import format_ts
from gastownd.core.query import compile_filter
from gastownd.core.records import (
    EVENT_RUN_BYTES,
    MAX_EVENT_LINES,
    NAME_PATTERN,
    AnyMessage,
    AttributionMessage,
    DigestMessage,
    EventMessage,
    Kind,
    Rejected,
    SessionMessage,
    decode_message,
    encode_message,
    local_id_of,
    message_id,
    stream_name,
    subject,
    town_subjects,
)
from gastownd.daemon import Daemon
from gastownd.eventlog import BacklogGap
from gastownd.metrics.buckets import LAG_SECONDS, Buckets, stream_stored_at
from gastownd.store.remote import (
    MARK_ATTRIBUTIONS,
    MARK_DIGESTS,
    MARK_EVENTS,
    MARK_SESSIONS,
    RemoteEvent,
)

log = structlog.get_logger("gastownd.federation")

T = TypeVar("T")

FETCH_WAIT_S = 1.0
# A delivered record not acknowledged in this time (lost in flight, or its batch failed) is
# delivered again.
ACK_WAIT_S = 10.0
# JetStream API requests (stream and consumer checks): short, they are retried.
JS_API_TIMEOUT_S = 2.0
PUBLISH_TIMEOUT_S = 10.0
IDLE_WAKE_S = 1.0
MARK_INTERVAL_S = 1.0
ROUND_S = 0.025
# A round with this many lines (or more than one record) counts as busy.
BUSY_LINES = 8
# Lines read per publish round, and messages (up to MAX_EVENT_LINES lines each) per
# fetch: each fetch is applied in one store transaction, which local work may wait for.
EVENT_LINES_PER_ROUND = 16 * MAX_EVENT_LINES
FETCH_MESSAGES = 32
BACKOFF_S = (0.2, 0.5, 1.0, 2.0)
_EVERY_LINE = compile_filter()


def identity(config: FederationConfig, town: Path) -> tuple[str, str]:
    """This node's and this town's names: configured, else the host's and mayor/town.json's."""
    node = config.node or _token(socket.gethostname().split(".")[0]) or "node"
    return node, config.town or _town_name(town)


def _town_name(town: Path) -> str:
    try:
        data = json.loads((town / "mayor" / "town.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    name = data.get("name") if isinstance(data, dict) else None
    return _token(name if isinstance(name, str) else "") or _token(town.name) or "town"


def _token(text: str) -> str:
    """``text`` as a subject token: other characters become ``-``."""
    cleaned = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "_-") else "-" for ch in text)
    cleaned = cleaned.strip("-")[:64]
    return cleaned if NAME_PATTERN.fullmatch(cleaned) else ""


@dataclass
class _Outgoing:
    subject: str
    msg_id: str
    data: bytes
    lines: int = 1


class Federation:
    def __init__(self, daemon: Daemon, config: FederationConfig) -> None:
        self.daemon = daemon
        self.config = config
        self.node = daemon.node
        self.town = daemon.town_name
        self.stream = stream_name(self.town)
        self.connected = False
        self.published = 0
        self.applied = 0
        # Records larger than the server's max_payload: they never leave this node.
        self.too_large = 0
        self.rejected: Counter[str] = Counter()
        # Stored in the town's stream (the origin's publish acknowledged) -> applied here.
        self.lag_seconds = Buckets(LAG_SECONDS)
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        # Highest arrival number of a remote line applied: the live edge for subscribers.
        self.last_arrival = 0
        self._wake = anyio.Event()
        self._reconnected = anyio.Event()
        # The last publish round was a busy one (see _publish_loop): pace rounds and fetches.
        self._busy = False
        # Set when the store may hold new records to send (sessions, digests, attributions):
        # an emit only adds a line, and reading the store for it would cost a thread hop.
        self._store_changed = True
        self._logged_rejections: set[str] = set()
        self._marks: dict[str, str] = {}

    # ------------------------------------------------------------ wiring

    def wake(self) -> None:
        """A line was added to the local log: publish soon."""
        self._wake.set()

    def store_changed(self) -> None:
        """A session record, digest or attribution may have been stored: publish soon."""
        self._store_changed = True
        self._wake.set()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect (retrying forever), make sure the stream exists, publish and consume."""
        sessions = self.daemon.sessions
        assert sessions is not None
        remote = sessions.store.remote
        self.last_arrival = await sessions.db(remote.last_arrival)
        for key in (MARK_EVENTS, MARK_SESSIONS, MARK_DIGESTS, MARK_ATTRIBUTIONS):
            value = await sessions.db(sessions.store.meta, key)
            if value is not None:
                self._marks[key] = value
        task_status.started()
        log.info("federation_starting", node=self.node, town=self.town, servers=self.config.servers)
        attempt = 0
        while True:
            try:
                await self._session()
                attempt = 0
            except Exception as exc:  # the network's fault, or the server's: retry
                self._error("federation_failed", exc)
                await self._back_off(attempt)
                attempt += 1

    async def _session(self) -> None:
        import nats

        nc = await nats.connect(**self._connect_options())
        self.connected = nc.is_connected
        try:
            js = nc.jetstream(domain=self.config.jetstream_domain, timeout=JS_API_TIMEOUT_S)
            await self._retrying("federation_stream_check_failed", self._ensure_stream, js)
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._publish_loop, js)
                tasks.start_soon(self._consume_loop, js)
        finally:
            self.connected = False
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await nc.close()

    def _connect_options(self) -> dict[str, Any]:
        config = self.config

        async def disconnected() -> None:
            self.connected = False
            log.warning("federation_disconnected")

        async def reconnected() -> None:
            self.connected = True
            log.info("federation_reconnected")
            self._reconnected.set()  # ends every back-off: the server is there again
            self._reconnected = anyio.Event()
            self.wake()

        async def error(exc: Exception) -> None:
            self._error("federation_connection_error", exc)

        options: dict[str, Any] = {
            "servers": list(config.servers),
            "name": f"gastownd-{self.node}",
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,
            "connect_timeout": 2,
            "ping_interval": parse_duration(config.ping_interval),
            "max_outstanding_pings": 2,
            # Replies to this node cannot be read by other nodes' accounts.
            "inbox_prefix": f"_INBOX_{self.node}",
            "disconnected_cb": disconnected,
            "reconnected_cb": reconnected,
            "error_cb": error,
        }
        if config.creds:
            options["user_credentials"] = config.creds
        if config.user is not None:
            options["user"], options["password"] = config.user, config.password
        if config.tls_ca or config.tls_cert:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=config.tls_ca)
            if config.tls_cert and config.tls_key:
                context.load_cert_chain(config.tls_cert, config.tls_key)
            options["tls"] = context
            if config.tls_hostname:
                options["tls_hostname"] = config.tls_hostname
        return options

    async def _ensure_stream(self, js: Any) -> None:
        """Create the town's stream if it is missing; never change or delete one."""
        import nats.js.errors
        from nats.js.api import StreamConfig

        try:
            info = await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            max_age = (
                parse_duration(self.config.stream_max_age) if self.config.stream_max_age else 0
            )
            window = parse_duration(self.config.duplicate_window)
            await js.add_stream(
                StreamConfig(
                    name=self.stream,
                    subjects=[town_subjects(self.town)],
                    num_replicas=self.config.stream_replicas,
                    max_age=max_age or None,
                    duplicate_window=min(window, max_age) if max_age else window,
                )
            )
            log.info(
                "federation_stream_created",
                stream=self.stream,
                replicas=self.config.stream_replicas,
                max_age=self.config.stream_max_age or "forever",
            )
            return
        replicas = info.config.num_replicas
        if replicas != self.config.stream_replicas:
            log.warning(
                "federation_stream_differs",
                stream=self.stream,
                replicas=replicas,
                configured=self.config.stream_replicas,
            )

    # ------------------------------------------------------------ publishing

    async def _publish_loop(self, js: Any) -> None:
        attempt = 0
        unsaved: dict[str, str] = {}
        saved_at = time.monotonic()
        try:
            while True:
                round_started = time.monotonic()
                batch, marks = await self._next_batch()
                if not batch:
                    if unsaved:
                        await self._save_marks(unsaved)
                        saved_at = time.monotonic()
                    with anyio.move_on_after(IDLE_WAKE_S):
                        await self._wake.wait()
                    self._wake = anyio.Event()
                    continue
                try:
                    await self._publish(js, batch)
                except Exception as exc:
                    self._error("federation_publish_failed", exc, records=len(batch))
                    self._store_changed = True  # the batch is read again
                    await self._back_off(attempt)
                    attempt += 1
                    continue
                attempt = 0
                self._marks.update(marks)
                unsaved.update(marks)
                self.published += len(batch)
                # Marks are saved when the backlog is done, else once a second: a crash
                # repeats at most that much, which the stream and receivers drop.
                if time.monotonic() - saved_at >= MARK_INTERVAL_S:
                    await self._save_marks(unsaved)
                    saved_at = time.monotonic()
                # Under a stream of appends, at most one round per ROUND_S, so the next
                # carries a run of lines instead of a few; a light trickle goes at once.
                self._busy = len(batch) > 1 or self._lines_in(batch) >= BUSY_LINES
                if self._busy:
                    await anyio.sleep(max(0.0, round_started + ROUND_S - time.monotonic()))
        finally:
            if unsaved:
                with anyio.CancelScope(shield=True):
                    await self._save_marks(unsaved)

    @staticmethod
    def _lines_in(batch: Sequence[_Outgoing]) -> int:
        return sum(item.lines for item in batch)

    async def _save_marks(self, marks: dict[str, str]) -> None:
        sessions = self.daemon.sessions
        assert sessions is not None
        await sessions.db(sessions.store.remote.set_marks, dict(marks))
        marks.clear()

    async def _publish(self, js: Any, batch: Sequence[_Outgoing]) -> None:
        import nats.errors

        futures = []
        try:
            with anyio.fail_after(PUBLISH_TIMEOUT_S):
                for item in batch:
                    try:
                        future = await js.publish_async(
                            item.subject, item.data, headers={"Nats-Msg-Id": item.msg_id}
                        )
                    except nats.errors.MaxPayloadError:
                        # Retrying cannot help: the record stays local (docs: max_payload).
                        self.too_large += 1
                        log.error(
                            "federation_record_too_large",
                            id=item.msg_id,
                            bytes=len(item.data),
                            max_payload=js._nc.max_payload,
                        )
                        continue
                    futures.append(future)
                if futures:
                    await js.publish_async_completed()
            for future in futures:
                future.result()  # raises the stream's refusal, if any
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()  # frees nats-py's in-flight slot

    async def _next_batch(self) -> tuple[list[_Outgoing], dict[str, str]]:
        """The next records to publish and the marks to store once they are acknowledged."""
        sessions = self.daemon.sessions
        assert sessions is not None
        limit = self.config.batch
        batch, marks = await self._event_batch()
        if not self._store_changed:
            return batch, marks
        # Cleared before reading: a commit during the reads sets it again.
        self._store_changed = False
        remote = sessions.store.remote
        rev = self._row_mark(MARK_SESSIONS)
        for row in await sessions.db(remote.sessions_after, rev, limit):
            record = SessionMessage(town=self.town, node=self.node, id="", **row)
            batch.append(self._outgoing("session", record))
            marks[MARK_SESSIONS] = str(row["rev"])
        after_digest = self._row_mark(MARK_DIGESTS)
        for rowid, digest in await sessions.db(remote.digests_after, after_digest, limit):
            message = DigestMessage(town=self.town, node=self.node, id="", digest=digest)
            batch.append(self._outgoing("digest", message))
            marks[MARK_DIGESTS] = str(rowid)
        row_id = self._row_mark(MARK_ATTRIBUTIONS)
        for row in await sessions.db(remote.attributions_after, row_id, limit):
            attribution = AttributionMessage(town=self.town, node=self.node, id="", **row)
            batch.append(self._outgoing("attribution", attribution))
            marks[MARK_ATTRIBUTIONS] = str(row["local_id"])
        if any(m in marks for m in (MARK_SESSIONS, MARK_DIGESTS, MARK_ATTRIBUTIONS)):
            self._store_changed = True  # there may be more than a batch
        return batch, marks

    async def _event_batch(self) -> tuple[list[_Outgoing], dict[str, str]]:
        """Lines of the local log after the published cursor, from the archive first when
        retention moved them there before they were published."""
        eventlog = self.daemon.eventlog
        assert eventlog is not None
        epoch = eventlog.seqmap.epoch
        after = self._published_seq(epoch)
        head = eventlog.index.next_seq() - 1
        if after >= head:
            return [], {}
        backlog = eventlog.backlog(_EVERY_LINE, after, head, from_archive=True)
        chunk: list[tuple[int, bytes]] = []
        try:
            while len(chunk) < EVENT_LINES_PER_ROUND:
                more = await backlog.next()
                if not more:
                    break
                chunk += more
        except BacklogGap as exc:
            # Only with the archive turned off: those lines are gone, go on after them.
            index = eventlog.index
            skip_to = index.seqs[0] - 1 if len(index) else head
            log.error(
                "federation_lines_lost", after_seq=after, resume_after=skip_to, error=str(exc)
            )
            return [], {MARK_EVENTS: f"{epoch}:{skip_to}"}
        if not chunk:
            return [], {}
        batch = [
            self._outgoing(
                "event",
                EventMessage(
                    town=self.town,
                    node=self.node,
                    id="",
                    epoch=epoch,
                    seqs=[seq for seq, _ in run],
                    lines=[msgspec.Raw(line) for _, line in run],
                ),
            )
            for run in _runs(chunk)
        ]
        return batch, {MARK_EVENTS: f"{epoch}:{chunk[-1][0]}"}

    def _row_mark(self, key: str) -> int:
        """The last published session ``rev``, digest ``rowid`` or attribution id (0: none)."""
        return int(self._marks.get(key, "0"))

    def _published_seq(self, epoch: int) -> int:
        """The last local seq published in this epoch (-1: none)."""
        mark = self._marks.get(MARK_EVENTS)
        if mark is None:
            return -1
        mark_epoch, _, seq = mark.partition(":")
        return int(seq) if int(mark_epoch) == epoch else -1

    def keep_after_seq(self) -> int:
        """Lines after this seq are not published yet: without the archive (where the
        publisher also reads), retention must keep them."""
        eventlog = self.daemon.eventlog
        assert eventlog is not None
        return self._published_seq(eventlog.seqmap.epoch)

    async def _retrying(self, event: str, call: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``call`` until it succeeds (the server may be recovering), backing off between."""
        attempt = 0
        while True:
            try:
                return await call(*args)
            except Exception as exc:
                self._error(event, exc)
                await self._back_off(attempt)
                attempt += 1

    async def _back_off(self, attempt: int) -> None:
        """Wait before retrying after an error: longer each time, cut short by a reconnect."""
        with anyio.move_on_after(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]):
            await self._reconnected.wait()

    def _outgoing(self, kind: Kind, message: AnyMessage) -> _Outgoing:
        message.id = message_id(self.node, kind, local_id_of(message))
        lines = len(message.seqs) if isinstance(message, EventMessage) else 1
        return _Outgoing(
            subject(self.town, self.node, kind), message.id, encode_message(message), lines
        )

    # ------------------------------------------------------------ consuming

    async def _consume_loop(self, js: Any) -> None:
        import nats.errors
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.ALL,
            # Every message acknowledged by itself: with "ack all", acking a later message
            # would also ack an earlier one lost in flight (a server failing over), which
            # then is never delivered again.
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT_S,
            max_ack_pending=1000,
        )
        sub = await self._retrying(
            "federation_consumer_failed",
            partial(
                js.pull_subscribe,
                town_subjects(self.town),
                durable=f"gastownd_{self.node}",
                stream=self.stream,
                config=config,
            ),
        )
        attempt = 0
        while True:
            try:
                messages = await sub.fetch(FETCH_MESSAGES, timeout=FETCH_WAIT_S)
            except nats.errors.TimeoutError:
                continue
            except Exception as exc:  # failover, no responders: back off, never spin
                self._error("federation_fetch_failed", exc)
                await self._back_off(attempt)
                attempt += 1
                continue
            attempt = 0
            started = time.monotonic()
            applied = await self._apply(messages)
            for message in messages:
                await message.ack()  # after the commit: a crash before it redelivers
            if not applied and self._busy:
                # Only our own records came back, and we are busy publishing: take them in
                # batches rather than one fetch per publish round.
                await anyio.sleep(max(0.0, started + ROUND_S - time.monotonic()))

    async def _apply(self, messages: Sequence[Any]) -> int:
        """Check and apply other nodes' records; how many messages were theirs."""
        records: list[AnyMessage] = []
        stored_at: list[float | None] = []
        for message in messages:
            if message.subject.split(".")[2:3] == [self.node]:
                continue  # our own records, echoed by the town's stream
            try:
                records.append(
                    decode_message(
                        message.subject, message.data, town=self.town, local_node=self.node
                    )
                )
                stored_at.append(stream_stored_at(message))
            except Rejected as rejected:
                self._reject(rejected, message.subject)
        if not records:
            return 0
        sessions = self.daemon.sessions
        assert sessions is not None
        applied = await sessions.apply_remote(records, self.daemon.clock())
        self.applied += sum(applied.counts.values())
        applied_at = time.time()
        for at in stored_at:
            if at is not None:
                self.lag_seconds.observe(applied_at - at)
        if applied.events:
            self.last_arrival = max(self.last_arrival, applied.events[-1].arrival)
            if self.daemon.subscriptions is not None:
                self.daemon.subscriptions.publish_remote(applied.events)
        return len(records)

    def _reject(self, rejected: Rejected, subject_name: str) -> None:
        self.rejected[rejected.reason] += 1
        key = f"{rejected.reason}:{subject_name.split('.')[2:3]}"
        if key not in self._logged_rejections:  # once per reason and sender
            self._logged_rejections.add(key)
            log.warning(
                "federation_record_rejected",
                reason=rejected.reason,
                detail=rejected.detail[:200],
                subject=subject_name[:200],
            )

    # ------------------------------------------------------------ status

    def _error(self, event: str, exc: BaseException, **context: object) -> None:
        while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]  # the task that failed, not the group that carried it
        text = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
        if text != self.last_error:
            log.warning(event, error=text, **context)
        self.last_error, self.last_error_at = text, time.time()

    async def info(self) -> FederationInfo:
        sessions = self.daemon.sessions
        eventlog = self.daemon.eventlog
        assert sessions is not None and eventlog is not None
        remote = sessions.store.remote
        marks = {
            "sessions": self._row_mark(MARK_SESSIONS),
            "digests": self._row_mark(MARK_DIGESTS),
            "attributions": self._row_mark(MARK_ATTRIBUTIONS),
        }
        backlog = await sessions.db(remote.backlog, marks)
        index = eventlog.index
        after = index.position_after(self._published_seq(eventlog.seqmap.epoch))
        backlog["events"] = len(index) - after
        nodes = await sessions.db(remote.nodes)
        return FederationInfo(
            enabled=True,
            node=self.node,
            town=self.town,
            stream=self.stream,
            servers=list(self.config.servers),
            connected=self.connected,
            backlog=dict(sorted(backlog.items())),
            published=self.published,
            too_large=self.too_large,
            applied=self.applied,
            rejected=dict(sorted(self.rejected.items())),
            nodes=[
                NodeInfo(
                    node=n.node,
                    last_record_at=format_ts(n.last_record_at),
                    events=n.events,
                    sessions=n.sessions,
                    digests=n.digests,
                    attributions=n.attributions,
                )
                for n in nodes
            ],
            last_error=self.last_error,
            last_error_at=format_ts(self.last_error_at) if self.last_error_at else None,
        )


def _runs(lines: Sequence[tuple[int, bytes]]) -> list[list[tuple[int, bytes]]]:
    """``lines`` cut into event records: at most ``MAX_EVENT_LINES`` lines, and about
    ``EVENT_RUN_BYTES`` (a longer line travels alone)."""
    runs: list[list[tuple[int, bytes]]] = []
    size = 0
    for item in lines:
        if not runs or len(runs[-1]) >= MAX_EVENT_LINES or size + len(item[1]) > EVENT_RUN_BYTES:
            runs.append([])
            size = 0
        runs[-1].append(item)
        size += len(item[1])
    return runs


__all__ = ["Federation", "RemoteEvent", "identity"]
