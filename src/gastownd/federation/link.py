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
  pushes new remote lines to subscribers. A record that cannot be applied
  (refused at decode, dated too far ahead, refused by the store) is a
  rejection: counted by reason (kept across restarts), logged, and terminated
  so the stream never redelivers it; the rest of its batch is applied.
- before either runs, the daemon holds its node name in the town
  (:mod:`gastownd.federation.identity`): a second daemon under a held name
  neither publishes nor consumes, and says so in ``status``.

Local work never waits on the network: with NATS slow, down or misconfigured,
the only effect is a growing backlog, shown in ``status`` and the log; the
publisher catches up from the store when the stream is back.

A watchdog flushes the connection every half ``ping_interval``: a server that
stops answering (frozen, not closed) shows ``connected: false`` and is left for
another within 1.5 × ``ping_interval``, and the publish round waiting on it is
cut short. Every failure is logged as JSON with its cause (repeats of one
error at most once a minute, with their count), ``last_error`` is cleared once
the failing part works again.

nats-py keeps a few asyncio tasks of its own (reader, flusher, pinger) for its
connection; the connection is closed, shielded, when this task ends.
"""

from __future__ import annotations

import json
import secrets
import socket
import ssl
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.abc
import msgspec
import structlog

from gastown_client.protocol import FederationError, FederationInfo, NodeConflict, NodeInfo
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
    refuse_future,
    stream_name,
    subject,
    town_subjects,
)
from gastownd.eventlog import BacklogGap, EventLog
from gastownd.eventlog.subscriptions import Subscriptions
from gastownd.federation.identity import Holder, NodeClaim, NodeNameHeld
from gastownd.metrics.buckets import LAG_SECONDS, Buckets, BucketsView, stream_stored_at
from gastownd.process.config import FederationConfig, parse_duration
from gastownd.process.state import DaemonState
from gastownd.sessions.recorder import SessionRecorder
from gastownd.store.remote import (
    MARK_ATTRIBUTIONS,
    MARK_DIGESTS,
    MARK_EVENTS,
    MARK_INSTANCE,
    MARK_SESSIONS,
    REJECTED_COUNTS,
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
# A publish round not acknowledged in this time is sent again (the same message ids):
# a stream that lost its leader answers again once the cluster elected another.
PUBLISH_TIMEOUT_S = 3.0
IDLE_WAKE_S = 1.0
# Between attempts on a server that failed to connect.
RECONNECT_WAIT_S = 0.5
MARK_INTERVAL_S = 1.0
ROUND_S = 0.025
# A round with this many lines (or more than one record) counts as busy.
BUSY_LINES = 8
# Lines read per publish round, and messages (up to MAX_EVENT_LINES lines each) per
# fetch: each fetch is applied in one store transaction, which local work may wait for.
EVENT_LINES_PER_ROUND = 16 * MAX_EVENT_LINES
FETCH_MESSAGES = 32
BACKOFF_S = (0.2, 0.5, 1.0, 2.0)
# One error (or one rejection reason from one sender) is logged at most this often.
LOG_EVERY_S = 60.0
# Failures kept for status.
ERROR_HISTORY = 10
# Failed attempts to claim the node name (the bucket unreachable, not held) before this
# node federates unclaimed, warning, while it keeps trying.
CLAIM_ATTEMPTS = 3
_EVERY_LINE = compile_filter()


class NodeNameLost(Exception):
    """The lease on this node's name ran out and another daemon took the name."""


