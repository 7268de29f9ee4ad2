"""Every shape that crosses the socket.

Newline-delimited JSON; each request is one Struct of the ``Request`` union,
tagged on ``"op"``, with an optional ``id`` echoed in its reply. Replies are
``{"id", "ok": true, "result"}`` or ``{"id", "ok": false, "error": {"code",
"message"}}``; a subscription's pushed frames carry ``"push"`` instead of
``"ok"``. Wire rules: new fields always get a default, a field's type never
changes, an error code is never renamed or reused.
"""

from __future__ import annotations

import itertools
import re
import typing
from array import array
from enum import StrEnum
from typing import Any, Generic, Literal, NamedTuple, TypeVar

import msgspec

PROTOCOL_VERSION = 1
# The oldest client protocol this daemon still serves.
MIN_PROTOCOL_VERSION = 1

EVENT_TYPE_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
Visibility = Literal["feed", "audit", "both"]


# Arrays and objects inside one another, the outermost counting as 1, that a
# frame or an event-log line may hold. Far above any Gas Town line or hook call
# (3 to 10 levels), far below where msgspec, which decodes recursively, raises
# RecursionError (near Python's recursion limit, so at a depth that depends on
# the caller's stack): checked before decoding, the answer is the same anywhere.
MAX_NESTING = 256

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
# Brackets as signed steps (array "b"): an opening one +1, a closing one -1.
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_DEPTH_CHUNK = 1 << 16


def nesting_exceeds(data: bytes, limit: int = MAX_NESTING) -> bool:
    """True if ``data`` opens more than ``limit`` arrays or objects inside one another.

    Brackets inside strings do not count; for invalid JSON the answer is only
    an estimate, and the decoder's own error follows anyway. Cheap for the
    usual input: a text with at most ``limit`` opening brackets is not looked
    at further.
    """
    if len(data) <= limit or data.count(b"[") + data.count(b"{") <= limit:
        return False
    skeleton = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS).translate(_STEPS)
    depth = 0
    for start in range(0, len(skeleton), _DEPTH_CHUNK):
        steps = array("b", skeleton[start : start + _DEPTH_CHUNK])
        levels = list(itertools.accumulate(steps, initial=depth))
        if max(levels) > limit:
            return True
        depth = levels[-1]
    return False


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
    CONFLICT = "conflict"


# ---------------------------------------------------------------- requests

ResultT = TypeVar("ResultT")


class Request(msgspec.Struct, tag_field="op", kw_only=True):
    """Base of every request; never sent itself."""

    id: int | str | None = None


class Returning(Request, Generic[ResultT]):
    """A request whose reply carries a ``ResultT``: ``class Ping(Returning["PingResult"])``
    (a string: the results are declared further down). Never sent itself."""


class Hello(Returning["HelloResult"], tag="hello"):
    protocol: int
    client: str = ""


class Ping(Returning["PingResult"], tag="ping"):
    pass


class Status(Returning["StatusResult"], tag="status"):
    pass


class Emit(Returning["EmitResult"], tag="emit"):
    type: str
    actor: str
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    visibility: Visibility = "feed"

    def __post_init__(self) -> None:
        if self.type not in _CHECKED_TYPES:
            if not EVENT_TYPE_PATTERN.fullmatch(self.type):
                raise ValueError("type must match [A-Za-z0-9_.:-]{1,128}")
            if len(_CHECKED_TYPES) < 4096:  # types repeat: remember the good ones
                _CHECKED_TYPES.add(self.type)
        if not self.actor.strip():
            raise ValueError("actor must not be empty")


_CHECKED_TYPES: set[str] = set()


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
    # Federation: the whole town's lines (``all_nodes``) or one node's (``node``); each
    # event then carries a top-level ``"node"`` key. Without either: this node's log.
    all_nodes: bool = False
    node: str | None = None


class Query(EventFilter, Returning["QueryResult"], tag="query"):
    """``archive``: also search the lines retention moved to the archive."""

    limit: int = 20
    oldest_first: bool = False
    archive: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.limit <= 100_000:
            raise ValueError("limit must be between 1 and 100000")


