"""Node identity: a live daemon holds its node name in the town, so no two share it.

Two daemons under one name would share the durable consumer ``gastownd_<node>``
(each getting about half of the town's records) and publish under one set of
message ids. So a daemon claims its name before it publishes or consumes, in a
JetStream key-value bucket of the town (the contract ``gastownctl federation
check`` reads too):

- bucket ``GASTOWN_<town>_nodes``, key the node name, value a JSON object
  ``{"instance": <random id of this daemon run>, "host": <hostname>,
  "pid": <int>, "since": <RFC3339 UTC>}``;
- the bucket's TTL (``max_age``) is the lease: the holder rewrites its entry
  every third of it, each time conditional on the revision it last wrote, so
  an entry outlives a dead holder by at most one lease; a clean stop deletes it;
- a claim creates the key only if it has no live value, or if the value names this
  run or the run this store last federated under (a restart after a crash: the same
  store, so nothing is lost or applied twice).

A claim refused by a live entry of another instance raises :class:`NodeNameHeld`.

Each renewal also measures the server's clock: the stored entry carries the
time the server wrote it, between the moment this node sent it and the moment
it was acknowledged.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

log = structlog.get_logger("gastownd.federation")


def bucket_name(town: str) -> str:
    return f"GASTOWN_{town}_nodes"


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a node name, as its entry says."""

    instance: str
    host: str
    pid: int
    since: str

    def encode(self) -> bytes:
        return json.dumps(
            {"instance": self.instance, "host": self.host, "pid": self.pid, "since": self.since}
        ).encode()

    @classmethod
    def decode(cls, data: bytes | None) -> Holder:
        try:
            value = json.loads(data or b"")
        except (ValueError, RecursionError):  # anyone who may write the key wrote it
            value = None
        if not isinstance(value, dict):
            return cls("?", "?", 0, "?")
        pid = value.get("pid")
        return cls(
            str(value.get("instance", "?"))[:64],
            str(value.get("host", "?"))[:256],
            pid if isinstance(pid, int) else 0,
            str(value.get("since", "?"))[:64],
        )


class NodeNameHeld(Exception):
    """Another live daemon holds this node's name."""

    def __init__(self, node: str, holder: Holder) -> None:
        super().__init__(
            f"node name {node!r} is held by {holder.host} (pid {holder.pid}, instance "
            f"{holder.instance}, since {holder.since})"
        )
        self.node = node
        self.holder = holder


class NodeClaim:
    """This daemon run's hold on its node name (``js``: a nats-py JetStream context)."""

    def __init__(
        self,
        js: Any,
        *,
        town: str,
        node: str,
        instance: str,
        lease_s: float,
        replicas: int,
        clock: Callable[[], float],
        previous_instance: str | None = None,
    ) -> None:
        self._js = js
        # The daemon run this store last federated under: its entry is ours to take over
        # at once (a restart after a crash need not wait out its own lease).
        self._previous = previous_instance
        self._node = node
        self._bucket = bucket_name(town)
        self._replicas = replicas
        self._clock = clock
        # The bucket's TTL once it is open: whoever created it decided the lease.
        self.lease_s = lease_s
        self.holder = Holder(
            instance=instance,
            host=socket.gethostname(),
            pid=os.getpid(),
            since=datetime.fromtimestamp(clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        self._kv: Any = None
        # The revision of the entry this daemon last wrote (None: not held).
        self._revision: int | None = None
        # The server's clock minus this node's, as last measured.
        self.clock_offset_s: float | None = None

    @property
    def held(self) -> bool:
        return self._revision is not None

    async def _open(self) -> Any:
        import nats.js.errors

        if self._kv is None:
            try:
                kv = await self._js.key_value(self._bucket)
            except nats.js.errors.BucketNotFoundError:
                try:
                    kv = await self._js.create_key_value(
                        bucket=self._bucket, ttl=self.lease_s, history=1, replicas=self._replicas
                    )
                    log.info("federation_node_bucket_created", bucket=self._bucket)
                except nats.js.errors.BadRequestError:
                    kv = await self._js.key_value(self._bucket)  # another node made it first
            status = await kv.status()
            if status.ttl:
                self.lease_s = float(status.ttl)
            self._kv = kv
        return self._kv

    async def claim(self) -> None:
        """Hold the name, or raise :class:`NodeNameHeld`."""
        import nats.js.errors

        kv = await self._open()
        try:
            sent = self._clock()
            self._revision = await kv.create(self._node, self.holder.encode())
            self.clock_offset_s = await self._server_offset(self._revision, sent)
            return
        except nats.js.errors.KeyWrongLastSequenceError:
            pass
        try:
            entry = await kv.get(self._node)
        except nats.js.errors.KeyNotFoundError:
            return await self.claim()  # it expired in between
        holder = Holder.decode(entry.value)
        if holder.instance not in (self.holder.instance, self._previous):
            self._revision = None
            raise NodeNameHeld(self._node, holder)
        # Our own entry (written before a reconnect), or this store's previous run's (which
        # died): go on from its revision.
        self._revision = entry.revision
        await self.renew()

    async def renew(self) -> None:
        """Rewrite the entry (and measure the server's clock again).

        Raises :class:`NodeNameHeld` when the entry expired and another daemon took it.
        """
        import nats.js.errors

        kv = await self._open()
        if self._revision is None:
            return await self.claim()
        sent = self._clock()
        try:
            self._revision = await kv.update(self._node, self.holder.encode(), last=self._revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            # Gone for a lease (an outage): claim it again, unless someone else did.
            self._revision = None
            return await self.claim()
        self.clock_offset_s = await self._server_offset(self._revision, sent)

    async def _server_offset(self, revision: int, sent: float) -> float | None:
        """The server's clock minus this node's: the entry at ``revision`` was stamped by
        the server between ``sent`` and now (this node's clock), so within half of that."""
        acknowledged = self._clock()
        try:
            stored = await self._js.get_msg(f"KV_{self._bucket}", seq=revision, direct=False)
        except Exception:  # the offset is a nicety; the lease is held
            return self.clock_offset_s
        if stored.time is None:
            return self.clock_offset_s
        return round(float(stored.time.timestamp()) - (sent + acknowledged) / 2, 3)

    async def release(self) -> None:
        """Let the name go now (a clean stop), rather than at the end of the lease."""
        revision, self._revision = self._revision, None
        if revision is not None and self._kv is not None:
            await self._kv.delete(self._node, last=revision)
