"""A connection's protocol state without a socket: bytes in, events out (framing, decoding,
the in-flight limit and reading, partial-frame deadlines, idleness, admission), time passed in."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from gastown_client import codec
from gastown_client.protocol import Emit, ErrorCode, Ping, Request
from gastownd.server.connection_state import (
    ConnectionState,
    Event,
    NoRequest,
    Refusal,
    RequestBytes,
    admission,
)

TIMEOUT_S = 10.0


def new_state(
    max_inflight: int = 64, max_frame: int = 1 << 20, budget: RequestBytes | None = None
) -> ConnectionState:
    return ConnectionState(
        max_frame=max_frame,
        max_inflight=max_inflight,
        partial_timeout_s=TIMEOUT_S,
        now=0.0,
        budget=budget,
    )


def drain(state: ConnectionState) -> tuple[list[Request | Refusal], NoRequest]:
    """Every event until the state has no request to give, and why."""
    events: list[Request | Refusal] = []
    while True:
        event: Event = state.next_event()
        if isinstance(event, NoRequest):
            return events, event
        events.append(event)


def frame(request: Request) -> bytes:
    return codec.encode_frame(request)


STREAM = (
    frame(Ping(id=1))
    + b"\n   \n"  # blank frames are skipped, not answered
    + frame(Emit(id="two", type="nudge", actor="gastown/polecats/nux", payload={"a": [1, {}]}))
    + b'{"op": "nope", "id": 3}\n'
    + b"{not json\n"
    + frame(Ping(id=4))
)


def summary(events: list[Request | Refusal]) -> list[object]:
    return [
        (type(e).__name__, e.id) if not isinstance(e, Refusal) else (e.code, e.request_id)
        for e in events
    ]


EXPECTED = [
    ("Ping", 1),
    ("Emit", "two"),
    (ErrorCode.UNKNOWN_OP, 3),
    (ErrorCode.BAD_REQUEST, None),
    ("Ping", 4),
]


def test_a_stream_fed_whole_gives_each_request_and_each_rejection_in_order() -> None:
    state = new_state()
    state.receive_data(STREAM, now=1.0)
    events, why = drain(state)
    assert summary(events) == EXPECTED and why is NoRequest.NEED_DATA
    assert state.inflight == 3 and state.pending == 0 and state.frame_deadline() is None


def test_a_stream_fed_one_byte_at_a_time_gives_the_same_events() -> None:
    state = new_state()
    events: list[Request | Refusal] = []
    for i in range(len(STREAM)):
        state.receive_data(STREAM[i : i + 1], now=float(i))
        taken, why = drain(state)
        events += taken
        assert why is NoRequest.NEED_DATA
    assert summary(events) == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    state = new_state()
    bounds = [0, *sorted(cuts), len(STREAM)]
    events: list[Request | Refusal] = []
    for start, end in itertools.pairwise(bounds):
        state.receive_data(STREAM[start:end], now=0.0)
        events += drain(state)[0]
    assert summary(events) == EXPECTED


def test_a_frame_too_large_is_rejected_once_and_the_next_frame_is_read() -> None:
    state = new_state(max_frame=64)
    state.receive_data(b"x" * 100, now=0.0)
    events, why = drain(state)
    assert len(events) == 1 and isinstance(events[0], Refusal)
    assert events[0].code == ErrorCode.TOO_LARGE and not events[0].counted
    assert why is NoRequest.NEED_DATA
    state.receive_data(b"y" * 100 + b"\n" + frame(Ping(id=9)), now=0.0)
    events, _ = drain(state)
    assert summary(events) == [("Ping", 9)]


def test_requests_are_taken_up_to_the_limit_and_reading_pauses_there_once() -> None:
    state = new_state(max_inflight=2)
    state.receive_data(frame(Ping(id=1)) * 3, now=0.0)
    events, why = drain(state)
    assert len(events) == 2 and why is NoRequest.AT_LIMIT
    assert state.reading_change() is False
    assert state.reading_change() is None  # told once
    assert state.frame_deadline() is None  # held at our limit: no fault of the peer
    assert state.answered(now=5.0) is True  # held frames: the shell takes them
    assert state.last_active == 5.0 and state.reading_change() is True
    events, why = drain(state)
    assert len(events) == 1 and why is NoRequest.AT_LIMIT  # at the limit again
    assert state.reading_change() is False
    state.answered(now=6.0)
    assert drain(state) == ([], NoRequest.NEED_DATA)
    assert state.answered(now=7.0) is False  # below the limit: nothing held back


def test_past_the_servers_request_bytes_only_a_connection_with_none_in_flight_takes_one() -> None:
    ping = frame(Ping(id=1))
    budget = RequestBytes(limit=3 * len(ping))
    flooding, other = new_state(budget=budget), new_state(budget=budget)
    flooding.receive_data(ping * 10, now=0.0)
    events, why = drain(flooding)
    assert len(events) == 3 and why is NoRequest.AT_LIMIT  # the third filled it
    assert budget.held == 3 * len(ping) and budget.full and budget.waiting == 1
    assert flooding.reading_change() is False and flooding.frame_deadline() is None
    # A connection with nothing in flight is served anyway, one request at a time.
    other.receive_data(ping * 2, now=0.0)
    events, why = drain(other)
    assert len(events) == 1 and why is NoRequest.AT_LIMIT and budget.waiting == 2
    # Answers free their bytes; under the limit, the connections waiting may take again.
    assert other.answered(now=1.0) is True  # it was waiting: the shell takes its frames
    assert budget.held == 3 * len(ping) and other.budget_freed() is False
    assert flooding.answered(now=1.0) is True and flooding.answered(now=1.0) is False
    assert budget.held == len(ping) and not budget.full and budget.waiting == 0
    assert flooding.reading_change() is True
    events, why = drain(flooding)
    assert len(events) == 2 and why is NoRequest.AT_LIMIT and budget.waiting == 1
    assert budget.held == 3 * len(ping)


def test_request_bytes_come_back_whatever_the_order_of_the_answers() -> None:
    budget = RequestBytes(limit=1 << 30)
    state = new_state(budget=budget)
    frames = [frame(Ping(id="x" * size)) for size in (1, 500, 70, 9000)]
    state.receive_data(b"".join(frames), now=0.0)
    assert len(drain(state)[0]) == 4 and budget.held == sum(map(len, frames))
    for _ in frames:
        state.answered(now=1.0)
    assert budget.held == 0


def test_a_connection_waiting_for_request_bytes_is_let_go_once_they_are_free() -> None:
    ping = frame(Ping(id=1))
    budget = RequestBytes(limit=2 * len(ping))
    first, second = new_state(budget=budget), new_state(budget=budget)
    first.receive_data(ping * 2, now=0.0)
    second.receive_data(ping * 3, now=0.0)
    assert len(drain(first)[0]) == 2
    # Both wait: the first filled it, the second took the one it may always take.
    assert len(drain(second)[0]) == 1 and budget.waiting == 2 and second.waiting_for_budget
    assert second.budget_freed() is False  # still full
    first.answered(now=1.0)
    first.answered(now=1.0)
    assert budget.waiting == 1  # the first's answers let it go
    assert second.budget_freed() is True and budget.waiting == 0
    assert second.budget_freed() is False  # once
    assert len(drain(second)[0]) == 1  # one more fills it again


def test_eof_ends_the_input_after_the_whole_frames_received() -> None:
    state = new_state(max_inflight=1)
    state.receive_data(frame(Ping(id=1)) * 2 + b'{"op":', now=0.0)
    state.receive_eof()
    events, why = drain(state)
    assert len(events) == 1 and why is NoRequest.AT_LIMIT
    assert state.reading_change() is None  # after EOF the transport is left alone
    assert state.answered(now=1.0) is True
    events, why = drain(state)
    assert len(events) == 1 and why is NoRequest.AT_LIMIT
    state.answered(now=2.0)
    assert drain(state) == ([], NoRequest.ENDED)  # the partial frame is dropped
    assert state.end_input() is True and state.end_input() is False
    assert state.next_event() is NoRequest.ENDED and state.frame_deadline() is None


def test_a_partial_frame_times_out_from_its_own_first_bytes() -> None:
    state = new_state()
    state.receive_data(b'{"op":"pi', now=100.0)
    drain(state)
    assert state.frame_deadline() == 100.0 + TIMEOUT_S
    assert state.frame_timed_out(now=109.0) is None
    # The frame completes and the next one starts: its deadline is its own, not the first's.
    state.receive_data(b'ng"}\n{"op"', now=105.0)
    drain(state)
    assert state.frame_deadline() == 105.0 + TIMEOUT_S
    assert state.frame_timed_out(now=111.0) is None
    timed_out = state.frame_timed_out(now=115.0)
    assert timed_out is not None and timed_out.code == ErrorCode.TIMEOUT
    assert "5 bytes" in timed_out.message and timed_out.reason == "partial_frame_timeout"
    state.receive_data(b':"ping"}\n', now=116.0)
    drain(state)
    assert state.frame_deadline() is None and state.frame_timed_out(now=1e9) is None


@given(st.lists(st.sampled_from(["take", "answer", "pump", "unpump"]), max_size=50))
def test_done_means_nothing_in_flight_and_no_pump(steps: list[str]) -> None:
    state = new_state()
    inflight = pumps = 0
    for step in steps:
        if step == "take":
            state.receive_data(frame(Ping()), now=0.0)
            inflight += len(drain(state)[0])
        elif step == "answer" and inflight:
            state.answered(now=1.0)
            inflight -= 1
        elif step == "pump":
            state.pump_started()
            pumps += 1
        elif step == "unpump" and pumps:
            state.pump_ended()
            pumps -= 1
    assert state.done() == (inflight == 0 and pumps == 0)
    assert state.idle(closed=False, subscribed=False, queued=False) == (
        inflight == 0 and pumps == 0
    )


def test_idle_means_holding_nothing_a_close_would_lose() -> None:
    state = new_state()
    calm = {"closed": False, "subscribed": False, "queued": False}
    assert state.idle(**calm)
    for held in calm:
        assert not state.idle(**{**calm, held: True}), held
    state.receive_data(b'{"op"', now=0.0)
    assert not state.idle(**calm)  # a partial frame
    state = new_state()
    state.closing = True
    assert not state.idle(**calm)


def test_the_eviction_notice_says_how_long_the_connection_was_idle() -> None:
    state = new_state()
    state.receive_data(frame(Ping()), now=10.0)
    drain(state)
    state.answered(now=12.0)
    notice = state.eviction_notice(now=42.5, limit=8)
    assert notice.code == ErrorCode.TIMEOUT and notice.reason == "evicted_idle"
    assert "30.5s idle" in notice.message and "(8)" in notice.message


def test_admission_order_foreign_uid_then_the_limit_then_stopping() -> None:
    asked: list[bool] = []

    def full() -> bool:
        asked.append(True)
        return True

    refused = admission(
        uid=1001, expected_uid=1000, stopping=True, max_connections=8, full_and_none_idle=full
    )
    assert refused is not None and refused.reason == "foreign_uid"
    assert refused.code == ErrorCode.FORBIDDEN and "uid 1001" in refused.message
    assert asked == []  # nobody is evicted for a peer that would be refused anyway
    refused = admission(
        uid=1000, expected_uid=1000, stopping=True, max_connections=8, full_and_none_idle=full
    )
    assert refused is not None and refused.reason == "too_many_connections"
    assert refused.code == ErrorCode.BUSY and "max 8" in refused.message
    refused = admission(
        uid=None, expected_uid=1000, stopping=True, max_connections=8, full_and_none_idle=bool
    )
    assert refused is not None and refused.code == ErrorCode.SHUTTING_DOWN
    assert (
        admission(
            uid=1000, expected_uid=1000, stopping=False, max_connections=8, full_and_none_idle=bool
        )
        is None
    )
