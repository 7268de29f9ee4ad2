"""Configuration: TOML decoded by msgspec into typed Structs, every key bounded.

Durations are written as strings with a unit: ``"250ms"``, ``"30s"``, ``"15m"``,
``"1h"``, ``"7d"``. Every key is declared once in ``KEYS`` with its range and with
whether SIGHUP applies it: the sections' checks, what a reload applies and what waits
for a restart, and the table in docs/configuration.md (a test holds them equal) all
come from that one table. A file the daemon cannot use raises ``ConfigError``, whose
message names the file, the key and the range.
"""

from __future__ import annotations

import math
import re
import typing
import urllib.parse
from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from gastownd.metrics.address import check_listen

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# At most 15 digits (and 9 decimals): anything longer is no duration a person means.
_DURATION = re.compile(r"\s*([0-9]{1,15}(?:\.[0-9]{1,9})?)\s*(ms|s|m|h|d|w)\s*", re.ASCII)
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Printable ASCII without spaces: what goes into every line's "source".
_TOKEN = re.compile(r"[!-~]{1,64}", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (``"90s"``, ``"7d"``); raises ValueError."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid duration {text[:40]!r} (use e.g. 500ms, 30s, 15m, 1h, 7d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


Kind = Literal["duration", "integer", "choice", "flag", "text", "list", "table"]


class Key(msgspec.Struct, frozen=True):
    """One configuration key: where it lives, what it accepts, when a change applies.

    ``low`` and ``high`` bound a duration (written as durations), an integer, the length
    of a text, or the number of entries of a list or table (whose entries are then
    checked by ``entry``). ``reload``: SIGHUP applies a change; otherwise the change
    waits for a restart.
    """

    name: str
    kind: Kind
    reload: bool
    low: str | int | None = None
    high: str | int | None = None
    # A duration or text that may be left empty ("") or unset: "forever", "default".
    optional: bool = False
    pattern: re.Pattern[str] | None = None
    entry: Key | None = None

    @property
    def section(self) -> str:
        return self.name.rpartition(".")[0]

    @property
    def field(self) -> str:
        return self.name.rpartition(".")[2]

    def range_text(self) -> str:
        """The range as docs/configuration.md gives it."""
        if self.kind == "flag":
            return "true or false"
        if self.kind == "choice":
            return ", ".join(self.choices())
        if self.kind in ("duration", "integer"):
            text = f"{self.low} to {self.high}"
        elif self.kind == "text":
            what = "no control characters"
            if self.pattern is _TOKEN:
                what = "printable ASCII, no spaces"
            elif self.pattern is _NAME:
                what = "letters, digits, _ and -"
            text = f"{self.low} to {self.high} characters, {what}"
        else:
            assert self.entry is not None
            text = f"{self.low} to {self.high} entries, each {self.entry.range_text()}"
        return f"{text}; optional" if self.optional else text

    def choices(self) -> tuple[str, ...]:
        """The values a ``choice`` key accepts, from its ``Literal`` annotation."""
        section = next(cls for cls, name in _SECTIONS.items() if name == self.section)
        return typing.get_args(typing.get_type_hints(section)[self.field])

    def check(self, value: Any) -> None:
        """Raise ValueError naming the key when ``value`` is outside the range."""
        if self.kind in ("choice", "flag") or (self.optional and value in (None, "")):
            return
        if self.kind == "duration":
            try:
                seconds = parse_duration(value)
            except ValueError as exc:
                raise ValueError(f"{self.name}: {exc}") from None
            low, high = parse_duration(str(self.low)), parse_duration(str(self.high))
            if not (math.isfinite(seconds) and low <= seconds <= high):
                raise ValueError(self._out_of_range(value))
        elif self.kind == "integer":
            assert isinstance(self.low, int) and isinstance(self.high, int)
            if not self.low <= value <= self.high:
                shown = value if abs(value) < 10**30 else f"a {len(str(abs(value)))}-digit number"
                raise ValueError(self._out_of_range(shown))
        elif self.kind == "text":
            assert isinstance(self.low, int) and isinstance(self.high, int)
            bad = (
                not self.low <= len(value) <= self.high
                or (self.pattern is not None and not self.pattern.fullmatch(value))
                or (self.pattern is None and _CONTROL.search(value) is not None)
            )
            if bad:
                raise ValueError(self._out_of_range(value))
        else:
            self._check_entries(value)

    def _check_entries(self, value: Sequence[str] | dict[str, str]) -> None:
        assert isinstance(self.low, int) and isinstance(self.high, int) and self.entry
        if not self.low <= len(value) <= self.high:
            raise ValueError(f"{self.name} has {len(value)} entries ({self.range_text()})")
        if isinstance(value, dict):
            for pattern, item in value.items():
                if not 1 <= len(pattern) <= 128 or _CONTROL.search(pattern):
                    shown = f"{pattern[:40]!r}"
                    raise ValueError(
                        f"{self.name}: the type {shown} is not 1 to 128 characters "
                        "without control characters"
                    )
                msgspec.structs.replace(self.entry, name=f"{self.name}[{pattern[:40]!r}]").check(
                    item
                )
        else:
            for item in value:
                self.entry.check(item)

    def _out_of_range(self, value: object) -> str:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return f"{self.name} = {shown} is out of range ({self.range_text()})"

    def get(self, config: Config) -> Any:
        section = getattr(config, self.section) if self.section else config
        return getattr(section, self.field)

    def put(self, config: Config, value: Any) -> Config:
        """``config`` with this key set to ``value``."""
        if not self.section:
            return msgspec.structs.replace(config, **{self.field: value})
        section = msgspec.structs.replace(getattr(config, self.section), **{self.field: value})
        return msgspec.structs.replace(config, **{self.section: section})


def _duration(name: str, low: str, high: str, reload: bool, *, optional: bool = False) -> Key:
    return Key(name, "duration", reload, low, high, optional=optional)


def _integer(name: str, low: int, high: int, reload: bool) -> Key:
    return Key(name, "integer", reload, low, high)


def _text(
    name: str,
    reload: bool,
    *,
    high: int = 4096,
    pattern: re.Pattern[str] | None = None,
    optional: bool = False,
) -> Key:
    return Key(name, "text", reload, 1, high, optional=optional, pattern=pattern)


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    def __post_init__(self) -> None:
        for key in _keys_of(type(self)):
            key.check(getattr(self, key.field))
        self.check_together()

    def check_together(self) -> None:
        """Rules that tie keys together (each key's own range is in ``KEYS``)."""


class ServerConfig(_Section):
    max_frame_bytes: int = 1 << 20
    max_connections: int = 512
    # A connection holding an incomplete frame this long is closed.
    partial_frame_timeout: str = "10s"
    # In-flight requests per connection (pipelining depth).
    max_inflight_per_connection: int = 64
    # The frame bytes of in-flight requests on all connections together (memory), past
    # which a connection with a request in flight takes no more (``RequestBytes``).
    max_inflight_bytes: int = 64 << 20
    shutdown_timeout: str = "4s"
    # "auto": uvloop when it is installed (the ``fast`` extra), else asyncio's loop.
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"


class EventLogConfig(_Section):
    # "sync": acknowledge after fdatasync. "write": after write(), sync every sync_interval.
    durability: Literal["sync", "write"] = "sync"
    sync_interval: str = "50ms"
    # The value of "source" in lines gastownd writes.
    source: str = "gt"
    # watchfiles' step: how long to wait for more changes before reporting.
    watch_step: str = "10ms"
    subscriber_queue: int = 10_000
    # Every line is offered to every subscription: their number bounds the cost of an emit.
    max_subscriptions: int = 1024
    max_subscriptions_per_connection: int = 64
    append_queue: int = 65_536


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


class WispsConfig(_Section):
    # An open wisp with no activity for this long is reaped (squashed as abandoned).
    idle_timeout: str = "24h"
    # How often the reaper looks for idle wisps.
    reap_interval: str = "1m"


class HooksConfig(_Section):
    # On SessionStart (startup or clear), print a short note about the actor's
    # previous session for Claude to read.
    inject_context: bool = False
    # Spooled hook requests are read this long after their file was set aside,
    # so a hook still writing to it has finished.
    spool_grace: str = "500ms"


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

    def check_together(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if (self.user is None) != (self.password is None):
            raise ValueError("user and password go together")
        for url in self.servers:
            check_server_url(url)
        if self.stream_max_age and parse_duration(self.duplicate_window) > parse_duration(
            self.stream_max_age
        ):
            raise ValueError("duplicate_window must not be longer than stream_max_age")

    @property
    def enabled(self) -> bool:
        return bool(self.servers)


# What nats-py connects to; anything else fails at every connect, never at start.
_SERVER_SCHEMES = frozenset({"nats", "tls", "ws", "wss"})


def check_server_url(url: str) -> None:
    """Refuse a server URL that no connect could use (the daemon would retry it forever)."""
    wanted = f"server {url[:60]!r} must be a URL such as nats://host:4222"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # out of range, or not a number: ValueError
    except ValueError:
        raise ValueError(f"{wanted} (a port from 1 to 65535)") from None
    if parts.scheme not in _SERVER_SCHEMES or not parts.hostname or port == 0:
        raise ValueError(f"{wanted} (scheme nats, tls, ws or wss, a host, a port from 1 to 65535)")


class MetricsConfig(_Section):
    """The HTTP metrics endpoint (docs/operations.md#metrics). Off while ``listen`` is unset."""

    # "127.0.0.1:9464", "[::1]:9464" or "unix:/path/metrics.sock".
    listen: str | None = None
    # Allow an address other machines can reach (there is no authentication).
    allow_remote: bool = False

    def check_together(self) -> None:
        if self.listen:  # "" is unset, like every optional text key
            check_listen(self.listen, self.allow_remote)


class Config(_Section):
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    eventlog: EventLogConfig = msgspec.field(default_factory=EventLogConfig)
    retention: RetentionConfig = msgspec.field(default_factory=RetentionConfig)
    wisps: WispsConfig = msgspec.field(default_factory=WispsConfig)
    hooks: HooksConfig = msgspec.field(default_factory=HooksConfig)
    federation: FederationConfig = msgspec.field(default_factory=FederationConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)


_TTL = _duration("retention.ttls.*", "1s", "36500d", True)
_SERVER_URL = _text("federation.servers[]", False, high=1024)

# Every key, once: its range and whether SIGHUP applies it. A key read only when the
# part that uses it starts (the server, the writer, the watcher, the reaper, federation)
# waits for a restart; a reload keeps its running value and says so.
KEYS: tuple[Key, ...] = (
    Key("log_level", "choice", True),
    Key("log_format", "choice", True),
    _integer("server.max_frame_bytes", 1024, 64 << 20, False),
    _integer("server.max_connections", 1, 16_384, False),
    _duration("server.partial_frame_timeout", "100ms", "1h", False),
    _integer("server.max_inflight_per_connection", 1, 4096, False),
    _integer("server.max_inflight_bytes", 1 << 20, 1 << 40, False),
    _duration("server.shutdown_timeout", "100ms", "10m", True),
    Key("server.event_loop", "choice", False),
    Key("eventlog.durability", "choice", False),
    _duration("eventlog.sync_interval", "1ms", "1m", False),
    _text("eventlog.source", False, high=64, pattern=_TOKEN),
    _duration("eventlog.watch_step", "1ms", "5s", False),
    _integer("eventlog.subscriber_queue", 1, 1_000_000, False),
    _integer("eventlog.max_subscriptions", 1, 1_000_000, False),
    _integer("eventlog.max_subscriptions_per_connection", 1, 1_000_000, False),
    _integer("eventlog.append_queue", 1, 1 << 20, False),
    Key("retention.enabled", "flag", True),
    _duration("retention.default_ttl", "1s", "36500d", True),
    Key("retention.ttls", "table", True, 0, 1024, entry=_TTL),
    _duration("retention.prune_interval", "1s", "36500d", True),
    _integer("retention.min_retain_count", 0, 1_000_000_000, True),
    Key("retention.archive", "flag", True),
    _duration("retention.archive_max_age", "1d", "36500d", True, optional=True),
    _duration("wisps.idle_timeout", "1s", "365d", False),
    _duration("wisps.reap_interval", "1s", "1d", False),
    Key("hooks.inject_context", "flag", True),
    _duration("hooks.spool_grace", "10ms", "1m", True),
    Key("federation.servers", "list", False, 0, 64, entry=_SERVER_URL),
    _text("federation.node", False, high=64, pattern=_NAME, optional=True),
    _text("federation.town", False, high=64, pattern=_NAME, optional=True),
    _text("federation.creds", False, optional=True),
    _text("federation.user", False, optional=True),
    _text("federation.password", False, optional=True),
    _text("federation.tls_ca", False, optional=True),
    _text("federation.tls_cert", False, optional=True),
    _text("federation.tls_key", False, optional=True),
    _text("federation.tls_hostname", False, high=253, optional=True),
    _text("federation.jetstream_domain", False, high=64, pattern=_NAME, optional=True),
    _integer("federation.stream_replicas", 1, 5, False),
    _duration("federation.stream_max_age", "1h", "36500d", False, optional=True),
    _duration("federation.duplicate_window", "1s", "7d", False),
    _integer("federation.batch", 1, 4096, False),
    _duration("federation.ping_interval", "1s", "10m", False),
    _duration("federation.max_clock_skew", "1s", "7d", False),
    _duration("federation.node_lease", "1s", "1h", False),
    _text("metrics.listen", False, high=200, optional=True),
    Key("metrics.allow_remote", "flag", False),
)

_SECTIONS: dict[type[_Section], str] = {
    Config: "",
    ServerConfig: "server",
    EventLogConfig: "eventlog",
    RetentionConfig: "retention",
    WispsConfig: "wisps",
    HooksConfig: "hooks",
    FederationConfig: "federation",
    MetricsConfig: "metrics",
}


def _keys_of(section: type[_Section]) -> tuple[Key, ...]:
    name = _SECTIONS[section]
    return tuple(key for key in KEYS if key.section == name)


class Reload(msgspec.Struct, frozen=True):
    """What SIGHUP makes of a newly read file."""

    # The configuration in effect: the file's, with restart-only keys at their running values.
    config: Config
    # Keys whose new value applies now.
    applied: list[str]
    # Keys whose new value waits for a restart (the file differs from what runs).
    waiting: list[str]


def plan_reload(running: Config, loaded: Config) -> Reload:
    effective = loaded
    applied: list[str] = []
    waiting: list[str] = []
    for key in KEYS:
        before = key.get(running)
        if key.get(loaded) == before:
            continue
        if key.reload:
            applied.append(key.name)
        else:
            waiting.append(key.name)
            effective = key.put(effective, before)
    return Reload(effective, applied, waiting)
