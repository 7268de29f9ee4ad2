"""One connection's bookkeeping, without I/O: what it holds, whether it may take another
request or read more, when it is idle, and whether a newcomer is admitted.

The asyncio protocol in ``socket_server.py`` feeds it events and acts on its answers; time is
passed in, so every rule here is checked without a socket or a clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gastown_client.protocol import ErrorCode


@dataclass
class ConnectionState:
    # Requests taken at once, at most (``max_inflight_per_connection``).
    max_inflight: int
    # When the peer last sent bytes or was answered: who is closed first at the limit.
    last_active: float
    inflight: int = 0  # requests taken and not yet answered
    pumps: int = 0  # subscription pumps still running
    eof: bool = False  # the peer sent EOF: finish what it sent before
    input_ended: bool = False  # no more requests will be read
    closing: bool = False  # our side is shut down, waiting for the peer's

    def received(self, now: float) -> None:
        self.last_active = now

    def may_take(self) -> bool:
        """Another whole frame may be handled now."""
        return not self.input_ended and self.inflight < self.max_inflight

    def took(self) -> None:
        self.inflight += 1

    def answered(self, now: float) -> None:
        self.inflight -= 1
        self.last_active = now

    def reading(self) -> bool | None:
        """Whether the transport should read (None: leave it as it is). At the limit it
        stops: the kernel's buffer fills and the client waits, instead of our memory growing."""
        if self.input_ended or self.eof:
            return None
        return self.inflight < self.max_inflight

    def done(self) -> bool:
        """Nothing in flight and no pump running: the connection may close."""
        return self.inflight == 0 and self.pumps == 0

    def idle(self, *, closed: bool, subscribed: bool, partial: bool, queued: bool) -> bool:
        """Holding nothing a close would lose: no request, subscription or partial frame."""
        return (
            not self.closing
            and not closed
            and self.done()
            and not subscribed
            and not partial
            and not queued
        )


@dataclass(frozen=True)
class Refusal:
    reason: str  # counted and logged by this name
    code: str
    message: str


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
        )
    if full_and_none_idle():
        return Refusal(
            "too_many_connections",
            ErrorCode.BUSY,
            f"too many connections (max {max_connections}, none idle); retry later",
        )
    if stopping:
        return Refusal("shutting_down", ErrorCode.SHUTTING_DOWN, "daemon is stopping")
    return None
