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


class SessionStartResult(msgspec.Struct, kw_only=True):
    wisp: WispView
    created: bool
    ended: list[str] = msgspec.field(default_factory=list)


class SessionStep(Returning["SessionStepResult"], tag="session_step"):
    session: str
    kind: str
    ref: str | None = None
    payload: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not EVENT_TYPE_PATTERN.fullmatch(self.kind):
            raise ValueError("kind must match [A-Za-z0-9_.:-]{1,128}")


class SessionStepResult(msgspec.Struct, kw_only=True):
    session_id: str
    segment: int
    step_count: int


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
    rig: str | None = None
    state: Literal["open", "squashed", "abandoned", "logged"] | None = None
    limit: int = 20
    # Every node's sessions by default; one node's, or this node's only.
    node: str | None = None
    local: bool = False


class SessionsResult(msgspec.Struct, kw_only=True):
    sessions: list[SessionRow]


class ResolveSession(Returning["SessionRow"], tag="resolve_session"):
    """One session by id or unique prefix (a trailing ``...`` or ``…`` is ignored)."""

    session: str


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


class Attribute(Returning["AttributeResult"], tag="attribute"):
    """Record that a session touched an issue; resolves the session when not given."""

    issue: str
    session: str | None = None
    action: Literal["closed", "created", "updated", "reopened"] = "closed"
    actor: str | None = None
    env: dict[str, str] = msgspec.field(default_factory=dict)
    cwd: str | None = None


class AttributeResult(msgspec.Struct, kw_only=True):
    issue: str
    session_id: str
    action: str
    rule: str
    actor: str


class Attribution(Returning["AttributionResult"], tag="attribution"):
    issue: str


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
