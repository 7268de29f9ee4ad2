"""Every shape that crosses the socket.

Newline-delimited JSON; each request is one Struct of the ``Request`` union,
tagged on ``"op"``, with an optional ``id`` echoed in its reply. Replies are
``{"id", "ok": true, "result"}`` or ``{"id", "ok": false, "error": {"code",
"message"}}``; a subscription's pushed frames carry ``"push"`` instead of
``"ok"``. Wire rules: new fields always get a default, a field's type never
changes, an error code is never renamed or reused.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Literal

import msgspec

PROTOCOL_VERSION = 1
# The oldest client protocol this daemon still serves.
MIN_PROTOCOL_VERSION = 1

EVENT_TYPE_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
Visibility = Literal["feed", "audit", "both"]


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"
    TOO_LARGE = "too_large"
    UNKNOWN_OP = "unknown_op"
    FORBIDDEN = "forbidden"
    INTERNAL = "internal"
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"
    IO_ERROR = "io_error"
    NOT_FOUND = "not_found"
    AMBIGUOUS = "ambiguous"
    SHUTTING_DOWN = "shutting_down"
    TIMEOUT = "timeout"
    BUSY = "busy"


# ---------------------------------------------------------------- requests


class Request(msgspec.Struct, tag_field="op", kw_only=True):
    """Base of every request; never sent itself."""

    id: int | str | None = None


class Hello(Request, tag="hello"):
    protocol: int
    client: str = ""


class Ping(Request, tag="ping"):
    pass


class Status(Request, tag="status"):
    pass


class Emit(Request, tag="emit"):
    type: str
    actor: str
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    visibility: Visibility = "feed"

    def __post_init__(self) -> None:
        if not EVENT_TYPE_PATTERN.fullmatch(self.type):
            raise ValueError("type must match [A-Za-z0-9_.:-]{1,128}")
        if not self.actor.strip():
            raise ValueError("actor must not be empty")


class EventFilter(Request):
    """Filters shared by ``query`` and ``subscribe``; never sent itself.

    ``types``: any of these types (empty: all). ``actor``: case-sensitive
    substring of the actor. ``session``: equals ``payload.session_id``.
    ``since``/``until``: inclusive bounds, RFC 3339 UTC (``...Z``).
    """

    types: list[str] = msgspec.field(default_factory=list)
    actor: str | None = None
    session: str | None = None
    since: str | None = None
    until: str | None = None


class Query(EventFilter, tag="query"):
    limit: int = 20
    oldest_first: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.limit <= 100_000:
            raise ValueError("limit must be between 1 and 100000")


class Subscribe(EventFilter, tag="subscribe"):
    """Push every matching line after ``cursor`` (none: only new lines)."""

    cursor: str | None = None


class Unsubscribe(Request, tag="unsubscribe"):
    subscription: int


class Prune(Request, tag="prune"):
    dry_run: bool = False


RequestUnion = Hello | Ping | Status | Emit | Query | Subscribe | Unsubscribe | Prune
OPS: frozenset[str] = frozenset(
    cls.__struct_config__.tag  # type: ignore[misc]
    for cls in (Hello, Ping, Status, Emit, Query, Subscribe, Unsubscribe, Prune)
)


# ---------------------------------------------------------------- results


class HelloResult(msgspec.Struct, kw_only=True):
    daemon_version: str
    protocol: int
    min_protocol: int
    capabilities: list[str]
    pid: int
    started_at: str


class PingResult(msgspec.Struct, kw_only=True):
    pong: bool = True


class PathsInfo(msgspec.Struct, kw_only=True):
    socket: str
    private_dir: str
    events: str
    config: str | None


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


class EmitResult(msgspec.Struct, kw_only=True):
    cursor: str
    event: msgspec.Raw


class QueryResult(msgspec.Struct, kw_only=True):
    events: list[msgspec.Raw]
    cursor: str


class SubscribeResult(msgspec.Struct, kw_only=True):
    subscription: int
    cursor: str
    resync: bool = False


class UnsubscribeResult(msgspec.Struct, kw_only=True):
    subscription: int


class PruneResult(msgspec.Struct, kw_only=True):
    dry_run: bool
    pruned: dict[str, int]
    pruned_total: int
    kept: int
    bytes_freed: int
    archived: int = 0
    duration_ms: float = 0.0


# ---------------------------------------------------------------- frames


class ErrorBody(msgspec.Struct):
    code: str
    message: str


class OkReply(msgspec.Struct, kw_only=True):
    id: int | str | None
    ok: bool = True
    result: Any


class ErrorReply(msgspec.Struct, kw_only=True):
    id: int | str | None
    ok: bool = False
    error: ErrorBody


PushKind = Literal["event", "overflow", "end"]


class Push(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A frame the daemon sends unasked, on a subscribed connection."""

    push: PushKind
    subscription: int
    cursor: str | None = None
    event: msgspec.Raw | None = None
    message: str | None = None


class Frame(msgspec.Struct, kw_only=True):
    """What a client decodes first: a reply or a push, told apart by fields."""

    id: int | str | None = None
    ok: bool | None = None
    # msgspec.Raw cannot be optional; an empty Raw means "absent".
    result: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    error: ErrorBody | None = None
    push: str | None = None
    subscription: int | None = None
    cursor: str | None = None
    event: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    message: str | None = None
