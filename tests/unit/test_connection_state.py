"""A connection's bookkeeping without a socket: admission, the in-flight limit and reading,
idleness, closing (time passed in)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gastown_client.protocol import ErrorCode
from gastownd.server.connection_state import ConnectionState, admission


def test_requests_are_taken_up_to_the_limit_and_reading_pauses_there() -> None:
    state = ConnectionState(max_inflight=2, last_active=0.0)
    assert state.may_take() and state.reading() is True
    state.took()
    state.took()
    assert not state.may_take() and state.reading() is False
    state.answered(now=5.0)
    assert state.may_take() and state.reading() is True and state.last_active == 5.0


def test_after_eof_or_end_of_input_reading_is_left_alone() -> None:
    state = ConnectionState(max_inflight=1, last_active=0.0)
    state.eof = True
    assert state.reading() is None
    state = ConnectionState(max_inflight=1, last_active=0.0)
    state.input_ended = True
    assert state.reading() is None and not state.may_take()


@given(st.lists(st.sampled_from(["take", "answer", "pump", "unpump"]), max_size=50))
def test_done_means_nothing_in_flight_and_no_pump(steps: list[str]) -> None:
    state = ConnectionState(max_inflight=64, last_active=0.0)
    inflight = pumps = 0
    for step in steps:
        if step == "take" and state.may_take():
            state.took()
            inflight += 1
        elif step == "answer" and inflight:
            state.answered(now=1.0)
            inflight -= 1
        elif step == "pump":
            state.pumps += 1
            pumps += 1
        elif step == "unpump" and pumps:
            state.pumps -= 1
            pumps -= 1
    assert state.done() == (inflight == 0 and pumps == 0)
    assert state.idle(closed=False, subscribed=False, partial=False, queued=False) == (
        inflight == 0 and pumps == 0
    )


def test_idle_means_holding_nothing_a_close_would_lose() -> None:
    state = ConnectionState(max_inflight=4, last_active=0.0)
    calm = {"closed": False, "subscribed": False, "partial": False, "queued": False}
    assert state.idle(**calm)
    for held in calm:
        assert not state.idle(**{**calm, held: True}), held
    state.closing = True
    assert not state.idle(**calm)


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
