"""Session wisps: the pure state machine, as h11 does it.

Everything that moves a wisp lives in this file. Legal moves are one table,
:data:`TRANSITIONS` (state → op → next state); ``None`` stands for a session with
no wisp yet. An illegal move raises :class:`IllegalTransition` naming the op, the
state and the session, and leaves its input untouched (every value here is
immutable; functions return new ones).

No I/O and no clock: every instant comes in as ``now`` (epoch seconds).

Layers:

- values: :class:`Step`, :class:`Wisp`, :class:`StartArgs`;
- functions on one wisp: :func:`start`, :func:`step`, :func:`squash`, :func:`abandon`;
- rules for ends without a hook: :func:`stale`, :func:`ended_by_line`,
  :func:`superseded_by`;
- :class:`WispBook`, an aggregate over many wisps whose methods return the new
  book and the effects (:data:`Effect`) the shell must persist, in order and in
  one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, Final, TypeAlias

import msgspec

from gastownd.core.digest import Digest, make_digest

MAX_EPOCH_S: Final = 1e11
# Bytes of step payloads (as JSON) one wisp segment keeps. Past it a step keeps its kind,
# time and ref, and its payload becomes ``{PAYLOAD_NOT_KEPT: <its size>}``: an open wisp
# lives in memory, and with steps up to the 1 MiB frame limit, a count of steps alone did
# not bound it (2,000 steps of 100 KB held 195 MiB). See docs/sessions.md, "Steps".
MAX_KEPT_PAYLOAD_BYTES: Final = 4 << 20
PAYLOAD_NOT_KEPT: Final = "payload_not_kept_bytes"
_payload_encoder: Final = msgspec.json.Encoder()


class WispState(StrEnum):
    OPEN = "open"
    SQUASHED = "squashed"
    ABANDONED = "abandoned"


class StartSource(StrEnum):
    """Claude Code's ``SessionStart`` ``source``."""

    STARTUP = "startup"
    RESUME = "resume"
    CLEAR = "clear"
    COMPACT = "compact"


class StepKind(StrEnum):
    """The step kinds gastownd knows; ``Step.kind`` accepts any other string too."""

    ISSUE_CLOSED = "issue_closed"
    ISSUE_CREATED = "issue_created"
    COMMIT = "commit"
    HANDOFF = "handoff"
    COMPACTION = "compaction"
    DONE = "done"
    NUDGE = "nudge"
    MAIL = "mail"
    PROMPT = "prompt"
    TURN = "turn"
    NOTE = "note"


class Op(StrEnum):
    START = "start"  # source startup or clear
    RESUME = "resume"
    COMPACT = "compact"
    STEP = "step"
    SQUASH = "squash"
    ABANDON = "abandon"


_O, _S, _A = WispState.OPEN, WispState.SQUASHED, WispState.ABANDONED

TRANSITIONS: Final[Mapping[WispState | None, Mapping[Op, WispState]]] = {
    None: {Op.START: _O, Op.RESUME: _O, Op.COMPACT: _O},
    _O: {
        Op.START: _O,  # repeated start: adds nothing
        Op.RESUME: _O,  # continues the open wisp
        Op.COMPACT: _O,  # records a compaction step
        Op.STEP: _O,
        Op.SQUASH: _S,
        Op.ABANDON: _A,
    },
    _S: {Op.RESUME: _O, Op.COMPACT: _O},  # reopened as a new segment
    _A: {Op.RESUME: _O, Op.COMPACT: _O},  # reopened as a new segment
}
"""state → op → next state. ``None``: the session has no wisp. Anything absent is illegal."""

OP_FOR_SOURCE: Final[Mapping[StartSource, Op]] = {
    StartSource.STARTUP: Op.START,
    StartSource.CLEAR: Op.START,
    StartSource.RESUME: Op.RESUME,
    StartSource.COMPACT: Op.COMPACT,
}

TOWN_ROLES: Final = frozenset({"mayor", "deacon", "boot"})
_RIG_ROLES: Final[Mapping[str, str]] = {
    "polecats": "polecat",
    "crew": "crew",
    "witness": "witness",
    "refinery": "refinery",
}


class WispError(Exception):
    """Base of the errors this module raises on purpose."""


