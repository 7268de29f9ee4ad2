"""Warnings about hostile input: once per cause and interval, every occurrence counted."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from gastownd.server import ratelog
from gastownd.server.ratelog import RateLimitedLog


class Recorder:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append({"event": event, **fields})


def test_a_burst_makes_one_line_and_the_next_interval_carries_the_count() -> None:
    now = [100.0]
    recorder = Recorder()
    warnings = RateLimitedLog(recorder, interval_s=10.0, clock=lambda: now[0])
    for _ in range(1_000):
        warnings.warning("connection_refused", "too_many_connections")
    warnings.warning("connection_refused", "foreign_uid", peer_uid=65534)
    assert [(line["reason"], line["count"]) for line in recorder.lines] == [
        ("too_many_connections", 1),
        ("foreign_uid", 1),
    ]
    now[0] += 10.0
    warnings.warning("connection_refused", "too_many_connections")
    assert recorder.lines[-1]["count"] == 1_000 and recorder.lines[-1]["total"] == 1_001
    assert warnings.total("connection_refused", "too_many_connections") == 1_001


async def test_held_occurrences_are_flushed_at_the_end_of_the_interval() -> None:
    recorder = Recorder()
    warnings = RateLimitedLog(recorder, interval_s=0.05)
    for _ in range(5):
        warnings.warning("request_rejected", "bad_request", message="m")
    assert len(recorder.lines) == 1
    await anyio.sleep(0.2)
    assert [line["count"] for line in recorder.lines] == [1, 4]
    assert recorder.lines[-1]["total"] == 5


def test_many_distinct_causes_are_forgotten_not_kept_for_ever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ratelog, "MAX_CAUSES", 100)
    recorder = Recorder()
    warnings = RateLimitedLog(recorder, clock=lambda: 0.0)
    warnings.warning("federation_record_rejected", "from a")
    warnings.warning("federation_record_rejected", "from a")  # held, no loop to flush it
    for n in range(250):  # a sender under a new name each time
        warnings.warning("federation_record_rejected", f"from {n}")
    assert len(warnings.totals) <= 100
    # The held count was logged when its cause was forgotten, not lost.
    assert [line["count"] for line in recorder.lines if line["reason"] == "from a"] == [1, 1]
    assert len(recorder.lines) == 252
