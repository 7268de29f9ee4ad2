"""Federation over NATS JetStream: the shell, and the only importer of ``nats``.

Each daemon stays the only writer of its own log and store. Federation
publishes what this node learns and applies what other nodes publish
(records: :mod:`gastownd.core.records`; storage: :mod:`gastownd.store.remote`).
This module is the link: the connection, the stream, the node name, and the
parts it runs while connected:

- the **publisher** (:mod:`gastownd.federation.publisher`): a crash, a
  ``kill -9`` or an outage repeats at most a second's records, which the
  stream's duplicate window drops and receivers apply idempotently anyway.
  Memory stays bounded by a batch.
- the **consumer** (:mod:`gastownd.federation.consumer`).
- how the link fares (:mod:`gastownd.federation.health`) and what ``status``
  says (:mod:`gastownd.federation.status`).
- before the publisher or the consumer runs, the daemon holds its node name in the town
  (:mod:`gastownd.federation.identity`): a second daemon under a held name
  neither publishes nor consumes, and says so in ``status``.

Local work never waits on the network: with NATS slow, down or misconfigured,
the only effect is a growing backlog, shown in ``status`` and the log; the
publisher catches up from the store when the stream is back.

A watchdog flushes the connection every half ``ping_interval``: a server that
stops answering (frozen, not closed) shows ``connected: false`` and is left for
another within 1.5 × ``ping_interval``, and the publish round waiting on it is
cut short. Every failure is logged as JSON with its cause (repeats of one
error once per 10 s, with their ``count`` and ``total``), ``last_error`` is
cleared once the failing part works again.

nats-py keeps a few asyncio tasks of its own (reader, flusher, pinger) for its
connection; the connection is closed, shielded, when this task ends.
"""

from __future__ import annotations

import secrets
import ssl
import time
from typing import Any

import anyio
import anyio.abc
import structlog

from gastown_client.protocol import FederationInfo
from gastownd.core.federation_checks import (
    STREAM_LIMITS_FIX,
    StreamLimits,
    stream_limit_problems,
)
from gastownd.core.records import stream_name, town_subjects
from gastownd.eventlog import EventLog
from gastownd.eventlog.subscriptions import Subscriptions
from gastownd.federation.consumer import Consumer
from gastownd.federation.health import LinkHealth, describe
from gastownd.federation.identity import Holder, NodeClaim, NodeNameHeld
from gastownd.federation.publisher import Publisher
from gastownd.federation.status import federation_info, server_url
from gastownd.metrics.buckets import BucketsView
from gastownd.process.config import FederationConfig, parse_duration
from gastownd.process.state import DaemonState
from gastownd.sessions.recorder import SessionRecorder
from gastownd.store.remote import MARK_INSTANCE

log = structlog.get_logger("gastownd.federation")

# JetStream API requests (stream and consumer checks): short, they are retried.
JS_API_TIMEOUT_S = 2.0
# Between attempts on a server that failed to connect.
RECONNECT_WAIT_S = 0.5
# Failed attempts to claim the node name (the bucket unreachable, not held) before this
# node federates unclaimed, warning, while it keeps trying.
CLAIM_ATTEMPTS = 3


class NodeNameLost(Exception):
    """The lease on this node's name ran out and another daemon took the name."""


