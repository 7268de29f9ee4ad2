"""The wisp state machine: the transition table, one wisp at a time, and the book."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from gastownd.core.digest import verify_chain
from gastownd.core.wisp import (
    TRANSITIONS,
    AppendStep,
    EmitLine,
    IllegalTransition,
    Op,
    SaveDigest,
    SaveWisp,
    StartArgs,
    StartSource,
    Wisp,
    WispBook,
    WispState,
    abandon,
    ended_by_line,
    parse_actor,
    squash,
    stale,
    start,
    step,
    superseded_by,
    transition,
)

T0 = 1_750_000_000.0
SID = "46621448-3caa-4bbb-8ccc-123456789abc"
ACTOR = "gastown/crew/joe"
STATES: list[WispState | None] = [None, *WispState]


def _encode(value: object) -> bytes:
    return msgspec.json.encode(value)


def _wisp_in(state: WispState) -> Wisp:
    wisp = start(None, StartArgs(session_id=SID, actor=ACTOR, tmux_session="gt-joe"), now=T0)
    wisp = step(wisp, "commit", "abc1234", {"subject": "fix"}, now=T0 + 5)
    if state is WispState.SQUASHED:
        wisp, _ = squash(wisp, "logout", now=T0 + 10)
    elif state is WispState.ABANDONED:
        wisp, _ = abandon(wisp, now=T0 + 10)
    return wisp


def _book_in(state: WispState | None) -> WispBook:
    if state is None:
        return WispBook()
    wisp = _wisp_in(state)
    return WispBook(wisps={SID: wisp})


_SOURCE_OF = {
    Op.START: StartSource.STARTUP,
    Op.RESUME: StartSource.RESUME,
    Op.COMPACT: StartSource.COMPACT,
}


def _apply_to_book(book: WispBook, op: Op) -> WispBook:
    now = T0 + 100
    if op in _SOURCE_OF:
        return book.start(StartArgs(session_id=SID, actor=ACTOR, source=_SOURCE_OF[op]), now=now)[0]
    if op is Op.STEP:
        return book.step(SID, "note", now=now)[0]
    if op is Op.SQUASH:
        return book.end(SID, "logout", now=now)[0]
    return book.abandon(SID, now=now)[0]


def _apply_to_wisp(wisp: Wisp, op: Op) -> Wisp:
    now = T0 + 100
    if op in _SOURCE_OF:
        return start(wisp, StartArgs(session_id=SID, actor=ACTOR, source=_SOURCE_OF[op]), now=now)
    if op is Op.STEP:
        return step(wisp, "note", now=now)
    if op is Op.SQUASH:
        return squash(wisp, "logout", now=now)[0]
    return abandon(wisp, now=now)[0]


PAIRS = [(state, op) for state in STATES for op in Op]


def _pair_id(pair: tuple[WispState | None, Op]) -> str:
    state, op = pair
    return f"{state or 'absent'}-{op}"


# ---------------------------------------------------------------- the table


def test_table_names_every_state_and_only_known_ops() -> None:
    assert set(TRANSITIONS) == set(STATES)
    for moves in TRANSITIONS.values():
        assert set(moves) <= set(Op)
    assert sum(len(moves) for moves in TRANSITIONS.values()) == 13


@pytest.mark.parametrize("pair", PAIRS, ids=[_pair_id(p) for p in PAIRS])
def test_book_op_reaches_table_target_or_is_rejected_unchanged(
    pair: tuple[WispState | None, Op],
) -> None:
    state, op = pair
    book = _book_in(state)
    before = _encode(book)
    target = TRANSITIONS[state].get(op)
    if target is not None:
        assert _apply_to_book(book, op).state_of(SID) is target
        assert _encode(book) == before
        return
    with pytest.raises(IllegalTransition) as caught:
        _apply_to_book(book, op)
    assert (caught.value.op, caught.value.state, caught.value.session_id) == (op, state, SID)
    assert str(op) in str(caught.value)
    assert str(state or "absent") in str(caught.value)
    assert SID in str(caught.value)
    assert _encode(book) == before


@pytest.mark.parametrize(
    "pair",
    [p for p in PAIRS if p[0] is not None],
    ids=[_pair_id(p) for p in PAIRS if p[0] is not None],
)
def test_wisp_function_reaches_table_target_or_is_rejected_unchanged(
    pair: tuple[WispState, Op],
) -> None:
    state, op = pair
    wisp = _wisp_in(state)
    before = _encode(wisp)
    target = TRANSITIONS[state].get(op)
    if target is not None:
        assert _apply_to_wisp(wisp, op).state is target
    else:
        with pytest.raises(IllegalTransition) as caught:
            _apply_to_wisp(wisp, op)
        assert (caught.value.op, caught.value.state, caught.value.session_id) == (op, state, SID)
    assert _encode(wisp) == before


def test_transition_on_absent_session_names_it_absent() -> None:
    with pytest.raises(IllegalTransition, match=r"illegal op step on session 'x' in state absent"):
        transition(None, Op.STEP, "x")


# ---------------------------------------------------------------- start semantics


def test_repeated_start_of_open_session_adds_nothing() -> None:
    book, _ = WispBook().start(StartArgs(session_id=SID, actor=ACTOR, cwd="/a"), now=T0)
    again, effects = book.start(StartArgs(session_id=SID, actor=ACTOR, cwd="/b"), now=T0 + 60)
    assert again is book
    assert effects == ()


def test_resume_of_open_wisp_continues_it() -> None:
    wisp = _wisp_in(WispState.OPEN)
    resumed = start(
        wisp,
        StartArgs(session_id=SID, actor=ACTOR, source="resume", tmux_session="gt-2"),
        now=T0 + 60,
    )
    assert resumed.segment == 1
    assert resumed.steps == wisp.steps
    assert resumed.started_at == wisp.started_at
    assert resumed.last_activity_at == T0 + 60
    assert resumed.tmux_session == "gt-2"


def test_resume_of_squashed_wisp_reopens_it_as_a_new_segment_without_a_start_line() -> None:
    book, _ = _book_in(WispState.SQUASHED).start(
        StartArgs(session_id=SID, actor=ACTOR, source=StartSource.RESUME), now=T0 + 60
    )
    wisp = book.wisps[SID]
    assert (wisp.segment, wisp.state, wisp.steps, wisp.started_at) == (
        2,
        WispState.OPEN,
        (),
        T0 + 60,
    )
    assert wisp.ended_at is None
    assert wisp.end_reason is None


def test_compact_records_a_compaction_step() -> None:
    book, effects = WispBook().start(
        StartArgs(session_id=SID, actor=ACTOR, source="compact"), now=T0
    )
    assert [s.kind for s in book.wisps[SID].steps] == ["compaction"]
    assert [type(e) for e in effects] == [SaveWisp, AppendStep, EmitLine]
    book, effects = book.start(StartArgs(session_id=SID, actor=ACTOR, source="compact"), now=T0 + 9)
    assert [s.kind for s in book.wisps[SID].steps] == ["compaction", "compaction"]
    appended = [e for e in effects if isinstance(e, AppendStep)]
    assert [(a.seq, a.step.at) for a in appended] == [(1, T0 + 9)]


def test_start_rejects_another_sessions_wisp() -> None:
    with pytest.raises(ValueError, match="is not session"):
        start(_wisp_in(WispState.OPEN), StartArgs(session_id="other", actor=ACTOR), now=T0)


@pytest.mark.parametrize(
    ("actor", "role", "rig"),
    [
        ("mayor", "mayor", None),
        ("mayor/", "mayor", None),
        ("deacon", "deacon", None),
        ("boot", "boot", None),
        ("deacon/dogs/rex", "dog", None),
        ("gastown/witness", "witness", "gastown"),
        ("gastown/refinery", "refinery", "gastown"),
        ("gastown/crew/joe", "crew", "gastown"),
        ("gastown/polecats/rust", "polecat", "gastown"),
        ("gastown/reviewer", "reviewer", "gastown"),
        ("alice", "alice", None),
    ],
)
def test_role_and_rig_come_from_the_actor(actor: str, role: str, rig: str | None) -> None:
    assert parse_actor(actor) == (role, rig)
    wisp = start(None, StartArgs(session_id=SID, actor=actor), now=T0)
    assert (wisp.role, wisp.rig) == (role, rig)


# ---------------------------------------------------------------- event-log lines


def test_new_session_emits_one_gas_town_session_start_line() -> None:
    _, effects = WispBook().start(
        StartArgs(session_id=SID, actor=ACTOR, cwd="/t/joe", topic="fix", pid=48213), now=T0
    )
    lines = [e for e in effects if isinstance(e, EmitLine)]
    assert lines == [
        EmitLine(
            type="session_start",
            actor=ACTOR,
            payload={
                "session_id": SID,
                "role": ACTOR,
                "actor_pid": f"{ACTOR}-48213",
                "topic": "fix",
                "cwd": "/t/joe",
            },
            at=T0,
        )
    ]


def test_session_start_line_omits_unknown_topic_and_cwd() -> None:
    _, effects = WispBook().start(StartArgs(session_id=SID, actor=ACTOR), now=T0)
    (line,) = [e for e in effects if isinstance(e, EmitLine)]
    assert set(line.payload) == {"session_id", "role", "actor_pid"}


def test_steps_never_reach_the_event_log() -> None:
    book, _ = WispBook().start(StartArgs(session_id=SID, actor=ACTOR), now=T0)
    book, effects = book.step(SID, "turn", now=T0 + 1)
    assert not [e for e in effects if isinstance(e, EmitLine)]
    assert [type(e) for e in effects] == [SaveWisp, AppendStep]


def test_end_emits_session_end_with_the_digest() -> None:
    book, _ = WispBook().start(StartArgs(session_id=SID, actor=ACTOR), now=T0)
    book, _ = book.step(SID, "commit", "abc", now=T0 + 1)
    book, effects = book.end(SID, "logout", now=T0 + 90.4)
    assert [type(e) for e in effects] == [SaveWisp, SaveDigest, EmitLine]
    digest = effects[1].digest  # type: ignore[union-attr]
    line = effects[2]
    assert isinstance(line, EmitLine)
    assert line.type == "session_end"
    assert line.payload == {
        "session_id": SID,
        "role": ACTOR,
        "reason": "logout",
        "duration_s": 90,
        "steps": 1,
        "digest_id": digest.digest_id,
    }
    assert book.wisps[SID].steps == ()
    assert book.heads == {ACTOR: digest.hash}


def test_digests_of_one_actor_are_chained() -> None:
    book = WispBook()
    digests = []
    for n in range(3):
        sid = f"s{n}"
        book, _ = book.start(StartArgs(session_id=sid, actor=ACTOR), now=T0 + n * 100)
        book, effects = book.end(sid, now=T0 + n * 100 + 50)
        digests += [e.digest for e in effects if isinstance(e, SaveDigest)]
    assert digests[0].prev_hash == ""
    assert [d.prev_hash for d in digests[1:]] == [d.hash for d in digests[:-1]]
    assert verify_chain(digests) is None


def test_step_with_reopen_resumes_an_abandoned_wisp_first() -> None:
    book = _book_in(WispState.ABANDONED)
    book, _ = book.start(
        StartArgs(session_id="seat", actor=ACTOR, tmux_session="gt-joe"), now=T0 + 400
    )
    book, effects = book.step(SID, "prompt", now=T0 + 500, reopen=True)
    wisp = book.wisps[SID]
    assert (wisp.state, wisp.segment, [s.kind for s in wisp.steps]) == (
        WispState.OPEN,
        2,
        ["prompt"],
    )
    assert not [e for e in effects if isinstance(e, EmitLine)]
    appended = [e for e in effects if isinstance(e, AppendStep)]
    assert [(a.segment, a.seq) for a in appended] == [(2, 0)]
    assert book.state_of("seat") is WispState.OPEN  # a late step takes no seat back


@pytest.mark.parametrize("state", [WispState.SQUASHED, WispState.ABANDONED])
@pytest.mark.parametrize("late_by", [-4.0, 0.0])
def test_a_step_dated_before_the_end_and_delivered_after_it_opens_no_segment(
    state: WispState, late_by: float
) -> None:
    book = _book_in(state)  # ended at T0 + 10
    assert book.step(SID, "issue_closed", "gt-1", now=T0 + 10 + late_by, reopen=True) == (book, ())
    with pytest.raises(ValueError, match="epoch seconds"):
        book.step(SID, "issue_closed", "gt-1", now=-1.0, reopen=True)
    book, effects = book.step(SID, "issue_closed", "gt-1", now=T0 + 10.5, reopen=True)
    assert (book.wisps[SID].state, book.wisps[SID].segment) == (WispState.OPEN, 2)
    assert [(e.segment, e.seq) for e in effects if isinstance(e, AppendStep)] == [(2, 0)]


# ---------------------------------------------------------------- ends without a hook


def _open(sid: str, actor: str = ACTOR, tmux: str | None = "gt-joe", at: float = T0) -> Wisp:
    return start(None, StartArgs(session_id=sid, actor=actor, tmux_session=tmux), now=at)


def test_newer_session_of_same_actor_in_same_tmux_supersedes_the_old_one() -> None:
    book, _ = WispBook().start(
        StartArgs(session_id="old", actor=ACTOR, tmux_session="gt-joe"), now=T0
    )
    book, _ = book.start(StartArgs(session_id="other", actor=ACTOR, tmux_session="gt-else"), now=T0)
    book, effects = book.start(
        StartArgs(session_id="new", actor=ACTOR, tmux_session="gt-joe"), now=T0 + 5
    )
    assert book.state_of("old") is WispState.SQUASHED
    assert book.wisps["old"].end_reason == "superseded"
    assert book.state_of("other") is WispState.OPEN
    types = [e.type for e in effects if isinstance(e, EmitLine)]
    assert types == ["session_end", "session_start"]


def test_superseding_needs_actor_and_tmux_to_match() -> None:
    new = _open("new", at=T0 + 5)
    others = [_open("a", actor="gastown/crew/ann"), _open("b", tmux=None), _open("c", at=T0 + 9)]
    assert superseded_by(others, new) == []
    assert superseded_by([_open("d")], new) == [("d", "superseded")]


def test_clear_ends_its_parent() -> None:
    book, _ = WispBook().start(StartArgs(session_id="p", actor=ACTOR), now=T0)
    book, _ = book.start(
        StartArgs(session_id="c", actor=ACTOR, source="clear", parent_session="p"), now=T0 + 5
    )
    assert book.wisps["p"].end_reason == "clear"
    assert book.state_of("c") is WispState.OPEN


@pytest.mark.parametrize(
    ("line_actor", "payload"),
    [
        ("gt-joe", {"session": "gt-joe", "agent": "unknown", "reason": "orphan cleanup"}),
        (ACTOR, {"session": "gt-x", "agent": ACTOR, "reason": "orphan cleanup"}),
        ("daemon", {"agent": "Gastown/Crew/Joe/", "reason": "orphan cleanup"}),
    ],
)
def test_session_death_ends_wisps_of_its_actor_or_tmux_session(
    line_actor: str, payload: dict[str, Any]
) -> None:
    wisps = [_open("hit"), _open("miss", actor="gastown/crew/ann", tmux="gt-ann")]
    ends = ended_by_line(wisps, type="session_death", actor=line_actor, payload=payload, at=T0 + 9)
    assert ends == [("hit", "orphan cleanup")]


def test_session_death_spares_a_successor_started_after_it() -> None:
    wisps = [_open("dead", at=T0), _open("successor", at=T0 + 20)]
    payload = {"session": "gt-joe"}
    ends = ended_by_line(wisps, type="session_death", actor="gt-joe", payload=payload, at=T0 + 10)
    assert ends == [("dead", "session_death")]


def test_handoff_to_a_new_session_ends_the_actors_wisps() -> None:
    wisps = [_open("w")]
    assert ended_by_line(
        wisps, type="handoff", actor=ACTOR, payload={"to_session": True}, at=T0 + 1
    ) == [("w", "handoff")]
    assert (
        ended_by_line(wisps, type="handoff", actor=ACTOR, payload={"to_session": False}, at=T0 + 1)
        == []
    )


def test_our_own_session_end_line_ends_nothing_but_a_foreign_one_does() -> None:
    wisps = [_open("w")]
    ours = {"session_id": "w", "digest_id": "dg-1", "reason": "x"}
    assert ended_by_line(wisps, type="session_end", actor=ACTOR, payload=ours, at=T0 + 1) == []
    theirs = {"session": "gt-joe", "reason": "gt done (exit=COMPLETED)"}
    assert ended_by_line(wisps, type="session_end", actor=ACTOR, payload=theirs, at=T0 + 1) == [
        ("w", "gt done (exit=COMPLETED)")
    ]


def test_observed_line_squashes_with_line_time_and_writes_at_now() -> None:
    book, _ = WispBook().start(
        StartArgs(session_id=SID, actor=ACTOR, tmux_session="gt-joe"), now=T0
    )
    book, effects = book.observe_line(
        type="session_death",
        actor="gt-joe",
        payload={"session": "gt-joe", "reason": "crashed"},
        at=T0 + 30,
        now=T0 + 99,
    )
    digest = next(e.digest for e in effects if isinstance(e, SaveDigest))
    line = next(e for e in effects if isinstance(e, EmitLine))
    assert (digest.ended_at, digest.end_reason, line.at) == (T0 + 30, "crashed", T0 + 99)
    assert book.state_of(SID) is WispState.SQUASHED


def test_stale_lists_idle_open_wisps_longest_idle_first() -> None:
    a = _open("a", at=T0 + 10)
    b = _open("b", at=T0)
    fresh = _open("c", at=T0 + 50)
    ended, _ = squash(_open("d", at=T0), "x", now=T0)
    assert stale([a, b, fresh, ended], T0 + 60, 50) == [b, a]


def test_reap_abandons_idle_wisps_at_their_last_activity() -> None:
    book, _ = WispBook().start(StartArgs(session_id=SID, actor=ACTOR), now=T0)
    book, _ = book.step(SID, "turn", now=T0 + 40)
    assert book.reap(now=T0 + 100, idle_timeout_s=61) == (book, ())
    book, effects = book.reap(now=T0 + 100, idle_timeout_s=60)
    digest = next(e.digest for e in effects if isinstance(e, SaveDigest))
    line = next(e for e in effects if isinstance(e, EmitLine))
    assert (digest.state, digest.end_reason, digest.ended_at) == (
        "abandoned",
        "idle_timeout",
        T0 + 40,
    )
    assert line.at == T0 + 100
    assert book.state_of(SID) is WispState.ABANDONED


# ---------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: start(None, StartArgs(session_id="", actor=ACTOR), now=T0),
            "session_id must not be empty",
        ),
        (
            lambda: start(None, StartArgs(session_id=SID, actor=""), now=T0),
            "actor must not be empty",
        ),
        (
            lambda: start(None, StartArgs(session_id=SID, actor=ACTOR), now=float("nan")),
            "epoch seconds",
        ),
        (lambda: step(_wisp_in(WispState.OPEN), "", now=T0), "step kind must not be empty"),
        (lambda: squash(_wisp_in(WispState.OPEN), "", now=T0), "end reason must not be empty"),
    ],
)
def test_invalid_values_are_refused(build: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_wisp_round_trips_through_json() -> None:
    wisp = _wisp_in(WispState.OPEN)
    assert msgspec.json.decode(msgspec.json.encode(wisp), type=Wisp) == wisp
    ended = _wisp_in(WispState.SQUASHED)
    assert msgspec.json.decode(msgspec.json.encode(ended), type=Wisp) == ended


def test_decoding_a_wisp_with_a_bad_time_fails_with_its_path() -> None:
    fields = msgspec.to_builtins(_wisp_in(WispState.OPEN))
    fields["started_at"] = -5.0
    with pytest.raises(msgspec.ValidationError, match="started_at must be epoch seconds"):
        msgspec.json.decode(msgspec.json.encode(fields), type=Wisp)
    fields = msgspec.to_builtins(_wisp_in(WispState.OPEN))
    fields["steps"][0]["kind"] = ""
    with pytest.raises(
        msgspec.ValidationError, match=r"kind must not be empty - at `\$.steps\[0\]`"
    ):
        msgspec.json.decode(msgspec.json.encode(fields), type=Wisp)


def test_the_payload_budget_is_per_segment_and_a_step_past_it_keeps_its_size() -> None:
    from gastownd.core.wisp import MAX_KEPT_PAYLOAD_BYTES, PAYLOAD_NOT_KEPT

    big = {"out": "x" * (MAX_KEPT_PAYLOAD_BYTES // 2)}
    size = len(msgspec.json.encode(big))
    wisp = start(None, StartArgs(session_id=SID, actor=ACTOR), now=T0)
    for n in range(3):
        wisp = step(wisp, "note", f"r{n}", big, now=T0 + n)
    assert [s.payload for s in wisp.steps] == [
        big,
        {PAYLOAD_NOT_KEPT: size},
        {PAYLOAD_NOT_KEPT: size},
    ]
    assert wisp.payload_bytes == size
    wisp, digest = squash(wisp, "done", now=T0 + 9)
    assert digest.step_count == 3 and wisp.payload_bytes == 0
    reopened = start(wisp, StartArgs(session_id=SID, actor=ACTOR, source="resume"), now=T0 + 10)
    assert step(reopened, "note", None, big, now=T0 + 11).steps[0].payload == big
