"""The seance listing and session-id resolution (Gas Town reference, section 5).

Both read the permanent session records (``store.sessions``), never the log's
lines: the log's retention does not shrink them.
"""

from __future__ import annotations

from gastown_client.protocol import ResolveSession, SessionRow, Sessions, SessionsResult
from gastownd.core.digest import ENDED_STATES, Digest
from gastownd.core.session_record import LOGGED, SessionRecord
from gastownd.core.views import to_view
from gastownd.process.daemon import Daemon
from gastownd.process.refusals import AmbiguousError, BadRequestError, NotFoundError
from gastownd.store.lookups import DigestRow

FULL_ID_LENGTH = 36
# Session rows looked up in one trip to the store's thread.
ROWS_PER_TRIP = 64
# The listing's names for three SessionRecord fields (the wire predates the record).
SESSION_ROW_NAMES = {
    "first_start_at": "started_at",
    "last_start_at": "last_started_at",
    "last_activity_at": "last_activity",
}


def unique(prefix: str, candidates: list[str], what: str) -> str:
    distinct = sorted(set(candidates))
    if not distinct:
        raise NotFoundError(f"no {what} matches {prefix!r}")
    if len(distinct) > 1:
        shown = ", ".join(distinct[:3])
        raise AmbiguousError(
            f"ambiguous prefix {prefix!r}: matches {shown}" + (", …" if len(distinct) > 3 else "")
        )
    return distinct[0]


async def resolve_session_id(daemon: Daemon, text: str) -> str:
    """A full session id, from an id or a unique prefix (trailing ``...``/``…`` ignored)."""
    wanted = text.strip()
    for suffix in ("...", "…"):
        if wanted.endswith(suffix):
            wanted = wanted[: -len(suffix)]
    if not wanted:
        raise BadRequestError("empty session id")
    sessions = daemon.sessions
    if len(wanted) >= FULL_ID_LENGTH or wanted in sessions.book.wisps:
        return wanted
    if await sessions.db(sessions.store.session_record, wanted) is not None:
        return wanted
    candidates = await sessions.db(sessions.store.sessions_with_prefix, wanted, 4)
    return unique(wanted, candidates, "session")


async def resolve_session(daemon: Daemon, request: ResolveSession) -> SessionRow:
    session_id = await resolve_session_id(daemon, request.session)
    record = await daemon.sessions.read(daemon.sessions.store.session_record, session_id)
    if record is None:
        raise NotFoundError(f"session {session_id} is unknown")
    [row] = await _rows(daemon, [record])
    return row


async def sessions(daemon: Daemon, request: Sessions) -> SessionsResult:
    """One row per session the town has seen, most recently started first."""
    if not 0 < request.limit <= 10_000:
        raise BadRequestError("limit must be between 1 and 10000")
    needles = [n for n in (request.role, request.rig) if n]
    store = daemon.sessions.store
    node = "" if request.local or request.node == daemon.node else request.node
    records = await daemon.sessions.read(
        lambda: store.session_listing(
            actor_like=needles, state=request.state, limit=request.limit, node=node
        )
    )
    return SessionsResult(sessions=await _rows(daemon, records))


async def _rows(daemon: Daemon, records: list[SessionRecord]) -> list[SessionRow]:
    """The records as rows, with their latest digest and step count: a trip to the store's
    thread per ``ROWS_PER_TRIP`` rows (other store work waits at most that long)."""
    store = daemon.sessions.store

    def lookup(chunk: list[SessionRecord]) -> list[tuple[DigestRow | None, int | None]]:
        found: list[tuple[DigestRow | None, int | None]] = []
        for record in chunk:
            digest = None
            if record.state in ENDED_STATES:
                digest = store.latest_digest_of_session(record.session_id)
            steps = None  # a session known only from log lines: its steps are not known
            if record.state != LOGGED:
                steps = store.session_step_count(record.session_id, record.node)
            found.append((digest, steps))
        return found

    rows = []
    for start in range(0, len(records), ROWS_PER_TRIP):
        chunk = records[start : start + ROWS_PER_TRIP]
        for record, (digest, steps) in zip(
            chunk, await daemon.sessions.read(lookup, chunk), strict=True
        ):
            rows.append(
                to_view(
                    record,
                    SessionRow,
                    renames=SESSION_ROW_NAMES,
                    digest_id=digest.digest.digest_id if digest else None,
                    summary=synopsis(digest.digest) if digest else None,
                    starts=max(1, record.starts),
                    node=daemon.node_name(record.node),
                    remote=record.node != "",
                    step_count=steps,
                )
            )
    return rows


def synopsis(digest: Digest) -> str:
    """One line about what a session did, for the listing."""
    parts = []
    if digest.issues_closed:
        parts.append("closed " + ", ".join(digest.issues_closed[:5]))
    if digest.commits:
        parts.append(f"{len(digest.commits)} commit{'s' if len(digest.commits) > 1 else ''}")
    if digest.handoffs and digest.handoffs[-1].subject:
        parts.append(f"handoff: {digest.handoffs[-1].subject}")
    if not parts:
        parts.append(f"{digest.step_count} step{'' if digest.step_count == 1 else 's'}")
    return "; ".join(parts)[:200]
