"""Retention (decision 009 phase 3): which lines a prune removes.

Per-type TTLs with ``*`` globs: an exact type beats any glob, a longer glob
beats a shorter one. Malformed lines are always kept. ``min_retain_count``
keeps the newest N lines of each type whatever their age.
"""

from __future__ import annotations

import bisect
import fnmatch
from collections import Counter
from collections.abc import Generator, Mapping, Sequence
from typing import TypeVar

import msgspec

DAY_S = 86_400
MIN_PRUNE_INTERVAL_S = 1
# The longest duration the configuration accepts (config.KEYS: "36500d"); a .krc.yaml
# number above it is refused before it is divided, so 10**400 cannot overflow a float.
MAX_DURATION_S = 36_500 * DAY_S
MAX_DURATION_NS = MAX_DURATION_S * 10**9
# As retention.min_retain_count's range (config.KEYS).
MAX_RETAIN_COUNT = 1_000_000_000
# As retention.ttls's range (config.KEYS): each type's TTL is matched for every line type.
MAX_KRC_TTLS = 1024

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


class RetentionPolicy(msgspec.Struct, frozen=True):
    default_ttl_s: float = 7 * DAY_S
    ttls_s: Mapping[str, float] = msgspec.field(default_factory=lambda: dict(GAS_TOWN_TTLS_S))
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


class PrunePlan(msgspec.Struct):
    keep: list[int]
    removed: Counter[str]

    @property
    def removed_total(self) -> int:
        return sum(self.removed.values())


# Positions handled between two yields of ``plan_prune_steps``.
STEP = 512
# Lines a comprehension of the plan handles at once (a few milliseconds).
PLAN_CHUNK = 2048


def plan_prune(
    types: Sequence[str | None], ts: Sequence[int], now_s: float, policy: RetentionPolicy
) -> PrunePlan:
    """Which positions to keep: ``types[i]`` None marks a malformed line (kept)."""
    names = sorted({t for t in types if t is not None})
    ids = {name: i for i, name in enumerate(names)}
    type_ids = [-1 if t is None else ids[t] for t in types]
    postings: dict[int, list[int]] = {i: [] for i in range(len(names))}
    for position, type_id in enumerate(type_ids):
        if type_id >= 0:
            postings[type_id].append(position)
    return drive(plan_prune_steps(type_ids, names, ts, len(types), now_s, policy, postings))