class Federation:
    """The link to the town's other nodes: the connection, the stream, the node name; the
    publisher and the consumer run while it is connected."""

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
        self.config = config
        self.node = state.node
        self.town = state.town_name
        self.stream = stream_name(self.town)
        self.connected = False
        self.health = LinkHealth()
        self.publisher = Publisher(config, self.node, self.town, eventlog, sessions, self.health)
        self.consumer = Consumer(
            node=self.node,
            town=self.town,
            stream=self.stream,
            max_skew_s=parse_duration(config.max_clock_skew),
            clock=state.clock,
            sessions=sessions,
            subscriptions=subscriptions,
            health=self.health,
            publishing_busy=lambda: self.publisher.busy,
        )
        self.instance = secrets.token_hex(8)
        self.node_conflict: Holder | None = None
        self.clock_offset_s: float | None = None
        self._nc: Any = None
        self._previous_instance: str | None = None
        # Set once the counts kept across restarts are loaded (status waits for them).
        self._loaded = anyio.Event()
        # The server the watchdog left for not answering: tried last when reconnecting.
        self._unresponsive: tuple[str | None, int | None] | None = None

    # ------------------------------------------------------------ wiring

    def wake(self) -> None:
        """A line was added to the local log: publish soon."""
        self.publisher.wake()

    def store_changed(self) -> None:
        """A session record, digest or attribution may have been stored: publish soon."""
        self.publisher.store_changed()

    def keep_after_seq(self) -> int:
        """Lines after this seq are not published yet (retention without the archive)."""
        return self.publisher.keep_after_seq()

    async def live_edge(self) -> int:
        """The highest arrival number of a remote line applied (town-wide subscriptions)."""
        return self.consumer.last_arrival

    def lag_view(self) -> BucketsView | None:
        return self.consumer.lag_seconds.view()

    async def info(self) -> FederationInfo:
        with anyio.move_on_after(2):  # the socket serves before federation starts
            await self._loaded.wait()
        return await federation_info(
            config=self.config,
            node=self.node,
            town=self.town,
            stream=self.stream,
            instance=self.instance,
            connected=self.connected,
            connection=self._nc,
            node_conflict=self.node_conflict,
            clock_offset_s=self.clock_offset_s,
            eventlog=self.eventlog,
            sessions=self.sessions,
            publisher=self.publisher,
            consumer=self.consumer,
            health=self.health,
        )

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect (retrying forever), make sure the stream exists, publish and consume."""
        sessions = self.sessions
        await self.consumer.load()
        await self.publisher.load_marks()
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
                self.health.error("federation_failed", exc)
                await self.health.back_off(attempt)
                attempt += 1

    async def _session(self) -> None:
        import nats

        nc = await nats.connect(**self._connect_options())
        self._nc = nc
        self.connected = nc.is_connected
        self.health.ok("federation_failed", "federation_connection_error")
        try:
            js = nc.jetstream(domain=self.config.jetstream_domain, timeout=JS_API_TIMEOUT_S)
            created = await self.health.retrying(
                "federation_stream_check_failed",
                ensure_stream,
                js,
                self.config,
                self.town,
                self.stream,
            )
            if created is not None:
                await self.publisher.follow_stream(self.stream, created)
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._watch_connection, nc)
                # Nothing is published or consumed before the node's name is held.
                await tasks.start(self._hold_name, js)
                tasks.start_soon(self.publisher.run, js)
                tasks.start_soon(self.consumer.run, js)
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
                self.health.error("federation_server_unresponsive", exc, server=server_url(nc))
                url = nc.connected_url
                self._unresponsive = (url.hostname, url.port) if url is not None else None
                await nc.force_reconnect()
            except Exception:  # closed or reconnecting: nats-py reports it
                continue

    def _lost_connection(self) -> None:
        self.connected = False
        self.publisher.cut_short()

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
                    self.health.error("federation_node_claim_failed", exc)
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
                    await self.health.back_off(attempt)
                    continue
            self.health.ok("federation_node_claim_failed")
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
                    self.health.error("federation_node_renew_failed", exc)
                    if time.monotonic() - renewed_at > claim.lease_s:
                        # Another daemon may hold the name by now: stop until it is ours.
                        raise NodeNameLost("the lease ran out before it could be renewed") from exc
                    continue
                renewed_at = time.monotonic()
                self.health.ok("federation_node_renew_failed")
                self.clock_offset_s = claim.clock_offset_s
        finally:
            if claim.held:
                with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                    try:
                        await claim.release()
                    except Exception as exc:  # the lease runs out anyway
                        log.info("federation_node_release_failed", error=describe(exc))

    def _conflict(self, holder: Holder) -> None:
        self.node_conflict = holder
        self.health.conflict(self.node, holder)

    def _connect_options(self) -> dict[str, Any]:
        config = self.config

        async def disconnected() -> None:
            self._lost_connection()
            log.warning("federation_disconnected")

        async def reconnected() -> None:
            self.connected = True
            self._unresponsive = None
            self.health.ok("federation_connection_error", "federation_server_unresponsive")
            log.info("federation_reconnected", server=server_url(self._nc))
            self.health.reconnected()  # ends every back-off: the server is there again
            self.wake()

        async def error(exc: Exception) -> None:
            self.health.error("federation_connection_error", exc)

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
        options.update(auth_options(config))
        return options


async def ensure_stream(js: Any, config: FederationConfig, town: str, stream: str) -> str | None:
    """Create the town's stream if it is missing; never change or delete one. Returns when
    the stream was made (None if the server does not say): a stream made again is another."""
    import nats.js.errors
    from nats.js.api import StreamConfig

    try:
        info = await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        max_age = parse_duration(config.stream_max_age) if config.stream_max_age else 0
        window = parse_duration(config.duplicate_window)
        made = await js.add_stream(
            StreamConfig(
                name=stream,
                subjects=[town_subjects(town)],
                num_replicas=config.stream_replicas,
                max_age=max_age or None,
                duplicate_window=min(window, max_age) if max_age else window,
            )
        )
        log.info(
            "federation_stream_created",
            stream=stream,
            replicas=config.stream_replicas,
            max_age=config.stream_max_age or "forever",
        )
        return _created(made)
    replicas = info.config.num_replicas
    if replicas != config.stream_replicas:
        log.warning(
            "federation_stream_differs",
            stream=stream,
            replicas=replicas,
            configured=config.stream_replicas,
        )
    problems = stream_limit_problems(_limits(info.config))
    if problems:  # someone else made it, or changed it: say what it costs the town
        log.warning(
            "federation_stream_differs",
            stream=stream,
            problems=[text for _, text in problems],
            fix=STREAM_LIMITS_FIX,
        )
    return _created(info)


def _limits(config: Any) -> StreamLimits:
    def text(value: Any, default: str) -> str:
        return str(getattr(value, "value", value) or default)

    return StreamLimits(
        retention=text(config.retention, "limits"),
        discard=text(config.discard, "old"),
        max_msgs=config.max_msgs or -1,
        max_bytes=config.max_bytes or -1,
        max_msg_size=config.max_msg_size or -1,
    )


def _created(info: Any) -> str | None:
    created = getattr(info, "created", None)
    return created.isoformat() if created is not None else None


def auth_options(config: FederationConfig) -> dict[str, Any]:
    """nats-py's options for this node's credentials and TLS."""
    options: dict[str, Any] = {}
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


__all__ = ["Federation"]