class Subscribe(EventFilter, Returning["SubscribeResult"], tag="subscribe"):
    """Push every matching line after ``cursor``.

    ``None``: only lines appended from now on; ``"start"``: from the oldest
    retained line; else a cursor received earlier (``EPOCH:SEQ``).
    """

    cursor: str | None = None


class Unsubscribe(Returning["UnsubscribeResult"], tag="unsubscribe"):
    subscription: int


class Prune(Returning["PruneResult"], tag="prune"):
    dry_run: bool = False


StartSourceName = Literal["startup", "resume", "clear", "compact"]


class SessionStart(Returning["SessionStartResult"], tag="session_start"):
    """Open (or continue) the wisp of a session. Idempotent for an open session."""

    session: str
    actor: str
    cwd: str | None = None
    topic: str | None = None
    source: StartSourceName = "startup"
    parent: str | None = None
    tmux_session: str | None = None
    pid: int | None = None

    def __post_init__(self) -> None:
        if not self.session.strip():
            raise ValueError("session must not be empty")
        if not self.actor.strip():
            raise ValueError("actor must not be empty")


class SessionStep(Returning["SessionStepResult"], tag="session_step"):
    session: str
    kind: str
    ref: str | None = None
    payload: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not EVENT_TYPE_PATTERN.fullmatch(self.kind):
            raise ValueError("kind must match [A-Za-z0-9_.:-]{1,128}")


class SessionEnd(Returning["DigestView"], tag="session_end"):
    session: str
    reason: str = "ended"


class WispGet(Returning["WispView"], tag="wisp"):
    """A session's current wisp with its steps; ``session`` may be a unique prefix."""

    session: str


class DigestGet(Returning["DigestView"], tag="digest"):
    """A digest by digest id or session id (the latest segment); prefixes allowed."""

    ref: str


class Cv(Returning["CvResult"], tag="cv"):
    actor: str
    limit: int = 20
    verify: bool = False


class Sessions(Returning["SessionsResult"], tag="sessions"):
    """The seance listing: one row per session, newest start first."""

    role: str | None = None
    rig: str | None = None
    state: Literal["open", "squashed", "abandoned", "logged"] | None = None
    limit: int = 20
    # Every node's sessions by default; one node's, or this node's only.
    node: str | None = None
    local: bool = False


class ResolveSession(Returning["SessionRow"], tag="resolve_session"):
    """One session by id or unique prefix (a trailing ``...`` or ``…`` is ignored)."""

    session: str


class Attribute(Returning["AttributeResult"], tag="attribute"):
    """Record that a session touched an issue; resolves the session when not given."""

    issue: str
    session: str | None = None
    action: Literal["closed", "created", "updated", "reopened"] = "closed"
    actor: str | None = None
    env: dict[str, str] = msgspec.field(default_factory=dict)
    cwd: str | None = None


class Attribution(Returning["AttributionResult"], tag="attribution"):
    issue: str


class Hook(Returning["HookResult"], tag="hook"):
    """A Claude Code hook call, forwarded untouched by ``gastown-hook``.

    ``payload`` is Claude's stdin JSON as it was; ``env`` holds the Gas Town
    variables the hook saw. ``spooled_at`` is set when the request waited in
    the spool because the daemon was down.
    """

    payload: msgspec.Raw
    env: dict[str, str] = msgspec.field(default_factory=dict)
    cwd: str | None = None
    pid: int | None = None
    ppid: int | None = None
    at: float | None = None
    spooled_at: float | None = None
    # Bytes the hook cut from long strings of ``payload`` to fit the frame limit.
    trimmed: int = 0


class Metrics(Returning["MetricsResult"], tag="metrics"):
    """The daemon's metrics as text: OpenMetrics, or Prometheus' classic text format."""

    format: Literal["openmetrics", "prometheus"] = "openmetrics"