def plan_prune_steps(
    type_ids: Sequence[int],
    names: Sequence[str],
    ts: Sequence[int],
    count: int,
    now_s: float,
    policy: RetentionPolicy,
    postings: Mapping[int, Sequence[int]],
    protect_from: int | None = None,
) -> Generator[None, None, PrunePlan]:
    """The plan for the first ``count`` lines, in steps (yields every ``PLAN_CHUNK`` lines).

    ``type_ids[i]`` indexes ``names`` (negative: malformed, always kept);
    ``postings[t]`` lists the positions of type ``t`` in order, so the
    ``min_retain_count`` newest of each type are found without a scan.
    Lines at ``protect_from`` and after are kept whatever their age (lines that
    are not yet recorded or published elsewhere).
    """
    cutoff = [now_s - policy.ttl_for(name) for name in names]
    protected: set[int] = set()
    if policy.min_retain_count:
        for positions in postings.values():
            end = bisect.bisect_left(positions, count)
            protected.update(positions[max(0, end - policy.min_retain_count) : end])
    keep: list[int] = []
    removed_ids: Counter[int] = Counter()
    expiring = count if protect_from is None else max(0, min(count, protect_from))
    for start in range(0, count, PLAN_CHUNK):
        if start >= expiring:
            keep.extend(range(start, min(count, start + PLAN_CHUNK)))
            yield
            continue
        span = range(start, min(expiring, start + PLAN_CHUNK))
        expired = [
            p for p in span if (t := type_ids[p]) >= 0 and ts[p] < cutoff[t] and p not in protected
        ]
        if expired:
            removed_ids.update(map(type_ids.__getitem__, expired))
            gone = set(expired)
            keep.extend(p for p in span if p not in gone)
        else:
            keep.extend(span)
        keep.extend(range(span.stop, min(count, start + PLAN_CHUNK)))
        yield
    removed = Counter({names[t]: n for t, n in removed_ids.items()})
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
        # ``not 0 <= value`` also refuses NaN; the upper bound comes before the division.
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 <= value <= MAX_DURATION_NS
        ):
            raise ValueError(
                f"{what} must be a duration in nanoseconds from 0 to {MAX_DURATION_NS} (36500 days)"
            )
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
        if len(raw_ttls) > MAX_KRC_TTLS:
            raise ValueError(f"ttls must have at most {MAX_KRC_TTLS} entries")
        ttls.update({str(k): seconds(v, f"ttls[{str(k)[:40]!r}]") for k, v in raw_ttls.items()})
    interval = fallback.prune_interval_s
    if "prune_interval" in data:
        interval = seconds(data["prune_interval"], "prune_interval") or interval
        # As retention.prune_interval's range (config.KEYS): 1 ns would prune without pause.
        if interval < MIN_PRUNE_INTERVAL_S:
            raise ValueError(
                f"prune_interval must be 0 (unset) or at least {MIN_PRUNE_INTERVAL_S} s"
            )
    min_retain = fallback.min_retain_count
    if "min_retain_count" in data:
        value = data["min_retain_count"]
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not 0 <= value <= MAX_RETAIN_COUNT
        ):
            raise ValueError(f"min_retain_count must be an integer from 0 to {MAX_RETAIN_COUNT}")
        min_retain = value
    return RetentionPolicy(
        default_ttl_s=default_ttl,
        ttls_s=ttls,
        min_retain_count=min_retain,
        prune_interval_s=interval,
    )


# How far the clock may sit behind the newest line or the last prune before it looks
# wrong: other writers' clocks (gt on the same host) and a restart's jitter stay within it.
CLOCK_TOLERANCE_S = DAY_S


def clock_suspect(
    now_s: float,
    newest_line_s: int | None,
    last_prune_s: float | None,
    max_age_s: float,
    max_age_name: str = "archive_max_age",
) -> str | None:
    """Why ``now_s`` must not decide which archived days are deleted, or None.

    Deleting a day cannot be undone, so it waits while the clock looks wrong: earlier
    than the newest line or the last prune (by more than ``CLOCK_TOLERANCE_S``), or so
    far ahead of the newest line that every line would be past ``max_age_s`` (a clock
    years ahead, or lines dated by a clock years behind). A town idle for longer than
    ``max_age_s`` only keeps its archive until a new line arrives: the safe side.
    """
    if newest_line_s is not None and now_s < newest_line_s - CLOCK_TOLERANCE_S:
        return "now is before the newest line"
    if last_prune_s is not None and now_s < last_prune_s - CLOCK_TOLERANCE_S:
        return "now is before the last prune"
    if newest_line_s is not None and now_s - newest_line_s > max_age_s:
        return f"the newest line is older than {max_age_name}"
    return None


def remote_clock_suspect(
    now_s: float,
    newest_remote_s: int | None,
    last_prune_s: float | None,
    longest_ttl_s: float,
    server_offset_s: float | None,
    max_skew_s: float,
) -> str | None:
    """Why ``now_s`` must not decide which of other nodes' lines are deleted, or None.

    The deletion is for good (the town's stream does not deliver an acknowledged record
    again), so it waits while this clock looks wrong: further than ``max_skew_s`` from the
    federation server's (``server_offset_s``, when measured), or by the archive's rules
    (``clock_suspect``) against the newest remote line and the longest TTL: a clock years
    ahead would otherwise delete every remote line at once.
    """
    if server_offset_s is not None and abs(server_offset_s) > max_skew_s:
        return f"this clock is {-server_offset_s:+.0f} s from the federation server's"
    return clock_suspect(now_s, newest_remote_s, last_prune_s, longest_ttl_s, "the longest TTL")
