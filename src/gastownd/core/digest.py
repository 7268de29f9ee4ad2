"""The digest: what an ended wisp leaves behind, and the entity chain it joins.

A digest is built from a wisp that has just ended, with its steps still attached
(the steps are dropped once the digest exists). Each actor's digests form a hash
chain, its CV: ``prev_hash`` is the ``hash`` of the actor's previous digest
(``""`` for the first) and ``hash`` is the sha256 of :func:`canonical_bytes`.

Schema rule: the canonical encoding omits fields at their default, so a field
added later must have a default, or every existing hash breaks.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import msgspec

from gastownd.core.bounds import Count, Instant


class DigestibleStep(Protocol):
    """What a digest reads of a step (``core.wisp.Step`` is one).

    Digests are built from wisps, and the wisp engine builds digests: the two
    protocols keep this module from importing ``core.wisp`` back.
    """

    @property
    def kind(self) -> str: ...
    @property
    def at(self) -> float: ...
    @property
    def ref(self) -> str | None: ...
    @property
    def payload(self) -> dict[str, Any] | None: ...


class DigestibleWisp(Protocol):
    """What a digest reads of an ended wisp (``core.wisp.Wisp`` is one)."""

    @property
    def session_id(self) -> str: ...
    @property
    def actor(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def rig(self) -> str | None: ...
    @property
    def cwd(self) -> str | None: ...
    @property
    def topic(self) -> str | None: ...
    @property
    def parent_session(self) -> str | None: ...
    @property
    def tmux_session(self) -> str | None: ...
    @property
    def started_at(self) -> float: ...
    @property
    def ended_at(self) -> float | None: ...
    @property
    def segment(self) -> int: ...
    @property
    def state(self) -> str: ...
    @property
    def end_reason(self) -> str | None: ...
    @property
    def steps(self) -> Sequence[DigestibleStep]: ...


DIGEST_ID_PREFIX: Final = "dg-"
MAX_SUMMARY_STEPS: Final = 200
MAX_SUMMARY_TEXT: Final = 200
ENDED_STATES: Final = frozenset({"squashed", "abandoned"})

_TS_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"
_TEXT_KEYS: Final = ("subject", "title", "summary", "message", "text", "reason")
_canonical_encoder: Final = msgspec.json.Encoder(order="sorted")


class Commit(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    sha: str
    subject: str = ""


class Handoff(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    at: Instant
    to: str | None = None
    subject: str = ""


class Digest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The permanent record of one segment of one session."""

    digest_id: str
    session_id: str
    segment: Count
    actor: str
    role: str
    rig: str | None = None
    state: str
    end_reason: str
    started_at: Instant
    ended_at: Instant
    duration_s: Instant
    step_count: Count
    counts: dict[str, Count] = {}
    issues_closed: tuple[str, ...] = ()
    issues_created: tuple[str, ...] = ()
    commits: tuple[Commit, ...] = ()
    handoffs: tuple[Handoff, ...] = ()
    topic: str | None = None
    cwd: str | None = None
    parent_session: str | None = None
    tmux_session: str | None = None
    title: str
    summary: str
    prev_hash: str = ""
    hash: str = ""


def digest_id_for(session_id: str, segment: int) -> str:
    """Deterministic: the same session and segment always name the same digest."""
    seed = f"{session_id}\x1f{segment}".encode()
    return DIGEST_ID_PREFIX + hashlib.sha256(seed).hexdigest()[:16]


def canonical_bytes(digest: Digest) -> bytes:
    """Sorted-key JSON of every field except ``hash``, defaults omitted."""
    fields = msgspec.to_builtins(digest)
    fields.pop("hash", None)
    return _canonical_encoder.encode(fields)


def digest_hash(digest: Digest) -> str:
    return hashlib.sha256(canonical_bytes(digest)).hexdigest()


def seal(digest: Digest) -> Digest:
    """The same digest with ``hash`` set from its content."""
    return msgspec.structs.replace(digest, hash=digest_hash(digest))


def make_digest(wisp: DigestibleWisp, *, prev_hash: str = "") -> Digest:
    """Digest of a wisp that has ended (state squashed or abandoned), steps still attached."""
    if wisp.state not in ENDED_STATES or wisp.ended_at is None or wisp.end_reason is None:
        raise ValueError(f"wisp {wisp.session_id!r} has not ended (state {wisp.state})")
    steps = wisp.steps
    ended_at = wisp.ended_at
    counts = Counter(s.kind for s in steps)
    digest = Digest(
        digest_id=digest_id_for(wisp.session_id, wisp.segment),
        session_id=wisp.session_id,
        segment=wisp.segment,
        actor=wisp.actor,
        role=wisp.role,
        rig=wisp.rig,
        state=str(wisp.state),
        end_reason=wisp.end_reason,
        started_at=float(wisp.started_at),
        ended_at=float(ended_at),
        duration_s=max(0.0, float(ended_at) - float(wisp.started_at)),
        step_count=len(steps),
        counts={kind: counts[kind] for kind in sorted(counts)},
        issues_closed=_issues(steps, "issue_closed"),
        issues_created=_issues(steps, "issue_created"),
        commits=_commits(steps),
        handoffs=tuple(
            Handoff(at=float(s.at), to=_ref(s, "to_session", "to"), subject=_text(s))
            for s in steps
            if s.kind == "handoff"
        ),
        topic=wisp.topic,
        cwd=wisp.cwd,
        parent_session=wisp.parent_session,
        tmux_session=wisp.tmux_session,
        title=f"Digest: {wisp.session_id}",
        summary=_summary(wisp, steps, ended_at),
        prev_hash=prev_hash,
    )
    return seal(digest)


