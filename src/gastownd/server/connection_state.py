"""One connection's protocol state without I/O, in the h11 manner: bytes in, events out.

The asyncio protocol in ``socket_server.py`` is its shell. It feeds in what it
reads (``receive_data``, ``receive_eof``) and takes events out with
``next_event``: a decoded ``Request``, a ``Refusal`` frame to answer with an
error, or a ``NoRequest`` saying why there is none now (more bytes are needed,
the in-flight limit is reached, or the input is over). Everything this
decides, it decides here: framing (``codec.FrameReader``) and decoding, the
in-flight limit and whether to read on, when a partial frame has waited too
long, when the connection is idle or done, and who is admitted. Time is passed
in, so every rule is checked without a socket or a clock
(``tests/unit/test_connection_state.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

import msgspec

from gastown_client import codec
from gastown_client.protocol import ErrorCode, Request


class NoRequest(Enum):
    """Why ``next_event`` has no request to give now."""

    NEED_DATA = "need_data"  # no whole frame is held: read on
    AT_LIMIT = "at_limit"  # at ``max_inflight``, or the server's ``RequestBytes`` are full
    ENDED = "ended"  # no more requests will come (EOF, or input ended)


class RequestBytes:
    """The bytes of the requests taken and not yet answered, on every connection together.

    Each connection may hold ``max_inflight`` requests of up to ``max_frame`` bytes, and a
    request holds about its frame's size in memory until it is answered (an emit waiting
    for the writer, a session op for the store): at the defaults, 512 connections could
    hold 32 GiB. Past ``limit`` a connection that already has a request in flight takes no
    more until the total falls back under it; one with none may always take one, so a new
    client (a hook) is served while others flood.
    """

    __slots__ = ("held", "limit", "waiting")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        # Connections that stopped taking requests because the total was full: the shell
        # lets them take again once it is not (``ConnectionOwner.budget_freed``).
        self.waiting = 0

    @property
    def full(self) -> bool:
        return self.held >= self.limit


class Refusal(msgspec.Struct, frozen=True):
    """A frame that is not a request: answer it with this error, and count it."""

    reason: str  # counted by this name (``RequestMeter.refused``)
    code: str  # the error code of the reply, and the cause it is logged under
    message: str
    request_id: int | str | None = None
    # A decoded frame counts as a request served; a frame too large to read does not.
    counted: bool = True


Event = Request | Refusal | NoRequest


class ConnectionState:
    """What one connection holds and may do next; every change comes from the shell."""

    __slots__ = (
        "_held",
        "_reader",
        "_received_at",
        "_told_reading",
        "budget",
        "closing",
        "eof",
        "inflight",
        "input_ended",
        "last_active",
        "max_inflight",
        "partial_since",
        "partial_timeout_s",
        "pumps",
        "waiting_for_budget",
    )

    def __init__(
        self,
        *,
        max_frame: int,
        max_inflight: int,
        partial_timeout_s: float,
        now: float,
        budget: RequestBytes | None = None,
    ) -> None:
        self._reader = codec.FrameReader(max_frame)
        self.max_inflight = max_inflight  # requests taken at once, at most
        # Shared by the server's connections; by default one of its own that never fills.
        self.budget = budget if budget is not None else RequestBytes(1 << 62)
        self._held = 0  # the frame bytes of this connection's requests in flight
        self.waiting_for_budget = False
        self.partial_timeout_s = partial_timeout_s
        # When the peer last sent bytes or was answered: who is closed first at the limit.
        self.last_active = now
        self._received_at = now
        # When the frame now held incomplete began (None: none is held).
        self.partial_since: float | None = None
        self.inflight = 0  # requests taken and not yet answered
        self.pumps = 0  # subscription pumps still running
        self.eof = False  # the peer sent EOF: finish what it sent before
        self.input_ended = False  # no more requests will be read
        self.closing = False  # our side is shut down, waiting for the peer's
        self._told_reading = True  # what the transport was last told (it starts reading)

    # ------------------------------------------------------------ input

    def receive_data(self, data: bytes, now: float) -> None:
        self.last_active = self._received_at = now
        if self.partial_since is None:
            self.partial_since = now
        self._reader.feed(data)

    def receive_eof(self) -> None:
        self.eof = True

    def end_input(self) -> bool:
        """No more requests from this connection; False if that was known already."""
        if self.input_ended:
            return False
        self.input_ended = True
        return True

    def next_event(self) -> Event:
        """The next request (taking an in-flight slot), a rejected frame, or why none."""
        if self.input_ended:
            return NoRequest.ENDED
        reader = self._reader
        while True:
            if self.inflight >= self.max_inflight:
                return NoRequest.AT_LIMIT
            if self.inflight and self.budget.full:
                if not self.waiting_for_budget:
                    self.waiting_for_budget = True
                    self.budget.waiting += 1
                return NoRequest.AT_LIMIT
            try:
                frame = reader.next_frame()
            except codec.FrameTooLarge as exc:
                return Refusal("frame_too_large", ErrorCode.TOO_LARGE, str(exc), counted=False)
            if frame is None:
                if not reader.pending:
                    self.partial_since = None
                if self.eof:
                    return NoRequest.ENDED  # the shell ends the input (``end_input``)
                return NoRequest.NEED_DATA
            # What follows this frame arrived with the last bytes, at the latest.
            self.partial_since = self._received_at if reader.pending else None
            if not frame.strip():
                continue
            try:
                request = codec.decode_request(frame)
            except codec.BadRequest as exc:
                return Refusal(exc.code, exc.code, exc.message, exc.request_id)
            self.inflight += 1
            size = len(frame) + 1  # as sent, with its newline
            self._held += size
            self.budget.held += size
            return request

    # ------------------------------------------------------------ answers, pumps

    def answered(self, now: float) -> bool:
        """A request was answered; True if the shell must act: take the frames held
        back at the limit, or close once done after the input ended."""
        at_limit = self.inflight >= self.max_inflight or self.waiting_for_budget
        # Answers come in any order: each frees its share, the last one what is left.
        freed = self._held // self.inflight
        self._held -= freed
        self.budget.held -= freed
        self.inflight -= 1
        self._stop_waiting()
        self.last_active = now
        if at_limit:
            # Nothing was read while at the limit: a frame held partial gets its time anew.
            self._received_at = now
            if self.partial_since is not None:
                self.partial_since = now
        return at_limit or self.input_ended

    def budget_freed(self) -> bool:
        """The server's total fell under its limit: True if this connection was waiting for
        that (the shell then takes its frames again)."""
        if not self.waiting_for_budget or self.budget.full:
            return False
        self._stop_waiting()
        return True

    def _stop_waiting(self) -> None:
        if self.waiting_for_budget:
            self.waiting_for_budget = False
            self.budget.waiting -= 1

    def pump_started(self) -> None:
        self.pumps += 1

    def pump_ended(self) -> None:
        self.pumps -= 1

    # ------------------------------------------------------------ decisions

    def reading_change(self) -> bool | None:
        """Tell the transport to resume (True) or pause (False) reading; None: leave it.

        At the in-flight limit it pauses: the kernel's buffer fills and the
        client waits, instead of our memory growing. After EOF or the end of
        input it is left alone (the shell reads on to drop what comes).
        """
        if self.input_ended or self.eof:
            return None
        reading = self.inflight < self.max_inflight and not self.waiting_for_budget
        if reading == self._told_reading:
            return None
        self._told_reading = reading
        return reading

    def frame_deadline(self) -> float | None:
        """When the partial frame held must be whole (None: none is, or the bytes held
        wait for the in-flight limit, which is no fault of the peer)."""
        if (
            self.partial_since is None
            or self.input_ended
            or self.inflight >= self.max_inflight
            or self.waiting_for_budget
            or not self._reader.pending
        ):
            return None
        return self.partial_since + self.partial_timeout_s

    def frame_timed_out(self, now: float) -> Refusal | None:
        """The error that ends the connection if its partial frame is overdue at ``now``."""
        deadline = self.frame_deadline()
        if deadline is None or now < deadline:
            return None
        return Refusal(
            "partial_frame_timeout",
            ErrorCode.TIMEOUT,
            f"incomplete frame ({self._reader.pending} bytes) stalled for "
            f"{self.partial_timeout_s:g}s; closing",
            counted=False,
        )

    @property
    def pending(self) -> int:
        """Bytes held that do not yet form a whole frame (or wait at the limit)."""
        return self._reader.pending

    def done(self) -> bool:
        """Nothing in flight and no pump running: the connection may close."""
        return self.inflight == 0 and self.pumps == 0

    def idle(self, *, closed: bool, subscribed: bool, queued: bool) -> bool:
        """Holding nothing a close would lose: no request, subscription or partial frame."""
        return (
            not self.closing
            and not closed
            and self.done()
            and not subscribed
            and not self._reader.pending
            and not queued
        )

    def eviction_notice(self, now: float, limit: int) -> Refusal:
        """The error an idle connection is closed with to make room at the limit."""
        return Refusal(
            "evicted_idle",
            ErrorCode.TIMEOUT,
            f"closed after {now - self.last_active:.1f}s idle to make room: the daemon is "
            f"at its connection limit ({limit}); reconnect when needed",
            counted=False,
        )


def admission(
    *,
    uid: int | None,
    expected_uid: int,
    stopping: bool,
    max_connections: int,
    full_and_none_idle: Callable[[], bool],
) -> Refusal | None:
    """Whether a new connection is served, in this order: another user's never; at the
    connection limit only when an idle one could be closed for it (``full_and_none_idle``
    makes room if it can, so it is asked only for a peer we would serve); none while
    stopping."""
    if uid is not None and uid != expected_uid:
        return Refusal(
            "foreign_uid",
            ErrorCode.FORBIDDEN,
            f"uid {uid} may not use this daemon (owned by uid {expected_uid})",
            counted=False,
        )
    if full_and_none_idle():
        return Refusal(
            "too_many_connections",
            ErrorCode.BUSY,
            f"too many connections (max {max_connections}, none idle); retry later",
            counted=False,
        )
    if stopping:
        return Refusal(
            "shutting_down", ErrorCode.SHUTTING_DOWN, "daemon is stopping", counted=False
        )
    return None
