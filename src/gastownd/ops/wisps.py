"""session_start, session_step, session_end, wisp, digest, cv, attribute, attribution."""

from __future__ import annotations

import msgspec

from gastown_client.protocol import (
    Attribute,
    AttributeResult,
    Attribution,
    AttributionRecord,
    AttributionResult,
    Cv,
    CvResult,
    DigestGet,
    DigestView,
    ForkView,
    SessionEnd,
    SessionStart,
    SessionStartResult,
    SessionStep,
    SessionStepResult,
    WispGet,
    WispView,
)
from gastownd.core.beads import ISSUE_ID
from gastownd.core.digest import Digest, audit_chain
from gastownd.core.hookmap import STEP_OF_ACTION
from gastownd.core.views import to_view
from gastownd.core.wisp import Outcome, SaveDigest, StartArgs, Wisp, WispBook, WispState
from gastownd.ops.seance import resolve_session_id, unique
from gastownd.process.daemon import Daemon
from gastownd.process.refusals import BadRequestError, NotFoundError
from gastownd.sessions.recorder import SessionRecorder, WispOp
from gastownd.store import NewAttribution

# Longer than any Beads id: the most an issue id may be.
MAX_ISSUE_ID = 128
# The rules that name the session for sure: only they may reopen an ended one. The
# others are inferences (``.runtime/session_id`` outlives its session), and a late
# change found through them is recorded against the ended session without reopening it.
REOPENING_RULES = frozenset({"explicit", "CLAUDE_CODE_SESSION_ID"})


def check_issue_id(issue: str) -> None:
    """A Beads issue id (``gt-a1b2``, ``spotter-dov.3``), or ``BadRequestError``."""
    if len(issue) > MAX_ISSUE_ID or ISSUE_ID.fullmatch(issue) is None:
        shown = issue if len(issue) <= 60 else issue[:60] + "…"
        raise BadRequestError(
            f"{shown!r} is not a Beads issue id (prefix-hash, e.g. gt-a1b2 or gt-a1b2.3, "
            f"at most {MAX_ISSUE_ID} characters)"
        )


def _sessions(daemon: Daemon) -> SessionRecorder:
    return daemon.sessions


def wisp_view(wisp: Wisp) -> WispView:
    return to_view(wisp, WispView, step_count=len(wisp.steps))


def digest_view(digest: Digest, node: str, *, remote: bool = False) -> DigestView:
    return to_view(digest, DigestView, node=node, remote=remote)


# The session_start op's names for two StartArgs fields (the wire predates StartArgs).
START_WIRE_NAMES = {"session": "session_id", "parent": "parent_session"}


def start_args(request: SessionStart) -> StartArgs:
    """The request's StartArgs, field for field under :data:`START_WIRE_NAMES`."""
    fields = msgspec.structs.asdict(request)
    del fields["id"]
    return msgspec.convert({START_WIRE_NAMES.get(k, k): v for k, v in fields.items()}, StartArgs)


async def session_start(daemon: Daemon, request: SessionStart) -> SessionStartResult:
    sessions = _sessions(daemon)
    now = daemon.clock()
    names = [request.session] + ([request.parent] if request.parent else [])
    existed: list[bool] = []

    args = start_args(request)

    def transition(book: WispBook) -> Outcome:
        existed.append(request.session in book.wisps)
        return book.start(args, now=now)

    book, effects = await sessions.apply(WispOp(names, transition))
    ended = [
        e.digest.session_id
        for e in effects
        if isinstance(e, SaveDigest) and e.digest.session_id != request.session
    ]
    return SessionStartResult(
        wisp=wisp_view(book.wisps[request.session]),
        created=not existed[0],
        ended=ended,
    )


async def session_step(daemon: Daemon, request: SessionStep) -> SessionStepResult:
    sessions = _sessions(daemon)
    session_id = await resolve_session_id(daemon, request.session)
    now = daemon.clock()
    book, _ = await sessions.apply(
        WispOp(
            [session_id],
            lambda book: book.step(session_id, request.kind, request.ref, request.payload, now=now),
        )
    )
    wisp = book.wisps[session_id]
    return SessionStepResult(
        session_id=session_id, segment=wisp.segment, step_count=len(wisp.steps)
    )


async def session_end(daemon: Daemon, request: SessionEnd) -> DigestView:
    sessions = _sessions(daemon)
    session_id = await resolve_session_id(daemon, request.session)
    if not request.reason.strip():
        raise BadRequestError("reason must not be empty")
    now = daemon.clock()
    _, effects = await sessions.apply(
        WispOp([session_id], lambda book: book.end(session_id, request.reason, now=now))
    )
    [digest] = [e.digest for e in effects if isinstance(e, SaveDigest)]
    return digest_view(digest, daemon.node)


async def wisp(daemon: Daemon, request: WispGet) -> WispView:
    sessions = _sessions(daemon)
    session_id = await resolve_session_id(daemon, request.session)
    found = sessions.book.wisps.get(session_id) or await sessions.read(
        sessions.store.wisp, session_id
    )
    if found is None:
        raise NotFoundError(f"session {session_id} has no wisp (known only from the event log)")
    return wisp_view(found)


