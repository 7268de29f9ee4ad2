"""What the hot paths count: plain integers and bucket arrays, read at scrape time.

Nothing here knows Prometheus. A part that measures something owns one of
these (the server its ``RequestMeter``, the writer its ``Buckets``) and
pays an integer increment, or a bisect and two additions, per event; the
collector (``gastownd.metrics.collector``) copies them when scraped. A
``Buckets`` is written by one thread only (the writer's, or the event
loop), so no lock is taken: a reader on another thread may see one
observation's count before its sum, never a torn integer.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from gastownd.process.refusals import DaemonError

# Upper bounds (Prometheus ``le``) of each histogram; +Inf is implied.
FSYNC_SECONDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
REQUEST_SECONDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
BATCH_LINES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096)
PRUNE_SECONDS = (0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
LAG_SECONDS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0)


class Buckets:
    """A histogram as a bucket array: ``counts[i]`` observations fell in bucket ``i``."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def view(self) -> BucketsView:
        return BucketsView(self.bounds, tuple(self.counts), self.total)


class BucketsView(msgspec.Struct, frozen=True):
    """A copy of a ``Buckets`` taken at scrape time."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    total: float

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, count)`` pairs, +Inf last, as Prometheus histograms carry them."""
        running = 0
        pairs: list[tuple[str, float]] = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            pairs.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return pairs


class OpStats(msgspec.Struct):
    count: int = 0
    errors: Counter[str] = msgspec.field(default_factory=Counter)
    seconds: Buckets = msgspec.field(default_factory=lambda: Buckets(REQUEST_SECONDS))


class RequestMeter:
    """The server's counts: requests by op (count, errors, latency) and refusals.

    Keyed by request class, which costs a dict lookup per request; the
    collector turns classes into op names.
    """

    def __init__(self) -> None:
        self.ops: dict[type, OpStats] = {}
        self.refused: Counter[str] = Counter()
        # Called once, at the first answer: the daemon starts what no answer needs then.
        self.on_first_answer: Callable[[], None] | None = None

    def finished(self, op: type, started: float, outcome: object) -> None:
        """A request of class ``op``, begun at ``started`` (perf_counter), was answered."""
        elapsed = time.perf_counter() - started
        stats = self.ops.get(op)
        if stats is None:
            stats = self.ops[op] = OpStats()
            if self.on_first_answer is not None:
                notify, self.on_first_answer = self.on_first_answer, None
                notify()
        stats.count += 1
        # Buckets.observe, inlined: this runs once per request (a ping costs ~4 µs in all).
        seconds = stats.seconds
        seconds.counts[bisect_left(seconds.bounds, elapsed)] += 1
        seconds.total += elapsed
        if isinstance(outcome, DaemonError):
            stats.errors[outcome.code] += 1


class Counters(msgspec.Struct):
    """What handlers count on the ``Daemon`` (the hot paths own their own meters)."""

    # Hook calls by Claude Code event name ("other" for names we do not know).
    hook_calls: Counter[str] = msgspec.field(default_factory=Counter)
    # Hook calls that had waited in the spool while the daemon was down.
    hooks_spooled: int = 0
    # Hook calls that arrived trimmed to fit the frame limit (also in ``status``).
    hooks_trimmed: int = 0
    # Hook calls the hook noted as lost, not applied (also in ``status``).
    hooks_lost: int = 0
    # Spool entries skipped as unreadable or not regular files, once per state (``status``).
    spool_entries_skipped: int = 0


HOOK_EVENTS = frozenset(
    {
        "SessionStart",
        "SessionEnd",
        "UserPromptSubmit",
        "PreToolUse",
        "PostToolUse",
        "PostToolUseFailure",
        "Stop",
        "SubagentStop",
        "PreCompact",
        "Notification",
    }
)


def hook_event_label(name: str) -> str:
    """A bounded label for a hook event name that came from the client."""
    return name if name in HOOK_EVENTS else "other"


def stream_stored_at(message: Any) -> float | None:
    """When the town's stream stored a JetStream message (epoch seconds), if it says."""
    try:
        return float(message.metadata.timestamp.timestamp())
    except Exception:  # a message without JetStream metadata is simply not measured
        return None
