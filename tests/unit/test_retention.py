"""Retention rules: TTL resolution and prune planning."""

from __future__ import annotations

import pytest

from gastownd.core.retention import (
    DAY_S,
    RetentionPolicy,
    clock_suspect,
    drive,
    plan_prune,
    plan_prune_steps,
    policy_from_krc,
    remote_clock_suspect,
)


@pytest.mark.parametrize(
    ("event_type", "days"),
    [
        ("patrol_started", 1),
        ("polecat_checked", 1),
        ("session_start", 3),
        ("nudge", 3),
        ("handoff", 7),
        ("sling", 14),
        ("mail", 30),
        ("merge_failed", 30),
        ("mass_death", 90),
        ("anything_else", 7),
    ],
)
def test_gas_town_default_ttls(event_type: str, days: int) -> None:
    assert RetentionPolicy().ttl_for(event_type) == days * DAY_S


def test_exact_beats_longer_glob_beats_shorter_glob() -> None:
    policy = RetentionPolicy(default_ttl_s=1, ttls_s={"a*": 2, "ab*": 3, "abc": 4})
    assert policy.ttl_for("abc") == 4
    assert policy.ttl_for("abd") == 3
    assert policy.ttl_for("axe") == 2
    assert policy.ttl_for("b") == 1


def test_plan_keeps_malformed_and_newest_per_type() -> None:
    policy = RetentionPolicy(default_ttl_s=10, ttls_s={}, min_retain_count=1)
    types = ["a", None, "a", "b", "a"]
    ts = [0, 0, 1, 2, 3]
    plan = plan_prune(types, ts, now_s=100, policy=policy)
    assert plan.keep == [1, 3, 4]
    assert dict(plan.removed) == {"a": 2}
    assert plan.removed_total == 2


def test_plan_without_expired_lines_keeps_everything() -> None:
    plan = plan_prune(["a", "b"], [99, 99], now_s=100, policy=RetentionPolicy())
    assert plan.keep == [0, 1]
    assert plan.removed_total == 0


def test_krc_durations_are_nanoseconds_and_override_per_type() -> None:
    policy = policy_from_krc(
        {
            "default_ttl": 2 * 10**9,
            "ttls": {"mail": 5 * 10**9},
            "min_retain_count": 3,
            "prune_interval": 60 * 10**9,
        },
        RetentionPolicy(),
    )
    assert policy.default_ttl_s == 2
    assert policy.ttl_for("mail") == 5
    assert policy.ttl_for("sling") == 14 * DAY_S
    assert policy.min_retain_count == 3
    assert policy.prune_interval_s == 60


@pytest.mark.parametrize(
    "data",
    [
        {"default_ttl": "7d"},
        {"ttls": []},
        {"min_retain_count": -1},
        {"ttls": {"a": -5}},
        {"prune_interval": 1},
        {"prune_interval": 999_999_999},
    ],
)
def test_invalid_krc_is_rejected(data: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the messages are checked elsewhere
        policy_from_krc(data, RetentionPolicy())


@pytest.mark.parametrize("protect_from", [0, 1, 2500, 4999, 5000, 7000])
def test_lines_from_protect_from_on_are_kept_whatever_their_age(protect_from: int) -> None:
    count = 5000  # more than one planning chunk
    steps = plan_prune_steps(
        [0] * count,
        ["nudge"],
        [0] * count,
        count,
        10 * DAY_S,
        RetentionPolicy(),
        {0: []},
        protect_from,
    )
    plan = drive(steps)
    assert plan.keep == list(range(min(protect_from, count), count))
    assert plan.removed_total == min(protect_from, count)


@pytest.mark.parametrize(
    ("now", "newest", "last_prune", "suspect"),
    [
        (1000 * DAY_S, 1000 * DAY_S - 60, None, None),  # a live town
        (1000 * DAY_S, None, None, None),  # nothing to judge by
        (1000 * DAY_S, 1000 * DAY_S + DAY_S // 2, None, None),  # a writer's skew
        (1000 * DAY_S, 1002 * DAY_S, None, "before the newest line"),  # clock behind
        (1000 * DAY_S, 999 * DAY_S, 1002 * DAY_S, "before the last prune"),
        (1000 * DAY_S, 1000 * DAY_S - 731 * DAY_S, None, "older than archive_max_age"),
    ],
)
def test_clock_suspect_holds_archive_deletion_while_the_clock_looks_wrong(
    now: float, newest: int | None, last_prune: float | None, suspect: str | None
) -> None:
    found = clock_suspect(now, newest, last_prune, max_age_s=365 * DAY_S)
    if suspect is None:
        assert found is None
    else:
        assert found is not None
        assert suspect in found


NOW = 1_780_000_000.0


@pytest.mark.parametrize(
    ("newest", "offset", "expected"),
    [
        (int(NOW - 60), None, None),  # a right clock, federation off
        (int(NOW - 60), 0.4, None),  # a right clock, measured against the server
        (int(NOW - 60), -2 * 365 * DAY_S, "this clock is +63072000 s from the federation"),
        (int(NOW - 60), 3 * 3600.0, "this clock is -10800 s from the federation"),
        # Unmeasured, years ahead: every remote line would be past the longest TTL at once.
        (int(NOW - 2 * 365 * DAY_S), None, "the newest line is older than the longest TTL"),
        (int(NOW + 3 * DAY_S), None, "now is before the newest line"),
        (None, None, None),
    ],
)
def test_remote_lines_are_never_deleted_by_a_clock_that_looks_wrong(
    newest: int | None, offset: float | None, expected: str | None
) -> None:
    found = remote_clock_suspect(NOW, newest, None, 30 * DAY_S, offset, 300.0)
    assert (found is None) == (expected is None)
    if expected is not None:
        assert found is not None and found.startswith(expected), found