# The op table's one line per op: a new op is a request struct naming its result
# (``Returning["XResult"]``), that result, a line here, and its handler in
# gastownd/ops/__init__.py. ``OP_TABLE`` (at the end) is derived from it.
class Version(Returning["VersionResult"], tag="version"):
    """The daemon's version, its protocol versions, and the Python that runs it."""


RequestUnion = (
    Hello
    | Ping
    | Status
    | Emit
    | Query
    | Subscribe
    | Unsubscribe
    | Prune
    | SessionStart
    | SessionStep
    | SessionEnd
    | WispGet
    | DigestGet
    | Cv
    | Sessions
    | ResolveSession
    | Attribute
    | Attribution
    | Hook
    | Metrics
    | Version
)
OPS: frozenset[str] = frozenset(cls.__struct_config__.tag for cls in typing.get_args(RequestUnion))


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


class ArchiveInfo(msgspec.Struct, kw_only=True):
    """The archive of pruned lines: its size on disk and the UTC days it holds."""

    bytes: int = 0
    days: int = 0
    first_day: str | None = None
    last_day: str | None = None


class IndexingProgress(msgspec.Struct, kw_only=True):
    """The older lines the daemon is still indexing after a start with no snapshot:
    until then queries see only the lines indexed so far."""

    lines: int  # lines to index in the background
    bytes_done: int
    bytes_total: int


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
    # Config keys a SIGHUP read but that apply only at the next start.
    config_restart_pending: list[str] = msgspec.field(default_factory=list)
    # Set while older lines are indexed in the background (None: all indexed).
    indexing: IndexingProgress | None = None


class EmitResult(msgspec.Struct, kw_only=True):
    cursor: str
    event: msgspec.Raw


class QueryResult(msgspec.Struct, kw_only=True):
    events: list[msgspec.Raw]
    cursor: str
    # Set when the answer comes from the lines indexed so far, not from all of them.
    indexing: IndexingProgress | None = None


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


# The views of the daemon's records (its wisps, steps, digests, session records): the
# daemon derives each from its record by one rule (gastownd.core.views.to_view: same
# names, instants as timestamps); tests/unit/test_record_shapes.py keeps the fields equal.
# Declared here, not shared, so that this module imports without the daemon.


class StepView(msgspec.Struct, kw_only=True, omit_defaults=True):
    kind: str
    at: str
    ref: str | None = None
    payload: dict[str, Any] | None = None


class WispView(msgspec.Struct, kw_only=True):
    session_id: str
    actor: str
    role: str
    rig: str | None = None
    cwd: str | None = None
    topic: str | None = None
    source: str
    parent_session: str | None = None
    tmux_session: str | None = None
    started_at: str
    last_activity_at: str
    ended_at: str | None = None
    segment: int
    state: str
    end_reason: str | None = None
    step_count: int = 0
    steps: list[StepView] = msgspec.field(default_factory=list)


class CommitView(msgspec.Struct, kw_only=True):
    sha: str
    subject: str = ""


class HandoffView(msgspec.Struct, kw_only=True):
    at: str
    to: str | None = None
    subject: str = ""


class DigestView(msgspec.Struct, kw_only=True):
    digest_id: str
    session_id: str
    segment: int
    actor: str
    role: str
    rig: str | None = None
    state: str
    end_reason: str
    started_at: str
    ended_at: str
    duration_s: float
    step_count: int
    counts: dict[str, int] = msgspec.field(default_factory=dict)
    issues_closed: list[str] = msgspec.field(default_factory=list)
    issues_created: list[str] = msgspec.field(default_factory=list)
    commits: list[CommitView] = msgspec.field(default_factory=list)
    handoffs: list[HandoffView] = msgspec.field(default_factory=list)
    topic: str | None = None
    cwd: str | None = None
    parent_session: str | None = None
    tmux_session: str | None = None
    title: str
    summary: str
    prev_hash: str
    hash: str
    # The node the session ran on; ``remote``: another node than the one answering.
    node: str | None = None
    remote: bool = False


