"""hook: Claude Code hook calls, forwarded untouched by gastown-hook, applied to wisps."""

from __future__ import annotations

import anyio
import msgspec
import structlog

from gastown_client.protocol import Hook, HookResult
from gastownd.core.digest import Digest
from gastownd.core.events import format_ts
from gastownd.core.hookmap import (
    HookPlan,
    PlannedStep,
    decode_payload,
    plan_hook,
    predecessor_context,
)
from gastownd.core.session_record import SessionRecord
from gastownd.core.wisp import Effect, Outcome, StartArgs, StartSource, WispBook, WispState
from gastownd.metrics.buckets import hook_event_label
from gastownd.process.daemon import Daemon
from gastownd.process.refusals import BadRequestError
from gastownd.sessions.recorder import NO_CHANGE, WispOp
from gastownd.store import NewAttribution

log = structlog.get_logger("gastownd.hooks")

GIT_TIMEOUT_S = 2.0


async def hook(
    daemon: Daemon, request: Hook, *, spool_mark: tuple[str, int] | None = None
) -> HookResult:
    sessions = daemon.sessions
    if request.trimmed:
        daemon.counters.hooks_trimmed += 1
    if request.spooled_at is not None:
        daemon.counters.hooks_spooled += 1
    try:
        payload = decode_payload(bytes(request.payload))
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        daemon.counters.hook_calls["invalid"] += 1
        log.info("hook_rejected", reason=str(exc), spooled=request.spooled_at is not None)
        raise BadRequestError(f"hook payload: {exc}") from None
    daemon.counters.hook_calls[hook_event_label(payload.hook_event_name)] += 1
    now = request.at if request.at is not None else daemon.clock()
    plan = plan_hook(payload, request.env, request.cwd, request.ppid)
    if plan.ignored is not None:
        log.debug("hook_ignored", hook_event=plan.event, reason=plan.ignored)
        if spool_mark is not None:
            await sessions.apply(NO_CHANGE, spool_mark=spool_mark)
        return HookResult(handled=f"ignored: {plan.ignored}")
    if plan.commit_needs_lookup and plan.cwd:
        commit = await _last_commit(plan.cwd)
        if commit is not None:
            plan.steps.append(PlannedStep("commit", commit[0], {"subject": commit[1]}))
    session_id = plan.session_id
    assert session_id is not None
    parent = None
    if plan.start == "clear":
        previous = sessions.open_wisp_of(tmux=plan.tmux_session) if plan.tmux_session else None
        previous = previous or sessions.open_wisp_of(actor=plan.actor)
        if previous is not None and previous.session_id != session_id:
            parent = previous.session_id

    def transition(book: WispBook) -> Outcome:
        return _apply_plan(book, plan, session_id, parent, now)

    def attributions(book: WispBook) -> list[NewAttribution]:
        wisp = book.wisps.get(session_id)
        return [
            NewAttribution(
                issue=a.issue,
                session_id=session_id,
                segment=wisp.segment if wisp else None,
                action=a.action,
                at=now,
                actor=plan.actor,
                rule="hook",
            )
            for a in plan.attributions
        ]

    names = [session_id] + ([parent] if parent else [])
    book, _ = await sessions.apply(WispOp(names, transition, attributions), spool_mark=spool_mark)
    if plan.steps and plan.end_reason is None and book.state_of(session_id) != WispState.OPEN:
        # Dated before the session's end, delivered after it (an async hook): see WispBook.step.
        log.info(
            "hook_steps_after_end",
            session_id=session_id,
            steps=[s.kind for s in plan.steps],
            attributions=len(plan.attributions),
        )
    handled = plan.event + (f" ({plan.start})" if plan.start else "")
    context = None
    if plan.start in ("startup", "clear") and daemon.config.hooks.inject_context:
        context = await _context_for(daemon, plan, session_id)
    return HookResult(handled=handled, context=context)


def _apply_plan(
    book: WispBook, plan: HookPlan, session_id: str, parent: str | None, now: float
) -> Outcome:
    effects: list[Effect] = []
    state = book.state_of(session_id)
    source = plan.start
    if source == "compact" and state == WispState.OPEN:
        # PreCompact already recorded the compaction: the session simply goes on.
        source = "resume"
    if source is None and state is None:
        # The first we hear of this session is a step or an end (the hook was
        # installed mid-session, or SessionStart was lost): open it anyway.
        source = "resume"
    if source is not None:
        args = StartArgs(
            session_id=session_id,
            actor=plan.actor,
            source=StartSource(source),
            cwd=plan.cwd,
            parent_session=parent,
            tmux_session=plan.tmux_session,
            pid=plan.pid,
        )
        book, done = book.start(args, now=now)
        effects += done
    for step in plan.steps:
        book, done = book.step(session_id, step.kind, step.ref, step.payload, now=now, reopen=True)
        effects += done
    if plan.end_reason is not None and book.state_of(session_id) == WispState.OPEN:
        book, done = book.end(session_id, plan.end_reason, now=now)
        effects += done
    return book, tuple(effects)


async def _last_commit(cwd: str) -> tuple[str, str] | None:
    """The sha and subject of HEAD in ``cwd`` (when the tool output did not show them)."""
    try:
        with anyio.fail_after(GIT_TIMEOUT_S):
            result = await anyio.run_process(
                ["git", "-C", cwd, "log", "-1", "--format=%H%x00%s"], check=False
            )
    except (OSError, TimeoutError):
        return None
    if result.returncode != 0:
        return None
    sha, _, subject = result.stdout.decode("utf-8", "replace").strip().partition("\0")
    return (sha, subject) if sha else None


async def _context_for(daemon: Daemon, plan: HookPlan, session_id: str) -> str | None:
    """The note about the actor's previous session: its digest when it has one."""
    sessions = daemon.sessions
    store = sessions.store

    def lookup() -> tuple[SessionRecord | None, Digest | None]:
        # One trip to the store's thread: this runs on SessionStart's deadline.
        record = store.latest_session_of(plan.actor, excluding=session_id)
        if record is None or record.state == "open":
            return record, None
        row = store.latest_digest_of_session(record.session_id)
        return record, (row.digest if row is not None else None)

    record, digest = await sessions.db(lookup)
    if record is None:
        return None
    if digest is not None:
        return predecessor_context(
            actor=plan.actor,
            session_id=digest.session_id,
            started_at=format_ts(digest.started_at),
            ended_at=format_ts(digest.ended_at),
            end_reason=digest.end_reason,
            topic=digest.topic,
            issues_closed=list(digest.issues_closed),
            commits=[f"{c.sha[:8]} {c.subject}" for c in digest.commits],
            handoff_subject=digest.handoffs[-1].subject if digest.handoffs else None,
        )
    return predecessor_context(
        actor=plan.actor,
        session_id=record.session_id,
        started_at=format_ts(record.last_start_at),
        ended_at=format_ts(record.ended_at) if record.ended_at is not None else None,
        end_reason=record.end_reason,
        topic=record.topic,
    )
