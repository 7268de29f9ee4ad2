"""Warnings about hostile or broken input, logged once per cause and interval.

Input that breaks a limit can arrive thousands of times a second (a stuck
script reconnecting, a writer appending junk); a log line each would flood
the log and cost more than the refusal itself. So the first occurrence of a
cause is logged at once, with ``count=1``; later ones within ``interval_s``
are only counted, and one line at the end of the interval gives how many
there were (``count``, and ``total`` since start). Runs on the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import structlog

LOG_INTERVAL_S = 10.0


class RateLimitedLog:
    def __init__(self, logger: Any, interval_s: float = LOG_INTERVAL_S) -> None:
        self._log = logger
        self.interval_s = interval_s
        # Occurrences since start, per (event, cause): what tests and status read.
        self.totals: Counter[tuple[str, str]] = Counter()
        self._last_logged: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}

    def warning(self, event: str, cause: str, **fields: Any) -> None:
        """One occurrence of ``cause``; ``fields`` describe it (the latest held are logged)."""
        key = (event, cause)
        self.totals[key] += 1
        now = time.monotonic()
        last = self._last_logged.get(key)
        if last is None or now - last >= self.interval_s:
            held = self._held.pop(key, None)  # not flushed yet: no loop, or its turn to come
            self._emit(key, 1 + (held[0] if held else 0), fields, now)
            return
        held = self._held.get(key)
        if held is None:
            self._schedule(key, last + self.interval_s - now)
        self._held[key] = ((held[0] if held else 0) + 1, fields)

    def total(self, event: str, cause: str) -> int:
        return self.totals[(event, cause)]

    def _schedule(self, key: tuple[str, str], delay_s: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a test, a thread): the next occurrence logs it
            return
        loop.call_later(max(delay_s, 0.0), self._flush, key)

    def _flush(self, key: tuple[str, str]) -> None:
        held = self._held.pop(key, None)
        if held is not None:
            self._emit(key, held[0], held[1], time.monotonic())

    def _emit(self, key: tuple[str, str], count: int, fields: dict[str, Any], now: float) -> None:
        self._last_logged[key] = now
        event, cause = key
        self._log.warning(
            event,
            reason=cause,
            count=count,
            total=self.totals[key],
            interval_s=self.interval_s,
            **fields,
        )


def rate_limited(name: str) -> RateLimitedLog:
    return RateLimitedLog(structlog.get_logger(name))
