"""How the link fares: failing parts and their errors (for ``status``), rejections by reason,
logged once per cause every 10 s (``server/ratelog.py``), and the back-off that a reconnect
cuts short."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import structlog

from gastown_client.protocol import FederationError
from gastownd.core.events import format_ts
from gastownd.federation.identity import Holder
from gastownd.server.ratelog import LOG_INTERVAL_S, RateLimitedLog

log = structlog.get_logger("gastownd.federation")

T = TypeVar("T")

BACKOFF_S = (0.2, 0.5, 1.0, 2.0)
# Failures kept for status.
ERROR_HISTORY = 10


class LinkHealth:
    def __init__(self, log_interval_s: float = LOG_INTERVAL_S) -> None:
        self.rejected: Counter[str] = Counter()
        self.last_error_at: float | None = None
        # Failing parts (by log event) -> their error, while they fail.
        self._failing: dict[str, str] = {}
        self.errors: deque[FederationError] = deque(maxlen=ERROR_HISTORY)
        self.logged = RateLimitedLog(log, log_interval_s)
        self._reconnected = anyio.Event()

    def error(self, event: str, exc: BaseException, **context: Any) -> None:
        """A failure of one part (``event``): always in status, logged with its cause;
        the same error again once per interval, with how often it happened."""
        text = describe(exc)
        now = time.time()
        self._failing[event] = text
        self.last_error_at = now
        self.errors.append(FederationError(at=format_ts(now), event=event, error=text))
        cause = _cause(exc)
        if cause is not None:
            context["cause"] = cause
        self.logged.occurred(event, text, error=text, **context)

    def ok(self, *events: str) -> None:
        """These parts work again: their errors leave ``last_error`` (not the history)."""
        for event in events:
            if self._failing.pop(event, None) is not None:
                log.info("federation_recovered", failed=event)

    @property
    def last_error(self) -> str | None:
        """The latest error of a part that still fails."""
        return next(reversed(self._failing.values()), None)

    def reject(self, reason: str, sender: str, detail: str, count: int = 1) -> None:
        self.rejected[reason] += count
        self.logged.occurred(  # once per reason and sender, then once per interval
            "federation_record_rejected",
            f"{reason}:{sender}",
            count=count,
            reason=reason,
            sender=sender[:64],
            detail=detail[:200],
        )

    def conflict(self, node: str, holder: Holder) -> None:
        """Another daemon holds this node's name: logged once per holder, then once per
        interval."""
        self.logged.occurred(
            "federation_node_conflict",
            holder.instance,
            level="error",
            node=node,
            held_by_instance=holder.instance,
            held_by_host=holder.host,
            held_by_pid=holder.pid,
            since=holder.since,
            fix=f"another daemon runs as node {node!r}: set a name unique in the "
            "town as [federation] node in settings/gastownd.toml and restart; this "
            "daemon neither publishes nor consumes until the name is free",
        )

    def reconnected(self) -> None:
        """The server is there again: every back-off ends."""
        self._reconnected.set()
        self._reconnected = anyio.Event()

    async def back_off(self, attempt: int) -> None:
        """Wait before retrying after an error: longer each time, cut short by a reconnect."""
        with anyio.move_on_after(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]):
            await self._reconnected.wait()

    async def retrying(self, event: str, call: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``call`` until it succeeds (the server may be recovering), backing off between."""
        attempt = 0
        while True:
            try:
                return await call(*args)
            except Exception as exc:
                self.error(event, exc)
                await self.back_off(attempt)
                attempt += 1


def describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]  # the task that failed, not the group that carried it
    return f"{type(exc).__name__}: {exc}".strip().rstrip(":")


def _cause(exc: BaseException) -> str | None:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    cause = exc.__cause__ or exc.__context__
    return describe(cause) if cause is not None else None
