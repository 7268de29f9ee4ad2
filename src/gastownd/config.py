"""Configuration: TOML decoded by msgspec into typed Structs.

An unknown key or a wrong type stops start-up with a message naming the key.
Durations are written as strings with a unit: ``"250ms"``, ``"30s"``,
``"15m"``, ``"1h"``, ``"7d"``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Literal

import msgspec

from gastownd.errors import StartupError

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (``"90s"``, ``"7d"``); raises ValueError."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"invalid duration {text!r} (use e.g. 500ms, 30s, 15m, 1h, 7d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ServerConfig(_Section):
    max_frame_bytes: int = 1 << 20
    max_connections: int = 512
    # A connection holding an incomplete frame this long is closed.
    partial_frame_timeout: str = "10s"
    # In-flight requests per connection (pipelining depth).
    max_inflight_per_connection: int = 64
    shutdown_timeout: str = "4s"
    # "auto": uvloop when it is installed (the ``fast`` extra), else asyncio's loop.
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"

    def __post_init__(self) -> None:
        if self.max_frame_bytes < 1024:
            raise ValueError("max_frame_bytes must be at least 1024")
        if self.max_connections < 1 or self.max_inflight_per_connection < 1:
            raise ValueError("max_connections and max_inflight_per_connection must be >= 1")
        parse_duration(self.partial_frame_timeout)
        parse_duration(self.shutdown_timeout)


class EventLogConfig(_Section):
    # "sync": acknowledge after fdatasync. "write": after write(), sync every sync_interval.
    durability: Literal["sync", "write"] = "sync"
    sync_interval: str = "50ms"
    # The value of "source" in lines gastownd writes.
    source: str = "gt"
    # watchfiles' step: how long to wait for more changes before reporting.
    watch_step: str = "10ms"
    subscriber_queue: int = 10_000
    append_queue: int = 65_536

    def __post_init__(self) -> None:
        parse_duration(self.sync_interval)
        parse_duration(self.watch_step)
        if self.subscriber_queue < 1 or self.append_queue < 1:
            raise ValueError("queue sizes must be >= 1")


class RetentionConfig(_Section):
    """Retention. ``<town>/.krc.yaml``, when it exists, overrides these per key."""

    enabled: bool = True
    default_ttl: str = "7d"
    # Per-type TTLs (globs allowed) over Gas Town's defaults: patrol_*,
    # polecat_checked/nudged 1d; session_start/end, nudge 3d; handoff 7d; sling,
    # done, hook, unhook 14d; mail, session_death, merge_* 30d; mass_death 90d.
    ttls: dict[str, str] = msgspec.field(default_factory=dict)
    prune_interval: str = "1h"
    # The newest N lines of each type are kept whatever their age.
    min_retain_count: int = 0
    # Move pruned lines to <town>/.gastownd/archive/events-YYYY-MM-DD.jsonl.gz (and .idx)
    # instead of deleting them.
    archive: bool = True
    # Archived days older than this are deleted (unset: kept forever).
    archive_max_age: str | None = None

    def __post_init__(self) -> None:
        parse_duration(self.default_ttl)
        parse_duration(self.prune_interval)
        if self.archive_max_age is not None:
            parse_duration(self.archive_max_age)
        for pattern, ttl in self.ttls.items():
            try:
                parse_duration(ttl)
            except ValueError as exc:
                raise ValueError(f"ttls[{pattern!r}]: {exc}") from None
        if self.min_retain_count < 0:
            raise ValueError("min_retain_count must be >= 0")


class WispsConfig(_Section):
    # An open wisp with no activity for this long is reaped (squashed as abandoned).
    idle_timeout: str = "24h"
    # How often the reaper looks for idle wisps.
    reap_interval: str = "1m"

    def __post_init__(self) -> None:
        parse_duration(self.idle_timeout)
        parse_duration(self.reap_interval)


class HooksConfig(_Section):
    # On SessionStart (startup or clear), print a short note about the actor's
    # previous session for Claude to read.
    inject_context: bool = False
    # Spooled hook requests are read this long after their file was set aside,
    # so a hook still writing to it has finished.
    spool_grace: str = "500ms"

    def __post_init__(self) -> None:
        parse_duration(self.spool_grace)


class FederationConfig(_Section):
    """Federation over NATS JetStream (docs/federation.md). Off while ``servers`` is empty."""

    servers: list[str] = msgspec.field(default_factory=list)
    # This machine's name in the town: default the short host name.
    node: str = ""
    # The town's name: default "name" in mayor/town.json, else the town directory's name.
    town: str = ""
    # Authentication: a .creds file (JWT + nkey), or a user and password.
    creds: str | None = None
    user: str | None = None
    password: str | None = None
    # TLS: the CA to trust, and a client certificate for servers that verify clients.
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    # The name on the server's certificate, when the URLs name an IP address.
    tls_hostname: str | None = None
    # The JetStream domain of the hub, when this node reaches it through a leaf node.
    jetstream_domain: str | None = None
    # Applied when the daemon creates the town's stream (it never deletes or changes one).
    stream_replicas: int = 1
    # "" keeps records forever; else e.g. "90d" (the stream then drops older records).
    stream_max_age: str = ""
    # How long the stream remembers message ids to drop republished records.
    duplicate_window: str = "2h"
    # Session records, digests and attributions read per publish round.
    batch: int = 256
    # How often the connection is checked (a dead peer is noticed within two of these).
    ping_interval: str = "10s"
    # Remote lines and records dated further ahead of this machine's clock are refused.
    max_clock_skew: str = "5m"
    # How long this daemon's hold on its node name outlives it (renewed every third of it).
    node_lease: str = "30s"

    def __post_init__(self) -> None:
        for name in ("node", "town"):
            value = getattr(self, name)
            if value and not _NAME.fullmatch(value):
                raise ValueError(f"{name} {value!r} must match [A-Za-z0-9_-]{{1,64}}")
        if not 1 <= self.stream_replicas <= 5:
            raise ValueError("stream_replicas must be between 1 and 5")
        if not 1 <= self.batch <= 4096:
            raise ValueError("batch must be between 1 and 4096")
        if self.stream_max_age:
            parse_duration(self.stream_max_age)
        parse_duration(self.duplicate_window)
        parse_duration(self.ping_interval)
        parse_duration(self.max_clock_skew)
        if parse_duration(self.node_lease) < 1:
            raise ValueError("node_lease must be at least 1s")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if (self.user is None) != (self.password is None):
            raise ValueError("user and password go together")
        for url in self.servers:
            if "://" not in url:
                raise ValueError(f"server {url!r} must be a URL such as nats://host:4222")

    @property
    def enabled(self) -> bool:
        return bool(self.servers)


class Config(_Section):
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    eventlog: EventLogConfig = msgspec.field(default_factory=EventLogConfig)
    retention: RetentionConfig = msgspec.field(default_factory=RetentionConfig)
    wisps: WispsConfig = msgspec.field(default_factory=WispsConfig)
    hooks: HooksConfig = msgspec.field(default_factory=HooksConfig)
    federation: FederationConfig = msgspec.field(default_factory=FederationConfig)


def load_config(path: Path | None) -> Config:
    """Read ``path`` (None or missing default file: all defaults)."""
    if path is None:
        return Config()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StartupError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise StartupError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StartupError(f"config file {path} is not valid TOML: {exc}") from None
    try:
        return msgspec.convert(data, Config)
    except msgspec.ValidationError as exc:
        raise StartupError(f"config file {path}: {exc}") from None