class SessionStartResult(msgspec.Struct, kw_only=True):
    wisp: WispView
    created: bool
    ended: list[str] = msgspec.field(default_factory=list)


class SessionStepResult(msgspec.Struct, kw_only=True):
    session_id: str
    segment: int
    step_count: int


class ForkView(msgspec.Struct, kw_only=True):
    """Several digests on one predecessor (``prev_hash`` ``""``: several first digests),
    e.g. the same identity active on two machines at once."""

    prev_hash: str
    digest_ids: list[str]
    nodes: list[str]


class CvResult(msgspec.Struct, kw_only=True):
    actor: str
    digests: list[DigestView]
    total: int
    verified: bool | None = None
    broken_at: str | None = None
    broken_reason: str | None = None
    forks: list[ForkView] = msgspec.field(default_factory=list)


class SessionRow(msgspec.Struct, kw_only=True):
    """One session the town has seen. ``started_at``: its first start;
    ``last_started_at``: its latest (resume, compaction, a new segment);
    ``state``: its wisp's state, or ``logged`` when only log lines told of it."""

    session_id: str
    actor: str
    started_at: str
    last_activity: str
    state: str
    topic: str | None = None
    cwd: str | None = None
    end_reason: str | None = None
    digest_id: str | None = None
    summary: str | None = None
    segments: int = 1
    last_started_at: str | None = None
    starts: int = 1
    ended_at: str | None = None
    actor_pid: str | None = None
    # The node the session ran on; ``remote``: another node than the one answering.
    node: str | None = None
    remote: bool = False
    # Steps over all its segments (its digests', and its open segment's when it runs on the
    # node answering); None: known only from log lines, or a daemon older than the field.
    step_count: int | None = None


class SessionsResult(msgspec.Struct, kw_only=True):
    sessions: list[SessionRow]


class AttributeResult(msgspec.Struct, kw_only=True):
    issue: str
    session_id: str
    action: str
    rule: str
    actor: str


class AttributionRecord(msgspec.Struct, kw_only=True):
    session_id: str
    action: str
    at: str
    actor: str
    digest_id: str | None = None
    rule: str = ""
    # The node the session ran on; ``remote``: another node than the one answering.
    node: str | None = None
    remote: bool = False


class AttributionResult(msgspec.Struct, kw_only=True):
    issue: str
    records: list[AttributionRecord]


class HookResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    handled: str
    # Text the hook prints for Claude (predecessor context), if any.
    context: str | None = None


class MetricsResult(msgspec.Struct, kw_only=True):
    content_type: str
    text: str


class VersionResult(msgspec.Struct, kw_only=True):
    daemon_version: str
    protocol: int
    min_protocol: int
    python: str


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
    # On a subscription to other nodes' lines: the node the event comes from.
    node: str | None = None


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
    node: str | None = None


# ---------------------------------------------------------------- the op table


class OpSpec(NamedTuple):
    """One op as the wire knows it: its name (the request's tag), request and result."""

    name: str
    request: type[Returning[Any]]
    result: type[Any]


def _result_type(request: type[Returning[Any]]) -> type[Any]:
    """The ``ResultT`` a request class was declared with (``Returning["XResult"]``)."""
    for base in getattr(request, "__orig_bases__", ()):
        for arg in typing.get_args(base):
            result = (
                globals().get(arg.__forward_arg__) if isinstance(arg, typing.ForwardRef) else arg
            )
            if isinstance(result, type):
                return result
    raise TypeError(f"{request.__name__} does not name its result: Returning['XResult']")


# Every op, by name, derived from ``RequestUnion``: the daemon's dispatcher, both
# clients and docs/protocol.md are checked against this table.
OP_TABLE: dict[str, OpSpec] = {
    request.__struct_config__.tag: OpSpec(
        request.__struct_config__.tag, request, _result_type(request)
    )
    for request in typing.get_args(RequestUnion)
}
RESULT_TYPES: dict[type[Request], type[Any]] = {op.request: op.result for op in OP_TABLE.values()}
