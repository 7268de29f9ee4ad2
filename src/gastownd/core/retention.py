"""Retention (decision 009 phase 3): which lines a prune removes.

Per-type TTLs with ``*`` globs: an exact type beats any glob, a longer glob
beats a shorter one. Malformed lines are always kept. ``min_retain_count``
keeps the newest N lines of each type whatever their age.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

DAY_S = 86_400

GAS_TOWN_TTLS_S: dict[str, int] = {
    "patrol_*": 1 * DAY_S,
    "polecat_checked": 1 * DAY_S,
    "polecat_nudged": 1 * DAY_S,
    "session_start": 3 * DAY_S,
    "session_end": 3 * DAY_S,
    "nudge": 3 * DAY_S,
    "handoff": 7 * DAY_S,
    "sling": 14 * DAY_S,
    "done": 14 * DAY_S,
    "hook": 14 * DAY_S,
    "unhook": 14 * DAY_S,
    "mail": 30 * DAY_S,
    "session_death": 30 * DAY_S,
    "merge_*": 30 * DAY_S,
    "mass_death": 90 * DAY_S,
}


@dataclass(frozen=True)
class RetentionPolicy:
    default_ttl_s: float = 7 * DAY_S
    ttls_s: Mapping[str, float] = field(default_factory=lambda: dict(GAS_TOWN_TTLS_S))
    min_retain_count: int = 0
    prune_interval_s: float = 3600.0

    def ttl_for(self, event_type: str) -> float:
        exact = self.ttls_s.get(event_type)
        if exact is not None and "*" not in event_type:
            return exact
        best: tuple[int, float] | None = None
        for pattern, ttl in self.ttls_s.items():
            if (
                "*" in pattern
                and fnmatch.fnmatchcase(event_type, pattern)
                and (best is None or len(pattern) > best[0])
            ):
                best = (len(pattern), ttl)
        return best[1] if best is not None else self.default_ttl_s


@dataclass
class PrunePlan:
    keep: list[int]
    removed: Counter[str]

    @property
    def removed_total(self) -> int:
        return sum(self.removed.values())


# Positions handled between two yields of ``plan_prune_steps``.
STEP = 512


def plan_prune(
    types: Sequence[str | None], ts: Sequence[int], now_s: float, policy: RetentionPolicy
) -> PrunePlan:
    """Which positions to keep: ``types[i]`` None marks a malformed line (kept)."""
    return drive(plan_prune_steps(types, ts, now_s, policy))


def plan_prune_steps(
    types: Sequence[str | None], ts: Sequence[int], now_s: float, policy: RetentionPolicy
) -> Generator[None, None, PrunePlan]:
    """``plan_prune`` in steps: yields every ``STEP`` positions, returns the plan.

    The caller decides what happens between steps (an event loop lets other
    work run), so a large plan never holds the interpreter for long.
    """
    ttl_cache: dict[str, float] = {}
    newest_kept: Counter[str] = Counter()
    expired = [False] * len(types)
    # Walk newest first so min_retain_count protects the newest lines of each type.
    for position in range(len(types) - 1, -1, -1):
        if position % STEP == 0:
            yield
        event_type = types[position]
        if event_type is None:
            continue
        ttl = ttl_cache.get(event_type)
        if ttl is None:
            ttl = ttl_cache[event_type] = policy.ttl_for(event_type)
        if newest_kept[event_type] < policy.min_retain_count:
            newest_kept[event_type] += 1
            continue
        if ts[position] < now_s - ttl:
            expired[position] = True
    removed: Counter[str] = Counter()
    keep: list[int] = []
    for position, is_expired in enumerate(expired):
        if position % STEP == 0:
            yield
        if is_expired:
            event_type = types[position]
            assert event_type is not None
            removed[event_type] += 1
        else:
            keep.append(position)
    return PrunePlan(keep=keep, removed=removed)


T = TypeVar("T")


def drive(steps: Generator[None, None, T]) -> T:
    """Run a stepped computation to its end, without pausing."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def policy_from_krc(data: Mapping[str, object], fallback: RetentionPolicy) -> RetentionPolicy:
    """Gas Town's ``.krc.yaml`` (JSON, durations in integer nanoseconds)."""

    def seconds(value: object, what: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"{what} must be a non-negative duration in nanoseconds")
        return value / 1e9

    default_ttl = fallback.default_ttl_s
    if "default_ttl" in data:
        default_ttl = seconds(data["default_ttl"], "default_ttl")
    ttls = dict(fallback.ttls_s)
    raw_ttls = data.get("ttls")
    if raw_ttls is not None:
        if not isinstance(raw_ttls, dict):
            raise ValueError("ttls must be an object of type -> nanoseconds")
        # The file's TTLs override Gas Town's defaults type by type.
        ttls.update({str(k): seconds(v, f"ttls[{k!r}]") for k, v in raw_ttls.items()})
    interval = fallback.prune_interval_s
    if "prune_interval" in data:
        interval = seconds(data["prune_interval"], "prune_interval") or interval
    min_retain = fallback.min_retain_count
    if "min_retain_count" in data:
        value = data["min_retain_count"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError("min_retain_count must be a non-negative integer")
        min_retain = value
    return RetentionPolicy(
        default_ttl_s=default_ttl,
        ttls_s=ttls,
        min_retain_count=min_retain,
        prune_interval_s=interval,
    )
