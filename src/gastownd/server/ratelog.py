"""Warnings logged once per cause and interval, every occurrence counted.

Input that breaks a limit can arrive thousands of times a second (a stuck
script reconnecting, a writer appending junk, a remote node sending bad
records), and a failing part retries forever; a log line each would flood
the log and cost more than the refusal itself. So the first occurrence of a
cause is logged at once, with ``count=1``; later ones within ``interval_s``
are only counted, and one line at the end of the interval gives how many
there were (``count``, and ``total`` since start). The one rate limiter of the
daemon: the server's refusals, the event log's malformed lines and
federation's errors and rejections all go through it. Runs on the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

import structlog

LOG_INTERVAL_S = 10.0
# Causes remembered at once; past it (many distinct senders or error texts) the held
# counts are logged now and every cause starts over.
MAX_CAUSES = 10_000

Level = Literal["warning", "error"]
_Key = tuple[str, str]


class RateLimitedLog:
    def __init__(
        self,
        logger: Any,
        interval_s: float = LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self.interval_s = interval_s
        self._clock = clock
        # Occurrences since start, per (event, cause): what tests and status read.
        self.totals: Counter[_Key] = Counter()
        self._last_logged: dict[_Key, float] = {}
        self._held: dict[_Key, tuple[int, Level, dict[str, Any]]] = {}

    def warning(self, event: str, reason: str, /, **fields: Any) -> None:
        """One occurrence of ``reason``, logged as such; ``fields`` describe it (the latest
        held are logged)."""
        self.occurred(event, reason, reason=reason, **fields)

    def occurred(
        self, event: str, cause: str, /, *, level: Level = "warning", count: int = 1, **fields: Any
    ) -> None:
        """``count`` occurrences of ``cause`` (the key the lines are limited by, not logged
        itself); ``fields`` (any names but ``level``, ``count``, ``total`` and ``interval_s``)
        are logged with ``count`` and ``total``."""
        key = (event, cause)
        if key not in self._last_logged and len(self._last_logged) >= MAX_CAUSES:
            self._forget_all()
        self.totals[key] += count
        now = self._clock()
        last = self._last_logged.get(key)
        if last is None or now - last >= self.interval_s:
            held = self._held.pop(key, None)  # not flushed yet: no loop, or its turn to come
            self._emit(key, count + (held[0] if held else 0), level, fields, now)
            return
        held = self._held.get(key)
        if held is None:
            self._schedule(key, last + self.interval_s - now)
        self._held[key] = ((held[0] if held else 0) + count, level, fields)

    def total(self, event: str, cause: str) -> int:
        return self.totals[(event, cause)]

    def _schedule(self, key: _Key, delay_s: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a test, a thread): the next occurrence logs it
            return
        loop.call_later(max(delay_s, 0.0), self._flush, key)

    def _flush(self, key: _Key) -> None:
        held = self._held.pop(key, None)
        if held is not None:
            count, level, fields = held
            self._emit(key, count, level, fields, self._clock())

    def _forget_all(self) -> None:
        for key in list(self._held):
            self._flush(key)
        self._last_logged.clear()
        self.totals.clear()

    def _emit(
        self, key: _Key, count: int, level: Level, fields: dict[str, Any], now: float
    ) -> None:
        self._last_logged[key] = now
        log = self._log.error if level == "error" else self._log.warning
        log(key[0], count=count, total=self.totals[key], interval_s=self.interval_s, **fields)


def rate_limited(name: str) -> RateLimitedLog:
    return RateLimitedLog(structlog.get_logger(name))