class RateLimited:
    """Which keys may be logged now: the first time, then once per ``every_s``; how
    many times each key came up in between."""

    def __init__(
        self, every_s: float = LOG_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._every_s = every_s
        self._clock = clock
        self._last: dict[str, tuple[float, int]] = {}

    def admit(self, key: str, count: int = 1) -> int | None:
        """How many times ``key`` came up since it was last logged (this one included),
        when it may be logged now; else None."""
        now = self._clock()
        logged_at, skipped = self._last.get(key, (now - self._every_s, 0))
        if now - logged_at < self._every_s:
            self._last[key] = (logged_at, skipped + count)
            return None
        if len(self._last) > 10_000:  # many distinct senders: forget the oldest
            self._last.clear()
        self._last[key] = (now, 0)
        return skipped + count


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
    """The link to the town's other nodes: the name claim, the publisher and the consumer."""

    enabled = True

    def __init__(
        self,
        state: DaemonState,
        config: FederationConfig,
        eventlog: EventLog,
        sessions: SessionRecorder,
        subscriptions: Subscriptions,
    ) -> None:
        self.state = state
        self.eventlog = eventlog
        self.sessions = sessions
        self.subscriptions = subscriptions
        self.config = config
        self.node = state.node
        self.town = state.town_name
        self.stream = stream_name(self.town)
        self.connected = False
        self.published = 0
        self.applied = 0
        # Records larger than the server's max_payload: they never leave this node.
        self.too_large = 0
        self.rejected: Counter[str] = Counter()
        # Stored in the town's stream (the origin's publish acknowledged) -> applied here.
        self.lag_seconds = Buckets(LAG_SECONDS)
        # The total of ``rejected`` as last stored.
        self._rejected_saved = 0
        self.last_error_at: float | None = None
        # Failing parts (by log event) -> their error, while they fail.
        self._failing: dict[str, str] = {}
        self._errors: deque[FederationError] = deque(maxlen=ERROR_HISTORY)
        self._logged = RateLimited()
        self.instance = secrets.token_hex(8)
        self.node_conflict: Holder | None = None
        self.clock_offset_s: float | None = None
        self.max_skew_s = parse_duration(config.max_clock_skew)
        self._nc: Any = None
        self._previous_instance: str | None = None
        # Set once the counts kept across restarts are loaded (status waits for them).
        self._loaded = anyio.Event()
        # The server the watchdog left for not answering: tried last when reconnecting.
        self._unresponsive: tuple[str | None, int | None] | None = None
        # Cancelled when the connection is lost: a publish round waiting on it ends.
        self._publish_scope: anyio.CancelScope | None = None
        # Highest arrival number of a remote line applied: the live edge for subscribers.
        self.last_arrival = 0
        self._wake = anyio.Event()
        self._reconnected = anyio.Event()
        # The last publish round was a busy one (see _publish_loop): pace rounds and fetches.
        self._busy = False
        # Set when the store may hold new records to send (sessions, digests, attributions):
        # an emit only adds a line, and reading the store for it would cost a thread hop.
        self._store_changed = True
        self._marks: dict[str, str] = {}

    # ------------------------------------------------------------ wiring

    def wake(self) -> None:
        """A line was added to the local log: publish soon."""
        self._wake.set()

    def store_changed(self) -> None:
        """A session record, digest or attribution may have been stored: publish soon."""
        self._store_changed = True
        self._wake.set()

    async def live_edge(self) -> int:
        """The highest arrival number of a remote line applied (town-wide subscriptions)."""
        return self.last_arrival

    def lag_view(self) -> BucketsView | None:
        return self.lag_seconds.view()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect (retrying forever), make sure the stream exists, publish and consume."""
        sessions = self.sessions
        remote = sessions.store.remote
        self.last_arrival = await sessions.db(remote.last_arrival)
        for key in (MARK_EVENTS, MARK_SESSIONS, MARK_DIGESTS, MARK_ATTRIBUTIONS):
            value = await sessions.db(sessions.store.meta, key)
            if value is not None:
                self._marks[key] = value
        self.rejected.update(await sessions.db(remote.rejected_counts))
        self._rejected_saved = sum(self.rejected.values())
        self._previous_instance = await sessions.db(sessions.store.meta, MARK_INSTANCE)
        self._loaded.set()
        task_status.started()
        log.info(
            "federation_starting",
            node=self.node,
            town=self.town,
            servers=self.config.servers,
            instance=self.instance,
        )
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
        self._nc = nc
        self.connected = nc.is_connected
        self._ok("federation_failed", "federation_connection_error")
        try:
            js = nc.jetstream(domain=self.config.jetstream_domain, timeout=JS_API_TIMEOUT_S)
            await self._retrying("federation_stream_check_failed", self._ensure_stream, js)
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._watch_connection, nc)
                # Nothing is published or consumed before the node's name is held.
                await tasks.start(self._hold_name, js)
                tasks.start_soon(self._publish_loop, js)
                tasks.start_soon(self._consume_loop, js)
        finally:
            self.connected = False
            self._nc = None
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await nc.close()

    async def _watch_connection(self, nc: Any) -> None:
        """Flush every half ``ping_interval``: a server that does not answer within one is
        frozen or gone, whatever TCP says; leave it for another one."""
        import nats.errors

        interval = parse_duration(self.config.ping_interval)
        while True:
            await anyio.sleep(interval / 2)
            if not nc.is_connected:
                continue
            try:
                await nc.flush(timeout=interval)
            except (nats.errors.TimeoutError, TimeoutError) as exc:
                if not nc.is_connected:
                    continue  # it reconnects already
                self._lost_connection()
                self._error("federation_server_unresponsive", exc, server=_server_url(nc))
                url = nc.connected_url
                self._unresponsive = (url.hostname, url.port) if url is not None else None
                await nc.force_reconnect()
            except Exception:  # closed or reconnecting: nats-py reports it
                continue

    def _lost_connection(self) -> None:
        self.connected = False
        if self._publish_scope is not None:
            self._publish_scope.cancel()

    # ------------------------------------------------------------ node name

    async def _hold_name(
        self, js: Any, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Claim this node's name, then keep it while the session lasts; started once
        held (or, when the town's bucket cannot be reached, after a few attempts)."""
        claim = NodeClaim(
            js,
            town=self.town,
            node=self.node,
            instance=self.instance,
            lease_s=parse_duration(self.config.node_lease),
            replicas=self.config.stream_replicas,
            clock=self.state.clock,
            previous_instance=self._previous_instance,
        )
        started = False
        attempt = 0
        try:
            while not claim.held:
                try:
                    await claim.claim()
                except NodeNameHeld as held:
                    if started:
                        raise NodeNameLost(str(held)) from None
                    self._conflict(held.holder)
                    await anyio.sleep(claim.lease_s / 3)
                    continue
                except Exception as exc:
                    self._error("federation_node_claim_failed", exc)
                    attempt += 1
                    if attempt == CLAIM_ATTEMPTS and not started:
                        log.warning(
                            "federation_node_unclaimed",
                            node=self.node,
                            bucket=f"GASTOWN_{self.town}_nodes",
                            fix="let this node create and update its key in the town's "
                            "node bucket (docs/federation.md); until then nothing stops "
                            "another daemon from using the same node name",
                        )
                        task_status.started()
                        started = True
                    await self._back_off(attempt)
                    continue
            self._ok("federation_node_claim_failed")
            self.clock_offset_s = claim.clock_offset_s
            if self._previous_instance != self.instance:
                sessions = self.sessions
                await sessions.db(sessions.store.remote.set_marks, {MARK_INSTANCE: self.instance})
                self._previous_instance = self.instance
            if self.node_conflict is not None:
                log.info("federation_node_claimed", node=self.node, instance=self.instance)
            self.node_conflict = None
            if not started:
                task_status.started()
            renewed_at = time.monotonic()
            while True:
                await anyio.sleep(claim.lease_s / 3)
                try:
                    await claim.renew()
                except NodeNameHeld as held:
                    self._conflict(held.holder)
                    raise NodeNameLost(str(held)) from None
                except Exception as exc:
                    self._error("federation_node_renew_failed", exc)
                    if time.monotonic() - renewed_at > claim.lease_s:
                        # Another daemon may hold the name by now: stop until it is ours.
                        raise NodeNameLost("the lease ran out before it could be renewed") from exc
                    continue
                renewed_at = time.monotonic()
                self._ok("federation_node_renew_failed")
                self.clock_offset_s = claim.clock_offset_s
        finally:
            if claim.held:
                with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                    try:
                        await claim.release()
                    except Exception as exc:  # the lease runs out anyway
                        log.info("federation_node_release_failed", error=_describe(exc))

    def _conflict(self, holder: Holder) -> None:
        self.node_conflict = holder
        repeats = self._logged.admit(f"conflict:{holder.instance}")
        if repeats is not None:
            log.error(
                "federation_node_conflict",
                node=self.node,
                held_by_instance=holder.instance,
                held_by_host=holder.host,
                held_by_pid=holder.pid,
                since=holder.since,
                repeats=repeats,
                fix=f"another daemon runs as node {self.node!r}: set a name unique in the "
                "town as [federation] node in settings/gastownd.toml and restart; this "
                "daemon neither publishes nor consumes until the name is free",
            )

    def _connect_options(self) -> dict[str, Any]:
        config = self.config

        async def disconnected() -> None:
            self._lost_connection()
            log.warning("federation_disconnected")

        async def reconnected() -> None:
            self.connected = True
            self._unresponsive = None
            self._ok("federation_connection_error", "federation_server_unresponsive")
            log.info("federation_reconnected", server=_server_url(self._nc))
            self._reconnected.set()  # ends every back-off: the server is there again
            self._reconnected = anyio.Event()
            self.wake()

        async def error(exc: Exception) -> None:
            self._error("federation_connection_error", exc)

        def next_server(servers: list[Any], info: dict[str, Any]) -> tuple[Any, float]:
            # The servers that failed least first, a frozen one last: it takes a whole
            # connect timeout to fail (nats-py's own choice is random).
            chosen = min(
                servers,
                key=lambda s: ((s.uri.hostname, s.uri.port) == self._unresponsive, s.reconnects),
            )
            return chosen, RECONNECT_WAIT_S if chosen.reconnects else 0.0

        options: dict[str, Any] = {
            "servers": list(config.servers),
            "name": f"gastownd-{self.node}",
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": RECONNECT_WAIT_S,
            "reconnect_to_server_handler": next_server,
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
                self._ok("federation_publish_failed")
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
        sessions = self.sessions
        await sessions.db(sessions.store.remote.set_marks, dict(marks))
        marks.clear()

    async def _publish(self, js: Any, batch: Sequence[_Outgoing]) -> None:
        """Publish ``batch``; return once the stream acknowledged every record, else raise.

        Cut short when the connection is lost (see ``_lost_connection``): the round is
        sent again, with the same message ids, on the next server.
        """
        import nats.errors

        futures: list[Any] = []
        scope = anyio.CancelScope(deadline=anyio.current_time() + PUBLISH_TIMEOUT_S)
        self._publish_scope = scope
        try:
            with scope:
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
            if scope.cancelled_caught:
                if anyio.current_time() >= scope.deadline:
                    raise TimeoutError(f"not acknowledged in {PUBLISH_TIMEOUT_S:g}s")
                raise ConnectionError("connection lost during the publish round")
            for future in futures:
                future.result()  # raises the stream's refusal, if any
        finally:
            self._publish_scope = None
            for future in futures:
                if not future.done():
                    future.cancel()  # frees nats-py's in-flight slot
                elif not future.cancelled():
                    future.exception()  # retrieved: asyncio would print it at exit

    async def _next_batch(self) -> tuple[list[_Outgoing], dict[str, str]]:
        """The next records to publish and the marks to store once they are acknowledged."""
        sessions = self.sessions
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
        eventlog = self.eventlog
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
        eventlog = self.eventlog
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
            except (nats.errors.TimeoutError, TimeoutError):
                # Nothing to fetch (nats-py raises either type): the server answered.
                self._ok("federation_fetch_failed")
                continue
            except Exception as exc:  # failover, no responders: back off, never spin
                self._error("federation_fetch_failed", exc)
                await self._back_off(attempt)
                attempt += 1
                continue
            attempt = 0
            self._ok("federation_fetch_failed")
            started = time.monotonic()
            try:
                applied = await self._apply(messages)
            except Exception as exc:  # the store's trouble: unacknowledged, they come again
                self._error("federation_apply_failed", exc, records=len(messages))
                await self._back_off(attempt)
                attempt += 1
                continue
            self._ok("federation_apply_failed")
            if not applied and self._busy:
                # Only our own records came back, and we are busy publishing: take them in
                # batches rather than one fetch per publish round.
                await anyio.sleep(max(0.0, started + ROUND_S - time.monotonic()))

    async def _apply(self, messages: Sequence[Any]) -> int:
        """Check and apply other nodes' records, acknowledge them and terminate the
        rejected ones; how many messages were theirs."""
        done: list[Any] = []  # applied, or our own: acknowledged
        refused: list[Any] = []  # rejected: terminated, never delivered again
        records: list[AnyMessage] = []
        carriers: list[Any] = []
        not_after = self.state.clock() + self.max_skew_s
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
                self._reject(rejected.reason, sender, rejected.detail)
                refused.append(message)
                continue
            kept, future = refuse_future(record, not_after)
            if future:
                self._reject(
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
            applied = await sessions.apply_remote(records, self.state.clock())
            failed = {index for index, _ in applied.failed}
            for index, why in applied.failed:
                self._reject("store_refused", records[index].node, why)
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
        total = sum(self.rejected.values())
        if total == self._rejected_saved:
            return
        sessions = self.sessions
        counts = json.dumps(dict(sorted(self.rejected.items())))
        await sessions.db(sessions.store.remote.set_marks, {REJECTED_COUNTS: counts})
        self._rejected_saved = total

    def _reject(self, reason: str, sender: str, detail: str, count: int = 1) -> None:
        self.rejected[reason] += count
        repeats = self._logged.admit(f"rejected:{reason}:{sender}", count)
        if repeats is not None:  # once per reason and sender, then once a minute
            log.warning(
                "federation_record_rejected",
                reason=reason,
                sender=sender[:64],
                detail=detail[:200],
                count=repeats,
            )

    # ------------------------------------------------------------ status

    def _error(self, event: str, exc: BaseException, **context: object) -> None:
        """A failure of one part (``event``): always in status, logged with its cause;
        the same error again at most once a minute, with how often it happened."""
        text = _describe(exc)
        now = time.time()
        self._failing[event] = text
        self.last_error_at = now
        self._errors.append(FederationError(at=format_ts(now), event=event, error=text))
        repeats = self._logged.admit(f"error:{event}:{text}")
        if repeats is not None:
            cause = _cause(exc)
            if cause is not None:
                context["cause"] = cause
            log.warning(event, error=text, repeats=repeats, **context)

    def _ok(self, *events: str) -> None:
        """These parts work again: their errors leave ``last_error`` (not the history)."""
        for event in events:
            if self._failing.pop(event, None) is not None:
                log.info("federation_recovered", failed=event)

    @property
    def last_error(self) -> str | None:
        """The latest error of a part that still fails."""
        return next(reversed(self._failing.values()), None)

    async def info(self) -> FederationInfo:
        with anyio.move_on_after(2):  # the socket serves before federation starts
            await self._loaded.wait()
        sessions = self.sessions
        eventlog = self.eventlog
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
            server=_server_url(self._nc) if self.connected else None,
            server_name=_server_name(self._nc) if self.connected else None,
            instance=self.instance,
            node_conflict=(
                NodeConflict(
                    node=self.node,
                    instance=self.node_conflict.instance,
                    host=self.node_conflict.host,
                    since=self.node_conflict.since,
                )
                if self.node_conflict is not None
                else None
            ),
            clock_offset_s=self.clock_offset_s,
            errors=list(self._errors),
        )


def _sender(subject_name: str) -> str:
    parts = subject_name.split(".")
    return parts[2] if len(parts) > 2 else ""


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]  # the task that failed, not the group that carried it
    return f"{type(exc).__name__}: {exc}".strip().rstrip(":")


def _cause(exc: BaseException) -> str | None:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    cause = exc.__cause__ or exc.__context__
    return _describe(cause) if cause is not None else None


def _server_url(nc: Any) -> str | None:
    """The URL of the server ``nc`` is connected to, without credentials."""
    url = getattr(nc, "connected_url", None) if nc is not None else None
    if url is None or url.hostname is None:
        return None
    return (
        f"{url.scheme}://{url.hostname}:{url.port}"
        if url.port
        else f"{url.scheme}://{url.hostname}"
    )


def _server_name(nc: Any) -> str | None:
    info = getattr(nc, "_server_info", None) if nc is not None else None
    name = info.get("server_name") if isinstance(info, dict) else None
    return str(name) if name else None


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