async def digest(daemon: Daemon, request: DigestGet) -> DigestView:
    sessions = _sessions(daemon)
    ref = request.ref.strip().rstrip(".…")
    if ref.startswith("dg-"):
        exact = await sessions.read(sessions.store.digest, ref)
        if exact is None:
            candidates = await sessions.read(sessions.store.digests_with_prefix, ref)
            found = await sessions.read(sessions.store.digest, unique(ref, candidates, "digest"))
        else:
            found = exact
    else:
        session_id = await resolve_session_id(daemon, ref)
        found = await sessions.read(sessions.store.latest_digest_of_session, session_id)
        if found is None:
            raise NotFoundError(f"session {session_id} has no digest yet (still open?)")
    assert found is not None
    return digest_view(found.digest, daemon.node_name(found.node), remote=found.node != "")


async def cv(daemon: Daemon, request: Cv) -> CvResult:
    """The actor's digests from every node, newest end first; ``verify`` audits the chain."""
    sessions = _sessions(daemon)
    if request.limit < 1:
        raise BadRequestError("limit must be at least 1")
    total = await sessions.read(sessions.store.chain_length, request.actor)
    rows = await sessions.read(sessions.store.chain, request.actor, request.limit)
    result = CvResult(
        actor=request.actor,
        digests=[
            digest_view(r.digest, daemon.node_name(r.node), remote=r.node != "") for r in rows
        ],
        total=total,
    )
    if request.verify:
        chain = list(reversed(await sessions.read(sessions.store.chain, request.actor, None)))
        audit = audit_chain([r.digest for r in chain])
        result.verified = audit.broken_at is None
        if audit.broken_at is not None:
            result.broken_at = chain[audit.broken_at].digest.digest_id
            result.broken_reason = audit.broken_reason
        result.forks = [
            ForkView(
                prev_hash=prev,
                digest_ids=[chain[i].digest.digest_id for i in indexes],
                nodes=[daemon.node_name(chain[i].node) for i in indexes],
            )
            for prev, indexes in audit.forks.items()
        ]
    return result


async def attribute(daemon: Daemon, request: Attribute) -> AttributeResult:
    check_issue_id(request.issue)
    sessions = _sessions(daemon)
    session_id, rule = await _attribution_session(daemon, request)
    known = sessions.book.wisps.get(session_id) or await sessions.db(
        sessions.store.wisp, session_id
    )
    actor = (
        known.actor
        if known
        else (
            request.actor or request.env.get("GT_ROLE") or request.env.get("BD_ACTOR") or "unknown"
        )
    )
    now = daemon.clock()
    kind = STEP_OF_ACTION[request.action]
    transition = None
    if known is not None and (known.state == WispState.OPEN or rule in REOPENING_RULES):
        # A late change to an ended session, named for sure, reopens it as its next segment.
        def transition(book: WispBook) -> Outcome:
            return book.step(session_id, kind, request.issue, None, now=now, reopen=True)

    def record(book: WispBook) -> list[NewAttribution]:
        wisp = book.wisps.get(session_id) or known
        return [
            NewAttribution(
                issue=request.issue,
                session_id=session_id,
                segment=wisp.segment if wisp is not None else None,
                action=request.action,
                at=now,
                actor=actor,
                rule=rule,
            )
        ]

    await sessions.apply(WispOp([session_id], transition, record))
    return AttributeResult(
        issue=request.issue, session_id=session_id, action=request.action, rule=rule, actor=actor
    )


async def _attribution_session(daemon: Daemon, request: Attribute) -> tuple[str, str]:
    """Which session made the change, and the rule that said so (issue 4, section 7)."""
    sessions = _sessions(daemon)
    if request.session:
        return await resolve_session_id(daemon, request.session), "explicit"
    env = request.env
    claude = env.get("CLAUDE_CODE_SESSION_ID")
    if claude:
        return claude, "CLAUDE_CODE_SESSION_ID"
    actor = request.actor or env.get("GT_ROLE") or env.get("BD_ACTOR")
    if actor:
        found = sessions.open_wisp_of(actor=actor)
        if found is not None:
            return found.session_id, "latest open wisp of the actor"
    tmux = env.get("GT_SESSION")
    if tmux:
        found = sessions.open_wisp_of(tmux=tmux)
        if found is not None:
            return found.session_id, "tmux session (GT_SESSION)"
    runtime = env.get("GT_RUNTIME_SESSION_ID")
    if runtime:
        return runtime, ".runtime/session_id"
    raise NotFoundError(
        "cannot tell which session made this change: pass --session, or set "
        "CLAUDE_CODE_SESSION_ID, GT_ROLE/BD_ACTOR (with an open wisp), GT_SESSION, "
        "or run where .runtime/session_id exists"
    )


async def attribution(daemon: Daemon, request: Attribution) -> AttributionResult:
    # A read: any text shorter than an id may be asked about (it has no records).
    if len(request.issue) > MAX_ISSUE_ID:
        raise BadRequestError(f"an issue id has at most {MAX_ISSUE_ID} characters")
    sessions = _sessions(daemon)
    rows = await sessions.read(sessions.store.attributions, request.issue)
    return AttributionResult(
        issue=request.issue,
        records=[
            to_view(r, AttributionRecord, node=daemon.node_name(r.node), remote=r.node != "")
            for r in rows
        ],
    )
