"""The sessions' ops: wisps, digests, the CV, the seance listing, attribution, hook calls.

The views of the daemon's records (``StepView``, ``WispView``, ``DigestView``, ``SessionRow``):
the daemon derives each from its record by one rule (gastownd.core.views.to_view: same names,
instants as timestamps); tests/unit/test_record_shapes.py keeps the fields equal. Declared
here, not shared, so that the client imports without the daemon.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from gastown_client.protocol.envelope import Returning
from gastown_client.protocol.log_ops import EVENT_TYPE_PATTERN

StartSourceName = Literal["startup", "resume", "clear", "compact"]


class SessionStart(Returning["SessionStartResult"], tag="session_start"):
    """Open or continue a session's wisp; idempotent for an open session."""

    session: str
    """The session id, verbatim; not blank."""
    actor: str
    """The identity; not blank."""
    cwd: str | None = None
    """The agent's working directory."""
    topic: str | None = None
    """What the session is about (an issue id, a task)."""
    source: StartSourceName = "startup"
    """As Claude Code's ``SessionStart``."""
    parent: str | None = None
    """The session this one replaces (``/clear``, a fork)."""
    tmux_session: str | None = None
    """``GT_SESSION``."""
    pid: int | None = None
    """The agent's pid (``actor_pid`` of the ``session_start`` line)."""

    def __post_init__(self) -> None:
        if not self.session.strip():
            raise ValueError("session must not be empty")
        if not self.actor.strip():
            raise ValueError("actor must not be empty")


class SessionStartResult(msgspec.Struct, kw_only=True):
    wisp: WispView
    created: bool
    ended: list[str] = msgspec.field(default_factory=list)


class SessionStep(Returning["SessionStepResult"], tag="session_step"):
    """Record a step in a wisp."""

    session: str
    """The session id or a unique prefix."""
    kind: str
    """Matches ``[A-Za-z0-9_.:-]{1,128}``."""
    ref: str | None = None
    """An issue id, a commit sha, ..."""
    payload: dict[str, Any] | None = None
    """Any JSON object, kept with the step."""

    def __post_init__(self) -> None:
        if not EVENT_TYPE_PATTERN.fullmatch(self.kind):
            raise ValueError("kind must match [A-Za-z0-9_.:-]{1,128}")


class SessionStepResult(msgspec.Struct, kw_only=True):
    session_id: str
    segment: int
    step_count: int


class SessionEnd(Returning["DigestView"], tag="session_end"):
    """Squash a wisp into its digest."""

    session: str
    """The session id or a unique prefix."""
    reason: str = "ended"
    """Why it ended; not blank."""


class WispGet(Returning["WispView"], tag="wisp"):
    """Read a wisp: a session's current wisp with its steps."""

    session: str
    """The session id or a unique prefix."""


class DigestGet(Returning["DigestView"], tag="digest"):
    """Read a digest, by digest id or session id (the latest segment)."""

    ref: str
    """A digest id (``dg-...``), a session id, or a unique prefix of either."""


class Cv(Returning["CvResult"], tag="cv"):
    """An actor's chain of digests."""

    actor: str
    """The exact identity."""
    limit: int = 20
    """At least 1."""
    verify: bool = False
    """Recompute the whole chain."""


class CvResult(msgspec.Struct, kw_only=True):
    actor: str
    digests: list[DigestView]
    total: int
    verified: bool | None = None
    broken_at: str | None = None
    broken_reason: str | None = None
    forks: list[ForkView] = msgspec.field(default_factory=list)


class Sessions(Returning["SessionsResult"], tag="sessions"):
    """The seance listing: one row per session, newest start first."""

    role: str | None = None
    """A case-insensitive substring of the actor."""
    rig: str | None = None
    """A case-insensitive substring of the actor (with ``role``: both must match)."""
    state: Literal["open", "squashed", "abandoned", "logged"] | None = None
    """``logged``: known only from the log's lines."""
    limit: int = 20
    """1 to 10000."""
    node: str | None = None
    """Federation: only the sessions that ran on this node."""
    local: bool = False
    """Only this node's sessions (the default lists every node's)."""


class SessionsResult(msgspec.Struct, kw_only=True):
    sessions: list[SessionRow]


class ResolveSession(Returning["SessionRow"], tag="resolve_session"):
    """One session, by id or unique prefix."""

    session: str
    """The id or a unique prefix (a trailing ``...`` or ``…`` is ignored)."""


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


class Attribute(Returning["AttributeResult"], tag="attribute"):
    """Record that a session touched an issue; resolves the session when not given."""

    issue: str
    """The issue id."""
    session: str | None = None
    """The session id or a prefix; when absent, resolved from ``env``."""
    action: Literal["closed", "created", "updated", "reopened"] = "closed"
    """What the session did to the issue."""
    actor: str | None = None
    """The actor, for rule 3 and for a session without a wisp."""
    env: dict[str, str] = msgspec.field(default_factory=dict)
    """The caller's ``CLAUDE_CODE_SESSION_ID``, ``GT_ROLE``, ``BD_ACTOR``, ``GT_SESSION``,
    and ``GT_RUNTIME_SESSION_ID`` (the first line of ``.runtime/session_id``)."""
    cwd: str | None = None
    """The caller's directory."""


class AttributeResult(msgspec.Struct, kw_only=True):
    issue: str
    session_id: str
    action: str
    rule: str
    actor: str


class Attribution(Returning["AttributionResult"], tag="attribution"):
    """Who touched an issue."""

    issue: str
    """The issue id."""


class AttributionResult(msgspec.Struct, kw_only=True):
    issue: str
    records: list[AttributionRecord]


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


class Hook(Returning["HookResult"], tag="hook"):
    """A Claude Code hook call, forwarded untouched by ``gastown-hook``."""

    payload: msgspec.Raw
    """Claude's hook JSON as it came on stdin; the daemon validates it."""
    env: dict[str, str] = msgspec.field(default_factory=dict)
    """The Gas Town and Claude variables the hook saw."""
    cwd: str | None = None
    """The hook's directory."""
    pid: int | None = None
    """The hook's pid."""
    ppid: int | None = None
    """Its parent's (Claude's) pid."""
    at: float | None = None
    """When the hook ran (epoch seconds); the steps get this time."""
    spooled_at: float | None = None
    """Set when the request waited in the spool (the daemon was down)."""
    trimmed: int = 0
    """Bytes the hook cut from long strings of ``payload`` to fit the frame limit (see
    [hooks](hooks.md#oversized-calls)); ``status`` counts such calls (``hooks_trimmed``)."""


class HookResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    handled: str
    # Text the hook prints for Claude (predecessor context), if any.
    context: str | None = None


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


class ForkView(msgspec.Struct, kw_only=True):
    """Several digests on one predecessor (``prev_hash`` ``""``: several first digests),
    e.g. the same identity active on two machines at once."""

    prev_hash: str
    digest_ids: list[str]
    nodes: list[str]
