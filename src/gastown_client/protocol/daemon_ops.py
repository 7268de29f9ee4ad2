"""The daemon's own ops: hello, ping, status, metrics, version."""

from __future__ import annotations

from typing import Literal

import msgspec

from gastown_client.protocol.envelope import Returning
from gastown_client.protocol.log_ops import IndexingProgress


class Hello(Returning["HelloResult"], tag="hello"):
    """Handshake: the protocol versions and capabilities of both sides."""

    protocol: int
    """The protocol version the client speaks."""
    client: str = ""
    """Free text naming the client."""


class HelloResult(msgspec.Struct, kw_only=True):
    daemon_version: str
    protocol: int
    min_protocol: int
    capabilities: list[str]
    pid: int
    started_at: str


class Ping(Returning["PingResult"], tag="ping"):
    """Liveness."""


class PingResult(msgspec.Struct, kw_only=True):
    pong: bool = True


class Status(Returning["StatusResult"], tag="status"):
    """Counters and paths."""


class PathsInfo(msgspec.Struct, kw_only=True):
    socket: str
    private_dir: str
    events: str
    config: str | None


class ArchiveInfo(msgspec.Struct, kw_only=True):
    """The archive of pruned lines: its size on disk and the UTC days it holds."""

    bytes: int = 0
    days: int = 0
    first_day: str | None = None
    last_day: str | None = None


class EventLogInfo(msgspec.Struct, kw_only=True):
    lines: int = 0
    malformed: int = 0
    bytes: int = 0
    appended: int = 0
    external: int = 0
    subscribers: int = 0
    last_prune_at: str | None = None
    last_prune_removed: int = 0
    quarantined: int = 0
    durability: str = "sync"
    archive: ArchiveInfo = msgspec.field(default_factory=ArchiveInfo)


class SessionsInfo(msgspec.Struct, kw_only=True):
    """Sessions the town has seen: this node's by state (``logged``: known only from log
    lines), and other nodes' (``remote``)."""

    known: int = 0
    open: int = 0
    ended: int = 0
    logged: int = 0
    remote: int = 0


class NodeInfo(msgspec.Struct, kw_only=True):
    """Another node, as this one knows it from its records."""

    node: str
    last_record_at: str | None = None
    events: int = 0
    sessions: int = 0
    digests: int = 0
    attributions: int = 0


class NodeConflict(msgspec.Struct, kw_only=True):
    """Another live daemon holds this node's name: this one neither publishes nor consumes."""

    node: str
    instance: str
    host: str
    since: str


class FederationError(msgspec.Struct, kw_only=True):
    at: str
    event: str
    error: str


class FederationInfo(msgspec.Struct, kw_only=True):
    enabled: bool = False
    node: str = ""
    town: str = ""
    stream: str = ""
    servers: list[str] = msgspec.field(default_factory=list)
    connected: bool = False
    # Local records not yet acknowledged by the stream, by kind.
    backlog: dict[str, int] = msgspec.field(default_factory=dict)
    published: int = 0
    applied: int = 0
    # Local records larger than the server's max_payload, which never left this node.
    too_large: int = 0
    # Remote records skipped, by reason (malformed, claims_this_node, other_town, ...).
    rejected: dict[str, int] = msgspec.field(default_factory=dict)
    nodes: list[NodeInfo] = msgspec.field(default_factory=list)
    # A failure not yet recovered from (None once it is); when the last one happened.
    last_error: str | None = None
    last_error_at: str | None = None
    # The server this node is connected to (no credentials), and its name.
    server: str | None = None
    server_name: str | None = None
    # This daemon run's id, under which it holds its node name in the town.
    instance: str = ""
    node_conflict: NodeConflict | None = None
    # The NATS server's clock minus this node's, in seconds (None: not measured yet).
    clock_offset_s: float | None = None
    # The most recent failures, oldest first.
    errors: list[FederationError] = msgspec.field(default_factory=list)


class StatusResult(msgspec.Struct, kw_only=True):
    daemon_version: str
    protocol: int
    pid: int
    started_at: str
    uptime_s: float
    town_root: str
    paths: PathsInfo
    connections: int
    requests: int
    eventlog: EventLogInfo = msgspec.field(default_factory=EventLogInfo)
    sessions: SessionsInfo = msgspec.field(default_factory=SessionsInfo)
    federation: FederationInfo = msgspec.field(default_factory=FederationInfo)
    # Hook calls whose payload the hook trimmed to fit the frame limit.
    hooks_trimmed: int = 0
    # Hook calls the hook could not get applied (refused, not spooled, an unreadable
    # reply...), counted from its notes: each is logged as ``hook_call_lost``.
    hooks_lost: int = 0
    # Entries of the hook spool skipped (another uid's file, a directory, a FIFO, a symlink...),
    # counted once per state they were seen in: each is logged as ``spool_entry_skipped``.
    spool_entries_skipped: int = 0
    # Config keys a SIGHUP read but that apply only at the next start.
    config_restart_pending: list[str] = msgspec.field(default_factory=list)
    # Set while older lines are indexed in the background (None: all indexed).
    indexing: IndexingProgress | None = None


class Metrics(Returning["MetricsResult"], tag="metrics"):
    """The daemon's metrics as text: OpenMetrics, or Prometheus' classic text format."""

    format: Literal["openmetrics", "prometheus"] = "openmetrics"
    """The text format."""


class MetricsResult(msgspec.Struct, kw_only=True):
    content_type: str
    text: str


class Version(Returning["VersionResult"], tag="version"):
    """The daemon's version, its protocol versions, and the Python that runs it."""


class VersionResult(msgspec.Struct, kw_only=True):
    daemon_version: str
    protocol: int
    min_protocol: int
    python: str
