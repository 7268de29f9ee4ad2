"""The seance listing and session-id resolution (Gas Town reference, section 5)."""

from __future__ import annotations

import msgspec

from gastown_client.protocol import ResolveSession, SessionRow, Sessions, SessionsResult
from gastownd.core.digest import Digest
from gastownd.core.events import format_ts
from gastownd.core.query import compile_filter
from gastownd.core.wisp import Wisp
from gastownd.daemon import Daemon
from gastownd.errors import AmbiguousError, BadRequestError, NotFoundError

FULL_ID_LENGTH = 36


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
    assert daemon.sessions is not None and daemon.eventlog is not None
    wanted = text.strip()
    for suffix in ("...", "…"):
        if wanted.endswith(suffix):
            wanted = wanted[: -len(suffix)]
    if not wanted:
        raise BadRequestError("empty session id")
    store = daemon.sessions.store
    if len(wanted) >= FULL_ID_LENGTH or wanted in daemon.sessions.book.wisps:
        return wanted
    if await daemon.sessions.db(store.known_sessions, [wanted]):
        return wanted
    candidates = await daemon.sessions.db(store.sessions_with_prefix, wanted, 4)
    candidates += [s for s in daemon.eventlog.index.session_names if s.startswith(wanted)][:4]
    return unique(wanted, candidates, "session")


async def resolve_session(daemon: Daemon, request: ResolveSession) -> SessionRow:
    session_id = await resolve_session_id(daemon, request.session)
    rows = await _rows(daemon, [session_id])
    if not rows:
        raise NotFoundError(f"session {session_id} is unknown")
    return rows[0]


async def sessions(daemon: Daemon, request: Sessions) -> SessionsResult:
    """One row per session, newest start first: wisps, then sessions only gt logged."""
    assert daemon.sessions is not None and daemon.eventlog is not None
    if not 0 < request.limit <= 10_000:
        raise BadRequestError("limit must be between 1 and 10000")
    needles = [n for n in (request.role, request.rig) if n]
    store = daemon.sessions.store
    rows: list[SessionRow] = []
    if request.state != "logged":
        wisps = await daemon.sessions.db(
            lambda: store.wisps_listing(
                actor_like=needles, state=request.state, limit=request.limit
            )
        )
        rows += [await _row_of_wisp(daemon, w) for w in wisps]
    if request.state in (None, "logged"):
        rows += await _logged_only(daemon, needles, request.limit)
    rows.sort(key=lambda r: r.started_at, reverse=True)
    return SessionsResult(sessions=rows[: request.limit])


async def _row_of_wisp(daemon: Daemon, wisp: Wisp) -> SessionRow:
    assert daemon.sessions is not None
    digest = None
    if str(wisp.state) != "open":
        digest = await daemon.sessions.db(
            daemon.sessions.store.latest_digest_of_session, wisp.session_id
        )
    return SessionRow(
        session_id=wisp.session_id,
        actor=wisp.actor,
        started_at=format_ts(wisp.started_at),
        last_activity=format_ts(wisp.last_activity_at),
        state=str(wisp.state),
        topic=wisp.topic,
        cwd=wisp.cwd,
        end_reason=wisp.end_reason,
        digest_id=digest.digest_id if digest else None,
        summary=synopsis(digest) if digest else None,
        segments=wisp.segment,
    )


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


async def _logged_only(daemon: Daemon, needles: list[str], limit: int) -> list[SessionRow]:
    """Sessions known only from ``session_start`` lines (gt's own), newest first."""
    assert daemon.sessions is not None and daemon.eventlog is not None
    index = daemon.eventlog.index
    seen: dict[str, int] = {}
    for position in index.search(compile_filter(types=["session_start"]), len(index) + 1):
        entry = index.entry(position)
        if entry.session is None or entry.session in seen:
            continue
        if any(n.lower() not in entry.actor.lower() for n in needles):
            continue
        seen[entry.session] = position
        if len(seen) >= limit * 2:
            break
    known = await daemon.sessions.db(daemon.sessions.store.known_sessions, list(seen))
    return (await _rows(daemon, [s for s in seen if s not in known]))[:limit]


async def _rows(daemon: Daemon, session_ids: list[str]) -> list[SessionRow]:
    """Rows for sessions, from the store when tracked, else from the log's lines."""
    assert daemon.sessions is not None and daemon.eventlog is not None
    index = daemon.eventlog.index
    rows = []
    for session_id in session_ids:
        wisp = daemon.sessions.book.wisps.get(session_id) or await daemon.sessions.db(
            daemon.sessions.store.wisp, session_id
        )
        if wisp is not None:
            rows.append(await _row_of_wisp(daemon, wisp))
            continue
        positions = index.search(
            compile_filter(session=session_id), len(index) + 1, oldest_first=True
        )
        starts = [p for p in positions if index.entry(p).type == "session_start"]
        if not starts:
            continue
        first = index.entry(starts[0])
        # Topic and cwd from the same line as the actor and start: gt may reuse an id.
        payload = msgspec.json.decode(daemon.eventlog.read_lines([starts[0]])[0]).get("payload", {})
        rows.append(
            SessionRow(
                session_id=session_id,
                actor=first.actor,
                started_at=format_ts(first.ts),
                last_activity=format_ts(index.entry(positions[-1]).ts),
                state="logged",
                topic=payload.get("topic"),
                cwd=payload.get("cwd"),
                segments=len(starts),
            )
        )
    return rows
