"""Federation's log: an error seen again is logged again (rate-limited, never for good), through
the daemon's one rate limiter (``server/ratelog.py``), with ``count`` and ``total``."""

from __future__ import annotations

from typing import Any

import anyio
from structlog.testing import capture_logs

from gastownd.federation.health import LinkHealth
from gastownd.federation.identity import Holder
from gastownd.server.ratelog import LOG_INTERVAL_S, RateLimitedLog
from tests.unit.test_ratelog import Recorder


def test_a_repeated_key_is_logged_once_a_period_with_its_count() -> None:
    now = [100.0]
    recorder = Recorder()
    limited = RateLimitedLog(recorder, clock=lambda: now[0])

    def logged(key: str, count: int = 1) -> int | None:
        before = len(recorder.lines)
        limited.occurred("federation_failed", key, count=count, error=key)
        return recorder.lines[-1]["count"] if len(recorder.lines) > before else None

    assert logged("error:x") == 1  # the first time: logged
    assert logged("error:x") is None  # again at once: counted
    assert logged("error:x", count=3) is None
    assert logged("error:y") == 1  # another error is its own key
    now[0] += LOG_INTERVAL_S
    assert logged("error:x") == 5  # a second outage, an interval on: logged, with count
    assert recorder.lines[-1]["total"] == 6  # the first one included
    assert logged("error:x") is None
    now[0] += 3600.0
    assert logged("error:x") == 2  # never suppressed for good
    assert recorder.lines[-1]["total"] == 8
    assert [line["error"] for line in recorder.lines] == [
        "error:x",
        "error:y",
        "error:x",
        "error:x",
    ]


async def test_errors_rejections_and_conflicts_log_count_and_total_the_held_ones_at_the_end() -> (
    None
):
    health = LinkHealth(log_interval_s=0.05)
    holder = Holder(instance="i-1", host="h", pid=7, since="2026-12-04T18:00:00Z")
    failure = TimeoutError("no reply")
    failure.__cause__ = ConnectionRefusedError("refused")  # logged as its ``cause``
    with capture_logs() as logs:
        for _ in range(3):
            health.error("federation_fetch_failed", failure, records=2)
        health.reject("out_of_range", "node-b", "ts out of range", count=6)
        health.reject("out_of_range", "node-b", "ts out of range")
        health.reject("malformed", "node-b", "not JSON")
        health.conflict("a", holder)
        health.conflict("a", holder)
        assert [(e["event"], e["count"], e["total"]) for e in logs] == [
            ("federation_fetch_failed", 1, 1),
            ("federation_record_rejected", 6, 6),
            ("federation_record_rejected", 1, 1),
            ("federation_node_conflict", 1, 1),
        ]
        await anyio.sleep(0.2)  # the end of the interval: the held ones follow
    tail: list[dict[str, Any]] = logs[4:]
    assert sorted((e["event"], e["count"], e["total"]) for e in tail) == [
        ("federation_fetch_failed", 2, 3),
        ("federation_node_conflict", 1, 2),
        ("federation_record_rejected", 1, 7),
    ]
    fetch = [e for e in logs if e["event"] == "federation_fetch_failed"]
    assert all(e["error"] == "TimeoutError: no reply" and e["records"] == 2 for e in fetch)
    assert all(e["cause"] == "ConnectionRefusedError: refused" for e in fetch)
    rejected = [e for e in logs if e["event"] == "federation_record_rejected"]
    assert [(e["reason"], e["sender"]) for e in rejected] == [
        ("out_of_range", "node-b"),
        ("malformed", "node-b"),
        ("out_of_range", "node-b"),
    ]
    conflicts = [e for e in logs if e["event"] == "federation_node_conflict"]
    assert all(e["log_level"] == "error" and e["held_by_instance"] == "i-1" for e in conflicts)
    assert health.rejected == {"out_of_range": 7, "malformed": 1}
    assert len(health.errors) == 3
