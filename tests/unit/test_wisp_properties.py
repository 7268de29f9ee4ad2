"""Random op sequences against the pure wisp book (hypothesis)."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from gastownd.core.digest import Digest, seal, verify_chain
from gastownd.core.wisp import (
    TRANSITIONS,
    AppendStep,
    Effect,
    EmitLine,
    IllegalTransition,
    SaveDigest,
    SaveWisp,
    StartArgs,
    StartSource,
    WispBook,
    WispState,
)

T0 = 1_750_000_000.0
SESSIONS = ["s0", "s1", "s2", "s3"]
ACTORS = ["mayor", "gastown/crew/joe", "gastown/polecats/rust"]
TMUX = [None, "gt-a", "gt-b"]
KINDS = ["issue_closed", "issue_created", "commit", "handoff", "note", "turn", "custom"]

Op = tuple[Any, ...]

_sid = st.sampled_from(SESSIONS)
_start = st.tuples(
    st.just("start"),
    _sid,
    st.sampled_from(ACTORS),
    st.sampled_from(TMUX),
    st.sampled_from(list(StartSource)),
    st.none() | _sid,
)
_step = st.tuples(st.just("step"), _sid, st.sampled_from(KINDS), st.none() | st.text(max_size=3))
_ops = st.one_of(  # starts and steps repeated: weighted so most sessions see a life
    _start,
    _start,
    _start,
    _step,
    _step,
    st.tuples(st.just("clear"), _sid, _sid),
    st.tuples(st.just("step_reopen"), _sid, st.sampled_from(KINDS)),
    st.tuples(st.just("end"), _sid, st.sampled_from(["logout", "other"])),
    st.tuples(st.just("abandon"), _sid),
    st.tuples(st.just("reap"), st.integers(min_value=1, max_value=500)),
    st.tuples(st.just("death"), st.sampled_from(ACTORS + [t for t in TMUX if t])),
    st.tuples(st.just("handoff"), st.sampled_from(ACTORS), st.booleans()),
)
_programs = st.lists(
    st.tuples(st.integers(min_value=0, max_value=120), _ops), min_size=8, max_size=80
)


class Run(msgspec.Struct):
    book: WispBook
    effects: list[Effect]
    rejected: int


def _apply(book: WispBook, op: Op, now: float) -> tuple[WispBook, tuple[Effect, ...]]:
    match op:
        case ("start", sid, actor, tmux, source, parent):
            return book.start(
                StartArgs(
                    session_id=sid,
                    actor=actor,
                    source=source,
                    tmux_session=tmux,
                    parent_session=parent,
                    cwd="/town",
                ),
                now=now,
            )
        case ("clear", sid, parent):
            known = book.wisps.get(parent)
            return book.start(
                StartArgs(
                    session_id=sid,
                    actor=known.actor if known else ACTORS[0],
                    source=StartSource.CLEAR,
                    parent_session=parent,
                ),
                now=now,
            )
        case ("step", sid, kind, ref):
            payload = (
                {"subject": "s", "to_session": True} if kind in ("commit", "handoff") else None
            )
            return book.step(sid, kind, ref or None, payload, now=now)
        case ("step_reopen", sid, kind):
            return book.step(sid, kind, now=now, reopen=True)
        case ("end", sid, reason):
            return book.end(sid, reason, now=now)
        case ("abandon", sid):
            return book.abandon(sid, now=now)
        case ("reap", idle):
            return book.reap(now=now, idle_timeout_s=idle)
        case ("death", who):
            payload = {"session": who, "agent": who, "reason": "killed"}
            return book.observe_line(
                type="session_death", actor=who, payload=payload, at=now, now=now
            )
        case ("handoff", actor, to_session):
            return book.observe_line(
                type="handoff", actor=actor, payload={"to_session": to_session}, at=now, now=now
            )
    raise AssertionError(op)


def _run(program: list[tuple[int, Op]]) -> Run:
    book, rejected, now = WispBook(), 0, T0
    effects: list[Effect] = []
    for delta, op in program:
        now += delta
        before = msgspec.json.encode(book)
        rejection: IllegalTransition | None = None
        try:
            book, more = _apply(book, op, now)
        except IllegalTransition as error:
            rejection, more = error, ()
        if rejection is not None:
            rejected += 1
            assert msgspec.json.encode(book) == before
            assert rejection.op not in TRANSITIONS[rejection.state]
            assert rejection.session_id == op[1]
        effects += more
    return Run(book=book, effects=effects, rejected=rejected)


def _digests(run: Run) -> list[Digest]:
    return [e.digest for e in run.effects if isinstance(e, SaveDigest)]


@settings(max_examples=300, deadline=None)
@given(_programs)
def test_each_segment_ends_in_at_most_one_digest_or_stays_open(
    program: list[tuple[int, Op]],
) -> None:
    run = _run(program)
    by_session: dict[str, list[int]] = defaultdict(list)
    for digest in _digests(run):
        by_session[digest.session_id].append(digest.segment)
    for sid, wisp in run.book.wisps.items():
        expected = list(range(1, wisp.segment))
        if wisp.state != WispState.OPEN:
            expected.append(wisp.segment)
        assert by_session.pop(sid, []) == expected
    assert not by_session


@settings(max_examples=300, deadline=None)
@given(_programs)
def test_digest_counts_equal_its_steps(program: list[tuple[int, Op]]) -> None:
    run = _run(program)
    steps: dict[tuple[str, int], list[AppendStep]] = defaultdict(list)
    for effect in run.effects:
        if isinstance(effect, AppendStep):
            steps[effect.session_id, effect.segment].append(effect)
    for digest in _digests(run):
        appended = steps.pop((digest.session_id, digest.segment), [])
        assert [a.seq for a in appended] == list(range(len(appended)))
        assert digest.step_count == len(appended) == sum(digest.counts.values())
        assert digest.counts == dict(Counter(a.step.kind for a in appended))
        commits = {a.step.ref for a in appended if a.step.kind == "commit" and a.step.ref}
        assert {c.sha for c in digest.commits} == commits
    for (sid, segment), appended in steps.items():
        wisp = run.book.wisps[sid]
        assert (wisp.state, wisp.segment) == (WispState.OPEN, segment)
        assert wisp.steps == tuple(a.step for a in appended)


@settings(max_examples=300, deadline=None)
@given(_programs)
def test_each_actors_chain_verifies_and_ends_at_its_head(program: list[tuple[int, Op]]) -> None:
    run = _run(program)
    chains: dict[str, list[Digest]] = defaultdict(list)
    for digest in _digests(run):
        chains[digest.actor].append(digest)
    for actor, chain in chains.items():
        assert verify_chain(chain) is None
        assert run.book.heads[actor] == chain[-1].hash
    assert set(run.book.heads) == set(chains)


@settings(max_examples=200, deadline=None)
@given(_programs)
def test_replaying_the_same_ops_gives_the_same_digests(program: list[tuple[int, Op]]) -> None:
    first, second = _run(program), _run(program)
    assert _digests(first) == _digests(second)
    assert first.effects == second.effects
    assert msgspec.json.encode(first.book) == msgspec.json.encode(second.book)


@settings(max_examples=300, deadline=None)
@given(_programs)
def test_log_gets_one_start_per_session_one_end_per_digest_and_no_steps(
    program: list[tuple[int, Op]],
) -> None:
    run = _run(program)
    lines = [e for e in run.effects if isinstance(e, EmitLine)]
    assert {line.type for line in lines} <= {"session_start", "session_end"}
    starts = [line.payload["session_id"] for line in lines if line.type == "session_start"]
    assert sorted(starts) == sorted(run.book.wisps)
    ends = [line.payload["digest_id"] for line in lines if line.type == "session_end"]
    assert ends == [d.digest_id for d in _digests(run)]
    saved = {e.wisp.session_id: e.wisp for e in run.effects if isinstance(e, SaveWisp)}
    assert saved == run.book.wisps


@settings(max_examples=200, deadline=None)
@given(_programs, st.data())
def test_a_tampered_digest_is_caught(program: list[tuple[int, Op]], data: st.DataObject) -> None:
    run = _run(program)
    digests = _digests(run)
    if not digests:
        return
    actor = data.draw(st.sampled_from(sorted({d.actor for d in digests})))
    chain = [d for d in digests if d.actor == actor]
    index = data.draw(st.integers(min_value=0, max_value=len(chain) - 1))
    edit: dict[str, Any] = data.draw(
        st.sampled_from(
            [
                {"end_reason": "forged"},
                {"step_count": chain[index].step_count + 1},
                {"ended_at": chain[index].ended_at + 1},
                {"issues_closed": ("gt-forged",)},
            ]
        )
    )
    forged = msgspec.structs.replace(chain[index], **edit)
    assert verify_chain([*chain[:index], forged, *chain[index + 1 :]]) == index
    if index + 1 < len(chain):
        resealed = seal(forged)
        assert verify_chain([*chain[:index], resealed, *chain[index + 1 :]]) == index + 1


@settings(max_examples=200, deadline=None)
@given(_programs, st.sampled_from(KINDS), st.floats(min_value=0, max_value=T0))
def test_a_step_dated_by_its_wisps_end_changes_nothing_and_a_later_one_reopens(
    program: list[tuple[int, Op]], kind: str, early_s: float
) -> None:
    book = _run(program).book
    for sid, wisp in book.wisps.items():
        if wisp.state == WispState.OPEN or wisp.ended_at is None:
            continue
        # Delivered after the end, dated at or before it (an async hook): no new segment.
        assert book.step(sid, kind, now=wisp.ended_at - early_s, reopen=True) == (book, ())
        later, effects = book.step(sid, kind, now=wisp.ended_at + 1, reopen=True)
        assert (later.wisps[sid].state, later.wisps[sid].segment) == (
            WispState.OPEN,
            wisp.segment + 1,
        )
        assert [e.segment for e in effects if isinstance(e, AppendStep)] == [wisp.segment + 1]
