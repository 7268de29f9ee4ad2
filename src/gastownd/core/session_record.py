"""The permanent record of a session, from whatever told the town about it.

Every session the town has seen keeps one record, forever: the log's
retention never shrinks it. Sources, merged into the same record:

- ``session_start`` lines in the event log (``gt prime``'s, other tools', and
  the daemon's own for hook-fed sessions): each is the record of one start
  (:func:`start_seen`), merged into the stored one;
- the wisp engine (hook calls and session ops): the wisp's state, times and
  metadata, and each start that reopened or continued a wisp;
- ``session_death`` and ``handoff`` lines: a :class:`LineEnd` ends the records
  of sessions known only from the log (wisps end through
  :func:`gastownd.core.wisp.ended_by_line`).

This module reads lines into those values; the store applies them. Pure: no I/O.

:class:`SessionRecord` is the record's one shape: the store's row (its columns
are its fields), the body of federation's ``session`` record
(:class:`gastownd.core.records.SessionMessage`, the same fields under a message
header) and, through :func:`gastownd.core.views.to_view`, the wire's ``SessionRow``.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from gastownd.core.bounds import Count, Instant

LOGGED: Final = "logged"
RECORDED_TYPES: Final = frozenset({"session_start", "session_death", "handoff", "session_end"})


class SessionRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What the town knows of one session, kept forever.

    ``state``: its wisp's state, or :data:`LOGGED` when only log lines told of it.
    ``node``: the node it ran on ('' for this one); ``rev``: its change counter there
    (a receiver keeps the highest). Fields in federation's order: a session record
    on the stream lists them so.
    """

    session_id: str
    rev: Count
    actor: str
    role: str | None = None
    topic: str | None = None
    cwd: str | None = None
    actor_pid: str | None = None
    first_start_at: Instant
    last_start_at: Instant
    last_activity_at: Instant
    starts: Count
    segments: Count
    state: str
    ended_at: Instant | None = None
    end_reason: str | None = None
    node: str = ""


class NewAttribution(msgspec.Struct, frozen=True, kw_only=True):
    """One change to an issue, attributed to the session (and its segment) that made it:
    the store's row and, under a message header, federation's ``attribution`` record."""

    issue: str
    session_id: str
    segment: Count | None = None
    action: str
    at: Instant
    actor: str
    rule: str


class AttributionRow(NewAttribution, frozen=True, kw_only=True):
    """A stored attribution, with the digest of its segment once it exists, and the
    node it was made on ('' for this one); the wire's ``AttributionRecord`` is its view."""

    digest_id: str | None = None
    node: str = ""


class LineEnd(msgspec.Struct, frozen=True):
    """A line that ends the sessions of an identity started at or before ``at``."""

    identities: frozenset[str]
    at: float
    reason: str


def identity_key(actor: str) -> str:
    """How identities compare: case-insensitive, without surrounding slashes."""
    return actor.strip("/").casefold()


def start_seen(actor: str, payload: dict[str, Any] | None, at: float) -> SessionRecord | None:
    """The record of the one start a ``session_start`` line tells of (state
    :data:`LOGGED`, ``rev`` 0: the store numbers changes), or None without a session id."""
    body = payload or {}
    session_id = body.get("session_id")
    if not isinstance(session_id, str) or not session_id.strip():
        return None
    return SessionRecord(
        session_id=session_id,
        rev=0,
        actor=actor or _text(body.get("role")) or "unknown",
        role=_text(body.get("role")),
        topic=_text(body.get("topic")),
        cwd=_text(body.get("cwd")),
        actor_pid=_text(body.get("actor_pid")),
        first_start_at=float(at),
        last_start_at=float(at),
        last_activity_at=float(at),
        starts=1,
        segments=1,
        state=LOGGED,
    )


def line_end(type: str, actor: str, payload: dict[str, Any] | None, at: float) -> LineEnd | None:
    """Which identities' sessions a line ends (the rules of ``ended_by_line``).

    ``session_death`` (and a ``session_end`` written by another tool, without
    ``digest_id``) ends the sessions of the payload's ``agent`` and the line's
    actor; ``handoff`` with ``to_session: true`` those of the line's actor.
    """
    body = payload or {}
    if type == "session_death" or (type == "session_end" and "digest_id" not in body):
        reason = _text(body.get("reason")) or type
        names = [actor, _text(body.get("agent")) or ""]
    elif type == "handoff" and body.get("to_session") is True:
        reason, names = "handoff", [actor]
    else:
        return None
    identities = frozenset(
        key for key in map(identity_key, names) if key and key not in ("unknown", "gt", "daemon")
    )
    if not identities:
        return None
    return LineEnd(identities=identities, at=float(at), reason=reason)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