class ChainAudit(msgspec.Struct, frozen=True):
    """What :func:`audit_chain` found in one actor's digests."""

    # Index (in the given order) of the first digest that breaks the chain, and why.
    broken_at: int | None = None
    broken_reason: str | None = None
    # Predecessor hash -> the digests (indexes) that all link to it, when more than one do.
    forks: dict[str, list[int]] = msgspec.field(default_factory=dict)


def audit_chain(digests: Sequence[Digest], *, anchor: str = "") -> ChainAudit:
    """Check one actor's digests (from every node, oldest first).

    A link is broken when a digest's content does not match its ``hash``, when
    its ``prev_hash`` is neither ``""`` (the actor's first digest), ``anchor``
    nor the hash of another digest in the list, or when it belongs to another
    actor than the first. A **fork** is not a broken link: several digests on
    one predecessor, which happens when one identity is active on two machines
    at once (each links to the newest digest it knew). Links are checked
    against the whole list, so clocks that disagree across machines cannot
    break them.
    """
    known = {d.hash for d in digests} | {anchor, ""}
    followers: dict[str, list[int]] = defaultdict(list)
    broken_at = broken_reason = None
    for index, digest in enumerate(digests):
        followers[digest.prev_hash].append(index)
        if broken_at is not None:
            continue
        if digest.actor != digests[0].actor:
            broken_at, broken_reason = index, "belongs to another actor"
        elif digest.hash != digest_hash(digest):
            broken_at, broken_reason = index, "content does not match its hash"
        elif digest.prev_hash not in known:
            broken_at, broken_reason = index, "prev_hash matches no digest of the actor"
    forks = {prev: indexes for prev, indexes in followers.items() if len(indexes) > 1}
    return ChainAudit(broken_at=broken_at, broken_reason=broken_reason, forks=forks)


def verify_chain(digests: Sequence[Digest], *, anchor: str = "") -> int | None:
    """Index of the first broken link (see :func:`audit_chain`), else None."""
    return audit_chain(digests, anchor=anchor).broken_at


# ---------------------------------------------------------------- extraction


def _str_value(payload: dict[str, Any] | None, *keys: str) -> str | None:
    if not payload:
        return None
    for key in keys:
        value = payload.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _ref(step: DigestibleStep, *keys: str) -> str | None:
    return step.ref or _str_value(step.payload, *keys)


def _text(step: DigestibleStep) -> str:
    text = _str_value(step.payload, *_TEXT_KEYS) or ""
    return text.splitlines()[0] if text else ""


def _issues(steps: Sequence[DigestibleStep], kind: str) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for s in steps:
        if s.kind == kind:
            issue = _ref(s, "issue", "id", "bead")
            if issue:
                found.setdefault(issue)
    return tuple(found)


def _commits(steps: Sequence[DigestibleStep]) -> tuple[Commit, ...]:
    found: dict[str, Commit] = {}
    for s in steps:
        if s.kind == "commit":
            sha = _ref(s, "sha", "commit")
            if sha and sha not in found:
                found[sha] = Commit(sha=sha, subject=_text(s))
    return tuple(found.values())


# ---------------------------------------------------------------- summary


def _format_ts(epoch_s: float) -> str:
    try:
        return datetime.fromtimestamp(int(epoch_s), UTC).strftime(_TS_FORMAT)
    except (OverflowError, ValueError, OSError):
        return f"{epoch_s}"


def _format_duration(seconds: float) -> str:
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) > MAX_SUMMARY_TEXT:
        return flat[: MAX_SUMMARY_TEXT - 1] + "…"
    return flat


def _step_line(number: int, step: DigestibleStep) -> str:
    parts = [p for p in (step.ref or "", _text(step)) if p]
    detail = _one_line(" — ".join(parts)) if parts else ""
    line = f"{number}. **[{_one_line(step.kind)}]** {_format_ts(step.at)}"
    return f"{line} {detail}" if detail else line


def _summary(wisp: DigestibleWisp, steps: Sequence[DigestibleStep], ended_at: float) -> str:
    """Markdown in the style of Beads' squash digests."""
    lines = [
        "## Session Summary",
        "",
        f"**Session**: {wisp.session_id} (segment {wisp.segment})",
        f"**Actor**: {wisp.actor}",
    ]
    if wisp.topic:
        lines.append(f"**Topic**: {_one_line(wisp.topic)}")
    lines += [
        f"**Started**: {_format_ts(wisp.started_at)}",
        f"**Ended**: {_format_ts(ended_at)} ({wisp.state}: {_one_line(wisp.end_reason or '')})",
        f"**Duration**: {_format_duration(max(0.0, ended_at - wisp.started_at))}",
        f"**Steps**: {len(steps)}",
        "",
        "---",
        "",
        "### Steps",
        "",
    ]
    if not steps:
        lines.append("_(no steps recorded)_")
    for number, s in enumerate(steps[:MAX_SUMMARY_STEPS], start=1):
        lines.append(_step_line(number, s))
    if len(steps) > MAX_SUMMARY_STEPS:
        lines.append(f"_… and {len(steps) - MAX_SUMMARY_STEPS} more steps_")
    return "\n".join(lines) + "\n"