class IllegalTransition(WispError):
    """An op that the table does not allow from the wisp's state (the caller's fault)."""

    def __init__(self, op: Op, state: WispState | None, session_id: str) -> None:
        self.op = op
        self.state = state
        self.session_id = session_id
        shown = "absent" if state is None else str(state)
        super().__init__(f"illegal op {op} on session {session_id!r} in state {shown}")


def transition(state: WispState | None, op: Op, session_id: str) -> WispState:
    """The next state, or :class:`IllegalTransition`."""
    try:
        return TRANSITIONS[state][op]
    except KeyError:
        raise IllegalTransition(op, state, session_id) from None


# ---------------------------------------------------------------- values


def _check_instant(name: str, value: float) -> None:
    if not 0 <= value <= MAX_EPOCH_S:  # also rejects NaN
        raise ValueError(f"{name} must be epoch seconds in [0, {MAX_EPOCH_S:g}], got {value!r}")


class Step(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    kind: str
    at: float
    ref: str | None = None
    payload: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.kind:
            raise ValueError("step kind must not be empty")
        _check_instant("at", self.at)


class Wisp(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One segment of one session; the book keeps the latest segment per session."""

    session_id: str
    actor: str
    role: str
    rig: str | None = None
    cwd: str | None = None
    topic: str | None = None
    source: StartSource = StartSource.STARTUP
    parent_session: str | None = None
    tmux_session: str | None = None
    pid: int | None = None
    started_at: float
    last_activity_at: float
    ended_at: float | None = None
    segment: int = 1
    steps: tuple[Step, ...] = ()
    # Bytes of the payloads ``steps`` keep (``MAX_KEPT_PAYLOAD_BYTES`` at most).
    payload_bytes: int = 0
    state: WispState = WispState.OPEN
    end_reason: str | None = None

    def __post_init__(self) -> None:
        if not self.session_id:
            raise ValueError("session_id must not be empty")
        if not self.actor:
            raise ValueError("actor must not be empty")
        if self.segment < 1:
            raise ValueError("segment starts at 1")
        _check_instant("started_at", self.started_at)
        _check_instant("last_activity_at", self.last_activity_at)
        ended = self.state != WispState.OPEN
        if (self.end_reason is not None, self.ended_at is not None) != (ended, ended):
            raise ValueError("ended_at and end_reason are set exactly when the wisp has ended")
        if self.ended_at is not None:
            _check_instant("ended_at", self.ended_at)


def parse_actor(actor: str) -> tuple[str, str | None]:
    """``(role, rig)`` of an identity: ``gastown/polecats/rust`` → ``("polecat", "gastown")``.

    Town roles (``mayor``, ``deacon``, ``boot``) and dogs (``deacon/dogs/<name>``)
    have no rig; a bare name is its own role.
    """
    parts = [p for p in actor.split("/") if p]
    if not parts:
        return actor, None
    head = parts[0]
    if head in TOWN_ROLES:
        if head == "deacon" and len(parts) >= 3 and parts[1] == "dogs":
            return "dog", None
        return head, None
    if len(parts) == 1:
        return head, None
    return _RIG_ROLES.get(parts[1], parts[1]), head


# ---------------------------------------------------------------- one wisp


class StartArgs(msgspec.Struct, frozen=True, kw_only=True):
    """What one start says about a session: the argument of every start, wherever it
    comes from (the ``session_start`` op, a hook call, a step that reopens a wisp).

    Every field but ``session_id``, ``actor`` and ``source`` is metadata: given
    (not None), it replaces what the wisp recorded.
    """

    session_id: str
    actor: str
    source: StartSource = StartSource.STARTUP
    cwd: str | None = None
    topic: str | None = None
    parent_session: str | None = None
    tmux_session: str | None = None
    pid: int | None = None


_NOT_METADATA: Final = frozenset({"session_id", "actor", "source"})


def _given_metadata(args: StartArgs) -> dict[str, Any]:
    """The metadata fields ``args`` sets (not None)."""
    return {
        name: value
        for name, value in msgspec.structs.asdict(args).items()
        if name not in _NOT_METADATA and value is not None
    }


def start(existing: Wisp | None, args: StartArgs, *, now: float) -> Wisp:
    """Apply a ``SessionStart`` to the session's current wisp (``None`` if it has none).

    - no wisp: a new open wisp, segment 1 (plus a ``compaction`` step for ``compact``);
    - open, ``startup``/``clear``: returned unchanged (idempotent);
    - open, ``resume``: the same wisp with fresher metadata and activity time;
    - open, ``compact``: the same, plus a ``compaction`` step;
    - squashed or abandoned, ``resume``/``compact``: reopened as segment + 1, no steps;
    - squashed or abandoned, ``startup``/``clear``: :class:`IllegalTransition`.

    The session keeps its first actor; given metadata replaces what was recorded.
    """
    session_id = args.session_id
    if existing is not None and existing.session_id != session_id:
        raise ValueError(f"wisp {existing.session_id!r} is not session {session_id!r}")
    source = StartSource(args.source)
    op = OP_FOR_SOURCE[source]
    transition(None if existing is None else existing.state, op, session_id)
    now = float(now)
    if existing is None:
        role, rig = parse_actor(args.actor)
        fields = msgspec.structs.asdict(args)
        fields["source"] = source
        wisp = Wisp(**fields, role=role, rig=rig, started_at=now, last_activity_at=now)
    elif existing.state == WispState.OPEN:
        if op is Op.START:
            return existing
        wisp = msgspec.structs.replace(
            existing,
            **_given_metadata(args),
            last_activity_at=max(existing.last_activity_at, now),
        )
    else:
        wisp = msgspec.structs.replace(
            existing,
            **_given_metadata(args),
            source=source,
            started_at=now,
            last_activity_at=now,
            ended_at=None,
            segment=existing.segment + 1,
            steps=(),
            payload_bytes=0,
            state=WispState.OPEN,
            end_reason=None,
        )
    if op is Op.COMPACT:
        wisp = _append(wisp, Step(kind=StepKind.COMPACTION, at=now))
    return wisp


def step(
    wisp: Wisp,
    kind: str,
    ref: str | None = None,
    payload: Mapping[str, Any] | None = None,
    *,
    now: float,
) -> Wisp:
    """The wisp with one more step at ``now``; only an open wisp takes steps."""
    transition(wisp.state, Op.STEP, wisp.session_id)
    kept = dict(payload) if payload is not None else None
    size = len(_payload_encoder.encode(kept)) if kept else 0
    if wisp.payload_bytes + size > MAX_KEPT_PAYLOAD_BYTES:
        kept, size = {PAYLOAD_NOT_KEPT: size}, 0
    new = Step(kind=str(kind), at=float(now), ref=ref, payload=kept)
    return msgspec.structs.replace(_append(wisp, new), payload_bytes=wisp.payload_bytes + size)


def squash(wisp: Wisp, reason: str, *, now: float, prev_hash: str = "") -> tuple[Wisp, Digest]:
    """End an open wisp normally: the ended wisp (steps dropped) and its digest.

    ``prev_hash`` is the hash of the actor's previous digest (``""`` for its first).
    """
    return _end(wisp, Op.SQUASH, WispState.SQUASHED, reason, float(now), prev_hash)


def abandon(
    wisp: Wisp, reason: str = "idle_timeout", *, now: float, prev_hash: str = ""
) -> tuple[Wisp, Digest]:
    """End an open wisp that was reaped: like :func:`squash`, state ``abandoned``."""
    return _end(wisp, Op.ABANDON, WispState.ABANDONED, reason, float(now), prev_hash)


def _end(
    wisp: Wisp, op: Op, target: WispState, reason: str, now: float, prev_hash: str
) -> tuple[Wisp, Digest]:
    transition(wisp.state, op, wisp.session_id)
    if not reason:
        raise ValueError("an end reason must not be empty")
    ended = msgspec.structs.replace(
        wisp,
        state=target,
        end_reason=reason,
        ended_at=max(now, wisp.last_activity_at),
    )
    digest = make_digest(ended, prev_hash=prev_hash)
    return msgspec.structs.replace(ended, steps=(), payload_bytes=0), digest


def ended_before(wisp: Wisp, at: float) -> bool:
    """Whether the wisp had ended by ``at``: a step dated then belongs to its last segment."""
    return wisp.state != WispState.OPEN and wisp.ended_at is not None and at <= wisp.ended_at


def _append(wisp: Wisp, new: Step) -> Wisp:
    return msgspec.structs.replace(
        wisp,
        steps=(*wisp.steps, new),
        last_activity_at=max(wisp.last_activity_at, new.at),
    )


# ---------------------------------------------------------------- ends without a hook


def stale(wisps: Iterable[Wisp], now: float, idle_timeout_s: float) -> list[Wisp]:
    """Open wisps with no activity for ``idle_timeout_s``, longest idle first."""
    found = [
        w for w in wisps if w.state == WispState.OPEN and now - w.last_activity_at >= idle_timeout_s
    ]
    return sorted(found, key=lambda w: (w.last_activity_at, w.session_id))


def _same_identity(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    a, b = a.strip("/").casefold(), b.strip("/").casefold()
    return bool(a) and a != "unknown" and a == b


def ended_by_line(
    wisps: Iterable[Wisp],
    *,
    type: str,
    actor: str,
    payload: Mapping[str, Any] | None,
    at: float,
) -> list[tuple[str, str]]:
    """``(session_id, reason)`` for each open wisp an event-log line ends.

    - ``session_death`` (and a ``session_end`` line that another tool wrote, i.e.
      without ``digest_id``): wisps whose actor is the payload's ``agent`` or the
      line's actor, or whose tmux session is the payload's ``session`` or the
      line's actor; reason from the payload, else the line type;
    - ``handoff`` with ``to_session: true``: wisps of the line's actor (``handoff``).

    Only wisps started at or before the line's time ``at`` are ended: a session
    started after a death in the same tmux session is its successor.
    """
    body = payload or {}
    if type == "session_death" or (type == "session_end" and "digest_id" not in body):
        agent, tmux = body.get("agent"), body.get("session")
        reason = body.get("reason")
        reason = reason if isinstance(reason, str) and reason else type

        def hit(w: Wisp) -> bool:
            return (
                _same_identity(w.actor, _as_str(agent))
                or _same_identity(w.actor, actor)
                or _same_identity(w.tmux_session, _as_str(tmux))
                or _same_identity(w.tmux_session, actor)
            )

    elif type == "handoff" and body.get("to_session") is True:
        reason = "handoff"

        def hit(w: Wisp) -> bool:
            return _same_identity(w.actor, actor)

    else:
        return []
    # Lines carry whole seconds: a death in the second the session started ends it.
    found = [w for w in wisps if w.state == WispState.OPEN and int(w.started_at) <= at and hit(w)]
    return [(w.session_id, reason) for w in sorted(found, key=_start_order)]


def superseded_by(
    wisps: Iterable[Wisp], new: Wisp, source: StartSource | str = StartSource.STARTUP
) -> list[tuple[str, str]]:
    """``(session_id, reason)`` for each open wisp that a newly opened ``new`` replaces.

    - ``clear`` with a parent session: the parent (``clear``);
    - the same actor in the same tmux session, started no later than ``new``:
      ``superseded`` (``clear`` when the source is ``clear``).
    """
    reason = "clear" if source == StartSource.CLEAR else "superseded"
    found = []
    for w in wisps:
        if w.state != WispState.OPEN or w.session_id == new.session_id:
            continue
        replaced_parent = source == StartSource.CLEAR and w.session_id == new.parent_session
        same_seat = (
            new.tmux_session is not None
            and w.tmux_session == new.tmux_session
            and w.actor == new.actor
            and w.started_at <= new.started_at
        )
        if replaced_parent or same_seat:
            found.append(w)
    return [(w.session_id, reason) for w in sorted(found, key=_start_order)]


def _start_order(w: Wisp) -> tuple[float, str]:
    return (w.started_at, w.session_id)


def _as_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


# ---------------------------------------------------------------- effects


class EmitLine(msgspec.Struct, frozen=True, kw_only=True):
    """Append one Gas Town line (``ts`` from ``at``) to the shared event log."""

    type: str
    actor: str
    payload: dict[str, Any]
    at: float


class SaveWisp(msgspec.Struct, frozen=True, kw_only=True):
    """Insert or replace the wisp's row (its header; steps come as :class:`AppendStep`)."""

    wisp: Wisp


class AppendStep(msgspec.Struct, frozen=True, kw_only=True):
    """Store one step; ``seq`` is its 0-based position in the segment."""

    session_id: str
    segment: int
    seq: int
    step: Step


class SaveDigest(msgspec.Struct, frozen=True, kw_only=True):
    """Store the digest and delete its segment's steps, in the same transaction."""

    digest: Digest


class CountStart(msgspec.Struct, frozen=True, kw_only=True):
    """One more start of a session that already had a wisp (resume, compaction, reopen).

    A session's first start is counted from the ``session_start`` line it emits.
    """

    session_id: str
    at: float


Effect: TypeAlias = EmitLine | SaveWisp | AppendStep | SaveDigest | CountStart
Outcome: TypeAlias = tuple["WispBook", tuple[Effect, ...]]


def session_start_line(wisp: Wisp, *, at: float) -> EmitLine:
    """Gas Town's ``session_start``: ``role`` is the identity, ``actor_pid`` ``<role>-<pid>``."""
    payload: dict[str, Any] = {
        "session_id": wisp.session_id,
        "role": wisp.actor,
        "actor_pid": wisp.actor if wisp.pid is None else f"{wisp.actor}-{wisp.pid}",
    }
    if wisp.topic is not None:
        payload["topic"] = wisp.topic
    if wisp.cwd is not None:
        payload["cwd"] = wisp.cwd
    return EmitLine(type="session_start", actor=wisp.actor, payload=payload, at=float(at))


def session_end_line(digest: Digest, *, at: float) -> EmitLine:
    payload: dict[str, Any] = {
        "session_id": digest.session_id,
        "role": digest.actor,
        "reason": digest.end_reason,
        "duration_s": round(digest.duration_s),
        "steps": digest.step_count,
        "digest_id": digest.digest_id,
    }
    return EmitLine(type="session_end", actor=digest.actor, payload=payload, at=float(at))


# ---------------------------------------------------------------- the book


class WispBook(msgspec.Struct, frozen=True, kw_only=True):
    """Wisps by session id (latest segment) and each actor's newest digest hash.

    The shell may hold a partial book; it must contain every open wisp, the
    current wisp of any session an op names, and the chain heads of their actors.
    Each method returns ``(new book, effects)`` and never changes ``self``.
    """

    wisps: dict[str, Wisp] = {}
    heads: dict[str, str] = {}

    def state_of(self, session_id: str) -> WispState | None:
        wisp = self.wisps.get(session_id)
        return None if wisp is None else wisp.state

    def start(self, args: StartArgs, *, now: float) -> Outcome:
        """:func:`start`, first ending the wisps it supersedes.

        ``session_start`` is emitted once per session: when it gets its first wisp.
        """
        existing = self.wisps.get(args.session_id)
        wisp = start(existing, args, now=now)
        book, effects = self._opened(
            existing, wisp, StartSource(args.source), float(now), supersede=True
        )
        if existing is not None and wisp is not existing:
            effects = (*effects, CountStart(session_id=args.session_id, at=float(now)))
        return book, effects

    def _opened(
        self, existing: Wisp | None, wisp: Wisp, source: StartSource, now: float, *, supersede: bool
    ) -> Outcome:
        if wisp is existing:
            return self, ()
        session_id = wisp.session_id
        wisps, heads = dict(self.wisps), dict(self.heads)
        effects: list[Effect] = []
        reopened = existing is None or existing.state != WispState.OPEN
        if reopened and supersede:
            for sid, reason in superseded_by(wisps.values(), wisp, source):
                effects += _close(wisps, heads, sid, reason, Op.SQUASH, now, now)
        kept = existing.steps if existing is not None and not reopened else ()
        wisps[session_id] = wisp
        effects.append(SaveWisp(wisp=wisp))
        effects += _appended(wisp, len(kept))
        if existing is None:
            effects.append(session_start_line(wisp, at=now))
        return WispBook(wisps=wisps, heads=heads), tuple(effects)

    def step(
        self,
        session_id: str,
        kind: str,
        ref: str | None = None,
        payload: Mapping[str, Any] | None = None,
        *,
        now: float,
        reopen: bool = False,
    ) -> Outcome:
        """:func:`step`; with ``reopen`` an ended wisp is first resumed as a new segment,
        unless the step is dated no later than its end.

        A step is no evidence that the session took its tmux seat back, so that
        reopening supersedes no other wisp. A step dated at or before the end (an async
        ``PostToolUse`` delivered after ``SessionEnd``) belongs to the ended segment: its
        digest is final (hashed into the chain, published), so the step changes nothing,
        and what the call attributes is recorded against that segment.
        """
        wisp = self.wisps.get(session_id)
        if wisp is None:
            raise IllegalTransition(Op.STEP, None, session_id)
        if reopen and ended_before(wisp, now):
            _check_instant("at", now)  # a step dated out of range is refused, not dropped
            return self, ()
        book: WispBook = self
        effects: tuple[Effect, ...] = ()
        if reopen and wisp.state != WispState.OPEN:
            again = StartArgs(session_id=session_id, actor=wisp.actor, source=StartSource.RESUME)
            resumed = start(wisp, again, now=now)
            book, effects = self._opened(
                wisp, resumed, StartSource.RESUME, float(now), supersede=False
            )
            wisp = book.wisps[session_id]
        new = step(wisp, kind, ref, payload, now=now)
        wisps = dict(book.wisps)
        wisps[session_id] = new
        more = (SaveWisp(wisp=new), *_appended(new, len(wisp.steps)))
        return WispBook(wisps=wisps, heads=book.heads), (*effects, *more)

    def end(self, session_id: str, reason: str = "ended", *, now: float) -> Outcome:
        """Squash an open wisp: its digest, a ``session_end`` line."""
        return self._close_one(session_id, reason, Op.SQUASH, float(now))

    def abandon(self, session_id: str, reason: str = "idle_timeout", *, now: float) -> Outcome:
        return self._close_one(session_id, reason, Op.ABANDON, float(now))

    def reap(self, *, now: float, idle_timeout_s: float) -> Outcome:
        """Abandon every :func:`stale` wisp; its digest ends at its last activity."""
        wisps, heads = dict(self.wisps), dict(self.heads)
        effects: list[Effect] = []
        for wisp in stale(self.wisps.values(), now, idle_timeout_s):
            effects += _close(
                wisps,
                heads,
                wisp.session_id,
                "idle_timeout",
                Op.ABANDON,
                wisp.last_activity_at,
                float(now),
            )
        if not effects:
            return self, ()
        return WispBook(wisps=wisps, heads=heads), tuple(effects)

    def observe_line(
        self,
        *,
        type: str,
        actor: str,
        payload: Mapping[str, Any] | None,
        at: float,
        now: float,
    ) -> Outcome:
        """Apply :func:`ended_by_line` to a line another writer appended (line time ``at``)."""
        ends = ended_by_line(self.wisps.values(), type=type, actor=actor, payload=payload, at=at)
        if not ends:
            return self, ()
        wisps, heads = dict(self.wisps), dict(self.heads)
        effects: list[Effect] = []
        for sid, reason in ends:
            effects += _close(wisps, heads, sid, reason, Op.SQUASH, float(at), float(now))
        return WispBook(wisps=wisps, heads=heads), tuple(effects)

    def _close_one(self, session_id: str, reason: str, op: Op, now: float) -> Outcome:
        if session_id not in self.wisps:
            raise IllegalTransition(op, None, session_id)
        wisps, heads = dict(self.wisps), dict(self.heads)
        effects = _close(wisps, heads, session_id, reason, op, now, now)
        return WispBook(wisps=wisps, heads=heads), tuple(effects)


def _close(
    wisps: dict[str, Wisp],
    heads: dict[str, str],
    session_id: str,
    reason: str,
    op: Op,
    ended_at: float,
    now: float,
) -> list[Effect]:
    """End one wisp in the given (copied) maps; the effects, in the order to apply them."""
    wisp = wisps[session_id]
    end = squash if op is Op.SQUASH else abandon
    ended, digest = end(wisp, reason, now=ended_at, prev_hash=heads.get(wisp.actor, ""))
    wisps[session_id] = ended
    heads[wisp.actor] = digest.hash
    return [SaveWisp(wisp=ended), SaveDigest(digest=digest), session_end_line(digest, at=now)]


def _appended(wisp: Wisp, before: int) -> list[Effect]:
    return [
        AppendStep(session_id=wisp.session_id, segment=wisp.segment, seq=seq, step=s)
        for seq, s in enumerate(wisp.steps[before:], start=before)
    ]
